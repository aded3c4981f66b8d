//! The platform's data API (DESIGN §7): read from the store, never from the
//! exchange. Writes (levels, alerts) need the admin token; bad input is a
//! 422 naming the field.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::auth::{CallerIsAdmin, Reader, Trader, may_see, not_yours};
use super::error::{store_error, unprocessable};
use super::query::{self, Q, limit};
use super::{ApiError, AppState};
use crate::config::{redact_webhook_url, webhook_allowed};
use crate::domain::PositionSide;
use crate::store::{Level, NewAlert, NewLevel, Store};

fn store(state: &AppState) -> Result<&Arc<Store>, ApiError> {
    state.store.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_store",
            "this instance runs without a store",
        )
    })
}

pub(super) fn json_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// A positive decimal given as a number or a decimal string.
fn decimal(map: &serde_json::Map<String, Value>, field: &str) -> Result<Option<Decimal>, ApiError> {
    let d = match map.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => {
            Decimal::from_str(s.trim()).map_err(|_| unprocessable(field, "not a decimal number"))?
        }
        Some(Value::Number(n)) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .map_err(|_| unprocessable(field, "not a decimal number"))?,
        Some(_) => return Err(unprocessable(field, "must be a number or a decimal string")),
    };
    if d <= Decimal::ZERO {
        return Err(unprocessable(field, "must be greater than 0"));
    }
    Ok(Some(d))
}

fn text<'a>(map: &'a serde_json::Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    match map.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(_) => Err(unprocessable(field, "must be a non-empty string")),
        None => Err(unprocessable(field, "is required")),
    }
}

/// A symbol the venue lists (checked against its last `exchangeInfo`).
fn symbol(state: &AppState, map: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    let s = text(map, "symbol")?.to_ascii_uppercase();
    if s.len() > 20 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(unprocessable("symbol", "must be letters and digits, like BTCUSDT"));
    }
    match state.catalog.as_ref().map(|c| c.lists(&s)) {
        Some(Some(false)) => Err(unprocessable(
            "symbol",
            format!("the venue does not list `{s}` (GET /fapi/v1/exchangeInfo)"),
        )),
        Some(None) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "symbols_unknown",
            "the venue's symbol list has not been read yet; try again shortly",
        )),
        _ => Ok(s),
    }
}

/// `?limit=&after=`: a page of ids above `after`, and a `Link` to the next
/// page when this one is full.
fn page<T: serde::Serialize>(path: &str, rows: Vec<T>, id: impl Fn(&T) -> i64, limit: i64) -> Response {
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(&id)).flatten();
    let mut response = Json(json!(rows)).into_response();
    if let Some(after) = next
        && let Ok(link) = format!("<{path}?limit={limit}&after={after}>; rel=\"next\"").parse()
    {
        response.headers_mut().insert(axum::http::header::LINK, link);
    }
    response
}

fn after(q: &std::collections::HashMap<String, String>) -> Result<i64, ApiError> {
    match q.get("after") {
        None => Ok(0),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request("after must be an id (a whole number, 0 or more)")),
    }
}

fn refuse_unknown(map: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unprocessable(
            k,
            format!("unknown field; allowed: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

pub async fn prices(_: Reader, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = store(&state)?.prices().await.map_err(store_error)?;
    Ok(Json(json!(rows)))
}

/// `?account=` checked against a token scoped to accounts (403 outside them).
fn visible_account<'q>(
    caller: &Option<super::auth::Caller>,
    q: &'q std::collections::HashMap<String, String>,
) -> Result<Option<&'q str>, ApiError> {
    match q.get("account") {
        Some(a) if !may_see(caller, a) => Err(not_yours(caller, a)),
        a => Ok(a.map(String::as_str)),
    }
}

pub async fn positions(Reader(caller): Reader, State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query::params(q, &["account"])?;
    let mut rows = store(&state)?
        .positions(visible_account(&caller, &q)?)
        .await
        .map_err(store_error)?;
    rows.retain(|p| may_see(&caller, &p.account));
    Ok(Json(json!(rows)))
}

pub async fn trades(Reader(caller): Reader, State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query::params(q, &["account", "symbol", "limit"])?;
    let account = visible_account(&caller, &q)?;
    if account.is_none()
        && let Some(only) = caller.as_ref().and_then(|c| c.accounts.as_ref())
        && only.len() != 1
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token sees some accounts only: name one with ?account=",
        ));
    }
    let account = account.or_else(|| {
        caller
            .as_ref()
            .and_then(|c| c.accounts.as_ref())
            .and_then(|a| a.first())
            .map(String::as_str)
    });
    let rows = store(&state)?
        .trades(account, q.get("symbol").map(String::as_str), limit(&q)?)
        .await
        .map_err(store_error)?;
    Ok(Json(json!(rows)))
}

pub async fn dashboard(
    Reader(caller): Reader,
    State(state): State<AppState>,
    Path(account): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.accounts.contains(&account) {
        return Err(ApiError::not_found(format!("no account `{account}`")));
    }
    if !may_see(&caller, &account) {
        return Err(not_yours(&caller, &account));
    }
    match store(&state)?.snapshot(&account).await.map_err(store_error)? {
        Some(s) => Ok(Json(json!({
            "account": s.account,
            "computed_at": crate::clock::rfc3339_ms(s.computed_at),
            "analytics": s.data,
        }))),
        None => Err(ApiError::not_found(format!(
            "no dashboard for `{account}` yet; dashboard_sync computes it"
        ))),
    }
}

pub async fn levels(_: Reader, State(state): State<AppState>, q: Q) -> Result<Response, ApiError> {
    let q = query::params(q, &["limit", "after"])?;
    let limit = limit(&q)?;
    let rows = store(&state)?
        .levels_page(after(&q)?, limit)
        .await
        .map_err(store_error)?;
    Ok(page("/api/levels", rows, |l| l.id, limit))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not an id")))
}

pub async fn level(_: Reader, State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let store = store(&state)?;
    match store.level(id).await.map_err(store_error)? {
        Some(l) => {
            let backstops = store.backstops_of_level(id).await.map_err(store_error)?;
            let mut doc = json!(l);
            doc["backstops"] = json!(
                backstops
                    .iter()
                    .map(|b| json!({
                        "kind": b.kind, "client_algo_id": b.client_algo_id, "algo_id": b.algo_id,
                        "trigger_price": b.trigger_price.normalize().to_string(), "state": b.state,
                        "order_id": b.order_id, "error": b.error,
                    }))
                    .collect::<Vec<_>>()
            );
            Ok(Json(doc))
        }
        None => Err(ApiError::not_found(format!("no level {id}"))),
    }
}

pub async fn create_level(_: Trader, State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let map = json_body(&body)?;
    refuse_unknown(&map, &["account", "symbol", "side", "take_profit", "stop_loss"])?;
    let account = text(&map, "account")?.to_string();
    if !state.accounts.contains(&account) {
        return Err(unprocessable(
            "account",
            format!(
                "unknown account `{account}`; GET /api/accounts lists the {} known",
                state.accounts.len()
            ),
        ));
    }
    if state.modes.is_hedge(&account) {
        return Err(unprocessable(
            "account",
            "the account is in hedge mode (dualSidePosition); script-manager closes positions in one-way mode only",
        ));
    }
    let symbol = symbol(&state, &map)?;
    let take_profit = decimal(&map, "take_profit")?;
    let stop_loss = decimal(&map, "stop_loss")?;
    if take_profit.is_none() && stop_loss.is_none() {
        return Err(unprocessable("take_profit", "give take_profit, stop_loss or both"));
    }
    if let (Some(tp), Some(sl)) = (take_profit, stop_loss)
        && tp == sl
    {
        return Err(unprocessable("stop_loss", "must differ from take_profit"));
    }
    let side = level_side(store, &map, &account, &symbol).await?;
    if let (Some(tp), Some(sl)) = (take_profit, stop_loss)
        && (tp > sl) != (side == PositionSide::Long)
    {
        let want = if side == PositionSide::Long { "above" } else { "below" };
        return Err(unprocessable(
            "take_profit",
            format!(
                "for a {} position the take-profit must be {want} the stop-loss",
                side.as_str()
            ),
        ));
    }
    let level: Level = store
        .insert_level(&NewLevel {
            account,
            symbol,
            side,
            take_profit,
            stop_loss,
        })
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(json!(level))).into_response())
}

/// The side of the position a new level protects: the stored open position's,
/// or `side` from the request when the store has none yet (a position just
/// opened). A `side` that contradicts the open position is refused.
async fn level_side(
    store: &Store,
    map: &serde_json::Map<String, Value>,
    account: &str,
    symbol: &str,
) -> Result<PositionSide, ApiError> {
    let asked = match map.get("side") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(PositionSide::parse(s).ok_or_else(|| unprocessable("side", "must be `long` or `short`"))?)
        }
        Some(_) => return Err(unprocessable("side", "must be `long` or `short`")),
    };
    let held = store
        .positions(Some(account))
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|p| p.symbol == symbol)
        .and_then(|p| PositionSide::of(p.amount));
    match (held, asked) {
        (Some(held), Some(asked)) if held != asked => Err(unprocessable(
            "side",
            format!("the open {symbol} position of `{account}` is {}", held.as_str()),
        )),
        (Some(held), _) => Ok(held),
        (None, Some(asked)) => Ok(asked),
        (None, None) => Err(unprocessable(
            "symbol",
            format!("`{account}` has no open {symbol} position to protect; open one first, or name its `side`"),
        )),
    }
}

pub async fn delete_level(
    _: Trader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match store(&state)?.delete_level(id).await.map_err(store_error)? {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(ApiError::not_found(format!("no level {id}"))),
        Err(_) => Err(ApiError::conflict(
            "order_in_flight",
            format!("level {id} has a close order in flight"),
        )),
    }
}

pub async fn alerts(
    _: Reader,
    CallerIsAdmin(full): CallerIsAdmin,
    State(state): State<AppState>,
    q: Q,
) -> Result<Response, ApiError> {
    let q = query::params(q, &["limit", "after"])?;
    let limit = limit(&q)?;
    let mut rows = store(&state)?
        .alerts_page(after(&q)?, limit)
        .await
        .map_err(store_error)?;
    // A webhook URL is a credential: whole for the admin, scheme and host for other readers.
    for a in &mut rows {
        a.webhook_url = a.webhook_url.as_deref().map(|u| redact_webhook_url(u, full));
    }
    Ok(page("/api/alerts", rows, |a| a.id, limit))
}

pub async fn create_alert(_: Trader, State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let map = json_body(&body)?;
    refuse_unknown(&map, &["symbol", "condition", "price", "webhook_url"])?;
    let symbol = symbol(&state, &map)?;
    let condition = text(&map, "condition")?;
    if condition != "above" && condition != "below" {
        return Err(unprocessable("condition", "must be \"above\" or \"below\""));
    }
    let price = decimal(&map, "price")?.ok_or_else(|| unprocessable("price", "is required"))?;
    let webhook_url = match map.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if webhook_allowed(u, &state.webhook_hosts) => Some(u.clone()),
        Some(_) if !state.webhook_hosts.is_empty() => {
            return Err(unprocessable(
                "webhook_url",
                format!(
                    "must be an http(s) URL to one of the allowed hosts: {}",
                    state.webhook_hosts.join(", ")
                ),
            ));
        }
        Some(_) => return Err(unprocessable("webhook_url", "must be an http(s) URL")),
    };
    let alert = store
        .insert_alert(&NewAlert {
            symbol,
            condition: condition.to_string(),
            price,
            webhook_url,
        })
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(json!(alert))).into_response())
}

pub async fn delete_alert(
    _: Trader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if store(&state)?.delete_alert(id).await.map_err(store_error)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no alert {id}")))
    }
}

pub async fn notifications(_: Reader, State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query::params(q, &["limit"])?;
    Ok(Json(Value::Array(
        store(&state)?.notifications(limit(&q)?).await.map_err(store_error)?,
    )))
}
