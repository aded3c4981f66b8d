//! The level engine: armed levels in a sorted index, evaluated against a
//! quote the moment it arrives (a streamed price, `market_stream`) or on
//! `level_monitor`'s tick (the safety net). A crossed level becomes an intent
//! row, committed before any order, and the close (`close/`) drives it to
//! its end on a worker of its own. Evaluating never waits on the venue, and
//! no lock is held across the store: a slow close, or a slow venue, never
//! delays another symbol's trigger.
//!
//! Each level carries the side of the position it was set for; its
//! direction is never recomputed from the positions stored now.

pub mod close;
pub mod index;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use close::{Closer, Fired};
use index::LevelIndex;

use crate::domain::{PriceSource, Quote};
use crate::process::{Fence, ProcessError};
use crate::processes::platform::store_error;
use crate::store::{Level, LevelStatus, Store};
use crate::telemetry::domain::DomainEvents;

/// Re-read levels at least this often, whatever else says they changed.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

struct Loaded {
    index: LevelIndex,
    levels: HashMap<i64, Level>,
    generation: u64,
    /// The store's fingerprint of armed levels, when other replicas may change them.
    fingerprint: Option<(i64, i64)>,
    at: Instant,
}

/// What one evaluation did.
#[derive(Default)]
pub struct Tally {
    /// Levels whose intent was committed (their close is under way).
    pub fired: usize,
    pub failures: Vec<ProcessError>,
}

pub struct LevelEngine {
    store: Arc<Store>,
    events: DomainEvents,
    closer: Arc<Closer>,
    /// Other replicas write to the same store (HA): re-check what is cached.
    shared_store: bool,
    state: Mutex<Option<Loaded>>,
    /// Which streamed price levels trigger on (`level_monitor.price_source`).
    source: OnceLock<PriceSource>,
}

impl LevelEngine {
    pub fn new(store: Arc<Store>, events: DomainEvents, closer: Arc<Closer>, shared_store: bool) -> Self {
        LevelEngine {
            store,
            events,
            closer,
            shared_store,
            state: Mutex::new(None),
            source: OnceLock::new(),
        }
    }

    /// Sets the price levels trigger on (once, when level_monitor is built).
    pub fn trigger_on(&self, source: PriceSource) {
        let _ = self.source.set(source);
    }

    pub fn source(&self) -> PriceSource {
        self.source.get().copied().unwrap_or_default()
    }

    /// The close workers.
    pub fn closer(&self) -> &Arc<Closer> {
        &self.closer
    }

    /// The symbols with armed levels, re-reading them if they changed here
    /// or (HA) on another replica.
    pub async fn symbols(&self) -> Result<Vec<String>, ProcessError> {
        self.refresh(true).await?;
        let state = self.lock();
        let loaded = state.as_ref().expect("refreshed above");
        self.events.levels_armed(loaded.levels.len());
        Ok(loaded.index.symbols())
    }

    /// Evaluates one quote: commits an intent for every level it crossed (a
    /// long's on the bid, a short's on the ask) and hands each to its close
    /// worker. Returns at once; one level's failure never stops the others.
    pub async fn evaluate(&self, fence: &Fence, quote: &Quote, tally: &mut Tally) -> Result<(), ProcessError> {
        self.refresh(false).await?;
        let crossed = self.take_crossed(quote);
        let observed_at = crate::clock::now_ms() - quote.received.elapsed().as_millis() as i64;
        for (level, kind) in crossed {
            let price = match level.side {
                Some(crate::domain::PositionSide::Short) => quote.ask,
                _ => quote.bid,
            };
            let claim_for = (self.closer.owner(), self.closer.lease_ms());
            let claimed_at = Instant::now();
            match self
                .store
                .trigger_level(fence, &level, (kind, price, observed_at), claim_for)
                .await
            {
                Ok(Some((intent, claim))) => {
                    tracing::info!(level = level.id, kind, %price, client_order_id = %intent.client_order_id, "level crossed; closing");
                    tally.fired += 1;
                    let fired = Fired {
                        received: quote.received,
                        venue_ms: quote.time_ms,
                    };
                    self.closer.start_fired(intent, claim, claimed_at, fired);
                }
                Ok(None) => {} // changed meanwhile (deleted, retired, or fired elsewhere)
                Err(e) => {
                    // Not committed: back into the index, tried again on the next price.
                    tracing::error!(level = level.id, kind, error = %format!("{e:#}"), "cannot fire a crossed level");
                    self.put_back(level);
                    tally.failures.push(store_error(&self.events, e));
                }
            }
        }
        Ok(())
    }

    /// Fires `level` now, without a price crossing it here: the venue said
    /// the price is already through (its backstop would trigger at once).
    /// `Ok(false)`: the level changed meanwhile.
    pub async fn fire_now(&self, fence: &Fence, level: &Level, kind: &'static str) -> anyhow::Result<bool> {
        let price = match kind {
            "take_profit" => level.take_profit,
            _ => level.stop_loss,
        }
        .unwrap_or_default();
        let claim_for = (self.closer.owner(), self.closer.lease_ms());
        let claimed_at = Instant::now();
        let triggered = self
            .store
            .trigger_level(fence, level, (kind, price, crate::clock::now_ms()), claim_for)
            .await?;
        let Some((intent, claim)) = triggered else {
            return Ok(false);
        };
        let fired = Fired {
            received: claimed_at,
            venue_ms: 0,
        };
        self.closer.start_fired(intent, claim, claimed_at, fired);
        Ok(true)
    }

    /// Removes and returns the levels `quote` crossed, under the lock and without I/O.
    fn take_crossed(&self, quote: &Quote) -> Vec<(Level, &'static str)> {
        let mut state = self.lock();
        let Some(loaded) = state.as_mut() else {
            return Vec::new();
        };
        let crossed = loaded.index.crossed_quote(&quote.symbol, quote.bid, quote.ask);
        let taken: Vec<(Level, &'static str)> = crossed
            .into_iter()
            .filter_map(|(id, kind)| {
                loaded.index.remove(&quote.symbol, id);
                loaded.levels.remove(&id).map(|l| (l, kind))
            })
            .collect();
        if !taken.is_empty() {
            self.events.levels_armed(loaded.levels.len());
        }
        taken
    }

    fn put_back(&self, level: Level) {
        if let Some(loaded) = self.lock().as_mut() {
            loaded.index.insert(&level);
            loaded.levels.insert(level.id, level);
        }
    }

    /// Re-reads the armed levels when they changed through this store, long
    /// ago, or (`elsewhere`, HA only) on another replica. Reads happen with no lock held.
    async fn refresh(&self, elsewhere: bool) -> Result<(), ProcessError> {
        let (stale, fingerprint) = match self.lock().as_ref() {
            None => (true, None),
            Some(s) => (
                s.generation != self.store.levels_generation() || s.at.elapsed() > RELOAD_EVERY,
                s.fingerprint,
            ),
        };
        let stale = stale || (elsewhere && self.shared_store && Some(self.fingerprint().await?) != fingerprint);
        if stale {
            let loaded = self.load().await?;
            *self.lock() = Some(loaded);
        }
        Ok(())
    }

    async fn fingerprint(&self) -> Result<(i64, i64), ProcessError> {
        self.store
            .armed_levels_fingerprint()
            .await
            .map_err(|e| store_error(&self.events, e))
    }

    async fn load(&self) -> Result<Loaded, ProcessError> {
        let generation = self.store.levels_generation();
        let fingerprint = match self.shared_store {
            true => Some(self.fingerprint().await?),
            false => None,
        };
        let levels = self
            .store
            .levels(Some(LevelStatus::Armed))
            .await
            .map_err(|e| store_error(&self.events, e))?;
        Ok(Loaded {
            index: LevelIndex::build(&levels),
            levels: levels.into_iter().map(|l| (l.id, l)).collect(),
            generation,
            fingerprint,
            at: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
