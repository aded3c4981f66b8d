//! Telemetry in one place: Prometheus metrics, tracing with OpenTelemetry
//! export, and the service's own resource usage.
//!
//! Owns: the registry, typed label sets and the recording handles
//! ([`process::ProcessMetrics`], [`api::ApiMetrics`], [`domain::DomainEvents`],
//! [`ha::HaMetrics`]); the tracing subscriber and OTLP export.
//! Must not import business types: no `config`, `process`, `exchange`,
//! `scheduler` or `store`. It receives label values and small info structs.

pub mod accounts;
pub mod api;
pub mod domain;
pub mod events;
pub mod exposition;
pub mod ha;
pub mod logfmt;
pub mod metrics;
pub mod otel;
pub mod process;
pub mod protection;
pub mod resources;
pub mod stream;

pub use metrics::Metrics;
pub use process::ProcessInfo;
