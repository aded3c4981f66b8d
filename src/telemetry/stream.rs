//! Metrics of the WebSocket streams (`market_stream`, `user_stream`): up,
//! messages, reconnects by reason, event lag (receive time − the venue's event
//! time), stale symbols, the age of the last event, listen-key renewals.
//! Labels: `stream` (`book`, `mark`, `user`), `account` (configured names;
//! empty for market streams), `reason`, `result` — all bounded. User
//! streams' values live in `accounts.rs` with the other per-account series,
//! so above `telemetry.per_account_series_limit` only accounts with a
//! problem are shown; market streams are always shown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::accounts::{AccountMetrics, Shown, USER_REASONS, UserRow};
use super::exposition::{Desc, Kind, Value, Writer, label};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    stream: &'static str,
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

/// One market stream's values (`account` empty).
#[derive(Debug, Default, Clone)]
struct MarketRow {
    up: bool,
    messages: u64,
    /// By [`market_reasons`] index.
    reconnects: [u64; RECONNECT_REASONS.len() + MARKET_RECONNECT_REASONS.len()],
    last_event_ms: i64,
}

fn market_reasons() -> impl Iterator<Item = &'static str> {
    RECONNECT_REASONS.iter().chain(MARKET_RECONNECT_REASONS.iter()).copied()
}

pub struct StreamMetrics {
    /// Market streams by name (`book`, `mark`): a handful, always shown.
    market: Mutex<BTreeMap<&'static str, MarketRow>>,
    /// User streams live with the other per-account series (bounded above the limit).
    accounts: Arc<AccountMetrics>,
    lag: Family<LagLabels, Histogram, fn() -> Histogram>,
    stale_symbols: Gauge,
}

fn lag_histogram() -> Histogram {
    Histogram::new(LAG_BUCKETS)
}

const fn desc(name: &'static str, help: &'static str, kind: Kind, unit: Option<&'static str>) -> Desc {
    Desc { name, help, kind, unit }
}

const UP: Desc = desc(
    "script_manager_stream_up",
    "1 while the stream's connection is open and subscribed",
    Kind::Gauge,
    None,
);
const MESSAGES: Desc = desc(
    "script_manager_stream_messages",
    "Messages received, by stream",
    Kind::Counter,
    None,
);
const RECONNECTS: Desc = desc(
    "script_manager_stream_reconnects",
    "Connections replaced, by stream and reason",
    Kind::Counter,
    None,
);
const LAST_EVENT_AGE: Desc = desc(
    "script_manager_stream_last_event_age_seconds",
    "Time since the stream last delivered a message",
    Kind::Gauge,
    Some("seconds"),
);
const RENEWALS: Desc = desc(
    "script_manager_stream_listen_key_renewals",
    "Listen-key creations and extensions, by account and result",
    Kind::Counter,
    None,
);

impl StreamMetrics {
    pub fn new() -> Self {
        Self::with_accounts(Arc::default())
    }

    /// Stream metrics whose user streams are kept in `accounts`.
    pub fn with_accounts(accounts: Arc<AccountMetrics>) -> Self {
        StreamMetrics {
            market: Mutex::default(),
            accounts,
            lag: Family::new_with_constructor(lag_histogram),
            stale_symbols: Gauge::default(),
        }
    }

    fn market(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, MarketRow>> {
        self.market.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers under `script_manager_stream_` what the registry encodes
    /// (the per-stream families are written by [`Self::encode`]).
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("stream");
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
    }

    /// Creates the series of `stream` (and `account`) so they read 0 from start-up.
    pub fn init(&self, stream: &'static str, account: &str) {
        let _ = self.lag.get_or_create(&LagLabels { stream });
        match account.is_empty() {
            true => {
                self.market().entry(stream).or_default();
            }
            false => self.accounts.user_init(account),
        }
    }

    pub fn up(&self, stream: &'static str, account: &str, up: bool) {
        match account.is_empty() {
            true => self.market().entry(stream).or_default().up = up,
            false => self.accounts.user_up(account, up),
        }
    }

    /// A message arrived; `venue_time_ms` (when it carried one) measures the lag.
    pub fn message(&self, stream: &'static str, account: &str, venue_time_ms: i64) {
        let now = crate::clock::now_ms();
        if venue_time_ms > 0 {
            self.lag
                .get_or_create(&LagLabels { stream })
                .observe((now - venue_time_ms).max(0) as f64 / 1000.0);
        }
        match account.is_empty() {
            true => {
                let mut market = self.market();
                let row = market.entry(stream).or_default();
                row.messages += 1;
                row.last_event_ms = now;
            }
            false => self.accounts.user_message(account, now),
        }
    }

    /// A connection was replaced, for `reason` (one of [`RECONNECT_REASONS`] or the stream's own).
    pub fn reconnect(&self, stream: &'static str, account: &str, reason: &'static str) {
        match account.is_empty() {
            true => {
                if let Some(i) = market_reasons().position(|r| r == reason) {
                    self.market().entry(stream).or_default().reconnects[i] += 1;
                }
            }
            false => self.accounts.user_reconnect(account, reason),
        }
    }

    pub fn stale_symbols(&self, count: usize) {
        self.stale_symbols.set(count as i64);
    }

    pub fn listen_key(&self, account: &str, ok: bool) {
        self.accounts.listen_key(account, ok);
    }

    /// Ages are computed from the last events when encoding; nothing to do ahead of it.
    pub fn refresh(&self, _now_ms: i64) {}

    /// The per-stream families: every market stream, and the user streams of the accounts shown.
    pub fn encode(&self, w: &mut Writer<'_>, shown: &Shown, now_ms: i64) {
        let market: Vec<(String, MarketRow)> = self
            .market()
            .iter()
            .map(|(stream, row)| {
                (
                    format!("{},{}", label("stream", stream), label("account", "")),
                    row.clone(),
                )
            })
            .collect();
        let users: Vec<(String, UserRow)> = self
            .accounts
            .user_rows(shown)
            .into_iter()
            .map(|(account, row)| {
                (
                    format!("{},{}", label("stream", "user"), label("account", &account)),
                    row,
                )
            })
            .collect();
        let age = |last: i64| match last {
            0 => 0.0,
            at => (now_ms - at).max(0) as f64 / 1000.0,
        };
        w.family(&UP);
        for (labels, row) in &market {
            w.sample(&UP, labels, None, Value::Int(row.up as i64));
        }
        for (labels, row) in &users {
            w.sample(&UP, labels, None, Value::Int(row.up as i64));
        }
        w.family(&MESSAGES);
        for (labels, row) in &market {
            w.sample(&MESSAGES, labels, None, Value::Uint(row.messages));
        }
        for (labels, row) in &users {
            w.sample(&MESSAGES, labels, None, Value::Uint(row.messages));
        }
        w.family(&RECONNECTS);
        for (labels, row) in &market {
            for (reason, n) in market_reasons().zip(row.reconnects) {
                w.sample(&RECONNECTS, labels, Some(("reason", reason)), Value::Uint(n));
            }
        }
        for (labels, row) in &users {
            for (reason, n) in USER_REASONS.iter().zip(row.reconnects) {
                w.sample(&RECONNECTS, labels, Some(("reason", reason)), Value::Uint(n));
            }
        }
        w.family(&LAST_EVENT_AGE);
        for (labels, row) in &market {
            w.sample(&LAST_EVENT_AGE, labels, None, Value::Float(age(row.last_event_ms)));
        }
        for (labels, row) in &users {
            w.sample(&LAST_EVENT_AGE, labels, None, Value::Float(age(row.last_event_ms)));
        }
        w.family(&RENEWALS);
        for (account, row) in self.accounts.user_rows(shown) {
            let labels = label("account", &account);
            for (result, n) in ["ok", "failed"].into_iter().zip(row.renewals) {
                w.sample(&RENEWALS, &labels, Some(("result", result)), Value::Uint(n));
            }
        }
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
