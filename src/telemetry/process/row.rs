//! The storage: one row of atomics per process, and the handle
//! ([`ProcessSeries`]) a live process updates its own series through. Kept
//! apart from the families (`families.rs`), which say how each field is
//! printed, and from the registry (`mod.rs`), which finds and records rows:
//! recording a run touches only its row (atomics, and a small lock for
//! the error kinds), never the registry's lock or a label set.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::super::exposition::{AtomicF64, Buckets, Histogram};

/// Every series of one process.
pub(super) struct Row {
    /// `process="<id>"`, rendered once.
    pub(super) labels: String,
    pub(super) enabled: AtomicI64,
    pub(super) interval: AtomicF64,
    pub(super) effective_interval: AtomicF64,
    pub(super) timeout: AtomicF64,
    pub(super) priority: AtomicI64,
    pub(super) retry_count: AtomicI64,
    pub(super) running: AtomicI64,
    pub(super) paused: AtomicI64,
    /// By [`Outcome`], in its order.
    pub(super) runs: [AtomicU64; 3],
    /// By [`SkipReason::ALL`], in its order.
    pub(super) skipped: [AtomicU64; 4],
    pub(super) retries: AtomicU64,
    /// By error kind: the known kinds from the start, others as they come.
    pub(super) errors: Mutex<Vec<(&'static str, u64)>>,
    pub(super) duration: Histogram,
    pub(super) lag: Histogram,
    pub(super) last_run: AtomicF64,
    pub(super) last_success: AtomicF64,
    pub(super) last_error: AtomicF64,
    pub(super) consecutive_failures: AtomicI64,
    pub(super) child_cpu: AtomicF64,
    pub(super) child_peak_rss: AtomicI64,
    pub(super) api_calls_last_minute: AtomicI64,
    pub(super) api_limit: AtomicI64,
    pub(super) up: AtomicI64,
    pub(super) restarts: AtomicU64,
    pub(super) last_event: AtomicF64,
}

impl Row {
    /// A row of zeros for process `id`, its labels rendered once.
    pub(super) fn new(id: &str, duration_buckets: &Arc<Buckets>, lag_buckets: &Arc<Buckets>) -> Row {
        Row {
            labels: super::super::exposition::label("process", id),
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
            duration: Histogram::new(duration_buckets.clone(), true),
            lag: Histogram::new(lag_buckets.clone(), false),
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
        }
    }
}

/// One process's series, resolved once, so recording a run neither
/// allocates label sets nor looks them up.
#[derive(Clone)]
pub struct ProcessSeries(pub(super) Arc<Row>);

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
