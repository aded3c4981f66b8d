//! Binance USDⓈ-M routes and their IP weights
//! (`../shared/reference/binance-usdm.md`), written once: the client asks
//! for admission with them and the simulator charges them.

use http::Method;

pub const TIME: &str = "/fapi/v1/time";
pub const EXCHANGE_INFO: &str = "/fapi/v1/exchangeInfo";
pub const TICKER_PRICE: &str = "/fapi/v1/ticker/price";
pub const POSITION_RISK: &str = "/fapi/v2/positionRisk";
pub const USER_TRADES: &str = "/fapi/v1/userTrades";
pub const ORDER: &str = "/fapi/v1/order";
/// The user-data stream's key: create (POST), extend (PUT), close (DELETE).
pub const LISTEN_KEY: &str = "/fapi/v1/listenKey";
/// Whether the account is in hedge mode (`dualSidePosition`).
pub const POSITION_SIDE_DUAL: &str = "/fapi/v1/positionSide/dual";
/// Conditional orders (the Algo Order API): place (POST), query (GET), cancel (DELETE).
pub const ALGO_ORDER: &str = "/fapi/v1/algoOrder";
/// Open conditional orders, of one symbol or all.
pub const OPEN_ALGO_ORDERS: &str = "/fapi/v1/openAlgoOrders";
/// Routes of the Algo Order API the simulator serves and this client does not call.
pub const ALL_ALGO_ORDERS: &str = "/fapi/v1/allAlgoOrders";
pub const ALGO_OPEN_ORDERS: &str = "/fapi/v1/algoOpenOrders";

/// Routes the simulator also serves for third-party clients (ccxt), which this client does not call.
pub const TICKER_24HR: &str = "/fapi/v1/ticker/24hr";
pub const POSITION_RISK_V3: &str = "/fapi/v3/positionRisk";
pub const LEVERAGE_BRACKET: &str = "/fapi/v1/leverageBracket";

/// Every route we call, for the `endpoint` label.
pub const ENDPOINTS: &[&str] = &[
    TIME,
    EXCHANGE_INFO,
    TICKER_PRICE,
    POSITION_RISK,
    USER_TRADES,
    ORDER,
    LISTEN_KEY,
    POSITION_SIDE_DUAL,
    ALGO_ORDER,
    OPEN_ALGO_ORDERS,
];

/// The IP weight of a request; `None` for a route we do not know.
/// `with_symbol`: the request names one `symbol`. The Algo Order API's are
/// documented for placing (0) and cancelling (1); the others are taken from
/// their plain-order counterparts (`openOrders` 1 or 40, `allOrders` 5).
pub fn weight(method: &Method, route: &str, with_symbol: bool) -> Option<u32> {
    Some(match (method.as_str(), route) {
        ("GET", TIME) | ("GET", EXCHANGE_INFO) | ("GET", ORDER) => 1,
        // One symbol, or every symbol for 2.
        ("GET", TICKER_PRICE) => {
            if with_symbol {
                1
            } else {
                2
            }
        }
        ("GET", TICKER_24HR) => {
            if with_symbol {
                1
            } else {
                40
            }
        }
        ("GET", POSITION_RISK) | ("GET", POSITION_RISK_V3) | ("GET", USER_TRADES) => 5,
        ("GET", LEVERAGE_BRACKET) => 1,
        ("GET", POSITION_SIDE_DUAL) => 30,
        ("POST", ALGO_ORDER) => 0,
        ("GET", ALGO_ORDER) | ("DELETE", ALGO_ORDER) | ("DELETE", ALGO_OPEN_ORDERS) => 1,
        ("GET", OPEN_ALGO_ORDERS) => {
            if with_symbol {
                1
            } else {
                40
            }
        }
        ("GET", ALL_ALGO_ORDERS) => 5,
        // Orders cost no IP weight; they count toward the order limits.
        ("POST", ORDER) => 0,
        ("POST", LISTEN_KEY) | ("PUT", LISTEN_KEY) | ("DELETE", LISTEN_KEY) => 1,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_we_call_has_a_weight() {
        for route in ENDPOINTS.iter().filter(|r| **r != LISTEN_KEY) {
            assert!(
                weight(&Method::GET, route, false).is_some(),
                "{route} has no GET weight"
            );
        }
        assert_eq!(weight(&Method::PUT, LISTEN_KEY, false), Some(1));
        assert_eq!(weight(&Method::GET, TICKER_PRICE, false), Some(2));
        assert_eq!(weight(&Method::GET, TICKER_PRICE, true), Some(1));
        assert_eq!(weight(&Method::POST, ORDER, true), Some(0));
        assert_eq!(weight(&Method::DELETE, ORDER, true), None);
        assert_eq!(weight(&Method::GET, POSITION_SIDE_DUAL, false), Some(30));
        assert_eq!(weight(&Method::POST, ALGO_ORDER, true), Some(0));
        assert_eq!(weight(&Method::GET, OPEN_ALGO_ORDERS, false), Some(40));
    }
}
