//! `level_monitor`: take-profit / stop-loss execution.
//!
//! Each tick: first settle intents whose outcome is not recorded (a crash or
//! a lost answer), by looking the client order id up before any resend; then
//! evaluate fresh prices against the sorted index of armed levels. A crossed
//! level becomes an intent row (deterministic id `sm-<level>-<version>`)
//! *before* its reduce-only MARKET close is sent, so a stop-loss never
//! executes twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::level_index::LevelIndex;
use super::platform::{Platform, venue_error};
use crate::clock::now_ms;
use crate::exchange::orders::close_exactly_once;
use crate::exchange::{Caller, OrderSide, VenueError};
use crate::process::{Process, ProcessError, RunContext, RunReport};
use crate::store::{Intent, Level, LevelStatus};

/// Re-read levels and positions at least this often (positions change underneath).
const RELOAD_EVERY: Duration = Duration::from_secs(30);

struct Loaded {
    index: LevelIndex,
    levels: HashMap<i64, Level>,
    generation: u64,
    /// The store's fingerprint of armed levels, when other replicas may change them.
    fingerprint: Option<(i64, i64)>,
    at: Instant,
}

pub struct LevelMonitor {
    platform: Arc<Platform>,
    max_age: Duration,
    state: Mutex<Option<Loaded>>,
}

impl LevelMonitor {
    pub fn new(platform: Arc<Platform>, interval: Duration) -> Self {
        LevelMonitor {
            platform,
            max_age: interval / 2,
            state: Mutex::new(None),
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
        let direction = |account: &str, symbol: &str| {
            positions
                .iter()
                .find(|pos| pos.account == account && pos.symbol == symbol)
                .map(|pos| if pos.amount > Decimal::ZERO { 1 } else { -1 })
        };
        let index = LevelIndex::build(&levels, direction);
        Ok(Loaded {
            index,
            levels: levels.into_iter().map(|l| (l.id, l)).collect(),
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
        let settled = self.settle_pending(&ctx).await?;
        let mut state = self.state.lock().await;
        let stale = match &*state {
            None => true,
            Some(s) => {
                s.generation != self.platform.store.levels_generation()
                    || s.at.elapsed() > RELOAD_EVERY
                    || self
                        .changed_elsewhere(s.fingerprint)
                        .await
                        .map_err(|e| self.platform.store_error(e))?
            }
        };
        if stale {
            *state = Some(self.load().await.map_err(|e| self.platform.store_error(e))?);
        }
        let loaded = state.as_mut().expect("loaded above");
        self.platform.events.levels_armed(loaded.levels.len());
        if loaded.index.is_empty() {
            return Ok(RunReport {
                summary: Some(format!("no armed levels; {settled} settled")),
            });
        }
        let symbols = loaded.index.symbols();
        let prices = self
            .platform
            .venue
            .prices(&ctx.caller(Some(self.max_age)), &symbols)
            .await
            .map_err(venue_error)?;
        let mut fired = 0;
        for price in prices {
            for (id, kind, _) in loaded.index.crossed(&price.symbol, price.price) {
                loaded.index.remove(&price.symbol, id);
                let Some(level) = loaded.levels.remove(&id) else {
                    continue;
                };
                fired += 1;
                self.fire(&ctx, &level, kind, price.price, price.time_ms).await?;
            }
        }
        self.platform.events.levels_armed(loaded.levels.len());
        Ok(RunReport {
            summary: Some(format!("{fired} levels fired; {settled} settled")),
        })
    }

    /// Records the intent, then sends the close.
    async fn fire(
        &self,
        ctx: &RunContext,
        level: &Level,
        kind: &'static str,
        price: Decimal,
        observed_at: i64,
    ) -> Result<(), ProcessError> {
        let p = &self.platform;
        let positions = p
            .store
            .positions(Some(&level.account))
            .await
            .map_err(|e| self.platform.store_error(e))?;
        let Some(position) = positions
            .iter()
            .find(|pos| pos.symbol == level.symbol && !pos.amount.is_zero())
        else {
            tracing::warn!(level = level.id, symbol = %level.symbol, "level crossed but no open position to close");
            let intent = p
                .store
                .trigger_level(&ctx.fence, level, ("NONE", Decimal::ZERO), (kind, price, observed_at))
                .await
                .map_err(|e| self.platform.store_error(e))?;
            if let Some(intent) = intent {
                p.store
                    .fail_intent(
                        &ctx.fence,
                        &intent,
                        "no open position to close",
                        p.webhook_url.as_deref(),
                    )
                    .await
                    .map_err(|e| self.platform.store_error(e))?;
                self.count(kind, "failed");
            }
            return Ok(());
        };
        let side = if position.amount > Decimal::ZERO {
            OrderSide::Sell
        } else {
            OrderSide::Buy
        };
        let Some(intent) = p
            .store
            .trigger_level(
                &ctx.fence,
                level,
                (side.as_str(), position.amount.abs()),
                (kind, price, observed_at),
            )
            .await
            .map_err(|e| self.platform.store_error(e))?
        else {
            return Ok(()); // changed meanwhile (deleted, or fired elsewhere)
        };
        tracing::info!(level = level.id, kind, %price, client_order_id = %intent.client_order_id, "level crossed; closing");
        self.execute(ctx, &intent, false).await
    }

    /// Sends (or, for an intent of unknown fate, first looks up) the close and records the outcome.
    async fn execute(&self, ctx: &RunContext, intent: &Intent, look_up_first: bool) -> Result<(), ProcessError> {
        let p = &self.platform;
        let caller: Caller = ctx.caller(None);
        let side = OrderSide::parse(&intent.side).unwrap_or(OrderSide::Sell);
        let known = match look_up_first {
            true => p
                .venue
                .order_by_client_id(&caller, &intent.account, &intent.symbol, &intent.client_order_id)
                .await
                .transpose(),
            false => None,
        };
        let result = match known {
            Some(found) => found,
            None => {
                close_exactly_once(
                    &*p.venue,
                    &caller,
                    &intent.account,
                    &intent.symbol,
                    side,
                    intent.qty,
                    &intent.client_order_id,
                )
                .await
            }
        };
        let kind: &'static str = if intent.kind == "take_profit" {
            "take_profit"
        } else {
            "stop_loss"
        };
        match result {
            Ok(ack) => {
                p.store
                    .complete_intent(&ctx.fence, intent, &ack, p.webhook_url.as_deref())
                    .await
                    .map_err(|e| self.platform.store_error(e))?;
                let latency = (now_ms() - intent.observed_at).max(0) as f64 / 1000.0;
                p.events.trigger_latency(latency);
                self.count(kind, "executed");
                tracing::info!(client_order_id = %intent.client_order_id, order_id = ack.order_id, "close executed");
                Ok(())
            }
            Err(e @ (VenueError::Rejected { .. } | VenueError::Auth(_))) => {
                p.store
                    .fail_intent(&ctx.fence, intent, &e.to_string(), p.webhook_url.as_deref())
                    .await
                    .map_err(|e| self.platform.store_error(e))?;
                self.count(kind, "failed");
                Err(venue_error(e))
            }
            Err(e) => {
                // Fate unknown or not sent: the intent stays pending and is settled next tick.
                self.count(kind, "unknown");
                Err(venue_error(e))
            }
        }
    }

    /// Intents left pending by an earlier tick or a restart.
    async fn settle_pending(&self, ctx: &RunContext) -> Result<usize, ProcessError> {
        let pending = self
            .platform
            .store
            .pending_intents()
            .await
            .map_err(|e| self.platform.store_error(e))?;
        for intent in &pending {
            tracing::info!(client_order_id = %intent.client_order_id, "settling an order of unknown outcome");
            self.execute(ctx, intent, true).await?;
        }
        Ok(pending.len())
    }

    fn count(&self, kind: &'static str, outcome: &'static str) {
        self.platform.events.level_triggered(kind, outcome);
    }
}

impl Process for LevelMonitor {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
