//! `/sim/*`: what tests and benchmarks use to watch and steer the
//! simulator (the meter, faults, prices, weight used by "another client",
//! fills and orders). Not part of Binance's API.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{Faults, Sim};
use crate::clock::now_ms as wall_ms;

pub async fn meter(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let weight: BTreeMap<String, u32> = sim
        .limiter()
        .weight_by_minute
        .iter()
        .map(|(m, w)| (m.to_string(), *w))
        .collect();
    let (fills_kept, orders_kept) = {
        let book = sim.book();
        let fills: usize = book.accounts.values().map(|a| a.fills.len()).sum();
        let orders: usize = book.accounts.values().map(|a| a.orders.len()).sum();
        (fills, orders)
    };
    let conns = sim.streams.connections();
    let meter = sim.meter();
    Json(json!({
        "requests": meter.requests,
        "answers": meter.answers,
        "fills_kept": fills_kept,
        "ws_connections": {"public": conns.0, "market": conns.1, "private": conns.2},
        "ws_connections_open": sim.streams.open_now(),
        "ws_connections_refused": sim.streams.refused(),
        "ws_subscribes": sim.streams.subscribes(),
        "orders_kept": orders_kept,
        "weight_by_minute": weight,
        "weight_limit": sim.limiter().limit,
        "violations": sim.limiter().total_violations(),
    }))
}

pub async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults())
}

pub async fn set_faults(State(sim): State<Arc<Sim>>, Json(faults): Json<Faults>) -> Json<Faults> {
    *sim.faults.write().unwrap_or_else(|e| e.into_inner()) = faults.clone();
    Json(faults)
}

/// `{"BTCUSDT": "95000"}`: moves last prices (the mark follows within a
/// second) and triggers the algo orders they cross.
pub async fn set_prices(State(sim): State<Arc<Sim>>, Json(prices): Json<BTreeMap<String, String>>) -> Response {
    let matching = sim.algo_matching();
    let mut book = sim.book();
    for (symbol, price) in prices {
        match Decimal::from_str(&price) {
            Ok(p) if p > Decimal::ZERO => book.set_price(&symbol, p, wall_ms()),
            _ => return (StatusCode::UNPROCESSABLE_ENTITY, format!("bad price for {symbol}")).into_response(),
        }
    }
    book.trigger_algos(wall_ms(), matching);
    StatusCode::NO_CONTENT.into_response()
}

pub async fn consume(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    let weight = body["weight"].as_u64().unwrap_or(0) as u32;
    sim.limiter().consume(wall_ms(), weight);
    StatusCode::NO_CONTENT.into_response()
}

fn account_key(sim: &Sim, name: &str) -> Option<String> {
    sim.book()
        .accounts
        .iter()
        .find(|(_, a)| a.name == name)
        .map(|(k, _)| k.clone())
}

pub async fn fills(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(key) = q.get("account").and_then(|a| account_key(&sim, a)) else {
        return (StatusCode::NOT_FOUND, "unknown account").into_response();
    };
    Json(sim.book().accounts[&key].fills.clone()).into_response()
}

pub async fn orders(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(key) = q.get("account").and_then(|a| account_key(&sim, a)) else {
        return (StatusCode::NOT_FOUND, "unknown account").into_response();
    };
    let mut orders: Vec<_> = sim.book().accounts[&key].orders.values().cloned().collect();
    orders.sort_by_key(|o| o.order_id);
    Json(orders).into_response()
}

/// Every algo (conditional) order of the account, oldest first, in the REST shape.
pub async fn algo_orders(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(key) = q.get("account").and_then(|a| account_key(&sim, a)) else {
        return (StatusCode::NOT_FOUND, "unknown account").into_response();
    };
    let book = sim.book();
    let rows: Vec<Value> = book.accounts[&key].algos.values().map(|a| a.rest()).collect();
    Json(rows).into_response()
}

/// `{"account", "symbol", "side", "qty"}`: a trade made outside the service, as
/// on the venue's app: a plain MARKET order filled at the current price, told
/// to the account's user stream like any other.
pub async fn trade(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    let Some(key) = body["account"].as_str().and_then(|a| account_key(&sim, a)) else {
        return (StatusCode::NOT_FOUND, "unknown account").into_response();
    };
    let side = match body["side"].as_str() {
        Some("BUY") => "BUY",
        Some("SELL") => "SELL",
        _ => return (StatusCode::UNPROCESSABLE_ENTITY, "side must be BUY or SELL").into_response(),
    };
    let qty = match &body["qty"] {
        Value::String(s) => Decimal::from_str(s).ok(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    };
    let (Some(symbol), Some(qty)) = (body["symbol"].as_str(), qty) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "need symbol and qty").into_response();
    };
    let result = sim.book().outside_trade(&key, symbol, side, qty, wall_ms());
    match result {
        Ok(order) => Json(order).into_response(),
        Err(r) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"code": r.code, "msg": r.msg})),
        )
            .into_response(),
    }
}

/// `{"name", "api_key", "api_secret", "opening_positions"?}`: an account
/// created at the venue (as an operator would before adding it to the
/// service), with a few opening positions (2 unless said). 201; 409 when the
/// key or the name is taken; 422 when a field is missing.
pub async fn add_account(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    let field = |k: &str| body[k].as_str().filter(|v| !v.is_empty()).map(str::to_string);
    let (Some(name), Some(key), Some(secret)) = (field("name"), field("api_key"), field("api_secret")) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "need name, api_key and api_secret").into_response();
    };
    let opening = body["opening_positions"].as_u64().unwrap_or(2).min(20) as usize;
    let mut book = sim.book();
    if book.accounts.contains_key(&key) || book.accounts.values().any(|a| a.name == name) {
        return (StatusCode::CONFLICT, "an account with this key or name exists").into_response();
    }
    book.add_account(&key, &name, &secret, wall_ms(), opening);
    (StatusCode::CREATED, Json(json!({"name": name}))).into_response()
}

/// `{"account", "enabled"}`: the account's hedge mode (`dualSidePosition`).
pub async fn hedge(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    let Some(key) = body["account"].as_str().and_then(|a| account_key(&sim, a)) else {
        return (StatusCode::NOT_FOUND, "unknown account").into_response();
    };
    let Some(enabled) = body["enabled"].as_bool() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "need {\"enabled\": true|false}").into_response();
    };
    if let Some(account) = sim.book().accounts.get_mut(&key) {
        account.hedge = enabled;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `{"symbol": "X"}`: the venue stops listing X (every route answers -1121 for it).
pub async fn delist(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    match body["symbol"].as_str() {
        Some(symbol) if sim.book().delist(symbol) => StatusCode::NO_CONTENT.into_response(),
        _ => (StatusCode::NOT_FOUND, "unknown symbol").into_response(),
    }
}

/// `{"paused": true}` stops the trading done elsewhere (random fills) until `false`:
/// positions then change only by the client's own orders.
pub async fn trading(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    match body["paused"].as_bool() {
        Some(paused) => {
            sim.trading_paused.store(paused, std::sync::atomic::Ordering::Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::UNPROCESSABLE_ENTITY, "need {\"paused\": true|false}").into_response(),
    }
}

/// Drops every WebSocket connection now, as a network failure would.
pub async fn drop_streams(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.streams.drop_all();
    StatusCode::NO_CONTENT
}

/// Expires every listen key now, or only `{"account": name}`'s: their
/// streams get `listenKeyExpired`, then nothing.
pub async fn expire_listen_keys(State(sim): State<Arc<Sim>>, body: Option<Json<Value>>) -> Response {
    match body.as_ref().and_then(|b| b["account"].as_str()) {
        None => sim.streams.expire_all(),
        Some(name) => match account_key(&sim, name) {
            Some(key) => sim.streams.expire_of(&key),
            None => return (StatusCode::NOT_FOUND, "unknown account").into_response(),
        },
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `{"symbol", "bid", "ask"}`: a `bookTicker` event only; REST prices stay as they are.
pub async fn book_ticker(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    let price = |k: &str| body[k].as_str().and_then(|v| Decimal::from_str(v).ok());
    match (body["symbol"].as_str(), price("bid"), price("ask")) {
        (Some(symbol), Some(bid), Some(ask)) if sim.publish_book_ticker(symbol, bid, ask) => {
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "need a listed symbol, bid and ask").into_response(),
    }
}
