//! Telemetry in one place: Prometheus metrics, tracing with OpenTelemetry
//! export, and the service's own resource usage.

pub mod api;
pub mod domain;
pub mod ha;
pub mod metrics;
pub mod otel;
mod resources;

pub use metrics::Metrics;
pub use resources::timeval_seconds;
