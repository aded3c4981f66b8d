//! Who may call what, as extractors. A handler that takes [`Admin`] runs only
//! for a caller that presented the admin token (with none configured, writes
//! answer 403). One that takes [`Reader`] (the data API's GETs: financial
//! data) needs `http.read_token` or the admin token when a read token is set,
//! and is open otherwise.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::{ApiError, AppState};
use crate::config::Secret;

/// Proof that the request carried the admin token.
pub struct Admin;

/// Proof that the caller may read the data API.
pub struct Reader;

/// Whether the request carried the admin token; never refuses. Decides what
/// a caller sees of credentials in answers (webhook URLs).
pub struct CallerIsAdmin(pub bool);

impl FromRequestParts<AppState> for CallerIsAdmin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let admin = usable(&state.admin_token).is_some_and(|token| check(parts, &[token], "http.admin_token").is_ok());
        Ok(CallerIsAdmin(admin))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = usable(&state.admin_token) else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "write endpoints are off: set http.admin_token to enable them",
            ));
        };
        check(parts, &[token], "http.admin_token").map(|()| Admin)
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(read) = usable(&state.read_token) else {
            return Ok(Reader);
        };
        let accepted: Vec<&Secret> = [Some(read), usable(&state.admin_token)].into_iter().flatten().collect();
        check(parts, &accepted, "http.read_token").map(|()| Reader)
    }
}

fn usable(token: &Option<Secret>) -> Option<&Secret> {
    token.as_ref().filter(|t| !t.is_empty())
}

/// The request's bearer token must be one of `accepted`, compared in
/// constant time so response timing reveals nothing of a token.
fn check(parts: &Parts, accepted: &[&Secret], name: &str) -> Result<(), ApiError> {
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(candidate) if accepted.iter().any(|t| t.matches(candidate)) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("send Authorization: Bearer <{name}>"),
        )),
    }
}
