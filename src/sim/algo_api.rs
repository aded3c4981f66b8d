//! Binance's Algo Order API over HTTP (signed): `POST|GET|DELETE
//! /fapi/v1/algoOrder`, `GET /fapi/v1/openAlgoOrders` (optionally per
//! symbol), `GET /fapi/v1/allAlgoOrders`, `DELETE /fapi/v1/algoOpenOrders`;
//! parameters checked and refused as the venue does, the book (`algo.rs`)
//! doing the rest. `reject_algo_orders` refuses the next placements.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::account::{position_mode, refusal};
use super::algo::{AlgoRef, AlgoRequest};
use super::fapi::binance_error;
use super::{Faults, Sim};
use crate::exchange::binance::weights::{ALGO_OPEN_ORDERS, ALGO_ORDER, ALL_ALGO_ORDERS, OPEN_ALGO_ORDERS};

pub const ROUTES: &[&str] = &[ALGO_ORDER, OPEN_ALGO_ORDERS, ALL_ALGO_ORDERS, ALGO_OPEN_ORDERS];

type Params = HashMap<String, String>;

pub fn route(
    sim: &Arc<Sim>,
    method: &Method,
    path: &str,
    key: &str,
    params: &Params,
    faults: &Faults,
    now: i64,
) -> Response {
    match (method.as_str(), path) {
        ("POST", ALGO_ORDER) => place(sim, key, params, faults, now),
        ("GET", ALGO_ORDER) => query(sim, key, params),
        ("DELETE", ALGO_ORDER) => cancel(sim, key, params, now),
        ("GET", OPEN_ALGO_ORDERS) => list(sim, key, params, true),
        ("GET", ALL_ALGO_ORDERS) => match params.get("symbol") {
            Some(_) => list(sim, key, params, false),
            None => missing("symbol"),
        },
        ("DELETE", ALGO_OPEN_ORDERS) => match params.get("symbol") {
            Some(symbol) => {
                sim.book().cancel_open_algos(key, symbol, now);
                Json(json!({"code": 200, "msg": "The operation of cancel all open order is done."})).into_response()
            }
            None => missing("symbol"),
        },
        _ => binance_error(StatusCode::NOT_FOUND, -1000, "Unknown route."),
    }
}

fn bad(code: i64, msg: &str) -> Response {
    binance_error(StatusCode::BAD_REQUEST, code, msg)
}

fn missing(name: &str) -> Response {
    bad(
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

fn boxed(refuse: fn(i64, &str) -> Response) -> impl Fn(i64, &str) -> Box<Response> {
    move |code, msg| Box::new(refuse(code, msg))
}

fn boxed_missing(name: &str) -> Box<Response> {
    Box::new(missing(name))
}

fn place(sim: &Sim, key: &str, params: &Params, faults: &Faults, now: i64) -> Response {
    if let Err(refused) = position_mode(sim, key, params) {
        return *refused;
    }
    let request = match request(params, now) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    if sim.take_fault(|f| &mut f.reject_algo_orders) {
        return refusal(faults.reject_algo_code, -4045);
    }
    let placed = sim.book().place_algo(key, request, now);
    match placed {
        Ok(algo) => Json(algo.rest()).into_response(),
        Err(r) => bad(r.code, r.msg),
    }
}

/// The order's parameters, or the venue's refusal of them.
fn request(params: &Params, now: i64) -> Result<AlgoRequest, Box<Response>> {
    let (bad, missing) = (boxed(bad), boxed_missing);
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let flag = |k: &str| get(k).eq_ignore_ascii_case("true");
    if get("algoType") != "CONDITIONAL" {
        return Err(bad(-1130, "Data sent for parameter 'algoType' is not valid."));
    }
    let side = match get("side") {
        "BUY" => "BUY",
        "SELL" => "SELL",
        _ => return Err(bad(-1117, "Invalid side.")),
    };
    let order_type = match get("type") {
        "STOP_MARKET" => "STOP_MARKET",
        "TAKE_PROFIT_MARKET" => "TAKE_PROFIT_MARKET",
        _ => {
            return Err(bad(
                -1116,
                "Invalid orderType: the simulator triggers STOP_MARKET and TAKE_PROFIT_MARKET.",
            ));
        }
    };
    let Ok(trigger_price) = Decimal::from_str(get("triggerPrice")) else {
        return Err(missing("triggerPrice"));
    };
    let working_type = match get("workingType") {
        "" | "CONTRACT_PRICE" => "CONTRACT_PRICE",
        "MARK_PRICE" => "MARK_PRICE",
        other => return Err(bad(-4031, &format!("Invalid parameter working type: {other}"))),
    };
    let close_position = flag("closePosition");
    let quantity = match (close_position, get("quantity")) {
        (true, "") => Decimal::ZERO,
        (true, _) => return Err(bad(-4137, "Quantity must be zero with closePosition equals true")),
        (false, q) => Decimal::from_str(q).map_err(|_| missing("quantity"))?,
    };
    if close_position && flag("reduceOnly") {
        return Err(bad(-1106, "Parameter 'reduceOnly' sent when not required."));
    }
    if !close_position && !flag("reduceOnly") {
        return Err(bad(
            -1106,
            "The simulator accepts protective algo orders only: closePosition or reduceOnly.",
        ));
    }
    let client_algo_id = match get("clientAlgoId") {
        "" => format!("sim-algo-{now}-{}", rand::random::<u32>()),
        id => id.to_string(),
    };
    let valid_id = client_algo_id.len() <= 36
        && client_algo_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/_-".contains(&b));
    if !valid_id {
        return Err(bad(-1100, "Illegal characters found in parameter 'clientAlgoId'."));
    }
    Ok(AlgoRequest {
        symbol: get("symbol").to_string(),
        side,
        order_type,
        trigger_price,
        working_type,
        close_position,
        quantity,
        price_protect: flag("priceProtect"),
        client_algo_id,
        position_side: "BOTH",
    })
}

/// `algoId` or `clientAlgoId`, as a request names its order.
fn named(params: &Params) -> Result<AlgoRef, Box<Response>> {
    let bad = boxed(bad);
    if let Some(id) = params.get("algoId") {
        return id.parse().map(AlgoRef::Id).map_err(|_| {
            bad(
                -1102,
                "Mandatory parameter 'algoId' was not sent, was empty/null, or malformed.",
            )
        });
    }
    match params.get("clientAlgoId") {
        Some(c) => Ok(AlgoRef::Client(c.clone())),
        None => Err(bad(
            -1102,
            "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!",
        )),
    }
}

fn query(sim: &Sim, key: &str, params: &Params) -> Response {
    let by = match named(params) {
        Ok(by) => by,
        Err(r) => return *r,
    };
    match sim.book().algo(key, &by) {
        Some(algo) => Json(algo.rest()).into_response(),
        None => bad(-2013, "Order does not exist."),
    }
}

fn cancel(sim: &Sim, key: &str, params: &Params, now: i64) -> Response {
    let by = match named(params) {
        Ok(by) => by,
        Err(r) => return *r,
    };
    let canceled = sim.book().cancel_algo(key, &by, now);
    match canceled {
        Ok(algo) => Json(json!({
            "algoId": algo.algo_id, "clientAlgoId": algo.request.client_algo_id, "code": "200", "msg": "success",
        }))
        .into_response(),
        Err(r) => bad(r.code, r.msg),
    }
}

/// Open orders (optionally of one symbol), or all kept ones of a symbol
/// (`startTime`/`endTime` on their creation, the last `limit`, at most 1000).
fn list(sim: &Sim, key: &str, params: &Params, open_only: bool) -> Response {
    let time = |k: &str| params.get(k).and_then(|t| t.parse::<i64>().ok());
    let (from, to) = (
        time("startTime").unwrap_or(i64::MIN),
        time("endTime").unwrap_or(i64::MAX),
    );
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500)
        .clamp(1, 1000);
    let book = sim.book();
    let rows: Vec<Value> = book.accounts[key]
        .algos
        .values()
        .filter(|a| params.get("symbol").is_none_or(|s| *s == a.request.symbol))
        .filter(|a| {
            if open_only {
                a.is_open()
            } else {
                (from..=to).contains(&a.create_time)
            }
        })
        .map(|a| a.rest())
        .collect();
    let skip = if open_only { 0 } else { rows.len().saturating_sub(limit) };
    Json(rows.into_iter().skip(skip).collect::<Vec<_>>()).into_response()
}
