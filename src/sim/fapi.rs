//! The `/fapi` routes, dispatched with Binance's shapes and error codes:
//! market data here (time, `exchangeInfo`, tickers), signed account routes
//! in `account.rs`. A symbol the venue does not list is `-1121` on every
//! route, as on Binance.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::account;
use super::algo::MAX_OPEN_PER_SYMBOL;
use super::auth::authenticate;
use super::book::{Book, STEP_SIZE};
use super::lots::Lot;
use super::{Faults, Sim};

pub fn binance_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, Json(json!({"code": code, "msg": msg}))).into_response()
}

pub fn invalid_symbol() -> Response {
    binance_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.")
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
    if let ("POST", "/fapi/v1/order", Some(symbol)) = (method.as_str(), path, params.get("symbol")) {
        sim.order_arrived(symbol, api_key);
    }
    sim.book().settle_due(now);
    match (method.as_str(), path) {
        ("GET", "/fapi/v1/time") => return Json(json!({"serverTime": server_time})).into_response(),
        ("GET", "/fapi/v1/exchangeInfo") => return exchange_info(sim, server_time),
        _ => {}
    }
    if let Some(symbol) = params.get("symbol")
        && !sim.book().prices.contains_key(symbol)
    {
        return invalid_symbol();
    }
    match (method.as_str(), path) {
        ("GET", "/fapi/v1/ticker/price") => return ticker(sim, params, server_time),
        ("GET", "/fapi/v1/ticker/24hr") => return ticker_24hr(sim, params, server_time),
        (_, "/fapi/v1/listenKey") => return listen_key(sim, method, api_key, params),
        _ => {}
    }
    let key = match authenticate(sim, params, payload, api_key, server_time) {
        Ok(key) => key,
        Err(r) => return *r,
    };
    account::route(sim, method, path, &key, params, faults, now).await
}

/// Rows as `symbol → row`, filtered to one `symbol` when the request names
/// it (then an object, not an array, as Binance answers).
pub fn one_or_all(params: &HashMap<String, String>, rows: Vec<(String, Value)>) -> Response {
    match params.get("symbol") {
        Some(symbol) => match rows.into_iter().find(|(s, _)| s == symbol) {
            Some((_, row)) => Json(row).into_response(),
            None => invalid_symbol(),
        },
        None => Json(rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>()).into_response(),
    }
}

fn exchange_info(sim: &Sim, server_time: i64) -> Response {
    let limit = sim.limiter().limit;
    let symbols: Vec<Value> = {
        let book = sim.book();
        book.prices
            .keys()
            .map(|s| symbol_info(s, book.lots.get(s).copied().unwrap_or(Lot::for_price(book.prices[s]))))
            .collect()
    };
    Json(json!({
        "timezone": "UTC",
        "serverTime": server_time,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": true, "autoAssetExchange": "-10000"}],
        "symbols": symbols,
    }))
    .into_response()
}

/// A linear perpetual as Binance describes it: assets, precisions and filters.
fn symbol_info(symbol: &str, lot: Lot) -> Value {
    let base = symbol.strip_suffix("USDT").unwrap_or(symbol);
    let tick = lot.tick;
    let (min, max, market_max) = (
        lot.min_qty.to_string(),
        lot.max_qty.to_string(),
        lot.market_max_qty.to_string(),
    );
    json!({
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000i64,
        "onboardDate": 1569398400000i64,
        "status": "TRADING",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": tick.scale(),
        "quantityPrecision": STEP_SIZE.scale(),
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick.to_string(), "maxPrice": "10000000", "tickSize": tick.to_string()},
            {"filterType": "LOT_SIZE", "minQty": min, "maxQty": max, "stepSize": STEP_SIZE.to_string()},
            {"filterType": "MARKET_LOT_SIZE", "minQty": min, "maxQty": market_max, "stepSize": STEP_SIZE.to_string()},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": MAX_OPEN_PER_SYMBOL},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"}
        ],
    })
}

fn ticker(sim: &Sim, params: &HashMap<String, String>, time: i64) -> Response {
    let book = sim.book();
    let rows = book
        .prices
        .iter()
        .map(|(s, p)| (s.clone(), json!({"symbol": s, "price": p.to_string(), "time": time})))
        .collect();
    one_or_all(params, rows)
}

fn ticker_24hr(sim: &Sim, params: &HashMap<String, String>, time: i64) -> Response {
    let book = sim.book();
    let rows = book
        .prices
        .iter()
        .map(|(s, p)| (s.clone(), day_row(&book, s, *p, time)))
        .collect();
    one_or_all(params, rows)
}

fn day_row(book: &Book, symbol: &str, last: Decimal, time: i64) -> Value {
    let day = book.day.get(symbol).cloned().unwrap_or_default();
    let change = last - day.open;
    let percent = if day.open.is_zero() {
        Decimal::ZERO
    } else {
        (change / day.open * Decimal::from(100)).round_dp(3)
    };
    let weighted = if day.volume.is_zero() {
        last
    } else {
        (day.quote_volume / day.volume).round_dp(8)
    };
    json!({
        "symbol": symbol,
        "priceChange": change.to_string(),
        "priceChangePercent": percent.to_string(),
        "weightedAvgPrice": weighted.to_string(),
        "lastPrice": last.to_string(),
        "lastQty": "0",
        "openPrice": day.open.to_string(),
        "highPrice": day.high.to_string(),
        "lowPrice": day.low.to_string(),
        "volume": day.volume.to_string(),
        "quoteVolume": day.quote_volume.round_dp(8).to_string(),
        "openTime": time - 86_400_000,
        "closeTime": time,
        "firstId": 0,
        "lastId": day.trades,
        "count": day.trades,
    })
}

/// `POST|PUT|DELETE /fapi/v1/listenKey`: the API key header only, no signature.
fn listen_key(sim: &Sim, method: &Method, api_key: Option<&str>, params: &HashMap<String, String>) -> Response {
    let Some(api_key) = api_key.filter(|k| sim.book().accounts.contains_key(*k)) else {
        return binance_error(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        );
    };
    let key = params.get("listenKey").cloned().unwrap_or_default();
    match method.as_str() {
        "POST" => Json(json!({"listenKey": sim.streams.create(api_key)})).into_response(),
        "PUT" if sim.streams.extend(api_key, &key) => Json(json!({"listenKey": key})).into_response(),
        "DELETE" if sim.streams.close(api_key, &key) => Json(json!({})).into_response(),
        _ => binance_error(StatusCode::BAD_REQUEST, -1125, "This listenKey does not exist."),
    }
}
