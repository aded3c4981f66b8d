//! Exchange accounts while running (admin): `GET /api/accounts`, `GET` one,
//! `POST` (add), `PUT …/credentials` (rotate) and `DELETE` (remove).
//!
//! Accounts added here are stored with their key and secret sealed
//! (`vault`) and put in the live registry, which the venue client signs
//! from and the processes iterate on their next run: no restart. The file's
//! accounts are listed too, read-only. What removal does on the venue
//! (cancel our conditional orders while the credentials still work) and
//! what an account's streams and syncs are doing are the processes' to
//! know: the service hands both in as [`Hooks`], so this layer imports
//! neither the processes nor the exchange.
//!
//! No answer, log line or audit row carries a key or a secret: views show
//! at most the key's last four characters, and the audit row records the
//! views, not the request.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::audit::Audit;
use super::auth::Admin;
use super::data::json_body;
use super::error::{store_error, unprocessable};
use super::flatten::Refused;
use super::query::{Q, limit, params};
use super::{ApiError, AppState};
use crate::accounts::{Account, Entry, Source};
use crate::config::{ENCRYPTION_KEY_SETTING, Secret};
use crate::store::{NewStoredAccount, StoredAccount};

/// What the service hands in about accounts.
#[derive(Clone)]
pub struct Hooks {
    /// An account's live state: `{"stream": ..., "sync": ...}`.
    pub state: Arc<dyn Fn(&str) -> Value + Send + Sync>,
    /// Winds an account down on the venue before it is removed; the JSON
    /// says what was done. `Err`: nothing was removed, say why.
    pub remove: Arc<dyn Fn(String) -> BoxFuture<'static, Result<Value, Refused>> + Send + Sync>,
}

/// Longest key or secret accepted (Binance's are 64 characters).
const CREDENTIAL_MAX: usize = 512;

/// `[A-Za-z0-9_-]{1,64}`: an account's name appears in paths, metric labels and client order ids.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// At most the key's last four characters (fewer for a short key, so never most of it).
fn last4(key: &Secret) -> String {
    let chars: Vec<char> = key.expose().chars().collect();
    let shown = (chars.len() / 4).min(4);
    chars[chars.len() - shown..].iter().collect()
}

fn view(state: &AppState, entry: &Entry, row: Option<&StoredAccount>) -> Value {
    let name = &entry.account.name;
    let live = state.account_hooks.as_ref().map_or(Value::Null, |h| (h.state)(name));
    json!({
        "name": name,
        "source": entry.source.as_str(),
        "read_only": entry.source == Source::File,
        "api_key_last4": last4(&entry.account.api_key),
        "created_at": row.map(|r| r.created_at),
        "created_by": row.map(|r| r.created_by.clone()),
        "updated_at": row.map(|r| r.updated_at),
        "updated_by": row.map(|r| r.updated_by.clone()),
        "state": live,
    })
}

fn no_such(name: &str) -> ApiError {
    ApiError::not_found(format!("no account `{name}`; GET /api/accounts lists them"))
}

fn read_only(name: &str) -> ApiError {
    ApiError::conflict(
        "read_only",
        format!("account `{name}` is defined in the configuration file: change it there (and reload or restart)"),
    )
}

fn store(state: &AppState) -> Result<&Arc<crate::store::Store>, ApiError> {
    state.store.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_store",
            "this instance runs without a store",
        )
    })
}

fn vault(state: &AppState) -> Result<&Arc<crate::vault::Vault>, ApiError> {
    state.vault.as_ref().ok_or_else(|| {
        ApiError::conflict(
            "encryption_key_missing",
            format!(
                "accounts added through the API are stored encrypted, and no key is configured: \
                 set {ENCRYPTION_KEY_SETTING} (a file holding 32 bytes as 64 hex characters or base64, \
                 e.g. from `openssl rand -hex 32`) and restart"
            ),
        )
    })
}

/// A credential field: a non-empty string of visible ASCII (it goes into an HTTP header).
fn credential(body: &serde_json::Map<String, Value>, field: &str) -> Result<Secret, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) if s.is_empty() => Err(unprocessable(field, "must not be empty")),
        Some(Value::String(s)) if s.len() > CREDENTIAL_MAX => Err(unprocessable(
            field,
            format!("must be at most {CREDENTIAL_MAX} characters"),
        )),
        Some(Value::String(s)) if !s.bytes().all(|b| b.is_ascii_graphic()) => Err(unprocessable(
            field,
            "must be printable ASCII without spaces (as the venue issues them)",
        )),
        Some(Value::String(s)) => Ok(Secret::new(s.clone())),
        Some(_) => Err(unprocessable(field, "must be a string")),
        None => Err(unprocessable(field, "is required")),
    }
}

fn only(body: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unprocessable(
            k,
            format!("unknown field; allowed: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Sealed credentials for the store.
fn sealed(state: &AppState, name: &str, key: &Secret, secret: &Secret, by: &str) -> Result<NewStoredAccount, ApiError> {
    let vault = vault(state)?;
    Ok(NewStoredAccount {
        name: name.to_string(),
        api_key: vault.seal(name, "api_key", key.expose()),
        api_secret: vault.seal(name, "api_secret", secret.expose()),
        key_id: vault.key_id().to_string(),
        by: by.to_string(),
    })
}

/// `GET /api/accounts?limit=&after=`: by name; `after` pages on.
pub async fn list(_: Admin, State(state): State<AppState>, q: Q) -> Result<Response, ApiError> {
    let q: HashMap<String, String> = params(q, &["limit", "after"])?;
    let limit = limit(&q)? as usize;
    let after = q.get("after").cloned().unwrap_or_default();
    let rows: HashMap<String, StoredAccount> = match &state.store {
        Some(store) => store
            .stored_accounts()
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect(),
        None => HashMap::new(),
    };
    let entries: Vec<Entry> = state
        .accounts
        .entries()
        .into_iter()
        .filter(|e| e.account.name > after)
        .take(limit)
        .collect();
    let views: Vec<Value> = entries
        .iter()
        .map(|e| view(&state, e, rows.get(&e.account.name).filter(|_| e.source == Source::Api)))
        .collect();
    let mut response = Json(json!(views)).into_response();
    if entries.len() == limit
        && let Some(last) = entries.last()
        && let Ok(link) = format!(
            "</api/accounts?limit={limit}&after={}>; rel=\"next\"",
            last.account.name
        )
        .parse()
    {
        response.headers_mut().insert(axum::http::header::LINK, link);
    }
    Ok(response)
}

async fn row_of(state: &AppState, entry: &Entry) -> Result<Option<StoredAccount>, ApiError> {
    match (&state.store, entry.source) {
        (Some(store), Source::Api) => store.stored_account(&entry.account.name).await.map_err(store_error),
        _ => Ok(None),
    }
}

/// `GET /api/accounts/{name}`.
pub async fn get(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let entry = state.accounts.entry(&name).ok_or_else(|| no_such(&name))?;
    let row = row_of(&state, &entry).await?;
    Ok(Json(view(&state, &entry, row.as_ref())))
}

/// `POST /api/accounts` `{"name", "api_key", "api_secret"}`: 201 with the view.
pub async fn create(
    Admin(caller): Admin,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, axum::Extension<Audit>, Json<Value>), ApiError> {
    let store = store(&state)?;
    let body = json_body(&body)?;
    only(&body, &["name", "api_key", "api_secret"])?;
    let name = match body.get("name") {
        Some(Value::String(n)) if valid_name(n) => n.clone(),
        Some(_) => {
            return Err(unprocessable("name", "must be 1 to 64 letters, digits, `_` or `-`"));
        }
        None => return Err(unprocessable("name", "is required")),
    };
    let key = credential(&body, "api_key")?;
    let secret = credential(&body, "api_secret")?;
    vault(&state)?;
    if let Some(existing) = state.accounts.entry(&name) {
        return Err(ApiError::conflict(
            "account_exists",
            match existing.source {
                Source::File => format!("account `{name}` exists: it is defined in the configuration file"),
                Source::Api => {
                    format!("account `{name}` exists; PUT /api/accounts/{name}/credentials rotates its credentials")
                }
            },
        ));
    }
    let new = sealed(&state, &name, &key, &secret, &caller.name)?;
    let Some(row) = store.insert_account(&new).await.map_err(store_error)? else {
        return Err(ApiError::conflict(
            "account_exists",
            format!("account `{name}` exists (added through another replica)"),
        ));
    };
    let view = go_live(&state, &name, key, secret, &row)?;
    tracing::info!(account = %name, by = %caller.name, "account added through the API");
    Ok((
        StatusCode::CREATED,
        axum::Extension(Audit::change(Value::Null, view.clone())),
        Json(view),
    ))
}

/// Puts the stored account's credentials in the live registry (the next
/// signed request uses them) and answers its view.
fn go_live(state: &AppState, name: &str, key: Secret, secret: Secret, row: &StoredAccount) -> Result<Value, ApiError> {
    state.accounts.upsert(
        Account {
            name: name.to_string(),
            api_key: key,
            api_secret: secret,
        },
        Source::Api,
    );
    let entry = state.accounts.entry(name).ok_or_else(|| no_such(name))?;
    Ok(view(state, &entry, Some(row)))
}

/// `PUT /api/accounts/{name}/credentials` `{"api_key", "api_secret"}`: the next signed request uses them.
pub async fn rotate(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(axum::Extension<Audit>, Json<Value>), ApiError> {
    let store = store(&state)?;
    let entry = state.accounts.entry(&name).ok_or_else(|| no_such(&name))?;
    if entry.source == Source::File {
        return Err(read_only(&name));
    }
    let body = json_body(&body)?;
    only(&body, &["api_key", "api_secret"])?;
    let key = credential(&body, "api_key")?;
    let secret = credential(&body, "api_secret")?;
    vault(&state)?;
    let before = view(&state, &entry, row_of(&state, &entry).await?.as_ref());
    let new = sealed(&state, &name, &key, &secret, &caller.name)?;
    let Some(row) = store.update_account_credentials(&new).await.map_err(store_error)? else {
        return Err(no_such(&name));
    };
    let after = go_live(&state, &name, key, secret, &row)?;
    tracing::info!(account = %name, by = %caller.name, "account credentials rotated");
    Ok((axum::Extension(Audit::change(before, after.clone())), Json(after)))
}

/// `DELETE /api/accounts/{name}`: our conditional orders cancelled and armed
/// levels retired first (credentials still work), then the row and the
/// registry entry go. Positions stay open.
pub async fn remove(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(axum::Extension<Audit>, Json<Value>), ApiError> {
    let store = store(&state)?;
    let entry = state.accounts.entry(&name).ok_or_else(|| no_such(&name))?;
    if entry.source == Source::File {
        return Err(read_only(&name));
    }
    let before = view(&state, &entry, row_of(&state, &entry).await?.as_ref());
    let wound_down = match &state.account_hooks {
        Some(hooks) => (hooks.remove)(name.clone()).await.map_err(|r| {
            let (status, code) = match r.budget_spent {
                true => (StatusCode::TOO_MANY_REQUESTS, "budget_exhausted"),
                false => (StatusCode::BAD_GATEWAY, "venue_unavailable"),
            };
            ApiError::new(
                status,
                code,
                format!(
                    "{}; the account was kept (its credentials are needed to cancel its conditional orders): try again",
                    r.message
                ),
            )
        })?,
        None => json!({}),
    };
    store.delete_account(&name).await.map_err(store_error)?;
    state.accounts.remove(&name);
    tracing::warn!(account = %name, by = %caller.name, "account removed through the API");
    let mut answer = json!({
        "name": name,
        "removed": true,
        "positions": format!("left open on the venue: close them there, or with POST /api/accounts/{name}/flatten before removing"),
    });
    if let (Value::Object(answer), Value::Object(done)) = (&mut answer, wound_down) {
        answer.extend(done);
    }
    Ok((axum::Extension(Audit::change(before, answer.clone())), Json(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted_and_keys_barely_shown() {
        assert!(valid_name("desk-1_B"));
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(last4(&Secret::new("0123456789abcdefWXYZ")), "WXYZ");
        assert_eq!(last4(&Secret::new("abcdefgh")), "gh");
        assert_eq!(last4(&Secret::new("abc")), "");
    }
}
