//! The way into `/fapi`: count the request, apply faults (latency, per-route
//! delays, forced 429s, 5xx, broken bodies), charge its weight per minute (429, then 418
//! for a client that ignores it), then hand it to the route; every answer
//! carries `X-MBX-USED-WEIGHT-1M`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use super::Sim;
use super::fapi::binance_error;
use super::limits::Verdict;
use crate::clock::now_ms as wall_ms;
use crate::exchange::binance::weights;

/// Everything under `/fapi`: meter, faults, limits, then the route itself.
pub async fn fapi(
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
    let params = super::form::parse_form(&payload);
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
    let keyed = format!("{method} {path}");
    let route_delay = faults
        .route_delay_ms
        .get(&keyed)
        .or_else(|| faults.route_delay_ms.get(&path))
        .copied()
        .unwrap_or(0);
    if faults.latency_ms + route_delay > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms + route_delay)).await;
    }
    let now = wall_ms();
    let forced = sim
        .take_fault(|f| &mut f.force_429)
        .then_some(faults.force_429_retry_after_s.max(1));
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
                let rate = |rates: &std::collections::BTreeMap<String, f64>| {
                    rates.get(&keyed).or_else(|| rates.get(&path)).copied()
                };
                let fail = rate(&faults.error_rate).is_some_and(|p| book.chance(p));
                (fail, rate(&faults.malformed_rate).is_some_and(|p| book.chance(p)))
            };
            if fail {
                binance_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    -1001,
                    "Internal error; unable to process your request.",
                )
            } else {
                let r = super::fapi::route(
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
