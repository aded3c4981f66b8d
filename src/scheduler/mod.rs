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
//!
//! One file per concern, so each can be read without the others: this one
//! the `Scheduler` value, its construction and accessors; `table.rs` the
//! processes and their links; `ticks.rs` the timetable (the hot path);
//! `control.rs` trigger, pause, resume and shutdown; `links.rs` chains and
//! exclusion; `execute.rs` one run, `record.rs` what it leaves behind;
//! `continuous.rs` long-running processes; `live.rs` overrides and reloads;
//! `adaptive.rs` intervals under a tight budget; `coordinator.rs` the HA trait;
//! `state.rs` per-process state.

mod adaptive;
mod continuous;
mod control;
mod coordinator;
mod execute;
mod links;
mod live;
mod record;
mod state;
mod table;
mod ticks;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use adaptive::Adaptive;
pub use control::{ShutdownReport, TriggerError};
pub use coordinator::{ClusterView, Coordinator, Granted, Holder};
pub use live::{Build, ReloadReport};
pub use state::{ProcessHandle, Stats};
use table::Table;

use crate::budget::ProcessCalls;
use crate::process::ErrorKind;
pub use crate::process::{RunLease, RunRecord};
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
    /// The live event stream runs, pauses and overrides are published to (set once, before `start`).
    events: std::sync::OnceLock<Arc<crate::events::Hub>>,
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
            events: std::sync::OnceLock::new(),
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

    /// Publishes runs started and finished, pauses, resumes and overrides to `hub`.
    pub fn publish_events_to(&self, hub: Arc<crate::events::Hub>) {
        let _ = self.events.set(hub);
    }

    /// A `process` event about `id` (`what`: started, finished, paused, resumed, overrides).
    pub(crate) fn emit(&self, id: &str, what: &str, mut data: serde_json::Value) {
        if let Some(hub) = self.events.get() {
            data["process"] = id.into();
            data["event"] = what.into();
            hub.publish(crate::events::Kind::Process, None, None, &data);
        }
    }

    /// Stretches the intervals of less urgent processes while the budget is tight.
    pub fn adapt_to(&self, adaptive: Adaptive) {
        let _ = self.adaptive.set(adaptive);
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
}
