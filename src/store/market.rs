//! Positions (replaced per account by position sync) and the price cache
//! (written by price update, read by everyone else).

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, dec};
use crate::domain::{Position, Price};
use crate::process::Fence;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPosition {
    pub account: String,
    pub symbol: String,
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
    pub unrealized_pnl: Decimal,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPrice {
    pub symbol: String,
    pub price: Decimal,
    /// When we fetched it (ms).
    pub observed_at: i64,
    /// The venue's time of the price (ms).
    pub venue_time: i64,
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
    })
}

/// Writes one open position. An upsert, because position_sync (replacing an
/// account's positions) and user_stream (applying an `ACCOUNT_UPDATE`) may
/// write the same row at once: on PostgreSQL both deletes see no row and the
/// second plain insert would fail on the key.
async fn upsert_position(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    account: &str,
    p: &Position,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO positions (account, symbol, amount, entry_price, mark_price, unrealized_pnl, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (account, symbol) DO UPDATE SET amount = excluded.amount, entry_price = excluded.entry_price, \
         mark_price = excluded.mark_price, unrealized_pnl = excluded.unrealized_pnl, updated_at = excluded.updated_at",
    )
    .bind(account.to_string())
    .bind(p.symbol.clone())
    .bind(p.amount.to_string())
    .bind(p.entry_price.to_string())
    .bind(p.mark_price.to_string())
    .bind(p.unrealized_pnl.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Replaces an account's open positions in one transaction.
    pub async fn replace_positions(
        &self,
        fence: &Fence,
        account: &str,
        positions: &[Position],
        now: i64,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(fence).await?;
        sqlx::query("DELETE FROM positions WHERE account = $1")
            .bind(account.to_string())
            .execute(&mut *tx)
            .await?;
        for p in positions {
            upsert_position(&mut tx, account, p, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies positions that changed (a stream's `ACCOUNT_UPDATE`): a flat one
    /// goes, an open one is written.
    pub async fn update_positions(
        &self,
        fence: &Fence,
        account: &str,
        changed: &[Position],
        now: i64,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(fence).await?;
        for p in changed {
            sqlx::query("DELETE FROM positions WHERE account = $1 AND symbol = $2")
                .bind(account.to_string())
                .bind(p.symbol.clone())
                .execute(&mut *tx)
                .await?;
            if p.amount.is_zero() {
                continue;
            }
            upsert_position(&mut tx, account, p, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn positions(&self, account: Option<&str>) -> anyhow::Result<Vec<StoredPosition>> {
        let rows = sqlx::query("SELECT * FROM positions WHERE ($1 = '' OR account = $1) ORDER BY account, symbol")
            .bind(account.unwrap_or("").to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(position).collect()
    }

    pub async fn upsert_prices(&self, fence: &Fence, prices: &[Price], observed_at: i64) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(fence).await?;
        for p in prices {
            sqlx::query(
                "INSERT INTO prices (symbol, price, observed_at, venue_time) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, observed_at = excluded.observed_at, \
                 venue_time = excluded.venue_time",
            )
            .bind(p.symbol.clone())
            .bind(p.price.to_string())
            .bind(observed_at)
            .bind(p.time_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn prices(&self) -> anyhow::Result<Vec<StoredPrice>> {
        let rows = sqlx::query("SELECT * FROM prices ORDER BY symbol")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredPrice {
                    symbol: r.try_get("symbol")?,
                    price: dec(r, "price")?,
                    observed_at: r.try_get("observed_at")?,
                    venue_time: r.try_get("venue_time")?,
                })
            })
            .collect()
    }

    /// Symbols with an open position, an armed level or an active alert.
    pub async fn symbols_in_use(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT symbol FROM positions UNION SELECT symbol FROM levels WHERE status = 'armed' \
             UNION SELECT symbol FROM alerts WHERE status = 'active'",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.try_get("symbol")).collect::<Result<_, _>>()?)
    }

    /// Symbols of an account with a position or an armed level, plus symbols with active alerts.
    pub async fn account_symbols(&self, account: &str) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT symbol FROM positions WHERE account = $1 \
             UNION SELECT symbol FROM levels WHERE account = $1 AND status IN ('armed', 'triggered') \
             UNION SELECT symbol FROM alerts WHERE status = 'active'",
        )
        .bind(account.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.try_get("symbol")).collect::<Result<_, _>>()?)
    }
}
