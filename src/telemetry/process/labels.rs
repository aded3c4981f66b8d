//! What callers speak to the per-process metrics in: the closed label sets
//! (outcomes, skip reasons), the label sets other families key a process by,
//! and the inputs (a process's settings, a finished run). Kept apart so the
//! scheduler and the other families depend on these small types, not on how
//! rows are stored or printed; every value here is bounded, which is what
//! keeps the label sets bounded.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

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

/// Every outcome, in the order of a row's `runs`.
pub(super) const OUTCOMES: [Outcome; 3] = [Outcome::success, Outcome::error, Outcome::timeout];
