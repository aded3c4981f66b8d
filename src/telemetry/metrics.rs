//! Prometheus metrics: one registry, typed label sets, bounded label values.
//!
//! Business code never touches this module directly; the scheduler and the
//! HTTP layer record through the small methods below.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::process::ErrorKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub process: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    success,
    error,
    timeout,
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

/// One process's hot series, resolved once, so recording a run neither
/// allocates label sets nor looks them up.
#[derive(Clone)]
pub struct ProcessSeries {
    pub success: Counter,
    pub error: Counter,
    pub timeout: Counter,
    pub duration: DurationHistogram,
    pub lag: Histogram,
    pub running: Gauge,
    pub last_run: F64Gauge,
    pub last_success: F64Gauge,
    pub last_error: F64Gauge,
    pub consecutive_failures: Gauge,
}

pub struct Metrics {
    pub registry: Registry,
    pub enabled: Family<ProcessLabels, Gauge>,
    pub interval: Family<ProcessLabels, F64Gauge>,
    pub timeout: Family<ProcessLabels, F64Gauge>,
    pub priority: Family<ProcessLabels, Gauge>,
    pub retry_count: Family<ProcessLabels, Gauge>,
    pub running: Family<ProcessLabels, Gauge>,
    pub paused: Family<ProcessLabels, Gauge>,
    pub runs: Family<RunLabels, Counter>,
    pub skipped: Family<SkipLabels, Counter>,
    pub retries: Family<ProcessLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ProcessLabels, DurationHistogram>,
    pub lag: Family<ProcessLabels, Histogram>,
    pub last_run: Family<ProcessLabels, F64Gauge>,
    pub last_success: Family<ProcessLabels, F64Gauge>,
    pub last_error: Family<ProcessLabels, F64Gauge>,
    pub consecutive_failures: Family<ProcessLabels, Gauge>,
    pub child_cpu: Family<ProcessLabels, Counter<f64, AtomicU64>>,
    pub child_peak_rss: Family<ProcessLabels, Gauge>,
    pub api_calls_last_minute: Family<ProcessLabels, Gauge>,
    pub api_limit: Family<ProcessLabels, Gauge>,
    pub scheduler_enabled: Gauge,
    pub api: super::api::ApiMetrics,
    pub domain: super::domain::DomainMetrics,
    pub ha: super::ha::HaMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("script_manager");
        registry.register(
            "build",
            "Build information: version of the running binary",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let m = Metrics {
            registry: Registry::default(),
            enabled: Family::default(),
            interval: Family::default(),
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
            scheduler_enabled: Gauge::default(),
            api: super::api::ApiMetrics::new(),
            domain: super::domain::DomainMetrics::new(),
            ha: super::ha::HaMetrics::default(),
        };
        registry.register(
            "scheduler_enabled",
            "1 when the scheduler runs processes (SCRIPT_MANAGER_ENABLED)",
            m.scheduler_enabled.clone(),
        );
        let p = registry.sub_registry_with_prefix("process");
        p.register(
            "enabled",
            "1 if the process is enabled in the configuration",
            m.enabled.clone(),
        );
        p.register_with_unit(
            "interval",
            "Configured interval between ticks",
            Unit::Seconds,
            m.interval.clone(),
        );
        p.register_with_unit(
            "timeout",
            "Configured timeout of one attempt",
            Unit::Seconds,
            m.timeout.clone(),
        );
        p.register("priority", "Configured priority (1 = highest)", m.priority.clone());
        p.register(
            "max_retries",
            "Configured number of retries after a failed attempt",
            m.retry_count.clone(),
        );
        p.register(
            "running",
            "1 while a run of the process is executing",
            m.running.clone(),
        );
        p.register(
            "paused",
            "1 while the process is paused by an operator",
            m.paused.clone(),
        );
        p.register("runs", "Finished runs by outcome", m.runs.clone());
        p.register(
            "skipped_runs",
            "Ticks that did not start a run, by reason",
            m.skipped.clone(),
        );
        p.register("retries", "Attempts beyond the first", m.retries.clone());
        p.register("errors", "Failed runs by error kind", m.errors.clone());
        p.register_with_unit(
            "run_duration",
            "Wall time of a run, all attempts included",
            Unit::Seconds,
            m.duration.clone(),
        );
        p.register_with_unit(
            "schedule_lag",
            "Actual start minus scheduled start of a run",
            Unit::Seconds,
            m.lag.clone(),
        );
        p.register(
            "last_run_timestamp_seconds",
            "Unix time the last run finished",
            m.last_run.clone(),
        );
        p.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run",
            m.last_success.clone(),
        );
        p.register(
            "last_error_timestamp_seconds",
            "Unix time of the last failed run",
            m.last_error.clone(),
        );
        p.register(
            "consecutive_failures",
            "Failed runs since the last success",
            m.consecutive_failures.clone(),
        );
        p.register_with_unit(
            "child_cpu",
            "CPU time used by the process's child programs (command kind)",
            Unit::Seconds,
            m.child_cpu.clone(),
        );
        p.register_with_unit(
            "child_peak_rss",
            "Peak resident memory of the last child program (command kind)",
            Unit::Bytes,
            m.child_peak_rss.clone(),
        );
        let api = registry.sub_registry_with_prefix("api");
        api.register(
            "calls_last_minute",
            "Exchange API calls the process made in the sliding last minute",
            m.api_calls_last_minute.clone(),
        );
        api.register(
            "limit_calls_per_minute",
            "Configured API calls per minute allowed to the process",
            m.api_limit.clone(),
        );
        m.api.register(api);
        m.domain.register(registry);
        m.ha.register(registry);
        super::resources::register(registry);
        Metrics { registry: root, ..m }
    }

    /// Creates every series of a configured process, so dashboards and alerts see zeros from start-up.
    pub fn init_process(&self, id: &str, cfg: &crate::config::ProcessConfig) {
        let l = labels(id);
        let _ = self.enabled.get_or_create(&l).set(cfg.enabled as i64);
        let _ = self.interval.get_or_create(&l).set(cfg.interval_seconds);
        let _ = self.timeout.get_or_create(&l).set(cfg.timeout_seconds);
        let _ = self.priority.get_or_create(&l).set(cfg.priority as i64);
        let _ = self.retry_count.get_or_create(&l).set(cfg.retry_count as i64);
        let _ = self
            .api_limit
            .get_or_create(&l)
            .set(cfg.max_api_calls_per_minute as i64);
        for family in [
            &self.running,
            &self.paused,
            &self.consecutive_failures,
            &self.api_calls_last_minute,
            &self.child_peak_rss,
        ] {
            let _ = family.get_or_create(&l);
        }
        for family in [&self.last_run, &self.last_success, &self.last_error] {
            let _ = family.get_or_create(&l);
        }
        for outcome in [Outcome::success, Outcome::error, Outcome::timeout] {
            let _ = self.runs.get_or_create(&RunLabels {
                process: id.into(),
                outcome,
            });
        }
        for reason in [SkipReason::overlap, SkipReason::missed, SkipReason::paused] {
            let _ = self.skipped.get_or_create(&SkipLabels {
                process: id.into(),
                reason,
            });
        }
        for kind in ErrorKind::ALL {
            let _ = self.errors.get_or_create(&ErrorLabels {
                process: id.into(),
                kind: kind.as_str(),
            });
        }
        let _ = self.retries.get_or_create(&l);
        let _ = self.child_cpu.get_or_create(&l);
        let _ = self.duration.get_or_create(&l);
        let _ = self.lag.get_or_create(&l);
        self.api.init_process(id);
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
        }
    }

    pub fn skip(&self, id: &str, reason: SkipReason, count: u64) {
        self.skipped
            .get_or_create(&SkipLabels {
                process: id.into(),
                reason,
            })
            .inc_by(count);
    }

    /// Prometheus text 0.0.4 (what most scrapers ask for by default).
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// OpenMetrics 1.0 text, with exemplars.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn labels(id: &str) -> ProcessLabels {
    ProcessLabels {
        process: id.to_string(),
    }
}

/// Seconds since the Unix epoch, for `_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
