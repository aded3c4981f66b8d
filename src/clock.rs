//! Wall-clock helpers: the one place that turns `SystemTime` into the
//! milliseconds the store and the venue speak, the seconds Prometheus
//! timestamps use, and the RFC 3339 text the HTTP API shows.
//!
//! Owns: wall-clock conversions. Imports nothing of the service (ground floor).
//! Durations and deadlines use tokio's monotonic `Instant`, never this module.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    ms_of(SystemTime::now())
}

/// Seconds since the Unix epoch, for `_timestamp_seconds` gauges.
pub fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A wall time as milliseconds since the epoch.
pub fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Milliseconds since the epoch as a wall time (negative values are the epoch).
pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// [`rfc3339`] of milliseconds since the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339(from_ms(ms))
}

/// Serializes a `SystemTime` as [`rfc3339`] text (`#[serde(serialize_with = …)]`).
pub fn serialize_rfc3339<S: Serializer>(t: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    rfc3339(*t).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_and_print_as_utc() {
        let t = from_ms(1_700_000_000_123);
        assert_eq!(ms_of(t), 1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(ms_of(from_ms(-5)), 0);
    }
}
