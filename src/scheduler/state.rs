//! What the scheduler knows about each process: its settings, whether it is
//! running or paused, its counters and its recent runs. Read by the status
//! API; written only by the scheduler.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::ProcessConfig;
use crate::process::{ErrorKind, Process, Trigger};

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
    pub(crate) series: std::sync::OnceLock<crate::telemetry::metrics::ProcessSeries>,
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
    pub history: VecDeque<RunRecord>,
}

/// One finished run, as served by `/api/script-manager/runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub process: Arc<str>,
    pub trigger: Trigger,
    #[serde(serialize_with = "crate::status::rfc3339")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "crate::status::rfc3339")]
    pub finished_at: SystemTime,
    pub duration_seconds: f64,
    /// Actual start minus scheduled start (0 for manual runs).
    pub lag_seconds: f64,
    pub attempts: u32,
    /// `success`, `error` or `timeout`.
    pub outcome: &'static str,
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    pub api_calls: u32,
    /// CPU time and peak RSS of the child program (command kind).
    pub child_cpu_seconds: Option<f64>,
    pub child_peak_rss_bytes: Option<u64>,
    pub trace_id: Option<String>,
    /// Under HA: the grid slot this run was for, the replica that ran it and its lease token.
    pub lease: Option<RunLease>,
}

/// What a run held under HA.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunLease {
    pub replica: Arc<str>,
    /// `None` for a manual run.
    pub slot: Option<i64>,
    pub token: i64,
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

    pub(crate) fn series(&self) -> &crate::telemetry::metrics::ProcessSeries {
        self.series.get().expect("set when the scheduler takes the process in")
    }

    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}
