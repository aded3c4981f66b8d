//! What the scheduler asks of a coordinator when several replicas share the
//! work (HA): the grid all replicas tick on, a claim on each tick, and who
//! holds what. The trait is the scheduler's; `ha::Coordinator` implements it
//! on PostgreSQL, so the scheduler imports nothing of `ha`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

/// A lease this replica won for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub token: i64,
    /// The grid slot; `None` for a manual run.
    pub slot: Option<i64>,
    /// The lease the claim was made under, when it is not the process's own
    /// id (a process every replica runs for its own accounts holds a lease
    /// per replica): the run's writes are fenced on it.
    pub key: Option<Arc<str>>,
}

/// Who holds a process's lease, as the status document shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Holder {
    pub replica: String,
    #[serde(serialize_with = "crate::clock::serialize_rfc3339")]
    pub lease_expires_at: SystemTime,
    pub expired: bool,
    pub token: i64,
}

/// This replica's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub replica: Arc<str>,
    /// Replicas seen alive at the last heartbeat.
    pub replicas_alive: i64,
    /// Whether the coordination store answered the last claim or heartbeat.
    pub store_up: bool,
    /// Each live replica (and any other holder) → the processes it holds.
    pub holdings: std::collections::BTreeMap<String, Vec<String>>,
}

pub trait Coordinator: Send + Sync + 'static {
    /// This replica's name.
    fn replica(&self) -> Arc<str>;

    /// How long until the next point of the shared grid (`interval`, shifted
    /// by `offset`), at least `guard` from now.
    fn until_next_tick(&self, interval: Duration, offset: Duration, guard: Duration) -> Duration;

    /// Claims the current tick of `process` for this replica. `None`: it runs
    /// elsewhere (or nobody can prove a lease right now).
    fn claim<'a>(
        &'a self,
        process: &'a Arc<str>,
        timeout: Duration,
        grid: (Duration, Duration),
        manual: bool,
    ) -> BoxFuture<'a, Option<Granted>>;

    /// Stops holding `process` here; `reason` (`rebalance`, `shutdown`,
    /// `pause`, `removed`) is counted.
    fn release<'a>(&'a self, process: &'a str, reason: &'static str) -> BoxFuture<'a, ()>;

    /// A run of `process` ended here; `group_idle` when nothing linked to it
    /// runs here either. Hands it over if another replica should hold it.
    fn finished<'a>(&'a self, process: &'a str, group_idle: bool) -> BoxFuture<'a, ()>;

    /// Whether this replica holds `process` but another should.
    fn should_hand_over(&self, process: &str) -> bool;

    /// The replica that should hold `process` (its fair share), if known.
    fn owner(&self, process: &str) -> Option<String>;

    /// Whether this replica can prove it holds `process` right now.
    fn holds(&self, process: &str) -> bool;

    /// Who holds `process`, as last seen.
    fn holder(&self, process: &str) -> Option<Holder>;

    /// The groups of linked processes (process → group; see
    /// `config::link_groups`): a group is held by one replica at a time.
    fn link(&self, groups: &std::collections::BTreeMap<String, String>);

    fn cluster(&self) -> ClusterView;
}
