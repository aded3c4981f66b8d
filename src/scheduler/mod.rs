//! The scheduler: fixed-rate ticks, single flight, coalescing, priorities,
//! pause / resume / trigger and graceful shutdown (DESIGN §3).
//!
//! One loop owns the timetable (a min-heap of next ticks); each run is its
//! own task, tracked so shutdown can wait for it. The loop never waits for a
//! run, so a slow process cannot delay another's tick.
//!
//! Owns: timetable, single flight, runs' life cycle and their records in
//! memory. Imports `process`, `budget` (a run's call count), `config` (a
//! process's settings), `telemetry` and `clock`; it depends on its own
//! [`Coordinator`] trait, never on `ha`, `store` or the processes.

mod adaptive;
mod continuous;
mod coordinator;
mod execute;
mod record;
mod state;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use adaptive::Adaptive;
pub use coordinator::{ClusterView, Coordinator, Granted, Holder};
pub use state::{ProcessHandle, Stats};

use crate::budget::ProcessCalls;
use crate::process::{ErrorKind, Trigger};
pub use crate::process::{RunLease, RunRecord};
use crate::telemetry::process::SkipReason;
use crate::telemetry::{Metrics, ProcessInfo};

/// How long a cancelled attempt gets to clean up (kill its child, ...) before it is dropped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

pub struct Scheduler {
    processes: Vec<Arc<ProcessHandle>>,
    index: HashMap<Arc<str>, usize>,
    metrics: Arc<Metrics>,
    budget: Arc<ProcessCalls>,
    enabled: bool,
    history_len: usize,
    tracker: TaskTracker,
    stop_ticking: CancellationToken,
    cancel_runs: CancellationToken,
    /// Where finished runs go besides memory (the store's run history).
    run_sink: std::sync::OnceLock<tokio::sync::mpsc::Sender<RunRecord>>,
    /// Under HA: claims each tick's lease before running it (set once, before `start`).
    ha: std::sync::OnceLock<Arc<dyn Coordinator>>,
    /// Stretches intervals while the API budget is tight (set once, before `start`).
    adaptive: std::sync::OnceLock<Adaptive>,
}

/// Why a manual trigger was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerError {
    UnknownProcess,
    AlreadyRunning,
    Disabled,
    Unavailable,
    SchedulerDisabled,
    ShuttingDown,
    /// Under HA: another replica holds the process's lease (its name).
    HeldElsewhere(String),
}

/// What happened to the runs in flight at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    pub in_flight: usize,
    /// Whether runs had to be cancelled because the grace period ran out.
    pub cancelled: bool,
}

impl Scheduler {
    /// `enabled = false` keeps the processes visible but ticks none of them.
    pub fn new(
        processes: Vec<ProcessHandle>,
        metrics: Arc<Metrics>,
        budget: Arc<ProcessCalls>,
        enabled: bool,
        history_len: usize,
    ) -> Arc<Self> {
        let processes: Vec<_> = processes.into_iter().map(Arc::new).collect();
        let index = processes.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
        for p in &processes {
            let c = &p.config;
            let info = ProcessInfo {
                enabled: c.enabled,
                interval_seconds: c.interval_seconds,
                timeout_seconds: c.timeout_seconds,
                priority: c.priority,
                retry_count: c.retry_count,
                max_api_calls_per_minute: c.max_api_calls_per_minute,
                error_kinds: &ErrorKind::NAMES,
            };
            let _ = p.series.set(metrics.init_process(&p.id, &info));
        }
        metrics.scheduler_enabled(enabled);
        Arc::new(Scheduler {
            processes,
            index,
            metrics,
            budget,
            enabled,
            history_len: history_len.max(1),
            tracker: TaskTracker::new(),
            stop_ticking: CancellationToken::new(),
            cancel_runs: CancellationToken::new(),
            run_sink: std::sync::OnceLock::new(),
            ha: std::sync::OnceLock::new(),
            adaptive: std::sync::OnceLock::new(),
        })
    }

    /// Sends every finished run to `sink` too (set once, before `start`). The
    /// queue is bounded: a record that does not fit is dropped and counted,
    /// never waited for.
    pub fn record_runs_to(&self, sink: tokio::sync::mpsc::Sender<RunRecord>) {
        let _ = self.run_sink.set(sink);
    }

    /// Runs a tick only where `ha` wins its lease, on the grid all replicas share.
    pub fn coordinate_with(&self, ha: Arc<dyn Coordinator>) {
        let _ = self.ha.set(ha);
    }

    /// Stretches the intervals of less urgent processes while the budget is tight.
    pub fn adapt_to(&self, adaptive: Adaptive) {
        let _ = self.adaptive.set(adaptive);
    }

    /// The interval `p` is on right now: its own, stretched while the budget is tight.
    fn effective_interval(&self, p: &ProcessHandle) -> Duration {
        let factor = match self.adaptive.get() {
            Some(a) if self.ha.get().is_none() => a.factor(&p.config.kind, p.config.priority),
            _ => 1.0,
        };
        let interval = p.interval.mul_f64(factor);
        p.series().effective_interval(interval.as_secs_f64());
        interval
    }

    pub fn coordinator(&self) -> Option<&Arc<dyn Coordinator>> {
        self.ha.get()
    }

    pub fn processes(&self) -> &[Arc<ProcessHandle>] {
        &self.processes
    }

    pub fn process(&self, id: &str) -> Option<&Arc<ProcessHandle>> {
        self.index.get(id).map(|&i| &self.processes[i])
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn budget(&self) -> &Arc<ProcessCalls> {
        &self.budget
    }

    /// Starts ticking, and every continuous process (when enabled). Returns at once.
    pub fn start(self: &Arc<Self>) {
        if self.enabled {
            tokio::spawn(self.clone().tick_loop());
            for p in self
                .processes
                .iter()
                .filter(|p| p.schedulable() && p.config.continuous())
            {
                self.tracker.spawn(self.clone().supervise(p.clone()));
            }
        }
    }

    async fn tick_loop(self: Arc<Self>) {
        let start = Instant::now();
        // (next tick, priority, index): the earliest tick first; at the same instant, priority 1 first.
        let mut timetable: BinaryHeap<Reverse<(Instant, u8, usize)>> = self
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.schedulable() && !p.config.continuous())
            .map(|(i, p)| {
                let offset = Duration::from_secs_f64(p.config.start_offset_seconds);
                let first = match self.ha.get() {
                    Some(ha) => start + ha.until_next_tick(p.interval, offset, Duration::ZERO),
                    None => start + offset,
                };
                self.note_next_run(p, first);
                Reverse((first, p.config.priority, i))
            })
            .collect();
        loop {
            let Some(&Reverse((due, _, _))) = timetable.peek() else {
                return self.stop_ticking.cancelled().await;
            };
            tokio::select! {
                biased;
                _ = self.stop_ticking.cancelled() => return,
                _ = sleep_until(due) => {}
            }
            let now = Instant::now();
            let mut due_now = Vec::new();
            while let Some(&Reverse((due, priority, i))) = timetable.peek() {
                if due > now {
                    break;
                }
                timetable.pop();
                due_now.push((priority, due, i));
            }
            due_now.sort_unstable();
            for (priority, due, i) in due_now {
                let next = self.tick(i, due, now);
                timetable.push(Reverse((next, priority, i)));
            }
        }
    }

    /// Handles one due tick of process `i`; returns its next tick.
    fn tick(self: &Arc<Self>, i: usize, due: Instant, now: Instant) -> Instant {
        let p = &self.processes[i];
        if let Some(ha) = self.ha.get() {
            return self.tick_shared(ha, i, due, now);
        }
        let missed = (now.duration_since(due).as_nanos() / p.interval.as_nanos().max(1)) as u32;
        let scheduled = due + p.interval * missed;
        let next = scheduled + self.effective_interval(p);
        self.note_next_run(p, next);
        if missed > 0 {
            self.skipped(p, SkipReason::missed, missed as u64);
        }
        self.run_unless_paused_or_running(p, scheduled, next);
        next
    }

    /// A due tick starts a run, unless the process is paused or still running (single flight).
    fn run_unless_paused_or_running(self: &Arc<Self>, p: &Arc<ProcessHandle>, scheduled: Instant, next: Instant) {
        if p.is_paused() {
            self.skipped(p, SkipReason::paused, 1);
        } else if !p.try_begin() {
            self.skipped(p, SkipReason::overlap, 1);
        } else {
            self.launch(p.clone(), Trigger::Schedule, scheduled, next);
        }
    }

    /// A tick on the grid all replicas share: the next one is computed from
    /// the database's clock each time, so replicas stay aligned; whether
    /// this replica runs it is decided by the claim at the start of the run.
    fn tick_shared(self: &Arc<Self>, ha: &Arc<dyn Coordinator>, i: usize, due: Instant, now: Instant) -> Instant {
        let p = &self.processes[i];
        let offset = Duration::from_secs_f64(p.config.start_offset_seconds);
        let next = now + ha.until_next_tick(p.interval, offset, p.interval / 4);
        self.note_next_run(p, next);
        self.run_unless_paused_or_running(p, due, next);
        next
    }

    fn skipped(&self, p: &ProcessHandle, reason: SkipReason, count: u64) {
        self.metrics.process.skipped(&p.id, reason, count);
        p.stats().skipped_count += count;
        tracing::debug!(process = %p.id, ?reason, count, "tick skipped");
    }

    fn note_next_run(&self, p: &ProcessHandle, next: Instant) {
        let wall = SystemTime::now() + next.saturating_duration_since(Instant::now());
        p.stats().next_run = Some(wall);
    }

    fn launch(self: &Arc<Self>, p: Arc<ProcessHandle>, trigger: Trigger, scheduled: Instant, next_tick: Instant) {
        let me = self.clone();
        self.tracker
            .spawn(async move { me.execute(p, trigger, scheduled, next_tick).await });
    }

    /// Runs a process now, outside its schedule. Refused while it is running.
    pub fn trigger(self: &Arc<Self>, id: &str) -> Result<(), TriggerError> {
        let p = self.process(id).ok_or(TriggerError::UnknownProcess)?;
        if self.stop_ticking.is_cancelled() {
            return Err(TriggerError::ShuttingDown);
        }
        if !self.enabled {
            return Err(TriggerError::SchedulerDisabled);
        }
        if p.process.is_none() {
            return Err(TriggerError::Unavailable);
        }
        if !p.config.enabled {
            return Err(TriggerError::Disabled);
        }
        if let Some(ha) = self.ha.get()
            && !ha.holds(id)
            && let Some(holder) = ha.holder(id).filter(|h| !h.expired && *h.replica != *ha.replica())
        {
            return Err(TriggerError::HeldElsewhere(holder.replica));
        }
        if p.config.continuous() {
            // A trigger reconnects: the run in progress stops and starts again at once.
            p.restart_requested.store(true, std::sync::atomic::Ordering::Release);
            if !p.interrupt() {
                p.wake.notify_one();
            }
            return Ok(());
        }
        if !p.try_begin() {
            return Err(TriggerError::AlreadyRunning);
        }
        let now = Instant::now();
        self.launch(p.clone(), Trigger::Manual, now, now + p.interval);
        Ok(())
    }

    /// Pauses scheduled ticks (a run in flight finishes). Returns whether anything changed.
    pub fn pause(&self, id: &str) -> Option<bool> {
        self.set_paused(id, true)
    }

    /// Resumes scheduled ticks at the next point of the process's grid.
    pub fn resume(&self, id: &str) -> Option<bool> {
        self.set_paused(id, false)
    }

    fn set_paused(&self, id: &str, paused: bool) -> Option<bool> {
        let p = self.process(id)?;
        let changed = p.set_paused(paused);
        if p.config.continuous() {
            match paused {
                true => {
                    p.interrupt();
                }
                false => p.wake.notify_one(),
            }
        }
        if paused && let Some(ha) = self.ha.get() {
            // Paused here: let another replica run it.
            let (ha, id) = (ha.clone(), p.id.clone());
            tokio::spawn(async move { ha.release(&id).await });
        }
        self.metrics.process.paused(id, paused);
        if changed {
            tracing::info!(process = %id, paused, "process {}", if paused { "paused" } else { "resumed" });
        }
        Some(changed)
    }

    /// Stops ticking, lets runs in flight finish within `grace`, then cancels the rest.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.stop_ticking.cancel();
        self.tracker.close();
        // Continuous runs never end by themselves: stop them now.
        for p in self.processes.iter().filter(|p| p.config.continuous()) {
            p.interrupt();
        }
        if let Some(ha) = self.ha.get() {
            // Idle processes go to the other replicas now, not after the runs in flight here.
            for p in self.processes.iter().filter(|p| !p.is_running()) {
                ha.release(&p.id).await;
            }
        }
        let in_flight = self.tracker.len();
        let mut cancelled = false;
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            cancelled = true;
            tracing::warn!(
                in_flight = self.tracker.len(),
                "grace period over; cancelling runs in flight"
            );
            self.cancel_runs.cancel();
            let _ = tokio::time::timeout(CANCEL_GRACE + Duration::from_secs(1), self.tracker.wait()).await;
        }
        ShutdownReport { in_flight, cancelled }
    }
}
