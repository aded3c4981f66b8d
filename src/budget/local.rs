//! Admission while the cluster's budget cannot be reached (HA: PostgreSQL
//! away). Refusing every call would stop protective closes with the rest, so
//! a replica admits on a share of its own instead: the venue's budget for the
//! caller (with the reserve, so `reserved_for` processes keep their room)
//! divided by the replicas it last saw alive. Every replica does the same, so
//! together they stay within the venue's budget, up to the minute they
//! switched in (their cluster rows are not known any more) and corrected by
//! the venue's own count, which every response reports.
//!
//! The cluster is not asked again on every call (a dead server could cost
//! each call a connection timeout): a probe in the background asks every
//! [`PROBE_EVERY`], and calls return to the cluster's count once it answers.
//! Each transition is logged once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long the cluster's count may take to answer before it counts as unreachable.
pub const CLUSTER_ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How often an unreachable cluster is asked again.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct LocalShare {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Since when the cluster has not answered; `None` while it answers.
    away_since: Option<Instant>,
    probing: bool,
    next_probe: Option<Instant>,
    /// The venue minute `used` counts.
    minute: i64,
    used: u32,
}

impl LocalShare {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether calls are admitted on the local share now.
    pub fn in_use(&self) -> bool {
        self.lock().away_since.is_some()
    }

    /// The cluster did not answer: calls are admitted locally from now on.
    pub fn cluster_away(&self, why: &str, replicas: u32) {
        let mut s = self.lock();
        if s.away_since.is_some() {
            return;
        }
        let now = Instant::now();
        s.away_since = Some(now);
        s.next_probe = Some(now + PROBE_EVERY);
        drop(s);
        tracing::error!(
            error = why,
            replicas,
            "budget: the cluster's budget cannot be reached (PostgreSQL); admitting calls on this replica's \
             share of the venue's budget (1/{replicas}) until it answers"
        );
    }

    /// Whether a probe should start now; if so it is marked as running.
    pub fn probe_due(&self) -> bool {
        let mut s = self.lock();
        let due = s.away_since.is_some() && !s.probing && s.next_probe.is_none_or(|at| at <= Instant::now());
        if due {
            s.probing = true;
        }
        due
    }

    /// A probe's result: an answer returns calls to the cluster's count.
    pub fn probed(&self, answered: bool) {
        let mut s = self.lock();
        s.probing = false;
        if !answered {
            s.next_probe = Some(Instant::now() + PROBE_EVERY);
            return;
        }
        let Some(since) = s.away_since.take() else { return };
        drop(s);
        tracing::info!(
            away_s = since.elapsed().as_secs_f64(),
            "budget: the cluster's budget answers again; calls are counted there"
        );
    }

    /// Takes `weight` in venue `minute` if the share has room.
    pub fn try_take(&self, minute: i64, weight: u32, share: u32) -> bool {
        let mut s = self.lock();
        if s.minute != minute {
            s.minute = minute;
            s.used = 0;
        }
        if s.used + weight > share {
            return false;
        }
        s.used += weight;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use futures::future::BoxFuture;

    use super::PROBE_EVERY;
    use crate::budget::{Admission, Caller, ClusterBudget, ProcessCalls, VenueWeight};

    /// A cluster count that is away (its calls fail, or never answer) until told otherwise.
    struct Away {
        reachable: AtomicBool,
        hangs: bool,
        asked: AtomicU32,
        replicas: u32,
    }

    impl Away {
        fn answer(&self) -> BoxFuture<'_, anyhow::Result<()>> {
            Box::pin(async move {
                if self.reachable.load(Ordering::SeqCst) {
                    return Ok(());
                }
                if self.hangs {
                    futures::future::pending::<()>().await;
                }
                anyhow::bail!("connection refused")
            })
        }
    }

    impl ClusterBudget for Away {
        fn try_take<'a>(&'a self, _: &'a str, _: u32, _: u32, _: u32, _: i64) -> BoxFuture<'a, anyhow::Result<bool>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { self.answer().await.map(|()| true) })
        }
        fn observe_used(&self, _: i64, _: u32) -> BoxFuture<'_, anyhow::Result<()>> {
            self.answer()
        }
        fn ping(&self) -> BoxFuture<'_, anyhow::Result<()>> {
            self.answer()
        }
        fn replicas(&self) -> u32 {
            self.replicas
        }
    }

    /// Venue limit 100 with a 20 % reserve for level_monitor, on a replica
    /// that last saw 4 replicas and whose cluster count is away.
    fn admission(hangs: bool) -> (Arc<Admission>, Arc<Away>) {
        // The local share counts per venue minute (the system clock): stay inside one.
        let weight = VenueWeight::new(100, 1.0, 0.2, ["level_monitor".to_string()]);
        if weight.until_next_minute() < std::time::Duration::from_secs(3) {
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        let calls = ProcessCalls::new([("level_monitor".to_string(), 1000), ("trade_sync".to_string(), 1000)]);
        let admission = Admission::new(Arc::new(calls), Arc::new(weight));
        let away = Arc::new(Away {
            reachable: AtomicBool::new(false),
            hangs,
            asked: AtomicU32::new(0),
            replicas: 4,
        });
        admission.share_with(away.clone());
        (admission, away)
    }

    fn caller(process: &str) -> Caller {
        Caller::new(
            process,
            1,
            tokio::time::Instant::now() + std::time::Duration::from_secs(5),
        )
    }

    async fn admits_within_the_local_share(admission: &Admission, away: &Away, asked_before: u32) {
        // trade_sync's share: (100 − 20 % reserve) / 4 replicas = 20.
        for _ in 0..4 {
            let admitted = admission
                .admit(&caller("trade_sync"), 5)
                .await
                .expect("within the share");
            assert!(admitted.local_share);
        }
        let refused = admission.admit(&caller("trade_sync"), 5).await.unwrap_err();
        assert!(refused.0.contains("share (1/4)"), "{refused}");
        // level_monitor's share is 100 / 4 = 25: the reserve still holds.
        assert!(admission.admit(&caller("level_monitor"), 5).await.unwrap().local_share);
        assert!(
            admission.admit(&caller("level_monitor"), 1).await.is_err(),
            "the share is enforced"
        );
        assert!(admission.local_share_in_use());
        assert_eq!(
            away.asked.load(Ordering::SeqCst),
            asked_before + 1,
            "the cluster is not asked on every call"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_cluster_budget_falls_back_to_the_local_share_and_back() {
        let (admission, away) = admission(false);
        admits_within_the_local_share(&admission, &away, 0).await;
        // It answers again: the next probe (off the caller's path) returns calls to it.
        away.reachable.store(true, Ordering::SeqCst);
        tokio::time::sleep(PROBE_EVERY).await;
        assert!(admission.admit(&caller("level_monitor"), 0).await.unwrap().local_share);
        while admission.local_share_in_use() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let admitted = admission.admit(&caller("trade_sync"), 5).await.unwrap();
        assert!(!admitted.local_share, "counted by the cluster again");
        assert_eq!(away.asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_budget_that_does_not_answer_counts_as_unreachable() {
        let (admission, away) = admission(true);
        let hurried = Caller::new(
            "level_monitor",
            1,
            tokio::time::Instant::now() + std::time::Duration::from_secs(1),
        );
        assert!(admission.admit(&hurried, 1).await.is_err());
        assert!(
            !admission.local_share_in_use(),
            "a caller's deadline that ends first says nothing of the cluster"
        );
        admits_within_the_local_share(&admission, &away, 1).await;
    }
}
