//! One admission for every exchange request: the caller's calls per minute,
//! then the venue's weight, then (HA) the cluster's share, each bounded by
//! the caller's deadline. A step that refuses gives back what earlier steps took.
//! While the cluster's count cannot be reached, the last step takes from this
//! replica's local share instead (`local.rs`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::local::{CLUSTER_ANSWER_WITHIN, LocalShare};
use super::{Caller, ClusterBudget, ProcessCalls, Refused, VenueWeight, WeightRefusal};

/// What admission cost the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Time spent waiting for room, all steps together.
    pub waited: Duration,
    /// Times the cluster's minute was spent and the caller waited for the next.
    pub cluster_waits: u32,
    /// Admitted on this replica's local share: the cluster's count could not be reached.
    pub local_share: bool,
}

pub struct Admission {
    pub calls: Arc<ProcessCalls>,
    pub weight: Arc<VenueWeight>,
    /// Under HA: the budget all replicas share (set once, before the first call).
    cluster: OnceLock<Arc<dyn ClusterBudget>>,
    /// What the last step takes from while the cluster cannot be reached.
    local: Arc<LocalShare>,
}

impl Admission {
    pub fn new(calls: Arc<ProcessCalls>, weight: Arc<VenueWeight>) -> Arc<Self> {
        Arc::new(Admission {
            calls,
            weight,
            cluster: OnceLock::new(),
            local: Arc::default(),
        })
    }

    /// Counts every call in the cluster's budget too (HA).
    pub fn share_with(&self, cluster: Arc<dyn ClusterBudget>) {
        let _ = self.cluster.set(cluster);
    }

    /// Admits one request of `weight` for `caller`, waiting (within its deadline) for room.
    pub async fn admit(&self, caller: &Caller, weight: u32) -> Result<Admitted, Refused> {
        let started = Instant::now();
        self.take_call(caller).await?;
        if let Err(refusal) = self
            .weight
            .acquire(&caller.process, caller.priority, weight, caller.deadline)
            .await
        {
            self.calls.refund(&caller.process, 1);
            return Err(Refused(match refusal {
                WeightRefusal::WouldMissDeadline { wait } => format!(
                    "global weight budget has room in {:.1}s, after the deadline",
                    wait.as_secs_f64()
                ),
                WeightRefusal::TooHeavy { weight, cap } => format!("weight {weight} exceeds this caller's share {cap}"),
            }));
        }
        // The venue-info reads are this replica's alone (see `VENUE_INFO_CALLER`).
        let cluster = self
            .cluster
            .get()
            .filter(|_| caller.process != super::VENUE_INFO_CALLER);
        let (cluster_waits, local_share) = match cluster {
            Some(cluster) => match self.take_cluster(cluster, caller, weight).await {
                Ok(taken) => taken,
                Err(refused) => {
                    self.calls.refund(&caller.process, 1);
                    return Err(refused);
                }
            },
            None => (0, false),
        };
        Ok(Admitted {
            waited: started.elapsed(),
            cluster_waits,
            local_share,
        })
    }

    /// Whether calls are admitted on this replica's local share (the cluster's count is unreachable).
    pub fn local_share_in_use(&self) -> bool {
        self.local.in_use()
    }

    /// The caller's own calls per minute.
    async fn take_call(&self, caller: &Caller) -> Result<(), Refused> {
        loop {
            match self.calls.try_take(&caller.process, 1) {
                Ok(()) => return Ok(()),
                Err(None) => {
                    return Err(Refused(format!(
                        "process `{}` has no API calls per minute configured",
                        caller.process
                    )));
                }
                Err(Some(wait)) => {
                    if Instant::now() + wait > caller.deadline {
                        return Err(Refused(format!(
                            "process `{}` used its calls per minute; room in {:.1}s, after its deadline",
                            caller.process,
                            wait.as_secs_f64()
                        )));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The cluster's share for the venue's current minute; waits for the next
    /// minute when it is spent, within the caller's deadline. Returns the
    /// waits and whether the local share was used instead.
    async fn take_cluster(
        &self,
        cluster: &Arc<dyn ClusterBudget>,
        caller: &Caller,
        weight: u32,
    ) -> Result<(u32, bool), Refused> {
        let mut waits = 0;
        loop {
            if self.local.in_use() {
                self.probe_in_background(cluster);
                return self
                    .take_local(cluster.as_ref(), caller, weight)
                    .await
                    .map(|()| (waits, true));
            }
            let minute = self.weight.venue_minute();
            let limit = self.calls.limit(&caller.process);
            let cap = self.weight.cap(&caller.process);
            let remaining = caller.deadline.saturating_duration_since(Instant::now());
            let take = cluster.try_take(&caller.process, limit, weight, cap, minute);
            let Ok(answer) = tokio::time::timeout(CLUSTER_ANSWER_WITHIN.min(remaining), take).await else {
                if remaining < CLUSTER_ANSWER_WITHIN {
                    // The caller's deadline came first: that says nothing of the cluster.
                    return Err(Refused(
                        "the cluster's budget did not answer before the deadline".into(),
                    ));
                }
                self.local.cluster_away(
                    &format!("no answer within {CLUSTER_ANSWER_WITHIN:?}"),
                    cluster.replicas().max(1),
                );
                continue;
            };
            match answer {
                Ok(true) => return Ok((waits, false)),
                Ok(false) => {
                    let wait = self.weight.until_next_minute();
                    if Instant::now() + wait > caller.deadline {
                        return Err(Refused(format!(
                            "the cluster's budget for this minute is spent (all replicas); room in {:.1}s, after the deadline",
                            wait.as_secs_f64()
                        )));
                    }
                    waits += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => self.local.cluster_away(&format!("{e:#}"), cluster.replicas().max(1)),
            }
        }
    }

    /// This replica's share of the venue's budget for the caller (reserve
    /// included), per venue minute, while the cluster cannot be reached.
    async fn take_local(&self, cluster: &dyn ClusterBudget, caller: &Caller, weight: u32) -> Result<(), Refused> {
        loop {
            let replicas = cluster.replicas().max(1);
            let share = self.weight.cap(&caller.process) / replicas;
            if weight > share {
                return Err(Refused(format!(
                    "the cluster's budget cannot be reached and weight {weight} exceeds this replica's share {share} (1/{replicas})"
                )));
            }
            if self.local.try_take(self.weight.venue_minute(), weight, share) {
                return Ok(());
            }
            let wait = self.weight.until_next_minute();
            if Instant::now() + wait > caller.deadline {
                return Err(Refused(format!(
                    "the cluster's budget cannot be reached and this replica's share (1/{replicas}) of the minute is spent; room in {:.1}s, after the deadline",
                    wait.as_secs_f64()
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Asks the unreachable cluster again, at most every `PROBE_EVERY`, off the caller's path.
    fn probe_in_background(&self, cluster: &Arc<dyn ClusterBudget>) {
        if !self.local.probe_due() {
            return;
        }
        let (cluster, local) = (cluster.clone(), self.local.clone());
        tokio::spawn(async move {
            let answer = tokio::time::timeout(CLUSTER_ANSWER_WITHIN, cluster.ping()).await;
            local.probed(matches!(answer, Ok(Ok(()))));
        });
    }

    /// The venue's own count (`X-MBX-USED-WEIGHT-1M`) of venue minute `minute`
    /// (the one the request was sent in) raises ours, while that minute lasts,
    /// and the cluster's row of that same minute (never the next one's; not
    /// while the cluster cannot be reached: no response waits for a server that is away).
    pub async fn observe_used_weight(&self, used: u32, minute: i64) {
        self.weight.observe_used_weight(used, minute);
        let Some(cluster) = self.cluster.get().filter(|_| !self.local.in_use()) else {
            return;
        };
        let observed = tokio::time::timeout(CLUSTER_ANSWER_WITHIN, cluster.observe_used(minute, used))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {CLUSTER_ANSWER_WITHIN:?}")));
        if let Err(e) = observed {
            tracing::debug!(error = %format!("{e:#}"), "cannot record the venue's weight count in the cluster budget");
        }
    }

    /// After a 429 or 418: nobody sends until `retry_after` has passed.
    pub fn pause_for(&self, retry_after: Duration) {
        self.weight.pause_for(retry_after);
    }
}
