//! Metrics of several replicas working as one (issue 7): who holds which
//! lease, how claims went, fenced writes, and whether the coordination store
//! answers. A single replica reports itself as holding everything it runs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::process::labels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    /// `won` (this replica runs the tick), `lost` (another replica holds the
    /// lease or ran the tick), `expired` (took over a lease its holder let
    /// lapse: a failover), `error` (the store did not answer).
    result: &'static str,
}

/// Why a replica stopped holding a lease: it handed it to the replica whose
/// share it is, it shut down, it paused (or disabled) the process, the process
/// left the configuration; or, counted by the replica taking over, the
/// holder let it expire.
pub const HANDOVER_REASONS: [&str; 5] = ["rebalance", "shutdown", "pause", "removed", "expired"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

pub const CLAIM_RESULTS: [&str; 4] = ["won", "lost", "expired", "error"];

#[derive(Default)]
pub struct HaMetrics {
    lease_held: Family<super::process::ProcessLabels, Gauge>,
    leases_held: Gauge,
    handovers: Family<ReasonLabels, Counter>,
    claims: Family<ClaimLabels, Counter>,
    fencing_rejections: Counter,
    replicas: Gauge,
    store_up: Gauge,
    cluster_budget_waits: Counter,
    cluster_budget_local_calls: Counter,
    accounts_owned: Gauge,
}

impl HaMetrics {
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("ha");
        r.register(
            "lease_held",
            "1 while this replica holds the process's lease (runs its ticks)",
            self.lease_held.clone(),
        );
        r.register(
            "leases_held",
            "Processes whose lease this replica holds (runs their ticks)",
            self.leases_held.clone(),
        );
        r.register(
            "handovers",
            "Leases given up or taken over, by reason",
            self.handovers.clone(),
        );
        r.register(
            "claims",
            "Attempts to claim a tick's lease, by result",
            self.claims.clone(),
        );
        r.register(
            "fencing_rejections",
            "Writes refused because the run's lease token was no longer current",
            self.fencing_rejections.clone(),
        );
        r.register(
            "replicas",
            "Replicas that reported themselves alive within the last few heartbeats",
            self.replicas.clone(),
        );
        r.register(
            "store_up",
            "1 while the coordination store (PostgreSQL) answers this replica",
            self.store_up.clone(),
        );
        r.register(
            "cluster_budget_waits",
            "Calls that waited because the cluster's shared budget for the minute was spent",
            self.cluster_budget_waits.clone(),
        );
        r.register(
            "cluster_budget_local_calls",
            "Calls admitted on this replica's local share of the venue's budget because the cluster's budget \
             (PostgreSQL) could not be reached",
            self.cluster_budget_local_calls.clone(),
        );
        r.register(
            "accounts_owned",
            "Exchange accounts this replica works for: its share under HA with ha.share_accounts, every account otherwise",
            self.accounts_owned.clone(),
        );
    }

    /// Creates every series from start-up. A single replica (`clustered` false)
    /// runs every process it schedules: it "holds" them all, is the one replica
    /// alive and has no coordination store to lose, so dashboards and alerts
    /// read the same series with or without HA.
    pub fn init(&self, processes: &[String], clustered: bool) {
        for p in processes {
            self.held(p, !clustered);
        }
        self.leases_held.set(if clustered { 0 } else { processes.len() as i64 });
        for reason in HANDOVER_REASONS {
            let _ = self.handovers.get_or_create(&ReasonLabels { reason });
        }
        for result in CLAIM_RESULTS {
            let _ = self.claims.get_or_create(&ClaimLabels { result });
        }
        // Under HA the heartbeat counts the replicas.
        self.replicas.set(!clustered as i64);
        self.store_up.set(1);
    }

    /// Drops the lease gauge of a process taken out of the configuration.
    pub fn remove_process(&self, process: &str) {
        self.lease_held.remove(&labels(process));
    }

    pub fn held(&self, process: &str, held: bool) {
        self.lease_held.get_or_create(&labels(process)).set(held as i64);
    }

    /// How many leases this replica holds now.
    pub fn leases_held(&self, count: usize) {
        self.leases_held.set(count as i64);
    }

    /// A lease changed hands for `reason` (one of [`HANDOVER_REASONS`]).
    pub fn handover(&self, reason: &'static str) {
        self.handovers.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A claim ended `result` (one of [`CLAIM_RESULTS`]).
    pub fn claim(&self, result: &'static str) {
        self.claims.get_or_create(&ClaimLabels { result }).inc();
    }

    pub fn replicas(&self, alive: i64) {
        self.replicas.set(alive);
    }

    pub fn store_up(&self, up: bool) {
        self.store_up.set(up as i64);
    }

    /// How many accounts this replica works for now.
    pub fn accounts_owned(&self, count: usize) {
        self.accounts_owned.set(count as i64);
    }

    pub fn cluster_budget_waits(&self, count: u32) {
        self.cluster_budget_waits.inc_by(count as u64);
    }

    /// A call was admitted on the local share (the cluster's budget unreachable).
    pub fn cluster_budget_local_call(&self) {
        self.cluster_budget_local_calls.inc();
    }

    /// The counter refused writes are counted in (handed to whoever maps them).
    pub(super) fn fencing_counter(&self) -> Counter {
        self.fencing_rejections.clone()
    }
}
