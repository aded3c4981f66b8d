//! The API budget: who may call the exchange, and how much.
//!
//! Every request is admitted by [`Admission`], one face over three steps, in
//! this order: [`ProcessCalls`] (the caller's calls per sliding minute, the
//! seed's semantics), [`VenueWeight`] (the venue's weight per fixed minute,
//! shared by all processes with priorities and a reserve, corrected by the
//! venue's headers and paused by its 429/418), and, with several replicas, a
//! [`ClusterBudget`] that every replica takes from (implemented on
//! PostgreSQL in `ha::budget`), or, while that cannot be reached, a local
//! share of the venue's budget (`local`).
//!
//! Owns: limits, waiting and refusals. Imports only `clock`: no exchange, no
//! metrics (the caller records what [`Admitted`] reports), no `ha`.

mod admission;
mod calls;
mod cluster;
mod local;
mod weight;

use std::time::Duration;

use tokio::time::Instant;

pub use admission::{Admission, Admitted};
pub use calls::ProcessCalls;
pub use cluster::ClusterBudget;
pub use weight::{Usage, VenueWeight, WeightRefusal};

/// The caller id of the service's own calls (clock sync, exchangeInfo, demo data).
pub const SERVICE_CALLER: &str = "service";

/// The caller id of the reads that tell a replica what the venue allows and
/// what time it is (`time`, `exchangeInfo`: weight 1 each, at start and every
/// 10 minutes). Admitted by this replica's own budgets but not counted
/// against the cluster's (HA): a replica cannot know the cluster's cap before
/// it has read the venue's limit (a cap from the default limit, below what the
/// others learned, would find the cluster's minute spent and never read it),
/// and one starting while the cluster's minute is spent must still learn the
/// venue's clock before it signs a request.
pub const VENUE_INFO_CALLER: &str = "venue_info";

/// Calls per minute the service's own calls may make (and, each, the venue-info reads).
pub const SERVICE_CALLS_PER_MINUTE: u32 = 30;

/// Who is calling, for admission: process id, priority, how long it may
/// wait, and how old a cached answer it accepts.
#[derive(Debug, Clone)]
pub struct Caller {
    pub process: String,
    pub priority: u8,
    pub deadline: Instant,
    /// `None`: only a fresh answer will do.
    pub max_age: Option<Duration>,
}

impl Caller {
    pub fn new(process: &str, priority: u8, deadline: Instant) -> Self {
        Caller {
            process: process.to_string(),
            priority,
            deadline,
            max_age: None,
        }
    }

    pub fn accepting_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }
}

/// Why a call was not admitted: no room before the caller's deadline, or never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
