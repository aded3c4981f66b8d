//! Binance's JSON shapes (decimals as strings, times in ms) and their
//! conversion into the domain's types; a shape that does not fit is a
//! `Decode` error naming the field.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::{
    AlgoKind, AlgoOrder, AlgoStatus, Fill, Listing, OrderAck, OrderSide, OrderStatus, Position, Price, WorkingType,
};
use crate::exchange::VenueError;

pub fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, VenueError> {
    serde_json::from_slice(body).map_err(|e| VenueError::Decode(format!("{endpoint}: {e}")))
}

pub fn dec(field: &str, s: &str) -> Result<Decimal, VenueError> {
    Decimal::from_str(s).map_err(|_| VenueError::Decode(format!("{field}: `{s}` is not a decimal")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawInfo {
    pub rate_limits: Vec<RawLimit>,
    pub symbols: Vec<RawSymbol>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLimit {
    pub rate_limit_type: String,
    pub interval: String,
    pub interval_num: u32,
    pub limit: u32,
}
#[derive(Deserialize)]
pub struct RawSymbol {
    pub symbol: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub filters: Vec<serde_json::Value>,
}

impl RawSymbol {
    pub fn into_listing(self) -> Listing {
        let filter = |kind: &str, field: &str| {
            self.filters
                .iter()
                .find(|f| f["filterType"] == kind)
                .and_then(|f| f[field].as_str())
                .and_then(|s| Decimal::from_str(s).ok())
        };
        Listing {
            step_size: filter("LOT_SIZE", "stepSize"),
            min_qty: filter("LOT_SIZE", "minQty"),
            max_qty: filter("LOT_SIZE", "maxQty"),
            market_min_qty: filter("MARKET_LOT_SIZE", "minQty"),
            market_max_qty: filter("MARKET_LOT_SIZE", "maxQty"),
            market_step: filter("MARKET_LOT_SIZE", "stepSize"),
            tick_size: filter("PRICE_FILTER", "tickSize"),
            trading: self.status.as_deref().is_none_or(|s| s == "TRADING"),
            symbol: self.symbol,
        }
    }
}
#[derive(Deserialize)]
pub struct RawPrice {
    pub symbol: String,
    pub price: String,
    #[serde(default)]
    pub time: i64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPosition {
    pub symbol: String,
    pub position_amt: String,
    pub entry_price: String,
    pub mark_price: String,
    pub un_realized_profit: String,
    #[serde(default)]
    pub update_time: i64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawFill {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub side: String,
    pub price: String,
    pub qty: String,
    pub realized_pnl: String,
    pub commission: String,
    pub time: i64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawOrder {
    pub order_id: u64,
    pub symbol: String,
    pub status: String,
    pub client_order_id: String,
    #[serde(default)]
    pub orig_qty: Option<String>,
    #[serde(default)]
    pub executed_qty: Option<String>,
    #[serde(default)]
    pub avg_price: Option<String>,
    #[serde(default)]
    pub update_time: i64,
}

impl RawOrder {
    pub fn into_ack(self) -> Result<OrderAck, VenueError> {
        Ok(OrderAck {
            order_id: self.order_id,
            symbol: self.symbol,
            status: OrderStatus::parse(&self.status),
            client_order_id: self.client_order_id,
            orig_qty: dec("origQty", self.orig_qty.as_deref().unwrap_or("0"))?,
            executed_qty: dec("executedQty", self.executed_qty.as_deref().unwrap_or("0"))?,
            avg_price: dec("avgPrice", self.avg_price.as_deref().unwrap_or("0"))?,
            update_time_ms: self.update_time,
        })
    }
}

impl RawPrice {
    pub fn into_price(self) -> Result<Price, VenueError> {
        Ok(Price {
            price: dec("price", &self.price)?,
            symbol: self.symbol,
            time_ms: self.time,
        })
    }
}

impl RawPosition {
    /// The row as it is, flat or not.
    pub fn into_position(self) -> Result<Position, VenueError> {
        Ok(Position {
            amount: dec("positionAmt", &self.position_amt)?,
            entry_price: dec("entryPrice", &self.entry_price)?,
            mark_price: dec("markPrice", &self.mark_price)?,
            unrealized_pnl: dec("unRealizedProfit", &self.un_realized_profit)?,
            update_time_ms: self.update_time,
            symbol: self.symbol,
        })
    }

    /// The position, `None` when flat.
    pub fn into_open_position(self) -> Result<Option<Position>, VenueError> {
        let position = self.into_position()?;
        Ok((!position.amount.is_zero()).then_some(position))
    }
}

impl RawFill {
    pub fn into_fill(self) -> Result<Fill, VenueError> {
        Ok(Fill {
            side: OrderSide::parse(&self.side).ok_or_else(|| VenueError::Decode(format!("side `{}`", self.side)))?,
            price: dec("price", &self.price)?,
            qty: dec("qty", &self.qty)?,
            realized_pnl: dec("realizedPnl", &self.realized_pnl)?,
            commission: dec("commission", &self.commission)?,
            symbol: self.symbol,
            id: self.id,
            order_id: self.order_id,
            time_ms: self.time,
        })
    }
}

/// A conditional order as the Algo Order API answers it. Flags and the
/// triggered order's id are read leniently (booleans or strings, numbers or
/// strings, `""` before it triggers).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawAlgoOrder {
    pub algo_id: u64,
    pub client_algo_id: String,
    pub order_type: String,
    pub symbol: String,
    pub side: String,
    #[serde(default)]
    pub quantity: Option<String>,
    pub algo_status: String,
    #[serde(default)]
    pub trigger_price: Option<String>,
    #[serde(default)]
    pub working_type: Option<String>,
    #[serde(default)]
    pub close_position: serde_json::Value,
    #[serde(default)]
    pub reduce_only: serde_json::Value,
    #[serde(default)]
    pub price_protect: serde_json::Value,
    #[serde(default)]
    pub actual_order_id: serde_json::Value,
    #[serde(default)]
    pub create_time: i64,
    #[serde(default)]
    pub update_time: i64,
    #[serde(default)]
    pub trigger_time: i64,
}

/// `true`, `"true"` (any case) → true; anything else false.
pub fn flag(v: &serde_json::Value) -> bool {
    v.as_bool()
        .unwrap_or_else(|| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true")))
}

/// An order id given as a number or a numeric string; `None` for `""`, 0 or nothing.
pub fn order_id(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .filter(|id| *id > 0)
}

impl RawAlgoOrder {
    pub fn into_algo_order(self) -> Result<AlgoOrder, VenueError> {
        let optional = |field: &str, v: Option<&str>| match v {
            None | Some("") => Ok(Decimal::ZERO),
            Some(s) => dec(field, s),
        };
        Ok(AlgoOrder {
            side: OrderSide::parse(&self.side).ok_or_else(|| VenueError::Decode(format!("side `{}`", self.side)))?,
            kind: AlgoKind::parse(&self.order_type),
            status: AlgoStatus::parse(&self.algo_status),
            trigger_price: optional("triggerPrice", self.trigger_price.as_deref())?,
            working_type: self
                .working_type
                .as_deref()
                .and_then(WorkingType::parse)
                .unwrap_or_default(),
            close_position: flag(&self.close_position),
            reduce_only: flag(&self.reduce_only),
            price_protect: flag(&self.price_protect),
            quantity: optional("quantity", self.quantity.as_deref())?,
            order_id: order_id(&self.actual_order_id),
            create_time_ms: self.create_time,
            update_time_ms: self.update_time,
            trigger_time_ms: self.trigger_time,
            algo_id: self.algo_id,
            client_algo_id: self.client_algo_id,
            symbol: self.symbol,
        })
    }
}
