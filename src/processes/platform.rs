//! What the trading processes share: the store, the venue, the accounts and
//! symbols they cover, metrics, and an HTTP client for webhooks.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::exchange::{Venue, VenueError};
use crate::process::{ErrorKind, ProcessError};
use crate::store::Store;
use crate::telemetry::Metrics;

pub struct Platform {
    pub store: Arc<Store>,
    pub venue: Arc<dyn Venue>,
    /// Account names with credentials.
    pub accounts: Vec<String>,
    /// Symbols trade sync always covers (`exchange.symbols`).
    pub symbols: Vec<String>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// Receiver of position events (TP/SL executed or failed) and of alerts without their own.
    pub webhook_url: Option<String>,
    /// `upstream.batching`: trade sync asks one positions call which symbols changed.
    pub batching: bool,
    /// Bumped whenever levels change outside level_monitor (the data API), so it re-reads them.
    pub levels_generation: AtomicU64,
    /// Other replicas write to the same store (HA): what is cached from it must be re-checked there.
    pub shared_store: bool,
}

/// A store failure, as a run error.
pub fn store_error(e: anyhow::Error) -> ProcessError {
    if let Some(fenced) = e.downcast_ref::<crate::store::Fenced>() {
        return ProcessError::permanent(ErrorKind::Fenced, fenced.to_string());
    }
    ProcessError::retriable(ErrorKind::Store, format!("store: {e:#}"))
}

/// A venue failure, as a run error of a matching kind.
pub fn venue_error(e: VenueError) -> ProcessError {
    let kind = match e.kind() {
        crate::exchange::VenueErrorKind::BudgetExhausted => ErrorKind::BudgetExhausted,
        _ => ErrorKind::Upstream,
    };
    ProcessError::new(kind, e.to_string(), e.retriable())
}
