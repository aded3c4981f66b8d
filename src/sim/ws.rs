//! The simulator's WebSockets, routed by path as Binance's since 2026-04:
//! `/public` (`bookTicker`), `/market` (`markPrice`), each as `/ws/<stream>`
//! or `/stream?streams=a/b` (combined: `{"stream", "data"}`), with
//! `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` at run time (answered
//! `{"result": .., "id"}`, refused `{"code", "msg", "id"}`); and
//! `/private/ws?listenKey=&events=A/B` for one account's user data (only the
//! event types named in `events`, when given), and `/private/stream?streams=k1/k2`
//! for several accounts' on one connection: listen keys are its streams
//! (`SUBSCRIBE`/`UNSUBSCRIBE` them at run time), each event wrapped
//! `{"stream": <listenKey>, "data": ..}`, and a key that expires (or was
//! never valid) gets its own `listenKeyExpired` while the others go on.
//! New connections per client address are limited (`ws_connections_limit`
//! per `ws_connections_window_seconds`): beyond it the upgrade is answered
//! 429 with `Retry-After`, counted in the meter. As inconvenient as
//! the venue: a stream on the wrong route is accepted and silent; more than
//! 200 streams or 10 incoming messages a second close the connection; the
//! server closes every connection after `ws_max_lifetime_seconds` and pings
//! every `ws_ping_seconds`; faults make sockets silent (`ws_silent`), slow
//! (`ws_delay_ms`) or drop them all (`POST /sim/stream/drop`), and leave a
//! `SUBSCRIBE` unanswered (`ws_subscribe_unanswered`), answered late
//! (`ws_subscribe_reply_delay_ms`) or refused (`ws_subscribe_refused`); an
//! expired listen key gets `listenKeyExpired` and then nothing.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, sleep, sleep_until};

use super::{Faults, Sim};

/// Streams one connection may carry.
pub const MAX_STREAMS: usize = 200;
/// Incoming messages a connection may send per second.
pub const MAX_INCOMING_PER_SECOND: u32 = 10;

/// `/public/ws/<stream>` and `/market/ws/<stream>`.
pub async fn single(
    ws: WebSocketUpgrade,
    State(sim): State<Arc<Sim>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path((route, stream)): Path<(String, String)>,
) -> Response {
    let Some(public) = route_is_public(&route) else {
        return (StatusCode::NOT_FOUND, "unknown route").into_response();
    };
    if let Err(refused) = admit(&sim, client) {
        return *refused;
    }
    let streams: BTreeSet<String> = [stream].into();
    upgrade(ws, sim, public, streams, false)
}

/// `/public/stream?streams=a/b` and `/market/stream?streams=...`.
pub async fn combined(
    ws: WebSocketUpgrade,
    State(sim): State<Arc<Sim>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(route): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let streams = names(&q, "streams");
    if route == "private" {
        return private_combined(ws, sim, client, streams, names(&q, "events"));
    }
    let Some(public) = route_is_public(&route) else {
        return (StatusCode::NOT_FOUND, "unknown route").into_response();
    };
    if let Err(refused) = admit(&sim, client) {
        return *refused;
    }
    upgrade(ws, sim, public, streams.unwrap_or_default(), true)
}

/// `a/b/c` of query parameter `name` (`None` when absent).
fn names(q: &HashMap<String, String>, name: &str) -> Option<BTreeSet<String>> {
    q.get(name)
        .map(|s| s.split('/').filter(|s| !s.is_empty()).map(String::from).collect())
}

/// Counts a new connection from `client` against the venue's limit; past it, a 429.
fn admit(sim: &Sim, client: SocketAddr) -> Result<(), Box<Response>> {
    sim.streams.admit(client.ip()).map_err(|wait| {
        let body = json!({"code": -1003, "msg": "Too many new connections; try again later."});
        let retry = wait.as_secs().max(1).to_string();
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, retry)],
            axum::Json(body),
        )
            .into_response()
            .into()
    })
}

fn route_is_public(route: &str) -> Option<bool> {
    match route {
        "public" => Some(true),
        "market" => Some(false),
        _ => None,
    }
}

fn upgrade(ws: WebSocketUpgrade, sim: Arc<Sim>, public: bool, streams: BTreeSet<String>, combined: bool) -> Response {
    if streams.len() > MAX_STREAMS {
        return (StatusCode::BAD_REQUEST, "too many streams").into_response();
    }
    sim.streams.connected(public);
    ws.on_upgrade(move |socket| market(socket, sim, public, streams, combined))
}

/// One market connection: events of its streams out, subscription changes in.
async fn market(socket: WebSocket, sim: Arc<Sim>, public: bool, mut streams: BTreeSet<String>, combined: bool) {
    let _open = sim.streams.opened();
    let mut events = sim.book().feed.market.subscribe();
    let mut drops = sim.streams.drops.subscribe();
    let (mut out, mut incoming) = socket.split();
    let closes_at = Instant::now() + sim.streams.lifetime;
    let mut ping = tokio::time::interval(sim.streams.ping);
    ping.tick().await;
    let mut rate = Rate::default();
    // Answers held back by `ws_subscribe_reply_delay_ms`, by when they are due.
    let mut late: VecDeque<(Instant, Value)> = VecDeque::new();
    loop {
        let late_due = late.front().map(|(due, _)| *due);
        tokio::select! {
            _ = sleep_until(closes_at) => {
                let _ = out.send(Message::Close(None)).await;
                return;
            }
            _ = drops.recv() => return,
            _ = ping.tick() => {
                if out.send(Message::Ping(Default::default())).await.is_err() { return; }
            }
            _ = sleep_until(late_due.unwrap_or(closes_at)), if late_due.is_some() => {
                let Some((_, answer)) = late.pop_front() else { continue };
                if out.send(Message::Text(Utf8Bytes::from(answer.to_string()))).await.is_err() { return; }
            }
            message = incoming.next() => {
                let Some(Ok(message)) = message else { return };
                if !rate.allow() {
                    return;
                }
                let Message::Text(text) = message else { continue };
                let Some((answer, how)) = control(&text, &mut streams, &sim.faults()) else { continue };
                if let Some(how) = how {
                    sim.streams.subscribe(how);
                }
                match answer {
                    Reply::Now(answer) => {
                        if out.send(Message::Text(Utf8Bytes::from(answer.to_string()))).await.is_err() { return; }
                    }
                    Reply::After(delay, answer) => {
                        let due = Instant::now() + delay;
                        let at = late.partition_point(|(d, _)| *d <= due);
                        late.insert(at, (due, answer));
                    }
                    Reply::Never => {}
                }
                if streams.len() > MAX_STREAMS {
                    return;
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let name = event.stream();
                if event.public() != public || !streams.contains(&name) {
                    continue;
                }
                let faults = sim.faults();
                if faults.ws_silent {
                    continue;
                }
                if faults.ws_delay_ms > 0 {
                    sleep(Duration::from_millis(faults.ws_delay_ms)).await;
                }
                let data = event.payload();
                let body = if combined { json!({"stream": name, "data": data}) } else { data };
                if out.send(Message::Text(Utf8Bytes::from(body.to_string()))).await.is_err() { return; }
            }
        }
    }
}

/// How a request is answered.
enum Reply {
    Now(Value),
    After(Duration, Value),
    Never,
}

/// `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`: what to answer (as the
/// faults say), and for a `SUBSCRIBE` how it was answered (for the meter).
fn control(text: &str, streams: &mut BTreeSet<String>, faults: &Faults) -> Option<(Reply, Option<&'static str>)> {
    let request: Value = serde_json::from_str(text).ok()?;
    let id = request["id"].clone();
    let params: Vec<String> = request["params"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let done = json!({"result": null, "id": id});
    Some(match request["method"].as_str()? {
        "SUBSCRIBE" if faults.ws_subscribe_refused => (
            Reply::Now(json!({"code": 2, "msg": "Invalid request: subscription refused (simulated)", "id": id})),
            Some("refused"),
        ),
        "SUBSCRIBE" => {
            streams.extend(params);
            if faults.ws_subscribe_unanswered {
                (Reply::Never, Some("unanswered"))
            } else if faults.ws_subscribe_reply_delay_ms > 0 {
                let delay = Duration::from_millis(faults.ws_subscribe_reply_delay_ms);
                (Reply::After(delay, done), Some("late"))
            } else {
                (Reply::Now(done), Some("answered"))
            }
        }
        "UNSUBSCRIBE" => {
            for p in &params {
                streams.remove(p);
            }
            (Reply::Now(done), None)
        }
        "LIST_SUBSCRIPTIONS" => (
            Reply::Now(json!({"result": streams.iter().collect::<Vec<_>>(), "id": id})),
            None,
        ),
        other => (
            Reply::Now(json!({
                "code": 2,
                "msg": format!("Invalid request: unknown variant {other}, expected one of SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS"),
                "id": id,
            })),
            None,
        ),
    })
}

/// Incoming messages per second, as the venue counts them.
#[derive(Default)]
struct Rate {
    second: Option<Instant>,
    count: u32,
}

impl Rate {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        match self.second {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => self.count += 1,
            _ => {
                self.second = Some(now);
                self.count = 1;
            }
        }
        self.count <= MAX_INCOMING_PER_SECOND
    }
}

/// `/private/ws?listenKey=`: one account's user data while its key is valid.
pub async fn private(
    ws: WebSocketUpgrade,
    State(sim): State<Arc<Sim>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let key = q.get("listenKey").cloned().unwrap_or_default();
    let Some(api_key) = sim.streams.listen_key_owner(&key) else {
        return (StatusCode::BAD_REQUEST, "invalid listen key").into_response();
    };
    if let Err(refused) = admit(&sim, client) {
        return *refused;
    }
    // `events=A/B`: only those event types are sent (all when not given).
    let wanted: Option<BTreeSet<String>> = q
        .get("events")
        .map(|e| e.split('/').filter(|e| !e.is_empty()).map(String::from).collect());
    sim.streams.connected_private();
    // Subscribed before the handshake completes: nothing the client causes once connected is missed.
    let events = sim.book().feed.user.subscribe();
    ws.on_upgrade(move |socket| user(socket, sim, key, api_key, wanted, events))
}

async fn user(
    socket: WebSocket,
    sim: Arc<Sim>,
    key: String,
    api_key: String,
    wanted: Option<BTreeSet<String>>,
    mut events: tokio::sync::broadcast::Receiver<super::feed::UserEvent>,
) {
    let _open = sim.streams.opened();
    let mut drops = sim.streams.drops.subscribe();
    let (mut out, mut incoming) = socket.split();
    let closes_at = Instant::now() + sim.streams.lifetime;
    let mut ping = tokio::time::interval(sim.streams.ping);
    ping.tick().await;
    let mut expiry_check = tokio::time::interval(Duration::from_millis(100));
    let mut expired = false;
    loop {
        tokio::select! {
            _ = sleep_until(closes_at) => {
                let _ = out.send(Message::Close(None)).await;
                return;
            }
            _ = drops.recv() => return,
            _ = ping.tick() => {
                if out.send(Message::Ping(Default::default())).await.is_err() { return; }
            }
            message = incoming.next() => {
                if !matches!(message, Some(Ok(_))) { return; }
            }
            _ = expiry_check.tick(), if !expired => {
                if sim.streams.listen_key_owner(&key).is_none() {
                    expired = true;
                    // The socket stays open; nothing more arrives on it.
                    let event = json!({"e": "listenKeyExpired", "E": crate::clock::now_ms().to_string(), "listenKey": key});
                    if out.send(Message::Text(Utf8Bytes::from(event.to_string()))).await.is_err() { return; }
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let faults = sim.faults();
                let unwanted = wanted
                    .as_ref()
                    .is_some_and(|w| !event.payload["e"].as_str().is_some_and(|e| w.contains(e)));
                if expired || event.api_key != api_key || faults.ws_silent || unwanted {
                    continue;
                }
                if faults.ws_delay_ms > 0 {
                    sleep(Duration::from_millis(faults.ws_delay_ms)).await;
                }
                if out.send(Message::Text(Utf8Bytes::from(event.payload.to_string()))).await.is_err() { return; }
            }
        }
    }
}

/// `/private/stream?streams=k1/k2&events=A/B`: several accounts' user data on one connection.
fn private_combined(
    ws: WebSocketUpgrade,
    sim: Arc<Sim>,
    client: SocketAddr,
    keys: Option<BTreeSet<String>>,
    wanted: Option<BTreeSet<String>>,
) -> Response {
    let keys = keys.unwrap_or_default();
    if keys.len() > MAX_STREAMS {
        return (StatusCode::BAD_REQUEST, "too many streams").into_response();
    }
    if let Err(refused) = admit(&sim, client) {
        return *refused;
    }
    sim.streams.connected_private();
    // Subscribed before the handshake completes: nothing the client causes once connected is missed.
    let events = sim.book().feed.user.subscribe();
    ws.on_upgrade(move |socket| users(socket, sim, keys, wanted, events))
}

/// The listen keys one combined private connection carries: each key's
/// owner (looked up when subscribed), and those already told they expired.
#[derive(Default)]
struct Keys {
    subscribed: BTreeSet<String>,
    /// API key → its listen key on this connection.
    by_owner: HashMap<String, String>,
    expired: BTreeSet<String>,
}

impl Keys {
    /// Brings the owners in line with `subscribed` after a (un)subscription.
    fn sync(&mut self, sim: &Sim) {
        self.by_owner.retain(|_, key| self.subscribed.contains(key));
        self.expired.retain(|key| self.subscribed.contains(key));
        let known: BTreeSet<&String> = self.by_owner.values().collect();
        let new: Vec<String> = self
            .subscribed
            .iter()
            .filter(|k| !known.contains(k) && !self.expired.contains(*k))
            .cloned()
            .collect();
        for key in new {
            if let Some(owner) = sim.streams.listen_key_owner(&key) {
                self.by_owner.insert(owner, key);
            }
            // An unknown key is told it expired at the next check.
        }
    }

    /// Keys no longer valid that were not told yet: marked told.
    fn newly_expired(&mut self, sim: &Sim) -> Vec<String> {
        let gone: Vec<String> = self
            .subscribed
            .iter()
            .filter(|k| !self.expired.contains(*k) && sim.streams.listen_key_owner(k).is_none())
            .cloned()
            .collect();
        for key in &gone {
            self.expired.insert(key.clone());
            self.by_owner.retain(|_, k| k != key);
        }
        gone
    }
}

async fn users(
    socket: WebSocket,
    sim: Arc<Sim>,
    subscribed: BTreeSet<String>,
    wanted: Option<BTreeSet<String>>,
    mut events: tokio::sync::broadcast::Receiver<super::feed::UserEvent>,
) {
    let _open = sim.streams.opened();
    let mut keys = Keys {
        subscribed,
        ..Keys::default()
    };
    keys.sync(&sim);
    let mut drops = sim.streams.drops.subscribe();
    let (mut out, mut incoming) = socket.split();
    let closes_at = Instant::now() + sim.streams.lifetime;
    let mut ping = tokio::time::interval(sim.streams.ping);
    ping.tick().await;
    let mut expiry_check = tokio::time::interval(Duration::from_millis(100));
    let mut rate = Rate::default();
    let mut late: VecDeque<(Instant, Value)> = VecDeque::new();
    loop {
        let late_due = late.front().map(|(due, _)| *due);
        tokio::select! {
            _ = sleep_until(closes_at) => {
                let _ = out.send(Message::Close(None)).await;
                return;
            }
            _ = drops.recv() => return,
            _ = ping.tick() => {
                if out.send(Message::Ping(Default::default())).await.is_err() { return; }
            }
            _ = sleep_until(late_due.unwrap_or(closes_at)), if late_due.is_some() => {
                let Some((_, answer)) = late.pop_front() else { continue };
                if out.send(Message::Text(Utf8Bytes::from(answer.to_string()))).await.is_err() { return; }
            }
            _ = expiry_check.tick() => {
                for key in keys.newly_expired(&sim) {
                    // That key's stream says nothing more; the connection and its other keys go on.
                    let data = json!({"e": "listenKeyExpired", "E": crate::clock::now_ms().to_string(), "listenKey": key});
                    let event = json!({"stream": key, "data": data});
                    if out.send(Message::Text(Utf8Bytes::from(event.to_string()))).await.is_err() { return; }
                }
            }
            message = incoming.next() => {
                let Some(Ok(message)) = message else { return };
                if !rate.allow() {
                    return;
                }
                let Message::Text(text) = message else { continue };
                let Some((answer, how)) = control(&text, &mut keys.subscribed, &sim.faults()) else { continue };
                keys.sync(&sim);
                if let Some(how) = how {
                    sim.streams.subscribe(how);
                }
                match answer {
                    Reply::Now(answer) => {
                        if out.send(Message::Text(Utf8Bytes::from(answer.to_string()))).await.is_err() { return; }
                    }
                    Reply::After(delay, answer) => {
                        let due = Instant::now() + delay;
                        let at = late.partition_point(|(d, _)| *d <= due);
                        late.insert(at, (due, answer));
                    }
                    Reply::Never => {}
                }
                if keys.subscribed.len() > MAX_STREAMS {
                    return;
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let Some(key) = keys.by_owner.get(&event.api_key) else { continue };
                let faults = sim.faults();
                let unwanted = wanted
                    .as_ref()
                    .is_some_and(|w| !event.payload["e"].as_str().is_some_and(|e| w.contains(e)));
                if faults.ws_silent || unwanted {
                    continue;
                }
                if faults.ws_delay_ms > 0 {
                    sleep(Duration::from_millis(faults.ws_delay_ms)).await;
                }
                let body = json!({"stream": key, "data": event.payload});
                if out.send(Message::Text(Utf8Bytes::from(body.to_string()))).await.is_err() { return; }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(faults: &Faults, streams: &mut BTreeSet<String>) -> (Reply, Option<&'static str>) {
        control(
            r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":7}"#,
            streams,
            faults,
        )
        .expect("a request")
    }

    #[test]
    fn subscribe_is_answered_like_binance_unless_a_fault_says_otherwise() {
        let mut streams = BTreeSet::new();
        let (reply, how) = answer(&Faults::default(), &mut streams);
        assert!(matches!(reply, Reply::Now(v) if v == json!({"result": null, "id": 7})));
        assert_eq!((how, streams.len()), (Some("answered"), 1));

        let mut streams = BTreeSet::new();
        let refused = Faults {
            ws_subscribe_refused: true,
            ..Faults::default()
        };
        let (reply, how) = answer(&refused, &mut streams);
        assert!(matches!(reply, Reply::Now(v) if v["code"] == 2 && v["id"] == 7 && v["msg"].is_string()));
        assert_eq!((how, streams.len()), (Some("refused"), 0), "nothing subscribed");

        let unanswered = Faults {
            ws_subscribe_unanswered: true,
            ..Faults::default()
        };
        let (reply, how) = answer(&unanswered, &mut streams);
        assert!(matches!(reply, Reply::Never));
        assert_eq!(
            (how, streams.len()),
            (Some("unanswered"), 1),
            "carried out all the same"
        );

        let late = Faults {
            ws_subscribe_reply_delay_ms: 800,
            ..Faults::default()
        };
        let (reply, how) = answer(&late, &mut streams);
        assert!(matches!(reply, Reply::After(d, _) if d == Duration::from_millis(800)));
        assert_eq!(how, Some("late"));

        let (reply, _) = control(r#"{"method":"NOPE","id":9}"#, &mut streams, &Faults::default()).unwrap();
        assert!(matches!(reply, Reply::Now(v) if v["code"] == 2 && v["id"] == 9));
    }
}
