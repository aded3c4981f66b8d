//! One run of one process: the claim (HA), attempts with a timeout each,
//! retries with backoff, panic isolation, and the run's span. What is
//! recorded afterwards is in `record.rs`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{Instrument, field};

use super::state::ProcessHandle;
use super::{CANCEL_GRACE, Scheduler};
use crate::backoff::Backoff;
use crate::config::ProcessConfig;
use crate::process::{ErrorKind, Fence, ProcessError, RunContext, RunLease, RunReport, RunUsage, Trigger};
use crate::telemetry::otel;
use crate::telemetry::process::Outcome;

/// The outcome of a whole run (all attempts).
pub(super) struct Finished {
    pub result: Result<RunReport, ProcessError>,
    pub attempts: u32,
    pub usage: Arc<RunUsage>,
}

impl Scheduler {
    /// One run of `p`; `false` when it did not run because another replica
    /// holds it (HA).
    pub(super) async fn execute(
        self: Arc<Self>,
        p: Arc<ProcessHandle>,
        trigger: Trigger,
        scheduled: Instant,
        next_tick: Instant,
    ) -> bool {
        let config = p.config();
        let Some((lease, fence)) = self.claim(&p, &config, trigger).await else {
            p.end();
            self.after_run(&p, false);
            return false;
        };
        if p.continuous() && trigger != Trigger::Schedule {
            // Started again here after a run of its own ended (or was restarted).
            p.stats().restarts += 1;
            p.series().restarted();
        }
        if config.chained() {
            self.chain_started(&p);
        }
        p.series().running(true);
        self.emit(&p.id, "started", serde_json::json!({"trigger": trigger.as_str()}));
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let lag = if trigger == Trigger::Schedule {
            started.duration_since(scheduled)
        } else {
            Duration::ZERO
        };
        let span = tracing::info_span!(
            parent: None,
            "run",
            otel.name = format!("run {}", p.id),
            "process.id" = %p.id,
            "run.trigger" = trigger.as_str(),
            "run.attempts" = field::Empty,
            "run.outcome" = field::Empty,
            otel.status_code = field::Empty,
            trace_id = field::Empty,
        );
        let trace_id = otel::trace_id(&span);
        if let Some(id) = &trace_id {
            span.record("trace_id", id.as_str());
        }
        let finished = self
            .attempts(&p, &config, trigger, next_tick, &fence)
            .instrument(span.clone())
            .await;
        let duration = started.elapsed();
        // Bookkeeping (metrics, history, the store's queue) waits behind the
        // runs that fell due with this one: when thousands start at one
        // instant, none of them waits for the others' records.
        tokio::task::yield_now().await;
        let outcome = match &finished.result {
            Ok(_) => Outcome::success,
            Err(e) if e.kind == ErrorKind::Timeout => Outcome::timeout,
            Err(_) => Outcome::error,
        };
        span.record("run.attempts", finished.attempts);
        span.record("run.outcome", outcome.as_str());
        span.record(
            "otel.status_code",
            if outcome == Outcome::success { "OK" } else { "ERROR" },
        );
        let _enter = span.enter();
        match &finished.result {
            Ok(report) => tracing::debug!(
                duration_s = duration.as_secs_f64(),
                summary = report.summary.as_deref().unwrap_or(""),
                "run succeeded"
            ),
            Err(e) => {
                tracing::warn!(duration_s = duration.as_secs_f64(), kind = e.kind.as_str(), error = %e.message, "run failed")
            }
        }
        drop(_enter);
        self.record(
            &p,
            lease,
            trigger,
            finished,
            (started_wall, duration, lag, outcome),
            trace_id,
        );
        p.series().running(false);
        p.end();
        self.after_run(&p, outcome == Outcome::success);
        if let Some(ha) = self.ha.get() {
            ha.finished(&p.id, !self.group_busy(&p)).await;
        }
        true
    }

    /// Under HA, wins the lease of this tick first (`None`: it runs elsewhere),
    /// and returns the fence the run's writes carry.
    async fn claim(
        &self,
        p: &ProcessHandle,
        config: &ProcessConfig,
        trigger: Trigger,
    ) -> Option<(Option<RunLease>, Fence)> {
        let Some(ha) = self.ha.get() else {
            return Some((None, Fence::none()));
        };
        let offset = Duration::from_secs_f64(config.start_offset_seconds);
        let (interval, timeout) = (seconds(config.interval_seconds), seconds(config.timeout_seconds));
        // A continuous or chained run holds the lease, not a tick of a grid.
        let manual = trigger != Trigger::Schedule || p.continuous();
        let granted = ha.claim(&p.id, timeout, (interval, offset), manual).await?;
        let lease = RunLease {
            replica: ha.replica(),
            slot: granted.slot,
            token: granted.token,
        };
        let key = granted.key.unwrap_or_else(|| p.id.clone());
        Some((Some(lease), Fence::lease(key, granted.token)))
    }

    /// Runs attempts until one succeeds, a failure is final, or a retry could not finish before `next_tick`.
    async fn attempts(
        &self,
        p: &ProcessHandle,
        config: &ProcessConfig,
        trigger: Trigger,
        next_tick: Instant,
        fence: &Fence,
    ) -> Finished {
        let usage = Arc::new(RunUsage::default());
        let mut attempt = 1;
        loop {
            let span = tracing::info_span!(
                "attempt",
                otel.name = format!("attempt {attempt}"),
                "run.attempt" = attempt,
                "run.outcome" = field::Empty,
                span_id = field::Empty,
            );
            if let Some(id) = otel::span_id(&span) {
                span.record("span_id", id.as_str());
            }
            let result = self
                .attempt(p, config, trigger, attempt, &usage, fence)
                .instrument(span.clone())
                .await;
            span.record("run.outcome", if result.is_ok() { "success" } else { "error" });
            // A continuous run is restarted by its supervisor, not retried.
            if p.continuous() {
                return Finished {
                    result,
                    attempts: attempt,
                    usage: usage.clone(),
                };
            }
            let Err(error) = &result else {
                return Finished {
                    result,
                    attempts: attempt,
                    usage: usage.clone(),
                };
            };
            let retries_left = attempt <= config.retry_count;
            if !(error.retriable && retries_left) || self.cancel_runs.is_cancelled() {
                return Finished {
                    result,
                    attempts: attempt,
                    usage: usage.clone(),
                };
            }
            let backoff = backoff(config.retry_backoff_seconds, attempt);
            if Instant::now() + backoff + seconds(config.timeout_seconds) > next_tick {
                tracing::debug!(
                    kind = error.kind.as_str(),
                    "no retry: it could not finish before the next tick"
                );
                return Finished {
                    result,
                    attempts: attempt,
                    usage: usage.clone(),
                };
            }
            tracing::info!(kind = error.kind.as_str(), error = %error.message, backoff_s = backoff.as_secs_f64(), "attempt failed; retrying");
            p.series().retried();
            tokio::select! {
                _ = sleep(backoff) => {}
                _ = self.cancel_runs.cancelled() => return Finished { result, attempts: attempt, usage: usage.clone() },
            }
            attempt += 1;
        }
    }

    /// One attempt under its timeout, with panics turned into errors.
    async fn attempt(
        &self,
        p: &ProcessHandle,
        config: &ProcessConfig,
        trigger: Trigger,
        attempt: u32,
        usage: &Arc<RunUsage>,
        fence: &Fence,
    ) -> Result<RunReport, ProcessError> {
        let Some(process) = &p.process else {
            return Err(ProcessError::permanent(
                ErrorKind::Internal,
                "no implementation for this kind",
            ));
        };
        if p.continuous() {
            return self.continuous_attempt(p, process, trigger, usage, fence).await;
        }
        let timeout = seconds(config.timeout_seconds);
        let deadline = Instant::now() + timeout;
        let ctx = RunContext {
            process_id: p.id.clone(),
            trigger,
            priority: config.priority,
            attempt,
            deadline,
            // Its own token (no parent to lock on every run): shutdown reaches
            // it through the select below, which cancels it.
            cancel: tokio_util::sync::CancellationToken::new(),
            budget: self.budget.clone(),
            usage: usage.clone(),
            fence: fence.clone(),
        };
        let cancel = ctx.cancel.clone();
        let work = AssertUnwindSafe(process.run(ctx)).catch_unwind();
        tokio::pin!(work);
        // Biased: work that is done at once (most runs) never arms the timer.
        let stopped = tokio::select! {
            biased;
            result = &mut work => return caught(result),
            _ = sleep_until(deadline) => ProcessError::retriable(ErrorKind::Timeout, format!("timed out after {:.3}s", timeout.as_secs_f64())),
            _ = self.cancel_runs.cancelled() => ProcessError::permanent(ErrorKind::Cancelled, "cancelled: the service is shutting down"),
        };
        // Give the process a moment to clean up (kill its child, roll back) before dropping it.
        cancel.cancel();
        let _ = tokio::time::timeout(CANCEL_GRACE, &mut work).await;
        Err(stopped)
    }
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Turns a caught panic into the run's error.
pub(super) fn caught(result: std::thread::Result<Result<RunReport, ProcessError>>) -> Result<RunReport, ProcessError> {
    result.unwrap_or_else(|panic| Err(panic_error(panic)))
}

/// The wait before retry `attempt`: the shared backoff from `retry_backoff_seconds`
/// (jittered, so retrying processes do not move in lockstep).
fn backoff(base_seconds: f64, attempt: u32) -> Duration {
    let base = Duration::from_secs_f64(base_seconds);
    Backoff::new(base, base.saturating_mul(1 << 16)).wait(attempt)
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> ProcessError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into());
    ProcessError::permanent(ErrorKind::Panic, format!("panicked: {message}"))
}
