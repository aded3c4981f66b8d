//! The simulator's WebSockets, routed by path as Binance's since 2026-04:
//! `/public` (`bookTicker`), `/market` (`markPrice`), each as `/ws/<stream>`
//! or `/stream?streams=a/b` (combined: `{"stream", "data"}`), with
//! `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` at run time; and
//! `/private/ws?listenKey=&events=A/B` for one account's user data (only the
//! event types named in `events`, when given). As inconvenient as
//! the venue: a stream on the wrong route is accepted and silent; more than
//! 200 streams or 10 incoming messages a second close the connection; the
//! server closes every connection after `ws_max_lifetime_seconds` and pings
//! every `ws_ping_seconds`; faults make sockets silent (`ws_silent`), slow
//! (`ws_delay_ms`) or drop them all (`POST /sim/stream/drop`); an expired
//! listen key gets `listenKeyExpired` and then nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, sleep, sleep_until};

use super::Sim;

/// Streams one connection may carry.
pub const MAX_STREAMS: usize = 200;
/// Incoming messages a connection may send per second.
pub const MAX_INCOMING_PER_SECOND: u32 = 10;

/// `/public/ws/<stream>` and `/market/ws/<stream>`.
pub async fn single(
    ws: WebSocketUpgrade,
    State(sim): State<Arc<Sim>>,
    Path((route, stream)): Path<(String, String)>,
) -> Response {
    let Some(public) = route_is_public(&route) else {
        return (StatusCode::NOT_FOUND, "unknown route").into_response();
    };
    let streams: BTreeSet<String> = [stream].into();
    upgrade(ws, sim, public, streams, false)
}

/// `/public/stream?streams=a/b` and `/market/stream?streams=...`.
pub async fn combined(
    ws: WebSocketUpgrade,
    State(sim): State<Arc<Sim>>,
    Path(route): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(public) = route_is_public(&route) else {
        return (StatusCode::NOT_FOUND, "unknown route").into_response();
    };
    let streams: BTreeSet<String> = q
        .get("streams")
        .map(|s| s.split('/').filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    upgrade(ws, sim, public, streams, true)
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
    let mut events = sim.book().feed.market.subscribe();
    let mut drops = sim.streams.drops.subscribe();
    let (mut out, mut incoming) = socket.split();
    let closes_at = Instant::now() + sim.streams.lifetime;
    let mut ping = tokio::time::interval(sim.streams.ping);
    ping.tick().await;
    let mut rate = Rate::default();
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
                let Some(Ok(message)) = message else { return };
                if !rate.allow() {
                    return;
                }
                if let Message::Text(text) = message
                    && let Some(answer) = control(&text, &mut streams)
                {
                    if out.send(Message::Text(Utf8Bytes::from(answer.to_string()))).await.is_err() { return; }
                    if streams.len() > MAX_STREAMS {
                        return;
                    }
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

/// `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`: the answer to send back.
fn control(text: &str, streams: &mut BTreeSet<String>) -> Option<Value> {
    let request: Value = serde_json::from_str(text).ok()?;
    let id = request["id"].clone();
    let params: Vec<String> = request["params"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Some(match request["method"].as_str()? {
        "SUBSCRIBE" => {
            streams.extend(params);
            json!({"result": null, "id": id})
        }
        "UNSUBSCRIBE" => {
            for p in &params {
                streams.remove(p);
            }
            json!({"result": null, "id": id})
        }
        "LIST_SUBSCRIPTIONS" => json!({"result": streams.iter().collect::<Vec<_>>(), "id": id}),
        _ => json!({"error": {"code": 2, "msg": "Invalid request: unknown method"}, "id": id}),
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
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let key = q.get("listenKey").cloned().unwrap_or_default();
    let Some(api_key) = sim.streams.listen_key_owner(&key) else {
        return (StatusCode::BAD_REQUEST, "invalid listen key").into_response();
    };
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
