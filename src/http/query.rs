//! Query strings: parameters checked against what a route accepts, and the
//! one `limit` rule every list endpoint shares.

use std::collections::HashMap;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;

use super::ApiError;

/// A route's raw query, as axum hands it in.
pub type Q = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Rows a list answers when `limit` is not given, and the most it may ask for.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 10_000;

/// The parameters, with unknown ones refused (400 naming them).
pub fn params(q: Q, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{k}`; use {}",
            allowed.join(", ")
        )));
    }
    Ok(q)
}

/// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn limit(q: &HashMap<String, String>) -> Result<i64, ApiError> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be a whole number between 1 and {MAX_LIMIT}"))),
    }
}
