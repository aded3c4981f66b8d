//! The rules between processes: chains (`after`) and exclusion
//! (`exclusive_with`).
//!
//! A chained process has no clock of its own: it starts when every process
//! it follows has succeeded since it last started, and none of them is
//! running. Its `interval_seconds` is a deadline: past it, it runs anyway
//! (trigger `deadline`).
//!
//! Exclusion is checked and claimed under one lock for all processes, so
//! two peers can never both pass the check, and a process takes all of its
//! peers or none (no order to deadlock on). A tick that finds a peer running
//! waits for it, up to its own timeout, then is skipped (`exclusive`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::{Instant, sleep_until};

use super::Scheduler;
use super::state::ProcessHandle;
use crate::process::Trigger;
use crate::telemetry::process::SkipReason;

/// Why a process could not start now.
pub(super) enum Busy {
    /// Its own run is still going (single flight).
    Itself,
    /// A process it excludes is running.
    Peer(Arc<str>),
}

impl Scheduler {
    /// Claims `p`'s single flight if neither it nor any of its exclusive peers is running.
    pub(super) fn begin(&self, p: &ProcessHandle) -> Result<(), Busy> {
        let table = self.table();
        let Some(peers) = table.peers.get(&p.id) else {
            return p.try_begin().then_some(()).ok_or(Busy::Itself);
        };
        let _all_or_nothing = self.exclusion.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.iter().find(|q| q.is_running()) {
            return Err(Busy::Peer(peer.id.clone()));
        }
        p.try_begin().then_some(()).ok_or(Busy::Itself)
    }

    /// A due tick (or a chain's turn) starts a run, unless the process is
    /// paused or still running; a running peer is waited for, up to the timeout.
    pub(super) fn start_run(
        self: &Arc<Self>,
        p: &Arc<ProcessHandle>,
        trigger: Trigger,
        scheduled: Instant,
        next: Instant,
    ) {
        if p.is_paused() {
            return self.skipped(p, SkipReason::paused, 1);
        }
        match self.begin(p) {
            Ok(()) => self.launch(p.clone(), trigger, scheduled, next),
            Err(Busy::Itself) => self.skipped(p, SkipReason::overlap, 1),
            Err(Busy::Peer(_)) if p.waiting.swap(true, Ordering::AcqRel) => {
                // Already waiting for a peer: this tick adds nothing.
                self.skipped(p, SkipReason::overlap, 1)
            }
            Err(Busy::Peer(peer)) => {
                tracing::debug!(process = %p.id, %peer, "waiting for an exclusive peer to finish");
                let (me, p) = (self.clone(), p.clone());
                self.tracker
                    .spawn(async move { me.wait_for_peers(p, trigger, scheduled, next).await });
            }
        }
    }

    /// Waits until no peer of `p` runs (then runs it) or its timeout passes (then skips).
    async fn wait_for_peers(
        self: Arc<Self>,
        p: Arc<ProcessHandle>,
        trigger: Trigger,
        scheduled: Instant,
        next: Instant,
    ) {
        let give_up = Instant::now() + p.timeout();
        let began = loop {
            let ended = self.run_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.begin(&p) {
                Ok(()) => break true,
                Err(Busy::Itself) => break false,
                Err(Busy::Peer(_)) => {}
            }
            tokio::select! {
                _ = &mut ended => {}
                _ = sleep_until(give_up) => break false,
                _ = self.stop_ticking.cancelled() => break false,
            }
        };
        p.waiting.store(false, Ordering::Release);
        if began {
            self.execute(p, trigger, scheduled, next).await;
        } else if !self.stop_ticking.is_cancelled() {
            self.skipped(&p, SkipReason::exclusive, 1);
        }
    }

    /// A chained process's clock is only its deadline: run if it has not
    /// started within `interval_seconds`, else look again at that point.
    pub(super) fn deadline_tick(self: &Arc<Self>, p: &Arc<ProcessHandle>, now: Instant) -> Instant {
        let interval = p.interval();
        let since = p.chain.lock().unwrap_or_else(|e| e.into_inner()).since;
        let deadline = since.map_or(now, |s| s + interval);
        if deadline > now {
            self.note_next_run(p, deadline);
            return deadline;
        }
        let next = now + interval;
        self.note_next_run(p, next);
        if p.config().enabled {
            tracing::info!(process = %p.id, waiting_for = ?p.waiting_for(), "chain deadline passed; running anyway");
            self.start_run(p, Trigger::Deadline, now, next);
        }
        next
    }

    /// A run of `p` ended (`succeeded` or not): peers waiting may go, and
    /// chained processes whose turn it now is start.
    pub(super) fn after_run(self: &Arc<Self>, p: &Arc<ProcessHandle>, succeeded: bool) {
        let table = self.table();
        if !table.peers.is_empty() {
            self.run_ended.notify_waiters();
        }
        if table.followers.is_empty() && !p.config().chained() {
            return;
        }
        let followers = table.followers.get(&p.id).cloned().unwrap_or_default();
        if succeeded {
            for f in &followers {
                f.chain
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .succeeded
                    .insert(p.id.clone());
            }
        }
        // A chained process that just ended may already have its next turn.
        let chained_self = p.config().chained().then(|| p.clone());
        for f in followers.iter().chain(chained_self.as_ref()) {
            self.start_if_its_turn(f);
        }
    }

    /// Starts chained `f` if all it follows succeeded since it last started and none is running.
    fn start_if_its_turn(self: &Arc<Self>, f: &Arc<ProcessHandle>) {
        if !f.schedulable() || !self.enabled || self.stop_ticking.is_cancelled() || f.is_running() {
            return;
        }
        if !f.waiting_for().is_empty() {
            return;
        }
        let config = f.config();
        let table = self.table();
        if config
            .after
            .iter()
            .any(|d| table.get(d).is_some_and(|d| d.is_running()))
        {
            return; // the one still running starts it when it ends
        }
        let now = Instant::now();
        let next = now + f.interval();
        self.start_run(f, Trigger::After, now, next);
    }

    /// A chained run starts: it waits for a full new round of the processes it follows.
    pub(super) fn chain_started(&self, p: &ProcessHandle) {
        let mut chain = p.chain.lock().unwrap_or_else(|e| e.into_inner());
        chain.since = Some(Instant::now());
        chain.succeeded.clear();
    }
}
