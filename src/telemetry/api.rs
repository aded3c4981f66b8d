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

use super::process::{ProcessLabels, TraceLabels, labels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    process: String,
    /// Route template, e.g. `/fapi/v1/ticker/price`.
    endpoint: &'static str,
    /// `2xx`, `4xx`, `5xx`, or `transport` when no answer came.
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    endpoint: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Latency of upstream requests: 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Time spent waiting for budget: 1 ms to 60 s.
const WAIT_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

pub struct ApiMetrics {
    calls: Family<CallLabels, Counter>,
    weight: Family<ProcessLabels, Counter>,
    duration: Family<EndpointLabels, HistogramWithExemplars<TraceLabels>, fn() -> HistogramWithExemplars<TraceLabels>>,
    weight_used: Gauge,
    weight_limit: Gauge,
    upstream_used_weight: Gauge,
    upstream_weight_limit: Gauge,
    throttled: Family<ProcessLabels, Counter>,
    throttle_wait: Histogram,
    rate_limit_responses: Family<StatusLabels, Counter>,
    deduplicated: Counter,
    cache: Family<CacheLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    clock_offset: Gauge<f64, AtomicU64>,
    /// Every route, from `init`, so a removed process's series can be found.
    endpoints: std::sync::Mutex<Vec<&'static str>>,
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
            endpoints: std::sync::Mutex::default(),
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

    /// Series that must exist from start-up: every route, every error kind.
    pub fn init(&self, endpoints: &[&'static str], error_kinds: &[&'static str]) {
        for status in ["429", "418"] {
            let _ = self.rate_limit_responses.get_or_create(&StatusLabels { status });
        }
        for &kind in error_kinds {
            let _ = self.errors.get_or_create(&KindLabels { kind });
        }
        *self.endpoints.lock().unwrap_or_else(|e| e.into_inner()) = endpoints.to_vec();
        for &endpoint in endpoints {
            let _ = self.duration.get_or_create(&EndpointLabels { endpoint });
            for result in ["hit", "miss"] {
                let _ = self.cache.get_or_create(&CacheLabels { endpoint, result });
            }
        }
    }

    /// Drops every series of a process taken out of the configuration.
    pub fn remove_process(&self, process: &str) {
        let l = labels(process);
        self.weight.remove(&l);
        self.throttled.remove(&l);
        let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for endpoint in endpoints {
            for status_class in ["2xx", "3xx", "4xx", "5xx", "transport"] {
                self.calls.remove(&CallLabels {
                    process: process.to_string(),
                    endpoint,
                    status_class,
                });
            }
        }
    }

    pub fn init_process(&self, process: &str) {
        let l = labels(process);
        let _ = self.weight.get_or_create(&l);
        let _ = self.throttled.get_or_create(&l);
    }

    /// One request sent (or that got no answer): its status class, weight and latency.
    pub fn request(&self, call: Sent<'_>) {
        self.calls
            .get_or_create(&CallLabels {
                process: call.process.to_string(),
                endpoint: call.endpoint,
                status_class: call.status_class,
            })
            .inc();
        self.weight
            .get_or_create(&labels(call.process))
            .inc_by(call.weight as u64);
        self.duration
            .get_or_create(&EndpointLabels {
                endpoint: call.endpoint,
            })
            .observe(
                call.seconds,
                call.trace_id.map(|trace_id| TraceLabels { trace_id }),
                None,
            );
    }

    /// A cache look-up for `endpoint`.
    pub fn cache_lookup(&self, endpoint: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&CacheLabels { endpoint, result }).inc();
    }

    /// A request answered by an identical one already in flight.
    pub fn deduplicated(&self) {
        self.deduplicated.inc();
    }

    /// A request that waited `seconds` for budget.
    pub fn throttled(&self, process: &str, seconds: f64) {
        self.throttled.get_or_create(&labels(process)).inc();
        self.throttle_wait.observe(seconds);
    }

    /// A 429 or 418 from the venue.
    pub fn rate_limited(&self, status: &'static str) {
        self.rate_limit_responses.get_or_create(&StatusLabels { status }).inc();
    }

    /// A failed call, by error kind.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// The venue's count of this minute's weight, from its header.
    pub fn venue_used_weight(&self, used: u32) {
        self.upstream_used_weight.set(used as i64);
    }

    /// Our budget and the venue's, refreshed at scrape time.
    pub fn weight_usage(&self, used: u32, limit: u32, venue_used: u32, venue_limit: u32) {
        self.weight_used.set(used as i64);
        self.weight_limit.set(limit as i64);
        self.upstream_used_weight.set(venue_used as i64);
        self.upstream_weight_limit.set(venue_limit as i64);
    }

    /// Venue clock minus ours.
    pub fn clock_offset(&self, offset_ms: i64) {
        self.clock_offset.set(offset_ms as f64 / 1000.0);
    }
}

/// One request sent, for [`ApiMetrics::request`].
pub struct Sent<'a> {
    pub process: &'a str,
    pub endpoint: &'static str,
    /// `2xx`, `3xx`, `4xx`, `5xx`, or `transport` when no answer came.
    pub status_class: &'static str,
    pub weight: u32,
    pub seconds: f64,
    pub trace_id: Option<String>,
}
