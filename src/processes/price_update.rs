//! `price_update`: one batched price call for every symbol in use, written to
//! the price cache (the `prices` table) that the data API and dashboards read.
//! Symbols with a fresh streamed price (market_stream) take it instead of REST.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::platform::{Platform, distinct};
use crate::clock::now_ms;
use crate::process::{Process, ProcessError, RunContext, RunReport};

pub struct PriceUpdate {
    platform: Arc<Platform>,
    /// A price fetched by another process this recently is fresh enough.
    max_age: Duration,
}

impl PriceUpdate {
    pub fn new(platform: Arc<Platform>, interval: Duration) -> Self {
        PriceUpdate {
            platform,
            max_age: interval / 2,
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let in_use = p.store.symbols_in_use().await.map_err(|e| p.store_error(e))?;
        let symbols = p.listed(
            "price_update",
            distinct(in_use.into_iter().chain(p.symbols.iter().cloned())),
        );
        if symbols.is_empty() {
            return Ok(RunReport {
                summary: Some("no symbols in use".into()),
            });
        }
        let observed = now_ms();
        let prices = p.current_prices(&ctx, &symbols, self.max_age).await?;
        p.store
            .upsert_prices(&ctx.fence, &prices, observed)
            .await
            .map_err(|e| self.platform.store_error(e))?;
        let oldest = p.store.prices().await.map_err(|e| self.platform.store_error(e))?;
        let oldest_in_use = oldest
            .iter()
            .filter(|s| symbols.contains(&s.symbol))
            .map(|s| s.observed_at)
            .min();
        p.events.oldest_price_ms(oldest_in_use.unwrap_or(observed));
        Ok(RunReport {
            summary: Some(format!("{} prices", prices.len())),
        })
    }
}

impl Process for PriceUpdate {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
