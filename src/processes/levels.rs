//! The level engine: armed levels in a sorted index, evaluated against a
//! quote the moment it arrives (a streamed price, `market_stream`) or on
//! `level_monitor`'s tick (the safety net). A crossed level becomes an intent
//! row *before* any order and is closed by the close protocol (`close.rs`).
//! One level's failure is recorded and counted; the others still fire.
//!
//! Shared by both processes through `Platform::levels`; its methods take the
//! platform and the caller's run context (fence, budget identity, deadline).

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::close::{Close, Settled};
use super::level_index::LevelIndex;
use super::platform::Platform;
use crate::domain::{PriceSource, Quote};
use crate::process::{ErrorKind, ProcessError, RunContext};
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

/// What one evaluation did.
#[derive(Default)]
pub struct Tally {
    pub fired: usize,
    pub settled: usize,
    pub failures: Vec<ProcessError>,
}

#[derive(Default)]
pub struct LevelEngine {
    state: Mutex<Option<Loaded>>,
    backoff: std::sync::Mutex<HashMap<String, Backoff>>,
    /// Intents being settled right now (by the stream's fire or the tick), so
    /// one replica never settles the same close twice at once.
    settling: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Which streamed price levels trigger on (`level_monitor.price_source`).
    source: std::sync::OnceLock<PriceSource>,
}

impl LevelEngine {
    /// Sets the price levels trigger on (once, when level_monitor is built).
    pub fn trigger_on(&self, source: PriceSource) {
        let _ = self.source.set(source);
    }

    pub fn source(&self) -> PriceSource {
        self.source.get().copied().unwrap_or_default()
    }

    /// The symbols with armed levels (reloading them if they changed).
    pub async fn symbols(&self, p: &Platform) -> Result<Vec<String>, ProcessError> {
        let mut state = self.state.lock().await;
        let loaded = self.current(p, &mut state).await?;
        p.events.levels_armed(loaded.levels.len());
        Ok(loaded.index.symbols())
    }

    /// Evaluates one quote: fires every level it crossed (a long's on the bid,
    /// a short's on the ask), each on its own.
    pub async fn evaluate(
        &self,
        p: &Platform,
        ctx: &RunContext,
        quote: &Quote,
        tally: &mut Tally,
    ) -> Result<(), ProcessError> {
        let mut state = self.state.lock().await;
        let loaded = self.current(p, &mut state).await?;
        let crossed: Vec<(i64, &'static str)> = loaded
            .index
            .crossed(&quote.symbol, quote.bid)
            .into_iter()
            .filter(|(id, _, _)| loaded.index.direction(*id) == Some(1))
            .chain(
                loaded
                    .index
                    .crossed(&quote.symbol, quote.ask)
                    .into_iter()
                    .filter(|(id, _, _)| loaded.index.direction(*id) == Some(-1)),
            )
            .map(|(id, kind, _)| (id, kind))
            .collect();
        for (id, kind) in crossed {
            let (Some(level), Some(direction)) = (loaded.levels.get(&id).cloned(), loaded.index.direction(id)) else {
                continue;
            };
            let open = loaded
                .amounts
                .get(&(level.account.clone(), level.symbol.clone()))
                .map_or(Decimal::ZERO, |a| a.abs());
            match self.fire(p, ctx, &level, (kind, direction, open), quote, tally).await {
                // The intent is committed (or the level changed elsewhere): out of the index.
                Ok(fired) => {
                    loaded.index.remove(&quote.symbol, id);
                    loaded.levels.remove(&id);
                    tally.fired += fired as usize;
                }
                // Not committed: the level stays in the index and is tried again.
                Err(e) => {
                    tracing::error!(level = id, kind, error = %e, "cannot fire a crossed level");
                    tally.failures.push(e);
                }
            }
        }
        p.events.levels_armed(loaded.levels.len());
        Ok(())
    }

    /// The loaded levels, re-read when they changed (here, elsewhere, or long ago).
    async fn current<'a>(&self, p: &Platform, state: &'a mut Option<Loaded>) -> Result<&'a mut Loaded, ProcessError> {
        let stale = match state.as_ref() {
            None => true,
            Some(s) => {
                s.generation != p.store.levels_generation()
                    || s.at.elapsed() > RELOAD_EVERY
                    || changed_elsewhere(p, s.fingerprint)
                        .await
                        .map_err(|e| p.store_error(e))?
            }
        };
        if stale {
            *state = Some(load(p).await.map_err(|e| p.store_error(e))?);
        }
        Ok(state.as_mut().expect("loaded above"))
    }

    /// Records the intent, then closes. `Ok(false)`: the level changed
    /// meanwhile. `Err`: the intent could not be committed. A close that fails
    /// after the commit is recorded in `tally` (the intent stays pending).
    async fn fire(
        &self,
        p: &Platform,
        ctx: &RunContext,
        level: &Level,
        (kind, direction, open): (&'static str, i8, Decimal),
        quote: &Quote,
        tally: &mut Tally,
    ) -> Result<bool, ProcessError> {
        let side = if direction > 0 { "SELL" } else { "BUY" };
        let price = if direction > 0 { quote.bid } else { quote.ask };
        let observed_at = crate::clock::now_ms() - quote.received.elapsed().as_millis() as i64;
        let Some(intent) = p
            .store
            .trigger_level(&ctx.fence, level, (side, open), (kind, price, observed_at))
            .await
            .map_err(|e| p.store_error(e))?
        else {
            return Ok(false); // changed meanwhile (deleted, or fired elsewhere)
        };
        tracing::info!(level = level.id, kind, %price, client_order_id = %intent.client_order_id, "level crossed; closing");
        let _settling = self.settling(&intent.client_order_id);
        let mut close = Close::new(p, ctx);
        let settled = close.settle(intent.clone(), true).await;
        if let Some((acked, venue_time)) = close.first_ack {
            let trace = crate::telemetry::otel::trace_id(&tracing::Span::current());
            p.events
                .trigger_latency(acked.duration_since(quote.received).as_secs_f64(), trace);
            if venue_time > 0 && quote.time_ms > 0 {
                p.events
                    .trigger_venue_latency((venue_time - quote.time_ms).max(0) as f64 / 1000.0);
            }
        }
        match settled {
            Ok(settled) => self.record(p, &intent, settled),
            Err(e) => tally.failures.push(self.intent_error(p, &intent, e)),
        }
        Ok(true)
    }

    /// Settles pending intents whose backoff has passed, each on its own.
    pub async fn settle_pending(&self, p: &Platform, ctx: &RunContext, tally: &mut Tally) {
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
            let Some(_settling) = self.settling(&intent.client_order_id) else {
                continue; // being settled right now by the path that fired it
            };
            tracing::info!(client_order_id = %intent.client_order_id, attempt = intent.attempt, "settling a close of unknown outcome");
            match Close::new(p, ctx).settle(intent.clone(), false).await {
                Ok(settled) => {
                    tally.settled += matches!(settled, Settled::Executed | Settled::Failed(_)) as usize;
                    self.record(p, &intent, settled);
                }
                Err(e) => tally.failures.push(self.intent_error(p, &intent, e)),
            }
        }
    }

    /// An order of some close changed at the venue (user stream): settle that
    /// close now rather than at its next backoff.
    pub fn nudge(&self, client_order_id: &str) {
        let base = client_order_id.splitn(4, '-').take(3).collect::<Vec<_>>().join("-");
        if let Some(b) = self.backoff().get_mut(&base) {
            b.next = Instant::now();
        }
    }

    /// Counts and logs how a close settled, and schedules the next settle of a pending one.
    fn record(&self, p: &Platform, intent: &Intent, settled: Settled) {
        let kind = if intent.kind == "take_profit" {
            "take_profit"
        } else {
            "stop_loss"
        };
        let id = &intent.client_order_id;
        match settled {
            Settled::Executed => {
                self.backoff().remove(id);
                p.events.level_triggered(kind, "executed");
                tracing::info!(client_order_id = %id, "close executed: the position is flat");
            }
            Settled::Elsewhere => {
                self.backoff().remove(id);
            }
            Settled::Failed(why) => {
                self.backoff().remove(id);
                p.events.level_triggered(kind, "failed");
                tracing::error!(client_order_id = %id, reason = %why, "close failed: the position is not flat");
            }
            Settled::Pending(why) => {
                let mut backoff = self.backoff();
                let tries = backoff.get(id).map_or(0, |b| b.tries) + 1;
                if tries == 1 {
                    p.events.level_triggered(kind, "unknown");
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
    fn intent_error(&self, p: &Platform, intent: &Intent, e: ProcessError) -> ProcessError {
        self.record(p, intent, Settled::Pending(e.message.clone()));
        ProcessError::new(
            e.kind,
            format!("intent {}: {}", intent.client_order_id, e.message),
            e.retriable && e.kind != ErrorKind::Fenced,
        )
    }

    /// Marks `client_order_id` as being settled until the guard drops; `None`
    /// when it already is.
    fn settling(&self, client_order_id: &str) -> Option<Settling<'_>> {
        let mut set = self.settling.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(client_order_id.to_string()).then(|| Settling {
            set: &self.settling,
            id: client_order_id.to_string(),
        })
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backoff>> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An intent being settled; dropping it (however the settle ends) frees it.
struct Settling<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

async fn load(p: &Platform) -> anyhow::Result<Loaded> {
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
async fn changed_elsewhere(p: &Platform, loaded: Option<(i64, i64)>) -> anyhow::Result<bool> {
    match loaded {
        Some(loaded) => Ok(p.store.armed_levels_fingerprint().await? != loaded),
        None => Ok(false),
    }
}
