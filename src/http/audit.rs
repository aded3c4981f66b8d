//! The audit trail: every mutating call (POST, PUT, PATCH, DELETE) is logged
//! and stored with who made it (the token's name), the route and target, the
//! outcome, and what changed. A handler that knows the state before and
//! after says so with an [`Audit`] response extension; otherwise the request
//! body is kept, with secret-looking fields redacted. Refused calls (a wrong
//! token, a bad body) are recorded too: they are what an audit is for.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::Admin;
use super::error::store_error;
use super::query::{Q, limit, params};
use super::{ApiError, AppState, is_mutation};
use crate::config::REDACTED;
use crate::store::AuditEntry;

/// The change a handler made, for the audit row.
#[derive(Debug, Clone)]
pub struct Audit(Value);

impl Audit {
    pub fn change(before: Value, after: Value) -> Self {
        Audit(json!({"before": before, "after": after}))
    }
}

/// Request bodies larger than this are recorded as their size only.
const DETAIL_MAX_BYTES: usize = 4096;

/// Middleware: records every mutating call once its answer is known.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !is_mutation(request.method()) {
        return next.run(request).await;
    }
    let who = state.tokens.name_of(request.headers());
    let method = request.method().to_string();
    let target = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| target.clone(), |m| m.as_str().to_string());
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // Over the limit (http-body-util's "length limit exceeded"), or the
            // client stopped sending: the second is not the body's size.
            let refused = if e.to_string().contains("length limit") {
                ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is over {} bytes (http.max_body_bytes)", state.max_body_bytes),
                )
            } else {
                ApiError::bad_request("the request's body could not be read in full")
            }
            .into_response();
            write(&state, entry(who, method, route, target, &refused, None)).await;
            return refused;
        }
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes.clone()))).await;
    let detail = match response.extensions().get::<Audit>() {
        Some(Audit(change)) => Some(change.clone()),
        None => body_detail(&bytes),
    };
    write(&state, entry(who, method, route, target, &response, detail)).await;
    response
}

fn entry(
    who: String,
    method: String,
    route: String,
    target: String,
    r: &Response,
    detail: Option<Value>,
) -> AuditEntry {
    let status = r.status().as_u16();
    AuditEntry {
        id: 0,
        at_ms: crate::clock::now_ms(),
        who,
        method,
        route,
        target,
        status: i64::from(status),
        outcome: match status {
            200..=399 => "ok",
            400..=499 => "refused",
            _ => "error",
        }
        .into(),
        detail,
    }
}

async fn write(state: &AppState, e: AuditEntry) {
    tracing::info!(
        target: "audit",
        who = %e.who,
        method = %e.method,
        target_path = %e.target,
        status = e.status,
        outcome = %e.outcome,
        "audit"
    );
    if let Some(store) = &state.store
        && let Err(err) = store.insert_audit(&e).await
    {
        tracing::warn!(error = %format!("{err:#}"), "cannot store an audit row; it is in the log only");
    }
}

/// The request body as JSON with secret-looking fields redacted; its size
/// when it is large or not JSON.
fn body_detail(bytes: &Bytes) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.len() > DETAIL_MAX_BYTES {
        return Some(json!({"request_bytes": bytes.len()}));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut v) => {
            redact(&mut v);
            Some(json!({"request": v}))
        }
        Err(_) => Some(json!({"request_bytes": bytes.len()})),
    }
}

/// Replaces the values of keys that look like credentials or webhook URLs.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, value) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if ["secret", "token", "password", "key", "webhook"]
                    .iter()
                    .any(|s| k.contains(s))
                {
                    *value = Value::String(REDACTED.into());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `GET /api/audit?limit=&before=`: the newest rows first; `next_before`
/// pages back (absent on the last page).
pub async fn list(_: Admin, State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q: HashMap<String, String> = params(q, &["limit", "before"])?;
    let limit = limit(&q)?;
    let before = match q.get("before") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|id| *id >= 1)
                .ok_or_else(|| ApiError::bad_request("before must be an audit row's id (1 or more)"))?,
        ),
    };
    let Some(store) = &state.store else {
        return Ok(Json(json!({"entries": [], "next_before": null})));
    };
    let entries = store.audit(before, limit).await.map_err(store_error)?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({"entries": entries, "next_before": next})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_fields_are_redacted_at_any_depth() {
        let d = body_detail(&Bytes::from_static(
            br#"{"name":"a","api_secret":"s3cr3t","nested":[{"webhook_url":"https://h/x"}],"price":"1"}"#,
        ))
        .unwrap();
        let text = d.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("https://h/x"), "{text}");
        assert_eq!(d["request"]["price"], "1");
    }
}
