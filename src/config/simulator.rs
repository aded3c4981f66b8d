//! Settings of the simulated exchange (`[exchange.simulator]`), kept here so
//! that configuration imports nothing of the service; the simulator itself
//! (`sim`) reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Misbehaviour on demand, for tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added to every answer.
    pub latency_ms: u64,
    /// Per route (`/fapi/v1/ticker/price`, or `GET /fapi/v1/order` for one method):
    /// share of requests answered 503 without doing anything.
    pub error_rate: BTreeMap<String, f64>,
    /// Per route: share of requests answered 200 with a body cut in half.
    pub malformed_rate: BTreeMap<String, f64>,
    /// The next N orders execute, then the answer is a 503.
    pub order_error_after_execute: u32,
    /// Orders execute, then the answer is held this long (the client times out).
    pub order_delay_after_execute_ms: u64,
    /// The simulator's clock runs this far ahead of (or behind) real time.
    pub clock_offset_ms: i64,
    /// The next N requests are answered 429 with `Retry-After: force_429_retry_after_s`.
    pub force_429: u32,
    pub force_429_retry_after_s: u64,
    /// MARKET orders stay `NEW` (accepted, nothing filled) this long before they fill.
    pub fill_delay_ms: u64,
    /// The next N MARKET orders meet a thin book: they fill `partial_fill_ratio`
    /// of their quantity and end `EXPIRED`.
    pub partial_fills: u32,
    /// Share of the quantity a thin-book order fills (0.4 when unset).
    pub partial_fill_ratio: f64,
    /// The next N orders are rejected with `reject_code` (-2019, margin is insufficient, when unset),
    /// with Binance's message for that code (-4131, -1008, -1001, -1015, ...).
    pub reject_orders: u32,
    pub reject_code: i64,
    /// Per route (`/fapi/v2/positionRisk`, or `POST /fapi/v1/order` for one method):
    /// ms added to its answers, before the route runs (`latency_ms` is for every route).
    pub route_delay_ms: BTreeMap<String, u64>,
    /// Per symbol: an order for it is accepted (and executes) at once, but its
    /// answer is held this long, as a venue slow to answer in a crash. Other
    /// symbols' orders are answered as usual.
    pub hold_orders_ms: BTreeMap<String, u64>,
    /// The next N algo (conditional) orders are refused with `reject_algo_code`
    /// (-4045, max stop orders reached, when unset).
    pub reject_algo_orders: u32,
    pub reject_algo_code: i64,
    /// WebSocket connections stay open but send nothing (a silent socket).
    pub ws_silent: bool,
    /// Every WebSocket event is held this long before it is sent.
    pub ws_delay_ms: u64,
    /// A market connection's `SUBSCRIBE` is carried out but never answered.
    pub ws_subscribe_unanswered: bool,
    /// A market connection's `SUBSCRIBE` is carried out at once, answered this late.
    pub ws_subscribe_reply_delay_ms: u64,
    /// A market connection's `SUBSCRIBE` is refused (`{"code", "msg", "id"}`), nothing subscribed.
    pub ws_subscribe_refused: bool,
}

/// Settings of the simulator (`[exchange.simulator]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Address of the in-process simulator; port 0 picks a free one.
    pub listen: String,
    pub seed: u64,
    /// Symbols and their opening prices; empty means the ten default ones.
    /// (A list here replaces the defaults rather than adding to them.)
    pub symbols: BTreeMap<String, f64>,
    /// REQUEST_WEIGHT per minute, as `exchangeInfo` reports it.
    pub weight_limit: u32,
    /// Requests sent during a 429 back-off before a 418 ban.
    pub ban_after_violations: u32,
    pub price_step_ms: u64,
    /// Largest relative price move per step.
    pub volatility: f64,
    /// Fills appearing across all accounts (trading done elsewhere).
    pub fills_per_minute: f64,
    /// Positions each account opens with.
    pub opening_positions: usize,
    /// Fills kept per account (older ones are forgotten, as a venue's history window).
    pub keep_fills: usize,
    /// Orders kept per account for lookups.
    pub keep_orders: usize,
    /// A WebSocket connection is closed by the server after this long (Binance: 24 h).
    pub ws_max_lifetime_seconds: f64,
    /// The server pings every connection this often (Binance: 3 min).
    pub ws_ping_seconds: f64,
    /// A listen key not extended for this long expires (Binance: 60 min).
    pub listen_key_ttl_seconds: f64,
    /// New WebSocket connections one client address may open per window
    /// (Binance: 300 per 5 minutes); beyond it the upgrade is answered 429.
    pub ws_connections_limit: u32,
    pub ws_connections_window_seconds: f64,
    /// Per symbol: `MARKET_LOT_SIZE.maxQty`, the largest MARKET order. Unset:
    /// what 1 000 000 USDT buys at the opening price (Binance's is far below
    /// `LOT_SIZE.maxQty`: BTCUSDT 120 against 1000).
    pub market_max_qty: BTreeMap<String, f64>,
    /// Per symbol: `LOT_SIZE.maxQty`. Unset: ten times the MARKET maximum.
    pub max_qty: BTreeMap<String, f64>,
    /// Per symbol: `minQty` of both filters. Unset: the step (0.001).
    pub min_qty: BTreeMap<String, f64>,
    /// Accounts start in hedge mode (`dualSidePosition`); `POST /sim/hedge` changes one.
    pub hedge_mode: bool,
    pub faults: Faults,
}

/// The symbols the simulator lists when none are configured, with opening prices.
pub fn default_symbols() -> BTreeMap<String, f64> {
    let symbols = [
        ("BTCUSDT", 100_000.0),
        ("ETHUSDT", 4_000.0),
        ("SOLUSDT", 200.0),
        ("BNBUSDT", 700.0),
        ("XRPUSDT", 2.5),
        ("DOGEUSDT", 0.35),
        ("ADAUSDT", 0.9),
        ("AVAXUSDT", 40.0),
        ("LINKUSDT", 20.0),
        ("LTCUSDT", 100.0),
    ];
    symbols.iter().map(|&(s, p)| (s.to_string(), p)).collect()
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            listen: "127.0.0.1:0".into(),
            seed: 42,
            symbols: BTreeMap::new(),
            weight_limit: 2400,
            ban_after_violations: 3,
            price_step_ms: 500,
            volatility: 0.0005,
            fills_per_minute: 6.0,
            opening_positions: 3,
            keep_fills: 10_000,
            keep_orders: 10_000,
            ws_max_lifetime_seconds: 86_400.0,
            ws_ping_seconds: 180.0,
            listen_key_ttl_seconds: 3_600.0,
            ws_connections_limit: 300,
            ws_connections_window_seconds: 300.0,
            market_max_qty: BTreeMap::new(),
            max_qty: BTreeMap::new(),
            min_qty: BTreeMap::new(),
            hedge_mode: false,
            faults: Faults::default(),
        }
    }
}
