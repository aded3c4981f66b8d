//! `GET /api/events`: the live event stream (Server-Sent Events) for the
//! platform's screens. This handler checks who asks for what (filters,
//! scoped tokens, the token as `?access_token=` for browsers), builds the
//! opening snapshot from the store, and hands the rest to
//! [`crate::events`]. The token in the query is read here and nowhere else;
//! GETs are never audited and no request line is logged, so it reaches no
//! log (docs/events.md weighs the trade-off).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{may_see, not_yours};
use super::error::{store_error, unprocessable};
use super::{ApiError, AppState};
use crate::events::{Filter, Hub, Kind};
use crate::store::LevelStatus;

/// The parameters this route takes.
const PARAMS: [&str; 4] = ["types", "account", "symbols", "access_token"];

/// Values given once or several times, and comma lists in each (empty ones ignored).
fn list(into: &mut Option<Vec<String>>, value: &str) {
    let items: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect();
    if !items.is_empty() {
        into.get_or_insert_with(Vec::new).extend(items);
    }
}

pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = q.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let (mut types, mut accounts, mut symbols, mut token) = (None, None, None, None);
    for (k, v) in &pairs {
        match k.as_str() {
            // Exactly as documented: names, commas, nothing else.
            "types" => types
                .get_or_insert_with(Vec::new)
                .extend(v.split(',').map(String::from)),
            "account" => list(&mut accounts, v),
            "symbols" => list(&mut symbols, &v.to_ascii_uppercase()),
            "access_token" => token = Some(v.as_str()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`; use {}",
                    PARAMS.join(", ")
                )));
            }
        }
    }
    let caller = state.tokens.stream_reader(&headers, token)?;
    let kinds = types
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    Kind::parse(n).ok_or_else(|| {
                        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                        ApiError::bad_request(format!(
                            "unknown event type `{n}` in types; known: {}",
                            known.join(", ")
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    // A token scoped to accounts gets no `process` events: run errors may
    // name any account.
    let scoped = caller.as_ref().is_some_and(|c| c.accounts.is_some());
    let kinds = match (kinds, scoped) {
        (kinds, false) => kinds,
        (None, true) => Some(Kind::ALL.into_iter().filter(|k| *k != Kind::Process).collect()),
        (Some(kinds), true) => Some(kinds.into_iter().filter(|k| *k != Kind::Process).collect()),
    };
    let accounts = match (accounts, caller.as_ref().and_then(|c| c.accounts.clone())) {
        (Some(asked), _) => {
            for a in &asked {
                if !may_see(&caller, a) {
                    return Err(not_yours(&caller, a));
                }
                if !state.accounts.contains(a) {
                    return Err(unprocessable(
                        "account",
                        format!("unknown account `{a}`; known: {}", state.accounts.names().join(", ")),
                    ));
                }
            }
            Some(asked)
        }
        // A token scoped to accounts sees those, asked or not.
        (None, only) => only,
    };
    if let Some(symbols) = &symbols {
        for s in symbols {
            let listed = state.catalog.as_ref().and_then(|c| c.lists(s));
            if s.len() > 20 || !s.chars().all(|c| c.is_ascii_alphanumeric()) || listed == Some(false) {
                return Err(unprocessable(
                    "symbols",
                    format!("`{s}` is not a symbol the venue lists"),
                ));
            }
        }
    }
    let Some(hub) = &state.events else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_events",
            "this instance has no event stream",
        ));
    };
    let filter = Filter::new(kinds, accounts, symbols);
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let sub = hub.subscribe(filter.clone(), last).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!(
                "{} clients are connected (events.max_clients); retry shortly",
                hub.settings().max_clients
            ),
        )
    })?;
    let snapshot = match sub.needs_snapshot() {
        true => Some(snapshot(&state, hub, &filter).await?),
        false => None,
    };
    let mut response = axum::body::Body::from_stream(sub.into_stream(snapshot)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies (nginx) must not buffer a stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // A page on another origin (examples/live.html, a screen's own host)
    // may read the stream when it presented a token: access is the token's,
    // never a browser's ambient credentials. Without one (reads open), no
    // other origin may, so a page a user happens to visit cannot read it
    // through that user's browser.
    if caller.is_some() {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    Ok(response)
}

/// What a screen needs before the deltas: open positions, armed (and
/// closing) levels, latest prices, each as the filter lets through.
async fn snapshot(state: &AppState, hub: &Hub, filter: &Filter) -> Result<Value, ApiError> {
    let Some(store) = &state.store else {
        return Ok(json!({"positions": [], "levels": [], "prices": hub.latest_prices(filter)}));
    };
    let positions = match filter.wants(Kind::Position) {
        true => store.positions(None).await.map_err(store_error)?,
        false => Vec::new(),
    };
    let mut levels = Vec::new();
    if filter.wants(Kind::Level) {
        for status in [LevelStatus::Armed, LevelStatus::Triggered] {
            levels.extend(store.levels(Some(status)).await.map_err(store_error)?);
        }
        levels.sort_by_key(|l| l.id);
    }
    let prices = match filter.wants(Kind::Price) {
        true => hub.latest_prices(filter),
        false => Vec::new(),
    };
    let positions: Vec<_> = positions
        .into_iter()
        .filter(|p| filter.account_ok(&p.account) && filter.symbol_ok(&p.symbol))
        .collect();
    let levels: Vec<_> = levels
        .into_iter()
        .filter(|l| filter.account_ok(&l.account) && filter.symbol_ok(&l.symbol))
        .collect();
    Ok(json!({"positions": positions, "levels": levels, "prices": prices}))
}
