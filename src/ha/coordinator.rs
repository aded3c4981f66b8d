//! This replica's leases: claiming a tick, what it can prove it holds,
//! releasing, and the scheduler's view of all that. State lives here (held
//! leases, the last view of every lease, whether PostgreSQL answers, how many
//! replicas are alive); the gauges only mirror it.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use super::lease::{Claim, LeaseView, Leases};
use super::replica_id;
use crate::config::{HaConfig, redact_url};
use crate::scheduler::{self, ClusterView, Granted, Holder};
use crate::telemetry::Metrics;

pub(super) struct Held {
    pub token: i64,
    /// Until when this replica can be sure the lease is its own (local clock,
    /// counted from before the statement that granted or renewed it).
    pub valid_until: Instant,
    pub lease: Duration,
}

/// What the heartbeat and the claims learn.
pub(super) struct State {
    pub held: HashMap<Arc<str>, Held>,
    pub view: Vec<LeaseView>,
    pub store_up: bool,
    pub replicas_alive: i64,
}

pub struct Coordinator {
    pub replica: Arc<str>,
    pub(super) leases: Leases,
    pub(super) metrics: Arc<Metrics>,
    margin: Duration,
    pub(super) heartbeat: Duration,
    /// Database clock minus local clock, in milliseconds.
    pub(super) db_offset_ms: AtomicI64,
    state: Mutex<State>,
    /// Process → the processes it is linked with (chains, exclusion), which
    /// must be held by the same replica.
    links: std::sync::RwLock<HashMap<String, Vec<String>>>,
}

impl Coordinator {
    /// Connects to the coordination tables in `url` (the store's PostgreSQL).
    pub async fn connect(url: &str, config: &HaConfig, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Self>> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            // Fail fast while PostgreSQL is away: a claim that cannot be made is a tick not run.
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("ha: cannot connect to {}: {e}", redact_url(url)))?;
        let leases = Leases::new(pool).await?;
        metrics.ha.store_up(true);
        let me = Arc::new(Coordinator {
            replica: Arc::from(replica_id(config)),
            leases,
            metrics,
            margin: Duration::from_secs_f64(config.lease_margin_seconds),
            heartbeat: Duration::from_secs_f64(config.heartbeat_seconds),
            db_offset_ms: AtomicI64::new(0),
            state: Mutex::new(State {
                held: HashMap::new(),
                view: Vec::new(),
                store_up: true,
                replicas_alive: 0,
            }),
            links: Default::default(),
        });
        me.measure_clock().await?;
        Ok(me)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run's lease: its timeout plus the margin, renewed by the heartbeat while it runs.
    fn lease_for(&self, timeout: Duration) -> Duration {
        timeout + self.margin
    }

    /// Claims the current tick of `process` for this replica. `None`: it runs
    /// elsewhere (or the store is unreachable, and nobody can prove a lease).
    pub async fn claim(
        &self,
        process: &Arc<str>,
        timeout: Duration,
        grid: (Duration, Duration),
        manual: bool,
    ) -> Option<Granted> {
        let lease = self.lease_for(timeout);
        let started = Instant::now();
        let grid_ms = (grid.0.as_millis() as i64, grid.1.as_millis() as i64);
        let linked = self
            .links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&**process)
            .cloned()
            .unwrap_or_default();
        let claim = self
            .leases
            .claim(
                process,
                &self.replica,
                lease.as_millis() as i64,
                grid_ms,
                manual,
                &linked,
            )
            .await;
        match claim {
            Ok(Claim::Won { token, slot, took_over }) => {
                self.store_reachable(true, None);
                self.lock().held.insert(
                    process.clone(),
                    Held {
                        token,
                        valid_until: started + lease,
                        lease,
                    },
                );
                self.metrics.ha.held(process, true);
                if took_over {
                    self.metrics.ha.claim("expired");
                    tracing::warn!(process = %process, token, "took over a lease its holder let lapse (failover)");
                } else {
                    self.metrics.ha.claim("won");
                }
                Some(Granted {
                    token,
                    slot: (!manual).then_some(slot),
                })
            }
            Ok(Claim::Lost) => {
                self.store_reachable(true, None);
                self.metrics.ha.claim("lost");
                tracing::debug!(process = %process, "tick runs on another replica");
                None
            }
            Err(e) => {
                self.metrics.ha.claim("error");
                self.store_reachable(false, Some(&e));
                None
            }
        }
    }

    /// Who holds `process`, as of the last heartbeat.
    pub fn holder(&self, process: &str) -> Option<Holder> {
        self.lock().view.iter().find(|v| v.process == process).map(|v| Holder {
            replica: v.holder.clone(),
            lease_expires_at: crate::clock::from_ms(v.expires_at_ms),
            expired: v.expired,
            token: v.token,
        })
    }

    /// Replicas seen alive at the last heartbeat.
    pub fn replicas_alive(&self) -> i64 {
        self.lock().replicas_alive
    }

    /// Whether PostgreSQL answered the last claim or heartbeat.
    pub fn store_up(&self) -> bool {
        self.lock().store_up
    }

    /// Whether this replica can prove it holds `process` right now.
    pub fn holds(&self, process: &str) -> bool {
        self.lock()
            .held
            .get(process)
            .is_some_and(|h| h.valid_until > Instant::now())
    }

    /// Stops holding `process` here (paused on this replica, or shutting down).
    pub async fn release(&self, process: &str) {
        if self.lock().held.remove(process).is_some() {
            self.metrics.ha.held(process, false);
        }
        if let Err(e) = self.leases.release(process, &self.replica).await {
            tracing::warn!(process, error = %format!("{e:#}"), "cannot release the lease; it will expire");
        }
    }

    /// Records whether PostgreSQL answered; logs each transition once.
    pub(super) fn store_reachable(&self, up: bool, error: Option<&anyhow::Error>) {
        let was = std::mem::replace(&mut self.lock().store_up, up);
        self.metrics.ha.store_up(up);
        match (was, up) {
            (true, false) => tracing::error!(
                error = %error.map(|e| format!("{e:#}")).unwrap_or_default(),
                "ha: PostgreSQL does not answer; this replica cannot prove any lease and runs nothing until it does"
            ),
            (false, true) => tracing::info!("ha: PostgreSQL answers again; claiming ticks as usual"),
            _ => {}
        }
    }
}

impl scheduler::Coordinator for Coordinator {
    fn replica(&self) -> Arc<str> {
        self.replica.clone()
    }

    fn until_next_tick(&self, interval: Duration, offset: Duration, guard: Duration) -> Duration {
        Coordinator::until_next_tick(self, interval, offset, guard)
    }

    fn claim<'a>(
        &'a self,
        process: &'a Arc<str>,
        timeout: Duration,
        grid: (Duration, Duration),
        manual: bool,
    ) -> BoxFuture<'a, Option<Granted>> {
        Box::pin(Coordinator::claim(self, process, timeout, grid, manual))
    }

    fn release<'a>(&'a self, process: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(Coordinator::release(self, process))
    }

    fn holds(&self, process: &str) -> bool {
        Coordinator::holds(self, process)
    }

    fn holder(&self, process: &str) -> Option<Holder> {
        Coordinator::holder(self, process)
    }

    fn link(&self, groups: &std::collections::BTreeMap<String, String>) {
        let mut members: HashMap<&str, Vec<String>> = HashMap::new();
        for (process, group) in groups {
            members.entry(group).or_default().push(process.clone());
        }
        let links = groups
            .iter()
            .map(|(process, group)| {
                let others: Vec<String> = members[group.as_str()]
                    .iter()
                    .filter(|p| *p != process)
                    .cloned()
                    .collect();
                (process.clone(), others)
            })
            .filter(|(_, others)| !others.is_empty())
            .collect();
        *self.links.write().unwrap_or_else(|e| e.into_inner()) = links;
    }

    fn cluster(&self) -> ClusterView {
        let s = self.lock();
        ClusterView {
            replica: self.replica.clone(),
            replicas_alive: s.replicas_alive,
            store_up: s.store_up,
        }
    }
}
