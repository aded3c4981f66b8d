//! Price alerts and the notification outbox (at-least-once webhook delivery).

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, dec};
use crate::clock::now_ms;
use crate::process::Fence;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: i64,
    pub symbol: String,
    /// `above` or `below`.
    pub condition: String,
    pub price: Decimal,
    pub webhook_url: Option<String>,
    /// `active` or `triggered`.
    pub status: String,
    pub created_at: i64,
    pub triggered_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewAlert {
    pub symbol: String,
    pub condition: String,
    pub price: Decimal,
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: i64,
    pub dedupe_key: String,
    pub kind: String,
    pub webhook_url: Option<String>,
    pub payload: Value,
    pub status: String,
    pub attempts: i64,
}

fn alert(r: &AnyRow) -> anyhow::Result<Alert> {
    Ok(Alert {
        id: r.try_get("id")?,
        symbol: r.try_get("symbol")?,
        condition: r.try_get("condition")?,
        price: dec(r, "price")?,
        webhook_url: r.try_get("webhook_url")?,
        status: r.try_get("status")?,
        created_at: r.try_get("created_at")?,
        triggered_at: r.try_get("triggered_at")?,
    })
}

/// Queues a notification once per dedupe key (a second insert is ignored).
pub(super) async fn insert_notification(
    tx: &mut Transaction<'_, Any>,
    dedupe_key: &str,
    kind: &str,
    webhook: Option<&str>,
    payload: &Value,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO notifications (dedupe_key, kind, webhook_url, payload, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(dedupe_key.to_string())
    .bind(kind.to_string())
    .bind(webhook.map(String::from))
    .bind(payload.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    pub async fn insert_alert(&self, a: &NewAlert) -> anyhow::Result<Alert> {
        let row = sqlx::query(
            "INSERT INTO alerts (symbol, condition, price, webhook_url, status, created_at) \
             VALUES ($1, $2, $3, $4, 'active', $5) RETURNING *",
        )
        .bind(a.symbol.clone())
        .bind(a.condition.clone())
        .bind(a.price.to_string())
        .bind(a.webhook_url.clone())
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        alert(&row)
    }

    pub async fn alerts(&self, only_active: bool) -> anyhow::Result<Vec<Alert>> {
        let rows = sqlx::query("SELECT * FROM alerts WHERE ($1 = 0 OR status = 'active') ORDER BY id")
            .bind(only_active as i64)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(alert).collect()
    }

    /// One page of alerts: ids above `after`, at most `limit`, by id.
    pub async fn alerts_page(&self, after: i64, limit: i64) -> anyhow::Result<Vec<Alert>> {
        let rows = sqlx::query("SELECT * FROM alerts WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(alert).collect()
    }

    pub async fn delete_alert(&self, id: i64) -> anyhow::Result<bool> {
        Ok(sqlx::query("DELETE FROM alerts WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected()
            > 0)
    }

    /// Marks an active alert triggered and queues its notification, together.
    pub async fn trigger_alert(
        &self,
        fence: &Fence,
        a: &Alert,
        price: Decimal,
        fallback_webhook: Option<&str>,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_fenced(fence).await?;
        let won = sqlx::query(
            "UPDATE alerts SET status = 'triggered', triggered_at = $1 WHERE id = $2 AND status = 'active'",
        )
        .bind(now)
        .bind(a.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if won == 0 {
            return Ok(false);
        }
        let payload = json!({
            "event": "price_alert", "alert_id": a.id, "symbol": a.symbol, "condition": a.condition,
            "threshold": a.price.to_string(), "price": price.to_string(), "time": now,
        });
        let webhook = a.webhook_url.as_deref().or(fallback_webhook);
        insert_notification(
            &mut tx,
            &format!("alert-{}", a.id),
            "price_alert",
            webhook,
            &payload,
            now,
        )
        .await?;
        tx.commit().await?;
        // No webhook URL: it is a credential.
        let data = json!({
            "id": a.id, "symbol": a.symbol, "condition": a.condition, "threshold": a.price.to_string(),
            "price": price.to_string(), "status": "triggered", "time": now,
        });
        self.emit(crate::events::Kind::Alert, None, Some(&a.symbol), &data);
        Ok(true)
    }

    /// Pending notifications due for an attempt.
    pub async fn due_notifications(&self, now: i64, limit: i64) -> anyhow::Result<Vec<Notification>> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(Notification {
                    id: r.try_get("id")?,
                    dedupe_key: r.try_get("dedupe_key")?,
                    kind: r.try_get("kind")?,
                    webhook_url: r.try_get("webhook_url")?,
                    payload: serde_json::from_str(&payload)?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Records a delivery attempt: `status` is `delivered`, `pending` (retry at `next_at`) or `failed`/`skipped`.
    pub async fn record_delivery(
        &self,
        fence: &Fence,
        id: i64,
        status: &str,
        attempts: i64,
        next_at: i64,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = self.begin_fenced(fence).await?;
        let row = sqlx::query(
            "UPDATE notifications SET status = $1, attempts = $2, next_attempt_at = $3, last_error = $4, \
             delivered_at = CASE WHEN $1 = 'delivered' THEN $5 ELSE delivered_at END WHERE id = $6 \
             RETURNING id, kind, dedupe_key, status, attempts, last_error, payload",
        )
        .bind(status.to_string())
        .bind(attempts)
        .bind(next_at)
        .bind(error.map(String::from))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(r) = row
            && self.event_hub().is_some()
        {
            // Which account and symbol it is about, from its payload (level events carry them).
            let payload: Value = serde_json::from_str(&r.try_get::<String, _>("payload")?).unwrap_or(Value::Null);
            let account = payload["account"].as_str();
            let symbol = payload["symbol"].as_str();
            let data = json!({
                "id": r.try_get::<i64, _>("id")?, "kind": r.try_get::<String, _>("kind")?,
                "dedupe_key": r.try_get::<String, _>("dedupe_key")?, "status": r.try_get::<String, _>("status")?,
                "attempts": r.try_get::<i64, _>("attempts")?, "last_error": r.try_get::<Option<String>, _>("last_error")?,
                "account": account, "symbol": symbol,
            });
            self.emit(crate::events::Kind::Notification, account, symbol, &data);
        }
        Ok(())
    }

    pub async fn pending_notifications(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE status = 'pending'")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    pub async fn notifications(&self, limit: i64) -> anyhow::Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT id, dedupe_key, kind, status, attempts, last_error FROM notifications ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(json!({
                    "id": r.try_get::<i64, _>("id")?, "dedupe_key": r.try_get::<String, _>("dedupe_key")?,
                    "kind": r.try_get::<String, _>("kind")?, "status": r.try_get::<String, _>("status")?,
                    "attempts": r.try_get::<i64, _>("attempts")?, "last_error": r.try_get::<Option<String>, _>("last_error")?,
                }))
            })
            .collect()
    }
}
