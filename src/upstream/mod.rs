//! Coordination in front of the exchange, venue-agnostic: every request goes
//! through [`Upstream::call`], which answers it from the cache (if the caller
//! accepts an old enough value), or joins an identical request in flight, or
//! admits it through the budget immediately before the venue's transport
//! sends it. Cache hits and followers send nothing and are never admitted.
//!
//! Owns: the order of those steps, the cache, single flight, and counting
//! them. Imports `budget` and `telemetry`; knows no venue (the transport is
//! a closure the exchange hands in) and nothing of `ha`.

mod cache;
mod flight;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::budget::{Admission, Caller, Refused};
use crate::telemetry::Metrics;

/// The coordination knobs (DESIGN §4); all on by default.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    pub batching: bool,
    pub dedupe: bool,
    pub cache: bool,
}

/// What the coordination needs to know of one request.
pub struct Call {
    /// The route template, the `endpoint` label.
    pub endpoint: &'static str,
    /// Identity of an idempotent read (method, route, parameters, account):
    /// identical keys share flights and cache entries. `None` for writes.
    pub key: Option<String>,
    pub weight: u32,
}

/// Sends one admitted request; the exchange's transport behind a closure.
pub type Send<E> = Box<dyn FnOnce(Caller) -> BoxFuture<'static, Result<Bytes, E>> + std::marker::Send>;

pub struct Upstream<E: Clone> {
    pub knobs: Knobs,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    cache: cache::Cache,
    flights: flight::Flights<Result<Bytes, E>>,
}

impl<E> Upstream<E>
where
    E: From<Refused> + Clone + std::marker::Send + Sync + 'static,
{
    pub fn new(knobs: Knobs, admission: Arc<Admission>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Upstream {
            knobs,
            admission,
            metrics,
            cache: cache::Cache::default(),
            flights: flight::Flights::default(),
        })
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Answers `call` for `caller` from the cache or a flight in progress, or sends it with `send`.
    pub async fn call(self: &Arc<Self>, caller: &Caller, call: Call, send: Send<E>) -> Result<Bytes, E> {
        let Some(key) = call.key.clone() else {
            return self.admit_and_send(caller.clone(), call.weight, send).await;
        };
        if self.knobs.cache
            && let Some(max_age) = caller.max_age
        {
            let hit = self.cache.get(&key, max_age);
            self.metrics.api.cache_lookup(call.endpoint, hit.is_some());
            if let Some(body) = hit {
                return Ok(body);
            }
        }
        if !self.knobs.dedupe {
            return self.fetch_and_cache(caller.clone(), call.weight, key, send).await;
        }
        let me = self.clone();
        let leader = caller.clone();
        let (answer, led) = self
            .flights
            .join(key.clone(), move || {
                Box::pin(async move { me.fetch_and_cache(leader, call.weight, key, send).await })
            })
            .await;
        if !led {
            self.metrics.api.deduplicated();
        }
        answer
    }

    async fn fetch_and_cache(&self, caller: Caller, weight: u32, key: String, send: Send<E>) -> Result<Bytes, E> {
        let fetched_at = Instant::now();
        let body = self.admit_and_send(caller, weight, send).await?;
        if self.knobs.cache {
            self.cache.put(key, fetched_at, body.clone());
        }
        Ok(body)
    }

    /// Admission immediately before sending, bounded by the caller's deadline.
    async fn admit_and_send(&self, caller: Caller, weight: u32, send: Send<E>) -> Result<Bytes, E> {
        let span = tracing::debug_span!(
            "budget",
            "budget.weight" = weight,
            "budget.waited_s" = tracing::field::Empty
        );
        let admitted = tracing::Instrument::instrument(self.admission.admit(&caller, weight), span.clone()).await;
        let admitted = admitted?;
        span.record("budget.waited_s", admitted.waited.as_secs_f64());
        if admitted.waited > Duration::from_millis(1) {
            self.metrics
                .api
                .throttled(&caller.process, admitted.waited.as_secs_f64());
        }
        if admitted.cluster_waits > 0 {
            self.metrics.ha.cluster_budget_waits(admitted.cluster_waits);
        }
        if admitted.local_share {
            self.metrics.ha.cluster_budget_local_call();
        }
        send(caller).await
    }
}
