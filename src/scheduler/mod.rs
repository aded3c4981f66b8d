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
mod links;
mod live;
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
pub use live::{Build, ReloadReport};
pub use state::{ProcessHandle, Stats};

use crate::budget::ProcessCalls;
use crate::process::{ErrorKind, Trigger};
pub use crate::process::{RunLease, RunRecord};
use crate::telemetry::process::SkipReason;
use crate::telemetry::{Metrics, ProcessInfo};

/// How long a cancelled attempt gets to clean up (kill its child, ...) before it is dropped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

pub struct Scheduler {
    /// The processes and the links between them; replaced whole by a reload.
    table: std::sync::RwLock<Arc<Table>>,
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
    /// Processes a reload added, for the tick loop to take in.
    added: tokio::sync::mpsc::UnboundedSender<Arc<ProcessHandle>>,
    added_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Arc<ProcessHandle>>>>,
    /// Held while an exclusive process checks its peers and claims its single flight.
    exclusion: std::sync::Mutex<()>,
    /// Wakes ticks waiting for an exclusive peer whenever a run ends.
    run_ended: tokio::sync::Notify,
}

/// The processes by id, and who follows and excludes whom.
#[derive(Default)]
pub(crate) struct Table {
    pub processes: Arc<Vec<Arc<ProcessHandle>>>,
    index: HashMap<Arc<str>, usize>,
    /// Process → the chained processes that run after it.
    followers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>>,
    /// Process → the processes it never runs beside (symmetric).
    peers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>>,
    /// Process → every process linked to it, directly or not (itself included);
    /// only for processes that have links.
    groups: HashMap<Arc<str>, Arc<[Arc<ProcessHandle>]>>,
}

impl Table {
    fn new(processes: Vec<Arc<ProcessHandle>>) -> Table {
        let index: HashMap<Arc<str>, usize> = processes.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
        let get = |id: &str| index.get(id).map(|&i| processes[i].clone());
        let mut followers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>> = HashMap::new();
        let mut peers: HashMap<Arc<str>, Vec<Arc<ProcessHandle>>> = HashMap::new();
        for p in &processes {
            let config = p.config();
            for leader in config.after.iter().filter_map(|id| get(id)) {
                followers.entry(leader.id.clone()).or_default().push(p.clone());
            }
            for peer in config.exclusive_with.iter().filter_map(|id| get(id)) {
                for (a, b) in [(p, &peer), (&peer, p)] {
                    let list = peers.entry(a.id.clone()).or_default();
                    if !list.iter().any(|q| q.id == b.id) {
                        list.push(b.clone());
                    }
                }
            }
        }
        let configs = processes
            .iter()
            .map(|p| (p.id.to_string(), (*p.config()).clone()))
            .collect();
        let mut members: HashMap<String, Vec<Arc<ProcessHandle>>> = HashMap::new();
        for (id, group) in crate::config::link_groups(&configs) {
            members.entry(group).or_default().extend(get(&id));
        }
        let groups = members
            .into_values()
            .filter(|m| m.len() > 1)
            .flat_map(|m| {
                let m: Arc<[Arc<ProcessHandle>]> = m.into();
                m.iter().map(|p| (p.id.clone(), m.clone())).collect::<Vec<_>>()
            })
            .collect();
        Table {
            processes: Arc::new(processes),
            index,
            followers,
            peers,
            groups,
        }
    }

    fn get(&self, id: &str) -> Option<&Arc<ProcessHandle>> {
        self.index.get(id).map(|&i| &self.processes[i])
    }
}

/// What the metrics show of a process's settings.
fn process_info(c: &crate::config::ProcessConfig) -> ProcessInfo {
    ProcessInfo {
        enabled: c.enabled,
        interval_seconds: c.interval_seconds,
        timeout_seconds: c.timeout_seconds,
        priority: c.priority,
        retry_count: c.retry_count,
        max_api_calls_per_minute: c.max_api_calls_per_minute,
        error_kinds: &ErrorKind::NAMES,
    }
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
    /// A process it is exclusive with is running (its id).
    PeerRunning(String),
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
        for p in &processes {
            let _ = p.series.set(metrics.init_process(&p.id, &process_info(&p.config())));
        }
        metrics.scheduler_enabled(enabled);
        let (added, added_rx) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Scheduler {
            table: std::sync::RwLock::new(Arc::new(Table::new(processes))),
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
            added,
            added_rx: std::sync::Mutex::new(Some(added_rx)),
            exclusion: std::sync::Mutex::new(()),
            run_ended: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends every finished run to `sink` too (set once, before `start`). The
    /// queue is bounded: a record that does not fit is dropped and counted,
    /// never waited for.
    pub fn record_runs_to(&self, sink: tokio::sync::mpsc::Sender<RunRecord>) {
        let _ = self.run_sink.set(sink);
    }

    /// Runs a tick only where `ha` wins its lease, on the grid all replicas share.
    pub fn coordinate_with(&self, ha: Arc<dyn Coordinator>) {
        ha.link(&self.link_groups());
        let _ = self.ha.set(ha);
    }

    /// Which processes must run on the same replica (chains and exclusion).
    /// Every process this scheduler runs (enabled, implemented), with its group.
    fn link_groups(&self) -> std::collections::BTreeMap<String, String> {
        let configs = self
            .processes()
            .iter()
            .filter(|p| p.schedulable())
            .map(|p| (p.id.to_string(), (*p.config()).clone()))
            .collect();
        crate::config::link_groups(&configs)
    }

    /// Whether anything linked to `p` (chains, exclusion) is running or waiting here.
    fn group_busy(&self, p: &ProcessHandle) -> bool {
        let table = self.table();
        table.groups.get(&p.id).is_some_and(|group| {
            group
                .iter()
                .any(|q| q.id != p.id && (q.is_running() || q.waiting.load(std::sync::atomic::Ordering::Acquire)))
        })
    }

    /// Stretches the intervals of less urgent processes while the budget is tight.
    pub fn adapt_to(&self, adaptive: Adaptive) {
        let _ = self.adaptive.set(adaptive);
    }

    /// The interval `p` is on right now: its own, stretched while the budget
    /// is tight. Under HA the factor is rounded up to a whole number, so the
    /// stretched ticks are points of the grid the replicas share (every k-th).
    fn effective_interval(&self, p: &ProcessHandle, config: &crate::config::ProcessConfig) -> Duration {
        let factor = match self.adaptive.get() {
            Some(a) if !config.chained() => a.factor(&config.kind, config.priority),
            _ => 1.0,
        };
        let factor = if self.ha.get().is_some() { factor.ceil() } else { factor };
        let interval = Duration::from_secs_f64(config.interval_seconds).mul_f64(factor);
        p.series().effective_interval(interval.as_secs_f64());
        interval
    }

    pub fn coordinator(&self) -> Option<&Arc<dyn Coordinator>> {
        self.ha.get()
    }

    /// The processes now (a reload may change them).
    pub fn processes(&self) -> Arc<Vec<Arc<ProcessHandle>>> {
        self.table().processes.clone()
    }

    pub fn process(&self, id: &str) -> Option<Arc<ProcessHandle>> {
        self.table().get(id).cloned()
    }

    /// The processes `id` never runs beside.
    pub fn exclusive_peers(&self, id: &str) -> Vec<Arc<ProcessHandle>> {
        self.table().peers.get(id).cloned().unwrap_or_default()
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
            let added = self.added_rx.lock().unwrap_or_else(|e| e.into_inner()).take();
            tokio::spawn(self.clone().tick_loop(added));
            for p in self
                .processes()
                .iter()
                .filter(|p| p.process.is_some() && p.continuous())
            {
                self.tracker.spawn(self.clone().supervise(p.clone()));
            }
        }
    }

    /// When `p` first falls due after `start` (a chained process: its first deadline).
    fn first_tick(&self, p: &ProcessHandle, start: Instant) -> Instant {
        let config = p.config();
        let offset = Duration::from_secs_f64(config.start_offset_seconds);
        let first = match (self.ha.get(), config.chained()) {
            (_, true) => {
                // The first deadline counts from the first tick it would have had.
                p.chain.lock().unwrap_or_else(|e| e.into_inner()).since = Some(start + offset);
                start + offset + p.interval()
            }
            (Some(ha), false) => start + ha.until_next_tick(p.interval(), offset, Duration::ZERO),
            (None, false) => start + offset,
        };
        self.note_next_run(p, first);
        first
    }

    async fn tick_loop(self: Arc<Self>, mut added: Option<tokio::sync::mpsc::UnboundedReceiver<Arc<ProcessHandle>>>) {
        let start = Instant::now();
        // (next tick, priority, slot): the earliest tick first; at the same instant, priority 1 first.
        let mut timetable: BinaryHeap<Reverse<(Instant, u8, usize)>> = BinaryHeap::new();
        let mut slots: Vec<Option<Arc<ProcessHandle>>> = Vec::new();
        let take_in = |p: Arc<ProcessHandle>, at: Instant, timetable: &mut BinaryHeap<_>, slots: &mut Vec<_>| {
            let first = self.first_tick(&p, at);
            timetable.push(Reverse((first, p.config().priority, slots.len())));
            slots.push(Some(p));
        };
        for p in self
            .processes()
            .iter()
            .filter(|p| p.process.is_some() && !p.continuous())
        {
            take_in(p.clone(), start, &mut timetable, &mut slots);
        }
        loop {
            let due = timetable.peek().map(|&Reverse((due, _, _))| due);
            tokio::select! {
                biased;
                _ = self.stop_ticking.cancelled() => return,
                Some(p) = async { match added.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    if p.process.is_some() && !p.continuous() {
                        take_in(p, Instant::now(), &mut timetable, &mut slots);
                    }
                    continue;
                }
                _ = async { match due { Some(due) => sleep_until(due).await, None => std::future::pending().await } } => {}
            }
            let now = Instant::now();
            let mut due_now = Vec::new();
            while let Some(&Reverse((due, priority, slot))) = timetable.peek() {
                if due > now {
                    break;
                }
                timetable.pop();
                due_now.push((priority, due, slot));
            }
            due_now.sort_unstable();
            for (_, due, slot) in due_now {
                let Some(p) = slots[slot].clone() else { continue };
                if p.is_removed() {
                    slots[slot] = None;
                    continue;
                }
                let next = self.tick(&p, due, now);
                timetable.push(Reverse((next, p.config().priority, slot)));
            }
        }
    }

    /// Handles one due tick of `p`; returns its next tick.
    fn tick(self: &Arc<Self>, p: &Arc<ProcessHandle>, due: Instant, now: Instant) -> Instant {
        let config = p.config();
        if config.chained() {
            return self.deadline_tick(p, now);
        }
        if let Some(ha) = self.ha.get() {
            return self.tick_shared(ha, p, due, now);
        }
        let interval = Duration::from_secs_f64(config.interval_seconds);
        let missed = (now.duration_since(due).as_nanos() / interval.as_nanos().max(1)) as u32;
        let scheduled = due + interval * missed;
        let next = scheduled + self.effective_interval(p, &config);
        self.note_next_run(p, next);
        if !config.enabled {
            return next;
        }
        if missed > 0 {
            self.skipped(p, SkipReason::missed, missed as u64);
        }
        self.start_run(p, Trigger::Schedule, scheduled, next);
        next
    }

    /// A tick on the grid all replicas share: the next one is computed from
    /// the database's clock each time, so replicas stay aligned; whether
    /// this replica runs it is decided by the claim at the start of the run.
    fn tick_shared(
        self: &Arc<Self>,
        ha: &Arc<dyn Coordinator>,
        p: &Arc<ProcessHandle>,
        due: Instant,
        now: Instant,
    ) -> Instant {
        let config = p.config();
        let offset = Duration::from_secs_f64(config.start_offset_seconds);
        // Stretched by a whole factor k: every k-th point of the shared grid
        // (claims still number slots on the configured grid, so they only grow).
        let stretched = self.effective_interval(p, &config);
        let next = now + ha.until_next_tick(stretched, offset, p.interval() / 4);
        self.note_next_run(p, next);
        if config.enabled {
            self.start_run(p, Trigger::Schedule, due, next);
        }
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
        // The task holds only its arguments; the run's (large) future is
        // built and boxed when the task first runs, on a worker, so launching
        // thousands of runs at one instant stays cheap for the tick loop.
        self.tracker.spawn(async move {
            Box::pin(me.execute(p, trigger, scheduled, next_tick)).await;
        });
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
        if !p.config().enabled {
            return Err(TriggerError::Disabled);
        }
        if let Some(ha) = self.ha.get()
            && !ha.holds(id)
        {
            if let Some(holder) = ha.holder(id).filter(|h| !h.expired && *h.replica != *ha.replica()) {
                return Err(TriggerError::HeldElsewhere(holder.replica));
            }
            if let Some(owner) = ha.owner(id).filter(|o| *o != *ha.replica()) {
                return Err(TriggerError::HeldElsewhere(owner));
            }
        }
        if p.continuous() {
            // A trigger reconnects: the run in progress stops and starts again at once.
            p.restart_requested.store(true, std::sync::atomic::Ordering::Release);
            if !p.interrupt() {
                p.wake.notify_one();
            }
            return Ok(());
        }
        match self.begin(&p) {
            Ok(()) => {}
            Err(links::Busy::Itself) => return Err(TriggerError::AlreadyRunning),
            Err(links::Busy::Peer(peer)) => return Err(TriggerError::PeerRunning(peer.to_string())),
        }
        let now = Instant::now();
        self.launch(p.clone(), Trigger::Manual, now, now + p.interval());
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
        if p.continuous() {
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
            tokio::spawn(async move { ha.release(&id, "pause").await });
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
        for p in self.processes().iter().filter(|p| p.continuous()) {
            p.interrupt();
        }
        if let Some(ha) = self.ha.get() {
            // Idle processes go to the other replicas now, not after the runs in flight here.
            for p in self.processes().iter().filter(|p| !p.is_running()) {
                ha.release(&p.id, "shutdown").await;
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
