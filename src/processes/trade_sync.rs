//! `trade_sync`: each account's new fills since its stored cursor (`fromId`),
//! upserted idempotently with the cursor advanced in the same transaction,
//! so a crash at any point leaves no gap and no duplicate.
//!
//! Symbols covered per account: open positions, levels, active alerts,
//! symbols traded within the recent window, and `exchange.symbols`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::platform::{Platform, store_error, venue_error};
use crate::process::{Process, ProcessError, RunContext, RunReport};
use crate::store::now_ms;

/// Binance returns at most 1000 fills per call.
const PAGE: u32 = 1000;
/// Symbols traded this recently stay covered.
const RECENT_WINDOW: Duration = Duration::from_secs(24 * 3600);

pub struct TradeSync {
    platform: Arc<Platform>,
}

impl TradeSync {
    pub fn new(platform: Arc<Platform>) -> Self {
        TradeSync { platform }
    }

    async fn symbols(&self, account: &str) -> anyhow::Result<Vec<String>> {
        let p = &self.platform;
        let mut symbols = p.store.account_symbols(account).await?;
        symbols.extend(
            p.store
                .traded_symbols(account, now_ms() - RECENT_WINDOW.as_millis() as i64)
                .await?,
        );
        symbols.extend(p.symbols.iter().cloned());
        symbols.sort();
        symbols.dedup();
        Ok(symbols)
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let mut new = 0;
        for account in &p.accounts {
            for symbol in self.symbols(account).await.map_err(store_error)? {
                loop {
                    let from = p
                        .store
                        .cursor(account, &symbol)
                        .await
                        .map_err(store_error)?
                        .unwrap_or(0);
                    let fills = p
                        .venue
                        .fills_since(&ctx.caller(None), account, &symbol, Some(from), PAGE)
                        .await
                        .map_err(venue_error)?;
                    let inserted = p
                        .store
                        .store_fills(account, &symbol, &fills)
                        .await
                        .map_err(store_error)?;
                    p.metrics.domain.trades_synced.inc_by(inserted);
                    new += inserted;
                    if fills.len() < PAGE as usize {
                        break;
                    }
                }
            }
        }
        Ok(RunReport {
            summary: Some(format!("{new} new trades")),
        })
    }
}

impl Process for TradeSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
