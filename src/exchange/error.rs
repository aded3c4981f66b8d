//! Every way an exchange call can fail, as a small closed set of kinds.

use std::time::Duration;

/// The kind of a failure; also its `kind` label in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VenueErrorKind {
    RateLimited,
    Banned,
    ClockSkew,
    Auth,
    Rejected,
    UnknownOutcome,
    Transient,
    Decode,
    BudgetExhausted,
}

impl VenueErrorKind {
    pub const ALL: [VenueErrorKind; 9] = [
        VenueErrorKind::RateLimited,
        VenueErrorKind::Banned,
        VenueErrorKind::ClockSkew,
        VenueErrorKind::Auth,
        VenueErrorKind::Rejected,
        VenueErrorKind::UnknownOutcome,
        VenueErrorKind::Transient,
        VenueErrorKind::Decode,
        VenueErrorKind::BudgetExhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VenueErrorKind::RateLimited => "rate_limited",
            VenueErrorKind::Banned => "banned",
            VenueErrorKind::ClockSkew => "clock_skew",
            VenueErrorKind::Auth => "auth",
            VenueErrorKind::Rejected => "rejected",
            VenueErrorKind::UnknownOutcome => "unknown_outcome",
            VenueErrorKind::Transient => "transient",
            VenueErrorKind::Decode => "decode",
            VenueErrorKind::BudgetExhausted => "budget_exhausted",
        }
    }
}

/// A failed exchange call. Messages never hold keys, secrets or signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VenueError {
    #[error("rate limited by the venue; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("IP banned by the venue for {until:?}")]
    Banned { until: Duration },
    #[error("request timestamp outside the venue's window (clock skew)")]
    ClockSkew,
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("rejected by the venue: code {code}: {msg}")]
    Rejected { code: i64, msg: String },
    #[error("outcome unknown: {0}")]
    UnknownOutcome(String),
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("cannot decode the venue's answer: {0}")]
    Decode(String),
    #[error("no API budget left before the deadline: {0}")]
    BudgetExhausted(String),
}

impl From<crate::budget::Refused> for VenueError {
    fn from(refused: crate::budget::Refused) -> Self {
        VenueError::BudgetExhausted(refused.0)
    }
}

impl VenueError {
    pub fn kind(&self) -> VenueErrorKind {
        match self {
            VenueError::RateLimited { .. } => VenueErrorKind::RateLimited,
            VenueError::Banned { .. } => VenueErrorKind::Banned,
            VenueError::ClockSkew => VenueErrorKind::ClockSkew,
            VenueError::Auth(_) => VenueErrorKind::Auth,
            VenueError::Rejected { .. } => VenueErrorKind::Rejected,
            VenueError::UnknownOutcome(_) => VenueErrorKind::UnknownOutcome,
            VenueError::Transient(_) => VenueErrorKind::Transient,
            VenueError::Decode(_) => VenueErrorKind::Decode,
            VenueError::BudgetExhausted(_) => VenueErrorKind::BudgetExhausted,
        }
    }

    /// Whether a later attempt of the same read could succeed. Orders are
    /// never retried blindly whatever this says (see level_monitor).
    pub fn retriable(&self) -> bool {
        matches!(
            self.kind(),
            VenueErrorKind::RateLimited
                | VenueErrorKind::ClockSkew
                | VenueErrorKind::UnknownOutcome
                | VenueErrorKind::Transient
                | VenueErrorKind::BudgetExhausted
        )
    }
}
