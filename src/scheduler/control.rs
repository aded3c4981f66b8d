//! What an operator (or the service's own shutdown) asks of the scheduler:
//! run a process now, pause and resume it, stop everything gracefully. Each
//! is checked against the process's state, its links and, under HA, who
//! holds it, and refused with a reason the HTTP layer can answer with.
//! Apart from the timetable (`ticks.rs`) because these are rare, checked
//! requests from outside, not the tick path.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{CANCEL_GRACE, Scheduler, links};
use crate::process::Trigger;

/// Why a manual trigger was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerError {
    UnknownProcess,
    AlreadyRunning,
    Disabled,
    Unavailable,
    SchedulerDisabled,
    ShuttingDown,
    /// Under HA: another replica holds the process's lease (its name).
    HeldElsewhere(String),
    /// A process it is exclusive with is running (its id).
    PeerRunning(String),
}

/// What happened to the runs in flight at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    pub in_flight: usize,
    /// Whether runs had to be cancelled because the grace period ran out.
    pub cancelled: bool,
}

impl Scheduler {
    /// Runs a process now, outside its schedule. Refused while it is running.
    pub fn trigger(self: &Arc<Self>, id: &str) -> Result<(), TriggerError> {
        let p = self.process(id).ok_or(TriggerError::UnknownProcess)?;
        if self.stop_ticking.is_cancelled() {
            return Err(TriggerError::ShuttingDown);
        }
        if !self.enabled {
            return Err(TriggerError::SchedulerDisabled);
        }
        if p.process.is_none() {
            return Err(TriggerError::Unavailable);
        }
        if !p.config().enabled {
            return Err(TriggerError::Disabled);
        }
        if let Some(ha) = self.ha.get()
            && !ha.holds(id)
        {
            if let Some(holder) = ha.holder(id).filter(|h| !h.expired && *h.replica != *ha.replica()) {
                return Err(TriggerError::HeldElsewhere(holder.replica));
            }
            if let Some(owner) = ha.owner(id).filter(|o| *o != *ha.replica()) {
                return Err(TriggerError::HeldElsewhere(owner));
            }
        }
        if p.continuous() {
            // A trigger reconnects: the run in progress stops and starts again at once.
            p.restart_requested.store(true, std::sync::atomic::Ordering::Release);
            if !p.interrupt() {
                p.wake.notify_one();
            }
            return Ok(());
        }
        match self.begin(&p) {
            Ok(()) => {}
            Err(links::Busy::Itself) => return Err(TriggerError::AlreadyRunning),
            Err(links::Busy::Peer(peer)) => return Err(TriggerError::PeerRunning(peer.to_string())),
        }
        let now = Instant::now();
        self.launch(p.clone(), Trigger::Manual, now, now + p.interval());
        Ok(())
    }

    /// Pauses scheduled ticks (a run in flight finishes). Returns whether anything changed.
    pub fn pause(&self, id: &str) -> Option<bool> {
        self.set_paused(id, true)
    }

    /// Resumes scheduled ticks at the next point of the process's grid.
    pub fn resume(&self, id: &str) -> Option<bool> {
        self.set_paused(id, false)
    }

    fn set_paused(&self, id: &str, paused: bool) -> Option<bool> {
        let p = self.process(id)?;
        let changed = p.set_paused(paused);
        if p.continuous() {
            match paused {
                true => {
                    p.interrupt();
                }
                false => p.wake.notify_one(),
            }
        }
        if paused && let Some(ha) = self.ha.get() {
            // Paused here: let another replica run it.
            let (ha, id) = (ha.clone(), p.id.clone());
            tokio::spawn(async move { ha.release(&id, "pause").await });
        }
        self.metrics.process.paused(id, paused);
        if changed {
            tracing::info!(process = %id, paused, "process {}", if paused { "paused" } else { "resumed" });
            self.emit(id, if paused { "paused" } else { "resumed" }, serde_json::json!({}));
        }
        Some(changed)
    }

    /// Stops ticking, lets runs in flight finish within `grace`, then cancels the rest.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.stop_ticking.cancel();
        self.tracker.close();
        // Continuous runs never end by themselves: stop them now.
        for p in self.processes().iter().filter(|p| p.continuous()) {
            p.interrupt();
        }
        if let Some(ha) = self.ha.get() {
            // Idle processes go to the other replicas now, not after the runs in flight here.
            for p in self.processes().iter().filter(|p| !p.is_running()) {
                ha.release(&p.id, "shutdown").await;
            }
        }
        let in_flight = self.tracker.len();
        let mut cancelled = false;
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            cancelled = true;
            tracing::warn!(
                in_flight = self.tracker.len(),
                "grace period over; cancelling runs in flight"
            );
            self.cancel_runs.cancel();
            let _ = tokio::time::timeout(CANCEL_GRACE + Duration::from_secs(1), self.tracker.wait()).await;
        }
        ShutdownReport { in_flight, cancelled }
    }
}
