//! Conditional orders resting on the venue (Binance's Algo Order API): what
//! is asked for, and the order as the venue reports it. The statuses are
//! plain strings at the edges (`as_str`/`parse`) so the store can keep them.

use rust_decimal::Decimal;
use serde::Serialize;

use super::OrderSide;

/// Where an algo order is in its life: `New` (resting) → `Triggering` →
/// `Triggered` (it became a MARKET order) → `Finished`; or `Canceled`,
/// `Rejected` (refused when triggered), `Expired` (cancelled by the venue,
/// e.g. nothing left to close).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AlgoStatus {
    New,
    Triggering,
    Triggered,
    Finished,
    Canceled,
    Rejected,
    Expired,
    Other(String),
}

impl AlgoStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "NEW" => AlgoStatus::New,
            "TRIGGERING" => AlgoStatus::Triggering,
            "TRIGGERED" => AlgoStatus::Triggered,
            "FINISHED" => AlgoStatus::Finished,
            "CANCELED" | "CANCELLED" => AlgoStatus::Canceled,
            "REJECTED" => AlgoStatus::Rejected,
            "EXPIRED" => AlgoStatus::Expired,
            other => AlgoStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AlgoStatus::New => "NEW",
            AlgoStatus::Triggering => "TRIGGERING",
            AlgoStatus::Triggered => "TRIGGERED",
            AlgoStatus::Finished => "FINISHED",
            AlgoStatus::Canceled => "CANCELED",
            AlgoStatus::Rejected => "REJECTED",
            AlgoStatus::Expired => "EXPIRED",
            AlgoStatus::Other(s) => s,
        }
    }

    /// Resting on the venue, waiting for its trigger.
    pub fn is_open(&self) -> bool {
        *self == AlgoStatus::New
    }

    /// Will not change any more (a status we do not know may still).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            AlgoStatus::Finished | AlgoStatus::Canceled | AlgoStatus::Rejected | AlgoStatus::Expired
        )
    }
}

/// The order type an algo order becomes a MARKET order as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AlgoKind {
    /// Triggers when the price moves against the position (a stop-loss).
    StopMarket,
    /// Triggers when the price moves in its favour (a take-profit).
    TakeProfitMarket,
    Other(String),
}

impl AlgoKind {
    pub fn parse(s: &str) -> Self {
        match s {
            "STOP_MARKET" => AlgoKind::StopMarket,
            "TAKE_PROFIT_MARKET" => AlgoKind::TakeProfitMarket,
            other => AlgoKind::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AlgoKind::StopMarket => "STOP_MARKET",
            AlgoKind::TakeProfitMarket => "TAKE_PROFIT_MARKET",
            AlgoKind::Other(s) => s,
        }
    }
}

/// Which price the trigger watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum WorkingType {
    /// The mark price (smoother; updated every second).
    MarkPrice,
    /// The last traded price (the venue's default).
    #[default]
    ContractPrice,
}

impl WorkingType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "MARK_PRICE" => Some(WorkingType::MarkPrice),
            "CONTRACT_PRICE" => Some(WorkingType::ContractPrice),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkingType::MarkPrice => "MARK_PRICE",
            WorkingType::ContractPrice => "CONTRACT_PRICE",
        }
    }
}

/// How much an algo order closes when it triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AlgoSize {
    /// Whatever the position is then (`closePosition=true`): nothing to
    /// close makes the venue expire it.
    ClosePosition,
    /// At most this much, reduce-only (`quantity` + `reduceOnly=true`).
    ReduceOnly(Decimal),
}

/// A conditional order to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlgoOrderRequest {
    pub symbol: String,
    pub side: OrderSide,
    pub kind: AlgoKind,
    /// A whole number of ticks (`Catalog::round_price_to_tick`), or the venue refuses it (-4014).
    pub trigger_price: Decimal,
    pub working_type: WorkingType,
    pub size: AlgoSize,
    /// Do not trigger while the mark and last prices diverge beyond the symbol's threshold.
    pub price_protect: bool,
    /// Ours, unique per account: what a lost answer is looked up by.
    pub client_algo_id: String,
}

/// A conditional order as the venue reports it (REST or `ALGO_UPDATE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlgoOrder {
    pub algo_id: u64,
    pub client_algo_id: String,
    pub symbol: String,
    pub side: OrderSide,
    pub kind: AlgoKind,
    pub status: AlgoStatus,
    pub trigger_price: Decimal,
    pub working_type: WorkingType,
    pub close_position: bool,
    pub reduce_only: bool,
    pub price_protect: bool,
    /// 0 for a `closePosition` order.
    pub quantity: Decimal,
    /// The matching engine's order it became once triggered.
    pub order_id: Option<u64>,
    /// Venue times (ms); 0 when not given (`trigger_time_ms` until triggered).
    pub create_time_ms: i64,
    pub update_time_ms: i64,
    pub trigger_time_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_tell_open_from_final() {
        for s in [
            "NEW",
            "TRIGGERING",
            "TRIGGERED",
            "FINISHED",
            "CANCELED",
            "REJECTED",
            "EXPIRED",
            "ODD",
        ] {
            assert_eq!(AlgoStatus::parse(s).as_str(), s);
        }
        assert!(AlgoStatus::New.is_open() && !AlgoStatus::New.is_final());
        assert!(!AlgoStatus::Triggered.is_final(), "its MARKET order is still working");
        assert!(AlgoStatus::Expired.is_final());
        assert_eq!(AlgoKind::parse("STOP").as_str(), "STOP");
        assert_eq!(WorkingType::parse("MARK_PRICE"), Some(WorkingType::MarkPrice));
    }
}
