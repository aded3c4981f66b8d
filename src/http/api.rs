//! The status API and the operator actions (trigger, pause, resume).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{Admin, StatusReader};
use super::error::{store_error, unknown_process as unknown};
use super::query::{self, Q};
use super::{ApiError, AppState};
use crate::scheduler::TriggerError;
use crate::status;

pub async fn status(_: StatusReader, State(state): State<AppState>) -> Json<Value> {
    let weight = state.weight.as_ref().map(|w| w.usage());
    Json(status::document(&state.scheduler, state.started, weight))
}

pub async fn processes(_: StatusReader, State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = state
        .scheduler
        .processes()
        .iter()
        .map(|p| status::process_document(&state.scheduler, p))
        .collect();
    Json(Value::Array(list))
}

pub async fn process(
    _: StatusReader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = state.scheduler.process(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(status::process_document(&state.scheduler, &p)))
}

/// `GET /api/script-manager/runs?process=&limit=`: newest first.
pub async fn runs(_: StatusReader, State(state): State<AppState>, q: Q) -> Result<Json<Value>, ApiError> {
    let q = query::params(q, &["process", "limit"])?;
    let limit = query::limit(&q)?;
    if let Some(store) = &state.store {
        let process = q.get("process").map(String::as_str);
        if let Some(id) = process
            && state.scheduler.process(id).is_none()
        {
            return Err(unknown(id));
        }
        let runs = store.runs(process, limit).await.map_err(store_error)?;
        return Ok(Json(Value::Array(runs)));
    }
    let selected: Vec<_> = match q.get("process") {
        Some(id) => vec![state.scheduler.process(id).ok_or_else(|| unknown(id))?],
        None => state.scheduler.processes().iter().cloned().collect(),
    };
    let mut records: Vec<_> = selected
        .iter()
        .flat_map(|p| p.stats().history.iter().cloned().collect::<Vec<_>>())
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
    records.truncate(limit as usize);
    Ok(Json(serde_json::to_value(records).unwrap_or(Value::Array(vec![]))))
}

pub async fn trigger(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
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
        TriggerError::PeerRunning(peer) => ApiError::conflict(
            "exclusive_peer_running",
            format!("process `{peer}`, which `{id}` is exclusive with, is running; try again when it finishes"),
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

pub async fn pause(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let changed = state.scheduler.pause(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(json!({"process": id, "paused": true, "changed": changed})))
}

pub async fn resume(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let changed = state.scheduler.resume(&id).ok_or_else(|| unknown(&id))?;
    Ok(Json(json!({"process": id, "paused": false, "changed": changed})))
}
