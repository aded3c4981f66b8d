//! `level_monitor`: take-profit / stop-loss execution.
//!
//! Each tick: first settle intents left pending (a crash, a lost answer, an
//! order not final yet), each on its own with backoff; then evaluate fresh
//! prices against the sorted index of armed levels. A crossed level becomes
//! an intent row (deterministic id `sm-<level>-<version>`) *before* any
//! order, and is closed by the close protocol (`close.rs`): executed only
//! when the venue's position is flat. One level's failure is recorded and
//! counted; the others still fire in the same tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::close::{Close, Settled};
use super::level_index::LevelIndex;
use super::platform::{Platform, venue_error};
use crate::domain::Price;
use crate::process::{ErrorKind, Process, ProcessError, RunContext, RunReport};
use crate::store::{Intent, Level, LevelStatus};

/// Re-read levels and positions at least this often (positions change underneath).
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// Longest wait between two settles of one pending intent.
const MAX_SETTLE_BACKOFF: Duration = Duration::from_secs(60);

struct Loaded {
    index: LevelIndex,
    levels: HashMap<i64, Level>,
    /// Stored position amounts, for the intent's record of what was open.
    amounts: HashMap<(String, String), Decimal>,
    generation: u64,
    /// The store's fingerprint of armed levels, when other replicas may change them.
    fingerprint: Option<(i64, i64)>,
    at: Instant,
}

/// When a pending intent may be settled again, and how many settles left it pending.
#[derive(Clone, Copy)]
struct Backoff {
    next: Instant,
    tries: u32,
}

pub struct LevelMonitor {
    platform: Arc<Platform>,
    max_age: Duration,
    state: Mutex<Option<Loaded>>,
    backoff: std::sync::Mutex<HashMap<String, Backoff>>,
}

/// What one tick did.
#[derive(Default)]
struct Tally {
    fired: usize,
    settled: usize,
    failures: Vec<ProcessError>,
}

impl LevelMonitor {
    pub fn new(platform: Arc<Platform>, interval: Duration) -> Self {
        LevelMonitor {
            platform,
            max_age: interval / 2,
            state: Mutex::new(None),
            backoff: std::sync::Mutex::default(),
        }
    }

    async fn load(&self) -> anyhow::Result<Loaded> {
        let p = &self.platform;
        let generation = p.store.levels_generation();
        let fingerprint = match p.shared_store {
            true => Some(p.store.armed_levels_fingerprint().await?),
            false => None,
        };
        let levels = p.store.levels(Some(LevelStatus::Armed)).await?;
        let positions = p.store.positions(None).await?;
        let amounts: HashMap<(String, String), Decimal> = positions
            .into_iter()
            .map(|pos| ((pos.account, pos.symbol), pos.amount))
            .collect();
        let direction = |account: &str, symbol: &str| {
            amounts
                .get(&(account.to_string(), symbol.to_string()))
                .map(|a| if *a > Decimal::ZERO { 1 } else { -1 })
        };
        let index = LevelIndex::build(&levels, direction);
        Ok(Loaded {
            index,
            levels: levels.into_iter().map(|l| (l.id, l)).collect(),
            amounts,
            generation,
            fingerprint,
            at: Instant::now(),
        })
    }

    /// Under HA: whether another replica added, removed or fired a level since `loaded`.
    async fn changed_elsewhere(&self, loaded: Option<(i64, i64)>) -> anyhow::Result<bool> {
        match loaded {
            Some(loaded) => Ok(self.platform.store.armed_levels_fingerprint().await? != loaded),
            None => Ok(false),
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let mut tally = Tally::default();
        self.settle_pending(&ctx, &mut tally).await;
        let mut state = self.state.lock().await;
        let stale = match &*state {
            None => true,
            Some(s) => {
                s.generation != p.store.levels_generation()
                    || s.at.elapsed() > RELOAD_EVERY
                    || self
                        .changed_elsewhere(s.fingerprint)
                        .await
                        .map_err(|e| p.store_error(e))?
            }
        };
        if stale {
            *state = Some(self.load().await.map_err(|e| p.store_error(e))?);
        }
        let loaded = state.as_mut().expect("loaded above");
        p.events.levels_armed(loaded.levels.len());
        if !loaded.index.is_empty() {
            let (usable, unlisted): (Vec<String>, Vec<String>) =
                loaded.index.symbols().into_iter().partition(|s| p.catalog.usable(s));
            for symbol in &unlisted {
                p.events.symbol_skipped("level_monitor");
                tracing::warn!(%symbol, "levels on a symbol the venue no longer lists are not evaluated");
            }
            let prices = p
                .venue
                .prices(&ctx.caller(Some(self.max_age)), &usable)
                .await
                .map_err(venue_error)?;
            let received = Instant::now();
            for price in prices {
                self.fire_crossed(&ctx, loaded, &price, received, &mut tally).await;
            }
            p.events.levels_armed(loaded.levels.len());
        }
        let summary = format!("{} levels fired; {} settled", tally.fired, tally.settled);
        match tally.failures.len() {
            0 => Ok(RunReport { summary: Some(summary) }),
            n => {
                let first = tally.failures.swap_remove(0);
                Err(ProcessError::new(
                    first.kind,
                    format!("{summary}; {n} failed, first: {}", first.message),
                    first.retriable,
                ))
            }
        }
    }

    /// Fires every level `price` has crossed, each on its own.
    async fn fire_crossed(
        &self,
        ctx: &RunContext,
        loaded: &mut Loaded,
        price: &Price,
        received: Instant,
        tally: &mut Tally,
    ) {
        for (id, kind, _) in loaded.index.crossed(&price.symbol, price.price) {
            let (Some(level), Some(direction)) = (loaded.levels.get(&id).cloned(), loaded.index.direction(id)) else {
                continue;
            };
            let open = loaded
                .amounts
                .get(&(level.account.clone(), level.symbol.clone()))
                .map_or(Decimal::ZERO, |a| a.abs());
            match self
                .fire(ctx, &level, (kind, direction, open), price, received, tally)
                .await
            {
                // The intent is committed (or the level changed elsewhere): out of the index.
                Ok(fired) => {
                    loaded.index.remove(&price.symbol, id);
                    loaded.levels.remove(&id);
                    tally.fired += fired as usize;
                }
                // Not committed: the level stays in the index and is tried again next tick.
                Err(e) => {
                    tracing::error!(level = id, kind, error = %e, "cannot fire a crossed level");
                    tally.failures.push(e);
                }
            }
        }
    }

    /// Records the intent, then closes. `Ok(false)`: the level changed
    /// meanwhile. `Err`: the intent could not be committed. A close that fails
    /// after the commit is recorded in `tally` (the intent stays pending).
    async fn fire(
        &self,
        ctx: &RunContext,
        level: &Level,
        (kind, direction, open): (&'static str, i8, Decimal),
        price: &Price,
        received: Instant,
        tally: &mut Tally,
    ) -> Result<bool, ProcessError> {
        let p = &self.platform;
        let side = if direction > 0 { "SELL" } else { "BUY" };
        let observed_at = crate::clock::now_ms() - received.elapsed().as_millis() as i64;
        let Some(intent) = p
            .store
            .trigger_level(&ctx.fence, level, (side, open), (kind, price.price, observed_at))
            .await
            .map_err(|e| p.store_error(e))?
        else {
            return Ok(false); // changed meanwhile (deleted, or fired elsewhere)
        };
        tracing::info!(level = level.id, kind, price = %price.price, client_order_id = %intent.client_order_id, "level crossed; closing");
        let mut close = Close::new(p, ctx);
        let settled = close.settle(intent.clone(), true).await;
        if let Some((acked, venue_time)) = close.first_ack {
            p.events.trigger_latency(acked.duration_since(received).as_secs_f64());
            if venue_time > 0 && price.time_ms > 0 {
                p.events
                    .trigger_venue_latency((venue_time - price.time_ms).max(0) as f64 / 1000.0);
            }
        }
        match settled {
            Ok(settled) => self.record(&intent, settled),
            Err(e) => tally.failures.push(self.intent_error(&intent, e)),
        }
        Ok(true)
    }

    /// Settles pending intents whose backoff has passed, each on its own.
    async fn settle_pending(&self, ctx: &RunContext, tally: &mut Tally) {
        let p = &self.platform;
        let pending = match p.store.pending_intents().await {
            Ok(pending) => pending,
            Err(e) => return tally.failures.push(p.store_error(e)),
        };
        let now = Instant::now();
        for intent in pending {
            let due = self
                .backoff()
                .get(&intent.client_order_id)
                .is_none_or(|b| b.next <= now);
            if !due || Instant::now() + Duration::from_millis(200) > ctx.deadline {
                continue;
            }
            tracing::info!(client_order_id = %intent.client_order_id, attempt = intent.attempt, "settling a close of unknown outcome");
            match Close::new(p, ctx).settle(intent.clone(), false).await {
                Ok(settled) => {
                    tally.settled += !matches!(settled, Settled::Pending(_)) as usize;
                    self.record(&intent, settled);
                }
                Err(e) => tally.failures.push(self.intent_error(&intent, e)),
            }
        }
    }

    /// Counts and logs how a close settled, and schedules the next settle of a pending one.
    fn record(&self, intent: &Intent, settled: Settled) {
        let kind = if intent.kind == "take_profit" {
            "take_profit"
        } else {
            "stop_loss"
        };
        let id = &intent.client_order_id;
        match settled {
            Settled::Executed => {
                self.backoff().remove(id);
                self.platform.events.level_triggered(kind, "executed");
                tracing::info!(client_order_id = %id, "close executed: the position is flat");
            }
            Settled::Failed(why) => {
                self.backoff().remove(id);
                self.platform.events.level_triggered(kind, "failed");
                tracing::error!(client_order_id = %id, reason = %why, "close failed: the position is not flat");
            }
            Settled::Pending(why) => {
                let mut backoff = self.backoff();
                let tries = backoff.get(id).map_or(0, |b| b.tries) + 1;
                if tries == 1 {
                    self.platform.events.level_triggered(kind, "unknown");
                }
                let wait = Duration::from_secs(1u64 << (tries - 1).min(6)).min(MAX_SETTLE_BACKOFF);
                backoff.insert(
                    id.clone(),
                    Backoff {
                        next: Instant::now() + wait,
                        tries,
                    },
                );
                tracing::warn!(client_order_id = %id, reason = %why, retry_in_s = wait.as_secs(), "close not settled yet");
            }
        }
    }

    /// A store failure while settling one intent: it stays pending and backs off.
    fn intent_error(&self, intent: &Intent, e: ProcessError) -> ProcessError {
        self.record(intent, Settled::Pending(e.message.clone()));
        ProcessError::new(
            e.kind,
            format!("intent {}: {}", intent.client_order_id, e.message),
            e.retriable && e.kind != ErrorKind::Fenced,
        )
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backoff>> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Process for LevelMonitor {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
