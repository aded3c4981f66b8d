//! Changes without a restart: live overrides of a process's settings
//! (`PATCH`, `DELETE …/overrides`) and reloading the configuration
//! (`POST /-/reload`, as Prometheus names it). Overrides are stored first,
//! then put in force, so a restart and the other replicas keep them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::audit::Audit;
use super::auth::Admin;
use super::data::json_body;
use super::error::{store_error, unknown_process as unknown, unprocessable};
use super::{ApiError, AppState};
use crate::config::{Overrides, SetOverrides};
use crate::status;

/// `PATCH /api/script-manager/processes/{id}`: changes some of the process's settings.
pub async fn patch_process(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(axum::Extension<Audit>, Json<Value>), ApiError> {
    let p = state.scheduler.process(&id).ok_or_else(|| unknown(&id))?;
    let fields = json_body(&body)?;
    let new = Overrides::parse(&Value::Object(fields)).map_err(|(field, message)| unprocessable(&field, message))?;
    let before = p.overrides().map(|o| o.values);
    let values = before.clone().unwrap_or_default().and(&new);
    if let Some((field, message)) = values.check(&id, &p.file_config()).into_iter().next() {
        return Err(unprocessable(&field, message));
    }
    let set = SetOverrides {
        values,
        set_by: caller.name.clone(),
        set_at_ms: crate::clock::now_ms(),
    };
    if let Some(store) = &state.store {
        store
            .save_process_overrides(&id, Some(&set))
            .await
            .map_err(store_error)?;
    }
    let audit = Audit::change(json!(before), json!(set.values));
    state.scheduler.set_overrides(&id, Some(set));
    tracing::info!(process = %id, by = %caller.name, "settings overridden");
    Ok((
        axum::Extension(audit),
        Json(status::process_document(&state.scheduler, &p)),
    ))
}

/// `DELETE /api/script-manager/processes/{id}/overrides`: back to the file's settings.
pub async fn delete_overrides(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(axum::Extension<Audit>, Json<Value>), ApiError> {
    let p = state.scheduler.process(&id).ok_or_else(|| unknown(&id))?;
    let audit = Audit::change(json!(p.overrides().map(|o| o.values)), Value::Null);
    if let Some(store) = &state.store {
        store.save_process_overrides(&id, None).await.map_err(store_error)?;
    }
    state.scheduler.set_overrides(&id, None);
    tracing::info!(process = %id, "overrides removed; the file's settings are in force");
    Ok((
        axum::Extension(audit),
        Json(status::process_document(&state.scheduler, &p)),
    ))
}

/// `POST /-/reload`: reads the file and the environment again.
pub async fn reload(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let Some(reload) = &state.reload else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_unavailable",
            "this instance cannot reload its configuration",
        ));
    };
    // It reads files and the environment: off the async workers, as on SIGHUP.
    let reload = reload.clone();
    let outcome = tokio::task::spawn_blocking(move || reload()).await.map_err(|e| {
        tracing::error!(error = %e, "configuration reload stopped unexpectedly");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_failed",
            "the reload stopped unexpectedly; see the service's log",
        )
    })?;
    match outcome {
        Ok(report) => Ok(Json(serde_json::json!({"reloaded": true, "processes": report}))),
        Err(problems) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_configuration",
            format!("nothing changed: {problems}"),
        )),
    }
}
