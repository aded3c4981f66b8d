//! Who may call what, as extractors. Every bearer token has a name and a
//! scope (`[[http.tokens]]`; `http.admin_token` and `http.read_token` are the
//! tokens `admin` and `read`). Scopes nest: `admin` ⊇ `trade` ⊇ `read`.
//!
//! - [`Admin`]: processes, reload, the kill switch for every account, the audit trail.
//! - [`Trader`]: levels, alerts, one account's kill switch.
//! - [`Reader`]: the data API's GETs (financial data). Open while no
//!   `read`-scope token is configured, as before tokens had names.
//! - [`StatusReader`]: the status and runs documents; open unless
//!   `http.status_requires_token`.
//!
//! A token is compared with every configured one in constant time, so
//! response timing reveals nothing of any token. A handler learns the
//! caller's name from the extractor: that name is what `set_by` and the
//! audit trail record.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;

use super::{ApiError, AppState};
use crate::config::{HttpConfig, Scope, Secret};

/// The configured tokens.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<Entry>,
    status_requires_token: bool,
    metrics_requires_token: bool,
}

struct Entry {
    name: String,
    scope: Scope,
    secret: Secret,
    accounts: Option<Vec<String>>,
}

/// Who called: a configured token's name and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
    /// The only accounts it may see (`[[http.tokens]] accounts`); `None`: all.
    pub accounts: Option<Vec<String>>,
}

impl Caller {
    /// Whether this caller may see `account`'s data.
    pub fn sees(&self, account: &str) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.iter().any(|x| x == account))
    }
}

/// Whether `caller` (none: reads are open) may see `account`'s data.
pub fn may_see(caller: &Option<Caller>, account: &str) -> bool {
    caller.as_ref().is_none_or(|c| c.sees(account))
}

/// 403 for an account a scoped token may not see.
pub fn not_yours(caller: &Option<Caller>, account: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token `{}` may not see account `{account}`",
            caller.as_ref().map_or("anonymous", |c| c.name.as_str())
        ),
    )
}

impl Tokens {
    pub fn from_config(http: &HttpConfig) -> Self {
        let entry = |name: &str, scope, secret: &Secret| Entry {
            name: name.into(),
            scope,
            secret: secret.clone(),
            accounts: None,
        };
        let mut entries: Vec<Entry> = http
            .shorthand_tokens()
            .into_iter()
            .map(|(name, scope, secret)| entry(name, scope, secret))
            .collect();
        entries.extend(http.tokens.iter().filter_map(|t| {
            t.token.as_ref().filter(|s| !s.is_empty()).map(|s| Entry {
                accounts: t.accounts.clone(),
                ..entry(&t.name, t.scope, s)
            })
        }));
        Tokens {
            entries,
            status_requires_token: http.status_requires_token,
            metrics_requires_token: http.metrics_requires_token,
        }
    }

    /// The token `presented` is, compared with every entry (no early exit).
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        let mut found = None;
        for e in &self.entries {
            if e.secret.matches(presented) && found.is_none() {
                found = Some(Caller {
                    name: e.name.clone(),
                    scope: e.scope,
                    accounts: e.accounts.clone(),
                });
            }
        }
        found
    }

    /// Whether any token grants `scope` (or more).
    fn any_at_least(&self, scope: Scope) -> bool {
        self.entries.iter().any(|e| e.scope >= scope)
    }

    /// Whether reads need a token: some token has exactly the `read` scope.
    fn reads_need_token(&self) -> bool {
        self.entries.iter().any(|e| e.scope == Scope::Read)
    }

    /// The caller a request's bearer token names, if it is known.
    pub fn caller_of(&self, headers: &HeaderMap) -> Option<Caller> {
        match presented(headers)? {
            Presented::Bearer(token) => self.identify(token),
            Presented::Basic { .. } => None,
        }
    }

    /// Who a request's bearer token names, `anonymous` when it names no one:
    /// the name the audit trail and the per-token rate go by.
    pub fn name_of(&self, headers: &HeaderMap) -> String {
        self.caller_of(headers)
            .map_or_else(|| "anonymous".to_string(), |c| c.name)
    }

    /// As [`Self::caller_of`], and basic auth too (user = the token's name): `/metrics` only.
    fn scraper_of(&self, headers: &HeaderMap) -> Option<Caller> {
        match presented(headers)? {
            Presented::Bearer(token) => self.identify(token),
            Presented::Basic { user, password } => self.identify(&password).filter(|c| c.name == user),
        }
    }

    /// `/metrics` when `http.metrics_requires_token`: any known token, as a
    /// bearer token or as basic auth (user = the token's name).
    pub fn metrics_allowed(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.metrics_requires_token {
            return Ok(());
        }
        self.scraper_of(headers).map(|_| ()).ok_or_else(|| {
            unauthorized(
                headers,
                "a token of any scope (bearer, or basic auth as <name>:<token>)",
            )
        })
    }

    /// The event stream's reader: as [`Reader`], and the token may come as
    /// `?access_token=` instead (a browser's EventSource cannot set headers).
    /// A header, when there is one, wins.
    pub fn stream_reader(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<Option<Caller>, ApiError> {
        let Some(token) = query_token.filter(|_| presented(headers).is_none()) else {
            if !self.reads_need_token() {
                return Ok(self.caller_of(headers));
            }
            return self.require(headers, Scope::Read).map(Some);
        };
        match self.identify(token) {
            // Every scope includes read.
            Some(caller) => Ok(Some(caller)),
            None if !self.reads_need_token() => Ok(None),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")),
        }
    }

    /// Requires a token of at least `scope`; `route_needs` names it in errors.
    fn require(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        if !self.any_at_least(scope) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                format!(
                    "routes of scope `{}` are off: configure a token with that scope ([[http.tokens]] or http.admin_token)",
                    scope.as_str()
                ),
            ));
        }
        let caller = self
            .caller_of(headers)
            .ok_or_else(|| unauthorized(headers, &format!("a token of scope `{}`", scope.as_str())))?;
        if caller.scope < scope {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token `{}` has scope `{}`; this route needs `{}`",
                    caller.name,
                    caller.scope.as_str(),
                    scope.as_str()
                ),
            ));
        }
        Ok(caller)
    }
}

fn unauthorized(headers: &HeaderMap, what: &str) -> ApiError {
    let message = match presented(headers) {
        Some(_) => "unknown token".to_string(),
        None => format!("send Authorization: Bearer <{what}>"),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

enum Presented<'a> {
    Bearer(&'a str),
    Basic { user: String, password: String },
}

fn presented(headers: &HeaderMap) -> Option<Presented<'_>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(Presented::Bearer(token.trim()));
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some(Presented::Basic { user, password })
}

/// Proof that the request carried an `admin` token, and whose.
pub struct Admin(pub Caller);

/// Proof of a `trade` (or `admin`) token, and whose.
pub struct Trader(pub Caller);

/// The caller may read the data API (`None`: reads are open and no known token came).
pub struct Reader(pub Option<Caller>);

/// The caller may read the status documents.
pub struct StatusReader;

/// Whether the request carried an `admin`-scope token; never refuses.
/// Decides what a caller sees of credentials in answers (webhook URLs).
pub struct CallerIsAdmin(pub bool);

impl FromRequestParts<AppState> for CallerIsAdmin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let admin = state
            .tokens
            .caller_of(&parts.headers)
            .is_some_and(|c| c.scope == Scope::Admin);
        Ok(CallerIsAdmin(admin))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.tokens.require(&parts.headers, Scope::Admin).map(Admin)
    }
}

impl FromRequestParts<AppState> for Trader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.tokens.require(&parts.headers, Scope::Trade).map(Trader)
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !state.tokens.reads_need_token() {
            return Ok(Reader(state.tokens.caller_of(&parts.headers)));
        }
        state
            .tokens
            .require(&parts.headers, Scope::Read)
            .map(|c| Reader(Some(c)))
    }
}

impl FromRequestParts<AppState> for StatusReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !state.tokens.status_requires_token {
            return Ok(StatusReader);
        }
        state.tokens.require(&parts.headers, Scope::Read).map(|_| StatusReader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let mut http = crate::config::defaults::config(false, false).http;
        http.admin_token = Some(Secret::new("admin-token-0123456789"));
        http.tokens.push(crate::config::TokenConfig {
            name: "desk".into(),
            scope: Scope::Trade,
            token: Some(Secret::new("desk-token-0123456789")),
            token_file: None,
            accounts: None,
        });
        Tokens::from_config(&http)
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn scopes_nest_and_names_are_reported() {
        let t = tokens();
        let desk = t.require(&with("Bearer desk-token-0123456789"), Scope::Trade).unwrap();
        assert_eq!(desk.name, "desk");
        let e = t
            .require(&with("Bearer desk-token-0123456789"), Scope::Admin)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(t.require(&with("Bearer admin-token-0123456789"), Scope::Read).is_ok());
        let e = t.require(&with("Bearer nope"), Scope::Read).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(!t.reads_need_token(), "no read-scope token: reads stay open");
    }

    #[test]
    fn basic_auth_needs_the_tokens_own_name() {
        let t = tokens();
        let basic = |s: &str| {
            with(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            ))
        };
        assert_eq!(t.scraper_of(&basic("desk:desk-token-0123456789")).unwrap().name, "desk");
        assert!(t.scraper_of(&basic("admin:desk-token-0123456789")).is_none());
        assert!(
            t.caller_of(&basic("desk:desk-token-0123456789")).is_none(),
            "basic auth is for /metrics only"
        );
    }
}
