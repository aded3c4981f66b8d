//! The one interface every process implements, and what a run gets and returns.
//!
//! The scheduler knows nothing about what a process does: it hands a
//! [`RunContext`] to [`Process::run`] and records the [`RunReport`] or
//! [`ProcessError`] that comes back, as a [`RunRecord`].
//!
//! Owns: the `Process` trait, what a run gets (`RunContext`, the `Fence` its
//! writes carry) and what it reports. Imports only `budget` (callers and the
//! per-process call count) and `clock`; the store and scheduler import this.

mod fence;
mod record;

pub use fence::{Fence, Fenced};
pub use record::{RunLease, RunRecord};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::{Caller, ProcessCalls};

/// A unit of periodic work. One implementation per file under `processes/`.
pub trait Process: Send + Sync + 'static {
    /// Does the work of one attempt. It should return soon after
    /// `ctx.cancel` fires (the attempt timed out or the service is stopping).
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>>;
}

/// What caused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
    /// A chained process (`after`): every process it follows succeeded since it last started.
    After,
    /// A chained process whose deadline (`interval_seconds`) passed before they all did.
    Deadline,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::After => "after",
            Trigger::Deadline => "deadline",
        }
    }
}

/// Everything one attempt may use.
#[derive(Clone)]
pub struct RunContext {
    pub process_id: Arc<str>,
    pub trigger: Trigger,
    /// The process's priority (1 = highest), for budget admission.
    pub priority: u8,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// When this attempt times out.
    pub deadline: Instant,
    /// Fires when the attempt must stop (timeout or shutdown).
    pub cancel: CancellationToken,
    pub budget: Arc<ProcessCalls>,
    /// The condition on every store write of this run (the lease token under HA).
    pub fence: Fence,
    /// What the attempt reports as it goes, read by the scheduler whatever the outcome.
    pub usage: Arc<RunUsage>,
}

/// Resources a run used, collected while it runs so failed runs report them too.
#[derive(Debug, Default)]
pub struct RunUsage {
    api_calls: AtomicU32,
    child: Mutex<Option<ChildUsage>>,
    /// When a continuous run last received something (ms since the epoch; 0 = never).
    last_event_ms: std::sync::atomic::AtomicI64,
}

/// CPU time and peak memory of a child program (from `wait4`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChildUsage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

impl RunUsage {
    pub fn api_calls(&self) -> u32 {
        self.api_calls.load(Ordering::Relaxed)
    }

    pub fn record_child(&self, usage: ChildUsage) {
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
    }

    pub fn child(&self) -> Option<ChildUsage> {
        *self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something arrived just now (a continuous run's sign of life).
    pub fn event(&self) {
        self.last_event_ms.store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    pub fn last_event_ms(&self) -> i64 {
        self.last_event_ms.load(Ordering::Relaxed)
    }
}

impl RunContext {
    /// Records exchange API calls made by this process (the seed's `track_api_call`).
    pub fn track_api_calls(&self, count: u32) {
        self.usage.api_calls.fetch_add(count, Ordering::Relaxed);
        self.budget.track_api_call(&self.process_id, count);
    }

    /// Who this attempt is, for the exchange budget; cached answers up to `max_age` old are fine.
    pub fn caller(&self, max_age: Option<std::time::Duration>) -> Caller {
        Caller {
            process: self.process_id.to_string(),
            priority: self.priority,
            deadline: self.deadline,
            max_age,
        }
    }

    /// The seed's `can_make_api_calls`: whether `count` more calls fit this process's limit.
    pub fn can_make_api_calls(&self, count: u32) -> bool {
        self.budget.can_make_api_calls(&self.process_id, count)
    }
}

/// What a successful attempt reports back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// A short human summary ("12 trades synced").
    pub summary: Option<String>,
}

/// Bounded set of failure kinds; used as the `kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The attempt ran past its timeout.
    Timeout,
    /// The process panicked.
    Panic,
    /// The service stopped while the run was in flight.
    Cancelled,
    /// A command could not be started.
    Spawn,
    /// A command exited with a non-zero status.
    ExitStatus,
    /// A command was killed by a signal it did not get from us.
    Signal,
    /// No API budget left before the run's deadline.
    BudgetExhausted,
    /// The exchange failed or refused (see `script_manager_api_errors_total` for the kind).
    Upstream,
    /// The store failed.
    Store,
    /// A write was refused because another replica took over the lease (HA).
    Fenced,
    /// Anything else a process reports.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Timeout,
        ErrorKind::Panic,
        ErrorKind::Cancelled,
        ErrorKind::Spawn,
        ErrorKind::ExitStatus,
        ErrorKind::Signal,
        ErrorKind::BudgetExhausted,
        ErrorKind::Upstream,
        ErrorKind::Store,
        ErrorKind::Fenced,
        ErrorKind::Internal,
    ];

    /// Every kind's label value, for series that must exist from start-up.
    pub const NAMES: [&'static str; 11] = {
        let mut names = [""; 11];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ALL[i].as_str();
            i += 1;
        }
        names
    };

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Panic => "panic",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Spawn => "spawn",
            ErrorKind::ExitStatus => "exit_status",
            ErrorKind::Signal => "signal",
            ErrorKind::BudgetExhausted => "budget_exhausted",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Store => "store",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Internal => "internal",
        }
    }
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessError {
    pub kind: ErrorKind,
    pub message: String,
    /// Whether trying again could help (a flaky network, not a missing binary).
    pub retriable: bool,
}

impl ProcessError {
    pub fn new(kind: ErrorKind, message: impl Into<String>, retriable: bool) -> Self {
        ProcessError {
            kind,
            message: message.into(),
            retriable,
        }
    }

    pub fn retriable(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(kind, message, true)
    }

    pub fn permanent(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(kind, message, false)
    }
}

impl std::fmt::Display for ProcessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for ProcessError {}
