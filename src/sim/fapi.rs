//! The `/fapi` routes the client uses, with Binance's shapes and error codes.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::auth::authenticate;
use super::{Faults, Sim};

pub fn binance_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, Json(json!({"code": code, "msg": msg}))).into_response()
}

#[allow(clippy::too_many_arguments)]
pub async fn route(
    sim: &Arc<Sim>,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
    payload: &str,
    api_key: Option<&str>,
    faults: &Faults,
    now: i64,
) -> Response {
    let server_time = now + faults.clock_offset_ms;
    match (method.as_str(), path) {
        ("GET", "/fapi/v1/time") => Json(json!({"serverTime": server_time})).into_response(),
        ("GET", "/fapi/v1/exchangeInfo") => exchange_info(sim, server_time),
        ("GET", "/fapi/v1/ticker/price") => ticker(sim, params, server_time),
        _ => {
            let key = match authenticate(sim, params, payload, api_key, server_time) {
                Ok(key) => key,
                Err(r) => {
                    return *r;
                }
            };
            match (method.as_str(), path) {
                ("GET", "/fapi/v2/positionRisk") => position_risk(sim, &key),
                ("GET", "/fapi/v1/userTrades") => user_trades(sim, &key, params),
                ("GET", "/fapi/v1/order") => query_order(sim, &key, params),
                _ => place_order(sim, &key, params, faults, now).await,
            }
        }
    }
}

fn exchange_info(sim: &Sim, server_time: i64) -> Response {
    let limit = sim.limiter().limit;
    let symbols: Vec<Value> = sim
        .book()
        .prices
        .keys()
        .map(|s| json!({"symbol": s, "status": "TRADING", "quoteAsset": "USDT"}))
        .collect();
    Json(json!({
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}
        ],
        "symbols": symbols,
    }))
    .into_response()
}

fn ticker(sim: &Sim, params: &HashMap<String, String>, time: i64) -> Response {
    let book = sim.book();
    let row = |s: &String, p: &Decimal| json!({"symbol": s, "price": p.to_string(), "time": time});
    match params.get("symbol") {
        Some(symbol) => match book.prices.get(symbol) {
            Some(p) => Json(row(symbol, p)).into_response(),
            None => binance_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol."),
        },
        None => Json(book.prices.iter().map(|(s, p)| row(s, p)).collect::<Vec<_>>()).into_response(),
    }
}

fn position_risk(sim: &Sim, key: &str) -> Response {
    let book = sim.book();
    let account = &book.accounts[key];
    let rows: Vec<Value> = book
        .prices
        .iter()
        .map(|(symbol, mark)| {
            let p = account.positions.get(symbol).cloned().unwrap_or_default();
            json!({
                "symbol": symbol,
                "positionAmt": p.amount.to_string(),
                "entryPrice": p.entry.round_dp(8).to_string(),
                "markPrice": mark.to_string(),
                "unRealizedProfit": ((*mark - p.entry) * p.amount).round_dp(8).to_string(),
                "liquidationPrice": "0",
                "leverage": "10",
                "marginType": "cross",
                "positionSide": "BOTH",
                "notional": (*mark * p.amount).round_dp(8).to_string(),
                "updateTime": p.update_time,
            })
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
    if get("type") != "MARKET" {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1116,
            "Invalid orderType: the simulator fills MARKET orders.",
        );
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
    let client_id = get("newClientOrderId");
    let valid_id = !client_id.is_empty()
        && client_id.len() <= 36
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
    let result = { sim.book().market_order(key, get("symbol"), side, qty, client_id, now) };
    let order = match result {
        Ok(order) => order,
        Err(reject) => return binance_error(StatusCode::BAD_REQUEST, reject.code, reject.msg),
    };
    let fail_after = {
        let mut f = sim.faults.write().unwrap_or_else(|e| e.into_inner());
        let fail = f.order_error_after_execute > 0;
        f.order_error_after_execute = f.order_error_after_execute.saturating_sub(1);
        fail
    };
    if faults.order_delay_after_execute_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.order_delay_after_execute_ms)).await;
    }
    if fail_after {
        return binance_error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1001,
            "Internal error; execution status unknown.",
        );
    }
    Json(order).into_response()
}
