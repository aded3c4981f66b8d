//! The market data and order facts that both the store and the exchange
//! speak: prices, positions, fills, order sides, statuses and
//! acknowledgements. Decimals, never floats; times in ms since the epoch.
//!
//! Owns: these value types. Imports nothing of the service (ground floor), so
//! the store can keep them without importing the exchange.

use rust_decimal::Decimal;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Price {
    pub symbol: String,
    pub price: Decimal,
    /// Venue time of the price, ms since the epoch.
    pub time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    pub symbol: String,
    /// Signed: > 0 long, < 0 short.
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
    pub unrealized_pnl: Decimal,
    pub update_time_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderSide {
    Buy,
    Sell,
}

impl OrderSide {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSide::Buy => "BUY",
            OrderSide::Sell => "SELL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "BUY" => Some(OrderSide::Buy),
            "SELL" => Some(OrderSide::Sell),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fill {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub side: OrderSide,
    pub price: Decimal,
    pub qty: Decimal,
    pub realized_pnl: Decimal,
    pub commission: Decimal,
    pub time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
    Other(String),
}

impl OrderStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "NEW" => OrderStatus::New,
            "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
            "FILLED" => OrderStatus::Filled,
            "CANCELED" => OrderStatus::Canceled,
            "REJECTED" => OrderStatus::Rejected,
            "EXPIRED" => OrderStatus::Expired,
            other => OrderStatus::Other(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderAck {
    pub order_id: u64,
    pub client_order_id: String,
    pub symbol: String,
    pub status: OrderStatus,
    pub executed_qty: Decimal,
    pub avg_price: Decimal,
}
