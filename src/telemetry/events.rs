//! Metrics of the live event stream (`GET /api/events`): clients connected,
//! events sent by type, clients dropped (too slow, or told to resync), and
//! what `Last-Event-ID` resumes came to. Every label is from a closed set,
//! and the hot counters are taken out of their families once, so counting a
//! frame sent to one of a thousand clients is one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What `events_sent_total{type}` counts: the event types, then the two control frames.
pub const SENT_TYPES: [&str; 9] = [
    "price",
    "fill",
    "position",
    "level",
    "alert",
    "notification",
    "process",
    "snapshot",
    "reset",
];

/// Why a client was dropped: it read too slowly, or its replica lost events
/// from the others (the relay reconnected) and every client must resync.
pub const DROP_REASONS: [&str; 2] = ["slow", "resync"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

pub struct EventsMetrics {
    clients: Gauge,
    sent_family: Family<TypeLabels, Counter>,
    dropped_family: Family<ReasonLabels, Counter>,
    replays_family: Family<OutcomeLabels, Counter>,
    sent: Vec<Counter>,
    dropped: Vec<Counter>,
    replay_hit: Counter,
    replay_reset: Counter,
}

impl EventsMetrics {
    pub fn new() -> Self {
        let sent_family = Family::<TypeLabels, Counter>::default();
        let dropped_family = Family::<ReasonLabels, Counter>::default();
        let replays_family = Family::<OutcomeLabels, Counter>::default();
        let sent = SENT_TYPES
            .iter()
            .map(|&t| sent_family.get_or_create(&TypeLabels { r#type: t }).clone())
            .collect();
        let dropped = DROP_REASONS
            .iter()
            .map(|&reason| dropped_family.get_or_create(&ReasonLabels { reason }).clone())
            .collect();
        let replay_hit = replays_family.get_or_create(&OutcomeLabels { outcome: "hit" }).clone();
        let replay_reset = replays_family
            .get_or_create(&OutcomeLabels { outcome: "reset" })
            .clone();
        EventsMetrics {
            clients: Gauge::default(),
            sent_family,
            dropped_family,
            replays_family,
            sent,
            dropped,
            replay_hit,
            replay_reset,
        }
    }

    /// Registers under `script_manager_events_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("events");
        r.register("clients", "Clients connected to the event stream", self.clients.clone());
        r.register(
            "sent",
            "Frames sent to event-stream clients, by type (the event types, snapshot, reset)",
            self.sent_family.clone(),
        );
        r.register(
            "clients_dropped",
            "Event-stream clients disconnected by the service, by reason (slow: their queue was full; resync: events from other replicas were missed)",
            self.dropped_family.clone(),
        );
        r.register(
            "replays",
            "Reconnects with Last-Event-ID, by outcome (hit: the missed events were replayed; reset: too old or unknown, a fresh snapshot instead)",
            self.replays_family.clone(),
        );
    }

    pub fn clients(&self, connected: usize) {
        self.clients.set(connected as i64);
    }

    /// `n` frames of `SENT_TYPES[index]` went to a client.
    pub fn sent(&self, index: usize, n: u64) {
        if let Some(c) = self.sent.get(index) {
            c.inc_by(n);
        }
    }

    /// A client was dropped for `DROP_REASONS[index]`.
    pub fn dropped(&self, index: usize) {
        if let Some(c) = self.dropped.get(index) {
            c.inc();
        }
    }

    pub fn replay(&self, hit: bool) {
        match hit {
            true => self.replay_hit.inc(),
            false => self.replay_reset.inc(),
        };
    }
}

impl Default for EventsMetrics {
    fn default() -> Self {
        Self::new()
    }
}
