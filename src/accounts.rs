//! The live set of exchange accounts: who the service trades and syncs for.
//!
//! Accounts come from the configuration file (read-only while running) and
//! from the admin API (added, rotated and removed while running). Every part
//! that works per account — the venue client signing requests, the sync
//! processes, the user streams, the HTTP layer checking a path's account —
//! reads this one registry, so a change here is seen everywhere at once.
//! Watchers (`changes`) learn that something changed and re-read the set;
//! the registry never calls out, so no lock is held across I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::Secret;

/// Where an account was defined: the file's are read-only through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
        }
    }
}

/// Credentials of one exchange account.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub api_key: Secret,
    pub api_secret: Secret,
}

/// One registered account: its credentials and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub account: Arc<Account>,
    pub source: Source,
}

/// Which accounts this replica works for: every replica computes the same
/// assignment (HA), so each account has one owner. Alone, a replica owns all.
pub type Owner = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The registry. Cheap to read (a read lock and a clone of an `Arc`).
pub struct Accounts {
    entries: RwLock<BTreeMap<String, Entry>>,
    changed: tokio::sync::watch::Sender<u64>,
    owner: RwLock<Option<Owner>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("names", &self.names()).finish()
    }
}

impl Accounts {
    /// A registry holding `accounts`, all from `source`.
    pub fn new(accounts: impl IntoIterator<Item = Account>, source: Source) -> Arc<Self> {
        let entries = accounts
            .into_iter()
            .map(|a| {
                let entry = Entry {
                    account: Arc::new(a),
                    source,
                };
                (entry.account.name.clone(), entry)
            })
            .collect();
        Arc::new(Accounts {
            entries: RwLock::new(entries),
            changed: tokio::sync::watch::Sender::new(0),
            owner: RwLock::new(None),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every account's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The accounts this replica works for (all of them unless an assignment is set), sorted.
    pub fn mine(&self) -> Vec<String> {
        let owner = self.owner.read().unwrap_or_else(|e| e.into_inner()).clone();
        let names = self.names();
        match owner {
            Some(owns) => names.into_iter().filter(|n| owns(n)).collect(),
            None => names,
        }
    }

    /// Whether this replica works for `name` (true for every account unless an assignment is set).
    pub fn is_mine(&self, name: &str) -> bool {
        let owner = self.owner.read().unwrap_or_else(|e| e.into_inner()).clone();
        owner.is_none_or(|owns| owns(name))
    }

    /// Sets which accounts this replica owns (HA); watchers are told, since the share moved.
    pub fn assign(&self, owner: Owner) {
        *self.owner.write().unwrap_or_else(|e| e.into_inner()) = Some(owner);
        self.changed.send_modify(|g| *g += 1);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The account's credentials, if it is registered.
    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.read().get(name).map(|e| e.account.clone())
    }

    pub fn entry(&self, name: &str) -> Option<Entry> {
        self.read().get(name).cloned()
    }

    /// Every entry, sorted by name.
    pub fn entries(&self) -> Vec<Entry> {
        self.read().values().cloned().collect()
    }

    /// Adds the account or replaces its credentials (a rotation); watchers are told.
    pub fn upsert(&self, account: Account, source: Source) {
        let name = account.name.clone();
        self.write().insert(
            name,
            Entry {
                account: Arc::new(account),
                source,
            },
        );
        self.changed.send_modify(|g| *g += 1);
    }

    /// Removes the account; watchers are told. False if it was not there.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self.write().remove(name).is_some();
        if removed {
            self.changed.send_modify(|g| *g += 1);
        }
        removed
    }

    /// A receiver that wakes when the set or a credential changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> Account {
        Account {
            name: name.into(),
            api_key: Secret::new(format!("key-{name}")),
            api_secret: Secret::new(format!("secret-{name}")),
        }
    }

    #[tokio::test]
    async fn changes_are_seen_by_watchers_and_names_stay_sorted() {
        let accounts = Accounts::new([account("b"), account("a")], Source::File);
        let mut changes = accounts.changes();
        assert_eq!(accounts.names(), ["a", "b"]);
        accounts.upsert(account("c"), Source::Api);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(accounts.entry("c").unwrap().source, Source::Api);
        assert!(accounts.remove("a"));
        assert!(!accounts.remove("a"));
        assert!(changes.has_changed().unwrap());
        assert_eq!(accounts.names(), ["b", "c"]);
        changes.mark_unchanged();
        accounts.assign(Arc::new(|name: &str| name == "c"));
        assert!(changes.has_changed().unwrap());
        assert_eq!(accounts.mine(), ["c"]);
        assert!(!accounts.is_mine("b"));
    }
}
