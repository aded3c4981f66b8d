//! `trade_sync`: each account's new fills since its stored cursor (`fromId`),
//! upserted idempotently with the cursor advanced in the same transaction,
//! so a crash at any point leaves no gap and no duplicate.
//!
//! Symbols covered per account: open positions, levels, active alerts,
//! symbols traded within the recent window, and `exchange.symbols`.
//!
//! Binance lists fills per symbol, so polling every covered symbol costs one
//! call each. With batching on (the default), one positions call per account
//! tells which symbols' positions changed since the last sync (every fill
//! changes one), and only those are polled; a full sweep of every covered
//! symbol still runs on the first run and every `FULL_SWEEP_EVERY` runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;

use super::platform::{PerAccount, Platform, distinct, venue_error};
use crate::clock::now_ms;
use crate::exchange::VenueError;
use crate::process::{ErrorKind, Process, ProcessError, RunContext, RunReport};

/// Binance returns at most 1000 fills per call.
const PAGE: u32 = 1000;
/// Symbols traded this recently stay covered.
const RECENT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Runs between full sweeps of every covered symbol (a safety net; 1 h at the default interval).
const FULL_SWEEP_EVERY: u64 = 120;

#[derive(Default)]
struct Seen {
    runs: u64,
    /// (account, symbol) → the position update time its fills were synced up to.
    synced_update: HashMap<(String, String), i64>,
}

pub struct TradeSync {
    platform: Arc<Platform>,
    /// Use the positions call to skip symbols without new fills.
    batching: bool,
    interval: Duration,
    seen: Mutex<Seen>,
}

impl TradeSync {
    pub fn new(platform: Arc<Platform>, interval: Duration, batching: bool) -> Self {
        TradeSync {
            platform,
            batching,
            interval,
            seen: Mutex::new(Seen::default()),
        }
    }

    async fn symbols(&self, account: &str) -> anyhow::Result<Vec<String>> {
        let p = &self.platform;
        let open = p.store.account_symbols(account).await?;
        let traded = p
            .store
            .traded_symbols(account, now_ms() - RECENT_WINDOW.as_millis() as i64)
            .await?;
        Ok(distinct(
            open.into_iter().chain(traded).chain(p.symbols.iter().cloned()),
        ))
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let mut seen = self.seen.lock().await;
        let full_sweep = !self.batching || seen.runs.is_multiple_of(FULL_SWEEP_EVERY);
        let (mut new, mut polled) = (0, 0);
        let mut accounts = PerAccount::new(p, "trade_sync");
        for account in &p.accounts {
            let synced = self.sync_account(&ctx, account, full_sweep, &mut seen).await;
            if let Some((n, k)) = accounts.record(account, synced)? {
                new += n;
                polled += k;
            }
        }
        seen.runs += 1;
        accounts.finish(format!("{new} new trades from {polled} symbols polled"))
    }

    /// One account: every covered symbol whose position moved (or all, on a
    /// full sweep). A symbol that fails does not stop the others; the account
    /// reports the first failure after trying them all.
    async fn sync_account(
        &self,
        ctx: &RunContext,
        account: &str,
        full_sweep: bool,
        seen: &mut Seen,
    ) -> Result<(u64, usize), ProcessError> {
        let p = &self.platform;
        let covered = self.symbols(account).await.map_err(|e| p.store_error(e))?;
        let covered = p.listed("trade_sync", covered);
        // Update times observed *before* the fills are read: a fill after this moment moves them again.
        let updates: HashMap<String, i64> = if full_sweep {
            HashMap::new()
        } else {
            let caller = ctx.caller(Some(self.interval / 2));
            p.venue
                .position_update_times(&caller, account)
                .await
                .map_err(venue_error)?
                .into_iter()
                .collect()
        };
        let (mut new, mut polled, mut failed) = (0, 0, None);
        for symbol in covered {
            let key = (account.to_string(), symbol.clone());
            let update = updates.get(&symbol).copied();
            if !full_sweep
                && let (Some(update), Some(&synced)) = (update, seen.synced_update.get(&key))
                && update <= synced
            {
                continue;
            }
            polled += 1;
            match self.sync_symbol(ctx, account, &symbol).await {
                Ok(Some(n)) => new += n,
                // The venue does not list it (delisted since the last exchangeInfo): skipped, not a failure.
                Ok(None) => {
                    p.events.symbol_skipped("trade_sync");
                    continue;
                }
                // No lease or no budget left: every other symbol would fail the same way.
                Err(e) if matches!(e.kind, ErrorKind::Fenced | ErrorKind::BudgetExhausted) => return Err(e),
                Err(e) => {
                    tracing::warn!(account, %symbol, error = %e, "cannot sync a symbol's fills; the others go on");
                    failed.get_or_insert(ProcessError::new(
                        e.kind,
                        format!("{symbol}: {}", e.message),
                        e.retriable,
                    ));
                    continue;
                }
            }
            let mark = update.unwrap_or_else(|| seen.synced_update.get(&key).copied().unwrap_or(0));
            seen.synced_update.insert(key, mark);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((new, polled)),
        }
    }

    /// Stores the symbol's new fills; `None` when the venue does not list it (-1121).
    async fn sync_symbol(&self, ctx: &RunContext, account: &str, symbol: &str) -> Result<Option<u64>, ProcessError> {
        let p = &self.platform;
        let mut new = 0;
        loop {
            let from = p
                .store
                .cursor(account, symbol)
                .await
                .map_err(|e| self.platform.store_error(e))?
                .unwrap_or(0);
            let fills = match p
                .venue
                .fills_since(&ctx.caller(None), account, symbol, Some(from), PAGE)
                .await
            {
                Ok(fills) => fills,
                Err(VenueError::Rejected { code: -1121, .. }) => return Ok(None),
                Err(e) => return Err(venue_error(e)),
            };
            let inserted = p
                .store
                .store_fills(&ctx.fence, account, symbol, &fills)
                .await
                .map_err(|e| self.platform.store_error(e))?;
            p.events.trades_synced(inserted);
            new += inserted;
            if fills.len() < PAGE as usize {
                return Ok(Some(new));
            }
        }
    }
}

impl Process for TradeSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
