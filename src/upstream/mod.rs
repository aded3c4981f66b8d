//! The one HTTP client to the exchange. Every request goes through
//! [`Upstream::call`]: the cache (if the caller accepts an old enough value),
//! de-duplication of identical GETs in flight, admission by the per-process
//! and global budgets, signing, and the reading of the venue's weight and
//! rate-limit headers. Each step is counted in metrics.

mod cache;
mod send;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use reqwest::Method;
use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::budget::{Admission, ApiBudget, GlobalBudget};
use crate::exchange::{Account, Caller, VenueError};
use crate::ha::budget::ClusterBudget;
use crate::telemetry::Metrics;
use crate::telemetry::api::{CacheLabels, CallLabels, EndpointLabels, KindLabels, StatusLabels};
use crate::telemetry::metrics::{ProcessLabels, TraceLabels};
use crate::telemetry::otel;

pub use send::{encode, now_ms};

/// Selects the TLS crypto provider (ring) for every HTTP client in the process.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client with TLS (ring) set up; the one way this crate makes clients.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    install_crypto();
    Ok(reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?)
}

/// The coordination knobs (DESIGN §4); all on by default.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    pub batching: bool,
    pub dedupe: bool,
    pub cache: bool,
}

/// One request as the venue layer describes it.
pub struct Request<'a> {
    pub method: Method,
    /// The route, also the `endpoint` label.
    pub endpoint: &'static str,
    pub params: Vec<(String, String)>,
    /// Signs the request with this account's keys.
    pub account: Option<&'a Account>,
    pub weight: u32,
}

type SharedCall = Shared<BoxFuture<'static, Result<Bytes, VenueError>>>;

pub struct Upstream {
    http: reqwest::Client,
    base_url: String,
    pub budget: Arc<GlobalBudget>,
    process_budget: Arc<ApiBudget>,
    metrics: Arc<Metrics>,
    pub knobs: Knobs,
    recv_window_ms: u64,
    timeout: Duration,
    clock_offset_ms: AtomicI64,
    cache: cache::Cache,
    in_flight: Mutex<HashMap<String, SharedCall>>,
    /// Under HA: the budget all replicas share (counted in PostgreSQL).
    cluster: std::sync::OnceLock<Arc<ClusterBudget>>,
}

pub struct UpstreamOptions {
    pub base_url: String,
    pub knobs: Knobs,
    pub recv_window_ms: u64,
    pub timeout: Duration,
}

impl Upstream {
    pub fn new(
        options: UpstreamOptions,
        budget: Arc<GlobalBudget>,
        process_budget: Arc<ApiBudget>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        metrics.api.init(crate::exchange::binance::ENDPOINTS);
        Ok(Arc::new(Upstream {
            http,
            base_url: options.base_url.trim_end_matches('/').to_string(),
            budget,
            process_budget,
            metrics,
            knobs: options.knobs,
            recv_window_ms: options.recv_window_ms,
            timeout: options.timeout,
            clock_offset_ms: AtomicI64::new(0),
            cache: cache::Cache::default(),
            in_flight: Mutex::new(HashMap::new()),
            cluster: std::sync::OnceLock::new(),
        }))
    }

    /// Counts every call in the cluster's budget too (HA; set once, before the first call).
    pub fn share_budget(&self, cluster: Arc<ClusterBudget>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    pub fn set_clock_offset_ms(&self, offset: i64) {
        self.clock_offset_ms.store(offset, Ordering::Relaxed);
        self.budget.set_clock_offset_ms(offset);
        self.metrics.api.clock_offset.set(offset as f64 / 1000.0);
    }

    /// Refreshes the weight gauges (called at scrape time).
    pub fn refresh_gauges(&self) {
        let usage = self.budget.usage();
        let m = &self.metrics.api;
        m.weight_used.set(usage.used as i64);
        m.weight_limit.set(usage.limit as i64);
        m.upstream_used_weight.set(usage.venue_used as i64);
        m.upstream_weight_limit.set(usage.venue_limit as i64);
    }

    /// Counts a failure of a call in `script_manager_api_errors_total`.
    pub fn count_error(&self, e: &VenueError) {
        self.metrics
            .api
            .errors
            .get_or_create(&KindLabels {
                kind: e.kind().as_str(),
            })
            .inc();
    }

    /// Sends `req` for `caller`, or answers it from the cache or an identical request in flight.
    pub async fn call(self: &Arc<Self>, caller: &Caller, req: Request<'_>) -> Result<Bytes, VenueError> {
        let result = self.call_inner(caller, req).await;
        if let Err(e) = &result {
            self.metrics
                .api
                .errors
                .get_or_create(&KindLabels {
                    kind: e.kind().as_str(),
                })
                .inc();
        }
        result
    }

    async fn call_inner(self: &Arc<Self>, caller: &Caller, req: Request<'_>) -> Result<Bytes, VenueError> {
        if req.method != Method::GET {
            return self.send_admitted(caller, &req).await;
        }
        let key = cache_key(&req);
        if self.knobs.cache
            && let Some(max_age) = caller.max_age
        {
            let hit = self.cache.get(&key, max_age);
            let result = if hit.is_some() { "hit" } else { "miss" };
            self.metrics
                .api
                .cache
                .get_or_create(&CacheLabels {
                    endpoint: req.endpoint,
                    result,
                })
                .inc();
            if let Some(body) = hit {
                return Ok(body);
            }
        }
        if !self.knobs.dedupe {
            return self.fetch_and_cache(caller, &req, key).await;
        }
        let (shared, leader) = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get(&key) {
                Some(shared) => (shared.clone(), false),
                None => {
                    let me = self.clone();
                    let caller = caller.clone();
                    let owned = OwnedRequest::from(&req);
                    let k = key.clone();
                    let fut: BoxFuture<'static, Result<Bytes, VenueError>> = Box::pin(async move {
                        let account = owned.account.clone();
                        let req = Request {
                            method: owned.method.clone(),
                            endpoint: owned.endpoint,
                            params: owned.params.clone(),
                            account: account.as_ref(),
                            weight: owned.weight,
                        };
                        let result = me.fetch_and_cache(&caller, &req, k.clone()).await;
                        me.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                        result
                    });
                    let shared = fut.shared();
                    in_flight.insert(key.clone(), shared.clone());
                    (shared, true)
                }
            }
        };
        if !leader {
            self.metrics.api.deduplicated.inc();
        }
        shared.await
    }

    async fn fetch_and_cache(&self, caller: &Caller, req: &Request<'_>, key: String) -> Result<Bytes, VenueError> {
        let fetched_at = Instant::now();
        let body = self.send_admitted(caller, req).await?;
        if self.knobs.cache {
            self.cache.put(key, fetched_at, body.clone());
        }
        Ok(body)
    }

    /// Admission, then the request; a -1021 answer re-syncs the clock and tries once more.
    async fn send_admitted(&self, caller: &Caller, req: &Request<'_>) -> Result<Bytes, VenueError> {
        match self.send_once(caller, req).await {
            Err(VenueError::ClockSkew) if req.account.is_some() => {
                tracing::warn!(
                    endpoint = req.endpoint,
                    "venue rejected our timestamp; re-syncing the clock"
                );
                self.sync_time(caller).await?;
                self.send_once(caller, req).await
            }
            other => other,
        }
    }

    /// Measures the venue's clock offset with `GET /fapi/v1/time` (weight 1).
    pub async fn sync_time(&self, caller: &Caller) -> Result<i64, VenueError> {
        let before = now_ms();
        let req = Request {
            method: Method::GET,
            endpoint: crate::exchange::binance::TIME,
            params: vec![],
            account: None,
            weight: 1,
        };
        let body = self.send_once(caller, &req).await?;
        let after = now_ms();
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Time {
            server_time: i64,
        }
        let t: Time = serde_json::from_slice(&body).map_err(|e| VenueError::Decode(format!("server time: {e}")))?;
        let offset = t.server_time - (before + after) / 2;
        self.set_clock_offset_ms(offset);
        tracing::info!(offset_ms = offset, "venue clock offset measured");
        Ok(offset)
    }

    async fn send_once(&self, caller: &Caller, req: &Request<'_>) -> Result<Bytes, VenueError> {
        self.admit(caller, req.weight).await?;
        let prepared = send::prepare(
            &self.base_url,
            req.method.clone(),
            req.endpoint,
            &req.params,
            req.account,
            self.recv_window_ms,
            self.clock_offset_ms(),
        );
        let started = Instant::now();
        let is_write = req.method != Method::GET;
        let result = send::send(&self.http, prepared, req.endpoint, self.timeout).await;
        let elapsed = started.elapsed();
        let m = &self.metrics.api;
        let status_class = match &result {
            Ok(a) => match a.status {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Err(_) => "transport",
        };
        m.calls
            .get_or_create(&CallLabels {
                process: caller.process.clone(),
                endpoint: req.endpoint,
                status_class,
            })
            .inc();
        m.weight
            .get_or_create(&ProcessLabels {
                process: caller.process.clone(),
            })
            .inc_by(req.weight as u64);
        let exemplar = otel::trace_id(&tracing::Span::current()).map(|trace_id| TraceLabels { trace_id });
        m.duration
            .get_or_create(&EndpointLabels { endpoint: req.endpoint })
            .observe(elapsed.as_secs_f64(), exemplar, None);
        let answer = result?;
        if let Some(used) = answer
            .headers
            .get("x-mbx-used-weight-1m")
            .and_then(|v| v.to_str().ok()?.parse().ok())
        {
            self.budget.observe_used_weight(used);
            m.upstream_used_weight.set(used as i64);
            if let Some(cluster) = self.cluster.get()
                && let Err(e) = cluster.observe_used(self.budget.venue_minute(), used).await
            {
                tracing::debug!(error = %format!("{e:#}"), "cannot record the venue's weight count in the cluster budget");
            }
        }
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let error = send::classify(&answer, is_write);
        match &error {
            VenueError::RateLimited { retry_after } => {
                m.rate_limit_responses
                    .get_or_create(&StatusLabels { status: "429" })
                    .inc();
                tracing::warn!(
                    retry_after_s = retry_after.as_secs(),
                    "venue answered 429: every caller waits"
                );
                self.budget.pause_for(*retry_after);
            }
            VenueError::Banned { until } => {
                m.rate_limit_responses
                    .get_or_create(&StatusLabels { status: "418" })
                    .inc();
                tracing::error!(
                    retry_after_s = until.as_secs(),
                    "venue answered 418 (IP ban): every caller waits"
                );
                self.budget.pause_for(*until);
            }
            _ => {}
        }
        Err(error)
    }

    /// The per-process limit, then the global weight budget, both bounded by the caller's deadline.
    async fn admit(&self, caller: &Caller, weight: u32) -> Result<(), VenueError> {
        let span = tracing::debug_span!("budget", "budget.weight" = weight, "budget.waited_s" = field::Empty);
        let started = Instant::now();
        let result = self.admit_inner(caller, weight).instrument(span.clone()).await;
        span.record("budget.waited_s", started.elapsed().as_secs_f64());
        result
    }

    async fn admit_inner(&self, caller: &Caller, weight: u32) -> Result<(), VenueError> {
        let started = Instant::now();
        loop {
            match self.process_budget.try_take(&caller.process, 1) {
                Ok(()) => break,
                Err(None) => {
                    return Err(VenueError::BudgetExhausted(format!(
                        "process `{}` has no API calls per minute configured",
                        caller.process
                    )));
                }
                Err(Some(wait)) => {
                    if Instant::now() + wait > caller.deadline {
                        return Err(VenueError::BudgetExhausted(format!(
                            "process `{}` used its calls per minute; room in {:.1}s, after its deadline",
                            caller.process,
                            wait.as_secs_f64()
                        )));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if let Err(a) = self
            .budget
            .acquire(&caller.process, caller.priority, weight, caller.deadline)
            .await
        {
            self.process_budget.refund(&caller.process, 1);
            return Err(VenueError::BudgetExhausted(match a {
                Admission::WouldMissDeadline { wait } => {
                    format!(
                        "global weight budget has room in {:.1}s, after the deadline",
                        wait.as_secs_f64()
                    )
                }
                Admission::TooHeavy { weight, cap } => format!("weight {weight} exceeds this caller's share {cap}"),
            }));
        }
        if let Some(cluster) = self.cluster.get()
            && let Err(e) = self.admit_cluster(cluster, caller, weight).await
        {
            self.process_budget.refund(&caller.process, 1);
            return Err(e);
        }
        let waited = started.elapsed();
        if waited > Duration::from_millis(1) {
            let m = &self.metrics.api;
            m.throttled
                .get_or_create(&ProcessLabels {
                    process: caller.process.clone(),
                })
                .inc();
            m.throttle_wait.observe(waited.as_secs_f64());
        }
        Ok(())
    }
}

impl Upstream {
    /// The cluster's share for the venue's current minute; waits for the next
    /// minute when it is spent, within the caller's deadline.
    async fn admit_cluster(&self, cluster: &ClusterBudget, caller: &Caller, weight: u32) -> Result<(), VenueError> {
        loop {
            let minute = self.budget.venue_minute();
            let limit = self.process_budget.limit(&caller.process);
            let cap = self.budget.cap(&caller.process);
            match cluster.try_take(&caller.process, limit, weight, cap, minute).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    let wait = self.budget.until_next_minute();
                    if Instant::now() + wait > caller.deadline {
                        return Err(VenueError::BudgetExhausted(format!(
                            "the cluster's budget for this minute is spent (all replicas); room in {:.1}s, after the deadline",
                            wait.as_secs_f64()
                        )));
                    }
                    self.metrics.ha.cluster_budget_waits.inc();
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    return Err(VenueError::BudgetExhausted(format!(
                        "the cluster's budget cannot be read (PostgreSQL): {e:#}"
                    )));
                }
            }
        }
    }
}

/// An owned copy of a request, for the shared (de-duplicated) future.
struct OwnedRequest {
    method: Method,
    endpoint: &'static str,
    params: Vec<(String, String)>,
    account: Option<Account>,
    weight: u32,
}

impl From<&Request<'_>> for OwnedRequest {
    fn from(r: &Request<'_>) -> Self {
        OwnedRequest {
            method: r.method.clone(),
            endpoint: r.endpoint,
            params: r.params.clone(),
            account: r.account.cloned(),
            weight: r.weight,
        }
    }
}

/// Identical requests share a key: method, route, parameters, account.
fn cache_key(req: &Request<'_>) -> String {
    let mut params = req.params.clone();
    params.sort();
    let account = req.account.map_or("", |a| a.name.as_str());
    format!("{} {}?{}#{account}", req.method, req.endpoint, encode(&params))
}
