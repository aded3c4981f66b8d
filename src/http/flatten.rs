//! The kill switch over HTTP: `POST /api/flatten` and `POST
//! /api/accounts/{account}/flatten` (admin). What it does lives with the
//! backstops (`processes::backstop::flatten`); the service hands it in as a
//! [`Flatten`] closure, so this layer knows nothing of the processes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use futures::future::BoxFuture;
use serde_json::Value;

use super::auth::Admin;
use super::{ApiError, AppState};

/// Flattens one account (`Some`) or every account; `Err` says what could not be done.
pub type Flatten = Arc<dyn Fn(Option<String>) -> BoxFuture<'static, Result<Value, Refused>> + Send + Sync>;

/// Why the kill switch could not act.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The exchange budget is spent for now (429: try again shortly), rather
    /// than the venue or the store failing (502).
    pub budget_spent: bool,
    pub message: String,
}

pub async fn all(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    run(&state, None).await
}

pub async fn account(
    _: Admin,
    State(state): State<AppState>,
    Path(account): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.accounts.contains(&account) {
        return Err(ApiError::not_found(format!("no account `{account}`")));
    }
    run(&state, Some(account)).await
}

async fn run(state: &AppState, account: Option<String>) -> Result<Json<Value>, ApiError> {
    let Some(flatten) = &state.flatten else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this instance has no exchange to flatten positions on",
        ));
    };
    tracing::warn!(
        account = account.as_deref().unwrap_or("every account"),
        "kill switch requested"
    );
    match flatten(account).await {
        Ok(report) => Ok(Json(report)),
        Err(r) if r.budget_spent => Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "budget_exhausted",
            format!("{}; nothing more was sent: try again shortly", r.message),
        )),
        Err(r) => Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "venue_unavailable",
            r.message,
        )),
    }
}
