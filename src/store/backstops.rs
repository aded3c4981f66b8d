//! Backstops: the conditional orders resting on the venue for armed levels.
//!
//! One row per placement, written (`placing`) before the order is sent;
//! its client algo id is deterministic, so an answer that is lost is
//! settled by looking the id up. A row's life: `placing → live →
//! triggered → recorded` (the venue closed the position and the level says
//! so), or `→ cancelled` (not wanted any more), or `→ failed` (refused, or
//! gone from the venue while still wanted: a new generation is placed after
//! `next_at`).

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::notifications::insert_notification;
use super::{Store, dec};
use crate::clock::now_ms;
use crate::process::Fence;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackstopState {
    /// Written; the order is being sent, or its answer was lost.
    Placing,
    /// Resting on the venue.
    Live,
    /// It fired: the venue closed (some of) the position with `order_id`.
    Triggered,
    /// Its close is recorded on the level.
    Recorded,
    /// Refused, or gone from the venue while still wanted; replaced after `next_at`.
    Failed,
    /// Cancelled (or found gone) after it was no longer wanted.
    Cancelled,
}

impl BackstopState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackstopState::Placing => "placing",
            BackstopState::Live => "live",
            BackstopState::Triggered => "triggered",
            BackstopState::Recorded => "recorded",
            BackstopState::Failed => "failed",
            BackstopState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "placing" => BackstopState::Placing,
            "live" => BackstopState::Live,
            "triggered" => BackstopState::Triggered,
            "recorded" => BackstopState::Recorded,
            "failed" => BackstopState::Failed,
            "cancelled" => BackstopState::Cancelled,
            other => anyhow::bail!("unknown backstop state `{other}`"),
        })
    }

    /// On the venue, or possibly so (its placement's answer is not known yet).
    pub fn on_venue(self) -> bool {
        matches!(self, BackstopState::Placing | BackstopState::Live)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backstop {
    pub client_algo_id: String,
    pub level_id: i64,
    /// `stop_loss` or `take_profit`.
    pub kind: String,
    pub account: String,
    pub symbol: String,
    /// The order side (`SELL` closes a long).
    pub side: String,
    pub trigger_price: Decimal,
    pub state: BackstopState,
    pub generation: i64,
    pub algo_id: Option<i64>,
    /// The MARKET order it became when it fired.
    pub order_id: Option<i64>,
    /// Failed placements in a row.
    pub failures: i64,
    /// Not placed again before this (ms).
    pub next_at: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A placement about to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBackstop {
    pub client_algo_id: String,
    pub level_id: i64,
    pub kind: &'static str,
    pub account: String,
    pub symbol: String,
    pub side: &'static str,
    pub trigger_price: Decimal,
    pub generation: i64,
    /// Failures of the generations before it (carried, for the backoff).
    pub failures: i64,
}

fn backstop(r: &AnyRow) -> anyhow::Result<Backstop> {
    Ok(Backstop {
        client_algo_id: r.try_get("client_algo_id")?,
        level_id: r.try_get("level_id")?,
        kind: r.try_get("kind")?,
        account: r.try_get("account")?,
        symbol: r.try_get("symbol")?,
        side: r.try_get("side")?,
        trigger_price: dec(r, "trigger_price")?,
        state: BackstopState::parse(&r.try_get::<String, _>("state")?)?,
        generation: r.try_get("generation")?,
        algo_id: r.try_get("algo_id")?,
        order_id: r.try_get("order_id")?,
        failures: r.try_get("failures")?,
        next_at: r.try_get("next_at")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// How long a superseded placement (a newer generation exists) is kept.
const SUPERSEDED_KEPT_MS: i64 = 3_600_000;

/// A change of one row's state, with what the venue said.
#[derive(Debug, Clone, Default)]
pub struct BackstopUpdate {
    pub algo_id: Option<i64>,
    pub order_id: Option<i64>,
    pub error: Option<String>,
    /// For `failed`: the failures so far and when a new generation may go.
    pub failures: Option<i64>,
    pub next_at: Option<i64>,
}

impl Store {
    /// The latest generation of every level's backstops, whatever its state.
    pub async fn latest_backstops(&self) -> anyhow::Result<Vec<Backstop>> {
        let rows = sqlx::query(
            "SELECT * FROM backstops b WHERE generation = \
             (SELECT max(generation) FROM backstops c WHERE c.level_id = b.level_id AND c.kind = b.kind) \
             ORDER BY level_id, kind",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(backstop).collect()
    }

    /// Rows that are (or may be) on the venue, or fired and not yet recorded.
    pub async fn active_backstops(&self) -> anyhow::Result<Vec<Backstop>> {
        let rows = sqlx::query(
            "SELECT * FROM backstops WHERE state IN ('placing', 'live', 'triggered') ORDER BY level_id, kind",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(backstop).collect()
    }

    pub async fn backstops_of_level(&self, level_id: i64) -> anyhow::Result<Vec<Backstop>> {
        let rows = sqlx::query("SELECT * FROM backstops WHERE level_id = $1 ORDER BY kind, generation")
            .bind(level_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(backstop).collect()
    }

    pub async fn backstop(&self, client_algo_id: &str) -> anyhow::Result<Option<Backstop>> {
        let row = sqlx::query("SELECT * FROM backstops WHERE client_algo_id = $1")
            .bind(client_algo_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(backstop).transpose()
    }

    /// Writes a placement before it is sent. `false`: that id exists already.
    pub async fn insert_backstop(&self, fence: &Fence, b: &NewBackstop) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_fenced(fence).await?;
        let n = sqlx::query(
            "INSERT INTO backstops (client_algo_id, level_id, kind, account, symbol, side, trigger_price, state, \
             generation, failures, next_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'placing', $8, $9, 0, $10, $10) ON CONFLICT (client_algo_id) DO NOTHING",
        )
        .bind(b.client_algo_id.clone())
        .bind(b.level_id)
        .bind(b.kind)
        .bind(b.account.clone())
        .bind(b.symbol.clone())
        .bind(b.side)
        .bind(b.trigger_price.to_string())
        .bind(b.generation)
        .bind(b.failures)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if n > 0 {
            self.emit_backstop(
                b.level_id,
                &b.account,
                &b.symbol,
                b.kind,
                &b.client_algo_id,
                "placing",
                None,
            );
        }
        Ok(n > 0)
    }

    /// A backstop's state change as a `level` event of its level.
    #[allow(clippy::too_many_arguments)]
    fn emit_backstop(
        &self,
        level_id: i64,
        account: &str,
        symbol: &str,
        kind: &str,
        client_algo_id: &str,
        state: &str,
        error: Option<&str>,
    ) {
        let data = json!({
            "id": level_id, "account": account, "symbol": symbol,
            "backstop": {"kind": kind, "client_algo_id": client_algo_id, "state": state, "error": error},
        });
        self.emit(crate::events::Kind::Level, Some(account), Some(symbol), &data);
    }

    fn emit_backstop_row(&self, row: Option<AnyRow>) -> anyhow::Result<bool> {
        let Some(r) = row else { return Ok(false) };
        let (account, symbol): (String, String) = (r.try_get("account")?, r.try_get("symbol")?);
        let (kind, id, state): (String, String, String) =
            (r.try_get("kind")?, r.try_get("client_algo_id")?, r.try_get("state")?);
        let error: Option<String> = r.try_get("error")?;
        self.emit_backstop(
            r.try_get("level_id")?,
            &account,
            &symbol,
            &kind,
            &id,
            &state,
            error.as_deref(),
        );
        Ok(true)
    }

    /// Moves a row to `state`, or fills in what the venue said while it
    /// stays there. Never from a final state (a late event never undoes a
    /// recorded close), never back from `triggered` to resting, nor from
    /// `live` to `placing`. `false`: nothing changed.
    pub async fn update_backstop(
        &self,
        fence: &Fence,
        client_algo_id: &str,
        state: BackstopState,
        u: &BackstopUpdate,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin_fenced(fence).await?;
        let n = sqlx::query(
            "UPDATE backstops SET state = $1, algo_id = COALESCE($2, algo_id), order_id = COALESCE($3, order_id), \
             error = $4, failures = COALESCE($5, failures), next_at = COALESCE($6, next_at), updated_at = $7 \
             WHERE client_algo_id = $8 AND state NOT IN ('recorded', 'cancelled', 'failed') \
             AND NOT (state = 'triggered' AND $1 IN ('placing', 'live')) AND NOT (state = 'live' AND $1 = 'placing') \
             RETURNING level_id, account, symbol, kind, client_algo_id, state, error",
        )
        .bind(state.as_str())
        .bind(u.algo_id)
        .bind(u.order_id)
        .bind(u.error.clone())
        .bind(u.failures)
        .bind(u.next_at)
        .bind(now_ms())
        .bind(client_algo_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        self.emit_backstop_row(n)
    }

    /// A row given up on (`failed`) whose order the venue turns out to hold
    /// open, while its level still wants it: it is live again.
    pub async fn revive_backstop(&self, fence: &Fence, client_algo_id: &str, algo_id: i64) -> anyhow::Result<bool> {
        let mut tx = self.begin_fenced(fence).await?;
        let n = sqlx::query(
            "UPDATE backstops SET state = 'live', algo_id = $1, error = NULL, failures = 0, updated_at = $2 \
             WHERE client_algo_id = $3 AND state = 'failed' \
             RETURNING level_id, account, symbol, kind, client_algo_id, state, error",
        )
        .bind(algo_id)
        .bind(now_ms())
        .bind(client_algo_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        self.emit_backstop_row(n)
    }

    /// The venue's backstop closed the level's position: the level is
    /// `executed` with `closed_by = "venue"` (armed, or triggered with its
    /// own close not finished), the row `recorded`, and a `level_executed`
    /// event goes out, in one transaction. `false`: the level was already final.
    pub async fn record_venue_close(
        &self,
        fence: &Fence,
        b: &Backstop,
        (qty, avg_price): (Decimal, Option<Decimal>),
        webhook: Option<&str>,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_fenced(fence).await?;
        sqlx::query("UPDATE backstops SET state = 'recorded', updated_at = $1 WHERE client_algo_id = $2")
            .bind(now)
            .bind(b.client_algo_id.clone())
            .execute(&mut *tx)
            .await?;
        let avg = avg_price.map(|p| p.to_string());
        let level = sqlx::query(
            "UPDATE levels SET status = 'executed', closed_by = 'venue', order_id = $1, closed_qty = $2, avg_price = $3, \
             close_orders = 0, trigger_kind = COALESCE(trigger_kind, $4), version = version + 1, updated_at = $5 \
             WHERE id = $6 AND status IN ('armed', 'triggered') RETURNING *",
        )
        .bind(b.order_id)
        .bind(qty.normalize().to_string())
        .bind(avg.clone())
        .bind(b.kind.clone())
        .bind(now)
        .bind(b.level_id)
        .fetch_optional(&mut *tx)
        .await?;
        let executed = level.as_ref().map(super::levels::level).transpose()?;
        let n = executed.is_some() as u64;
        if n > 0 {
            // Its own close, if one was under way, has nothing left to do.
            sqlx::query(
                "UPDATE order_intents SET status = 'executed', error = 'closed by the venue', updated_at = $1 \
                 WHERE level_id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(b.level_id)
            .execute(&mut *tx)
            .await?;
            let payload = json!({
                "event": "level_executed", "level_id": b.level_id, "account": b.account, "symbol": b.symbol,
                "kind": b.kind, "side": b.side, "qty": qty.normalize().to_string(), "avg_price": avg,
                "order_id": b.order_id, "closed_by": "venue", "client_algo_id": b.client_algo_id,
            });
            let key = format!("level-{}-venue-executed", b.level_id);
            insert_notification(&mut tx, &key, "level_executed", webhook, &payload, now).await?;
        }
        tx.commit().await?;
        if let Some(l) = &executed {
            self.levels_changed();
            self.emit_level(l);
        }
        Ok(n > 0)
    }

    /// Forgets rows whose level is gone or final, older than `before_ms`, and
    /// superseded generations (a newer placement exists) after an hour.
    pub async fn prune_backstops(&self, before_ms: i64) -> anyhow::Result<u64> {
        let mut gone = sqlx::query(
            "DELETE FROM backstops WHERE state IN ('recorded', 'cancelled', 'failed') AND updated_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM levels l WHERE l.id = backstops.level_id AND l.status = 'armed')",
        )
        .bind(before_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        gone += sqlx::query(
            "DELETE FROM backstops WHERE state IN ('cancelled', 'failed') AND updated_at < $1 \
             AND EXISTS (SELECT 1 FROM backstops n WHERE n.level_id = backstops.level_id AND n.kind = backstops.kind \
                 AND n.generation > backstops.generation)",
        )
        .bind(now_ms() - SUPERSEDED_KEPT_MS)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(gone)
    }
}
