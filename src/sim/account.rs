//! The signed `/fapi` routes: positions (v2 and v3 shapes, with the `symbol`
//! filter), fills, leverage brackets, the position mode, MARKET orders placed
//! and looked up as Binance answers them (`ACK` unless `RESULT` is asked for;
//! conditional types refused with -4120, they live in the Algo Order API,
//! `algo_api.rs`), and refusals with Binance's code and message.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::fapi::{binance_error, one_or_all};
use super::orders::Matching;
use super::{Faults, Sim};

pub async fn route(
    sim: &Arc<Sim>,
    method: &Method,
    path: &str,
    key: &str,
    params: &HashMap<String, String>,
    faults: &Faults,
    now: i64,
) -> Response {
    match (method.as_str(), path) {
        ("GET", "/fapi/v2/positionRisk") => position_risk(sim, key, params, false),
        ("GET", "/fapi/v3/positionRisk") => position_risk(sim, key, params, true),
        ("GET", "/fapi/v1/userTrades") => user_trades(sim, key, params),
        ("GET", "/fapi/v1/leverageBracket") => leverage_brackets(sim, params),
        ("GET", "/fapi/v1/order") => query_order(sim, key, params),
        ("POST", "/fapi/v1/order") => place_order(sim, key, params, faults, now).await,
        ("GET", "/fapi/v1/positionSide/dual") => {
            Json(json!({"dualSidePosition": sim.book().accounts[key].hedge})).into_response()
        }
        (_, route) if super::algo_api::ROUTES.contains(&route) => {
            super::algo_api::route(sim, method, path, key, params, faults, now)
        }
        _ => binance_error(StatusCode::NOT_FOUND, -1000, "Unknown route."),
    }
}

/// Every listed symbol (v2), or only open positions (v3), filtered to `symbol` when given.
fn position_risk(sim: &Sim, key: &str, params: &HashMap<String, String>, v3: bool) -> Response {
    let book = sim.book();
    let account = &book.accounts[key];
    let rows: Vec<Value> = book
        .prices
        .iter()
        .filter(|(symbol, _)| params.get("symbol").is_none_or(|s| s == *symbol))
        .filter_map(|(symbol, mark)| {
            let p = account.positions.get(symbol).cloned().unwrap_or_default();
            if v3 && p.amount.is_zero() {
                return None;
            }
            let notional = (*mark * p.amount).round_dp(8);
            Some(json!({
                "symbol": symbol,
                "positionAmt": p.amount.to_string(),
                "entryPrice": p.entry.round_dp(8).to_string(),
                "breakEvenPrice": p.entry.round_dp(8).to_string(),
                "markPrice": mark.to_string(),
                "unRealizedProfit": ((*mark - p.entry) * p.amount).round_dp(8).to_string(),
                "liquidationPrice": "0",
                "leverage": "10",
                "maxNotionalValue": "50000000",
                "marginType": "cross",
                "isolatedMargin": "0",
                "isAutoAddMargin": "false",
                "positionSide": "BOTH",
                "notional": notional.to_string(),
                "marginAsset": "USDT",
                "isolatedWallet": "0",
                "initialMargin": (notional.abs() / Decimal::from(10)).round_dp(8).to_string(),
                "maintMargin": (notional.abs() * Decimal::new(4, 3)).round_dp(8).to_string(),
                "positionInitialMargin": (notional.abs() / Decimal::from(10)).round_dp(8).to_string(),
                "openOrderInitialMargin": "0",
                "adl": 1,
                "bidNotional": "0",
                "askNotional": "0",
                "updateTime": p.update_time,
            }))
        })
        .collect();
    Json(rows).into_response()
}

fn user_trades(sim: &Sim, key: &str, params: &HashMap<String, String>) -> Response {
    let Some(symbol) = params.get("symbol") else {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'symbol' was not sent.",
        );
    };
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500)
        .clamp(1, 1000);
    let book = sim.book();
    let fills = book.accounts[key].fills.iter().filter(|f| &f.symbol == symbol);
    let rows: Vec<_> = match params.get("fromId").and_then(|f| f.parse::<u64>().ok()) {
        Some(from) => fills.filter(|f| f.id >= from).take(limit).collect(),
        None => {
            let all: Vec<_> = fills.collect();
            let skip = all.len().saturating_sub(limit);
            all.into_iter().skip(skip).collect()
        }
    };
    Json(rows).into_response()
}

fn leverage_brackets(sim: &Sim, params: &HashMap<String, String>) -> Response {
    let book = sim.book();
    let rows = book
        .prices
        .keys()
        .map(|s| {
            let row = json!({"symbol": s, "notionalCoef": 1.0, "brackets": [
                {"bracket": 1, "initialLeverage": 20, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0},
                {"bracket": 2, "initialLeverage": 10, "notionalCap": 50000000, "notionalFloor": 50000, "maintMarginRatio": 0.01, "cum": 300.0}
            ]});
            (s.clone(), row)
        })
        .collect();
    one_or_all(params, rows)
}

fn query_order(sim: &Sim, key: &str, params: &HashMap<String, String>) -> Response {
    let book = sim.book();
    let id = params.get("origClientOrderId").cloned().unwrap_or_default();
    match book.accounts[key].orders.get(&id) {
        Some(order) => Json(order).into_response(),
        None => binance_error(StatusCode::BAD_REQUEST, -2013, "Order does not exist."),
    }
}

async fn place_order(
    sim: &Arc<Sim>,
    key: &str,
    params: &HashMap<String, String>,
    faults: &Faults,
    now: i64,
) -> Response {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let side = match get("side") {
        "BUY" => "BUY",
        "SELL" => "SELL",
        _ => return binance_error(StatusCode::BAD_REQUEST, -1117, "Invalid side."),
    };
    match get("type") {
        "MARKET" => {}
        "STOP" | "STOP_MARKET" | "TAKE_PROFIT" | "TAKE_PROFIT_MARKET" | "TRAILING_STOP_MARKET" => {
            return binance_error(
                StatusCode::BAD_REQUEST,
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            );
        }
        _ => {
            return binance_error(
                StatusCode::BAD_REQUEST,
                -1116,
                "Invalid orderType: the simulator fills MARKET orders.",
            );
        }
    }
    if let Err(refused) = position_mode(sim, key, params) {
        return *refused;
    }
    if get("reduceOnly") != "true" {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1106,
            "The simulator accepts reduce-only orders only.",
        );
    }
    let Ok(qty) = Decimal::from_str(get("quantity")) else {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'quantity' was not sent.",
        );
    };
    let generated;
    let client_id = match get("newClientOrderId") {
        "" => {
            generated = format!("sim-{now}-{}", rand::random::<u32>());
            generated.as_str()
        }
        id => id,
    };
    let valid_id = client_id.len() <= 36
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/_-".contains(&b));
    if !valid_id {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'.",
        );
    }
    if sim.take_fault(|f| &mut f.reject_orders) {
        return refusal(faults.reject_code, -2019);
    }
    let matching = Matching {
        delay_ms: faults.fill_delay_ms,
        partial: sim.take_fault(|f| &mut f.partial_fills).then(|| {
            let ratio = if faults.partial_fill_ratio > 0.0 {
                faults.partial_fill_ratio
            } else {
                0.4
            };
            Decimal::try_from(ratio.clamp(0.0, 1.0)).unwrap_or(Decimal::new(4, 1))
        }),
    };
    let result = {
        sim.book()
            .market_order(key, get("symbol"), side, qty, client_id, now, matching)
    };
    let order = match result {
        Ok(order) => order,
        Err(reject) => return binance_error(StatusCode::BAD_REQUEST, reject.code, reject.msg),
    };
    let fail_after = sim.take_fault(|f| &mut f.order_error_after_execute);
    // Executed; the answer waits (no lock is held while it does).
    let hold = faults.order_delay_after_execute_ms + faults.hold_orders_ms.get(get("symbol")).copied().unwrap_or(0);
    if hold > 0 {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    if fail_after {
        return binance_error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1001,
            "Internal error; execution status unknown.",
        );
    }
    let answer = match get("newOrderRespType") {
        "RESULT" => order,
        _ => order.ack(),
    };
    Json(answer).into_response()
}

/// A refusal by the `reject_*` faults: `code` (`default` when 0) with Binance's
/// message for it; a server-side condition (-1001) comes as a 503.
pub fn refusal(code: i64, default: i64) -> Response {
    let code = if code == 0 { default } else { code };
    let (status, msg) = match code {
        -1001 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Internal error; unable to process your request. Please try again.",
        ),
        -1008 => (
            StatusCode::BAD_REQUEST,
            "Server is currently overloaded with other requests. Please try again in a few minutes.",
        ),
        -1015 => (
            StatusCode::BAD_REQUEST,
            "Too many new orders; current limit is 1200 orders per MINUTE.",
        ),
        -2019 => (StatusCode::BAD_REQUEST, "Margin is insufficient."),
        -2022 => (StatusCode::BAD_REQUEST, "ReduceOnly Order is rejected."),
        -4045 => (StatusCode::BAD_REQUEST, "Reach max stop order limit."),
        -4118 => (
            StatusCode::BAD_REQUEST,
            "ReduceOnly Order Failed. Please check your existing position and open orders",
        ),
        -4131 => (
            StatusCode::BAD_REQUEST,
            "The counterparty's best price does not meet the PERCENT_PRICE filter limit.",
        ),
        -4164 => (
            StatusCode::BAD_REQUEST,
            "Order's notional must be no smaller than 5.0 (unless you choose reduce only)",
        ),
        _ => (StatusCode::BAD_REQUEST, "Order rejected (simulated fault)."),
    };
    binance_error(status, code, msg)
}

/// The account's position mode against the order's parameters: in hedge mode
/// `reduceOnly` is refused (-1106) and `positionSide` must be LONG or SHORT
/// (-4061); in one-way mode it may only be BOTH (-4061). The simulator keeps
/// one position per symbol, so a valid hedge-mode order is refused too.
pub fn position_mode(sim: &Sim, key: &str, params: &HashMap<String, String>) -> Result<(), Box<Response>> {
    let hedge = sim.book().accounts.get(key).is_some_and(|a| a.hedge);
    let side = params.get("positionSide").map(String::as_str).unwrap_or("");
    let error = |code, msg| Err(Box::new(binance_error(StatusCode::BAD_REQUEST, code, msg)));
    match (hedge, side) {
        (true, _) if params.get("reduceOnly").is_some_and(|r| r.eq_ignore_ascii_case("true")) => {
            error(-1106, "Parameter 'reduceOnly' sent when not required.")
        }
        (true, "LONG" | "SHORT") => error(-1000, "The simulator does not trade hedge-mode positions."),
        (true, _) | (false, "LONG" | "SHORT") => error(-4061, "Order's position side does not match user's setting."),
        (false, "" | "BOTH") => Ok(()),
        (false, _) => error(-4060, "Invalid position side."),
    }
}
