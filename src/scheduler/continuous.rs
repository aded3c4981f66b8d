//! Continuous processes (`mode = "continuous"`): one long run, started at
//! boot and started again with backoff and jitter whenever it ends or fails,
//! never two at once. A trigger restarts it at once (a reconnect), a pause
//! stops it until resumed. Under HA the run holds its process's lease (renewed
//! by the heartbeat while it runs); a replica that can no longer prove it
//! holds the lease stops its copy, and waits for the lease to come back.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use super::execute::caught;
use super::state::ProcessHandle;
use super::{CANCEL_GRACE, Scheduler};
use crate::backoff::Backoff;
use crate::process::{ErrorKind, Fence, Process, ProcessError, RunContext, RunReport, RunUsage, Trigger};

/// A run this long was healthy: the next restart starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// The longest wait between two restarts.
const MAX_RESTART_WAIT: Duration = Duration::from_secs(30);
/// How often a running continuous process's lease (HA) and last event are checked.
const WATCH_EVERY: Duration = Duration::from_secs(1);

impl Scheduler {
    /// Keeps `p` running until the service stops.
    pub(super) async fn supervise(self: Arc<Self>, p: Arc<ProcessHandle>) {
        let mut quick_failures: u32 = 0;
        let mut first = true;
        loop {
            if self.stop_ticking.is_cancelled() {
                return;
            }
            if p.is_paused() || !p.config().enabled || p.is_removed() || !p.try_begin() {
                if p.is_removed() {
                    return;
                }
                tokio::select! {
                    _ = p.wake.notified() => {}
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = self.stop_ticking.cancelled() => return,
                }
                continue;
            }
            let trigger = if first { Trigger::Schedule } else { Trigger::Manual };
            let started = Instant::now();
            if !self.clone().execute(p.clone(), trigger, started, started).await {
                // Another replica holds it (HA): not a failure, so no backoff.
                // Look again shortly, so that a hand-over or a failover to
                // this replica leaves the stream down for about a second.
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = p.wake.notified() => {}
                    _ = self.stop_ticking.cancelled() => return,
                }
                continue;
            }
            first = false;
            let restart_now = p.restart_requested.swap(false, std::sync::atomic::Ordering::AcqRel);
            if started.elapsed() >= HEALTHY_RUN {
                quick_failures = 0;
            } else {
                quick_failures = quick_failures.saturating_add(1);
            }
            if restart_now {
                continue;
            }
            let wait = restart_wait(quick_failures);
            tracing::info!(process = %p.id, wait_s = wait.as_secs_f64(), "continuous process ended; restarting");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = p.wake.notified() => {}
                _ = self.stop_ticking.cancelled() => return,
            }
        }
    }

    /// The one attempt of a continuous run: no timeout, stopped by a trigger,
    /// a pause, the lease moving elsewhere (HA) or the service stopping.
    pub(super) async fn continuous_attempt(
        &self,
        p: &ProcessHandle,
        process: &Arc<dyn Process>,
        trigger: Trigger,
        usage: &Arc<RunUsage>,
        fence: &Fence,
    ) -> Result<RunReport, ProcessError> {
        let cancel = self.cancel_runs.child_token();
        *p.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(cancel.clone());
        let ctx = RunContext {
            process_id: p.id.clone(),
            trigger,
            priority: p.config().priority,
            attempt: 1,
            // A long run: its calls are bounded by their own timeouts, not the run's.
            deadline: Instant::now() + Duration::from_secs(365 * 86_400),
            cancel: cancel.clone(),
            budget: self.budget.clone(),
            usage: usage.clone(),
            fence: fence.clone(),
        };
        p.series().up(true);
        let work = AssertUnwindSafe(process.run(ctx)).catch_unwind();
        tokio::pin!(work);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        let stopped = loop {
            tokio::select! {
                result = &mut work => break Ok(caught(result)),
                _ = watch.tick() => {
                    note_event(p, usage);
                    if let Some(ha) = self.ha.get() && !ha.holds(&p.id) {
                        break Err(ProcessError::permanent(ErrorKind::Cancelled, "the lease moved to another replica"));
                    }
                    if let Some(ha) = self.ha.get() && ha.should_hand_over(&p.id) {
                        break Err(ProcessError::permanent(ErrorKind::Cancelled, "handed over: another replica's fair share"));
                    }
                }
                _ = cancel.cancelled() => break Err(match self.stop_ticking.is_cancelled() {
                    true => ProcessError::permanent(ErrorKind::Cancelled, "cancelled: the service is shutting down"),
                    false => ProcessError::permanent(ErrorKind::Cancelled, "stopped: triggered to restart, or paused"),
                }),
            }
        };
        *p.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        p.series().up(false);
        note_event(p, usage);
        match stopped {
            Ok(result) => result,
            Err(error) => {
                cancel.cancel();
                let _ = tokio::time::timeout(CANCEL_GRACE, &mut work).await;
                Err(error)
            }
        }
    }
}

/// Copies the run's last event time to its gauge and the status document.
fn note_event(p: &ProcessHandle, usage: &RunUsage) {
    let at = usage.last_event_ms();
    if at > 0 {
        p.series().last_event_ms(at);
        p.stats().last_event = Some(crate::clock::from_ms(at));
    }
}

/// Backoff after `failures` runs in a row that ended quickly: 0.5 s doubling
/// to 30 s, plus up to 50 % jitter so replicas and streams do not reconnect in lockstep.
fn restart_wait(failures: u32) -> Duration {
    Backoff::new(Duration::from_millis(500), MAX_RESTART_WAIT).wait(failures)
}
