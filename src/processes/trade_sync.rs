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
//! With streams on, an account whose user stream is healthy is only
//! reconciled every `exchange.stream_reconcile_seconds` (its stream's own
//! reconciliation counts as one). One covered symbol is read directly: the
//! positions call would cost as much as its fills.
//!
//! Each account is a unit of work of its own ([`AccountsQueue`]): its own
//! due time, backoff and deadline, a few accounts at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::accounts_queue::{AccountWorkSettings, AccountsQueue};
use super::platform::{Platform, Polled, venue_error};
use super::reconcile;
use crate::process::{ErrorKind, Process, ProcessError, RunContext, RunReport};

/// Runs between full sweeps of every covered symbol (a safety net; 1 h at the default interval).
const FULL_SWEEP_EVERY: u64 = 120;

/// (account, symbol) → the position update time its fills were synced up to.
type Seen = HashMap<(String, String), i64>;

pub struct TradeSync {
    platform: Arc<Platform>,
    /// Use the positions call to skip symbols without new fills.
    batching: bool,
    interval: Duration,
    runs: AtomicU64,
    /// Taken briefly (no I/O under it): accounts are worked concurrently.
    seen: Mutex<Seen>,
    /// While an account's user stream is healthy, its REST poll stretches.
    polled: Polled,
    queue: Arc<AccountsQueue>,
}

impl TradeSync {
    pub fn new(
        id: &str,
        platform: Arc<Platform>,
        interval: Duration,
        batching: bool,
        settings: AccountWorkSettings,
    ) -> Self {
        let queue = Arc::new(AccountsQueue::new("trade_sync", interval, settings));
        platform.account_queues.register(id, &queue);
        TradeSync {
            platform,
            batching,
            interval,
            runs: AtomicU64::new(0),
            seen: Mutex::default(),
            polled: Polled::default(),
            queue,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let full_sweep = !self.batching
            || self
                .runs
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(FULL_SWEEP_EVERY);
        // A healthy user stream stores fills as they happen: the account is polled only every reconcile interval.
        let eligible = |account: &str| self.polled.due(p, account);
        let worked = self
            .queue
            .run(p, &ctx, eligible, |ctx, account| async move {
                let started = tokio::time::Instant::now();
                let synced = self.sync_account(&ctx, &account, full_sweep).await;
                if synced.is_ok() {
                    self.polled.done(&account);
                    p.stream_health.fills_read(&account, started);
                }
                synced
            })
            .await?;
        {
            // Accounts gone from the registry leave nothing behind.
            let mine: std::collections::HashSet<String> = p.accounts.mine().into_iter().collect();
            self.seen().retain(|(account, _), _| mine.contains(account));
        }
        let (new, polled) = worked
            .results
            .iter()
            .fold((0, 0), |(n, k), (_, (new, polled))| (n + new, k + polled));
        worked.finish(format!("{new} new trades from {polled} symbols polled"))
    }

    /// One account: every covered symbol whose position moved (or all, on a
    /// full sweep). A symbol that fails does not stop the others; the account
    /// reports the first failure after trying them all.
    async fn sync_account(
        &self,
        ctx: &RunContext,
        account: &str,
        full_sweep: bool,
    ) -> Result<(u64, usize), ProcessError> {
        let p = &self.platform;
        let covered = reconcile::covered_symbols(p, account)
            .await
            .map_err(|e| p.store_error(e))?;
        let covered = p.listed("trade_sync", covered);
        // Update times observed *before* the fills are read: a fill after this moment moves them again.
        // They cost a positions read (weight 5), as much as one symbol's
        // fills: with one covered symbol, reading its fills directly is never
        // dearer. (With none, the read still shows the credentials work.)
        let updates: HashMap<String, i64> = if full_sweep || covered.len() == 1 {
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
            let synced = self.seen().get(&key).copied();
            if !full_sweep
                && let (Some(update), Some(synced)) = (update, synced)
                && update <= synced
            {
                continue;
            }
            polled += 1;
            match reconcile::fills(p, ctx, account, &symbol).await {
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
            let mark = update.unwrap_or_else(|| synced.unwrap_or(0));
            self.seen().insert(key, mark);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((new, polled)),
        }
    }
}

impl Process for TradeSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
