//! Load shedding: a server that answers "not now" instead of queueing
//! without bound. Requests handled at once are capped (`http.max_concurrent_requests`;
//! beyond it 503 at once), reads have a deadline (`http.request_timeout_seconds`;
//! 503 when it passes), and each token's mutating calls are rate limited
//! (`http.mutations_per_minute`; 429). Every refusal says when to come back
//! (`Retry-After`) and is counted by reason. Mutations are never cut off by
//! the deadline: a change half made and answered 503 would be made twice by
//! a client that retries, and would miss its audit row; each mutating
//! handler bounds its own work (store writes, the kill switch's 8 s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{ApiError, AppState, is_mutation};

/// The server's limits, shared by every route.
pub struct Limits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    mutations: Mutex<HashMap<String, Bucket>>,
    per_minute: f64,
}

/// A token bucket: `tokens` left, refilled at `per_minute` / 60 a second.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limits {
    pub fn new(max_concurrent: usize, timeout: Duration, mutations_per_minute: u32) -> Self {
        Limits {
            in_flight: Arc::new(Semaphore::new(max_concurrent.max(1))),
            timeout,
            mutations: Mutex::default(),
            per_minute: f64::from(mutations_per_minute.max(1)),
        }
    }

    /// Takes one mutation from `who`'s bucket, or says how long until one is there.
    fn take_mutation(&self, who: &str) -> Result<(), Duration> {
        let mut buckets = self.mutations.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let per_second = self.per_minute / 60.0;
        let b = buckets.entry(who.to_string()).or_insert(Bucket {
            tokens: self.per_minute,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_second).min(self.per_minute);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }
}

fn refusal(status: StatusCode, code: &'static str, message: String, retry_after: Duration) -> Response {
    let mut r = ApiError::new(status, code, message).into_response();
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    r
}

/// Middleware: the concurrency cap and the deadline.
pub async fn bound(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.limits;
    // Probes and the scrape stay answerable under load: they are cheap, and
    // an overloaded service must not look dead to its orchestrator.
    let exempt = ["/healthz", "/readyz", "/metrics"].contains(&request.uri().path());
    // Held until this function returns, the answer included.
    let _permit = match limits.in_flight.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) if exempt => None,
        Err(_) => {
            state.metrics.http_shed("concurrency");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight (http.max_concurrent_requests); retry shortly".into(),
                Duration::from_secs(1),
            );
        }
    };
    if is_mutation(request.method()) {
        return next.run(request).await;
    }
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.http_shed("timeout");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {:.0} s (http.request_timeout_seconds)",
                    limits.timeout.as_secs_f64()
                ),
                Duration::from_secs(1),
            )
        }
    }
}

/// Middleware: each token's mutating calls per minute (unknown callers share one bucket).
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !is_mutation(request.method()) {
        return next.run(request).await;
    }
    let who = state.tokens.name_of(request.headers());
    match state.limits.take_mutation(&who) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            state.metrics.http_shed("rate_limited");
            refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("`{who}` made more than its mutating calls per minute (http.mutations_per_minute)"),
                wait,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokens_bucket_empties_and_refills_on_its_own() {
        let l = Limits::new(1, Duration::from_secs(1), 60);
        for _ in 0..60 {
            l.take_mutation("desk").unwrap();
        }
        let wait = l.take_mutation("desk").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        l.take_mutation("other").expect("another token has its own bucket");
        tokio::time::advance(Duration::from_secs(2)).await;
        l.take_mutation("desk").expect("refilled");
    }
}
