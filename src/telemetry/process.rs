//! Per-process series: configuration gauges, runs, skips, retries, errors,
//! durations, lag, child usage and API calls, all labelled by process id.
//!
//! One row of atomics per process, encoded by [`super::exposition`] from
//! labels rendered once (a thousand processes are some 75 000 lines per
//! scrape). The scheduler records a finished run through
//! [`ProcessMetrics::finished`] on the process's [`ProcessSeries`] and never
//! looks anything up; label sets stay bounded (process ids come from
//! configuration; outcomes, reasons and kinds are closed sets).
//! (One file past 400 lines on purpose: the row, its families and its
//! recording are one list that must stay in step.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

use super::exposition::{AtomicF64, Buckets, Desc, Histogram, Kind, Value, Writer};

/// The label set other families (API, HA) key a process by.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub process: String,
}

pub fn labels(id: &str) -> ProcessLabels {
    ProcessLabels {
        process: id.to_string(),
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    success,
    error,
    timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::success => "success",
            Outcome::error => "error",
            Outcome::timeout => "timeout",
        }
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SkipReason {
    /// The previous run was still going.
    overlap,
    /// The scheduler woke too late; ticks were coalesced into one run.
    missed,
    /// The process is paused.
    paused,
    /// A process it is exclusive with was still running when its timeout passed.
    exclusive,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::overlap => "overlap",
            SkipReason::missed => "missed",
            SkipReason::paused => "paused",
            SkipReason::exclusive => "exclusive",
        }
    }

    pub const ALL: [SkipReason; 4] = [
        SkipReason::overlap,
        SkipReason::missed,
        SkipReason::paused,
        SkipReason::exclusive,
    ];
}

/// Exemplar labels: the trace of the run an observation came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

/// What the metrics show of a process's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessInfo {
    pub enabled: bool,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub priority: u8,
    pub retry_count: u32,
    pub max_api_calls_per_minute: u32,
    /// Every error kind a run can end with (the `kind` label's values).
    pub error_kinds: &'static [&'static str],
}

/// Run durations: 1 ms to 120 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Scheduling lag: 100 µs to 5 s.
const LAG_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// One finished run, as the metrics need it.
#[derive(Debug, Clone)]
pub struct FinishedRun<'a> {
    pub outcome: Outcome,
    pub duration_seconds: f64,
    /// `None` when no attempt started (nothing to measure).
    pub lag_seconds: Option<f64>,
    pub trace_id: Option<String>,
    /// The error kind of a failed run.
    pub error_kind: Option<&'static str>,
    /// CPU seconds and peak RSS of a child program (command kind).
    pub child: Option<(f64, u64)>,
    pub process: &'a str,
}

/// Every series of one process.
struct Row {
    /// `process="<id>"`, rendered once.
    labels: String,
    enabled: AtomicI64,
    interval: AtomicF64,
    effective_interval: AtomicF64,
    timeout: AtomicF64,
    priority: AtomicI64,
    retry_count: AtomicI64,
    running: AtomicI64,
    paused: AtomicI64,
    /// By [`Outcome`], in its order.
    runs: [AtomicU64; 3],
    /// By [`SkipReason::ALL`], in its order.
    skipped: [AtomicU64; 4],
    retries: AtomicU64,
    /// By error kind: the known kinds from the start, others as they come.
    errors: Mutex<Vec<(&'static str, u64)>>,
    duration: Histogram,
    lag: Histogram,
    last_run: AtomicF64,
    last_success: AtomicF64,
    last_error: AtomicF64,
    consecutive_failures: AtomicI64,
    child_cpu: AtomicF64,
    child_peak_rss: AtomicI64,
    api_calls_last_minute: AtomicI64,
    api_limit: AtomicI64,
    up: AtomicI64,
    restarts: AtomicU64,
    last_event: AtomicF64,
}

/// One process's series, resolved once, so recording a run neither
/// allocates label sets nor looks them up.
#[derive(Clone)]
pub struct ProcessSeries(Arc<Row>);

pub struct ProcessMetrics {
    rows: RwLock<BTreeMap<String, Arc<Row>>>,
    duration_buckets: Arc<Buckets>,
    lag_buckets: Arc<Buckets>,
}

const fn desc(name: &'static str, help: &'static str, kind: Kind, unit: Option<&'static str>) -> Desc {
    Desc { name, help, kind, unit }
}

const G: Kind = Kind::Gauge;
const C: Kind = Kind::Counter;
const S: Option<&str> = Some("seconds");

macro_rules! family {
    ($name:literal, $help:literal, $kind:expr, $unit:expr) => {
        desc(concat!("script_manager_process_", $name), $help, $kind, $unit)
    };
}

const ENABLED: Desc = family!("enabled", "1 if the process is enabled in the configuration.", G, None);
const INTERVAL: Desc = family!("interval_seconds", "Configured interval between ticks.", G, S);
const EFFECTIVE_INTERVAL: Desc = family!(
    "effective_interval_seconds",
    "Interval the process is on now: the configured one, stretched while the API budget is tight.",
    G,
    S
);
const TIMEOUT: Desc = family!("timeout_seconds", "Configured timeout of one attempt.", G, S);
const PRIORITY: Desc = family!("priority", "Configured priority (1 = highest).", G, None);
const MAX_RETRIES: Desc = family!(
    "max_retries",
    "Configured number of retries after a failed attempt.",
    G,
    None
);
const RUNNING: Desc = family!("running", "1 while a run of the process is executing.", G, None);
const PAUSED: Desc = family!("paused", "1 while the process is paused by an operator.", G, None);
const RUNS: Desc = family!("runs", "Finished runs by outcome.", C, None);
const SKIPPED: Desc = family!("skipped_runs", "Ticks that did not start a run, by reason.", C, None);
const RETRIES: Desc = family!("retries", "Attempts beyond the first.", C, None);
const ERRORS: Desc = family!("errors", "Failed runs by error kind.", C, None);
const DURATION: Desc = family!(
    "run_duration_seconds",
    "Wall time of a run, all attempts included.",
    Kind::Histogram,
    S
);
const LAG: Desc = family!(
    "schedule_lag_seconds",
    "Actual start minus scheduled start of a run.",
    Kind::Histogram,
    S
);
const LAST_RUN: Desc = family!(
    "last_run_timestamp_seconds",
    "Unix time the last run finished.",
    G,
    None
);
const LAST_SUCCESS: Desc = family!(
    "last_success_timestamp_seconds",
    "Unix time of the last successful run.",
    G,
    None
);
const LAST_ERROR: Desc = family!(
    "last_error_timestamp_seconds",
    "Unix time of the last failed run.",
    G,
    None
);
const CONSECUTIVE_FAILURES: Desc = family!("consecutive_failures", "Failed runs since the last success.", G, None);
const CHILD_CPU: Desc = family!(
    "child_cpu_seconds",
    "CPU time used by the process's child programs (command kind).",
    C,
    S
);
const CHILD_PEAK_RSS: Desc = family!(
    "child_peak_rss_bytes",
    "Peak resident memory of the last child program (command kind).",
    G,
    Some("bytes")
);
const UP: Desc = family!("up", "1 while a continuous process's run is up.", G, None);
const RESTARTS: Desc = family!(
    "restarts",
    "Times a continuous process was started again after its run ended.",
    C,
    None
);
const LAST_EVENT: Desc = family!(
    "last_event_timestamp_seconds",
    "Unix time a continuous process last received something.",
    G,
    None
);
const API_CALLS_LAST_MINUTE: Desc = desc(
    "script_manager_api_calls_last_minute",
    "Exchange API calls the process made in the sliding last minute.",
    G,
    None,
);
const API_LIMIT: Desc = desc(
    "script_manager_api_limit_calls_per_minute",
    "Configured API calls per minute allowed to the process.",
    G,
    None,
);

fn int(a: &AtomicI64) -> Value {
    Value::Int(a.load(Ordering::Relaxed))
}

fn uint(a: &AtomicU64) -> Value {
    Value::Uint(a.load(Ordering::Relaxed))
}

fn float(a: &AtomicF64) -> Value {
    Value::Float(a.get())
}

/// How a family's sample is read from a row.
type Read = fn(&Row) -> Value;

/// The families with one sample per process, and how to read it from a row.
const SINGLE: [(&Desc, Read); 20] = [
    (&ENABLED, |r| int(&r.enabled)),
    (&INTERVAL, |r| float(&r.interval)),
    (&EFFECTIVE_INTERVAL, |r| float(&r.effective_interval)),
    (&TIMEOUT, |r| float(&r.timeout)),
    (&PRIORITY, |r| int(&r.priority)),
    (&MAX_RETRIES, |r| int(&r.retry_count)),
    (&RUNNING, |r| int(&r.running)),
    (&PAUSED, |r| int(&r.paused)),
    (&RETRIES, |r| uint(&r.retries)),
    (&LAST_RUN, |r| float(&r.last_run)),
    (&LAST_SUCCESS, |r| float(&r.last_success)),
    (&LAST_ERROR, |r| float(&r.last_error)),
    (&CONSECUTIVE_FAILURES, |r| int(&r.consecutive_failures)),
    (&CHILD_CPU, |r| float(&r.child_cpu)),
    (&CHILD_PEAK_RSS, |r| int(&r.child_peak_rss)),
    (&UP, |r| int(&r.up)),
    (&RESTARTS, |r| uint(&r.restarts)),
    (&LAST_EVENT, |r| float(&r.last_event)),
    (&API_CALLS_LAST_MINUTE, |r| int(&r.api_calls_last_minute)),
    (&API_LIMIT, |r| int(&r.api_limit)),
];

const OUTCOMES: [Outcome; 3] = [Outcome::success, Outcome::error, Outcome::timeout];

impl ProcessMetrics {
    pub fn new() -> Self {
        ProcessMetrics {
            rows: RwLock::new(BTreeMap::new()),
            duration_buckets: Arc::new(Buckets::new(&DURATION_BUCKETS)),
            lag_buckets: Arc::new(Buckets::new(&LAG_BUCKETS)),
        }
    }

    /// Writes every per-process family (`script_manager_process_*` and the
    /// per-process `script_manager_api_*` gauges).
    pub fn encode(&self, w: &mut Writer<'_>) {
        let rows: Vec<Arc<Row>> = self.read().values().cloned().collect();
        for (d, value) in SINGLE {
            w.family(d);
            for r in &rows {
                w.sample(d, &r.labels, None, value(r));
            }
        }
        w.family(&RUNS);
        for r in &rows {
            for (outcome, n) in OUTCOMES.iter().zip(&r.runs) {
                w.sample(&RUNS, &r.labels, Some(("outcome", outcome.as_str())), uint(n));
            }
        }
        w.family(&SKIPPED);
        for r in &rows {
            for (reason, n) in SkipReason::ALL.iter().zip(&r.skipped) {
                w.sample(&SKIPPED, &r.labels, Some(("reason", reason.as_str())), uint(n));
            }
        }
        w.family(&ERRORS);
        for r in &rows {
            for (kind, n) in r.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                w.sample(&ERRORS, &r.labels, Some(("kind", kind)), Value::Uint(*n));
            }
        }
        for (d, histogram) in [
            (&DURATION, (|r: &Row| &r.duration) as fn(&Row) -> &Histogram),
            (&LAG, |r| &r.lag),
        ] {
            w.family(d);
            for r in &rows {
                w.histogram(d, &r.labels, histogram(r));
            }
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
            .or_insert_with(|| {
                Arc::new(Row {
                    labels: super::exposition::label("process", id),
                    enabled: AtomicI64::new(0),
                    interval: AtomicF64::default(),
                    effective_interval: AtomicF64::default(),
                    timeout: AtomicF64::default(),
                    priority: AtomicI64::new(0),
                    retry_count: AtomicI64::new(0),
                    running: AtomicI64::new(0),
                    paused: AtomicI64::new(0),
                    runs: Default::default(),
                    skipped: Default::default(),
                    retries: AtomicU64::new(0),
                    errors: Mutex::new(Vec::new()),
                    duration: Histogram::new(self.duration_buckets.clone(), true),
                    lag: Histogram::new(self.lag_buckets.clone(), false),
                    last_run: AtomicF64::default(),
                    last_success: AtomicF64::default(),
                    last_error: AtomicF64::default(),
                    consecutive_failures: AtomicI64::new(0),
                    child_cpu: AtomicF64::default(),
                    child_peak_rss: AtomicI64::new(0),
                    api_calls_last_minute: AtomicI64::new(0),
                    api_limit: AtomicI64::new(0),
                    up: AtomicI64::new(0),
                    restarts: AtomicU64::new(0),
                    last_event: AtomicF64::default(),
                })
            })
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

impl ProcessSeries {
    pub fn running(&self, running: bool) {
        self.0.running.store(running as i64, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.0.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn up(&self, up: bool) {
        self.0.up.store(up as i64, Ordering::Relaxed);
    }

    pub fn restarted(&self) {
        self.0.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// The interval the process is on now (seconds).
    pub fn effective_interval(&self, seconds: f64) {
        self.0.effective_interval.set(seconds);
    }

    /// When a continuous run last received something (ms; 0 = never, left as is).
    pub fn last_event_ms(&self, at_ms: i64) {
        if at_ms > 0 {
            self.0.last_event.set(at_ms as f64 / 1000.0);
        }
    }
}
