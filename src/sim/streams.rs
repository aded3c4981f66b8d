//! The simulator's stream state: listen keys (by key: the account and when
//! it expires), connection counts, `SUBSCRIBE`s by how they were answered,
//! and the signal that drops every connection at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::SimulatorConfig;

pub struct Streams {
    pub lifetime: Duration,
    pub ping: Duration,
    ttl: Duration,
    /// listen key → (API key, expires at).
    keys: Mutex<HashMap<String, (String, Instant)>>,
    pub drops: broadcast::Sender<()>,
    public: AtomicU64,
    market: AtomicU64,
    private: AtomicU64,
    /// `SUBSCRIBE`s by answer: `answered`, `late`, `unanswered`, `refused`.
    subscribes: Mutex<BTreeMap<&'static str, u64>>,
}

impl Streams {
    pub fn new(config: &SimulatorConfig) -> Self {
        Streams {
            lifetime: Duration::from_secs_f64(config.ws_max_lifetime_seconds),
            ping: Duration::from_secs_f64(config.ws_ping_seconds),
            ttl: Duration::from_secs_f64(config.listen_key_ttl_seconds),
            keys: Mutex::default(),
            drops: broadcast::channel(4).0,
            public: AtomicU64::new(0),
            market: AtomicU64::new(0),
            private: AtomicU64::new(0),
            subscribes: Mutex::default(),
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account's valid key, extended; or a new one (Binance's `POST /fapi/v1/listenKey`).
    pub fn create(&self, api_key: &str) -> String {
        let now = Instant::now();
        let mut keys = self.keys();
        keys.retain(|_, (_, until)| *until > now);
        let existing = keys
            .iter()
            .find(|(_, (owner, _))| owner == api_key)
            .map(|(k, _)| k.clone());
        let key = existing.unwrap_or_else(|| {
            let bytes: [u8; 32] = rand::random();
            hex::encode(bytes)
        });
        keys.insert(key.clone(), (api_key.to_string(), now + self.ttl));
        key
    }

    /// Extends a valid key of `api_key`; `false` when it does not exist (any more).
    pub fn extend(&self, api_key: &str, key: &str) -> bool {
        let now = Instant::now();
        match self.keys().get_mut(key) {
            Some((owner, until)) if owner == api_key && *until > now => {
                *until = now + self.ttl;
                true
            }
            _ => false,
        }
    }

    pub fn close(&self, api_key: &str, key: &str) -> bool {
        let mut keys = self.keys();
        match keys.get(key) {
            Some((owner, _)) if owner == api_key => keys.remove(key).is_some(),
            _ => false,
        }
    }

    /// Whose key this is, while it is valid.
    pub fn listen_key_owner(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        self.keys()
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(owner, _)| owner.clone())
    }

    /// Expires every key now (tests: `POST /sim/stream/expire_keys`).
    pub fn expire_all(&self) {
        let now = Instant::now();
        for (_, until) in self.keys().values_mut() {
            *until = now;
        }
    }

    /// Drops every open connection now (tests: `POST /sim/stream/drop`).
    pub fn drop_all(&self) {
        let _ = self.drops.send(());
    }

    pub fn connected(&self, public: bool) {
        let counter = if public { &self.public } else { &self.market };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connected_private(&self) {
        self.private.fetch_add(1, Ordering::Relaxed);
    }

    /// A `SUBSCRIBE` arrived and was answered as `how`.
    pub fn subscribe(&self, how: &'static str) {
        *self
            .subscribes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(how)
            .or_default() += 1;
    }

    /// `SUBSCRIBE`s so far, by how they were answered.
    pub fn subscribes(&self) -> BTreeMap<&'static str, u64> {
        self.subscribes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connections accepted so far: (public, market, private).
    pub fn connections(&self) -> (u64, u64, u64) {
        (
            self.public.load(Ordering::Relaxed),
            self.market.load(Ordering::Relaxed),
            self.private.load(Ordering::Relaxed),
        )
    }
}
