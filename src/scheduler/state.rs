//! What the scheduler knows about each process: its settings, whether it is
//! running or paused, its counters and its recent runs. Read by the status
//! API; written only by the scheduler.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::ProcessConfig;
use crate::process::{ErrorKind, Process, RunRecord};

/// One process under the scheduler.
pub struct ProcessHandle {
    pub id: Arc<str>,
    pub name: String,
    pub config: ProcessConfig,
    /// `None` when this build has no implementation of the configured kind yet.
    pub process: Option<Arc<dyn Process>>,
    pub interval: Duration,
    pub timeout: Duration,
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
            interval: Duration::from_secs_f64(config.interval_seconds),
            timeout: Duration::from_secs_f64(config.timeout_seconds),
            config,
            process,
            running: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stats: Mutex::default(),
            series: std::sync::OnceLock::new(),
            current: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            restart_requested: AtomicBool::new(false),
        }
    }

    /// Whether the scheduler will tick this process at all.
    pub fn schedulable(&self) -> bool {
        self.config.enabled && self.process.is_some()
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

    /// Claims the single flight: `false` if a run is already going.
    pub(crate) fn try_begin(&self) -> bool {
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
