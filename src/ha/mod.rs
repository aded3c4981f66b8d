//! High availability: several replicas on one PostgreSQL, each tick run
//! exactly once, every write of a run fenced (issue 7).
//!
//! [`Coordinator`] is this replica's side of it: it claims a process's lease
//! before each run ([`lease`] holds the SQL), keeps the leases it holds alive
//! with a heartbeat, notices when it can no longer prove it holds one, and
//! tells the scheduler when the next tick of the shared grid is due. The
//! cluster-wide API budget is in [`budget`]. Timing that must agree across
//! replicas (lease expiry, slot numbers) is the database's clock.

pub mod budget;
pub mod lease;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HaConfig;
use crate::store::Fence;
use crate::telemetry::Metrics;
use lease::{Claim, LeaseView, Leases};

/// A lease this replica won for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub token: i64,
    /// The grid slot; `None` for a manual run.
    pub slot: Option<i64>,
}

/// What the status document shows for a process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Holder {
    pub replica: String,
    #[serde(serialize_with = "crate::status::rfc3339")]
    pub lease_expires_at: std::time::SystemTime,
    pub expired: bool,
    pub token: i64,
}

struct Held {
    token: i64,
    /// Until when this replica can be sure the lease is its own (local clock,
    /// counted from before the statement that granted or renewed it).
    valid_until: Instant,
    lease: Duration,
}

/// What the heartbeat and the claims learn. Whether PostgreSQL answers and how
/// many replicas are alive live in their gauges (`metrics.ha`), read back from there.
#[derive(Default)]
struct State {
    held: HashMap<Arc<str>, Held>,
    view: Vec<LeaseView>,
}

pub struct Coordinator {
    pub replica: Arc<str>,
    leases: Leases,
    metrics: Arc<Metrics>,
    margin: Duration,
    heartbeat: Duration,
    /// Database clock minus local clock, in milliseconds.
    db_offset_ms: AtomicI64,
    state: Mutex<State>,
}

/// `ha.replica_id`, or hostname-pid.
pub fn replica_id(config: &HaConfig) -> String {
    config.replica_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "replica".into());
        format!("{host}-{}", std::process::id())
    })
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
            .map_err(|e| anyhow::anyhow!("ha: cannot connect to {}: {e}", crate::store::redact_url(url)))?;
        let leases = Leases::new(pool).await?;
        let me = Arc::new(Coordinator {
            replica: Arc::from(replica_id(config)),
            leases,
            metrics,
            margin: Duration::from_secs_f64(config.lease_margin_seconds),
            heartbeat: Duration::from_secs_f64(config.heartbeat_seconds),
            db_offset_ms: AtomicI64::new(0),
            state: Mutex::default(),
        });
        me.measure_clock().await?;
        Ok(me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run's lease: its timeout plus the margin, renewed by the heartbeat while it runs.
    fn lease_for(&self, timeout: Duration) -> Duration {
        timeout + self.margin
    }

    async fn measure_clock(&self) -> anyhow::Result<()> {
        let before = crate::store::now_ms();
        let db = self.leases.now_ms().await?;
        let after = crate::store::now_ms();
        self.db_offset_ms.store(db - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    fn db_now_ms(&self) -> i64 {
        crate::store::now_ms() + self.db_offset_ms.load(Ordering::Relaxed)
    }

    /// How long until the next point of the shared grid (`interval`, shifted
    /// by `offset`) in database time, at least `guard` from now.
    pub fn until_next_tick(&self, interval: Duration, offset: Duration, guard: Duration) -> Duration {
        let interval_ms = (interval.as_millis() as i64).max(1);
        let offset_ms = offset.as_millis() as i64;
        let earliest = self.db_now_ms() + guard.as_millis() as i64;
        let k = (earliest - offset_ms).div_euclid(interval_ms) + 1;
        let next = k * interval_ms + offset_ms;
        Duration::from_millis((next - self.db_now_ms()).max(0) as u64)
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
        let claim = self
            .leases
            .claim(process, &self.replica, lease.as_millis() as i64, grid_ms, manual)
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

    /// The fence for a run's writes under `token`.
    pub fn fence(&self, process: &Arc<str>, token: i64) -> Fence {
        Fence::lease(process.clone(), token, self.metrics.ha.fencing_rejections.clone())
    }

    /// Who holds `process`, as of the last heartbeat.
    pub fn holder(&self, process: &str) -> Option<Holder> {
        self.lock().view.iter().find(|v| v.process == process).map(|v| Holder {
            replica: v.holder.clone(),
            lease_expires_at: std::time::UNIX_EPOCH + Duration::from_millis(v.expires_at_ms.max(0) as u64),
            expired: v.expired,
            token: v.token,
        })
    }

    /// Replicas seen alive at the last heartbeat.
    pub fn replicas_alive(&self) -> i64 {
        self.metrics.ha.replicas.get()
    }

    /// Whether PostgreSQL answered the last claim or heartbeat.
    pub fn store_up(&self) -> bool {
        self.metrics.ha.store_up.get() == 1
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

    fn store_reachable(&self, up: bool, error: Option<&anyhow::Error>) {
        let was = self.metrics.ha.store_up.set(up as i64) == 1;
        match (was, up) {
            (true, false) => tracing::error!(
                error = %error.map(|e| format!("{e:#}")).unwrap_or_default(),
                "ha: PostgreSQL does not answer; this replica cannot prove any lease and runs nothing until it does"
            ),
            (false, true) => tracing::info!("ha: PostgreSQL answers again; claiming ticks as usual"),
            _ => {}
        }
    }

    /// Renews the leases held here, reports this replica alive and reads
    /// every lease back, every `ha.heartbeat_seconds` until `stop`.
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
        let renewed = self.leases.renew(&self.replica, &held).await?;
        let view = self.leases.view().await?;
        if beats.is_multiple_of(30) {
            self.measure_clock().await?;
        }
        self.store_reachable(true, None);
        self.metrics.ha.replicas.set(alive);
        let mut lost = Vec::new();
        {
            let mut s = self.lock();
            s.view = view;
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
        for process in lost {
            self.metrics.ha.held(&process, false);
            tracing::warn!(process = %process, "lease lost: another replica holds it now");
        }
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
            self.metrics.ha.held(&process, false);
            tracing::warn!(process = %process, "lease can no longer be proven (PostgreSQL unreachable); not running it");
        }
    }

    /// Gives up every lease and leaves the cluster (graceful shutdown).
    pub async fn leave(&self) {
        let held: Vec<Arc<str>> = self.lock().held.drain().map(|(p, _)| p).collect();
        for p in &held {
            self.metrics.ha.held(p, false);
        }
        match self.leases.release_all(&self.replica).await {
            Ok(n) => tracing::info!(released = n, "ha: leases released for the other replicas"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "ha: cannot release leases; they will expire"),
        }
        let _ = self.leases.leave(&self.replica).await;
    }
}
