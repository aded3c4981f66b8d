//! Take-profit / stop-loss levels.
//!
//! A level belongs to one position: its account, symbol and side are
//! recorded when it is created and never recomputed. When that position goes
//! flat or changes side the level is retired (`cancelled`, with a reason and
//! an outbox event), in the transaction that writes the position.
//!
//! A trigger is one transaction: the level moves `armed → triggered` (only
//! if still armed at the version read) and an intent row with the
//! deterministic client order id is written, claimed by the one who will
//! send it, *before* anything is sent (the intent's life is in `intents.rs`).

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::intents::{Claim, Intent};
use super::notifications::insert_notification;
use super::{Store, opt_dec};
use crate::clock::now_ms;
use crate::domain::PositionSide;
use crate::process::Fence;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelStatus {
    Armed,
    Triggered,
    Executed,
    Failed,
    /// Retired without a close: its position went flat or changed side (`reason`).
    Cancelled,
}

impl LevelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LevelStatus::Armed => "armed",
            LevelStatus::Triggered => "triggered",
            LevelStatus::Executed => "executed",
            LevelStatus::Failed => "failed",
            LevelStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "armed" => LevelStatus::Armed,
            "triggered" => LevelStatus::Triggered,
            "executed" => LevelStatus::Executed,
            "failed" => LevelStatus::Failed,
            "cancelled" => LevelStatus::Cancelled,
            other => anyhow::bail!("unknown level status `{other}`"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    pub id: i64,
    pub account: String,
    pub symbol: String,
    /// The side of the position it protects (`None` only for a legacy level it was never known for).
    pub side: Option<PositionSide>,
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
    pub status: LevelStatus,
    /// Why a `cancelled` level was retired: `position_closed` or `position_flipped`.
    pub reason: Option<String>,
    pub version: i64,
    pub client_order_id: Option<String>,
    pub order_id: Option<i64>,
    pub trigger_kind: Option<String>,
    pub trigger_price: Option<Decimal>,
    pub error: Option<String>,
    /// How much of the position the close took (executed or failed levels).
    pub closed_qty: Option<Decimal>,
    /// The average price of those fills.
    pub avg_price: Option<Decimal>,
    /// How many close orders it took.
    pub close_orders: Option<i64>,
    /// Who took the position flat: `venue` when its backstop did.
    pub closed_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewLevel {
    pub account: String,
    pub symbol: String,
    pub side: PositionSide,
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
}

pub(super) fn level(r: &AnyRow) -> anyhow::Result<Level> {
    Ok(Level {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        symbol: r.try_get("symbol")?,
        side: r
            .try_get::<Option<String>, _>("side")?
            .and_then(|s| PositionSide::parse(&s)),
        take_profit: opt_dec(r, "take_profit")?,
        stop_loss: opt_dec(r, "stop_loss")?,
        status: LevelStatus::parse(&r.try_get::<String, _>("status")?)?,
        reason: r.try_get("reason")?,
        version: r.try_get("version")?,
        client_order_id: r.try_get("client_order_id")?,
        order_id: r.try_get("order_id")?,
        trigger_kind: r.try_get("trigger_kind")?,
        trigger_price: opt_dec(r, "trigger_price")?,
        error: r.try_get("error")?,
        closed_qty: opt_dec(r, "closed_qty")?,
        avg_price: opt_dec(r, "avg_price")?,
        close_orders: r.try_get("close_orders")?,
        closed_by: r.try_get("closed_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn insert_level(&self, l: &NewLevel) -> anyhow::Result<Level> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO levels (account, symbol, side, take_profit, stop_loss, status, version, created_at, updated_at) \
             VALUES ($1, $2, $6, $3, $4, 'armed', 1, $5, $5) RETURNING *",
        )
        .bind(l.account.clone())
        .bind(l.symbol.clone())
        .bind(l.take_profit.map(|d| d.to_string()))
        .bind(l.stop_loss.map(|d| d.to_string()))
        .bind(now)
        .bind(l.side.as_str())
        .fetch_one(self.pool())
        .await?;
        self.levels_changed();
        let l = level(&row)?;
        self.emit_level(&l);
        Ok(l)
    }

    pub async fn levels(&self, status: Option<LevelStatus>) -> anyhow::Result<Vec<Level>> {
        let rows = sqlx::query("SELECT * FROM levels WHERE ($1 = '' OR status = $1) ORDER BY id")
            .bind(status.map_or("", |s| s.as_str()).to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(level).collect()
    }

    /// One page of levels: ids above `after`, at most `limit`, by id.
    pub async fn levels_page(&self, after: i64, limit: i64) -> anyhow::Result<Vec<Level>> {
        let rows = sqlx::query("SELECT * FROM levels WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(level).collect()
    }

    /// Changes whenever an armed level is added, removed or fired, by any
    /// replica: (how many, highest id).
    pub async fn armed_levels_fingerprint(&self) -> anyhow::Result<(i64, i64)> {
        let row = sqlx::query("SELECT count(*) AS n, COALESCE(max(id), 0) AS m FROM levels WHERE status = 'armed'")
            .fetch_one(self.pool())
            .await?;
        Ok((row.try_get("n")?, row.try_get("m")?))
    }

    pub async fn level(&self, id: i64) -> anyhow::Result<Option<Level>> {
        let row = sqlx::query("SELECT * FROM levels WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(level).transpose()
    }

    /// Deletes a level unless an order for it is in flight. `Ok(false)`: nothing to delete.
    pub async fn delete_level(&self, id: i64) -> anyhow::Result<Result<bool, LevelStatus>> {
        match self.level(id).await? {
            None => Ok(Ok(false)),
            Some(l) if l.status == LevelStatus::Triggered => Ok(Err(l.status)),
            Some(l) => {
                let n = sqlx::query("DELETE FROM levels WHERE id = $1 AND status <> 'triggered'")
                    .bind(id)
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                self.levels_changed();
                if n > 0 {
                    self.emit(
                        crate::events::Kind::Level,
                        Some(&l.account),
                        Some(&l.symbol),
                        &json!({"id": id, "account": l.account, "symbol": l.symbol, "status": "deleted"}),
                    );
                }
                Ok(Ok(n > 0))
            }
        }
    }

    /// Moves an armed level to `triggered` and records its intent, claimed by
    /// `claim.owner` for `lease_ms`, atomically. The intent's `qty` is the
    /// stored position on the level's side (0 when the store has none: the
    /// close reads the venue first). `Ok(None)`: the level changed meanwhile
    /// (not armed, or another version).
    pub async fn trigger_level(
        &self,
        fence: &Fence,
        l: &Level,
        (kind, price, observed_at): (&str, Decimal, i64),
        (owner, lease_ms): (&str, i64),
    ) -> anyhow::Result<Option<(Intent, Claim)>> {
        let Some(side) = l.side else {
            return Ok(None);
        };
        let client_order_id = format!("sm-{}-{}-{}", self.installation(), l.id, l.version);
        let now = now_ms();
        let mut tx = self.begin_fenced(fence).await?;
        let won = sqlx::query(
            "UPDATE levels SET status = 'triggered', version = version + 1, client_order_id = $1, trigger_kind = $2, \
             trigger_price = $3, updated_at = $4 WHERE id = $5 AND status = 'armed' AND version = $6",
        )
        .bind(client_order_id.clone())
        .bind(kind.to_string())
        .bind(price.to_string())
        .bind(now)
        .bind(l.id)
        .bind(l.version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if won == 0 {
            return Ok(None);
        }
        let stored = sqlx::query("SELECT amount FROM positions WHERE account = $1 AND symbol = $2")
            .bind(l.account.clone())
            .bind(l.symbol.clone())
            .fetch_optional(&mut *tx)
            .await?;
        let amount = match stored {
            Some(row) => super::dec(&row, "amount")?,
            None => Decimal::ZERO,
        };
        let qty = side.held(amount);
        let insert = format!(
            "INSERT INTO order_intents (client_order_id, level_id, account, symbol, side, qty, kind, trigger_price, \
             observed_at, status, created_at, updated_at, owner, lease_until, claim) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10, $11, {} + $12, 1)",
            self.now_sql()
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(client_order_id.clone())
            .bind(l.id)
            .bind(l.account.clone())
            .bind(l.symbol.clone())
            .bind(side.closing().as_str())
            .bind(qty.to_string())
            .bind(kind.to_string())
            .bind(price.to_string())
            .bind(observed_at)
            .bind(now)
            .bind(owner.to_string())
            .bind(lease_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.emit_level(&Level {
            status: LevelStatus::Triggered,
            version: l.version + 1,
            client_order_id: Some(client_order_id.clone()),
            trigger_kind: Some(kind.to_string()),
            trigger_price: Some(price),
            updated_at: now,
            ..l.clone()
        });
        let intent = Intent {
            client_order_id,
            level_id: l.id,
            account: l.account.clone(),
            symbol: l.symbol.clone(),
            side: side.closing().as_str().to_string(),
            qty,
            kind: kind.to_string(),
            trigger_price: price,
            observed_at,
            status: "pending".into(),
            attempt: 0,
            filled_qty: Decimal::ZERO,
            notional: Decimal::ZERO,
            order_id: None,
        };
        let claim = Claim {
            owner: owner.to_string(),
            token: 1,
        };
        Ok(Some((intent, claim)))
    }

    /// Retires the armed levels of `account`/`symbol` that no longer match its
    /// position (signed `amount`, 0 = flat): every one when flat, those of the
    /// other side otherwise. Each becomes `cancelled` with a reason and an
    /// outbox event, in the caller's transaction (the one writing the position).
    /// A level whose backstop is (or may be) on the venue is left to the
    /// backstop's reconciliation, which asks the venue whether its backstop
    /// closed the position (then the level is executed by the venue) first.
    pub(crate) async fn retire_levels_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        account: &str,
        symbol: &str,
        amount: Decimal,
    ) -> anyhow::Result<Vec<Level>> {
        let (keep, reason) = match PositionSide::of(amount) {
            Some(side) => (side.as_str(), "position_flipped"),
            None => ("", "position_closed"),
        };
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE levels SET status = 'cancelled', reason = $1, version = version + 1, updated_at = $2 \
             WHERE account = $3 AND symbol = $4 AND status = 'armed' AND ($5 = '' OR side <> $5) \
             AND NOT EXISTS (SELECT 1 FROM backstops b WHERE b.level_id = levels.id \
                 AND b.state IN ('placing', 'live', 'triggered')) RETURNING *",
        )
        .bind(reason)
        .bind(now)
        .bind(account.to_string())
        .bind(symbol.to_string())
        .bind(keep)
        .fetch_all(&mut **tx)
        .await?;
        let retired: Vec<Level> = rows.iter().map(level).collect::<anyhow::Result<_>>()?;
        self.announce_retired(tx, &retired, reason, now).await?;
        Ok(retired)
    }

    /// The kill switch: every armed level of `account`/`symbol` is retired
    /// (`flattened`), its backstops being cancelled by the caller.
    pub async fn retire_flattened(&self, fence: &Fence, account: &str, symbol: &str) -> anyhow::Result<Vec<Level>> {
        let now = now_ms();
        let mut tx = self.begin_fenced(fence).await?;
        let rows = sqlx::query(
            "UPDATE levels SET status = 'cancelled', reason = 'flattened', version = version + 1, updated_at = $1 \
             WHERE account = $2 AND symbol = $3 AND status = 'armed' RETURNING *",
        )
        .bind(now)
        .bind(account.to_string())
        .bind(symbol.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let retired: Vec<Level> = rows.iter().map(level).collect::<anyhow::Result<_>>()?;
        self.announce_retired(&mut tx, &retired, "flattened", now).await?;
        tx.commit().await?;
        retired.iter().for_each(|l| self.emit_level(l));
        Ok(retired)
    }

    /// The account is being removed (`DELETE /api/accounts/{name}`): every
    /// armed level of it is retired (`account_removed`), with an outbox event
    /// each. Levels whose close is under way are left to finish or fail.
    pub async fn retire_account_levels(&self, account: &str) -> anyhow::Result<Vec<Level>> {
        let now = now_ms();
        let mut tx = self.begin_fenced(&Fence::none()).await?;
        let rows = sqlx::query(
            "UPDATE levels SET status = 'cancelled', reason = 'account_removed', version = version + 1, \
             updated_at = $1 WHERE account = $2 AND status = 'armed' RETURNING *",
        )
        .bind(now)
        .bind(account.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let retired: Vec<Level> = rows.iter().map(level).collect::<anyhow::Result<_>>()?;
        self.announce_retired(&mut tx, &retired, "account_removed", now).await?;
        tx.commit().await?;
        Ok(retired)
    }

    /// An outbox event and a log line per retired level.
    async fn announce_retired(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        retired: &[Level],
        reason: &str,
        now: i64,
    ) -> anyhow::Result<()> {
        for l in retired {
            let payload = json!({
                "event": "level_cancelled", "level_id": l.id, "account": l.account, "symbol": l.symbol,
                "side": l.side.map(PositionSide::as_str), "reason": reason,
                "take_profit": l.take_profit.map(|d| d.to_string()), "stop_loss": l.stop_loss.map(|d| d.to_string()),
            });
            let key = format!("level-{}-v{}-cancelled", l.id, l.version);
            insert_notification(tx, &key, "level_cancelled", self.events_webhook(), &payload, now).await?;
            tracing::info!(level = l.id, account = %l.account, symbol = %l.symbol, reason, "level retired: its position is gone");
        }
        if !retired.is_empty() {
            self.levels_changed();
        }
        Ok(())
    }

    /// Retires the levels that no longer match `account`/`symbol`'s position
    /// (see [`Self::retire_levels_in`]), in a transaction of its own.
    pub async fn retire_levels(
        &self,
        fence: &Fence,
        account: &str,
        symbol: &str,
        amount: Decimal,
    ) -> anyhow::Result<Vec<Level>> {
        let mut tx = self.begin_fenced(fence).await?;
        let retired = self.retire_levels_in(&mut tx, account, symbol, amount).await?;
        tx.commit().await?;
        retired.iter().for_each(|l| self.emit_level(l));
        Ok(retired)
    }
}
