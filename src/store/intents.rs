//! Order intents: what the close protocol decided and how far it got.
//!
//! An intent is written with its level's trigger, before any order. Order n
//! of an intent has the client id `base` (n = 0) or `base-n`; `attempt` is
//! the order being worked on and `filled_qty` / `notional` sum the fills of
//! the orders before it, so after a crash the next step is always "look
//! order `attempt` up", never a guess. Finishing writes the intent, its level
//! and an outbox event in one transaction.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::notifications::insert_notification;
use super::{Store, dec};
use crate::clock::now_ms;
use crate::process::Fence;

/// An order the service decided to send, recorded before sending.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intent {
    pub client_order_id: String,
    pub level_id: i64,
    pub account: String,
    pub symbol: String,
    pub side: String,
    pub qty: Decimal,
    /// `take_profit` or `stop_loss`.
    pub kind: String,
    pub trigger_price: Decimal,
    /// When the triggering price was observed (ms).
    pub observed_at: i64,
    pub status: String,
    /// The order being worked on (0 = the first).
    pub attempt: i64,
    /// Filled by the orders before `attempt`.
    pub filled_qty: Decimal,
    /// Σ qty × price of those fills.
    pub notional: Decimal,
    /// The venue's id of the last order that was accounted.
    pub order_id: Option<i64>,
}

impl Intent {
    /// The client order id of order `n`.
    pub fn order_client_id(&self, n: i64) -> String {
        match n {
            0 => self.client_order_id.clone(),
            n => format!("{}-{n}", self.client_order_id),
        }
    }
}

/// How a close ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseOutcome {
    /// `None`: the position is flat (executed); `Some(reason)`: it could not be taken flat (failed).
    pub error: Option<String>,
    pub closed_qty: Decimal,
    pub avg_price: Option<Decimal>,
    pub last_order_id: Option<i64>,
    /// Close orders sent.
    pub orders: i64,
}

fn intent(r: &AnyRow) -> anyhow::Result<Intent> {
    Ok(Intent {
        client_order_id: r.try_get("client_order_id")?,
        level_id: r.try_get("level_id")?,
        account: r.try_get("account")?,
        symbol: r.try_get("symbol")?,
        side: r.try_get("side")?,
        qty: dec(r, "qty")?,
        kind: r.try_get("kind")?,
        trigger_price: dec(r, "trigger_price")?,
        observed_at: r.try_get("observed_at")?,
        status: r.try_get("status")?,
        attempt: r.try_get("attempt")?,
        filled_qty: dec(r, "filled_qty")?,
        notional: dec(r, "notional")?,
        order_id: r.try_get("order_id")?,
    })
}

impl Store {
    /// Intents whose outcome is not recorded yet (sent or not).
    pub async fn pending_intents(&self) -> anyhow::Result<Vec<Intent>> {
        let rows = sqlx::query("SELECT * FROM order_intents WHERE status = 'pending' ORDER BY created_at")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(intent).collect()
    }

    /// Order `intent.attempt` is final: its fill joins the sums and the next
    /// order becomes the one worked on. `Ok(false)`: another run moved it first.
    pub async fn advance_intent(
        &self,
        fence: &Fence,
        i: &Intent,
        filled: Decimal,
        price: Decimal,
        order_id: i64,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin_fenced(fence).await?;
        let moved = sqlx::query(
            "UPDATE order_intents SET attempt = attempt + 1, filled_qty = $1, notional = $2, order_id = $3, updated_at = $4 \
             WHERE client_order_id = $5 AND attempt = $6 AND status = 'pending'",
        )
        .bind((i.filled_qty + filled).to_string())
        .bind((i.notional + filled * price).to_string())
        .bind(order_id)
        .bind(now_ms())
        .bind(i.client_order_id.clone())
        .bind(i.attempt)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(moved > 0)
    }

    /// Records how a close ended: intent, level and an outbox event, together.
    /// `false`: the intent was no longer pending (settled elsewhere); nothing written.
    pub async fn finish_intent(
        &self,
        fence: &Fence,
        i: &Intent,
        outcome: &CloseOutcome,
        webhook: Option<&str>,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let (status, event) = match outcome.error {
            None => ("executed", "level_executed"),
            Some(_) => ("failed", "level_failed"),
        };
        let avg = outcome.avg_price.map(|p| p.to_string());
        let mut tx = self.begin_fenced(fence).await?;
        // Only a pending intent finishes: whoever settled it first did the rest.
        let finished = sqlx::query(
            "UPDATE order_intents SET status = $1, order_id = $2, avg_price = $3, filled_qty = $4, error = $5, updated_at = $6 \
             WHERE client_order_id = $7 AND status = 'pending'",
        )
        .bind(status)
        .bind(outcome.last_order_id)
        .bind(avg.clone())
        .bind(outcome.closed_qty.to_string())
        .bind(outcome.error.clone())
        .bind(now)
        .bind(i.client_order_id.clone())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if finished == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE levels SET status = $1, order_id = $2, avg_price = $3, closed_qty = $4, close_orders = $5, error = $6, \
             updated_at = $7 WHERE id = $8",
        )
        .bind(status)
        .bind(outcome.last_order_id)
        .bind(avg.clone())
        .bind(outcome.closed_qty.to_string())
        .bind(outcome.orders)
        .bind(outcome.error.clone())
        .bind(now)
        .bind(i.level_id)
        .execute(&mut *tx)
        .await?;
        let payload = json!({
            "event": event, "level_id": i.level_id, "account": i.account, "symbol": i.symbol,
            "kind": i.kind, "side": i.side, "qty": outcome.closed_qty.to_string(), "avg_price": avg,
            "trigger_price": i.trigger_price.to_string(), "order_id": outcome.last_order_id,
            "close_orders": outcome.orders, "client_order_id": i.client_order_id, "error": outcome.error,
        });
        insert_notification(
            &mut tx,
            &format!("level-{}-{status}", i.client_order_id),
            event,
            webhook,
            &payload,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets what finished before `before_ms`: executed and failed levels and
    /// their intents, triggered alerts, notifications no longer pending.
    /// Returns how many rows went.
    pub async fn prune_finished(&self, before_ms: i64) -> anyhow::Result<u64> {
        let mut tx = self.pool().begin().await?;
        let mut gone = 0;
        for sql in [
            "DELETE FROM order_intents WHERE status <> 'pending' AND updated_at < $1",
            "DELETE FROM levels WHERE status IN ('executed', 'failed') AND updated_at < $1",
            "DELETE FROM alerts WHERE status = 'triggered' AND triggered_at < $1",
            "DELETE FROM notifications WHERE status <> 'pending' AND created_at < $1",
        ] {
            gone += sqlx::query(sql)
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(gone)
    }
}
