//! The simulator's HTTP surface: Binance's routes under `/fapi`, and
//! `/sim/*` for tests (meter, faults, prices, fills, orders).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::limits::Verdict;
use super::{Faults, Sim};
use crate::clock::now_ms as wall_ms;
use crate::exchange::binance::{sign, weights};

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/sim/meter", get(meter))
        .route("/sim/faults", get(get_faults).post(set_faults))
        .route("/sim/prices", post(set_prices))
        .route("/sim/consume", post(consume))
        .route("/sim/fills", get(fills))
        .route("/sim/orders", get(orders))
        .fallback(fapi)
        .with_state(sim)
}

fn binance_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, Json(json!({"code": code, "msg": msg}))).into_response()
}

fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Everything under `/fapi`: meter, faults, limits, then the route itself.
async fn fapi(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().to_string();
    let query = query.unwrap_or_default();
    let payload = if method == Method::POST && !body.is_empty() {
        body.clone()
    } else {
        query.clone()
    };
    let params = parse_form(&payload);
    let Some(weight) = weights::weight(&method, &path, params.contains_key("symbol")) else {
        return binance_error(StatusCode::NOT_FOUND, -1000, "Unknown route.");
    };
    let faults = sim.faults();
    let account_key = headers
        .get("x-mbx-apikey")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let account_name = account_key
        .as_ref()
        .and_then(|k| sim.book().accounts.get(k).map(|a| a.name.clone()))
        .unwrap_or_else(|| "-".into());
    *sim.meter()
        .requests
        .entry(format!("{path} {account_name}"))
        .or_default() += 1;
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let now = wall_ms();
    let forced = {
        let mut f = sim.faults.write().unwrap_or_else(|e| e.into_inner());
        let forced = f.force_429 > 0;
        f.force_429 = f.force_429.saturating_sub(1);
        forced.then_some(f.force_429_retry_after_s.max(1))
    };
    let verdict = match forced {
        Some(retry_after_s) => sim.limiter().force_429(now, retry_after_s),
        None => sim.limiter().check(now, weight),
    };
    let mut response = match verdict {
        Verdict::TooMany { retry_after_s, .. } => {
            let mut r = binance_error(
                StatusCode::TOO_MANY_REQUESTS,
                -1003,
                "Too many requests; current limit is exceeded. Please use the websocket for live updates.",
            );
            r.headers_mut().insert("retry-after", HeaderValue::from(retry_after_s));
            r
        }
        Verdict::Banned { retry_after_s, .. } => {
            let mut r = binance_error(StatusCode::IM_A_TEAPOT, -1003, "Way too many requests; IP banned.");
            r.headers_mut().insert("retry-after", HeaderValue::from(retry_after_s));
            r
        }
        Verdict::Allowed { .. } => {
            let (fail, malformed) = {
                let mut book = sim.book();
                let fail = faults.error_rate.get(&path).is_some_and(|&p| book.chance(p));
                (fail, faults.malformed_rate.get(&path).is_some_and(|&p| book.chance(p)))
            };
            if fail {
                binance_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    -1001,
                    "Internal error; unable to process your request.",
                )
            } else {
                let r = route(
                    &sim,
                    &method,
                    &path,
                    &params,
                    &payload,
                    account_key.as_deref(),
                    &faults,
                    now,
                )
                .await;
                if malformed { truncate(r).await } else { r }
            }
        }
    };
    let used = sim.limiter().used(wall_ms());
    response
        .headers_mut()
        .insert("x-mbx-used-weight-1m", HeaderValue::from(used));
    let status = response.status().as_u16().to_string();
    *sim.meter().answers.entry(status).or_default() += 1;
    response
}

async fn truncate(r: Response) -> Response {
    let (parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let mut r = Response::from_parts(parts, axum::body::Body::from(half));
    r.headers_mut().remove("content-length");
    r
}

#[allow(clippy::too_many_arguments)]
async fn route(
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

/// Checks key, signature and timestamp as Binance does; returns the API key.
fn authenticate(
    sim: &Sim,
    params: &HashMap<String, String>,
    payload: &str,
    api_key: Option<&str>,
    server_time: i64,
) -> Result<String, Box<Response>> {
    let record = |code: &str| *sim.meter().answers.entry(code.to_string()).or_default() += 1;
    let Some(key) = api_key else {
        record("-2014");
        return Err(Box::new(binance_error(
            StatusCode::UNAUTHORIZED,
            -2014,
            "API-key format invalid.",
        )));
    };
    let Some(secret) = sim.book().accounts.get(key).map(|a| a.secret.clone()) else {
        record("-2015");
        return Err(Box::new(binance_error(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )));
    };
    let signed = payload.rsplit_once("&signature=");
    let valid = signed.is_some_and(|(data, signature)| sign::verify(&secret, data, signature));
    if !valid {
        record("-1022");
        return Err(Box::new(binance_error(
            StatusCode::BAD_REQUEST,
            -1022,
            "Signature for this request is not valid.",
        )));
    }
    let timestamp: i64 = params.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let recv_window: i64 = params
        .get("recvWindow")
        .and_then(|t| t.parse().ok())
        .unwrap_or(5000)
        .min(60_000);
    if !(timestamp < server_time + 1000 && server_time - timestamp <= recv_window) {
        record("-1021");
        return Err(Box::new(binance_error(
            StatusCode::BAD_REQUEST,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )));
    }
    Ok(key.to_string())
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

async fn meter(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let weight: BTreeMap<String, u32> = sim
        .limiter()
        .weight_by_minute
        .iter()
        .map(|(m, w)| (m.to_string(), *w))
        .collect();
    let meter = sim.meter();
    Json(json!({
        "requests": meter.requests,
        "answers": meter.answers,
        "weight_by_minute": weight,
        "weight_limit": sim.limiter().limit,
        "violations": sim.limiter().total_violations(),
    }))
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults())
}

async fn set_faults(State(sim): State<Arc<Sim>>, Json(faults): Json<Faults>) -> Json<Faults> {
    *sim.faults.write().unwrap_or_else(|e| e.into_inner()) = faults.clone();
    Json(faults)
}

async fn set_prices(State(sim): State<Arc<Sim>>, Json(prices): Json<BTreeMap<String, String>>) -> Response {
    let mut book = sim.book();
    for (symbol, price) in prices {
        match Decimal::from_str(&price) {
            Ok(p) if p > Decimal::ZERO => book.set_price(&symbol, p),
            _ => return (StatusCode::UNPROCESSABLE_ENTITY, format!("bad price for {symbol}")).into_response(),
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn consume(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
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

async fn fills(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(key) = q.get("account").and_then(|a| account_key(&sim, a)) else {
        return (StatusCode::NOT_FOUND, "unknown account").into_response();
    };
    Json(sim.book().accounts[&key].fills.clone()).into_response()
}

async fn orders(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(key) = q.get("account").and_then(|a| account_key(&sim, a)) else {
        return (StatusCode::NOT_FOUND, "unknown account").into_response();
    };
    let mut orders: Vec<_> = sim.book().accounts[&key].orders.values().cloned().collect();
    orders.sort_by_key(|o| o.order_id);
    Json(orders).into_response()
}
