//! The HTTP surface (DESIGN §7): metrics, health, the status API and the
//! operator actions, and the platform's data API. Handlers are thin: they
//! read the scheduler's state, call one of its methods, or read the store.
//!
//! Owns: routes, authorization ([`auth`]), the JSON error shape ([`error`]).
//! Imports `scheduler`, `status`, `store`, `budget` (usage gauges),
//! `telemetry`, `config` (tokens), `clock`; never the processes or `exchange`.

pub mod accounts;
mod api;
mod audit;
pub mod auth;
mod data;
mod error;
mod events;
pub mod flatten;
mod live;
mod openapi;
mod query;
mod routes;
pub mod serve;
pub mod shed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use error::ApiError;

use crate::budget::VenueWeight;
use crate::domain::Catalog;
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    /// The bearer tokens, by name and scope.
    pub tokens: Arc<auth::Tokens>,
    /// The concurrency cap, the deadline and the per-token mutation rate.
    pub limits: Arc<shed::Limits>,
    /// The largest request body accepted (`http.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Hosts an alert's webhook may name (`notifications.allowed_webhook_hosts`; empty: any).
    pub webhook_hosts: Vec<String>,
    pub started: SystemTime,
    pub ready: Arc<AtomicBool>,
    /// The venue's weight budget, for the status document and its gauges.
    pub weight: Option<Arc<VenueWeight>>,
    /// The store behind the data API and the run history.
    pub store: Option<Arc<Store>>,
    /// Account names the data API knows.
    pub accounts: std::sync::Arc<crate::accounts::Accounts>,
    /// The venue's listed symbols: levels and alerts on others are refused.
    pub catalog: Option<Arc<Catalog>>,
    /// Accounts in hedge mode: levels on them are refused.
    pub modes: Arc<crate::domain::AccountModes>,
    /// The kill switch (`POST /api/flatten`), when the service has an exchange.
    pub flatten: Option<flatten::Flatten>,
    /// Re-reads the configuration (`POST /-/reload`); `Err` names the problems, and nothing changed.
    pub reload: Option<Reload>,
    /// The key accounts added through the API are sealed with (`store.encryption_key_file`).
    pub vault: Option<Arc<crate::vault::Vault>>,
    /// An account's live state, and its wind-down on the venue before removal.
    pub account_hooks: Option<accounts::Hooks>,
    /// The live event stream (`GET /api/events`).
    pub events: Option<Arc<crate::events::Hub>>,
}

/// Reloads the configuration and says what changed in the process table.
pub type Reload = Arc<dyn Fn() -> Result<crate::scheduler::ReloadReport, String> + Send + Sync>;

pub fn router(state: AppState) -> Router {
    let (routes, document) = routes::all().finish();
    let _ = DOCUMENT.set(document);
    routes
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        // Innermost first: the audit sees what the rate let through (so no
        // caller can write rows faster than its rate), the rate what the
        // body limit and the concurrency cap let through.
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(axum::middleware::from_fn_with_state(state.clone(), shed::rate_limit))
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), shed::bound))
        .with_state(state)
}

/// A call that changes something: audited, rate limited per token, and
/// never cut off by the read deadline.
fn is_mutation(method: &axum::http::Method) -> bool {
    use axum::http::Method;
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// The OpenAPI document of [`router`]'s routes (the same for every router built).
static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();

/// `GET /api/openapi.json`.
async fn openapi_document() -> Response {
    match DOCUMENT.get() {
        Some(document) => axum::Json(document).into_response(),
        None => ApiError::not_found("no document").into_response(),
    }
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

/// The runbooks the alerts' `runbook_url` points to.
async fn runbooks() -> Response {
    (
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        include_str!("../../docs/runbooks.md"),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "starting or stopping").into_response()
    }
}

/// Prometheus text 0.0.4 by default; OpenMetrics (with exemplars) when asked for.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = state.tokens.metrics_allowed(&headers) {
        return refused.into_response();
    }
    for p in state.scheduler.processes().iter() {
        let calls = state.scheduler.budget().calls_last_minute(&p.id);
        state.metrics.process.api_calls_last_minute(&p.id, calls);
        let limit = state.scheduler.budget().limit(&p.id);
        state.metrics.process.api_limit(&p.id, limit);
    }
    if let Some(weight) = &state.weight {
        let u = weight.usage();
        state
            .metrics
            .api
            .weight_usage(u.used, u.limit, u.venue_used, u.venue_limit);
    }
    let now = crate::clock::now_ms();
    state.metrics.domain.refresh(now);
    state.metrics.stream.refresh(now);
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if wants_openmetrics {
        (
            state.metrics.encode_openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            state.metrics.encode_prometheus(),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
