//! `backstop_sync`: a conditional order on the venue for every armed
//! stop-loss (and take-profit with `levels.backstop = "both"`), so a
//! position stays protected while the service is not: every replica down,
//! the store unreachable, the network cut, a deploy gone wrong.
//!
//! A reconciler on a short tick (1 s): what the armed levels want (`plan`)
//! against the latest row of each backstop; missing ones are placed,
//! unwanted ones cancelled, placements whose answer was lost looked up,
//! fired ones recorded on their level (`record`). Every
//! `levels.backstop_reconcile_seconds`, at start and after a user-stream
//! reconnect, the venue's open conditional orders are compared with the rows
//! (`venue::reconcile`). `ALGO_UPDATE` events settle rows as they happen.
//!
//! Our close fires first (the venue's trigger is `backstop_offset` further),
//! and the backstop is cancelled right after our first order is
//! acknowledged; in the race where both execute, reduce-only and
//! close-position make the second harmless, and the level records whichever
//! took the position flat (`closed_by`).

pub mod flatten;
pub mod plan;
pub mod record;
mod venue;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use tokio::time::Instant;

use super::platform::Platform;
use crate::clock::now_ms;
use crate::config::BackstopMode;
use crate::domain::AlgoOrder;
use crate::process::{Process, ProcessError, RunContext, RunReport};
use crate::store::{Backstop, BackstopState, Level, LevelStatus};

/// Placements one pass sends at most (the rest go on the next).
const PLACEMENTS_PER_PASS: usize = 20;
/// A placement still unanswered after this is looked up.
const LOOK_UP_AFTER_MS: i64 = 5_000;
/// A fired backstop whose fills cannot be found is recorded anyway after this.
const RECORD_WITHOUT_FILLS_AFTER_MS: i64 = 30_000;

/// `[levels]` settings of backstops.
#[derive(Debug, Clone)]
pub struct BackstopSettings {
    pub mode: BackstopMode,
    pub offset: Decimal,
    pub reconcile: Duration,
    /// Set by the user stream after a reconnect: compare with the venue on the next pass.
    pub resync: Arc<AtomicBool>,
}

impl BackstopSettings {
    pub fn off() -> Self {
        BackstopSettings {
            mode: BackstopMode::Off,
            offset: Decimal::new(5, 3),
            reconcile: Duration::from_secs(60),
            resync: Arc::default(),
        }
    }
}

pub struct BackstopSync {
    platform: Arc<Platform>,
    /// When each account's open conditional orders were last read.
    reconciled: std::sync::Mutex<HashMap<String, Instant>>,
}

impl BackstopSync {
    pub fn new(platform: Arc<Platform>) -> Self {
        BackstopSync {
            platform,
            reconciled: std::sync::Mutex::default(),
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let settings = &p.backstops;
        let levels = p
            .store
            .levels(Some(LevelStatus::Armed))
            .await
            .map_err(|e| p.store_error(e))?;
        let latest = p.store.latest_backstops().await.map_err(|e| p.store_error(e))?;
        if settings.mode == BackstopMode::Off && !latest.iter().any(|b| b.state.on_venue()) {
            return Ok(RunReport {
                summary: Some("backstops are off (levels.backstop)".into()),
            });
        }
        let wants = plan::wants(settings.mode, settings.offset, &levels, &p.catalog);
        let plan = plan::plan(&wants, &latest, now_ms());
        p.events.protection().backstop_states(&plan.states);
        let mut placed = 0;
        for (want, generation, failures) in plan.place.iter().take(PLACEMENTS_PER_PASS) {
            let refused = venue::place(p, &ctx, want, *generation, *failures).await?;
            placed += 1;
            if refused == Some(-2021) {
                self.fire_now(&ctx, &levels, want).await;
            }
        }
        for b in &plan.cancel {
            venue::cancel(p, &ctx, b).await?;
        }
        let now = now_ms();
        for b in latest
            .iter()
            .filter(|b| b.state == BackstopState::Placing && now - b.updated_at > LOOK_UP_AFTER_MS)
        {
            venue::settle(p, &ctx, b).await?;
        }
        let recorded = self.record_fired(&ctx, &latest).await?;
        let retired = self.positions_gone(&ctx, &levels, &latest).await?;
        let due = self.reconcile_due();
        let orphans = match due.is_empty() {
            false => {
                let active = p.store.active_backstops().await.map_err(|e| p.store_error(e))?;
                let orphans = venue::reconcile(p, &ctx, &due, &active).await?;
                let mut reconciled = self.reconciled.lock().unwrap_or_else(|e| e.into_inner());
                for account in due {
                    reconciled.insert(account, Instant::now());
                }
                orphans
            }
            true => 0,
        };
        Ok(RunReport {
            summary: Some(format!(
                "{} backstops wanted; {placed} placed, {} cancelled, {recorded} closes by the venue recorded, \
                 {retired} levels retired, {orphans} orphans cancelled",
                wants.len(),
                plan.cancel.len()
            )),
        })
    }

    /// The accounts whose open conditional orders are read this pass: all at
    /// start and after a user-stream reconnect; otherwise each every
    /// `backstop_reconcile_seconds`, stretched to the streams' reconcile
    /// interval while its user stream is healthy (its `ALGO_UPDATE`s keep
    /// the rows current; the read is the safety net, as for fills).
    fn reconcile_due(&self) -> Vec<String> {
        let p = &self.platform;
        let asked = p.backstops.resync.swap(false, Ordering::Relaxed);
        let reconciled = self.reconciled.lock().unwrap_or_else(|e| e.into_inner());
        p.accounts
            .iter()
            .filter(|account| {
                let every = match (&p.streaming, p.stream_health.healthy(account)) {
                    (Some(s), true) => p.backstops.reconcile.max(s.reconcile),
                    _ => p.backstops.reconcile,
                };
                asked || reconciled.get(*account).is_none_or(|at| at.elapsed() >= every)
            })
            .cloned()
            .collect()
    }

    /// The venue refused a backstop as already through (-2021): the price
    /// has passed the level too, so our own close fires now.
    async fn fire_now(&self, ctx: &RunContext, levels: &[Level], want: &plan::Want) {
        let p = &self.platform;
        let Some(level) = levels.iter().find(|l| l.id == want.level_id) else {
            return;
        };
        tracing::warn!(
            level = level.id,
            kind = want.kind,
            "the venue says the price is already through the backstop; closing now"
        );
        if let Err(e) = p.levels.fire_now(&ctx.fence, level, want.kind).await {
            tracing::error!(level = level.id, error = %e, "cannot fire the level whose backstop would trigger at once");
        }
    }

    /// Fired backstops: the level is recorded as executed by the venue, with
    /// what its order filled.
    async fn record_fired(&self, ctx: &RunContext, latest: &[Backstop]) -> Result<usize, ProcessError> {
        let p = &self.platform;
        let caller = ctx.caller(None);
        let mut recorded = 0;
        for b in latest.iter().filter(|b| b.state == BackstopState::Triggered) {
            let fill = record::filled(&p.store, &*p.venue, &caller, &ctx.fence, b)
                .await
                .map_err(|e| p.store_error(e))?;
            let fill = match fill {
                Some(fill) => fill,
                None if now_ms() - b.updated_at > RECORD_WITHOUT_FILLS_AFTER_MS => (Decimal::ZERO, None),
                None => continue,
            };
            let done = p
                .store
                .record_venue_close(&ctx.fence, b, fill, p.webhook_url.as_deref())
                .await
                .map_err(|e| p.store_error(e))?;
            if done {
                recorded += 1;
                p.events.level_triggered(kind_label(&b.kind), "executed");
                tracing::warn!(level = b.level_id, client_algo_id = %b.client_algo_id, qty = %fill.0, "the venue's backstop closed the position; level executed by the venue");
            }
        }
        Ok(recorded)
    }

    /// Armed levels whose position went flat or the other way while their
    /// backstop rests on the venue (the store leaves those to us): the
    /// backstop is cancelled, or found fired (recorded next pass), and a
    /// level whose backstop did not fire is retired.
    async fn positions_gone(
        &self,
        ctx: &RunContext,
        levels: &[Level],
        latest: &[Backstop],
    ) -> Result<usize, ProcessError> {
        let p = &self.platform;
        let rows = p.store.position_facts().await.map_err(|e| p.store_error(e))?;
        let facts: HashMap<(&str, &str), (Decimal, i64)> = rows
            .iter()
            .map(|(a, s, amount, time)| ((a.as_str(), s.as_str()), (*amount, *time)))
            .collect();
        let mut retired = 0;
        for l in levels {
            let (Some(side), Some(&(amount, time))) = (l.side, facts.get(&(l.account.as_str(), l.symbol.as_str())))
            else {
                continue; // no position ever seen: a level armed ahead of its position
            };
            if !side.held(amount).is_zero() || time < l.created_at {
                continue;
            }
            let resting: Vec<&Backstop> = latest
                .iter()
                .filter(|b| b.level_id == l.id && b.state.on_venue())
                .collect();
            if resting.is_empty() {
                continue;
            }
            for b in resting {
                venue::cancel(p, ctx, b).await?;
            }
            let fired = p
                .store
                .backstops_of_level(l.id)
                .await
                .map_err(|e| p.store_error(e))?
                .iter()
                .any(|b| matches!(b.state, BackstopState::Triggered | BackstopState::Recorded));
            if !fired {
                let gone = p
                    .store
                    .retire_levels(&ctx.fence, &l.account, &l.symbol, amount)
                    .await
                    .map_err(|e| p.store_error(e))?;
                let reason = if amount.is_zero() {
                    "position_closed"
                } else {
                    "position_flipped"
                };
                p.events.protection().levels_retired(reason, gone.len());
                retired += gone.len();
            }
        }
        Ok(retired)
    }
}

/// An `ALGO_UPDATE` from the user stream: the row of one of our backstops
/// is settled at once (placed, fired, or gone and to be placed again).
pub async fn on_update(p: &Platform, ctx: &RunContext, order: &AlgoOrder) -> Result<(), ProcessError> {
    if !order.client_algo_id.starts_with(&venue::ours(p)) {
        return Ok(()); // another client's: never ours to touch
    }
    let row = p
        .store
        .backstop(&order.client_algo_id)
        .await
        .map_err(|e| p.store_error(e))?;
    match row {
        Some(b) => venue::settle_with(p, ctx, &b, Some(order)).await,
        None => Ok(()), // an orphan: the next reconciliation cancels it
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "take_profit" => "take_profit",
        _ => "stop_loss",
    }
}

impl Process for BackstopSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
