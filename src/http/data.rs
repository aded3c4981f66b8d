//! The platform's data API (DESIGN §7): read from the store, never from the
//! exchange. Writes (levels, alerts) need the admin token; bad input is a
//! 422 naming the field.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::api::authorize;
use super::{ApiError, AppState};
use crate::processes::Platform;
use crate::store::{Level, NewAlert, NewLevel};

type Q = Result<Query<HashMap<String, String>>, QueryRejection>;

pub fn store_error(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %format!("{e:#}"), "store failure behind the data API");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store did not answer; try again",
    )
}

fn platform(state: &AppState) -> Result<&Arc<Platform>, ApiError> {
    state.platform.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_store",
            "this instance runs without a store",
        )
    })
}

fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("{field}: {}", message.into()),
    )
}

/// Query parameters, with unknown ones refused.
fn query(q: Q, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{k}`; use {}",
            allowed.join(", ")
        )));
    }
    Ok(q)
}

fn limit(q: &HashMap<String, String>) -> Result<i64, ApiError> {
    match q.get("limit") {
        None => Ok(100),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number between 1 and 10000")),
    }
}

fn json_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
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

fn symbol(map: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    let s = text(map, "symbol")?.to_ascii_uppercase();
    if s.len() > 20 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(unprocessable("symbol", "must be letters and digits, like BTCUSDT"));
    }
    Ok(s)
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

pub async fn prices(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = platform(&state)?.store.prices().await.map_err(store_error)?;
    Ok(Json(json!(rows)))
}

pub async fn positions(State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query(q, &["account"])?;
    let rows = platform(&state)?
        .store
        .positions(q.get("account").map(String::as_str))
        .await
        .map_err(store_error)?;
    Ok(Json(json!(rows)))
}

pub async fn trades(State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query(q, &["account", "symbol", "limit"])?;
    let rows = platform(&state)?
        .store
        .trades(
            q.get("account").map(String::as_str),
            q.get("symbol").map(String::as_str),
            limit(&q)?,
        )
        .await
        .map_err(store_error)?;
    Ok(Json(json!(rows)))
}

pub async fn dashboard(State(state): State<AppState>, Path(account): Path<String>) -> Result<Json<Value>, ApiError> {
    let p = platform(&state)?;
    if !p.accounts.contains(&account) {
        return Err(ApiError::not_found(format!("no account `{account}`")));
    }
    match p.store.snapshot(&account).await.map_err(store_error)? {
        Some(s) => Ok(Json(json!({
            "account": s.account,
            "computed_at": crate::status::fmt_time(std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.computed_at as u64)),
            "analytics": s.data,
        }))),
        None => Err(ApiError::not_found(format!(
            "no dashboard for `{account}` yet; dashboard_sync computes it"
        ))),
    }
}

pub async fn levels(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        platform(&state)?.store.levels(None).await.map_err(store_error)?
    )))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not an id")))
}

pub async fn level(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    match platform(&state)?.store.level(id).await.map_err(store_error)? {
        Some(l) => Ok(Json(json!(l))),
        None => Err(ApiError::not_found(format!("no level {id}"))),
    }
}

pub async fn create_level(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let p = platform(&state)?;
    let map = json_body(&body)?;
    refuse_unknown(&map, &["account", "symbol", "take_profit", "stop_loss"])?;
    let account = text(&map, "account")?.to_string();
    if !p.accounts.contains(&account) {
        return Err(unprocessable(
            "account",
            format!("unknown account; known: {}", p.accounts.join(", ")),
        ));
    }
    let symbol = symbol(&map)?;
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
    let level: Level = p
        .store
        .insert_level(&NewLevel {
            account,
            symbol,
            take_profit,
            stop_loss,
        })
        .await
        .map_err(store_error)?;
    p.levels_generation.fetch_add(1, Ordering::AcqRel);
    Ok((StatusCode::CREATED, Json(json!(level))).into_response())
}

pub async fn delete_level(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let p = platform(&state)?;
    match p.store.delete_level(id).await.map_err(store_error)? {
        Ok(true) => {
            p.levels_generation.fetch_add(1, Ordering::AcqRel);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(false) => Err(ApiError::not_found(format!("no level {id}"))),
        Err(_) => Err(ApiError::conflict(
            "order_in_flight",
            format!("level {id} has a close order in flight"),
        )),
    }
}

pub async fn alerts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        platform(&state)?.store.alerts(false).await.map_err(store_error)?
    )))
}

pub async fn create_alert(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let p = platform(&state)?;
    let map = json_body(&body)?;
    refuse_unknown(&map, &["symbol", "condition", "price", "webhook_url"])?;
    let symbol = symbol(&map)?;
    let condition = text(&map, "condition")?;
    if condition != "above" && condition != "below" {
        return Err(unprocessable("condition", "must be \"above\" or \"below\""));
    }
    let price = decimal(&map, "price")?.ok_or_else(|| unprocessable("price", "is required"))?;
    let webhook_url = match map.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u))
            if (u.starts_with("http://") || u.starts_with("https://")) && u.parse::<http::Uri>().is_ok() =>
        {
            Some(u.clone())
        }
        Some(_) => return Err(unprocessable("webhook_url", "must be an http(s) URL")),
    };
    let alert = p
        .store
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
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    if platform(&state)?.store.delete_alert(id).await.map_err(store_error)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no alert {id}")))
    }
}

pub async fn notifications(State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query(q, &["limit"])?;
    Ok(Json(Value::Array(
        platform(&state)?
            .store
            .notifications(limit(&q)?)
            .await
            .map_err(store_error)?,
    )))
}
