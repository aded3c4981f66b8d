//! The heartbeat: every `ha.heartbeat_seconds` this replica renews the leases
//! it holds, reports itself alive, reads every lease back, and drops what it
//! can no longer prove it holds. Leaving the cluster releases everything.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::coordinator::{Coordinator, process_of};

impl Coordinator {
    /// Renews, reports and reads every `ha.heartbeat_seconds` until `stop`.
    pub fn spawn_heartbeat(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut beats: u64 = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(me.heartbeat) => {}
                }
                beats += 1;
                if let Err(e) = me.beat(beats).await {
                    me.store_reachable(false, Some(&e));
                }
                me.forget_unproven();
            }
        })
    }

    async fn beat(&self, beats: u64) -> anyhow::Result<()> {
        let started = Instant::now();
        let snapshot: Vec<(Arc<str>, i64, Duration)> = self
            .lock()
            .held
            .iter()
            .map(|(p, h)| (p.clone(), h.token, h.lease))
            .collect();
        let held: Vec<(String, i64)> = snapshot
            .iter()
            .map(|(p, _, lease)| (p.to_string(), lease.as_millis() as i64))
            .collect();
        let window = (self.heartbeat * 3 + Duration::from_secs(1)).as_millis() as i64;
        let alive = self.leases.heartbeat(&self.replica, window).await?;
        let count = alive.len() as i64;
        let renewed = self.leases.renew(&self.replica, &held).await?;
        let view = self.leases.view().await?;
        if beats.is_multiple_of(30) {
            self.measure_clock().await?;
        }
        if beats % 60 == 1 {
            let older_than = prune_after(window);
            match self.leases.prune_replicas(older_than).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    pruned = n,
                    older_than_s = older_than / 1000,
                    "ha: heartbeat rows of long-gone replicas deleted"
                ),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "ha: cannot prune old heartbeat rows"),
            }
            if let Err(e) = self.leases.prune_own_leases().await {
                tracing::warn!(error = %format!("{e:#}"), "ha: cannot prune the per-replica leases of gone replicas");
            }
        }
        self.store_reachable(true, None);
        self.metrics.ha.replicas(count);
        if let Some(budget) = self.budget.get() {
            budget.saw_replicas(count);
        }
        let mut lost = Vec::new();
        let mut changed = None;
        {
            let mut s = self.lock();
            s.view = view;
            s.replicas_alive = count;
            if s.replicas != alive {
                s.replicas = alive;
                s.owners = super::shares::assign(&self.groups(), &s.replicas);
                changed = Some(s.replicas.clone());
            }
            for (process, token, lease) in snapshot {
                // A claim made meanwhile (a newer token) has set its own validity.
                let Some(h) = s.held.get_mut(&process).filter(|h| h.token == token) else {
                    continue;
                };
                if renewed.iter().any(|(p, _)| **p == *process) {
                    h.valid_until = started + lease;
                } else {
                    s.held.remove(&process);
                    lost.push(process);
                }
            }
        }
        if let Some(alive) = changed {
            self.reassign_accounts(&alive);
        }
        for key in lost {
            self.metrics.ha.held(process_of(&key), false);
            tracing::warn!(process = %key, "lease lost: another replica holds it now");
        }
        self.count_held();
        Ok(())
    }

    /// Drops the leases this replica can no longer prove (PostgreSQL away for a lease time).
    fn forget_unproven(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.lock().held.retain(|process, h| {
            let valid = h.valid_until > now;
            if !valid {
                gone.push(process.clone());
            }
            valid
        });
        for process in gone {
            self.metrics.ha.held(process_of(&process), false);
            tracing::warn!(process = %process, "lease can no longer be proven (PostgreSQL unreachable); not running it");
        }
        self.count_held();
    }

    /// Gives up every lease and leaves the cluster (graceful shutdown).
    pub async fn leave(&self) {
        let held: Vec<Arc<str>> = self.lock().held.drain().map(|(p, _)| p).collect();
        for p in &held {
            self.metrics.ha.held(process_of(p), false);
            self.metrics.ha.handover("shutdown");
        }
        self.count_held();
        match self.leases.release_all(&self.replica).await {
            Ok(n) => tracing::info!(released = n, "ha: leases released for the other replicas"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "ha: cannot release leases; they will expire"),
        }
        let _ = self.leases.leave(&self.replica).await;
    }
}

/// How long a replica's heartbeat row is kept after its last beat, given the
/// window within which a replica counts as alive: the larger of an hour and
/// 100 windows. Nothing reads a row older than one window (the live replica
/// list, fair shares and the cluster budget's count all use the window), so
/// a pruned row was already invisible; the margin leaves a row long enough
/// to be looked at by hand after a failover.
pub(crate) fn prune_after(window_ms: i64) -> i64 {
    (window_ms.saturating_mul(100)).max(3_600_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_are_kept_an_hour_or_a_hundred_windows() {
        assert_eq!(super::prune_after(7_000), 3_600_000);
        assert_eq!(super::prune_after(100_000), 10_000_000);
    }
}
