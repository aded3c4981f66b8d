//! Order intents: what the close protocol decided and how far it got.
//!
//! An intent is written with its level's trigger, before any order. Order n
//! of an intent has the client id `base` (n = 0) or `base-n`; `attempt` is
//! the order being worked on and `filled_qty` / `notional` sum the fills of
//! the orders before it, so after a crash the next step is always "look
//! order `attempt` up", never a guess. Finishing writes the intent, its level
//! and an outbox event in one transaction.
//!
//! One sender at a time: an intent is *claimed* (owner, a lease timed by the
//! database's clock, and a token bumped whenever the owner changes) before
//! it is worked on, by the stream's fire, the tick and every replica alike;
//! moving it on and finishing it are conditional on the claim, so a sender
//! that lost it (paused past its lease, say) changes nothing.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::notifications::insert_notification;
use super::{Store, dec};
use crate::clock::now_ms;

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

/// The right to work on one intent: every write of the close is conditional on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    /// Bumped whenever the intent changes owner.
    pub token: i64,
}

/// How a close ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The position is flat.
    Executed,
    /// It could not be taken flat and nothing more can be done (why).
    Failed(String),
    /// Nothing was closed because the position it protects is gone:
    /// `position_closed` (flat) or `position_flipped` (held the other way).
    Cancelled(&'static str),
}

/// How a close ended, and what it took.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseOutcome {
    pub ending: Ending,
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

    /// Pending intents nobody works on: unclaimed, or their claim has lapsed.
    pub async fn unclaimed_intents(&self) -> anyhow::Result<Vec<Intent>> {
        let sql = format!(
            "SELECT * FROM order_intents WHERE status = 'pending' AND (owner IS NULL OR lease_until < {}) \
             ORDER BY created_at",
            self.now_sql()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        rows.iter().map(intent).collect()
    }

    /// Claims (or, for its owner, renews) a pending intent for `lease_ms`.
    /// `None`: finished, or another owner's claim is still live.
    pub async fn claim_intent(
        &self,
        client_order_id: &str,
        owner: &str,
        lease_ms: i64,
    ) -> anyhow::Result<Option<(Intent, Claim)>> {
        let now = self.now_sql();
        let sql = format!(
            "UPDATE order_intents SET claim = CASE WHEN owner = $1 THEN claim ELSE claim + 1 END, owner = $1, \
             lease_until = {now} + $2 \
             WHERE client_order_id = $3 AND status = 'pending' AND (owner IS NULL OR owner = $1 OR lease_until < {now}) \
             RETURNING *"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner.to_string())
            .bind(lease_ms)
            .bind(client_order_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let claim = Claim {
            owner: owner.to_string(),
            token: row.try_get("claim")?,
        };
        Ok(Some((intent(&row)?, claim)))
    }

    /// Releases the claims a previous life of this process left behind, so
    /// its closes are taken up at once instead of after their lease:
    /// `replica` names the owners to release (`owner` is `<replica>/<suffix>`),
    /// `None` releases every claim (one instance per store, so none is alive).
    /// Returns how many were released.
    pub async fn release_claims_of(&self, replica: Option<&str>) -> anyhow::Result<u64> {
        let pattern = match replica {
            Some(r) => format!("{}/%", r.replace('!', "!!").replace('%', "!%").replace('_', "!_")),
            None => "%".to_string(),
        };
        let released = sqlx::query(
            "UPDATE order_intents SET lease_until = 0 WHERE status = 'pending' AND owner IS NOT NULL AND owner LIKE $1 ESCAPE '!'",
        )
        .bind(pattern)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(released)
    }

    /// Gives up every claim of `owner` (a service shutting down). Returns how many.
    pub async fn release_claims_owned_by(&self, owner: &str) -> anyhow::Result<u64> {
        let released = sqlx::query("UPDATE order_intents SET lease_until = 0 WHERE status = 'pending' AND owner = $1")
            .bind(owner.to_string())
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(released)
    }

    /// Gives a claim up (the owner stops working on the intent), so another may take it at once.
    pub async fn release_intent(&self, client_order_id: &str, claim: &Claim) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE order_intents SET lease_until = 0 WHERE client_order_id = $1 AND owner = $2 AND claim = $3 \
             AND status = 'pending'",
        )
        .bind(client_order_id.to_string())
        .bind(claim.owner.clone())
        .bind(claim.token)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Order `intent.attempt` is final: its fill joins the sums and the next
    /// order becomes the one worked on. `Ok(false)`: the claim is lost or the
    /// intent moved on elsewhere.
    pub async fn advance_intent(
        &self,
        claim: &Claim,
        i: &Intent,
        filled: Decimal,
        price: Decimal,
        order_id: i64,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool().begin().await?;
        let moved = sqlx::query(
            "UPDATE order_intents SET attempt = attempt + 1, filled_qty = $1, notional = $2, order_id = $3, updated_at = $4 \
             WHERE client_order_id = $5 AND attempt = $6 AND status = 'pending' AND owner = $7 AND claim = $8",
        )
        .bind((i.filled_qty + filled).to_string())
        .bind((i.notional + filled * price).to_string())
        .bind(order_id)
        .bind(now_ms())
        .bind(i.client_order_id.clone())
        .bind(i.attempt)
        .bind(claim.owner.clone())
        .bind(claim.token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(moved > 0)
    }

    /// Records how a close ended: intent, level and an outbox event, together.
    /// `false`: the intent was no longer pending or the claim is lost; nothing written.
    pub async fn finish_intent(
        &self,
        claim: &Claim,
        i: &Intent,
        outcome: &CloseOutcome,
        webhook: Option<&str>,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let (status, event, error, reason) = match &outcome.ending {
            Ending::Executed => ("executed", "level_executed", None, None),
            Ending::Failed(why) => ("failed", "level_failed", Some(why.clone()), None),
            Ending::Cancelled(reason) => ("cancelled", "level_cancelled", None, Some(*reason)),
        };
        let avg = outcome.avg_price.map(|p| p.to_string());
        let mut tx = self.pool().begin().await?;
        // Only a pending intent under this claim finishes: whoever settled it first did the rest.
        let finished = sqlx::query(
            "UPDATE order_intents SET status = $1, order_id = $2, avg_price = $3, filled_qty = $4, error = $5, updated_at = $6 \
             WHERE client_order_id = $7 AND status = 'pending' AND owner = $8 AND claim = $9",
        )
        .bind(status)
        .bind(outcome.last_order_id)
        .bind(avg.clone())
        .bind(outcome.closed_qty.to_string())
        .bind(error.clone())
        .bind(now)
        .bind(i.client_order_id.clone())
        .bind(claim.owner.clone())
        .bind(claim.token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if finished == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let level = sqlx::query(
            "UPDATE levels SET status = $1, order_id = $2, avg_price = $3, closed_qty = $4, close_orders = $5, error = $6, \
             reason = $9, closed_by = CASE WHEN $1 = 'executed' THEN 'service' END, updated_at = $7 WHERE id = $8 \
             RETURNING *",
        )
        .bind(status)
        .bind(outcome.last_order_id)
        .bind(avg.clone())
        .bind(outcome.closed_qty.to_string())
        .bind(outcome.orders)
        .bind(error.clone())
        .bind(now)
        .bind(i.level_id)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        let payload = json!({
            "event": event, "level_id": i.level_id, "account": i.account, "symbol": i.symbol,
            "kind": i.kind, "side": i.side, "qty": outcome.closed_qty.to_string(), "avg_price": avg,
            "trigger_price": i.trigger_price.to_string(), "order_id": outcome.last_order_id,
            "close_orders": outcome.orders, "client_order_id": i.client_order_id, "error": error, "reason": reason,
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
        if let Some(row) = level {
            self.emit_level(&super::levels::level(&row)?);
        }
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
            "DELETE FROM levels WHERE status IN ('executed', 'failed', 'cancelled') AND updated_at < $1",
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
