//! What each refusal of the venue means for a protective close, in one
//! table. A close exists because a position must be taken flat, so it fails
//! for good only when nothing more can be done; every refusal a later try
//! can get past is retried (with the shared backoff, counted and alerted),
//! however long that takes.
//!
//! ARCHITECTURE.md shows the same table; `tests/refusals.rs` checks that the
//! two agree.

use super::VenueError;

/// The next step of a close after the venue refused or could not answer an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseStep {
    /// Try again after the backoff: the refusal is temporary (a fast market,
    /// throttling, the venue busy, credentials being fixed).
    RetryLater,
    /// The order may or may not exist: look its client id up before anything else.
    LookUp,
    /// The quantity is above what one order may carry: send smaller parts.
    Split,
    /// The position may already be flat or the other way: read it again, and
    /// the close is done if nothing is left on its side.
    Reread,
    /// Nothing a retry can change: the close fails.
    Final,
}

impl CloseStep {
    pub const ALL: [CloseStep; 5] = [
        CloseStep::RetryLater,
        CloseStep::LookUp,
        CloseStep::Split,
        CloseStep::Reread,
        CloseStep::Final,
    ];

    /// Its name in ARCHITECTURE.md and the `step` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseStep::RetryLater => "retry_later",
            CloseStep::LookUp => "look_up",
            CloseStep::Split => "split",
            CloseStep::Reread => "reread",
            CloseStep::Final => "final",
        }
    }
}

/// Binance's codes and what a close does with each. Codes not listed are
/// retried (an unknown refusal is not a reason to leave a position open).
pub const CLOSE_REFUSALS: &[(i64, CloseStep, &str)] = &[
    (
        -1001,
        CloseStep::RetryLater,
        "internal error; the venue asks to try again",
    ),
    (-1003, CloseStep::RetryLater, "too many requests: after Retry-After"),
    (-1006, CloseStep::LookUp, "unexpected answer, execution status unknown"),
    (-1007, CloseStep::LookUp, "timeout, execution status unknown"),
    (-1008, CloseStep::RetryLater, "throttled by system protection"),
    (-1015, CloseStep::RetryLater, "too many orders: after the order window"),
    (
        -1021,
        CloseStep::RetryLater,
        "timestamp outside the window: after the clock is synced again",
    ),
    (
        -1022,
        CloseStep::RetryLater,
        "signature invalid: alerted, retried until the credentials are fixed",
    ),
    (
        -1106,
        CloseStep::Final,
        "reduceOnly not accepted: the account is in hedge mode",
    ),
    (
        -1111,
        CloseStep::RetryLater,
        "precision: after the symbol's filters are read again",
    ),
    (-1121, CloseStep::Final, "invalid symbol: delisted"),
    (
        -2013,
        CloseStep::LookUp,
        "no such order (yet): look again before resending",
    ),
    (
        -2015,
        CloseStep::RetryLater,
        "key, IP or permissions: alerted, retried until fixed",
    ),
    (
        -2019,
        CloseStep::RetryLater,
        "margin insufficient (not expected for reduce-only): alerted, retried",
    ),
    (
        -2022,
        CloseStep::Reread,
        "reduce-only refused: flat or the other way already",
    ),
    (-4003, CloseStep::Final, "quantity not above zero"),
    (
        -4004,
        CloseStep::Final,
        "quantity below the minimum: dust no MARKET order can close",
    ),
    (-4005, CloseStep::Split, "quantity above MARKET_LOT_SIZE.maxQty"),
    (
        -4061,
        CloseStep::Final,
        "position side does not match the account's mode (hedge mode)",
    ),
    (
        -4116,
        CloseStep::LookUp,
        "client order id already used: the earlier order is the answer",
    ),
    (
        -4118,
        CloseStep::RetryLater,
        "reduce-only margin check: resting reduce-only orders hold the size",
    ),
    (
        -4131,
        CloseStep::RetryLater,
        "best price outside PERCENT_PRICE: a fast or thin market",
    ),
    (
        -4164,
        CloseStep::RetryLater,
        "notional below minimum (reduce-only is exempt)",
    ),
];

/// The step for a refusal `code`.
pub fn step_for_code(code: i64) -> CloseStep {
    CLOSE_REFUSALS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(CloseStep::RetryLater, |(_, step, _)| *step)
}

/// The step after an order request failed with `e`.
pub fn close_step(e: &VenueError) -> CloseStep {
    match e {
        VenueError::Rejected { code, .. } => step_for_code(*code),
        // Unheard, garbled or timed out after sending: it may have executed.
        VenueError::UnknownOutcome(_) | VenueError::Decode(_) => CloseStep::LookUp,
        // Refused before anything was done, or never sent.
        VenueError::RateLimited { .. }
        | VenueError::Banned { .. }
        | VenueError::ClockSkew
        | VenueError::Auth(_)
        | VenueError::Transient(_)
        | VenueError::BudgetExhausted(_) => CloseStep::RetryLater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_refusals_never_end_a_close() {
        for code in [-4131, -1008, -1001, -1015, -2019, -9999] {
            assert_eq!(step_for_code(code), CloseStep::RetryLater, "{code}");
        }
        assert_eq!(step_for_code(-4005), CloseStep::Split);
        assert_eq!(step_for_code(-2022), CloseStep::Reread);
        assert_eq!(step_for_code(-1121), CloseStep::Final);
        assert_eq!(
            close_step(&VenueError::UnknownOutcome("no answer".into())),
            CloseStep::LookUp
        );
        assert_eq!(close_step(&VenueError::Auth("key".into())), CloseStep::RetryLater);
    }

    #[test]
    fn each_code_is_listed_once() {
        let mut codes: Vec<i64> = CLOSE_REFUSALS.iter().map(|(c, _, _)| *c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), CLOSE_REFUSALS.len());
    }
}
