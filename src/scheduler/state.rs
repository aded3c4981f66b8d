//! What the scheduler knows about each process: its settings, whether it is
//! running or paused, its counters and its recent runs. Read by the status
//! API; written only by the scheduler.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use crate::config::{ProcessConfig, SetOverrides};
use crate::process::{ErrorKind, Process, RunRecord};

/// One process under the scheduler.
pub struct ProcessHandle {
    pub id: Arc<str>,
    pub name: String,
    /// The settings in force: the file's, with any live overrides on top.
    /// Swapped whole; a run reads them once when it starts.
    config: RwLock<Arc<ProcessConfig>>,
    /// The file's settings, and the live overrides on top of them.
    layers: Mutex<(Arc<ProcessConfig>, Option<SetOverrides>)>,
    /// A chained process (`after`): when it last started, and which of the
    /// processes it follows succeeded since.
    pub(crate) chain: Mutex<Chain>,
    /// The instance a reload replaced: while its last run goes on, this one does not start.
    predecessor: Mutex<Option<Arc<ProcessHandle>>>,
    /// Whether `predecessor` is set (a lock-free fast path for every run's start).
    has_predecessor: AtomicBool,
    /// A tick is waiting for an exclusive peer to finish.
    pub(crate) waiting: AtomicBool,
    /// `None` when this build has no implementation of the configured kind yet.
    pub process: Option<Arc<dyn Process>>,
    /// Mode and kind never change on a live handle (a reload replaces the handle).
    continuous: bool,
    /// Taken out of the scheduler by a reload: its tick is not renewed.
    removed: AtomicBool,
    running: AtomicBool,
    paused: AtomicBool,
    stats: Mutex<Stats>,
    /// Set by the scheduler when it takes the process in.
    pub(crate) series: std::sync::OnceLock<crate::telemetry::process::ProcessSeries>,
    /// A continuous process's run in progress: cancelled to restart or pause it.
    pub(crate) current: Mutex<Option<tokio_util::sync::CancellationToken>>,
    /// Wakes a continuous process's supervisor (trigger, resume).
    pub(crate) wake: tokio::sync::Notify,
    /// A trigger asked a continuous process to start again at once.
    pub(crate) restart_requested: AtomicBool,
}

/// Where a chained process stands.
#[derive(Debug, Default)]
pub struct Chain {
    pub since: Option<tokio::time::Instant>,
    pub succeeded: BTreeSet<Arc<str>>,
}

/// Counters and timestamps behind the status document.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub total_runs: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub timeout_count: u64,
    pub skipped_count: u64,
    pub total_duration: f64,
    pub last_duration: Option<f64>,
    pub last_run: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<SystemTime>,
    pub last_error_message: Option<String>,
    pub last_error_kind: Option<ErrorKind>,
    pub consecutive_failures: u64,
    pub next_run: Option<SystemTime>,
    /// Continuous processes: times it was started again after its run ended.
    pub restarts: u64,
    /// Continuous processes: when the run last received something.
    pub last_event: Option<SystemTime>,
    pub history: VecDeque<RunRecord>,
}

impl ProcessHandle {
    pub fn new(id: &str, config: ProcessConfig, process: Option<Arc<dyn Process>>) -> Self {
        ProcessHandle {
            id: Arc::from(id),
            name: config.display_name(id),
            continuous: config.continuous(),
            layers: Mutex::new((Arc::new(config.clone()), None)),
            config: RwLock::new(Arc::new(config)),
            chain: Mutex::default(),
            waiting: AtomicBool::new(false),
            predecessor: Mutex::default(),
            has_predecessor: AtomicBool::new(false),
            process,
            removed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stats: Mutex::default(),
            series: std::sync::OnceLock::new(),
            current: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            restart_requested: AtomicBool::new(false),
        }
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<ProcessConfig> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live overrides in force, if any.
    pub fn overrides(&self) -> Option<SetOverrides> {
        self.layers.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// The file's settings (what `DELETE …/overrides` returns to).
    pub fn file_config(&self) -> Arc<ProcessConfig> {
        self.layers.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Replaces the file's settings, the overrides, or both, and puts the
    /// result in force (from the next tick; runs in flight keep theirs).
    /// Returns the settings now in force.
    pub(crate) fn set_layers(
        &self,
        file: Option<ProcessConfig>,
        overrides: Option<Option<SetOverrides>>,
    ) -> Arc<ProcessConfig> {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = file {
            layers.0 = Arc::new(file);
        }
        if let Some(overrides) = overrides {
            layers.1 = overrides;
        }
        let effective = Arc::new(match &layers.1 {
            Some(o) => o.values.apply(&layers.0),
            None => (*layers.0).clone(),
        });
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = effective.clone();
        effective
    }

    /// What a chained process still waits for (empty otherwise, or once all succeeded).
    pub fn waiting_for(&self) -> Vec<String> {
        let config = self.config();
        let chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        config
            .after
            .iter()
            .filter(|d| !chain.succeeded.contains(d.as_str()))
            .cloned()
            .collect()
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.config().interval_seconds)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.config().timeout_seconds)
    }

    pub fn continuous(&self) -> bool {
        self.continuous
    }

    /// Whether the scheduler will tick this process at all.
    pub fn schedulable(&self) -> bool {
        self.config().enabled && self.process.is_some() && !self.is_removed()
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub(crate) fn remove(&self) {
        self.removed.store(true, Ordering::Release);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(crate) fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::AcqRel) != paused
    }

    /// Takes over from the instance a reload replaced.
    pub(crate) fn follow(&self, predecessor: Arc<ProcessHandle>) {
        *self.predecessor.lock().unwrap_or_else(|e| e.into_inner()) = Some(predecessor);
        self.has_predecessor.store(true, Ordering::Release);
    }

    /// Claims the single flight: `false` if a run is already going (here or
    /// in the instance this one replaced).
    pub(crate) fn try_begin(&self) -> bool {
        if self.has_predecessor.load(Ordering::Acquire) {
            let mut predecessor = self.predecessor.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = predecessor.as_ref() {
                if old.is_running() {
                    return false;
                }
                *predecessor = None;
                self.has_predecessor.store(false, Ordering::Release);
            }
        }
        self.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn end(&self) {
        self.running.store(false, Ordering::Release);
    }

    pub(crate) fn series(&self) -> &crate::telemetry::process::ProcessSeries {
        self.series.get().expect("set when the scheduler takes the process in")
    }

    /// Stops a continuous run in progress (its supervisor decides what next).
    pub(crate) fn interrupt(&self) -> bool {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}
