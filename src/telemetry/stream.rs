//! Metrics of the WebSocket streams (`market_stream`, `user_stream`): up,
//! messages, reconnects by reason, event lag (receive time − the venue's event
//! time), stale symbols, the age of the last event, listen-key renewals.
//! Labels: `stream` (`book`, `mark`, `user`), `account` (configured names;
//! empty for market streams), `reason`, `result` — all bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: &'static str,
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconnectLabels {
    stream: &'static str,
    account: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    account: String,
    result: &'static str,
}

/// Why a connection was replaced.
pub const RECONNECT_REASONS: [&str; 5] = ["silent", "closed", "error", "planned", "listen_key"];
/// Why a user stream's connection was replaced, besides [`RECONNECT_REASONS`]:
/// the store failed to take an event or a reconciliation.
pub const USER_RECONNECT_REASONS: [&str; 1] = ["store"];
/// Why a market stream's connection was replaced, besides [`RECONNECT_REASONS`]:
/// a `SUBSCRIBE`/`UNSUBSCRIBE` not answered in time, or refused.
pub const MARKET_RECONNECT_REASONS: [&str; 2] = ["subscribe_timeout", "subscribe_refused"];

/// Event lag: 1 ms to 30 s.
const LAG_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

pub struct StreamMetrics {
    up: Family<StreamLabels, Gauge>,
    messages: Family<StreamLabels, Counter>,
    reconnects: Family<ReconnectLabels, Counter>,
    lag: Family<LagLabels, Histogram, fn() -> Histogram>,
    stale_symbols: Gauge,
    last_event_age: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    renewals: Family<RenewalLabels, Counter>,
    /// (stream, account) → last event (ms), turned into ages at scrape time.
    last_event_ms: Mutex<HashMap<(&'static str, String), i64>>,
}

fn lag_histogram() -> Histogram {
    Histogram::new(LAG_BUCKETS)
}

impl StreamMetrics {
    pub fn new() -> Self {
        StreamMetrics {
            up: Family::default(),
            messages: Family::default(),
            reconnects: Family::default(),
            lag: Family::new_with_constructor(lag_histogram),
            stale_symbols: Gauge::default(),
            last_event_age: Family::default(),
            renewals: Family::default(),
            last_event_ms: Mutex::default(),
        }
    }

    /// Registers under `script_manager_stream_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("stream");
        r.register(
            "up",
            "1 while the stream's connection is open and subscribed",
            self.up.clone(),
        );
        r.register("messages", "Messages received, by stream", self.messages.clone());
        r.register(
            "reconnects",
            "Connections replaced, by stream and reason",
            self.reconnects.clone(),
        );
        r.register_with_unit(
            "event_lag",
            "Receive time minus the venue's event time",
            Unit::Seconds,
            self.lag.clone(),
        );
        r.register(
            "stale_symbols",
            "Watched symbols without a fresh streamed price (REST is asked for them)",
            self.stale_symbols.clone(),
        );
        r.register_with_unit(
            "last_event_age",
            "Time since the stream last delivered a message",
            Unit::Seconds,
            self.last_event_age.clone(),
        );
        r.register(
            "listen_key_renewals",
            "Listen-key creations and extensions, by account and result",
            self.renewals.clone(),
        );
    }

    /// Creates the series of `stream` (and `account`) so they read 0 from start-up.
    pub fn init(&self, stream: &'static str, account: &str) {
        let l = labels(stream, account);
        let _ = self.up.get_or_create(&l);
        let _ = self.messages.get_or_create(&l);
        let _ = self.last_event_age.get_or_create(&l);
        let _ = self.lag.get_or_create(&LagLabels { stream });
        let own: &[&'static str] = match stream {
            "user" => &USER_RECONNECT_REASONS,
            _ => &MARKET_RECONNECT_REASONS,
        };
        for &reason in RECONNECT_REASONS.iter().chain(own) {
            let _ = self.reconnects.get_or_create(&ReconnectLabels {
                stream,
                account: account.to_string(),
                reason,
            });
        }
        if stream == "user" {
            for result in ["ok", "failed"] {
                let _ = self.renewals.get_or_create(&RenewalLabels {
                    account: account.to_string(),
                    result,
                });
            }
        }
    }

    pub fn up(&self, stream: &'static str, account: &str, up: bool) {
        self.up.get_or_create(&labels(stream, account)).set(up as i64);
    }

    /// A message arrived; `venue_time_ms` (when it carried one) measures the lag.
    pub fn message(&self, stream: &'static str, account: &str, venue_time_ms: i64) {
        self.messages.get_or_create(&labels(stream, account)).inc();
        let now = crate::clock::now_ms();
        if venue_time_ms > 0 {
            self.lag
                .get_or_create(&LagLabels { stream })
                .observe((now - venue_time_ms).max(0) as f64 / 1000.0);
        }
        self.last_event_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((stream, account.to_string()), now);
    }

    /// A connection was replaced, for `reason` (one of [`RECONNECT_REASONS`] or the stream's own).
    pub fn reconnect(&self, stream: &'static str, account: &str, reason: &'static str) {
        self.reconnects
            .get_or_create(&ReconnectLabels {
                stream,
                account: account.to_string(),
                reason,
            })
            .inc();
    }

    pub fn stale_symbols(&self, count: usize) {
        self.stale_symbols.set(count as i64);
    }

    pub fn listen_key(&self, account: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.renewals
            .get_or_create(&RenewalLabels {
                account: account.to_string(),
                result,
            })
            .inc();
    }

    /// Updates the ages from the last events (called at scrape time).
    pub fn refresh(&self, now_ms: i64) {
        let last = self.last_event_ms.lock().unwrap_or_else(|e| e.into_inner());
        for ((stream, account), at) in last.iter() {
            self.last_event_age
                .get_or_create(&labels(stream, account))
                .set((now_ms - at).max(0) as f64 / 1000.0);
        }
    }
}

fn labels(stream: &'static str, account: &str) -> StreamLabels {
    StreamLabels {
        stream,
        account: account.to_string(),
    }
}

impl Default for StreamMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How a new stream connection went: opened, refused by the venue (429:
/// too many new connections), or failed otherwise.
pub const CONNECT_RESULTS: [&str; 3] = ["opened", "refused", "failed"];
/// Which connections: market (`book`, `mark`) and user streams.
const CONNECTION_STREAMS: [&str; 3] = ["book", "mark", "user"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectLabels {
    stream: &'static str,
    result: &'static str,
}

/// Aggregate series of the stream connections, with no account label, so
/// they stay few however many accounts stream: open connections, listen
/// keys carried, new connections by result, and those the pacer held back.
#[derive(Debug, Default)]
pub struct StreamConnections {
    open: Family<ConnectionLabels, Gauge>,
    listen_keys: Gauge,
    connects: Family<ConnectLabels, Counter>,
    paced: Counter,
}

impl StreamConnections {
    /// Registers under `script_manager_stream_`, every series from start-up.
    pub fn register(&self, r: &mut Registry) {
        for stream in CONNECTION_STREAMS {
            let _ = self.open.get_or_create(&ConnectionLabels { stream });
            for result in CONNECT_RESULTS {
                let _ = self.connects.get_or_create(&ConnectLabels { stream, result });
            }
        }
        let r = r.sub_registry_with_prefix("stream");
        r.register(
            "connections",
            "WebSocket connections open to the venue, by stream",
            self.open.clone(),
        );
        r.register(
            "listen_keys",
            "Accounts' listen keys subscribed on user-stream connections",
            self.listen_keys.clone(),
        );
        r.register(
            "connects",
            "New WebSocket connections, by stream and result (opened, refused by the venue, failed)",
            self.connects.clone(),
        );
        r.register(
            "connects_paced",
            "New connections that waited for the connection pace (exchange.stream_connects_per_second)",
            self.paced.clone(),
        );
    }

    /// A connection of `stream` opened (`+1`) or closed (`-1`).
    pub fn open(&self, stream: &'static str, change: i64) {
        self.open.get_or_create(&ConnectionLabels { stream }).inc_by(change);
    }

    pub fn connect(&self, stream: &'static str, result: &'static str) {
        self.connects.get_or_create(&ConnectLabels { stream, result }).inc();
    }

    pub fn paced(&self) {
        self.paced.inc();
    }

    /// A listen key subscribed (`+1`) or let go (`-1`).
    pub fn listen_keys(&self, change: i64) {
        self.listen_keys.inc_by(change);
    }
}
