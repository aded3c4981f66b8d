//! Metrics of the platform's own work: trades, positions, prices, levels,
//! notifications, dashboards. Ages are computed at scrape time from the
//! timestamps the processes leave here.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// `take_profit` or `stop_loss`.
    pub kind: &'static str,
    /// `executed`, `failed` or `unknown` (outcome not known yet; resolved on a later tick).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `delivered`, `retried`, `failed` or `skipped` (no receiver configured).
    pub outcome: &'static str,
}

/// Trigger latency: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct DomainMetrics {
    pub trades_synced: Counter,
    pub positions_open: Gauge,
    price_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub levels_armed: Gauge,
    pub level_triggers: Family<TriggerLabels, Counter>,
    pub trigger_latency: Histogram,
    pub notifications: Family<OutcomeLabels, Counter>,
    pub outbox_pending: Gauge,
    snapshot_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Oldest observation time (ms) among the prices in use; 0 = none yet.
    pub oldest_price_ms: AtomicI64,
    /// Oldest dashboard snapshot time (ms); 0 = none yet.
    pub oldest_snapshot_ms: AtomicI64,
}

impl Default for DomainMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DomainMetrics {
    pub fn new() -> Self {
        let m = DomainMetrics {
            trades_synced: Counter::default(),
            positions_open: Gauge::default(),
            price_age: Gauge::default(),
            levels_armed: Gauge::default(),
            level_triggers: Family::default(),
            trigger_latency: Histogram::new(LATENCY_BUCKETS),
            notifications: Family::default(),
            outbox_pending: Gauge::default(),
            snapshot_age: Gauge::default(),
            oldest_price_ms: AtomicI64::new(0),
            oldest_snapshot_ms: AtomicI64::new(0),
        };
        for kind in ["take_profit", "stop_loss"] {
            for outcome in ["executed", "failed", "unknown"] {
                let _ = m.level_triggers.get_or_create(&TriggerLabels { kind, outcome });
            }
        }
        for outcome in ["delivered", "retried", "failed", "skipped"] {
            let _ = m.notifications.get_or_create(&OutcomeLabels { outcome });
        }
        m
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
            "Price observed to close order acknowledged",
            Unit::Seconds,
            self.trigger_latency.clone(),
        );
        r.register(
            "notifications",
            "Webhook delivery attempts by outcome",
            self.notifications.clone(),
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
