//! The hub: one sequence per replica, a bounded ring of recent events for
//! replay, and a bounded queue per client.
//!
//! Publishing takes one short lock (no I/O under it): the event gets the
//! next sequence number and its SSE frame is rendered once, it goes into the
//! ring, and into the queue of every client whose filter it matches with
//! `try_send`. A client whose queue is full is dropped on the spot and never
//! waited for, so one slow reader cannot slow the service or the others.
//! Subscribing takes the same lock, so a replay (`Last-Event-ID`) and the
//! live events after it meet with nothing missed and nothing twice.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::prices::Prices;
use crate::telemetry::events::EventsMetrics;

/// The event types a client can ask for (`types=`). The order is that of
/// `telemetry::events::SENT_TYPES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Price,
    Fill,
    Position,
    Level,
    Alert,
    Notification,
    Process,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Price,
        Kind::Fill,
        Kind::Position,
        Kind::Level,
        Kind::Alert,
        Kind::Notification,
        Kind::Process,
    ];

    pub fn as_str(self) -> &'static str {
        crate::telemetry::events::SENT_TYPES[self as usize]
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// `SENT_TYPES` indexes of the control frames.
pub(super) const SNAPSHOT: usize = 7;
pub(super) const RESET: usize = 8;

/// One published event: what filters look at, and its frame, rendered once.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    pub kind: Kind,
    account: Option<Box<str>>,
    symbol: Option<Box<str>>,
    pub frame: Bytes,
}

/// What a client asked for; `None` lists mean "all".
#[derive(Debug, Clone)]
pub struct Filter {
    types: u16,
    accounts: Option<Vec<String>>,
    symbols: Option<Vec<String>>,
}

impl Default for Filter {
    /// Everything.
    fn default() -> Self {
        Filter::new(None, None, None)
    }
}

impl Filter {
    pub fn new(types: Option<Vec<Kind>>, accounts: Option<Vec<String>>, symbols: Option<Vec<String>>) -> Self {
        let types = match types {
            None => u16::MAX,
            Some(kinds) => kinds.iter().fold(0, |bits, k| bits | k.bit()),
        };
        Filter {
            types,
            accounts,
            symbols,
        }
    }

    pub fn wants(&self, kind: Kind) -> bool {
        self.types & kind.bit() != 0
    }

    /// Whether an event of `account` passes (events of no account always do).
    pub fn account_ok(&self, account: &str) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.iter().any(|x| x == account))
    }

    pub fn symbol_ok(&self, symbol: &str) -> bool {
        self.symbols.as_ref().is_none_or(|s| s.iter().any(|x| x == symbol))
    }

    pub fn accounts(&self) -> Option<&[String]> {
        self.accounts.as_deref()
    }

    pub fn symbols(&self) -> Option<&[String]> {
        self.symbols.as_deref()
    }

    fn matches(&self, e: &Event) -> bool {
        self.wants(e.kind)
            && e.account.as_deref().is_none_or(|a| self.account_ok(a))
            && e.symbol.as_deref().is_none_or(|s| self.symbol_ok(s))
    }
}

/// `[events]` as the hub uses it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub price_interval: Duration,
    pub keepalive: Duration,
    pub buffer: usize,
    pub client_queue: usize,
    pub max_clients: usize,
}

impl Settings {
    pub fn from_config(c: &crate::config::EventsConfig) -> Self {
        Settings {
            price_interval: Duration::from_millis(c.price_interval_ms),
            keepalive: Duration::from_secs_f64(c.keepalive_seconds),
            buffer: c.buffer.max(1),
            client_queue: c.client_queue.max(1),
            max_clients: c.max_clients,
        }
    }
}

/// Why a client's stream was ended by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its queue was full: it reads more slowly than events come.
    Slow,
    /// This replica missed events from the others (the relay reconnected).
    Resync,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        crate::telemetry::events::DROP_REASONS[self as usize]
    }
}

/// Set by the hub when it drops a client; read by the client's stream.
#[derive(Debug, Default)]
pub(super) struct ClientState(AtomicU8);

impl ClientState {
    fn drop_for(&self, why: Dropped) {
        let _ = self
            .0
            .compare_exchange(0, why as u8 + 1, Ordering::AcqRel, Ordering::Acquire);
    }

    pub(super) fn dropped(&self) -> Option<Dropped> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Dropped::Slow),
            _ => Some(Dropped::Resync),
        }
    }
}

struct Client {
    filter: Filter,
    tx: mpsc::Sender<Arc<Event>>,
    state: Arc<ClientState>,
}

struct Inner {
    seq: u64,
    /// Ids at or below this cannot be resumed here (events from other replicas were missed).
    floor: u64,
    ring: VecDeque<Arc<Event>>,
    clients: HashMap<u64, Client>,
    next_client: u64,
}

/// An event on its way to the other replicas (`relay`).
#[derive(Debug, Clone)]
pub struct Relayed {
    pub kind: Kind,
    pub account: Option<String>,
    pub symbol: Option<String>,
    pub data: String,
}

/// How a new client's stream begins.
pub enum Start {
    /// The events it missed, in order (possibly none).
    Replay(Vec<Arc<Event>>),
    /// A snapshot as of `seq`; `reset` says why a `Last-Event-ID` could not be resumed.
    Snapshot { seq: u64, reset: Option<&'static str> },
}

/// `events.max_clients` are connected.
#[derive(Debug)]
pub struct Full;

pub struct Hub {
    epoch: String,
    settings: Settings,
    inner: Mutex<Inner>,
    pub(super) prices: Prices,
    /// Symbols connected clients asked for (`symbols=`), with how many asked.
    wanted: Mutex<HashMap<String, usize>>,
    pub(super) metrics: Arc<EventsMetrics>,
    relay: OnceLock<mpsc::Sender<Relayed>>,
}

impl Hub {
    pub fn new(settings: Settings, metrics: Arc<EventsMetrics>) -> Arc<Hub> {
        // A new epoch per start: ids of a previous life, or of another
        // replica, are recognised as foreign and answered with a snapshot.
        let epoch = format!("{:x}", rand::random::<u64>() >> 16);
        Arc::new(Hub {
            epoch,
            inner: Mutex::new(Inner {
                seq: 0,
                floor: 0,
                ring: VecDeque::with_capacity(settings.buffer.min(4096)),
                clients: HashMap::new(),
                next_client: 0,
            }),
            prices: Prices::default(),
            wanted: Mutex::default(),
            metrics,
            relay: OnceLock::new(),
            settings,
        })
    }

    /// This replica's stream epoch: the part of every id before the `-`.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The id of the `seq`th event of this replica.
    pub fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// The newest sequence number.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// Local events are also handed to `relay` (the other replicas).
    pub fn relay_to(&self, relay: mpsc::Sender<Relayed>) {
        let _ = self.relay.set(relay);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes an event that happened here (and relays it to the other replicas).
    pub fn publish(&self, kind: Kind, account: Option<&str>, symbol: Option<&str>, data: &Value) {
        let data = data.to_string();
        if let Some(relay) = self.relay.get()
            && relay
                .try_send(Relayed {
                    kind,
                    account: account.map(String::from),
                    symbol: symbol.map(String::from),
                    data: data.clone(),
                })
                .is_err()
        {
            tracing::warn!(
                kind = kind.as_str(),
                "the relay to the other replicas is behind: an event reaches this replica's clients only"
            );
        }
        if kind == Kind::Price
            && let (Some(symbol), Ok(v)) = (symbol, serde_json::from_str::<Value>(&data))
        {
            self.prices.remember(symbol, v);
        }
        self.append(kind, account, symbol, &data);
    }

    /// Publishes an event another replica relayed (with a local id).
    pub fn publish_remote(&self, kind: Kind, account: Option<&str>, symbol: Option<&str>, data: &str) {
        if kind == Kind::Price
            && let (Some(symbol), Ok(v)) = (symbol, serde_json::from_str::<Value>(data))
        {
            self.prices.remember(symbol, v);
        }
        self.append(kind, account, symbol, data);
    }

    fn append(&self, kind: Kind, account: Option<&str>, symbol: Option<&str>, data: &str) {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let frame = Bytes::from(format!(
            "id: {}-{seq}\nevent: {}\ndata: {data}\n\n",
            self.epoch,
            kind.as_str()
        ));
        let event = Arc::new(Event {
            seq,
            kind,
            account: account.map(Into::into),
            symbol: symbol.map(Into::into),
            frame,
        });
        if inner.ring.len() >= self.settings.buffer {
            inner.ring.pop_front();
        }
        inner.ring.push_back(event.clone());
        let mut slow = Vec::new();
        for (id, c) in &inner.clients {
            if c.filter.matches(&event)
                && let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(event.clone())
            {
                slow.push(*id);
            }
        }
        for id in &slow {
            if let Some(c) = inner.clients.remove(id) {
                c.state.drop_for(Dropped::Slow);
                self.metrics.dropped(Dropped::Slow as usize);
            }
        }
        if !slow.is_empty() {
            self.metrics.clients(inner.clients.len());
        }
    }

    /// Connects a client: the replay of what it missed since `last` (its
    /// `Last-Event-ID`), or a snapshot position when there is none to resume.
    pub fn subscribe(self: &Arc<Self>, filter: Filter, last: Option<&str>) -> Result<Subscription, Full> {
        let (tx, rx) = mpsc::channel(self.settings.client_queue);
        let state = Arc::new(ClientState::default());
        let mut inner = self.lock();
        if inner.clients.len() >= self.settings.max_clients {
            return Err(Full);
        }
        let seq = inner.seq;
        let start = match last.map(|id| self.resume_point(id, &inner)) {
            None => Start::Snapshot { seq, reset: None },
            Some(Ok(after)) => {
                self.metrics.replay(true);
                Start::Replay(
                    inner
                        .ring
                        .iter()
                        .filter(|e| e.seq > after && filter.matches(e))
                        .cloned()
                        .collect(),
                )
            }
            Some(Err(reason)) => {
                self.metrics.replay(false);
                Start::Snapshot {
                    seq,
                    reset: Some(reason),
                }
            }
        };
        let id = inner.next_client;
        inner.next_client += 1;
        if let Some(symbols) = filter.symbols() {
            let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            for s in symbols {
                *wanted.entry(s.clone()).or_default() += 1;
            }
        }
        inner.clients.insert(
            id,
            Client {
                filter: filter.clone(),
                tx,
                state: state.clone(),
            },
        );
        self.metrics.clients(inner.clients.len());
        drop(inner);
        Ok(Subscription {
            hub: self.clone(),
            id,
            filter,
            start: Some(start),
            rx,
            state,
        })
    }

    /// The sequence number after which `id` resumes, or why it cannot.
    fn resume_point(&self, id: &str, inner: &Inner) -> Result<u64, &'static str> {
        let Some((epoch, seq)) = id.trim().rsplit_once('-') else {
            return Err("unknown_id");
        };
        let Ok(after) = seq.parse::<u64>() else {
            return Err("unknown_id");
        };
        if epoch != self.epoch || after > inner.seq {
            // Another replica's, or a previous start's: its numbers mean nothing here.
            return Err("unknown_id");
        }
        if after < inner.floor {
            return Err("missed_events");
        }
        let oldest = inner.ring.front().map_or(inner.seq + 1, |e| e.seq);
        if after + 1 < oldest {
            return Err("too_old");
        }
        Ok(after)
    }

    fn leave(&self, id: u64, filter: &Filter) {
        let mut inner = self.lock();
        if inner.clients.remove(&id).is_some() {
            self.metrics.clients(inner.clients.len());
        }
        drop(inner);
        if let Some(symbols) = filter.symbols() {
            let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            for s in symbols {
                if let Some(n) = wanted.get_mut(s) {
                    *n -= 1;
                    if *n == 0 {
                        wanted.remove(s);
                    }
                }
            }
        }
    }

    /// Every client is told to start over (and ids so far cannot be
    /// resumed): this replica missed events from the others.
    pub fn resync_all(&self) {
        let mut inner = self.lock();
        inner.floor = inner.seq;
        for (_, c) in inner.clients.drain() {
            c.state.drop_for(Dropped::Resync);
            self.metrics.dropped(Dropped::Resync as usize);
        }
        self.metrics.clients(0);
    }

    /// Ends every client's stream (the service is stopping): each gets a
    /// last `reset` and reconnects, to another replica or to this one's
    /// next start, where its id means nothing: a snapshot follows.
    pub fn close_all(&self) {
        let mut inner = self.lock();
        for (_, c) in inner.clients.drain() {
            c.state.drop_for(Dropped::Resync);
        }
        self.metrics.clients(0);
    }

    /// Symbols connected clients asked for by name: the market stream watches them too.
    pub fn wanted_symbols(&self) -> Vec<String> {
        self.wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// How many clients are connected.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }
}

/// One connected client: how its stream starts, then its queue. Dropping
/// it disconnects the client from the hub.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    filter: Filter,
    start: Option<Start>,
    pub(super) rx: mpsc::Receiver<Arc<Event>>,
    pub(super) state: Arc<ClientState>,
}

impl Subscription {
    /// Whether the stream begins with a snapshot (the caller builds it).
    pub fn needs_snapshot(&self) -> bool {
        matches!(self.start, Some(Start::Snapshot { .. }))
    }

    /// How the stream begins (taken once).
    pub fn start(&mut self) -> Option<Start> {
        self.start.take()
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(self.id, &self.filter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(buffer: usize, queue: usize) -> Arc<Hub> {
        Hub::new(
            Settings {
                price_interval: Duration::from_millis(250),
                keepalive: Duration::from_secs(15),
                buffer,
                client_queue: queue,
                max_clients: 2,
            },
            Arc::default(),
        )
    }

    fn level(h: &Hub, account: &str, n: i64) {
        h.publish(
            Kind::Level,
            Some(account),
            Some("BTCUSDT"),
            &serde_json::json!({"id": n}),
        );
    }

    #[test]
    fn a_resume_replays_exactly_what_was_missed_and_only_what_matches() {
        let h = hub(100, 16);
        level(&h, "a", 1);
        level(&h, "b", 2);
        level(&h, "a", 3);
        let mut sub = h
            .subscribe(Filter::new(None, Some(vec!["a".into()]), None), Some(&h.id(1)))
            .unwrap();
        let Some(Start::Replay(missed)) = sub.start() else {
            panic!("a hit")
        };
        assert_eq!(missed.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
        level(&h, "a", 4);
        level(&h, "b", 5);
        assert_eq!(sub.rx.try_recv().unwrap().seq, 4);
        assert!(sub.rx.try_recv().is_err(), "b's event is not for this client");
    }

    #[test]
    fn foreign_and_too_old_ids_get_a_snapshot() {
        let h = hub(2, 16);
        for n in 1..=5 {
            level(&h, "a", n);
        }
        for (last, why) in [
            ("other-3".to_string(), "unknown_id"),
            (h.id(99), "unknown_id"),
            (h.id(1), "too_old"),
            ("garbage".to_string(), "unknown_id"),
        ] {
            let mut sub = h.subscribe(Filter::default(), Some(&last)).unwrap();
            match sub.start() {
                Some(Start::Snapshot { seq: 5, reset }) => assert_eq!(reset, Some(why), "{last}"),
                _ => panic!("{last}: a snapshot"),
            }
        }
        let mut sub = h.subscribe(Filter::default(), Some(&h.id(3))).unwrap();
        assert!(matches!(sub.start(), Some(Start::Replay(v)) if v.len() == 2));
    }

    #[test]
    fn a_full_queue_drops_its_client_and_no_other() {
        let h = hub(100, 2);
        let slow = h.subscribe(Filter::default(), None).unwrap();
        let mut fast = h.subscribe(Filter::default(), None).unwrap();
        assert!(h.subscribe(Filter::default(), None).is_err(), "max_clients");
        for n in 1..=3 {
            level(&h, "a", n);
            while fast.rx.try_recv().is_ok() {}
        }
        assert_eq!(slow.state.dropped(), Some(Dropped::Slow));
        assert_eq!(fast.state.dropped(), None);
        assert_eq!(h.clients(), 1);
    }
}
