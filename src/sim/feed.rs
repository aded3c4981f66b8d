//! What the simulator publishes over WebSocket: market events (`bookTicker`
//! on every price change, `markPrice` on a timer) and user-data events
//! (`ORDER_TRADE_UPDATE`, `ACCOUNT_UPDATE`) with Binance's payloads. The book
//! publishes into broadcast channels; each connection picks what it
//! subscribed to (`ws.rs`).

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A price event for one symbol.
#[derive(Debug, Clone, PartialEq)]
pub enum MarketEvent {
    /// Best bid and ask changed (`<symbol>@bookTicker`, route `/public`).
    BookTicker {
        symbol: String,
        bid: Decimal,
        ask: Decimal,
        update_id: u64,
        time: i64,
    },
    /// The mark price (`<symbol>@markPrice[@1s]`, route `/market`).
    MarkPrice {
        symbol: String,
        price: Decimal,
        time: i64,
        every_s: u8,
    },
}

impl MarketEvent {
    /// The stream name a subscriber uses for it (lowercase, as Binance's).
    pub fn stream(&self) -> String {
        match self {
            MarketEvent::BookTicker { symbol, .. } => format!("{}@bookTicker", symbol.to_lowercase()),
            MarketEvent::MarkPrice { symbol, every_s: 1, .. } => format!("{}@markPrice@1s", symbol.to_lowercase()),
            MarketEvent::MarkPrice { symbol, .. } => format!("{}@markPrice", symbol.to_lowercase()),
        }
    }

    /// Whether the event travels on the `/public` route (else `/market`).
    pub fn public(&self) -> bool {
        matches!(self, MarketEvent::BookTicker { .. })
    }

    pub fn payload(&self) -> Value {
        match self {
            MarketEvent::BookTicker {
                symbol,
                bid,
                ask,
                update_id,
                time,
            } => json!({
                "e": "bookTicker", "u": update_id, "E": time, "T": time, "s": symbol,
                "b": bid.to_string(), "B": "10", "a": ask.to_string(), "A": "10",
            }),
            MarketEvent::MarkPrice {
                symbol, price, time, ..
            } => json!({
                "e": "markPriceUpdate", "E": time, "s": symbol, "p": price.to_string(),
                "i": price.to_string(), "P": price.to_string(), "r": "0.00010000",
                "T": (time / 28_800_000 + 1) * 28_800_000,
            }),
        }
    }
}

/// A user-data event for one account (by API key).
#[derive(Debug, Clone, PartialEq)]
pub struct UserEvent {
    pub api_key: String,
    pub payload: Value,
}

/// The channels the book publishes into.
#[derive(Debug, Clone)]
pub struct Feed {
    pub market: broadcast::Sender<MarketEvent>,
    pub user: broadcast::Sender<UserEvent>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            market: broadcast::channel(4096).0,
            user: broadcast::channel(4096).0,
        }
    }
}

impl Feed {
    /// Publishes; nobody listening is fine.
    pub fn market(&self, event: MarketEvent) {
        let _ = self.market.send(event);
    }

    pub fn user(&self, api_key: &str, payload: Value) {
        let _ = self.user.send(UserEvent {
            api_key: api_key.to_string(),
            payload,
        });
    }
}

/// One order's state change or fill, as `ORDER_TRADE_UPDATE`.
#[derive(Debug, Clone)]
pub struct OrderUpdate<'a> {
    pub symbol: &'a str,
    pub client_order_id: &'a str,
    pub side: &'a str,
    pub orig_qty: Decimal,
    /// `NEW`, `TRADE`, `EXPIRED`, ...
    pub execution: &'a str,
    /// `NEW`, `PARTIALLY_FILLED`, `FILLED`, `EXPIRED`, ...
    pub status: &'a str,
    pub order_id: u64,
    /// This fill's quantity and price (0 for a state change).
    pub last_qty: Decimal,
    pub last_price: Decimal,
    pub cumulative_qty: Decimal,
    pub avg_price: Decimal,
    pub commission: Decimal,
    pub realized: Decimal,
    pub trade_id: u64,
    pub reduce_only: bool,
    pub time: i64,
}

impl OrderUpdate<'_> {
    pub fn payload(&self) -> Value {
        json!({
            "e": "ORDER_TRADE_UPDATE", "E": self.time, "T": self.time,
            "o": {
                "s": self.symbol, "c": self.client_order_id, "S": self.side, "o": "MARKET", "f": "GTC",
                "q": self.orig_qty.to_string(), "p": "0", "ap": self.avg_price.to_string(), "sp": "0",
                "x": self.execution, "X": self.status, "i": self.order_id,
                "l": self.last_qty.to_string(), "z": self.cumulative_qty.to_string(), "L": self.last_price.to_string(),
                "N": "USDT", "n": self.commission.to_string(), "T": self.time, "t": self.trade_id,
                "b": "0", "a": "0", "m": false, "R": self.reduce_only, "wt": "CONTRACT_PRICE", "ot": "MARKET",
                "ps": "BOTH", "cp": false, "rp": self.realized.to_string(), "pP": false, "si": 0, "ss": 0, "V": "NONE",
                "pm": "NONE", "gtd": 0,
            }
        })
    }
}

/// A position change, as `ACCOUNT_UPDATE` (reason `ORDER`).
pub fn account_update(symbol: &str, amount: Decimal, entry: Decimal, unrealized: Decimal, time: i64) -> Value {
    json!({
        "e": "ACCOUNT_UPDATE", "E": time, "T": time,
        "a": {
            "m": "ORDER",
            "B": [{"a": "USDT", "wb": "10000", "cw": "10000", "bc": "0"}],
            "P": [{
                "s": symbol, "pa": amount.to_string(), "ep": entry.round_dp(8).to_string(),
                "bep": entry.round_dp(8).to_string(), "cr": "0", "up": unrealized.round_dp(8).to_string(),
                "mt": "cross", "iw": "0", "ps": "BOTH",
            }]
        }
    })
}
