//! Who may call the write endpoints: the admin bearer token, as an
//! extractor. A handler that takes [`Admin`] runs only for a caller that
//! presented the token; with no token configured, writes answer 403.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::{ApiError, AppState};

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = state.admin_token.as_ref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "write endpoints are off: set http.admin_token to enable them",
            ));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            // Compared in constant time, so response timing reveals nothing of the token.
            Some(candidate) if token.matches(candidate) => Ok(Admin),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong bearer token",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <http.admin_token>",
            )),
        }
    }
}
