//! What a finished run was: the record the scheduler keeps in memory,
//! the store writes to its history and `/api/script-manager/runs` serves.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::{ErrorKind, Trigger};

/// One finished run, as served by `/api/script-manager/runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub process: Arc<str>,
    pub trigger: Trigger,
    #[serde(serialize_with = "crate::clock::serialize_rfc3339")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "crate::clock::serialize_rfc3339")]
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
