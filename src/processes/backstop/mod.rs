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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use tokio::time::Instant;

use super::platform::{Platform, venue_error};
use crate::clock::now_ms;
use crate::config::BackstopMode;
use crate::domain::{AlgoOrder, AlgoStatus, PositionSide};
use crate::process::{Process, ProcessError, RunContext, RunReport};
use crate::store::{Backstop, BackstopState, BackstopUpdate, Level, LevelStatus};

/// Placements one pass sends at most (the rest go on the next).
const PLACEMENTS_PER_PASS: usize = 20;
/// A placement still unanswered after this is looked up.
const LOOK_UP_AFTER_MS: i64 = 5_000;
/// A fired backstop whose fills do not show is asked about after this.
const NO_FILLS_AFTER_MS: i64 = 30_000;

/// `[levels]` settings of backstops.
#[derive(Debug, Clone)]
pub struct BackstopSettings {
    pub mode: BackstopMode,
    pub offset: Decimal,
    pub reconcile: Duration,
    /// Accounts whose user stream reconnected: compared with the venue on the next pass.
    pub resync: Arc<std::sync::Mutex<HashSet<String>>>,
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
    /// When the start's sweep last read an account without rows of ours.
    swept: std::sync::Mutex<Option<Instant>>,
}

/// The start's sweep of accounts without rows reads one account this often
/// (40 weight each: a quarter of a 2 400 budget at most).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(4);

impl BackstopSync {
    pub fn new(platform: Arc<Platform>) -> Self {
        BackstopSync {
            platform,
            reconciled: std::sync::Mutex::default(),
            swept: std::sync::Mutex::default(),
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let settings = &p.backstops;
        let store_error = |e| p.store_error(e);
        let levels = p.store.levels(Some(LevelStatus::Armed)).await.map_err(store_error)?;
        let latest = p.store.latest_backstops().await.map_err(store_error)?;
        if settings.mode == BackstopMode::Off && !latest.iter().any(|b| b.state.on_venue()) {
            return Ok(RunReport {
                summary: Some("backstops are off (levels.backstop)".into()),
            });
        }
        if levels.iter().any(|l| p.catalog.lists(&l.symbol).is_none()) {
            // Without the symbols' ticks every trigger price would be refused
            // (-4014), and without a plan nothing may be cancelled either.
            return Ok(RunReport {
                summary: Some("waiting for the venue's symbol filters (exchangeInfo) before placing backstops".into()),
            });
        }
        let closing: HashSet<i64> = p
            .store
            .levels(Some(LevelStatus::Triggered))
            .await
            .map_err(store_error)?
            .iter()
            .map(|l| l.id)
            .collect();
        let wants = plan::wants(settings.mode, settings.offset, &levels, &p.catalog);
        let plan = plan::plan(&wants, &latest, &closing, now_ms());
        p.events.protection().backstop_states(&plan.states);
        // Each step on its own: one row's or one account's failure never stops the others.
        let mut failures = Failures::default();
        let mut placed = 0;
        for (want, generation, fails) in plan.place.iter().take(PLACEMENTS_PER_PASS) {
            match venue::place(p, &ctx, want, *generation, *fails).await {
                Ok(refused) => {
                    placed += 1;
                    if refused == Some(-2021) {
                        self.fire_now(&ctx, &levels, want).await;
                    }
                }
                Err(e) => failures.note(&format!("placing {}'s backstop", want.level_id), e),
            }
        }
        for b in &plan.cancel {
            if let Err(e) = venue::cancel(p, &ctx, b).await {
                failures.note(&format!("cancelling {}", b.client_algo_id), e);
            }
        }
        let now = now_ms();
        let unanswered = latest
            .iter()
            .filter(|b| b.state == BackstopState::Placing && now - b.updated_at > LOOK_UP_AFTER_MS && b.next_at <= now);
        for b in unanswered {
            if let Err(e) = venue::settle(p, &ctx, b).await {
                failures.note(&format!("looking {} up", b.client_algo_id), e);
            }
        }
        let recorded = self.record_fired(&ctx, &latest, &mut failures).await;
        let retired = self.positions_gone(&ctx, &levels, &latest, &mut failures).await?;
        let orphans = self.reconcile(&ctx, &wants, &latest, &mut failures).await?;
        let summary = format!(
            "{} backstops wanted; {placed} placed, {} cancelled, {recorded} closes by the venue recorded, \
             {retired} levels retired, {orphans} orphans cancelled",
            wants.len(),
            plan.cancel.len()
        );
        failures.finish(summary)
    }

    /// Reads the open conditional orders of the accounts that are due, each
    /// on its own; an account whose read fails waits its interval like the others.
    async fn reconcile(
        &self,
        ctx: &RunContext,
        wants: &[plan::Want],
        latest: &[Backstop],
        failures: &mut Failures,
    ) -> Result<usize, ProcessError> {
        let p = &self.platform;
        let ours: HashSet<&str> = wants
            .iter()
            .map(|w| w.account.as_str())
            .chain(
                latest
                    .iter()
                    .filter(|b| !matches!(b.state, BackstopState::Cancelled | BackstopState::Recorded))
                    .map(|b| b.account.as_str()),
            )
            .collect();
        let due = self.reconcile_due(&ours);
        if due.is_empty() {
            return Ok(0);
        }
        let active = p.store.active_backstops().await.map_err(|e| p.store_error(e))?;
        let want_keys: HashSet<(i64, &str)> = wants.iter().map(|w| (w.level_id, w.kind)).collect();
        let wanted: HashSet<String> = latest
            .iter()
            .filter(|b| want_keys.contains(&(b.level_id, b.kind.as_str())))
            .map(|b| b.client_algo_id.clone())
            .collect();
        let rows: Vec<Backstop> = active
            .into_iter()
            .chain(latest.iter().filter(|b| b.state == BackstopState::Failed).cloned())
            .collect();
        let mut orphans = 0;
        for account in due {
            match venue::reconcile(p, ctx, &account, &rows, &wanted).await {
                Ok(n) => orphans += n,
                Err(e) => failures.note(&format!("reconciling `{account}`"), e),
            }
            let mut reconciled = self.reconciled.lock().unwrap_or_else(|e| e.into_inner());
            reconciled.insert(account, Instant::now());
        }
        Ok(orphans)
    }

    /// The accounts whose open conditional orders are read this pass: of
    /// those with a backstop wanted or a row of ours (`ours`), all at start
    /// and after a user-stream reconnect; otherwise each every
    /// `backstop_reconcile_seconds`, stretched to the streams' reconcile
    /// interval while its user stream is healthy (its `ALGO_UPDATE`s keep
    /// the rows current; the read is the safety net, as for fills).
    ///
    /// An account with neither is read once after start, one every
    /// `SWEEP_EVERY` (orders of ours whose rows were lost, e.g. a store
    /// restored from an older backup), then no more: a row is written
    /// before every placement, so the venue holds no conditional order of
    /// ours without one. Reading every account each pass would cost 40
    /// weight each, which a platform of a thousand accounts cannot pay.
    fn reconcile_due(&self, ours: &HashSet<&str>) -> Vec<String> {
        let p = &self.platform;
        let asked = std::mem::take(&mut *p.backstops.resync.lock().unwrap_or_else(|e| e.into_inner()));
        let reconciled = self.reconciled.lock().unwrap_or_else(|e| e.into_inner());
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        let mut sweep_slot = swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
        let mut due = Vec::new();
        for account in p.accounts.names() {
            let wanted = if ours.contains(account.as_str()) {
                let every = match (&p.streaming, p.stream_health.healthy(&account)) {
                    (Some(s), true) => p.backstops.reconcile.max(s.reconcile),
                    _ => p.backstops.reconcile,
                };
                asked.contains(&account) || reconciled.get(&account).is_none_or(|at| at.elapsed() >= every)
            } else if sweep_slot && !reconciled.contains_key(&account) {
                sweep_slot = false;
                *swept = Some(Instant::now());
                true
            } else {
                false
            };
            if wanted {
                due.push(account);
            }
        }
        due
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
    /// what its order filled. One whose order cannot be told, or whose fills
    /// do not show while the position is still open on the level's side, is
    /// looked up again: a backstop that did not close the position is settled
    /// as failed (placed again while its level is armed), never recorded.
    async fn record_fired(&self, ctx: &RunContext, latest: &[Backstop], failures: &mut Failures) -> usize {
        let p = &self.platform;
        let caller = ctx.caller(None);
        let mut recorded = 0;
        for b in latest.iter().filter(|b| b.state == BackstopState::Triggered) {
            let fill = match record::filled(&p.store, &*p.venue, &caller, &ctx.fence, b).await {
                Ok(Some(fill)) => fill,
                Ok(None) if b.order_id.is_none() || now_ms() - b.updated_at > NO_FILLS_AFTER_MS => {
                    if let Err(e) = self.confirm_fired(ctx, b).await {
                        failures.note(&format!("confirming {}", b.client_algo_id), e);
                    }
                    continue;
                }
                Ok(None) => continue,
                Err(e) => {
                    failures.note(&format!("fills of {}", b.client_algo_id), venue_or_store(p, e));
                    continue;
                }
            };
            match p
                .store
                .record_venue_close(&ctx.fence, b, fill, p.webhook_url.as_deref())
                .await
            {
                Ok(true) => {
                    recorded += 1;
                    p.events.level_triggered(kind_label(&b.kind), "executed");
                    tracing::warn!(level = b.level_id, client_algo_id = %b.client_algo_id, qty = %fill.0, "the venue's backstop closed the position; level executed by the venue");
                }
                Ok(false) => {}
                Err(e) => failures.note(&format!("recording {}", b.client_algo_id), p.store_error(e)),
            }
        }
        recorded
    }

    /// A fired backstop whose fills cannot be found: the venue's word on the
    /// order (its MARKET order's id, or that it ended without one), then the
    /// position. Flat on the level's side: recorded without fills; still
    /// open: the backstop did not close it and is settled as failed.
    async fn confirm_fired(&self, ctx: &RunContext, b: &Backstop) -> Result<(), ProcessError> {
        let p = &self.platform;
        let caller = ctx.caller(None);
        let found = p
            .venue
            .algo_order_by_client_id(&caller, &b.account, &b.symbol, &b.client_algo_id)
            .await
            .map_err(venue_error)?;
        let ended_unfired = found.as_ref().is_some_and(|o| {
            matches!(
                o.status,
                AlgoStatus::Canceled | AlgoStatus::Expired | AlgoStatus::Rejected
            )
        });
        if ended_unfired
            || found
                .as_ref()
                .is_some_and(|o| o.order_id.is_some() && b.order_id.is_none())
        {
            return venue::settle_with(p, ctx, b, found.as_ref()).await;
        }
        if now_ms() - b.updated_at <= NO_FILLS_AFTER_MS {
            return Ok(());
        }
        let amount = p
            .venue
            .position(&caller, &b.account, &b.symbol)
            .await
            .map_err(venue_error)?
            .map(|x| x.amount)
            .unwrap_or_default();
        let held = match b.side.as_str() {
            "SELL" => PositionSide::Long.held(amount),
            _ => PositionSide::Short.held(amount),
        };
        if held.is_zero() {
            let done = p
                .store
                .record_venue_close(&ctx.fence, b, (Decimal::ZERO, None), p.webhook_url.as_deref())
                .await
                .map_err(|e| p.store_error(e))?;
            if done {
                p.events.level_triggered(kind_label(&b.kind), "executed");
                tracing::warn!(level = b.level_id, client_algo_id = %b.client_algo_id, "the venue's backstop closed the position; its fills were not found");
            }
            return Ok(());
        }
        let why = BackstopUpdate {
            error: Some(format!("fired, but {held} is still open on the level's side")),
            ..BackstopUpdate::default()
        };
        p.store
            .update_backstop(&ctx.fence, &b.client_algo_id, BackstopState::Failed, &why)
            .await
            .map_err(|e| p.store_error(e))?;
        Ok(())
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
        failures: &mut Failures,
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
            let mut cancelled = true;
            for b in latest.iter().filter(|b| b.level_id == l.id && b.state.on_venue()) {
                if let Err(e) = venue::cancel(p, ctx, b).await {
                    failures.note(&format!("cancelling {}", b.client_algo_id), e);
                    cancelled = false;
                }
            }
            let rows = p.store.backstops_of_level(l.id).await.map_err(|e| p.store_error(e))?;
            let fired = rows
                .iter()
                .any(|b| matches!(b.state, BackstopState::Triggered | BackstopState::Recorded));
            let resting = rows.iter().any(|b| b.state.on_venue());
            if cancelled && !fired && !resting {
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

/// A pass's failures, each logged and counted where it happened; the pass
/// goes on and reports them at the end.
#[derive(Default)]
struct Failures(Vec<ProcessError>);

impl Failures {
    fn note(&mut self, what: &str, e: ProcessError) {
        tracing::warn!(error = %e.message, "backstops: {what} failed; the rest goes on");
        self.0
            .push(ProcessError::new(e.kind, format!("{what}: {}", e.message), e.retriable));
    }

    fn finish(self, summary: String) -> Result<RunReport, ProcessError> {
        match self.0.into_iter().next() {
            None => Ok(RunReport { summary: Some(summary) }),
            Some(first) => Err(ProcessError::new(
                first.kind,
                format!("{summary}; first failure: {}", first.message),
                first.retriable,
            )),
        }
    }
}

/// An error of `record` (venue or store), as a run error of its kind.
fn venue_or_store(p: &Platform, e: anyhow::Error) -> ProcessError {
    match e.downcast::<crate::exchange::VenueError>() {
        Ok(v) => venue_error(v),
        Err(e) => p.store_error(e),
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
