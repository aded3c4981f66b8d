//! The price cache (written by price update, read by everyone else) and the
//! symbols in use (open positions, levels, alerts).

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Row;

use super::{Store, dec};
use crate::domain::Price;
use crate::process::Fence;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPrice {
    pub symbol: String,
    pub price: Decimal,
    /// When we fetched it (ms).
    pub observed_at: i64,
    /// The venue's time of the price (ms).
    pub venue_time: i64,
}

impl Store {
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
        if let Some(hub) = self.event_hub() {
            for p in prices {
                hub.quote(&p.symbol, crate::events::Source::Rest, p.price, p.price, p.time_ms);
            }
        }
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
            "SELECT symbol FROM positions WHERE amount <> '0' UNION SELECT symbol FROM levels WHERE status = 'armed' \
             UNION SELECT symbol FROM alerts WHERE status = 'active'",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.try_get("symbol")).collect::<Result<_, _>>()?)
    }

    /// Symbols of an account with a position or an armed level, plus symbols with active alerts.
    pub async fn account_symbols(&self, account: &str) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT symbol FROM positions WHERE account = $1 AND amount <> '0' \
             UNION SELECT symbol FROM levels WHERE account = $1 AND status IN ('armed', 'triggered') \
             UNION SELECT symbol FROM alerts WHERE status = 'active'",
        )
        .bind(account.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.try_get("symbol")).collect::<Result<_, _>>()?)
    }
}
