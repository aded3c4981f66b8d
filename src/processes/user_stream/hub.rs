//! Which account's listen key rides which connection, and the task that
//! serves one connection. Up to `exchange.user_streams_per_connection` keys
//! share a connection (Binance's combined stream: `/private/stream?streams=`
//! with the keys known when it opens, `SUBSCRIBE` for those that come
//! later); with 1, each account has its own `/private/ws?listenKey=`
//! connection. Events are routed to their account by the listen key the
//! venue names in `stream`. An account's trouble (its key expired, a
//! refused `SUBSCRIBE`, its events backing up) is told to that account
//! alone; a connection's end (closed, silent, planned) to every account on it.
//!
//! The hub itself never awaits: it only places keys and passes orders on,
//! so it runs inside the process's loop. Each connection is its own task,
//! opened only after the service's connection pacer gives its turn; keys that
//! arrive while it waits go into its URL.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::exchange::VenueError;
use crate::exchange::binance::ws::{MAX_STREAMS_PER_CONNECTION, Socket, StreamEvent, Target, open_counted, pace};
use crate::processes::platform::StreamSettings;

/// The venue pings every 3 minutes; a user stream can be quiet far longer
/// than a market one, so we ping it ourselves this often and count the pong.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A `SUBSCRIBE` of listen keys not answered this long is given up on (its accounts try again).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection gathers keys to subscribe in one message.
const SUBSCRIBE_BATCH: Duration = Duration::from_millis(200);
/// Events waiting for one account; beyond it the account lets go and reconciles.
pub const EVENTS_WAITING: usize = 1024;

/// What a connection tells one account, in order with its events.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // nearly every delivery is an event
pub enum Delivery {
    /// The account's listen key is subscribed: its events come from now on.
    Subscribed,
    Event(StreamEvent),
}

/// Why an account's stream stopped (sent apart from its events, never blocked by them).
#[derive(Debug)]
pub struct Lost {
    pub reason: &'static str,
    pub why: String,
}

/// Where an account's deliveries go.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub events: mpsc::Sender<Delivery>,
    pub lost: mpsc::UnboundedSender<Lost>,
}

impl Inbox {
    fn lose(&self, reason: &'static str, why: impl Into<String>) {
        let _ = self.lost.send(Lost {
            reason,
            why: why.into(),
        });
    }
}

/// What an account asks of the hub.
pub enum Request {
    /// Carry `key` for `account` on some connection.
    Attach { account: String, key: String, inbox: Inbox },
    /// Stop carrying the account's key (unsubscribed; a connection left empty closes).
    Detach { account: String },
}

/// What the hub tells a connection.
enum Order {
    Add { key: String, inbox: Inbox },
    Remove { key: String },
}

/// A connection's end, told to the hub.
pub struct Down(usize);

struct Conn {
    orders: mpsc::UnboundedSender<Order>,
    keys: usize,
}

/// Places listen keys on connections.
pub struct Hub {
    settings: StreamSettings,
    per_connection: usize,
    conns: HashMap<usize, Conn>,
    /// account → (connection, key).
    placed: HashMap<String, (usize, String)>,
    next_id: usize,
    downs: mpsc::UnboundedSender<Down>,
}

impl Hub {
    pub fn new(settings: StreamSettings, downs: mpsc::UnboundedSender<Down>) -> Self {
        let per_connection = settings
            .user_streams_per_connection
            .clamp(1, MAX_STREAMS_PER_CONNECTION);
        Hub {
            settings,
            per_connection,
            conns: HashMap::new(),
            placed: HashMap::new(),
            next_id: 0,
            downs,
        }
    }

    pub fn handle(&mut self, request: Request) {
        match request {
            Request::Attach { account, key, inbox } => self.attach(account, key, inbox),
            Request::Detach { account } => self.detach(&account),
        }
    }

    /// On the fullest connection with room (few connections), else a new one.
    fn attach(&mut self, account: String, key: String, inbox: Inbox) {
        self.detach(&account);
        loop {
            let room = self
                .conns
                .iter()
                .filter(|(_, c)| c.keys < self.per_connection)
                .max_by_key(|(id, c)| (c.keys, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            let id = room.unwrap_or_else(|| self.open());
            let Some(conn) = self.conns.get_mut(&id) else { return };
            let order = Order::Add {
                key: key.clone(),
                inbox: inbox.clone(),
            };
            if conn.orders.send(order).is_ok() {
                conn.keys += 1;
                self.placed.insert(account, (id, key));
                return;
            }
            // It ended and its note is on the way: forget it now, place again.
            self.down(Down(id));
        }
    }

    fn detach(&mut self, account: &str) {
        let Some((id, key)) = self.placed.remove(account) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.keys = conn.keys.saturating_sub(1);
        if conn.keys == 0 {
            // Dropping its orders closes it.
            self.conns.remove(&id);
        } else {
            let _ = conn.orders.send(Order::Remove { key });
        }
    }

    fn open(&mut self) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let (orders, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve(
            id,
            self.settings.clone(),
            self.per_connection,
            rx,
            self.downs.clone(),
        ));
        self.conns.insert(id, Conn { orders, keys: 0 });
        id
    }

    /// A connection ended (it told its accounts): nothing is placed on it any more.
    pub fn down(&mut self, Down(id): Down) {
        self.conns.remove(&id);
        self.placed.retain(|_, (conn, _)| *conn != id);
    }
}

/// One account's key on a connection.
struct Route {
    inbox: Inbox,
    subscribed: bool,
}

/// A connection's keys and the `SUBSCRIBE`s not answered yet.
struct Routes {
    by_key: HashMap<String, Route>,
    /// Request id → (keys, when sent).
    pending: HashMap<u64, (Vec<String>, Instant)>,
    settings: StreamSettings,
}

impl Routes {
    fn subscribed(&mut self, keys: &[String]) {
        for key in keys {
            if let Some(route) = self.by_key.get_mut(key)
                && !route.subscribed
            {
                route.subscribed = true;
                self.settings.connections.listen_keys(1);
                let _ = route.inbox.events.try_send(Delivery::Subscribed);
            }
        }
    }

    /// The key's account is told why, and the key leaves this connection.
    fn lose(&mut self, key: &str, reason: &'static str, why: &str) {
        if let Some(route) = self.by_key.remove(key) {
            if route.subscribed {
                self.settings.connections.listen_keys(-1);
            }
            route.inbox.lose(reason, why);
        }
    }

    fn lose_all(&mut self, reason: &'static str, why: &str) {
        let keys: Vec<String> = self.by_key.keys().cloned().collect();
        for key in keys {
            self.lose(&key, reason, why);
        }
    }

    /// An event for `key` (or the only key, on a one-account connection).
    fn deliver(&mut self, stream: Option<String>, event: StreamEvent) {
        let key = match stream {
            Some(key) => key,
            None if self.by_key.len() == 1 => self.by_key.keys().next().cloned().unwrap_or_default(),
            None => return,
        };
        let Some(route) = self.by_key.get(&key) else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = route.inbox.events.try_send(Delivery::Event(event)) {
            // That account's events back up (its store is slow): it lets go and
            // reconciles; the others on this connection are not held up.
            self.lose(&key, "error", "events backed up");
        }
    }

    fn oldest_pending(&self) -> Option<Instant> {
        self.pending.values().map(|(_, at)| *at + ANSWER_TIMEOUT).min()
    }
}

/// Serves one connection: waits for its turn, opens with the keys it has by
/// then, and carries keys until it ends or has none left (the hub drops it).
async fn serve(
    id: usize,
    settings: StreamSettings,
    per_connection: usize,
    mut orders: mpsc::UnboundedReceiver<Order>,
    downs: mpsc::UnboundedSender<Down>,
) {
    let mut routes = Routes {
        by_key: HashMap::new(),
        pending: HashMap::new(),
        settings: settings.clone(),
    };
    let ended = run(&settings, per_connection, &mut orders, &mut routes).await;
    let (reason, why) = ended.unwrap_or(("closed", "closed".into()));
    // From now on the hub's sends fail and it places keys elsewhere; those sent meanwhile are told.
    orders.close();
    routes.lose_all(reason, &why);
    while let Ok(order) = orders.try_recv() {
        if let Order::Add { inbox, .. } = order {
            inbox.lose(reason, why.clone());
        }
    }
    let _ = downs.send(Down(id));
}

/// `None`: the hub let it go (no keys left, or the run ends).
async fn run(
    settings: &StreamSettings,
    per_connection: usize,
    orders: &mut mpsc::UnboundedReceiver<Order>,
    routes: &mut Routes,
) -> Option<(&'static str, String)> {
    // Nothing to open for until the first key.
    let first = orders.recv().await?;
    pace(&settings.pacer, &settings.connections).await;
    let mut queued = vec![first];
    while let Ok(order) = orders.try_recv() {
        queued.push(order);
    }
    for order in queued {
        match order {
            Order::Add { key, inbox } => {
                routes.by_key.insert(
                    key,
                    Route {
                        inbox,
                        subscribed: false,
                    },
                );
            }
            Order::Remove { key } => {
                routes.by_key.remove(&key);
            }
        }
    }
    let keys: Vec<String> = routes.by_key.keys().cloned().collect();
    if keys.is_empty() {
        return None;
    }
    let target = match per_connection {
        1 => Target::User(&keys[0]),
        _ => Target::Users(&keys),
    };
    let mut socket = match open_counted(&settings.base_url, target, &settings.connections, "user").await {
        Ok(socket) => socket,
        Err(e @ VenueError::RateLimited { .. }) => return Some(("error", format!("connection refused: {e}"))),
        Err(e) => return Some(("error", e.to_string())),
    };
    // The keys of its URL are subscribed from the start.
    routes.subscribed(&keys);
    let ended = carry(settings, orders, routes, &mut socket).await;
    socket.close().await;
    ended
}

async fn carry(
    settings: &StreamSettings,
    orders: &mut mpsc::UnboundedReceiver<Order>,
    routes: &mut Routes,
    socket: &mut Socket,
) -> Option<(&'static str, String)> {
    let renew_at = socket.opened + settings.planned_reconnect();
    let mut ping = tokio::time::interval(PING_EVERY.min(settings.silence.max(Duration::from_secs(1)) / 2));
    loop {
        let silent_at = socket.last_message + settings.silence.max(PING_EVERY * 2);
        let answer_due = routes.oldest_pending();
        tokio::select! {
            order = orders.recv() => match order {
                None => return None,
                Some(Order::Remove { key }) => {
                    if let Some(route) = routes.by_key.remove(&key) {
                        if route.subscribed {
                            settings.connections.listen_keys(-1);
                        }
                        if let Err(e) = socket.change(&[key], false).await {
                            return Some(("closed", e.to_string()));
                        }
                    }
                }
                Some(Order::Add { key, inbox }) => {
                    // Keys arriving together (many accounts setting up) go in one SUBSCRIBE:
                    // the venue closes a connection sent more than 10 messages a second.
                    tokio::time::sleep(SUBSCRIBE_BATCH).await;
                    let mut add = vec![(key, inbox)];
                    while let Ok(order) = orders.try_recv() {
                        match order {
                            Order::Add { key, inbox } => add.push((key, inbox)),
                            Order::Remove { key } => {
                                add.retain(|(k, _)| *k != key);
                                if let Some(route) = routes.by_key.remove(&key) {
                                    if route.subscribed {
                                        settings.connections.listen_keys(-1);
                                    }
                                    if let Err(e) = socket.change(&[key], false).await {
                                        return Some(("closed", e.to_string()));
                                    }
                                }
                            }
                        }
                    }
                    let keys: Vec<String> = add.iter().map(|(k, _)| k.clone()).collect();
                    for (key, inbox) in add {
                        routes.by_key.insert(key, Route { inbox, subscribed: false });
                    }
                    match socket.change(&keys, true).await {
                        Ok(Some(request)) => { routes.pending.insert(request, (keys, Instant::now())); }
                        Ok(None) => {}
                        Err(e) => return Some(("closed", e.to_string())),
                    }
                }
            },
            message = socket.next_routed() => match message {
                Ok(Some((_, StreamEvent::Reply { id, error }))) => {
                    let Some((keys, _)) = routes.pending.remove(&id) else { continue };
                    match error {
                        None => routes.subscribed(&keys),
                        Some(why) => {
                            // Refused keys only (most likely no longer valid): their accounts make new ones.
                            for key in &keys {
                                routes.lose(key, "listen_key", &format!("SUBSCRIBE refused: {why}"));
                            }
                        }
                    }
                }
                Ok(Some((stream, event))) => routes.deliver(stream, event),
                Ok(None) => {}
                Err(e) => return Some(("closed", e.to_string())),
            },
            _ = sleep_until(answer_due.unwrap_or(renew_at)), if answer_due.is_some() => {
                let now = Instant::now();
                let late: Vec<u64> = routes
                    .pending
                    .iter()
                    .filter(|(_, (_, at))| now.duration_since(*at) >= ANSWER_TIMEOUT)
                    .map(|(id, _)| *id)
                    .collect();
                for id in late {
                    if let Some((keys, _)) = routes.pending.remove(&id) {
                        for key in &keys {
                            routes.lose(key, "error", "SUBSCRIBE not answered");
                        }
                    }
                }
            }
            _ = sleep_until(renew_at) => {
                return Some(("planned", "ahead of the venue's 24-hour close".into()));
            }
            _ = sleep_until(silent_at) => {
                return Some(("silent", "nothing received, not even a pong".into()));
            }
            _ = ping.tick() => {
                if let Err(e) = socket.ping().await {
                    return Some(("closed", e.to_string()));
                }
            }
        }
    }
}
