//! What the trading processes share: the store, the venue, the accounts and
//! symbols they cover, the handle they report through, and an HTTP client
//! for webhooks. Also the mapping of store and venue failures to run errors.

use std::sync::Arc;

use crate::exchange::{Venue, VenueError, VenueErrorKind};
use crate::process::{ErrorKind, Fenced, ProcessError};
use crate::store::Store;
use crate::telemetry::domain::DomainEvents;

pub struct Platform {
    pub store: Arc<Store>,
    pub venue: Arc<dyn Venue>,
    /// Account names with credentials.
    pub accounts: Vec<String>,
    /// Symbols trade sync always covers (`exchange.symbols`).
    pub symbols: Vec<String>,
    pub events: DomainEvents,
    pub http: reqwest::Client,
    /// Receiver of position events (TP/SL executed or failed) and of alerts without their own.
    pub webhook_url: Option<String>,
    /// `upstream.batching`: trade sync asks one positions call which symbols changed.
    pub batching: bool,
    /// Other replicas write to the same store (HA): what is cached from it must be re-checked there.
    pub shared_store: bool,
}

impl Platform {
    /// A store failure, as a run error (see [`store_error`]).
    pub fn store_error(&self, e: anyhow::Error) -> ProcessError {
        store_error(&self.events, e)
    }
}

/// A store failure, as a run error; a fenced write is counted here, where it is mapped.
pub fn store_error(events: &DomainEvents, e: anyhow::Error) -> ProcessError {
    if let Some(fenced) = e.downcast_ref::<Fenced>() {
        events.write_fenced();
        return ProcessError::permanent(ErrorKind::Fenced, fenced.to_string());
    }
    ProcessError::retriable(ErrorKind::Store, format!("store: {e:#}"))
}

/// Symbols once each, sorted: what a process asks prices or fills for.
pub fn distinct(symbols: impl IntoIterator<Item = String>) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = symbols.into_iter().collect();
    set.into_iter().collect()
}

/// A venue failure, as a run error of a matching kind.
pub fn venue_error(e: VenueError) -> ProcessError {
    let kind = match e.kind() {
        VenueErrorKind::BudgetExhausted => ErrorKind::BudgetExhausted,
        _ => ErrorKind::Upstream,
    };
    ProcessError::new(kind, e.to_string(), e.retriable())
}
