//! One admission for every exchange request: the caller's calls per minute,
//! then the venue's weight, then (HA) the cluster's share, each bounded by
//! the caller's deadline. A step that refuses gives back what earlier steps took.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::{Caller, ClusterBudget, ProcessCalls, Refused, VenueWeight, WeightRefusal};

/// What admission cost the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Time spent waiting for room, all steps together.
    pub waited: Duration,
    /// Times the cluster's minute was spent and the caller waited for the next.
    pub cluster_waits: u32,
}

pub struct Admission {
    pub calls: Arc<ProcessCalls>,
    pub weight: Arc<VenueWeight>,
    /// Under HA: the budget all replicas share (set once, before the first call).
    cluster: OnceLock<Arc<dyn ClusterBudget>>,
}

impl Admission {
    pub fn new(calls: Arc<ProcessCalls>, weight: Arc<VenueWeight>) -> Arc<Self> {
        Arc::new(Admission {
            calls,
            weight,
            cluster: OnceLock::new(),
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
        let cluster_waits = match self.cluster.get() {
            Some(cluster) => match self.take_cluster(cluster.as_ref(), caller, weight).await {
                Ok(waits) => waits,
                Err(refused) => {
                    self.calls.refund(&caller.process, 1);
                    return Err(refused);
                }
            },
            None => 0,
        };
        Ok(Admitted {
            waited: started.elapsed(),
            cluster_waits,
        })
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
    /// minute when it is spent, within the caller's deadline.
    async fn take_cluster(&self, cluster: &dyn ClusterBudget, caller: &Caller, weight: u32) -> Result<u32, Refused> {
        let mut waits = 0;
        loop {
            let minute = self.weight.venue_minute();
            let limit = self.calls.limit(&caller.process);
            let cap = self.weight.cap(&caller.process);
            match cluster.try_take(&caller.process, limit, weight, cap, minute).await {
                Ok(true) => return Ok(waits),
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
                Err(e) => {
                    return Err(Refused(format!(
                        "the cluster's budget cannot be read (PostgreSQL): {e:#}"
                    )));
                }
            }
        }
    }

    /// The venue's own count (`X-MBX-USED-WEIGHT-1M`) of venue minute `minute`
    /// (the one the request was sent in) raises ours, while that minute lasts,
    /// and the cluster's row of that same minute (never the next one's).
    pub async fn observe_used_weight(&self, used: u32, minute: i64) {
        self.weight.observe_used_weight(used, minute);
        if let Some(cluster) = self.cluster.get()
            && let Err(e) = cluster.observe_used(minute, used).await
        {
            tracing::debug!(error = %format!("{e:#}"), "cannot record the venue's weight count in the cluster budget");
        }
    }

    /// After a 429 or 418: nobody sends until `retry_after` has passed.
    pub fn pause_for(&self, retry_after: Duration) {
        self.weight.pause_for(retry_after);
    }
}
