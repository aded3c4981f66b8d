//! Binance's WebSockets, as the client sees them: routed URLs (`/public`
//! for `bookTicker`, `/market` for `markPrice`, `/private` for user data),
//! combined streams (`{"stream", "data"}`), `SUBSCRIBE`/`UNSUBSCRIBE` at run
//! time (one message per change, paced to ≤ 10 a second, each with an id the
//! venue's answer names), and the payloads decoded into quotes, account
//! events and those answers. Pings are answered by the socket
//! as it reads; silence is for the caller to time. User data comes one
//! account per connection (`/private/ws?listenKey=`) or several accounts'
//! listen keys on one combined connection (`/private/stream?streams=k1/k2`,
//! more by `SUBSCRIBE`), each event naming its listen key in `stream`.
//! [`open_paced`] opens any of them at the venue's connection pace and
//! keeps it counted while it lives.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use std::sync::Arc;

use super::pacer::ConnectPacer;
use crate::domain::{AlgoKind, AlgoOrder, AlgoStatus, Fill, OrderSide, Position, Quote, WorkingType};
use crate::exchange::VenueError;
use crate::telemetry::stream::StreamConnections;

/// The user-data events we ask for.
const USER_EVENTS: &str = "ORDER_TRADE_UPDATE/ACCOUNT_UPDATE/ALGO_UPDATE";

/// At most this many streams ride one connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 200;
/// Messages a connection may send per second.
const MAX_SENT_PER_SECOND: usize = 10;

/// Which routed path a market stream lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `bookTicker`: best bid and ask in real time.
    Public,
    /// `markPrice@1s`.
    Market,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Public => "public",
            Route::Market => "market",
        }
    }

    /// The stream name of `symbol` on this route.
    pub fn stream(self, symbol: &str) -> String {
        match self {
            Route::Public => format!("{}@bookTicker", symbol.to_lowercase()),
            Route::Market => format!("{}@markPrice@1s", symbol.to_lowercase()),
        }
    }

    /// The symbol a stream name is about (`btcusdt@bookTicker` → `BTCUSDT`).
    pub fn symbol(stream: &str) -> String {
        stream.split('@').next().unwrap_or_default().to_uppercase()
    }
}

/// What a stream delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Best bid and ask (`bookTicker`).
    Book(Quote),
    /// The mark price (`markPriceUpdate`).
    Mark(Quote),
    /// A fill of one of the account's orders (`ORDER_TRADE_UPDATE`, execution `TRADE`).
    Fill { fill: Fill, client_order_id: String },
    /// An order of the account changed state without a fill (accepted, expired, ...).
    Order { client_order_id: String, status: String },
    /// Positions that changed (`ACCOUNT_UPDATE`).
    Positions(Vec<Position>),
    /// A conditional order changed state (`ALGO_UPDATE`); `reject_reason` when the venue gave one.
    Algo {
        order: AlgoOrder,
        reject_reason: Option<String>,
    },
    /// The listen key expired: nothing more will arrive on this socket.
    ListenKeyExpired,
    /// The venue's answer to our request `id` (`SUBSCRIBE`, ...): `{"result": .., "id"}`,
    /// or `error` when it refused (`{"code", "msg", "id"}`).
    Reply { id: u64, error: Option<String> },
    /// Venue time of the event, for lag (`E`), when it carried nothing else we use.
    Other,
}

/// One WebSocket connection to the venue.
pub struct Socket {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    sent: VecDeque<Instant>,
    next_id: u64,
    /// When the last message (of any kind) arrived.
    pub last_message: Instant,
    pub opened: Instant,
    /// Keeps the connection counted as open while it lives (see [`open_paced`]).
    counted: Option<Counted>,
}

/// Where a new connection goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A combined market connection on a route, with its first streams.
    Market(Route, &'a [String]),
    /// One account's user data, by its listen key.
    User(&'a str),
    /// Several accounts' user data on one combined connection, by listen key.
    Users(&'a [String]),
}

impl Target<'_> {
    fn url(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Target::Market(route, streams) => format!("{base}/{}/stream?streams={}", route.path(), streams.join("/")),
            Target::User(key) => format!("{base}/private/ws?listenKey={key}&events={USER_EVENTS}"),
            Target::Users(keys) => format!("{base}/private/stream?streams={}&events={USER_EVENTS}", keys.join("/")),
        }
    }
}

/// An open connection counted in `script_manager_stream_connections` until dropped.
struct Counted {
    metrics: Arc<StreamConnections>,
    stream: &'static str,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.open(self.stream, -1);
    }
}

/// Opens a connection to `target` once the pacer gives its turn (every new
/// connection of the service takes one), counting the outcome under
/// `stream` (see [`open_counted`]).
pub async fn open_paced(
    base: &str,
    target: Target<'_>,
    pacer: &ConnectPacer,
    metrics: &Arc<StreamConnections>,
    stream: &'static str,
) -> Result<Socket, VenueError> {
    pace(pacer, metrics).await;
    open_counted(base, target, metrics, stream).await
}

/// Waits for the pacer's turn, counting a wait.
pub async fn pace(pacer: &ConnectPacer, metrics: &StreamConnections) {
    if !pacer.acquire().await.is_zero() {
        metrics.paced();
    }
}

/// Opens a connection (its turn taken already: [`pace`]) counting the
/// outcome under `stream`: opened, refused (the venue's 429: too many new
/// connections) or failed. The socket counts as open until dropped or closed.
pub async fn open_counted(
    base: &str,
    target: Target<'_>,
    metrics: &Arc<StreamConnections>,
    stream: &'static str,
) -> Result<Socket, VenueError> {
    match Socket::open(&target.url(base)).await {
        Ok(mut socket) => {
            metrics.connect(stream, "opened");
            metrics.open(stream, 1);
            socket.counted = Some(Counted {
                metrics: metrics.clone(),
                stream,
            });
            Ok(socket)
        }
        Err(e) => {
            let result = match e {
                VenueError::RateLimited { .. } => "refused",
                _ => "failed",
            };
            metrics.connect(stream, result);
            Err(e)
        }
    }
}

impl Socket {
    /// A combined market connection on `route` carrying `streams` from the start.
    /// (Unpaced: the service opens connections with [`open_paced`].)
    pub async fn market(base: &str, route: Route, streams: &[String]) -> Result<Socket, VenueError> {
        Self::open(&Target::Market(route, streams).url(base)).await
    }

    /// One account's user-data connection (unpaced: see [`open_paced`]).
    pub async fn user(base: &str, listen_key: &str) -> Result<Socket, VenueError> {
        Self::open(&Target::User(listen_key).url(base)).await
    }

    async fn open(url: &str) -> Result<Socket, VenueError> {
        crate::net::install_crypto();
        // Never log the URL: a user stream's carries its listen key.
        let (inner, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| {
                refused(&e).unwrap_or_else(|| VenueError::Transient(format!("websocket connect: {}", describe(&e))))
            })?;
        let now = Instant::now();
        Ok(Socket {
            inner,
            sent: VecDeque::new(),
            next_id: 1,
            last_message: now,
            opened: now,
            counted: None,
        })
    }

    /// Adds streams (`subscribe`) or removes them, in one paced message.
    /// `Some(id)`: the request's id, which the venue's [`StreamEvent::Reply`] names.
    pub async fn change(&mut self, streams: &[String], subscribe: bool) -> Result<Option<u64>, VenueError> {
        if streams.is_empty() {
            return Ok(None);
        }
        self.pace().await;
        let method = if subscribe { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
        let id = self.next_id;
        let request = json!({"method": method, "params": streams, "id": id});
        self.next_id += 1;
        self.inner
            .send(Message::Text(request.to_string().into()))
            .await
            .map_err(|e| VenueError::Transient(format!("websocket send: {}", describe(&e))))?;
        Ok(Some(id))
    }

    /// Waits until one more message fits the venue's limit of sent messages per second.
    async fn pace(&mut self) {
        let now = Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= MAX_SENT_PER_SECOND
            && let Some(first) = self.sent.front()
        {
            tokio::time::sleep_until(*first + Duration::from_secs(1)).await;
            self.sent.pop_front();
        }
        self.sent.push_back(Instant::now());
    }

    /// The next message, decoded. `Ok(None)`: nothing for us (a ping, what
    /// does not parse); `Err`: the connection is gone.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, VenueError> {
        Ok(self.next_routed().await?.map(|(_, event)| event))
    }

    /// As [`next`](Self::next), with the stream the event came on (a
    /// combined connection's `stream`: a user stream's is its listen key).
    pub async fn next_routed(&mut self) -> Result<Option<(Option<String>, StreamEvent)>, VenueError> {
        let message = match self.inner.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(VenueError::Transient(format!("websocket read: {}", describe(&e)))),
            None => return Err(VenueError::Transient("websocket closed".into())),
        };
        self.last_message = Instant::now();
        match message {
            Message::Text(text) => Ok(decode_routed(text.as_str(), self.last_message)),
            Message::Close(_) => Err(VenueError::Transient("websocket closed by the venue".into())),
            _ => Ok(None),
        }
    }

    /// A ping of our own: the venue's pong is the sign of life of a quiet stream.
    pub async fn ping(&mut self) -> Result<(), VenueError> {
        // The venue counts every message it receives against the per-second limit.
        self.pace().await;
        self.inner
            .send(Message::Ping(Default::default()))
            .await
            .map_err(|e| VenueError::Transient(format!("websocket send: {}", describe(&e))))
    }

    /// Closes politely (the replacement is up, or we are stopping).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.close(None)).await;
    }
}

/// The venue's refusal of a new connection (429: too many new connections from this address).
fn refused(e: &tokio_tungstenite::tungstenite::Error) -> Option<VenueError> {
    let tokio_tungstenite::tungstenite::Error::Http(response) = e else {
        return None;
    };
    (response.status().as_u16() == 429).then(|| {
        let seconds = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        VenueError::RateLimited {
            retry_after: Duration::from_secs(seconds),
        }
    })
}

/// An error without the URL (a user stream's carries its listen key).
fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(response) => format!("HTTP {}", response.status()),
        E::Url(_) => "bad URL".into(),
        other => other.to_string(),
    }
}

fn dec(v: &Value) -> Option<Decimal> {
    v.as_str().and_then(|s| Decimal::from_str(s).ok())
}

/// One message's payload as an event (a combined stream's is under `data`).
pub fn decode(text: &str, received: Instant) -> Option<StreamEvent> {
    decode_routed(text, received).map(|(_, event)| event)
}

/// One message as an event and the stream it came on (`stream` of a combined
/// connection's `{"stream", "data"}`; `None` on a single-stream connection).
pub fn decode_routed(text: &str, received: Instant) -> Option<(Option<String>, StreamEvent)> {
    let value: Value = serde_json::from_str(text).ok()?;
    if let Some(reply) = reply(&value) {
        return Some((None, reply));
    }
    let stream = value["stream"].as_str().map(String::from);
    event(&value, received).map(|event| (stream, event))
}

fn event(value: &Value, received: Instant) -> Option<StreamEvent> {
    let data = if value.get("data").is_some() {
        &value["data"]
    } else {
        value
    };
    let time = data["E"]
        .as_i64()
        .or_else(|| data["E"].as_str()?.parse().ok())
        .unwrap_or(0);
    Some(match data["e"].as_str()? {
        "bookTicker" => StreamEvent::Book(Quote {
            symbol: data["s"].as_str()?.to_string(),
            bid: dec(&data["b"])?,
            ask: dec(&data["a"])?,
            time_ms: time,
            received,
        }),
        "markPriceUpdate" => StreamEvent::Mark(Quote::single(data["s"].as_str()?, dec(&data["p"])?, time, received)),
        "ORDER_TRADE_UPDATE" => {
            let o = &data["o"];
            let client_order_id = o["c"].as_str()?.to_string();
            if o["x"] != "TRADE" {
                return Some(StreamEvent::Order {
                    client_order_id,
                    status: o["X"].as_str().unwrap_or("").to_string(),
                });
            }
            StreamEvent::Fill {
                fill: Fill {
                    symbol: o["s"].as_str()?.to_string(),
                    id: o["t"].as_u64()?,
                    order_id: o["i"].as_u64()?,
                    side: OrderSide::parse(o["S"].as_str()?)?,
                    price: dec(&o["L"])?,
                    qty: dec(&o["l"])?,
                    realized_pnl: dec(&o["rp"]).unwrap_or_default(),
                    commission: dec(&o["n"]).unwrap_or_default(),
                    time_ms: o["T"].as_i64().unwrap_or(time),
                },
                client_order_id,
            }
        }
        "ACCOUNT_UPDATE" => StreamEvent::Positions(
            data["a"]["P"]
                .as_array()?
                .iter()
                .filter_map(|p| {
                    let (amount, entry) = (dec(&p["pa"])?, dec(&p["ep"])?);
                    let unrealized = dec(&p["up"]).unwrap_or_default();
                    // The event has no mark price; the one its unrealized PnL implies.
                    let mark = match amount.is_zero() {
                        true => entry,
                        false => entry + unrealized / amount,
                    };
                    Some(Position {
                        symbol: p["s"].as_str()?.to_string(),
                        amount,
                        entry_price: entry,
                        mark_price: mark.round_dp(8),
                        unrealized_pnl: unrealized,
                        // Ordered by the transaction time; `E` is when the event went out.
                        update_time_ms: data["T"].as_i64().unwrap_or(time),
                    })
                })
                .collect(),
        ),
        "ALGO_UPDATE" => algo_update(data, time)?,
        "listenKeyExpired" => StreamEvent::ListenKeyExpired,
        _ => StreamEvent::Other,
    })
}

/// An answer to one of our requests: it has our `id` and no event (`e`, `data`).
/// Refusals come as `{"code", "msg", "id"}` (or `{"error": {"code", "msg"}, "id"}`).
fn reply(value: &Value) -> Option<StreamEvent> {
    if value.get("e").is_some() || value.get("data").is_some() {
        return None;
    }
    let id = value.get("id")?.as_u64()?;
    let refusal = value.get("error").unwrap_or(value);
    let error = refusal
        .get("code")
        .map(|code| format!("{code}: {}", refusal["msg"].as_str().unwrap_or("")));
    Some(StreamEvent::Reply { id, error })
}

/// `ALGO_UPDATE`: the order under `o` (`caid`, `aid`, `X`, `ai` once triggered, `rm` a reason).
fn algo_update(data: &Value, time: i64) -> Option<StreamEvent> {
    let o = &data["o"];
    let id = |v: &Value| v.as_u64().or_else(|| v.as_str()?.parse().ok());
    let flag = super::wire::flag;
    let reason = o["rm"].as_str().filter(|r| !r.is_empty()).map(String::from);
    Some(StreamEvent::Algo {
        order: AlgoOrder {
            algo_id: id(&o["aid"])?,
            client_algo_id: o["caid"].as_str()?.to_string(),
            symbol: o["s"].as_str()?.to_string(),
            side: OrderSide::parse(o["S"].as_str()?)?,
            kind: AlgoKind::parse(o["o"].as_str().unwrap_or("")),
            status: AlgoStatus::parse(o["X"].as_str()?),
            trigger_price: dec(&o["tp"]).unwrap_or_default(),
            working_type: o["wt"].as_str().and_then(WorkingType::parse).unwrap_or_default(),
            close_position: flag(&o["cp"]),
            reduce_only: flag(&o["R"]),
            price_protect: flag(&o["pP"]),
            quantity: dec(&o["q"]).unwrap_or_default(),
            order_id: super::wire::order_id(&o["ai"]),
            create_time_ms: 0,
            update_time_ms: data["T"].as_i64().unwrap_or(time),
            trigger_time_ms: o["tt"].as_i64().unwrap_or(0),
        },
        reject_reason: reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_binance_payloads() {
        let now = Instant::now();
        let book = r#"{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1,"E":1700000000000,"T":1,"s":"BTCUSDT","b":"99.5","B":"1","a":"100.5","A":"1"}}"#;
        match decode(book, now) {
            Some(StreamEvent::Book(q)) => {
                assert_eq!(
                    (q.symbol.as_str(), q.bid, q.ask),
                    ("BTCUSDT", Decimal::new(995, 1), Decimal::new(1005, 1))
                );
                assert_eq!(q.time_ms, 1_700_000_000_000);
            }
            other => panic!("{other:?}"),
        }
        let expired = r#"{"e":"listenKeyExpired","E":"1700000000000","listenKey":"k"}"#;
        assert_eq!(decode(expired, now), Some(StreamEvent::ListenKeyExpired));
        let fill = r#"{"e":"ORDER_TRADE_UPDATE","E":5,"T":5,"o":{"s":"ETHUSDT","c":"sm-1-1","S":"SELL","x":"TRADE","X":"FILLED","i":7,"l":"0.5","L":"4000","n":"0.8","T":5,"t":9,"rp":"12"}}"#;
        match decode(fill, now) {
            Some(StreamEvent::Fill { fill, client_order_id }) => {
                assert_eq!((fill.id, fill.order_id, fill.qty), (9, 7, Decimal::new(5, 1)));
                assert_eq!(client_order_id, "sm-1-1");
            }
            other => panic!("{other:?}"),
        }
        let account = r#"{"e":"ACCOUNT_UPDATE","E":8,"T":6,"a":{"m":"ORDER","B":[],"P":[{"s":"ETHUSDT","pa":"-0.5","ep":"4000","up":"-5","ps":"BOTH"}]}}"#;
        match decode(account, now) {
            Some(StreamEvent::Positions(p)) => {
                assert_eq!(
                    (p[0].amount, p[0].mark_price),
                    (Decimal::new(-5, 1), Decimal::from(4010))
                );
                assert_eq!(p[0].update_time_ms, 6, "the transaction time orders positions");
            }
            other => panic!("{other:?}"),
        }
        let algo = r#"{"e":"ALGO_UPDATE","E":7,"T":7,"o":{"caid":"sm-sl-3","aid":41,"at":"CONDITIONAL","o":"STOP_MARKET","s":"BTCUSDT","S":"SELL","ps":"BOTH","q":"0","X":"TRIGGERED","ai":"9001","tp":"95000.1","wt":"MARK_PRICE","cp":true,"pP":false,"R":false,"tt":6,"rm":""}}"#;
        match decode(algo, now) {
            Some(StreamEvent::Algo { order, reject_reason }) => {
                assert_eq!((order.algo_id, order.client_algo_id.as_str()), (41, "sm-sl-3"));
                assert_eq!((order.status, order.order_id), (AlgoStatus::Triggered, Some(9001)));
                assert_eq!(order.trigger_price, Decimal::new(950_001, 1));
                assert!(order.close_position && order.working_type == WorkingType::MarkPrice);
                assert_eq!(reject_reason, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode("not json", now), None);
        let routed = r#"{"stream":"key-b","data":{"e":"listenKeyExpired","E":1,"listenKey":"key-b"}}"#;
        assert_eq!(
            decode_routed(routed, now),
            Some((Some("key-b".to_string()), StreamEvent::ListenKeyExpired)),
            "a combined user stream's event names its listen key"
        );
        assert_eq!(decode_routed(expired, now), Some((None, StreamEvent::ListenKeyExpired)));
        assert_eq!(
            decode(r#"{"result":null,"id":1}"#, now),
            Some(StreamEvent::Reply { id: 1, error: None })
        );
        let refused = r#"{"code":2,"msg":"Invalid request: unknown variant","id":7}"#;
        assert_eq!(
            decode(refused, now),
            Some(StreamEvent::Reply {
                id: 7,
                error: Some("2: Invalid request: unknown variant".into())
            })
        );
        let nested = r#"{"error":{"code":3,"msg":"Invalid JSON"},"id":8}"#;
        assert!(matches!(
            decode(nested, now),
            Some(StreamEvent::Reply { id: 8, error: Some(_) })
        ));
    }
}
