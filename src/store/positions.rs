//! Positions as the venue last told us, ordered by the venue's time.
//!
//! Two writers race: position_sync and reconciliation replace an account's
//! rows from a positionRisk answer, user_stream applies each `ACCOUNT_UPDATE`.
//! An answer read before a fill can commit after the stream's event for that
//! fill, so rows are ordered by the venue's time of the fact (`venue_time`),
//! never by when we wrote them: a write never replaces a newer row.
//!
//! - A stream event's time is its transaction time (`T`, else `E`).
//! - A positionRisk answer is the account's state when the venue read it,
//!   which is no earlier than the newest `updateTime` among its rows; so each
//!   of its facts (an open row, a flat row, a stored open position it no
//!   longer lists) holds at that newest `updateTime`. Venue times only: no
//!   estimate of the venue's clock, and an answer shared by single flight or
//!   the cache carries its own times.
//! - A flat position keeps its row (amount `0`, a tombstone) with its time,
//!   so an older answer that still shows it open cannot bring it back.
//!   Readers skip tombstones; they go [`FLAT_KEPT_MS`] after their time, far
//!   longer than any answer is in flight. An answer's flat rows become
//!   tombstones only if they went flat within that window (positionRisk v2
//!   lists every symbol, flat or not).
//! - An answer older than a row of the same amount still refreshes its mark
//!   price and unrealized PnL: `updateTime` moves with the amount, not prices.
//!
//! Writes to one account are serialized (an advisory lock on PostgreSQL, the
//! single writer on SQLite), so two writers never deadlock on its rows.

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Dialect, Store, dec};
use crate::domain::Position;
use crate::process::Fence;

/// How long a flat position's row is kept after its venue time (ms).
pub const FLAT_KEPT_MS: i64 = 3_600_000;

/// How flat rows are written and recognised: one spelling, so SQL can skip them.
const FLAT: &str = "0";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPosition {
    pub account: String,
    pub symbol: String,
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
    pub unrealized_pnl: Decimal,
    /// When we wrote it (ms, our clock).
    pub updated_at: i64,
    /// The venue's time of the fact (ms): what orders the writes.
    pub venue_time: i64,
}

/// A row whose amount a write changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PositionChange {
    pub account: String,
    pub symbol: String,
    /// Before the write; zero when it was flat or not known.
    pub from: Decimal,
    /// After it; zero when the position went flat.
    pub to: Decimal,
    /// The venue's time of the new amount (ms).
    pub venue_time: i64,
    /// Armed levels this change retired (their position went flat or the other way).
    pub retired: Vec<i64>,
}

impl PositionChange {
    /// An open position went flat or turned to the other side.
    pub fn closed_or_flipped(&self) -> bool {
        !self.from.is_zero() && (self.to.is_zero() || self.from.is_sign_negative() != self.to.is_sign_negative())
    }

    /// Why the levels it retired were retired.
    pub fn retire_reason(&self) -> &'static str {
        match self.to.is_zero() {
            true => "position_closed",
            false => "position_flipped",
        }
    }
}

/// What one conditional write did (with the row as written).
enum Wrote {
    Changed(PositionChange, StoredPosition),
    Same(StoredPosition),
    /// The stored row is newer: nothing written.
    Older,
}

fn position(r: &AnyRow) -> anyhow::Result<StoredPosition> {
    Ok(StoredPosition {
        account: r.try_get("account")?,
        symbol: r.try_get("symbol")?,
        amount: dec(r, "amount")?,
        entry_price: dec(r, "entry_price")?,
        mark_price: dec(r, "mark_price")?,
        unrealized_pnl: dec(r, "unrealized_pnl")?,
        updated_at: r.try_get("updated_at")?,
        venue_time: r.try_get("venue_time")?,
    })
}

fn amount_text(amount: Decimal) -> String {
    match amount.is_zero() {
        true => FLAT.to_string(),
        false => amount.to_string(),
    }
}

/// Writes one fact unless the stored row is newer. An upsert, because two
/// writers may insert the same new row at once; `prev_amount` takes the old
/// amount in the same statement, so what changed is known without a read.
async fn write_fact(
    tx: &mut Transaction<'static, Any>,
    account: &str,
    p: &Position,
    venue_time: i64,
    now: i64,
) -> anyhow::Result<Wrote> {
    let row = sqlx::query(
        "INSERT INTO positions (account, symbol, amount, entry_price, mark_price, unrealized_pnl, updated_at, \
         venue_time, prev_amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '0') \
         ON CONFLICT (account, symbol) DO UPDATE SET prev_amount = positions.amount, amount = excluded.amount, \
         entry_price = excluded.entry_price, mark_price = excluded.mark_price, \
         unrealized_pnl = excluded.unrealized_pnl, updated_at = excluded.updated_at, venue_time = excluded.venue_time \
         WHERE positions.venue_time <= excluded.venue_time \
         RETURNING *",
    )
    .bind(account.to_string())
    .bind(p.symbol.clone())
    .bind(amount_text(p.amount))
    .bind(p.entry_price.to_string())
    .bind(p.mark_price.to_string())
    .bind(p.unrealized_pnl.to_string())
    .bind(now)
    .bind(venue_time)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Wrote::Older);
    };
    let (from, to) = (dec(&row, "prev_amount")?, dec(&row, "amount")?);
    let written = position(&row)?;
    if from == to {
        return Ok(Wrote::Same(written));
    }
    Ok(Wrote::Changed(
        PositionChange {
            account: account.to_string(),
            symbol: p.symbol.clone(),
            from,
            to,
            venue_time,
            retired: Vec::new(),
        },
        written,
    ))
}

/// An answer older than the stored row, of the same open amount: its prices
/// are still news. Conditional on the amount read, so a concurrent change wins.
async fn refresh_prices(
    tx: &mut Transaction<'static, Any>,
    account: &str,
    p: &Position,
    now: i64,
) -> anyhow::Result<()> {
    let stored = sqlx::query("SELECT amount FROM positions WHERE account = $1 AND symbol = $2")
        .bind(account.to_string())
        .bind(p.symbol.clone())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(stored) = stored else { return Ok(()) };
    let text: String = stored.try_get("amount")?;
    if p.amount.is_zero() || dec(&stored, "amount")? != p.amount {
        return Ok(());
    }
    sqlx::query(
        "UPDATE positions SET mark_price = $1, unrealized_pnl = $2, updated_at = $3 \
         WHERE account = $4 AND symbol = $5 AND amount = $6",
    )
    .bind(p.mark_price.to_string())
    .bind(p.unrealized_pnl.to_string())
    .bind(now)
    .bind(account.to_string())
    .bind(p.symbol.clone())
    .bind(text)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks flat, as of `venue_time`, the account's open rows not in `keep` and
/// not newer; returns those that went.
async fn flatten_others(
    tx: &mut Transaction<'static, Any>,
    account: &str,
    keep: &[&str],
    venue_time: i64,
    now: i64,
) -> anyhow::Result<Vec<PositionChange>> {
    let mut sql = String::from(
        "UPDATE positions SET prev_amount = amount, amount = '0', entry_price = '0', mark_price = '0', \
         unrealized_pnl = '0', updated_at = $1, venue_time = $2 \
         WHERE account = $3 AND amount <> '0' AND venue_time <= $2",
    );
    if !keep.is_empty() {
        let marks: Vec<String> = (0..keep.len()).map(|i| format!("${}", i + 4)).collect();
        sql.push_str(&format!(" AND symbol NOT IN ({})", marks.join(", ")));
    }
    sql.push_str(" RETURNING symbol, prev_amount");
    // Placeholders only: the symbols are bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(venue_time)
        .bind(account.to_string());
    for symbol in keep {
        query = query.bind(symbol.to_string());
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|r| {
            Ok(PositionChange {
                account: account.to_string(),
                symbol: r.try_get("symbol")?,
                from: dec(r, "prev_amount")?,
                to: Decimal::ZERO,
                venue_time,
                retired: Vec::new(),
            })
        })
        .collect()
}

/// The row a position that went flat is left as.
fn flat_row(c: &PositionChange, now: i64) -> StoredPosition {
    StoredPosition {
        account: c.account.clone(),
        symbol: c.symbol.clone(),
        amount: Decimal::ZERO,
        entry_price: Decimal::ZERO,
        mark_price: Decimal::ZERO,
        unrealized_pnl: Decimal::ZERO,
        updated_at: now,
        venue_time: c.venue_time,
    }
}

impl Store {
    /// Serializes writes to one account's positions (PostgreSQL; SQLite has one writer).
    async fn lock_positions(&self, tx: &mut Transaction<'static, Any>, account: &str) -> anyhow::Result<()> {
        if self.dialect == Dialect::Postgres {
            // The two-key form: a key space apart from the HA group locks. Selected
            // through a count because the lock function returns `void`.
            sqlx::query(
                "SELECT count(*) AS n FROM \
                 (SELECT pg_advisory_xact_lock(hashtext('script-manager positions'), hashtext($1))) AS locked",
            )
            .bind(account.to_string())
            .fetch_one(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Applies a whole positionRisk answer for `account`: `rows` are every
    /// row the venue listed, flat ones included. Each fact holds as of the
    /// newest `updateTime` among them; a stored open position the answer does
    /// not list as open is flat as of then. Nothing newer is replaced.
    /// Returns the rows whose amount changed.
    pub async fn replace_positions(
        &self,
        fence: &Fence,
        account: &str,
        rows: &[Position],
        now: i64,
    ) -> anyhow::Result<Vec<PositionChange>> {
        let as_of = rows.iter().map(|p| p.update_time_ms).max().unwrap_or(0);
        let mut tx = self.begin_fenced(fence).await?;
        self.lock_positions(&mut tx, account).await?;
        let mut changes = Vec::new();
        let mut written = Vec::new();
        let mut kept = Vec::new();
        for p in rows {
            let recently_flat = p.amount.is_zero() && p.update_time_ms >= now - FLAT_KEPT_MS;
            if !p.amount.is_zero() || recently_flat {
                match write_fact(&mut tx, account, p, as_of, now).await? {
                    Wrote::Changed(change, row) => {
                        changes.push(change);
                        written.push(row);
                    }
                    // Same amount: its mark price and PnL are still news.
                    Wrote::Same(row) if !row.amount.is_zero() => written.push(row),
                    Wrote::Same(_) => {}
                    Wrote::Older => refresh_prices(&mut tx, account, p, now).await?,
                }
                kept.push(p.symbol.as_str());
            }
        }
        let flattened = flatten_others(&mut tx, account, &kept, as_of, now).await?;
        written.extend(flattened.iter().map(|c| flat_row(c, now)));
        changes.extend(flattened);
        let retired = self.retire_with(&mut tx, &mut changes).await?;
        tx.commit().await?;
        self.emit_positions(&written, &retired);
        Ok(changes)
    }

    /// Applies positions that changed (a stream's `ACCOUNT_UPDATE`), each as
    /// of its `update_time_ms`; a flat one keeps its row. Nothing newer is
    /// replaced. Returns the rows whose amount changed.
    pub async fn update_positions(
        &self,
        fence: &Fence,
        account: &str,
        changed: &[Position],
        now: i64,
    ) -> anyhow::Result<Vec<PositionChange>> {
        let mut tx = self.begin_fenced(fence).await?;
        self.lock_positions(&mut tx, account).await?;
        let mut changes = Vec::new();
        let mut written = Vec::new();
        for p in changed {
            match write_fact(&mut tx, account, p, p.update_time_ms, now).await? {
                Wrote::Changed(change, row) => {
                    changes.push(change);
                    written.push(row);
                }
                Wrote::Same(row) => written.push(row),
                Wrote::Older => {}
            }
        }
        let retired = self.retire_with(&mut tx, &mut changes).await?;
        tx.commit().await?;
        self.emit_positions(&written, &retired);
        Ok(changes)
    }

    /// Retires the armed levels of every position that went flat or the
    /// other way, in the transaction that wrote it: a level never outlives
    /// the position it was set for.
    async fn retire_with(
        &self,
        tx: &mut Transaction<'static, Any>,
        changes: &mut [PositionChange],
    ) -> anyhow::Result<Vec<super::Level>> {
        let mut all = Vec::new();
        for change in changes.iter_mut().filter(|c| c.closed_or_flipped()) {
            let retired = self
                .retire_levels_in(tx, &change.account, &change.symbol, change.to)
                .await?;
            change.retired = retired.iter().map(|l| l.id).collect();
            all.extend(retired);
        }
        Ok(all)
    }

    /// Positions written and levels they retired, as events (after the commit).
    fn emit_positions(&self, written: &[StoredPosition], retired: &[super::Level]) {
        if self.event_hub().is_none() {
            return;
        }
        for p in written {
            self.emit(
                crate::events::Kind::Position,
                Some(&p.account),
                Some(&p.symbol),
                &serde_json::json!(p),
            );
        }
        retired.iter().for_each(|l| self.emit_level(l));
    }

    /// Every stored position fact, flat ones (kept a while) included:
    /// (account, symbol, signed amount, venue time).
    pub async fn position_facts(&self) -> anyhow::Result<Vec<(String, String, Decimal, i64)>> {
        let rows = sqlx::query("SELECT account, symbol, amount, venue_time FROM positions")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("account")?,
                    r.try_get("symbol")?,
                    dec(r, "amount")?,
                    r.try_get("venue_time")?,
                ))
            })
            .collect()
    }

    /// Open positions (flat rows skipped), of one account or all.
    pub async fn positions(&self, account: Option<&str>) -> anyhow::Result<Vec<StoredPosition>> {
        let rows = sqlx::query(
            "SELECT * FROM positions WHERE ($1 = '' OR account = $1) AND amount <> '0' ORDER BY account, symbol",
        )
        .bind(account.unwrap_or("").to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(position).collect()
    }

    /// How many positions are open across every account (position_sync's gauge).
    pub async fn open_positions_count(&self) -> anyhow::Result<usize> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM positions WHERE amount <> '0'")
            .fetch_one(self.pool())
            .await?;
        Ok(n.max(0) as usize)
    }

    /// Forgets flat positions whose venue time is [`FLAT_KEPT_MS`] before `now`.
    pub async fn prune_flat_positions(&self, now: i64) -> anyhow::Result<u64> {
        let gone = sqlx::query("DELETE FROM positions WHERE amount = '0' AND venue_time < $1")
            .bind(now - FLAT_KEPT_MS)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(gone)
    }
}
