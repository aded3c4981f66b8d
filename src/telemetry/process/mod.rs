//! Per-process series: configuration gauges, runs, skips, retries, errors,
//! durations, lag, child usage and API calls, all labelled by process id.
//!
//! One row of atomics per process, encoded by [`super::exposition`] from
//! labels rendered once (a thousand processes are some 75 000 lines per
//! scrape). The scheduler records a finished run through
//! [`ProcessMetrics::finished`] on the process's [`ProcessSeries`] and never
//! looks anything up; label sets stay bounded (process ids come from
//! configuration; outcomes, reasons and kinds are closed sets).
//!
//! One concern per file: `labels.rs` the vocabulary callers speak (closed
//! label sets, a process's settings, a finished run); `row.rs` the row of
//! atomics and the [`ProcessSeries`] handle; `families.rs` the families and
//! how rows are printed; this file the registry of rows and the recording of
//! a run. The row's fields, its families and its recording still have to
//! stay in step; the split keeps each list short enough to check by eye.

mod families;
mod labels;
mod row;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::exposition::Buckets;
use families::{DURATION_BUCKETS, LAG_BUCKETS};
use labels::OUTCOMES;
pub use labels::{FinishedRun, Outcome, ProcessInfo, ProcessLabels, SkipReason, TraceLabels, labels};
pub use row::ProcessSeries;
use row::Row;

pub struct ProcessMetrics {
    rows: RwLock<BTreeMap<String, Arc<Row>>>,
    duration_buckets: Arc<Buckets>,
    lag_buckets: Arc<Buckets>,
}

impl ProcessMetrics {
    pub fn new() -> Self {
        ProcessMetrics {
            rows: RwLock::new(BTreeMap::new()),
            duration_buckets: Arc::new(Buckets::new(&DURATION_BUCKETS)),
            lag_buckets: Arc::new(Buckets::new(&LAG_BUCKETS)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Row>>> {
        self.rows.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The row of `id`, created (all zeros) if needed.
    fn row(&self, id: &str) -> Arc<Row> {
        if let Some(row) = self.read().get(id) {
            return row.clone();
        }
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        rows.entry(id.to_string())
            .or_insert_with(|| Arc::new(Row::new(id, &self.duration_buckets, &self.lag_buckets)))
            .clone()
    }

    /// Creates every series of a configured process, so dashboards and alerts
    /// see zeros from start-up, and returns its series.
    pub fn init(&self, id: &str, info: &ProcessInfo) -> ProcessSeries {
        let row = self.row(id);
        self.configure(id, info);
        row.effective_interval.set(info.interval_seconds);
        {
            let mut errors = row.errors.lock().unwrap_or_else(|e| e.into_inner());
            for &kind in info.error_kinds {
                if !errors.iter().any(|(k, _)| *k == kind) {
                    errors.push((kind, 0));
                }
            }
        }
        ProcessSeries(row)
    }

    /// Shows changed settings (a live override or a reload).
    pub fn configure(&self, id: &str, info: &ProcessInfo) {
        let row = self.row(id);
        row.enabled.store(info.enabled as i64, Ordering::Relaxed);
        row.interval.set(info.interval_seconds);
        row.timeout.set(info.timeout_seconds);
        row.priority.store(info.priority as i64, Ordering::Relaxed);
        row.retry_count.store(info.retry_count as i64, Ordering::Relaxed);
        row.api_limit
            .store(info.max_api_calls_per_minute as i64, Ordering::Relaxed);
    }

    /// Drops every series of a process taken out of the configuration.
    pub fn remove(&self, id: &str) {
        self.rows.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// The series of a process (created if needed).
    pub fn series(&self, id: &str) -> ProcessSeries {
        ProcessSeries(self.row(id))
    }

    pub fn skipped(&self, id: &str, reason: SkipReason, count: u64) {
        let i = SkipReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.row(id).skipped[i].fetch_add(count, Ordering::Relaxed);
    }

    pub fn paused(&self, id: &str, paused: bool) {
        self.row(id).paused.store(paused as i64, Ordering::Relaxed);
    }

    /// The sliding-minute call count of a process (refreshed at scrape time).
    pub fn api_calls_last_minute(&self, id: &str, calls: u32) {
        if let Some(row) = self.read().get(id) {
            row.api_calls_last_minute.store(calls as i64, Ordering::Relaxed);
        }
    }

    /// The calls-per-minute limit in force (for per-account processes it scales with the accounts).
    pub fn api_limit(&self, id: &str, limit: u32) {
        if let Some(row) = self.read().get(id) {
            row.api_limit.store(limit as i64, Ordering::Relaxed);
        }
    }

    /// Records a finished run in every series it touches.
    pub fn finished(&self, series: &ProcessSeries, run: FinishedRun<'_>) {
        let r = &series.0;
        let i = OUTCOMES.iter().position(|o| *o == run.outcome).unwrap_or(0);
        r.runs[i].fetch_add(1, Ordering::Relaxed);
        r.duration.observe(run.duration_seconds, run.trace_id);
        if let Some(lag) = run.lag_seconds {
            r.lag.observe(lag, None);
        }
        if let Some((cpu, rss)) = run.child {
            r.child_cpu.add(cpu);
            r.child_peak_rss.store(rss as i64, Ordering::Relaxed);
        }
        let now = crate::clock::unix_seconds();
        r.last_run.set(now);
        match run.error_kind {
            None => {
                r.last_success.set(now);
                r.consecutive_failures.store(0, Ordering::Relaxed);
            }
            Some(kind) => {
                r.last_error.set(now);
                r.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                let mut errors = r.errors.lock().unwrap_or_else(|e| e.into_inner());
                match errors.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => errors.push((kind, 1)),
                }
            }
        }
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}
