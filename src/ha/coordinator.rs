//! This replica's leases: claiming a tick, what it can prove it holds,
//! releasing, and the scheduler's view of all that. State lives here (held
//! leases, the last view of every lease, whether PostgreSQL answers, how many
//! replicas are alive); the gauges only mirror it.
//!
//! Account processes (`ha.share_accounts`) are claimed under a lease of this
//! replica's own, `<process>@<replica>` ([`lease_key`]): every replica runs
//! them for its own accounts, nobody contends for them, they are left out of
//! the fair shares, and their runs' writes are fenced on that key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use super::lease::{Claim, LeaseView, Leases};
use super::replica_id;
use crate::accounts::Accounts;
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
    /// The live replicas, by name, as of the last heartbeat.
    pub replicas: Vec<String>,
    /// Process → the replica that should hold it (see [`super::shares`]).
    pub owners: HashMap<String, String>,
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
    /// Process → its group, for every process the scheduler runs.
    groups: std::sync::RwLock<std::collections::BTreeMap<String, String>>,
    /// Told how many replicas the heartbeat sees (its local share while PostgreSQL is away).
    pub(super) budget: std::sync::OnceLock<Arc<super::budget::PgClusterBudget>>,
    /// Accounts spread over the replicas (`ha.share_accounts`), if on.
    pub(super) sharing: std::sync::OnceLock<Sharing>,
    /// The processes claimed under this replica's own lease (account
    /// processes, when sharing is on and their group is account processes only).
    sharded: std::sync::RwLock<HashSet<String>>,
}

/// What sharing the accounts needs: the registry to tell which accounts are
/// this replica's, and which processes (by id) work per account.
pub(super) struct Sharing {
    pub accounts: Arc<Accounts>,
    is_account_process: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// The lease `process` is claimed under on `replica` when every replica runs
/// it for its own accounts. Process ids are `[a-z0-9_]`, so `@` is unambiguous.
pub fn lease_key(process: &str, replica: &str) -> String {
    format!("{process}@{replica}")
}

/// The process a lease key belongs to (itself for a process's own lease).
pub(super) fn process_of(key: &str) -> &str {
    key.split_once('@').map_or(key, |(process, _)| process)
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
                replicas: Vec::new(),
                owners: HashMap::new(),
            }),
            links: Default::default(),
            groups: Default::default(),
            budget: Default::default(),
            sharing: Default::default(),
            sharded: Default::default(),
        });
        me.measure_clock().await?;
        Ok(me)
    }

    /// Spreads `accounts` over the live replicas: every replica runs the
    /// processes `is_account_process` names for its own accounts. Reads the
    /// live replica list once and assigns this replica's share at once (the
    /// heartbeat does again whenever the list changes). Call before the
    /// scheduler is coordinated with this replica.
    pub async fn share_accounts(
        &self,
        accounts: Arc<Accounts>,
        is_account_process: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        let window = (self.heartbeat * 3 + Duration::from_secs(1)).as_millis() as i64;
        let alive = self.leases.heartbeat(&self.replica, window).await?;
        accounts.assign(super::accounts::owned_by(&self.replica, &alive));
        tracing::info!(
            replicas = alive.len(),
            accounts = accounts.mine().len(),
            of = accounts.len(),
            "ha: accounts shared over the live replicas"
        );
        {
            let mut s = self.lock();
            s.replicas_alive = alive.len() as i64;
            s.replicas = alive;
        }
        let _ = self.sharing.set(Sharing {
            accounts,
            is_account_process: Box::new(is_account_process),
        });
        Ok(())
    }

    /// The live replica list changed: this replica's accounts are recomputed.
    pub(super) fn reassign_accounts(&self, alive: &[String]) {
        if let Some(sharing) = self.sharing.get() {
            let before = sharing.accounts.mine().len();
            sharing.accounts.assign(super::accounts::owned_by(&self.replica, alive));
            tracing::info!(
                replicas = alive.len(),
                before,
                now = sharing.accounts.mine().len(),
                "ha: the live replicas changed; this replica's accounts recomputed"
            );
        }
    }

    /// The lease this replica claims `process` under when it runs it for its
    /// own accounts; `None` for a process held by one replica at a time.
    fn own_lease(&self, process: &str) -> Option<Arc<str>> {
        self.sharded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(process)
            .then(|| Arc::from(lease_key(process, &self.replica)))
    }

    /// The lease row `process` is held under by this replica.
    fn key_of(&self, process: &str) -> Arc<str> {
        self.own_lease(process).unwrap_or_else(|| Arc::from(process))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn groups(&self) -> std::collections::BTreeMap<String, String> {
        self.groups.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live replica that should hold `process`, when it is not this one.
    fn owner_elsewhere(&self, process: &str) -> Option<String> {
        let s = self.lock();
        s.owners
            .get(process)
            .filter(|owner| owner.as_str() != &*self.replica && s.replicas.contains(owner))
            .cloned()
    }

    /// Whether this replica is the one whose share `process` is.
    fn is_owner(&self, process: &str) -> bool {
        self.lock()
            .owners
            .get(process)
            .is_some_and(|o| o.as_str() == &*self.replica)
    }

    /// Whether the last heartbeat saw another replica hold a live lease on `process`.
    fn held_elsewhere(&self, process: &str) -> bool {
        self.lock()
            .view
            .iter()
            .any(|v| v.process == process && !v.expired && v.holder != *self.replica)
    }

    /// Mirrors how many leases this replica holds.
    pub(super) fn count_held(&self) {
        let n = self.lock().held.len();
        self.metrics.ha.leases_held(n);
    }

    /// The replica whose share `process` is, when it is not this one and it
    /// has asked for it (a paused owner does not ask, and keeps nothing).
    /// A group moves as one: the owner may have asked through any of its
    /// members (it asks through the one whose tick it lost, often a chain's
    /// leader, while the hand-over happens after the chain's last step).
    fn owner_asking(&self, process: &str) -> Option<String> {
        let owner = self.owner_elsewhere(process)?;
        let group = self.group_of(process);
        let asked = self
            .lock()
            .view
            .iter()
            .any(|v| v.wanted_by.as_deref() == Some(owner.as_str()) && group.contains(&v.process));
        asked.then_some(owner)
    }

    /// The processes linked to `process` (chains, exclusion), without it.
    fn linked(&self, process: &str) -> Vec<String> {
        self.links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(process)
            .cloned()
            .unwrap_or_default()
    }

    /// `process` and the processes linked to it.
    fn group_of(&self, process: &str) -> Vec<String> {
        let mut group = self.linked(process);
        group.push(process.to_string());
        group
    }

    /// Whether this replica holds `process` or any process linked to it: its
    /// group is here, so its other members are claimed here too (a chain's
    /// follower starts where its leader ran) until the group is handed over.
    fn holds_group(&self, process: &str) -> bool {
        self.group_of(process).iter().any(|p| self.holds(p))
    }

    /// A run of `process` ended here. When the replica whose share it is has
    /// asked for it and nothing linked to it runs here (`group_idle`), it is
    /// handed over: its lease and those of its group are released now, at a
    /// tick boundary, so the owner claims the next slot (none lost, none run twice).
    pub async fn finished(&self, process: &str, group_idle: bool) {
        if !group_idle || !self.holds(process) {
            return;
        }
        let Some(owner) = self.owner_asking(process) else {
            return;
        };
        for p in self.group_of(process) {
            if self.holds(&p) {
                self.release(&p, "rebalance").await;
                tracing::info!(process = %p, to = %owner, "handed over for a fair share");
            }
        }
    }

    /// Whether this replica holds `process` but another should (a continuous run stops to hand it over).
    pub fn should_hand_over(&self, process: &str) -> bool {
        self.holds(process) && self.owner_asking(process).is_some()
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
        let own = self.own_lease(process);
        if own.is_none() && self.owner_elsewhere(process).is_some() && !self.holds_group(process) {
            // Another replica's share: it claims first. A periodic tick is
            // still claimed here a moment later, so that a tick is never lost
            // while the replicas' views of each other differ.
            if manual || self.held_elsewhere(process) {
                return None;
            }
            tokio::time::sleep(self.heartbeat.min(grid.0 / 4)).await;
        }
        let lease = self.lease_for(timeout);
        let started = Instant::now();
        let grid_ms = (grid.0.as_millis() as i64, grid.1.as_millis() as i64);
        let linked = if own.is_some() {
            Vec::new()
        } else {
            self.linked(process)
        };
        let key = own.clone().unwrap_or_else(|| process.clone());
        let claim = self
            .leases
            .claim(&key, &self.replica, lease.as_millis() as i64, grid_ms, manual, &linked)
            .await;
        match claim {
            Ok(Claim::Won { token, slot, took_over }) => {
                self.store_reachable(true, None);
                self.lock().held.insert(
                    key,
                    Held {
                        token,
                        valid_until: started + lease,
                        lease,
                    },
                );
                self.metrics.ha.held(process, true);
                self.count_held();
                if took_over {
                    self.metrics.ha.claim("expired");
                    self.metrics.ha.handover("expired");
                    tracing::warn!(process = %process, token, "took over a lease its holder let lapse (failover)");
                } else {
                    self.metrics.ha.claim("won");
                }
                Some(Granted {
                    token,
                    slot: (!manual).then_some(slot),
                    key: own,
                })
            }
            Ok(Claim::Lost) => {
                self.store_reachable(true, None);
                if own.is_none() && self.is_owner(process) {
                    // Our share, held elsewhere (it or its group): ask for it
                    // at that replica's next tick boundary.
                    for p in self.group_of(process).iter().filter(|p| self.held_elsewhere(p)) {
                        if let Err(e) = self.leases.want(p, &self.replica).await {
                            tracing::debug!(process = %p, error = %format!("{e:#}"), "cannot ask for a lease");
                        }
                    }
                }
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
    /// For a process every replica runs for its own accounts: this replica's lease.
    pub fn holder(&self, process: &str) -> Option<Holder> {
        let key = self.key_of(process);
        self.lock().view.iter().find(|v| *v.process == *key).map(|v| Holder {
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

    /// Tells `budget` the replica count each heartbeat sees, so that while
    /// PostgreSQL is away this replica takes its share of the venue's budget.
    pub fn report_replicas_to(&self, budget: Arc<super::budget::PgClusterBudget>) {
        budget.saw_replicas(self.replicas_alive());
        let _ = self.budget.set(budget);
    }

    /// Whether PostgreSQL answered the last claim or heartbeat.
    pub fn store_up(&self) -> bool {
        self.lock().store_up
    }

    /// Whether this replica can prove it holds `process` right now.
    pub fn holds(&self, process: &str) -> bool {
        let key = self.key_of(process);
        self.lock()
            .held
            .get(&key)
            .is_some_and(|h| h.valid_until > Instant::now())
    }

    /// Stops holding `process` here; `reason` is counted (`rebalance`,
    /// `shutdown`, `pause`, `removed`).
    pub async fn release(&self, process: &str, reason: &'static str) {
        let key = self.key_of(process);
        if self.lock().held.remove(&key).is_some() {
            self.metrics.ha.held(process, false);
            self.metrics.ha.handover(reason);
            self.count_held();
        }
        if let Err(e) = self.leases.release(&key, &self.replica).await {
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

impl Coordinator {
    /// The account processes among `groups` that every replica runs for its
    /// own accounts: those whose whole group is account processes (alone, or
    /// linked only to each other, as dashboard_sync runs after trade_sync: a
    /// replica runs the chain for its own accounts, its links kept locally).
    /// One linked to any other process stays on one replica for every account
    /// (its group must be held by one replica), and is said so.
    fn sharded_among(
        &self,
        groups: &BTreeMap<String, String>,
        members: &HashMap<&str, Vec<String>>,
    ) -> HashSet<String> {
        let Some(sharing) = self.sharing.get() else {
            return HashSet::new();
        };
        let mut sharded = HashSet::new();
        for (process, group) in groups {
            if !(sharing.is_account_process)(process) {
                continue;
            }
            if members[group.as_str()].iter().all(|p| (sharing.is_account_process)(p)) {
                sharded.insert(process.clone());
            } else {
                tracing::warn!(
                    process = %process,
                    "ha: an account process linked (after, exclusive_with) to a process that is not one runs on one \
                     replica for every account"
                );
            }
        }
        sharded
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

    fn release<'a>(&'a self, process: &'a str, reason: &'static str) -> BoxFuture<'a, ()> {
        Box::pin(Coordinator::release(self, process, reason))
    }

    fn finished<'a>(&'a self, process: &'a str, group_idle: bool) -> BoxFuture<'a, ()> {
        Box::pin(Coordinator::finished(self, process, group_idle))
    }

    fn should_hand_over(&self, process: &str) -> bool {
        Coordinator::should_hand_over(self, process)
    }

    fn owner(&self, process: &str) -> Option<String> {
        self.lock().owners.get(process).cloned()
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
        let sharded = self.sharded_among(groups, &members);
        // Account processes run everywhere: the fair shares are of the others.
        let shared: BTreeMap<String, String> = groups
            .iter()
            .filter(|(p, _)| !sharded.contains(*p))
            .map(|(p, g)| (p.clone(), g.clone()))
            .collect();
        {
            let mut s = self.lock();
            // A reload that moved a process between the two kinds of lease:
            // the old one is no longer renewed and lapses.
            s.held
                .retain(|key, _| sharded.contains(process_of(key)) == (process_of(key) != &**key));
            s.owners = super::shares::assign(&shared, &s.replicas);
        }
        *self.sharded.write().unwrap_or_else(|e| e.into_inner()) = sharded;
        self.count_held();
        *self.groups.write().unwrap_or_else(|e| e.into_inner()) = shared;
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
        let mut holdings: std::collections::BTreeMap<String, Vec<String>> =
            s.replicas.iter().map(|r| (r.clone(), Vec::new())).collect();
        for v in s.view.iter().filter(|v| !v.expired) {
            holdings
                .entry(v.holder.clone())
                .or_default()
                .push(process_of(&v.process).to_string());
        }
        ClusterView {
            replica: self.replica.clone(),
            replicas_alive: s.replicas_alive,
            store_up: s.store_up,
            holdings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_replica_lease_names_its_process_whatever_the_replica_is_called() {
        for replica in ["r1", "host-a-1234", "odd@name", ""] {
            let key = lease_key("trade_sync", replica);
            assert_eq!(process_of(&key), "trade_sync", "{key}");
            assert_ne!(key, "trade_sync");
        }
        assert_eq!(process_of("level_monitor"), "level_monitor");
    }
}
