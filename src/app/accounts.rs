//! Accounts added through the API, brought to life: read and decrypted at
//! start (a key that cannot open them is a refusal to start, exit 2), put in
//! the registry beside the file's, followed under HA (another replica may
//! add, rotate or remove one), and the hooks the HTTP layer calls: an
//! account's live state, and its wind-down on the venue before removal.
//!
//! A name both in the file and in the store: the file wins, with a warning
//! (the stored row stays, unused, until removed from the file and restarted
//! or deleted through the API is refused as read-only: see docs/accounts.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::accounts::{Account, Accounts, Source};
use crate::config::{Config, ENCRYPTION_KEY_SETTING};
use crate::http::accounts::Hooks;
use crate::http::flatten::Refused;
use crate::processes::Platform;
use crate::store::{Store, StoredAccount};
use crate::vault::{KeyRefused, Vault};

/// The configured key (validated with the configuration), if any.
pub fn vault(config: &Config) -> Result<Option<Arc<Vault>>, KeyRefused> {
    config
        .store
        .encryption_key
        .as_ref()
        .map(|k| Vault::from_secret(k).map(Arc::new))
        .transpose()
}

/// Opens one stored row with `vault`.
fn open(vault: &Vault, row: &StoredAccount) -> Result<Account, KeyRefused> {
    if row.key_id != vault.key_id() {
        return Err(KeyRefused(format!(
            "account `{}` was encrypted with key id {}, and the configured key's id is {}: \
             configure the key it was stored with (after a rotation, the new one)",
            row.name,
            row.key_id,
            vault.key_id()
        )));
    }
    let opened = |field: &str, sealed| {
        vault.open(&row.name, field, sealed).map_err(|e| {
            KeyRefused(format!(
                "account `{}`'s {field}: {e}; restore the row from a backup or delete it and add the account again",
                row.name
            ))
        })
    };
    Ok(Account {
        name: row.name.clone(),
        api_key: opened("api_key", &row.api_key)?,
        api_secret: opened("api_secret", &row.api_secret)?,
    })
}

/// Every stored account, decrypted, with its revision. Stored accounts
/// without a key, or that the key cannot open: [`KeyRefused`].
pub async fn load(store: &Store, vault: Option<&Vault>) -> anyhow::Result<Vec<(Account, i64)>> {
    let rows = store.stored_accounts().await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let Some(vault) = vault else {
        return Err(KeyRefused(format!(
            "the store holds {} account(s) added through the API, encrypted, and no key is configured: \
             set {ENCRYPTION_KEY_SETTING} to the file holding the key they were stored with",
            rows.len()
        ))
        .into());
    };
    let mut accounts = Vec::with_capacity(rows.len());
    for row in &rows {
        accounts.push((open(vault, row)?, row.revision));
    }
    Ok(accounts)
}

/// Puts stored accounts in the registry; a name the file defines stays the file's.
pub fn register(registry: &Accounts, stored: Vec<(Account, i64)>) -> HashMap<String, i64> {
    let mut revisions = HashMap::new();
    for (account, revision) in stored {
        if registry.entry(&account.name).is_some_and(|e| e.source == Source::File) {
            tracing::warn!(
                account = %account.name,
                "an account of this name is in the configuration file and in the store (added through the API): \
                 the file's credentials are used"
            );
            continue;
        }
        tracing::info!(account = %account.name, "account added through the API loaded from the store");
        revisions.insert(account.name.clone(), revision);
        registry.upsert(account, Source::Api);
    }
    revisions
}

/// Under HA: every `every`, the stored accounts other replicas added,
/// rotated or removed are put in (or taken out of) this replica's registry.
/// A row this replica cannot open is logged and left as it was here.
pub fn follow(
    store: Arc<Store>,
    vault: Option<Arc<Vault>>,
    registry: Arc<Accounts>,
    mut revisions: HashMap<String, i64>,
    every: Duration,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let rows = match store.stored_accounts().await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "cannot read the stored accounts");
                    continue;
                }
            };
            sync_once(&rows, vault.as_deref(), &registry, &mut revisions);
        }
    });
}

/// One pass of [`follow`]: the registry's API accounts made to match `rows`.
fn sync_once(rows: &[StoredAccount], vault: Option<&Vault>, registry: &Accounts, revisions: &mut HashMap<String, i64>) {
    for row in rows {
        let entry = registry.entry(&row.name);
        if entry.as_ref().is_some_and(|e| e.source == Source::File) {
            continue;
        }
        if entry.is_some() && revisions.get(&row.name) == Some(&row.revision) {
            continue;
        }
        let Some(vault) = vault else {
            tracing::warn!(account = %row.name, "another replica stored an account, and no {ENCRYPTION_KEY_SETTING} is configured here");
            revisions.insert(row.name.clone(), row.revision);
            continue;
        };
        match open(vault, row) {
            Ok(account) => {
                tracing::info!(account = %row.name, "account added or rotated through another replica");
                registry.upsert(account, Source::Api);
            }
            Err(e) => tracing::error!(account = %row.name, error = %e, "cannot open an account another replica stored"),
        }
        revisions.insert(row.name.clone(), row.revision);
    }
    for entry in registry.entries() {
        let name = &entry.account.name;
        if entry.source == Source::Api && !rows.iter().any(|r| &r.name == name) {
            tracing::info!(account = %name, "account removed through another replica");
            registry.remove(name);
            revisions.remove(name);
        }
    }
}

/// The HTTP layer's hooks on `platform`.
pub fn hooks(platform: Arc<Platform>) -> Hooks {
    let state_of = platform.clone();
    Hooks {
        state: Arc::new(move |account: &str| {
            let stream = match &state_of.streaming {
                None => "off",
                Some(_) if state_of.stream_health.healthy(account) => "up",
                Some(_) => "down",
            };
            // Per process (trade_sync, position_sync, dashboard_sync): last
            // success, last error, next due, consecutive failures. Empty on
            // a replica that does not work for the account (HA).
            json!({"stream": stream, "sync": state_of.account_sync(account)})
        }),
        remove: Arc::new(move |account: String| {
            let p = platform.clone();
            Box::pin(async move { wind_down(&p, &account).await })
        }),
    }
}

/// Before an account is removed: its armed levels retired (`account_removed`),
/// then every conditional order of ours on it cancelled while its
/// credentials still work. Positions are left open.
async fn wind_down(p: &Platform, account: &str) -> Result<Value, Refused> {
    let retired = p.store.retire_account_levels(account).await.map_err(|e| Refused {
        budget_spent: false,
        message: format!("store: {e:#}"),
    })?;
    p.events.protection().levels_retired("account_removed", retired.len());
    let cancelled = crate::processes::backstop::flatten::cancel_backstops(p, account)
        .await
        .map_err(|e| Refused {
            budget_spent: e.budget_spent,
            message: e.message,
        })?;
    tracing::warn!(
        account,
        levels_retired = retired.len(),
        backstops_cancelled = cancelled.unwrap_or(0),
        "account wound down before removal; its positions stay open"
    );
    let mut done = json!({"levels_retired": retired.len(), "backstops_cancelled": cancelled.unwrap_or(0)});
    if cancelled.is_none() {
        done["backstops"] = json!(
            "the venue refused the account's credentials: conditional orders of ours may remain there; cancel them on the venue"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn row(vault: &Vault, name: &str, secret: &str, revision: i64) -> StoredAccount {
        StoredAccount {
            name: name.into(),
            api_key: vault.seal(name, "api_key", &format!("key-{name}")),
            api_secret: vault.seal(name, "api_secret", secret),
            key_id: vault.key_id().into(),
            revision,
            created_at: 1,
            created_by: "admin".into(),
            updated_at: 1,
            updated_by: "admin".into(),
        }
    }

    #[test]
    fn another_replicas_changes_are_followed_and_the_file_wins() {
        let vault = Vault::new([3; 32]);
        let file = Account {
            name: "main".into(),
            api_key: Secret::new("file-key"),
            api_secret: Secret::new("file-secret"),
        };
        let registry = Accounts::new([file], Source::File);
        let mut revisions = HashMap::new();
        let rows = vec![row(&vault, "desk", "s1", 1), row(&vault, "main", "s-api", 1)];
        sync_once(&rows, Some(&vault), &registry, &mut revisions);
        assert_eq!(registry.get("desk").unwrap().api_secret.expose(), "s1");
        assert_eq!(registry.entry("main").unwrap().source, Source::File);
        assert_eq!(registry.get("main").unwrap().api_secret.expose(), "file-secret");

        // Rotated elsewhere: the new revision is read.
        let rows = vec![row(&vault, "desk", "s2", 2)];
        sync_once(&rows, Some(&vault), &registry, &mut revisions);
        assert_eq!(registry.get("desk").unwrap().api_secret.expose(), "s2");

        // A row this replica cannot open keeps what it had.
        let other = Vault::new([4; 32]);
        sync_once(&[row(&other, "desk", "s3", 3)], Some(&vault), &registry, &mut revisions);
        assert_eq!(registry.get("desk").unwrap().api_secret.expose(), "s2");

        // Removed elsewhere: gone here; the file's account stays.
        sync_once(&[], Some(&vault), &registry, &mut revisions);
        assert!(!registry.contains("desk"));
        assert!(registry.contains("main"));
    }

    #[test]
    fn a_row_under_another_key_names_the_setting_and_both_key_ids() {
        let stored_with = Vault::new([5; 32]);
        let configured = Vault::new([6; 32]);
        let e = open(&configured, &row(&stored_with, "desk", "s", 1))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("store.encryption_key_file: "), "{e}");
        assert!(
            e.contains(stored_with.key_id()) && e.contains(configured.key_id()),
            "{e}"
        );
        assert!(!e.contains("key-desk"), "{e}");
    }
}
