//! Metrics of exchange API use: calls, weight, latency, throttling,
//! rate-limit answers, and what batching, de-duplication and the cache saved.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::metrics::{ProcessLabels, TraceLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub process: String,
    /// Route template, e.g. `/fapi/v1/ticker/price`.
    pub endpoint: &'static str,
    /// `2xx`, `4xx`, `5xx`, or `transport` when no answer came.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub endpoint: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Latency of upstream requests: 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Time spent waiting for budget: 1 ms to 60 s.
const WAIT_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

pub struct ApiMetrics {
    pub calls: Family<CallLabels, Counter>,
    pub weight: Family<ProcessLabels, Counter>,
    pub duration:
        Family<EndpointLabels, HistogramWithExemplars<TraceLabels>, fn() -> HistogramWithExemplars<TraceLabels>>,
    pub weight_used: Gauge,
    pub weight_limit: Gauge,
    pub upstream_used_weight: Gauge,
    pub upstream_weight_limit: Gauge,
    pub throttled: Family<ProcessLabels, Counter>,
    pub throttle_wait: Histogram,
    pub rate_limit_responses: Family<StatusLabels, Counter>,
    pub deduplicated: Counter,
    pub cache: Family<CacheLabels, Counter>,
    pub errors: Family<KindLabels, Counter>,
    pub clock_offset: Gauge<f64, AtomicU64>,
}

fn latency_histogram() -> HistogramWithExemplars<TraceLabels> {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    pub fn new() -> Self {
        ApiMetrics {
            calls: Family::default(),
            weight: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            weight_used: Gauge::default(),
            weight_limit: Gauge::default(),
            upstream_used_weight: Gauge::default(),
            upstream_weight_limit: Gauge::default(),
            throttled: Family::default(),
            throttle_wait: Histogram::new(WAIT_BUCKETS),
            rate_limit_responses: Family::default(),
            deduplicated: Counter::default(),
            cache: Family::default(),
            errors: Family::default(),
            clock_offset: Gauge::default(),
        }
    }

    /// Registers under `script_manager_api_`.
    pub fn register(&self, api: &mut Registry) {
        api.register(
            "calls",
            "Upstream requests sent, by process, endpoint and status class",
            self.calls.clone(),
        );
        api.register("weight", "Request weight spent, by process", self.weight.clone());
        api.register_with_unit(
            "request_duration",
            "Latency of upstream requests",
            Unit::Seconds,
            self.duration.clone(),
        );
        api.register(
            "weight_used",
            "Weight counted against our budget in the current minute",
            self.weight_used.clone(),
        );
        api.register(
            "weight_limit",
            "Our weight budget per minute (venue limit x safety margin)",
            self.weight_limit.clone(),
        );
        api.register(
            "upstream_used_weight",
            "The venue's count of used weight this minute (X-MBX-USED-WEIGHT-1M)",
            self.upstream_used_weight.clone(),
        );
        api.register(
            "upstream_weight_limit",
            "The venue's weight limit per minute (exchangeInfo)",
            self.upstream_weight_limit.clone(),
        );
        api.register(
            "throttled",
            "Requests that had to wait for budget, by process",
            self.throttled.clone(),
        );
        api.register_with_unit(
            "throttle_wait",
            "Time requests waited for budget",
            Unit::Seconds,
            self.throttle_wait.clone(),
        );
        api.register(
            "rate_limit_responses",
            "Rate-limit answers from the venue (429 warning, 418 ban)",
            self.rate_limit_responses.clone(),
        );
        api.register(
            "deduplicated",
            "Requests answered by an identical request already in flight",
            self.deduplicated.clone(),
        );
        api.register(
            "cache_requests",
            "Cache look-ups by endpoint and result (hit, miss)",
            self.cache.clone(),
        );
        api.register("errors", "Failed upstream calls by error kind", self.errors.clone());
        api.register_with_unit(
            "clock_offset",
            "Venue clock minus local clock",
            Unit::Seconds,
            self.clock_offset.clone(),
        );
    }

    /// Series that must exist from start-up.
    pub fn init(&self, endpoints: &[&'static str]) {
        for status in ["429", "418"] {
            let _ = self.rate_limit_responses.get_or_create(&StatusLabels { status });
        }
        for kind in crate::exchange::VenueErrorKind::ALL {
            let _ = self.errors.get_or_create(&KindLabels { kind: kind.as_str() });
        }
        for &endpoint in endpoints {
            let _ = self.duration.get_or_create(&EndpointLabels { endpoint });
            for result in ["hit", "miss"] {
                let _ = self.cache.get_or_create(&CacheLabels { endpoint, result });
            }
        }
    }

    pub fn init_process(&self, process: &str) {
        let l = ProcessLabels {
            process: process.to_string(),
        };
        let _ = self.weight.get_or_create(&l);
        let _ = self.throttled.get_or_create(&l);
    }
}
