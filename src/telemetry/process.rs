//! Per-process series: configuration gauges, runs, skips, retries, errors,
//! durations, lag, child usage and API calls, all labelled by process id.
//! (One file past 400 lines on purpose: the families, their registration and
//! their recording are one list that must stay in step.)
//!
//! The scheduler records a finished run through [`ProcessSeries::finished`]
//! and never touches a family; label sets stay bounded (process ids come
//! from configuration, outcomes, reasons and kinds are closed sets).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

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
    pub const ALL: [SkipReason; 4] = [
        SkipReason::overlap,
        SkipReason::missed,
        SkipReason::paused,
        SkipReason::exclusive,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub process: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub process: String,
    pub reason: SkipReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub process: String,
    pub kind: &'static str,
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

type F64Gauge = Gauge<f64, AtomicU64>;
type DurationHistogram = HistogramWithExemplars<TraceLabels>;

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

/// One process's hot series, resolved once, so recording a run neither
/// allocates label sets nor looks them up.
#[derive(Clone)]
pub struct ProcessSeries {
    success: Counter,
    error: Counter,
    timeout: Counter,
    duration: DurationHistogram,
    lag: Histogram,
    running: Gauge,
    last_run: F64Gauge,
    last_success: F64Gauge,
    last_error: F64Gauge,
    consecutive_failures: Gauge,
    retries: Counter,
    up: Gauge,
    restarts: Counter,
    last_event: F64Gauge,
    effective_interval: F64Gauge,
}

pub struct ProcessMetrics {
    enabled: Family<ProcessLabels, Gauge>,
    interval: Family<ProcessLabels, F64Gauge>,
    effective_interval: Family<ProcessLabels, F64Gauge>,
    timeout: Family<ProcessLabels, F64Gauge>,
    priority: Family<ProcessLabels, Gauge>,
    retry_count: Family<ProcessLabels, Gauge>,
    running: Family<ProcessLabels, Gauge>,
    paused: Family<ProcessLabels, Gauge>,
    runs: Family<RunLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
    retries: Family<ProcessLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ProcessLabels, DurationHistogram>,
    lag: Family<ProcessLabels, Histogram>,
    last_run: Family<ProcessLabels, F64Gauge>,
    last_success: Family<ProcessLabels, F64Gauge>,
    last_error: Family<ProcessLabels, F64Gauge>,
    consecutive_failures: Family<ProcessLabels, Gauge>,
    child_cpu: Family<ProcessLabels, Counter<f64, AtomicU64>>,
    child_peak_rss: Family<ProcessLabels, Gauge>,
    api_calls_last_minute: Family<ProcessLabels, Gauge>,
    api_limit: Family<ProcessLabels, Gauge>,
    up: Family<ProcessLabels, Gauge>,
    restarts: Family<ProcessLabels, Counter>,
    last_event: Family<ProcessLabels, F64Gauge>,
}

impl ProcessMetrics {
    pub fn new() -> Self {
        ProcessMetrics {
            enabled: Family::default(),
            interval: Family::default(),
            effective_interval: Family::default(),
            timeout: Family::default(),
            priority: Family::default(),
            retry_count: Family::default(),
            running: Family::default(),
            paused: Family::default(),
            runs: Family::default(),
            skipped: Family::default(),
            retries: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())),
            lag: Family::new_with_constructor(|| Histogram::new(LAG_BUCKETS)),
            last_run: Family::default(),
            last_success: Family::default(),
            last_error: Family::default(),
            consecutive_failures: Family::default(),
            child_cpu: Family::default(),
            child_peak_rss: Family::default(),
            api_calls_last_minute: Family::default(),
            api_limit: Family::default(),
            up: Family::default(),
            restarts: Family::default(),
            last_event: Family::default(),
        }
    }

    /// Registers under `script_manager_process_`.
    pub fn register(&self, p: &mut Registry) {
        p.register(
            "enabled",
            "1 if the process is enabled in the configuration",
            self.enabled.clone(),
        );
        p.register_with_unit(
            "interval",
            "Configured interval between ticks",
            Unit::Seconds,
            self.interval.clone(),
        );
        p.register_with_unit(
            "effective_interval",
            "Interval the process is on now: the configured one, stretched while the API budget is tight",
            Unit::Seconds,
            self.effective_interval.clone(),
        );
        p.register_with_unit(
            "timeout",
            "Configured timeout of one attempt",
            Unit::Seconds,
            self.timeout.clone(),
        );
        p.register("priority", "Configured priority (1 = highest)", self.priority.clone());
        p.register(
            "max_retries",
            "Configured number of retries after a failed attempt",
            self.retry_count.clone(),
        );
        p.register(
            "running",
            "1 while a run of the process is executing",
            self.running.clone(),
        );
        p.register(
            "paused",
            "1 while the process is paused by an operator",
            self.paused.clone(),
        );
        p.register("runs", "Finished runs by outcome", self.runs.clone());
        p.register(
            "skipped_runs",
            "Ticks that did not start a run, by reason",
            self.skipped.clone(),
        );
        p.register("retries", "Attempts beyond the first", self.retries.clone());
        p.register("errors", "Failed runs by error kind", self.errors.clone());
        p.register_with_unit(
            "run_duration",
            "Wall time of a run, all attempts included",
            Unit::Seconds,
            self.duration.clone(),
        );
        p.register_with_unit(
            "schedule_lag",
            "Actual start minus scheduled start of a run",
            Unit::Seconds,
            self.lag.clone(),
        );
        p.register(
            "last_run_timestamp_seconds",
            "Unix time the last run finished",
            self.last_run.clone(),
        );
        p.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run",
            self.last_success.clone(),
        );
        p.register(
            "last_error_timestamp_seconds",
            "Unix time of the last failed run",
            self.last_error.clone(),
        );
        p.register(
            "consecutive_failures",
            "Failed runs since the last success",
            self.consecutive_failures.clone(),
        );
        p.register_with_unit(
            "child_cpu",
            "CPU time used by the process's child programs (command kind)",
            Unit::Seconds,
            self.child_cpu.clone(),
        );
        p.register_with_unit(
            "child_peak_rss",
            "Peak resident memory of the last child program (command kind)",
            Unit::Bytes,
            self.child_peak_rss.clone(),
        );
        self.register_continuous(p);
    }

    /// Registers what only continuous processes report, under `script_manager_process_`.
    fn register_continuous(&self, p: &mut Registry) {
        p.register("up", "1 while a continuous process's run is up", self.up.clone());
        p.register(
            "restarts",
            "Times a continuous process was started again after its run ended",
            self.restarts.clone(),
        );
        p.register(
            "last_event_timestamp_seconds",
            "Unix time a continuous process last received something",
            self.last_event.clone(),
        );
    }

    /// Registers the per-process API gauges under `script_manager_api_`.
    pub fn register_api(&self, api: &mut Registry) {
        api.register(
            "calls_last_minute",
            "Exchange API calls the process made in the sliding last minute",
            self.api_calls_last_minute.clone(),
        );
        api.register(
            "limit_calls_per_minute",
            "Configured API calls per minute allowed to the process",
            self.api_limit.clone(),
        );
    }

    /// Creates every series of a configured process, so dashboards and alerts
    /// see zeros from start-up, and returns its hot series.
    pub fn init(&self, id: &str, info: &ProcessInfo) -> ProcessSeries {
        let l = labels(id);
        self.configure(id, info);
        self.effective_interval.get_or_create(&l).set(info.interval_seconds);
        for family in [&self.paused, &self.child_peak_rss, &self.api_calls_last_minute] {
            let _ = family.get_or_create(&l);
        }
        let _ = self.child_cpu.get_or_create(&l);
        for reason in SkipReason::ALL {
            let _ = self.skipped.get_or_create(&SkipLabels {
                process: id.into(),
                reason,
            });
        }
        for &kind in info.error_kinds {
            let _ = self.errors.get_or_create(&ErrorLabels {
                process: id.into(),
                kind,
            });
        }
        self.series(id)
    }

    /// Shows changed settings (a live override or a reload).
    pub fn configure(&self, id: &str, info: &ProcessInfo) {
        let l = labels(id);
        self.enabled.get_or_create(&l).set(info.enabled as i64);
        self.interval.get_or_create(&l).set(info.interval_seconds);
        self.timeout.get_or_create(&l).set(info.timeout_seconds);
        self.priority.get_or_create(&l).set(info.priority as i64);
        self.retry_count.get_or_create(&l).set(info.retry_count as i64);
        self.api_limit
            .get_or_create(&l)
            .set(info.max_api_calls_per_minute as i64);
    }

    /// Drops every series of a process taken out of the configuration.
    pub fn remove(&self, id: &str, error_kinds: &[&'static str]) {
        let l = labels(id);
        for family in [
            &self.enabled,
            &self.priority,
            &self.retry_count,
            &self.running,
            &self.paused,
            &self.consecutive_failures,
            &self.child_peak_rss,
            &self.api_calls_last_minute,
            &self.api_limit,
            &self.up,
        ] {
            family.remove(&l);
        }
        for family in [
            &self.interval,
            &self.effective_interval,
            &self.timeout,
            &self.last_run,
            &self.last_success,
            &self.last_error,
            &self.last_event,
        ] {
            family.remove(&l);
        }
        self.retries.remove(&l);
        self.restarts.remove(&l);
        self.child_cpu.remove(&l);
        self.duration.remove(&l);
        self.lag.remove(&l);
        for outcome in [Outcome::success, Outcome::error, Outcome::timeout] {
            self.runs.remove(&RunLabels {
                process: id.into(),
                outcome,
            });
        }
        for reason in SkipReason::ALL {
            self.skipped.remove(&SkipLabels {
                process: id.into(),
                reason,
            });
        }
        for &kind in error_kinds {
            self.errors.remove(&ErrorLabels {
                process: id.into(),
                kind,
            });
        }
    }

    /// The hot series of a process (created if needed).
    pub fn series(&self, id: &str) -> ProcessSeries {
        let l = labels(id);
        let run = |outcome| {
            self.runs
                .get_or_create(&RunLabels {
                    process: id.into(),
                    outcome,
                })
                .clone()
        };
        ProcessSeries {
            success: run(Outcome::success),
            error: run(Outcome::error),
            timeout: run(Outcome::timeout),
            duration: self.duration.get_or_create(&l).clone(),
            lag: self.lag.get_or_create(&l).clone(),
            running: self.running.get_or_create(&l).clone(),
            last_run: self.last_run.get_or_create(&l).clone(),
            last_success: self.last_success.get_or_create(&l).clone(),
            last_error: self.last_error.get_or_create(&l).clone(),
            consecutive_failures: self.consecutive_failures.get_or_create(&l).clone(),
            retries: self.retries.get_or_create(&l).clone(),
            up: self.up.get_or_create(&l).clone(),
            restarts: self.restarts.get_or_create(&l).clone(),
            last_event: self.last_event.get_or_create(&l).clone(),
            effective_interval: self.effective_interval.get_or_create(&l).clone(),
        }
    }

    pub fn skipped(&self, id: &str, reason: SkipReason, count: u64) {
        self.skipped
            .get_or_create(&SkipLabels {
                process: id.into(),
                reason,
            })
            .inc_by(count);
    }

    pub fn paused(&self, id: &str, paused: bool) {
        self.paused.get_or_create(&labels(id)).set(paused as i64);
    }

    /// The sliding-minute call count of a process (refreshed at scrape time).
    pub fn api_calls_last_minute(&self, id: &str, calls: u32) {
        self.api_calls_last_minute.get_or_create(&labels(id)).set(calls as i64);
    }

    /// Records a finished run in every series it touches.
    pub fn finished(&self, series: &ProcessSeries, run: FinishedRun<'_>) {
        match run.outcome {
            Outcome::success => series.success.inc(),
            Outcome::error => series.error.inc(),
            Outcome::timeout => series.timeout.inc(),
        };
        series.duration.observe(
            run.duration_seconds,
            run.trace_id.map(|trace_id| TraceLabels { trace_id }),
            None,
        );
        if let Some(lag) = run.lag_seconds {
            series.lag.observe(lag);
        }
        if let Some((cpu, rss)) = run.child {
            let l = labels(run.process);
            self.child_cpu.get_or_create(&l).inc_by(cpu);
            self.child_peak_rss.get_or_create(&l).set(rss as i64);
        }
        let now = crate::clock::unix_seconds();
        series.last_run.set(now);
        match run.error_kind {
            None => {
                series.last_success.set(now);
                series.consecutive_failures.set(0);
            }
            Some(kind) => {
                series.last_error.set(now);
                series.consecutive_failures.inc();
                self.errors
                    .get_or_create(&ErrorLabels {
                        process: run.process.to_string(),
                        kind,
                    })
                    .inc();
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
        self.running.set(running as i64);
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    pub fn up(&self, up: bool) {
        self.up.set(up as i64);
    }

    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// The interval the process is on now (seconds).
    pub fn effective_interval(&self, seconds: f64) {
        self.effective_interval.set(seconds);
    }

    /// When a continuous run last received something (ms; 0 = never, left as is).
    pub fn last_event_ms(&self, at_ms: i64) {
        if at_ms > 0 {
            self.last_event.set(at_ms as f64 / 1000.0);
        }
    }
}
