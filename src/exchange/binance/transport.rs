//! One HTTP exchange with Binance: signing with the venue's clock offset,
//! the `X-MBX-APIKEY` header, the client span, the used-weight header (which
//! corrects the budget), 429/418 (which pause every caller) and the mapping
//! of every answer to success or a known error kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::field;

use super::sign::{Credentials, Prepared, prepare};
use crate::budget::{Admission, Caller};
use crate::exchange::{Account, VenueError};
use crate::telemetry::Metrics;
use crate::telemetry::api::Sent;
use crate::telemetry::otel;

/// The venue's error body: `{"code": -1003, "msg": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    code: i64,
    msg: String,
}

/// How requests leave: where to, how long a signature is valid, how long to wait.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    pub base_url: String,
    pub recv_window_ms: u64,
    pub timeout: Duration,
}

/// One request as the client describes it.
pub struct Request {
    pub method: Method,
    /// The route, also the `endpoint` label.
    pub endpoint: &'static str,
    pub params: Vec<(String, String)>,
    /// Signs the request with this account's keys (or, with `key_only`, sends its API key alone).
    pub account: Option<std::sync::Arc<Account>>,
    pub key_only: bool,
    pub weight: u32,
}

pub struct Transport {
    http: reqwest::Client,
    options: TransportOptions,
    /// Venue clock minus ours, for signed timestamps.
    clock_offset_ms: AtomicI64,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
}

impl Transport {
    pub fn new(
        mut options: TransportOptions,
        admission: Arc<Admission>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        options.base_url = options.base_url.trim_end_matches('/').to_string();
        Ok(Transport {
            http: crate::net::http_client()?,
            options,
            clock_offset_ms: AtomicI64::new(0),
            admission,
            metrics,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.options.base_url
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Signed timestamps and the budget's minutes follow the venue's clock from now on.
    pub fn set_clock_offset_ms(&self, offset: i64) {
        self.clock_offset_ms.store(offset, Ordering::Relaxed);
        self.admission.weight.set_clock_offset_ms(offset);
        self.metrics.api.clock_offset(offset);
    }

    /// Sends an admitted request for `caller` and reads the venue's headers.
    pub async fn send(&self, caller: &Caller, req: &Request) -> Result<Bytes, VenueError> {
        let prepared = prepare(
            &self.options.base_url,
            req.method.clone(),
            req.endpoint,
            &req.params,
            match (&req.account, req.key_only) {
                (None, _) => Credentials::None,
                (Some(a), true) => Credentials::Key(a),
                (Some(a), false) => Credentials::Signed(a),
            },
            self.options.recv_window_ms,
            self.clock_offset_ms(),
        );
        let started = Instant::now();
        // The venue counts this request's weight in the minute it arrives, at or after this one.
        let sent_in_minute = self.admission.weight.venue_minute();
        let is_write = req.method != Method::GET;
        let result = send(&self.http, prepared, req.endpoint, self.options.timeout).await;
        self.metrics.api.request(Sent {
            process: &caller.process,
            endpoint: req.endpoint,
            status_class: match &result {
                Ok(a) => status_class(a.status),
                Err(_) => "transport",
            },
            weight: req.weight,
            seconds: started.elapsed().as_secs_f64(),
            trace_id: otel::trace_id(&tracing::Span::current()),
        });
        let answer = result?;
        if let Some(used) = answer
            .headers
            .get("x-mbx-used-weight-1m")
            .and_then(|v| v.to_str().ok()?.parse().ok())
        {
            self.metrics.api.venue_used_weight(used);
            self.admission.observe_used_weight(used, sent_in_minute).await;
        }
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let error = classify(&answer, is_write);
        self.on_rate_limit(&error);
        Err(error)
    }

    /// A 429 or 418 stops every caller until `Retry-After` has passed.
    fn on_rate_limit(&self, error: &VenueError) {
        match error {
            VenueError::RateLimited { retry_after } => {
                self.metrics.api.rate_limited("429");
                tracing::warn!(
                    retry_after_s = retry_after.as_secs(),
                    "venue answered 429: every caller waits"
                );
                self.admission.pause_for(*retry_after);
            }
            VenueError::Banned { until } => {
                self.metrics.api.rate_limited("418");
                tracing::error!(
                    retry_after_s = until.as_secs(),
                    "venue answered 418 (IP ban): every caller waits"
                );
                self.admission.pause_for(*until);
            }
            _ => {}
        }
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What came back, before interpretation.
struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends one request inside an HTTP client span. Transport failures are
/// `Transient` for reads and `UnknownOutcome` for writes.
async fn send(
    http: &reqwest::Client,
    prepared: Prepared,
    endpoint: &'static str,
    timeout: Duration,
) -> Result<Answer, VenueError> {
    let is_write = prepared.method != Method::GET;
    let span = tracing::info_span!(
        "upstream",
        otel.name = format!("{} {endpoint}", prepared.method),
        otel.kind = "client",
        "http.request.method" = %prepared.method,
        "url.template" = endpoint,
        "server.address" = field::Empty,
        "http.response.status_code" = field::Empty,
        "error.type" = field::Empty,
    );
    if let Ok(url) = reqwest::Url::parse(&prepared.url)
        && let Some(host) = url.host_str()
    {
        span.record("server.address", host);
    }
    let mut request = http.request(prepared.method.clone(), &prepared.url).timeout(timeout);
    if let Some(key) = &prepared.api_key {
        request = request.header("X-MBX-APIKEY", key);
    }
    if let Some(tp) = otel::traceparent(&span) {
        request = request.header("traceparent", tp);
    }
    if let Some(body) = prepared.body {
        request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
    }
    let _enter = span.enter();
    let result = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>(Answer { status, headers, body })
    };
    drop(_enter);
    let result = tracing::Instrument::instrument(result, span.clone()).await;
    match result {
        Ok(answer) => {
            span.record("http.response.status_code", answer.status);
            if answer.status >= 400 {
                span.record("error.type", answer.status.to_string().as_str());
            }
            Ok(answer)
        }
        Err(e) => {
            // Never print the URL: it carries the signature.
            let e = e.without_url();
            span.record("error.type", if e.is_timeout() { "timeout" } else { "transport" });
            let message = e.to_string();
            Err(if is_write && !e.is_connect() {
                VenueError::UnknownOutcome(format!("no answer to an order request: {message}"))
            } else {
                VenueError::Transient(message)
            })
        }
    }
}

/// Maps a non-2xx answer to its error kind.
fn classify(answer: &Answer, is_write: bool) -> VenueError {
    let retry_after = answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60));
    let body: Option<ErrorBody> = serde_json::from_slice(&answer.body).ok();
    match (answer.status, body) {
        (429, _) => VenueError::RateLimited { retry_after },
        (418, _) => VenueError::Banned { until: retry_after },
        (_, Some(ErrorBody { code: -1021, .. })) => VenueError::ClockSkew,
        (
            _,
            Some(ErrorBody {
                code: -1022 | -2014 | -2015 | -2008,
                msg,
            }),
        ) => VenueError::Auth(msg),
        (_, Some(ErrorBody { code: -1007, msg })) => VenueError::UnknownOutcome(msg),
        (401 | 403, _) => VenueError::Auth(format!("HTTP {}", answer.status)),
        (500.., _) if is_write => VenueError::UnknownOutcome(format!("HTTP {} to an order request", answer.status)),
        (500.., _) => VenueError::Transient(format!("HTTP {}", answer.status)),
        (_, Some(ErrorBody { code, msg })) => VenueError::Rejected { code, msg },
        (status, None) => VenueError::Decode(format!("HTTP {status} with a body that is not the venue's error shape")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, retry_after: Option<&str>) -> Answer {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry_after {
            headers.insert("retry-after", r.parse().unwrap());
        }
        Answer {
            status,
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn every_answer_maps_to_a_known_kind() {
        use crate::exchange::VenueErrorKind as K;
        let cases = [
            (
                answer(429, r#"{"code":-1003,"msg":"Too many"}"#, Some("7")),
                false,
                K::RateLimited,
            ),
            (
                answer(418, r#"{"code":-1003,"msg":"banned"}"#, Some("120")),
                false,
                K::Banned,
            ),
            (answer(400, r#"{"code":-1021,"msg":"ts"}"#, None), false, K::ClockSkew),
            (answer(400, r#"{"code":-1022,"msg":"sig"}"#, None), false, K::Auth),
            (answer(401, r#"{"code":-2015,"msg":"key"}"#, None), false, K::Auth),
            (answer(400, r#"{"code":-4116,"msg":"dup"}"#, None), true, K::Rejected),
            (answer(503, "", None), true, K::UnknownOutcome),
            (answer(503, "", None), false, K::Transient),
            (answer(400, "<html>", None), false, K::Decode),
        ];
        for (a, write, kind) in cases {
            assert_eq!(classify(&a, write).kind(), kind, "HTTP {} {:?}", a.status, a.body);
        }
        assert_eq!(
            classify(&answer(429, "", Some("7")), false),
            VenueError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
    }
}
