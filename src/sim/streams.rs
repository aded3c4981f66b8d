//! The simulator's stream state: listen keys (by key: the account and when
//! it expires), connection counts, `SUBSCRIBE`s by how they were answered,
//! the signal that drops every connection at once, and the venue's limit on
//! new connections per client address (`ws_connections_limit` per
//! `ws_connections_window_seconds`, a sliding window: Binance documents 300
//! per 5 minutes per IP); beyond it an upgrade is refused and counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
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
    /// New connections per client address within the window (at most `connect_limit` each).
    connects: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    connect_limit: usize,
    connect_window: Duration,
    /// Upgrades refused for going past the limit.
    refused: AtomicU64,
    /// Connections open now.
    open: AtomicU64,
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
            connects: Mutex::default(),
            connect_limit: config.ws_connections_limit.max(1) as usize,
            connect_window: Duration::from_secs_f64(config.ws_connections_window_seconds.max(1.0)),
            refused: AtomicU64::new(0),
            open: AtomicU64::new(0),
        }
    }

    /// Whether `client` may open one more connection now (and counts it); a
    /// refusal is counted and says when the oldest counted connection leaves the window.
    pub fn admit(&self, client: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut connects = self.connects.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.connect_window;
        connects.retain(|_, times| {
            while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = connects.entry(client).or_default();
        if times.len() >= self.connect_limit {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let oldest = times.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }

    /// Upgrades refused so far for going past the connection limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A connection's life: counted open until the guard drops.
    pub fn opened(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// Connections open now.
    pub fn open_now(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
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

    /// Expires the keys of one account (by API key) now.
    pub fn expire_of(&self, api_key: &str) {
        let now = Instant::now();
        for (_, until) in self.keys().values_mut().filter(|(owner, _)| owner == api_key) {
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

/// Counts a connection as open until dropped.
pub struct OpenConnection(std::sync::Arc<Streams>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn new_connections_per_address_are_limited_in_a_sliding_window() {
        let config = SimulatorConfig {
            ws_connections_limit: 3,
            ws_connections_window_seconds: 60.0,
            ..SimulatorConfig::default()
        };
        let streams = Streams::new(&config);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(streams.admit(a).is_ok());
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        assert_eq!(
            streams.admit(a),
            Err(Duration::from_secs(30)),
            "the 4th within the window"
        );
        assert!(streams.admit(b).is_ok(), "another address has its own count");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(streams.admit(a).is_ok(), "the first left the window");
        assert_eq!(streams.refused(), 1);
    }
}
