//! The kill switch over HTTP: `POST /api/flatten` and `POST
//! /api/accounts/{account}/flatten` (admin). What it does lives with the
//! backstops (`processes::backstop::flatten`); the service hands it in as a
//! [`Flatten`] closure, so this layer knows nothing of the processes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

use super::auth::{Admin, Trader};
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

/// How long a request waits for the kill switch before answering that it goes on.
const ANSWER_WITHIN: Duration = Duration::from_secs(8);

pub async fn all(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    run(&state, None).await
}

pub async fn account(
    _: Trader,
    State(state): State<AppState>,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    if !state.accounts.contains(&account) {
        return Err(ApiError::not_found(format!("no account `{account}`")));
    }
    run(&state, Some(account)).await
}

async fn run(state: &AppState, account: Option<String>) -> Result<Response, ApiError> {
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
    // The work runs to its end on a task of its own whatever happens to this
    // request; the answer waits for it a while, then says it goes on.
    let work = tokio::spawn(flatten(account));
    let done = match tokio::time::timeout(ANSWER_WITHIN, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the kill switch stopped unexpectedly: {e}"),
            ));
        }
        Err(_) => {
            let body = serde_json::json!({
                "status": "in_progress",
                "message": "the kill switch is still working; the closes it started go on (GET /api/levels shows them)",
            });
            return Ok((axum::http::StatusCode::ACCEPTED, Json(body)).into_response());
        }
    };
    match done {
        Ok(report) => Ok(Json(report).into_response()),
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
