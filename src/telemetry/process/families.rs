//! The exposition: every per-process family (name, help, type, unit), how
//! each is read from a row, the histogram buckets, and the encoding of all
//! rows. Kept apart from the rows because this is the list that must stay in
//! step with `row.rs` (a field printed by no family is never seen) and is
//! read when a family is added or renamed, not when a run is recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::super::exposition::{AtomicF64, Desc, Histogram, Kind, Value, Writer};
use super::ProcessMetrics;
use super::labels::{OUTCOMES, SkipReason};
use super::row::Row;

/// Run durations: 1 ms to 120 s.
pub(super) const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Scheduling lag: 100 µs to 5 s.
pub(super) const LAG_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

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

impl ProcessMetrics {
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
}
