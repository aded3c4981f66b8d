//! Metrics of the platform's own work: trades, positions, prices, levels,
//! notifications, dashboards. Processes report through [`DomainEvents`], a
//! cheap clone of the handle, by what happened (`level_triggered(kind,
//! outcome)`), never through families. Ages are computed at scrape time
//! from the timestamps the processes leave here.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::accounts::AccountMetrics;
use super::process::TraceLabels;
use super::protection::ProtectionEvents;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    /// `take_profit` or `stop_loss`.
    kind: &'static str,
    /// `executed`, `failed`, `cancelled` (nothing held any more: no order) or
    /// `unknown` (its first attempt could not finish; the close goes on).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// One of `net::webhook::REFUSAL_REASONS`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `delivered`, `retried`, `failed` or `skipped` (no receiver configured).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    process: &'static str,
}

/// Level kinds, the `kind` label of level metrics.
pub const LEVEL_KINDS: [&str; 3] = ["take_profit", "stop_loss", "flatten"];
/// Outcomes of a crossed level.
pub const TRIGGER_OUTCOMES: [&str; 4] = ["executed", "failed", "cancelled", "unknown"];
/// Outcomes of a webhook delivery attempt.
pub const DELIVERY_OUTCOMES: [&str; 4] = ["delivered", "retried", "failed", "skipped"];

/// Trigger latency: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The handle processes report through.
#[derive(Clone)]
pub struct DomainEvents {
    trades_synced: Counter,
    positions_open: Gauge,
    price_age: Gauge<f64, AtomicU64>,
    levels_armed: Gauge,
    level_triggers: Family<TriggerLabels, Counter>,
    trigger_latency: HistogramWithExemplars<TraceLabels>,
    trigger_venue_latency: Histogram,
    symbols_skipped: Family<SkipLabels, Counter>,
    /// Per-account series, bounded above `telemetry.per_account_series_limit`.
    accounts: Arc<AccountMetrics>,
    notifications: Family<OutcomeLabels, Counter>,
    webhook_refused: Family<ReasonLabels, Counter>,
    outbox_pending: Gauge,
    snapshot_age: Gauge<f64, AtomicU64>,
    /// Oldest observation time (ms) among the prices in use; 0 = none yet.
    oldest_price_ms: Arc<AtomicI64>,
    /// Oldest dashboard snapshot time (ms); 0 = none yet.
    oldest_snapshot_ms: Arc<AtomicI64>,
    /// `script_manager_ha_fencing_rejections_total`, counted where a refused write is mapped.
    fenced_writes: Counter,
    protection: ProtectionEvents,
}

impl DomainEvents {
    pub fn new() -> Self {
        let m = DomainEvents {
            trades_synced: Counter::default(),
            positions_open: Gauge::default(),
            price_age: Gauge::default(),
            levels_armed: Gauge::default(),
            level_triggers: Family::default(),
            trigger_latency: HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter()),
            trigger_venue_latency: Histogram::new(LATENCY_BUCKETS),
            symbols_skipped: Family::default(),
            accounts: Arc::default(),
            notifications: Family::default(),
            webhook_refused: Family::default(),
            outbox_pending: Gauge::default(),
            snapshot_age: Gauge::default(),
            oldest_price_ms: Arc::default(),
            oldest_snapshot_ms: Arc::default(),
            fenced_writes: Counter::default(),
            protection: ProtectionEvents::new(),
        };
        for kind in LEVEL_KINDS {
            for outcome in TRIGGER_OUTCOMES {
                let _ = m.level_triggers.get_or_create(&TriggerLabels { kind, outcome });
            }
        }
        for reason in crate::net::webhook::REFUSAL_REASONS {
            let _ = m.webhook_refused.get_or_create(&ReasonLabels { reason });
        }
        for outcome in DELIVERY_OUTCOMES {
            let _ = m.notifications.get_or_create(&OutcomeLabels { outcome });
        }
        m
    }

    /// Reports per-account failures and syncs to `accounts` (shared with the stream metrics).
    pub(super) fn count_accounts_in(&mut self, accounts: Arc<AccountMetrics>) {
        self.accounts = accounts;
    }

    /// Counts refused (fenced) writes in the HA family.
    pub(super) fn count_fenced_in(&mut self, counter: Counter) {
        self.fenced_writes = counter;
    }

    /// Registers under `script_manager_`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "trades_synced",
            "Fills newly stored by trade sync",
            self.trades_synced.clone(),
        );
        r.register(
            "positions_open",
            "Open positions across accounts (last position sync)",
            self.positions_open.clone(),
        );
        r.register_with_unit(
            "price_age",
            "Age of the oldest cached price in use",
            Unit::Seconds,
            self.price_age.clone(),
        );
        r.register(
            "levels_armed",
            "Take-profit/stop-loss levels waiting for their price",
            self.levels_armed.clone(),
        );
        r.register(
            "level_triggers",
            "Levels whose price was crossed, by kind and outcome",
            self.level_triggers.clone(),
        );
        r.register_with_unit(
            "level_trigger_latency",
            "From receiving the crossing price to the venue acknowledging the close (our monotonic clock)",
            Unit::Seconds,
            self.trigger_latency.clone(),
        );
        r.register_with_unit(
            "level_trigger_venue_latency",
            "The venue's time of the close minus the venue's time of the crossing price, when both are given",
            Unit::Seconds,
            self.trigger_venue_latency.clone(),
        );
        r.register(
            "symbols_skipped",
            "Symbols left out of a run because the venue does not list them (any more)",
            self.symbols_skipped.clone(),
        );
        r.register(
            "notifications",
            "Webhook delivery attempts by outcome",
            self.notifications.clone(),
        );
        r.register(
            "webhook_refused",
            "Webhook deliveries refused by policy, by reason (host not allowed, a special address, a redirect)",
            self.webhook_refused.clone(),
        );
        r.register(
            "notification_outbox_pending",
            "Notifications waiting for delivery",
            self.outbox_pending.clone(),
        );
        r.register_with_unit(
            "dashboard_snapshot_age",
            "Age of the oldest dashboard snapshot",
            Unit::Seconds,
            self.snapshot_age.clone(),
        );
        self.protection.register(r);
    }

    /// Closes that cannot go on yet, refusals, retired levels.
    pub fn protection(&self) -> &ProtectionEvents {
        &self.protection
    }

    pub fn trades_synced(&self, count: u64) {
        self.trades_synced.inc_by(count);
    }

    pub fn positions_open(&self, count: usize) {
        self.positions_open.set(count as i64);
    }

    pub fn levels_armed(&self, count: usize) {
        self.levels_armed.set(count as i64);
    }

    /// A level of `kind` (one of [`LEVEL_KINDS`]) was crossed and ended `outcome` (one of [`TRIGGER_OUTCOMES`]).
    pub fn level_triggered(&self, kind: &'static str, outcome: &'static str) {
        self.level_triggers
            .get_or_create(&TriggerLabels { kind, outcome })
            .inc();
    }

    /// From the price that crossed a level to the venue's acknowledgement of
    /// its close, with the trace it happened in as the exemplar.
    pub fn trigger_latency(&self, seconds: f64, trace_id: Option<String>) {
        self.trigger_latency
            .observe(seconds, trace_id.map(|trace_id| TraceLabels { trace_id }), None);
    }

    /// The venue's own timing of a close (venue clock on both ends).
    pub fn trigger_venue_latency(&self, seconds: f64) {
        self.trigger_venue_latency.observe(seconds);
    }

    /// `process` left out a symbol the venue does not list.
    pub fn symbol_skipped(&self, process: &'static str) {
        self.symbols_skipped.get_or_create(&SkipLabels { process }).inc();
    }

    /// `process` could not serve `account` in a run.
    pub fn account_failed(&self, process: &'static str, account: &str) {
        self.accounts.failed(process, account);
    }

    /// `process` synced `account` (it is not stale for that process).
    pub fn account_synced(&self, process: &'static str, account: &str) {
        self.accounts.synced(process, account);
    }

    /// Creates the per-account series of the processes that serve accounts,
    /// and the skipped-symbol series of those that skip, so they read 0 from start-up.
    pub fn init_accounts(&self, by_account: &[&'static str], by_symbol: &[&'static str], accounts: &[String]) {
        for &process in by_symbol {
            let _ = self.symbols_skipped.get_or_create(&SkipLabels { process });
        }
        self.accounts.init(by_account, accounts);
    }

    /// A webhook delivery attempt ended `outcome` (one of [`DELIVERY_OUTCOMES`]).
    pub fn notification(&self, outcome: &'static str) {
        self.notifications.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A delivery was refused by policy (`reason`: one of `net::webhook::REFUSAL_REASONS`).
    pub fn webhook_refused(&self, reason: &'static str) {
        self.webhook_refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn outbox_pending(&self, count: i64) {
        self.outbox_pending.set(count);
    }

    pub fn oldest_price_ms(&self, at_ms: i64) {
        self.oldest_price_ms.store(at_ms, Ordering::Relaxed);
    }

    pub fn oldest_snapshot_ms(&self, at_ms: i64) {
        self.oldest_snapshot_ms.store(at_ms, Ordering::Relaxed);
    }

    /// A write refused because the run's lease moved on (HA fencing).
    pub fn write_fenced(&self) {
        self.fenced_writes.inc();
    }

    /// Updates the age gauges from the timestamps (called at scrape time).
    pub fn refresh(&self, now_ms: i64) {
        let age = |at: i64| {
            if at > 0 {
                (now_ms - at).max(0) as f64 / 1000.0
            } else {
                0.0
            }
        };
        self.price_age.set(age(self.oldest_price_ms.load(Ordering::Relaxed)));
        self.snapshot_age
            .set(age(self.oldest_snapshot_ms.load(Ordering::Relaxed)));
    }
}

impl Default for DomainEvents {
    fn default() -> Self {
        Self::new()
    }
}
