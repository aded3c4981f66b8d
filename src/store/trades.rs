//! Fills, stored idempotently with the sync cursor that goes with them.

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, dec};
use crate::clock::now_ms;
use crate::domain::Fill;
use crate::process::Fence;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredTrade {
    pub account: String,
    pub symbol: String,
    pub id: i64,
    pub order_id: i64,
    pub side: String,
    pub price: Decimal,
    pub qty: Decimal,
    pub realized_pnl: Decimal,
    pub commission: Decimal,
    pub time: i64,
}

fn trade(r: &AnyRow) -> anyhow::Result<StoredTrade> {
    Ok(StoredTrade {
        account: r.try_get("account")?,
        symbol: r.try_get("symbol")?,
        id: r.try_get("id")?,
        order_id: r.try_get("order_id")?,
        side: r.try_get("side")?,
        price: dec(r, "price")?,
        qty: dec(r, "qty")?,
        realized_pnl: dec(r, "realized_pnl")?,
        commission: dec(r, "commission")?,
        time: r.try_get("time")?,
    })
}

/// Inserts the fills not stored yet; returns those it inserted.
async fn insert_fills<'f>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    account: &str,
    fills: &'f [Fill],
) -> anyhow::Result<Vec<&'f Fill>> {
    let mut inserted = Vec::new();
    for f in fills {
        let n = sqlx::query(
            "INSERT INTO trades (account, symbol, id, order_id, side, price, qty, realized_pnl, commission, time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (account, symbol, id) DO NOTHING",
        )
        .bind(account.to_string())
        .bind(f.symbol.clone())
        .bind(f.id as i64)
        .bind(f.order_id as i64)
        .bind(f.side.as_str())
        .bind(f.price.to_string())
        .bind(f.qty.to_string())
        .bind(f.realized_pnl.to_string())
        .bind(f.commission.to_string())
        .bind(f.time_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n > 0 {
            inserted.push(f);
        }
    }
    Ok(inserted)
}

impl Store {
    /// Where the next sync of (account, symbol) starts.
    pub async fn cursor(&self, account: &str, symbol: &str) -> anyhow::Result<Option<u64>> {
        let row = sqlx::query("SELECT next_from_id FROM sync_cursors WHERE account = $1 AND symbol = $2")
            .bind(account.to_string())
            .bind(symbol.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>("next_from_id"))
            .transpose()?
            .map(|v| v as u64))
    }

    /// Upserts a page of fills and advances the cursor past them, in one
    /// transaction: a crash leaves either both or neither. Returns new rows.
    pub async fn store_fills(&self, fence: &Fence, account: &str, symbol: &str, fills: &[Fill]) -> anyhow::Result<u64> {
        let Some(last) = fills.iter().map(|f| f.id).max() else {
            return Ok(0);
        };
        let mut tx = self.begin_fenced(fence).await?;
        let inserted = insert_fills(&mut tx, account, fills).await?;
        sqlx::query(
            "INSERT INTO sync_cursors (account, symbol, next_from_id, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, symbol) DO UPDATE SET next_from_id = excluded.next_from_id, updated_at = excluded.updated_at",
        )
        .bind(account.to_string())
        .bind(symbol.to_string())
        .bind(last as i64 + 1)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.emit_fills(account, &inserted);
        Ok(inserted.len() as u64)
    }

    /// Upserts fills that arrived by stream, leaving the cursor alone: a fill
    /// missed meanwhile is still ahead of it, and one seen both ways is stored once.
    pub async fn insert_streamed_fills(&self, fence: &Fence, account: &str, fills: &[Fill]) -> anyhow::Result<u64> {
        let mut tx = self.begin_fenced(fence).await?;
        let inserted = insert_fills(&mut tx, account, fills).await?;
        tx.commit().await?;
        self.emit_fills(account, &inserted);
        Ok(inserted.len() as u64)
    }

    /// New fills as `fill` events (after their commit).
    fn emit_fills(&self, account: &str, fills: &[&Fill]) {
        if self.event_hub().is_none() {
            return;
        }
        for f in fills {
            let data = serde_json::json!({
                "account": account, "symbol": f.symbol, "id": f.id, "order_id": f.order_id,
                "side": f.side.as_str(), "price": f.price.to_string(), "qty": f.qty.to_string(),
                "realized_pnl": f.realized_pnl.to_string(), "commission": f.commission.to_string(), "time": f.time_ms,
            });
            self.emit(crate::events::Kind::Fill, Some(account), Some(&f.symbol), &data);
        }
    }

    /// Newest first.
    pub async fn trades(
        &self,
        account: Option<&str>,
        symbol: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<StoredTrade>> {
        let rows = sqlx::query(
            "SELECT * FROM trades WHERE ($1 = '' OR account = $1) AND ($2 = '' OR symbol = $2) \
             ORDER BY time DESC, id DESC LIMIT $3",
        )
        .bind(account.unwrap_or("").to_string())
        .bind(symbol.unwrap_or("").to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(trade).collect()
    }

    /// The fills of one order: what the venue's backstop closed, say.
    pub async fn fills_of_order(&self, account: &str, symbol: &str, order_id: i64) -> anyhow::Result<Vec<StoredTrade>> {
        let rows = sqlx::query("SELECT * FROM trades WHERE account = $1 AND symbol = $2 AND order_id = $3 ORDER BY id")
            .bind(account.to_string())
            .bind(symbol.to_string())
            .bind(order_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(trade).collect()
    }

    pub async fn trades_since(&self, account: &str, since_ms: i64) -> anyhow::Result<Vec<StoredTrade>> {
        let rows = sqlx::query("SELECT * FROM trades WHERE account = $1 AND time >= $2 ORDER BY time, id")
            .bind(account.to_string())
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(trade).collect()
    }

    /// Symbols the account traded since `since_ms`.
    pub async fn traded_symbols(&self, account: &str, since_ms: i64) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT symbol FROM trades WHERE account = $1 AND time >= $2")
            .bind(account.to_string())
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.try_get("symbol")).collect::<Result<_, _>>()?)
    }
}
