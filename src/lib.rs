//! script-manager: one service that runs a trading platform's periodic work
//! on one scheduler, shares one exchange API budget between it, and reports
//! everything as Prometheus metrics, OpenTelemetry spans and logs.
//!
//! See ARCHITECTURE.md at the repository root for the map of the code and
//! the layer order its modules keep (checked by `tests/layers.rs`).

pub mod accounts;
pub mod app;
pub mod backoff;
pub mod budget;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod exchange;
pub mod ha;
pub mod http;
pub mod net;
pub mod process;
pub mod processes;
pub mod scheduler;
pub mod sim;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod vault;
