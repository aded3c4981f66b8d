//! The market stream's connections: which streams ride which connection
//! (≤ 200 each), subscribing and unsubscribing as the wanted set changes,
//! opening connections for streams nothing carries (paced per route, backing
//! off while they fail), replacing a connection ahead of the venue's close,
//! and the task that serves one connection (silence watchdog included).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::backoff::Backoff;
use crate::domain::{LivePrices, PriceSource, Quote};
use crate::exchange::binance::ws::{MAX_STREAMS_PER_CONNECTION, Route, Socket, StreamEvent};
use crate::processes::platform::StreamSettings;
use crate::telemetry::stream::StreamMetrics;

/// Least time between two connection attempts on one route (doubling while they fail).
const CONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(32)).exact();

/// What a connection task tells the stream.
pub enum Note {
    Up(usize),
    Quote(usize, Route, Quote),
    /// Nearing the venue's close: open a replacement, then close this one.
    Renew(usize),
    Down(usize, &'static str),
}

/// What the stream tells a connection task.
enum Order {
    Change(Vec<String>, bool),
    Close,
}

struct Slot {
    route: Route,
    streams: BTreeSet<String>,
    orders: mpsc::Sender<Order>,
    up: bool,
    /// The slot this one replaces (a planned reconnect), closed once this one is up.
    replaces: Option<usize>,
    /// Being replaced: its streams are the replacement's.
    retiring: bool,
    /// When it came up, and when it last delivered a price.
    opened: Option<Instant>,
    heard: Option<Instant>,
}

pub struct Connections {
    settings: StreamSettings,
    metrics: Arc<StreamMetrics>,
    notes: mpsc::Sender<Note>,
    slots: HashMap<usize, Slot>,
    next_id: usize,
    last_connect: HashMap<Route, Instant>,
    failures: HashMap<Route, u32>,
}

pub fn stream_name(route: Route) -> &'static str {
    match route {
        Route::Public => "book",
        Route::Market => "mark",
    }
}

/// Which price a route's streams carry.
pub fn price_source(route: Route) -> PriceSource {
    match route {
        Route::Public => PriceSource::Book,
        Route::Market => PriceSource::Mark,
    }
}

impl Connections {
    pub fn new(settings: StreamSettings, metrics: Arc<StreamMetrics>, notes: mpsc::Sender<Note>) -> Self {
        for route in [Route::Public, Route::Market] {
            metrics.init(stream_name(route), "");
        }
        Connections {
            settings,
            metrics,
            notes,
            slots: HashMap::new(),
            next_id: 0,
            last_connect: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    /// Brings the connections in line with `symbols` on both routes.
    pub fn reconcile(&mut self, symbols: &BTreeSet<String>) {
        for route in [Route::Public, Route::Market] {
            let want: BTreeSet<String> = symbols.iter().map(|s| route.stream(s)).collect();
            self.drop_unwanted(route, &want);
            let carried: BTreeSet<String> = self
                .slots
                .values()
                .filter(|s| s.route == route && !s.retiring)
                .flat_map(|s| s.streams.iter().cloned())
                .collect();
            let mut missing: Vec<String> = want.difference(&carried).cloned().collect();
            // Live connections with room take new streams first (SUBSCRIBE).
            for slot in self
                .slots
                .values_mut()
                .filter(|s| s.route == route && s.up && !s.retiring)
            {
                let room = MAX_STREAMS_PER_CONNECTION.saturating_sub(slot.streams.len());
                let add: Vec<String> = missing.drain(..room.min(missing.len())).collect();
                if !add.is_empty() {
                    slot.streams.extend(add.iter().cloned());
                    let _ = slot.orders.try_send(Order::Change(add, true));
                }
            }
            // Streams a connection on its way up will carry wait for it.
            let pending: BTreeSet<String> = self
                .slots
                .values()
                .filter(|s| s.route == route && !s.up)
                .flat_map(|s| s.streams.iter().cloned())
                .collect();
            missing.retain(|s| !pending.contains(s));
            if missing.is_empty() || !self.may_connect(route) {
                continue;
            }
            for chunk in missing.chunks(MAX_STREAMS_PER_CONNECTION) {
                self.open(route, chunk.iter().cloned().collect());
            }
        }
    }

    /// Unsubscribes what is no longer wanted; closes connections left with nothing.
    fn drop_unwanted(&mut self, route: Route, want: &BTreeSet<String>) {
        for slot in self.slots.values_mut().filter(|s| s.route == route && !s.retiring) {
            let gone: Vec<String> = slot.streams.difference(want).cloned().collect();
            if !gone.is_empty() {
                for g in &gone {
                    slot.streams.remove(g);
                }
                let _ = slot.orders.try_send(Order::Change(gone, false));
            }
        }
        self.slots.retain(|_, s| {
            let keep = s.route != route || !s.streams.is_empty() || s.retiring;
            if !keep {
                let _ = s.orders.try_send(Order::Close);
            }
            keep
        });
    }

    /// Connection attempts are paced per route: 1 s apart, doubling while they fail.
    fn may_connect(&mut self, route: Route) -> bool {
        let failures = self.failures.get(&route).copied().unwrap_or(0);
        let gap = CONNECT_BACKOFF.wait(failures + 1);
        if self.last_connect.get(&route).is_some_and(|t| t.elapsed() < gap) {
            return false;
        }
        self.last_connect.insert(route, Instant::now());
        true
    }

    fn open(&mut self, route: Route, streams: BTreeSet<String>) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let (orders, orders_rx) = mpsc::channel(64);
        tokio::spawn(serve(
            id,
            self.settings.clone(),
            route,
            streams.clone(),
            orders_rx,
            self.notes.clone(),
        ));
        self.slots.insert(
            id,
            Slot {
                route,
                streams,
                orders,
                up: false,
                replaces: None,
                retiring: false,
                opened: None,
                heard: None,
            },
        );
        id
    }

    pub fn up(&mut self, id: usize) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.up = true;
        slot.opened = Some(Instant::now());
        let route = slot.route;
        self.failures.insert(route, 0);
        if let Some(old) = slot.replaces.take()
            && let Some(old) = self.slots.remove(&old)
        {
            let _ = old.orders.try_send(Order::Close);
        }
        self.metrics.up(stream_name(route), "", true);
    }

    /// Connection `id` delivered a price.
    pub fn heard(&mut self, id: usize) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.heard = Some(Instant::now());
        }
    }

    /// Each live connection vouches for the quotes it delivered: its symbols
    /// did not move if nothing came since (see [`LivePrices`]).
    pub fn vouch(&self, live: &LivePrices) {
        for slot in self.slots.values().filter(|s| s.up) {
            if let (Some(opened), Some(heard)) = (slot.opened, slot.heard) {
                let source = price_source(slot.route);
                let symbols: Vec<String> = slot.streams.iter().map(|s| Route::symbol(s)).collect();
                live.vouch(source, symbols.iter().map(String::as_str), opened, heard);
            }
        }
    }

    /// A planned reconnect: the replacement opens now; the old one closes once it is up.
    pub fn renew(&mut self, id: usize) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.retiring = true;
        let (route, streams) = (slot.route, slot.streams.clone());
        self.metrics.reconnect(stream_name(route), "", "planned");
        let new = self.open(route, streams);
        if let Some(slot) = self.slots.get_mut(&new) {
            slot.replaces = Some(id);
        }
    }

    pub fn down(&mut self, id: usize, reason: &'static str) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        self.metrics.reconnect(stream_name(slot.route), "", reason);
        *self.failures.entry(slot.route).or_default() += 1;
        tracing::warn!(route = ?slot.route, reason, streams = slot.streams.len(), "market stream connection lost; reconnecting");
        // A retiring connection's replacement may be up already; otherwise the next reconcile reopens its streams.
        for s in self.slots.values_mut().filter(|s| s.replaces == Some(id)) {
            s.replaces = None;
        }
        let up = self.slots.values().any(|s| s.route == slot.route && s.up);
        self.metrics.up(stream_name(slot.route), "", up);
    }

    pub fn close_all(&mut self) {
        for (_, slot) in self.slots.drain() {
            let _ = slot.orders.try_send(Order::Close);
        }
        for route in [Route::Public, Route::Market] {
            self.metrics.up(stream_name(route), "", false);
        }
    }
}

/// Serves one connection until it fails, goes silent, or is told to close.
async fn serve(
    id: usize,
    settings: StreamSettings,
    route: Route,
    streams: BTreeSet<String>,
    mut orders: mpsc::Receiver<Order>,
    notes: mpsc::Sender<Note>,
) {
    let list: Vec<String> = streams.into_iter().collect();
    let mut socket = match Socket::market(&settings.base_url, route, &list).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(error = %e, route = ?route, "cannot open a market stream connection");
            let _ = notes.send(Note::Down(id, "error")).await;
            return;
        }
    };
    let _ = notes.send(Note::Up(id)).await;
    let renew_at = socket.opened + settings.planned_reconnect();
    let mut renewing = false;
    loop {
        let silent_at = socket.last_message + settings.silence;
        tokio::select! {
            message = socket.next() => match message {
                Ok(Some(StreamEvent::Book(quote))) => { let _ = notes.send(Note::Quote(id, Route::Public, quote)).await; }
                Ok(Some(StreamEvent::Mark(quote))) => { let _ = notes.send(Note::Quote(id, Route::Market, quote)).await; }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "market stream connection ended");
                    let _ = notes.send(Note::Down(id, "closed")).await;
                    return;
                }
            },
            _ = sleep_until(silent_at) => {
                tracing::warn!(route = ?route, silent_s = settings.silence.as_secs_f64(), "market stream silent; replacing the connection");
                let _ = notes.send(Note::Down(id, "silent")).await;
                return;
            }
            _ = sleep_until(renew_at), if !renewing => {
                renewing = true;
                let _ = notes.send(Note::Renew(id)).await;
            }
            order = orders.recv() => match order {
                Some(Order::Change(streams, subscribe)) => {
                    if let Err(e) = socket.change(&streams, subscribe).await {
                        tracing::warn!(error = %e, "cannot change a market stream's subscriptions");
                        let _ = notes.send(Note::Down(id, "error")).await;
                        return;
                    }
                }
                Some(Order::Close) | None => {
                    socket.close().await;
                    return;
                }
            },
        }
    }
}
