//! The market stream's connections: which streams ride which connection
//! (≤ 200 each), subscribing and unsubscribing as the wanted set changes,
//! opening connections for streams nothing carries (paced per route, backing
//! off while they fail, and each through the service's one connection pacer), replacing a connection ahead of the venue's close,
//! and the task that serves one connection (silence watchdog included; a
//! subscription not confirmed in time, or refused, replaces the connection).
//! A connection vouches for a stream's quotes only from the moment that
//! stream's subscription was confirmed: from the connection's opening for the
//! streams in its URL, from the venue's answer for those added by `SUBSCRIBE`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::backoff::Backoff;
use crate::domain::{LivePrices, PriceSource, Quote};
use crate::exchange::binance::ws::{MAX_STREAMS_PER_CONNECTION, Route, StreamEvent, Target, open_paced};
use crate::processes::platform::StreamSettings;
use crate::telemetry::stream::StreamMetrics;

use super::requests::{ANSWER_TIMEOUT, Answer, Requests};

/// Least time between two connection attempts on one route (doubling while they fail).
const CONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(32)).exact();

/// What a connection task tells the stream.
pub enum Note {
    Up(usize),
    Quote(usize, Route, Quote),
    /// The venue confirmed these streams' subscription (`SUBSCRIBE` answered) at this instant.
    Subscribed(usize, Vec<String>, Instant),
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
    /// Since when each stream's subscription is confirmed (absent: not yet).
    confirmed: HashMap<String, Instant>,
    /// When it last delivered a price.
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
            // They are not vouched for until the venue confirms.
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
                    slot.confirmed.remove(g);
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
                confirmed: HashMap::new(),
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
        // The streams of its URL are subscribed from the start.
        let opened = Instant::now();
        slot.confirmed = slot.streams.iter().map(|s| (s.clone(), opened)).collect();
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

    /// The venue confirmed `streams` on connection `id` at `at`.
    pub fn subscribed(&mut self, id: usize, streams: Vec<String>, at: Instant) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        for s in streams.into_iter().filter(|s| slot.streams.contains(s)) {
            slot.confirmed.insert(s, at);
        }
    }

    /// Each live connection vouches for the quotes it delivered since each
    /// stream's subscription was confirmed: its symbols did not move if
    /// nothing came since (see [`LivePrices`]). Unconfirmed streams: nothing.
    pub fn vouch(&self, live: &LivePrices) {
        for slot in self.slots.values().filter(|s| s.up) {
            let Some(heard) = slot.heard else { continue };
            let mut by_since: BTreeMap<Instant, Vec<String>> = BTreeMap::new();
            for (stream, since) in &slot.confirmed {
                by_since.entry(*since).or_default().push(Route::symbol(stream));
            }
            for (since, symbols) in by_since {
                live.vouch(
                    price_source(slot.route),
                    symbols.iter().map(String::as_str),
                    since,
                    heard,
                );
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
    let target = Target::Market(route, &list);
    let (pacer, counted) = (&settings.pacer, &settings.connections);
    let mut socket = match open_paced(&settings.base_url, target, pacer, counted, stream_name(route)).await {
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
    let mut requests = Requests::default();
    loop {
        let silent_at = socket.last_message + settings.silence;
        let answer_due = requests.deadline();
        tokio::select! {
            message = socket.next() => match message {
                Ok(Some(StreamEvent::Book(quote))) => { let _ = notes.send(Note::Quote(id, Route::Public, quote)).await; }
                Ok(Some(StreamEvent::Mark(quote))) => { let _ = notes.send(Note::Quote(id, Route::Market, quote)).await; }
                Ok(Some(StreamEvent::Reply { id: request, error })) => match requests.answered(request, error) {
                    Answer::Subscribed(streams) => { let _ = notes.send(Note::Subscribed(id, streams, socket.last_message)).await; }
                    Answer::Nothing => {}
                    Answer::Refused(why) => {
                        tracing::warn!(route = ?route, why, "the venue refused a market stream subscription; replacing the connection");
                        let _ = notes.send(Note::Down(id, "subscribe_refused")).await;
                        socket.close().await;
                        return;
                    }
                },
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
            _ = sleep_until(answer_due.unwrap_or(renew_at)), if answer_due.is_some() => {
                tracing::warn!(route = ?route, timeout_s = ANSWER_TIMEOUT.as_secs(), "the venue did not answer a market stream subscription; replacing the connection");
                let _ = notes.send(Note::Down(id, "subscribe_timeout")).await;
                socket.close().await;
                return;
            }
            _ = sleep_until(renew_at), if !renewing => {
                renewing = true;
                let _ = notes.send(Note::Renew(id)).await;
            }
            order = orders.recv() => match order {
                Some(Order::Change(streams, subscribe)) => match socket.change(&streams, subscribe).await {
                    Ok(Some(request)) => requests.sent(request, streams, subscribe, Instant::now()),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot change a market stream's subscriptions");
                        let _ = notes.send(Note::Down(id, "error")).await;
                        return;
                    }
                },
                Some(Order::Close) | None => {
                    socket.close().await;
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Quote;
    use rust_decimal::Decimal;

    const MAX_AGE: Duration = Duration::from_secs(5);

    fn connections() -> Connections {
        let settings = StreamSettings {
            base_url: "ws://127.0.0.1:1".into(),
            silence: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(86_400),
            listen_key_renew: Duration::from_secs(1800),
            reconcile: Duration::from_secs(60),
            pacer: Arc::new(crate::exchange::binance::pacer::ConnectPacer::new(1.0, 5)),
            user_streams_per_connection: 50,
            connections: Arc::default(),
        };
        let (notes, _) = mpsc::channel(8);
        Connections::new(settings, Arc::new(StreamMetrics::new()), notes)
    }

    /// A connection on `route` that is up with `symbols`; its orders are returned.
    fn up_with(c: &mut Connections, route: Route, symbols: &[&str]) -> (usize, mpsc::Receiver<Order>) {
        let (orders, received) = mpsc::channel(8);
        let id = c.next_id;
        c.next_id += 1;
        let streams = symbols.iter().map(|s| route.stream(s)).collect();
        c.slots.insert(
            id,
            Slot {
                route,
                streams,
                orders,
                up: false,
                replaces: None,
                retiring: false,
                confirmed: HashMap::new(),
                heard: None,
            },
        );
        c.up(id);
        (id, received)
    }

    fn wanted(symbols: &[&str]) -> BTreeSet<String> {
        symbols.iter().map(|s| s.to_string()).collect()
    }

    fn quote(live: &LivePrices, symbol: &str) {
        live.update(
            PriceSource::Book,
            Quote::single(symbol, Decimal::ONE, 0, Instant::now()),
        );
    }

    fn fresh(live: &LivePrices, symbol: &str) -> bool {
        live.fresh(symbol, PriceSource::Book, MAX_AGE).is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn a_resubscribed_symbols_old_quote_is_not_vouched_for_until_a_new_one_follows_the_confirmation() {
        let mut c = connections();
        let live = LivePrices::default();
        let (_, _mark_orders) = up_with(&mut c, Route::Market, &["BTCUSDT", "ETHUSDT"]);
        let (book, mut orders) = up_with(&mut c, Route::Public, &["BTCUSDT", "ETHUSDT"]);
        tokio::time::advance(Duration::from_secs(1)).await;
        quote(&live, "ETHUSDT");
        c.heard(book);
        c.vouch(&live);
        assert!(fresh(&live, "ETHUSDT"));
        // ETHUSDT is dropped, and wanted again much later; the connection stayed open and delivering.
        c.reconcile(&wanted(&["BTCUSDT"]));
        assert!(matches!(orders.try_recv(), Ok(Order::Change(s, false)) if s == ["ethusdt@bookTicker"]));
        tokio::time::advance(Duration::from_secs(600)).await;
        quote(&live, "BTCUSDT");
        c.heard(book);
        c.reconcile(&wanted(&["BTCUSDT", "ETHUSDT"]));
        assert!(matches!(orders.try_recv(), Ok(Order::Change(s, true)) if s == ["ethusdt@bookTicker"]));
        c.vouch(&live);
        assert!(!fresh(&live, "ETHUSDT"), "not vouched for before the venue confirms");
        // Confirmed: the quote from before is still not vouched for.
        tokio::time::advance(Duration::from_millis(20)).await;
        c.subscribed(book, vec!["ethusdt@bookTicker".into()], Instant::now());
        c.heard(book);
        c.vouch(&live);
        assert!(!fresh(&live, "ETHUSDT"), "the quote predates the confirmation");
        assert!(fresh(&live, "BTCUSDT"), "the others are vouched for as before");
        // A new event after the confirmation: fresh, and vouched for while the connection delivers.
        tokio::time::advance(Duration::from_millis(20)).await;
        quote(&live, "ETHUSDT");
        tokio::time::advance(MAX_AGE * 2).await;
        assert!(!fresh(&live, "ETHUSDT"));
        quote(&live, "BTCUSDT");
        c.heard(book);
        c.vouch(&live);
        assert!(fresh(&live, "ETHUSDT"));
    }
}
