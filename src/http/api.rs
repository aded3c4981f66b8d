//! The status API and the operator actions (trigger, pause, resume).

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::scheduler::TriggerError;
use crate::status;

pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let weight = state.upstream.as_ref().map(|u| u.budget.usage());
    Json(status::document(&state.scheduler, state.started, weight))
}

pub async fn processes(State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = state
        .scheduler
        .processes()
        .iter()
        .map(|p| status::process_document(&state.scheduler, p))
        .collect();
    Json(Value::Array(list))
}

pub async fn process(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let p = state.scheduler.process(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(status::process_document(&state.scheduler, p)))
}

/// `GET /api/script-manager/runs?process=&limit=`: newest first.
pub async fn runs(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    if let Some(key) = q.keys().find(|k| !["process", "limit"].contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{key}`; use process and limit"
        )));
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number between 1 and 10000"))?,
    };
    if let Some(platform) = &state.platform {
        let process = q.get("process").map(String::as_str);
        if let Some(id) = process
            && state.scheduler.process(id).is_none()
        {
            return Err(unknown(id));
        }
        let runs = platform
            .store
            .runs(process, limit as i64)
            .await
            .map_err(super::data::store_error)?;
        return Ok(Json(Value::Array(runs)));
    }
    let selected: Vec<_> = match q.get("process") {
        Some(id) => vec![state.scheduler.process(id).ok_or_else(|| unknown(id))?],
        None => state.scheduler.processes().iter().collect(),
    };
    let mut records: Vec<_> = selected
        .iter()
        .flat_map(|p| p.stats().history.iter().cloned().collect::<Vec<_>>())
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
    records.truncate(limit);
    Ok(Json(serde_json::to_value(records).unwrap_or(Value::Array(vec![]))))
}

pub async fn trigger(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    state.scheduler.trigger(&id).map_err(|e| match e {
        TriggerError::UnknownProcess => unknown(&id),
        TriggerError::AlreadyRunning => ApiError::conflict(
            "already_running",
            format!("process `{id}` is running; try again when it finishes"),
        ),
        TriggerError::Disabled => ApiError::conflict(
            "process_disabled",
            format!("process `{id}` is disabled in the configuration"),
        ),
        TriggerError::Unavailable => ApiError::conflict(
            "kind_unavailable",
            format!("process `{id}` has no implementation in this build"),
        ),
        TriggerError::SchedulerDisabled => ApiError::conflict(
            "scheduler_disabled",
            "the scheduler is disabled (SCRIPT_MANAGER_ENABLED=false)",
        ),
        TriggerError::HeldElsewhere(holder) => ApiError::conflict(
            "held_by_another_replica",
            format!("replica `{holder}` holds the lease of `{id}`; trigger it there"),
        ),
        TriggerError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is stopping",
        ),
    })?;
    tracing::info!(process = %id, "manual trigger");
    Ok((StatusCode::ACCEPTED, Json(json!({"process": id, "triggered": true}))).into_response())
}

pub async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let changed = state.scheduler.pause(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(json!({"process": id, "paused": true, "changed": changed})))
}

pub async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let changed = state.scheduler.resume(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(json!({"process": id, "paused": false, "changed": changed})))
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no process `{id}`; GET /api/script-manager/processes lists them"
    ))
}

/// No token configured: 403 for everyone. Otherwise a matching bearer token, compared in constant time.
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = state.admin_token.as_ref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "write endpoints are off: set http.admin_token to enable them",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(candidate) if token.matches(candidate) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <http.admin_token>",
        )),
    }
}
