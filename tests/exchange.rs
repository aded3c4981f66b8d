//! The exchange layer over real HTTP against the simulator: budgets, 429s,
//! de-duplication, cache, lost order answers, clock skew, bad credentials.
//! Counts come from the simulator's own meter, not from the client. What a
//! protective close meets at the venue is in `exchange/closes.rs` (filters,
//! refusals, slow answers, trades made elsewhere, hedge mode) and
//! `exchange/algo.rs` (conditional orders resting on the venue).

#[path = "exchange/algo.rs"]
mod algo;
#[path = "exchange/closes.rs"]
mod closes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use script_manager::app::exchange::{demo_accounts, sim_specs};
use script_manager::budget::{Admission, ProcessCalls, VenueWeight};
use script_manager::config::Secret;
use script_manager::exchange::binance::ws::{Socket, StreamEvent};
use script_manager::exchange::binance::{Binance, TransportOptions, sign};
use script_manager::exchange::orders::close_exactly_once;
use script_manager::exchange::{Account, Caller, OrderSide, Venue, VenueErrorKind};
use script_manager::net::http_client;
use script_manager::sim::{self, Faults, SimulatorConfig};
use script_manager::telemetry::Metrics;
use script_manager::upstream::Knobs;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const ALL_ON: Knobs = Knobs {
    batching: true,
    dedupe: true,
    cache: true,
};

struct Rig {
    addr: SocketAddr,
    venue: Binance,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

struct RigOptions {
    weight_limit: u32,
    margin: f64,
    reserved_share: f64,
    knobs: Knobs,
    timeout: Duration,
    recv_window_ms: u64,
    limits: Vec<(&'static str, u32)>,
    accounts: Vec<Account>,
    /// Changes the simulator's settings before it starts.
    configure: fn(&mut SimulatorConfig),
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            weight_limit: 2400,
            margin: 0.8,
            reserved_share: 0.2,
            knobs: ALL_ON,
            timeout: Duration::from_secs(5),
            recv_window_ms: 5000,
            limits: vec![("test", 10_000), ("level_monitor", 100)],
            accounts: demo_accounts(),
            configure: |_| {},
        }
    }
}

async fn rig(o: RigOptions) -> Rig {
    let stop = CancellationToken::new();
    let mut config = SimulatorConfig {
        weight_limit: o.weight_limit,
        fills_per_minute: 0.0,
        price_step_ms: 50,
        ..SimulatorConfig::default()
    };
    (o.configure)(&mut config);
    let (addr, _sim) = sim::start(&config, &sim_specs(&demo_accounts()), stop.clone())
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let budget = Arc::new(VenueWeight::new(
        o.weight_limit,
        o.margin,
        o.reserved_share,
        ["level_monitor".to_string()],
    ));
    let limits = o
        .limits
        .iter()
        .map(|(p, l)| (p.to_string(), *l))
        .chain([("service".to_string(), 100)]);
    let options = TransportOptions {
        base_url: format!("http://{addr}"),
        recv_window_ms: o.recv_window_ms,
        timeout: o.timeout,
    };
    let admission = Admission::new(Arc::new(ProcessCalls::new(limits)), budget);
    let venue = Binance::new(
        options,
        o.knobs,
        admission,
        metrics.clone(),
        script_manager::accounts::Accounts::new(o.accounts, script_manager::accounts::Source::File),
    )
    .unwrap();
    Rig {
        addr,
        venue,
        metrics,
        http: http_client().unwrap(),
        _stop: stop.drop_guard(),
    }
}

fn caller(process: &str, priority: u8, within: Duration) -> Caller {
    Caller::new(process, priority, Instant::now() + within)
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Events from `socket` until `enough` says so (at most 10 s).
async fn events_until(socket: &mut Socket, enough: impl Fn(&[StreamEvent]) -> bool) -> Vec<StreamEvent> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !enough(&seen) {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Ok(Some(event))) => seen.push(event),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => panic!("stream ended: {e}; seen {seen:?}"),
            Err(_) => panic!("not enough events in 10 s: {seen:?}"),
        }
    }
    seen
}

/// Polls `check` every 50 ms for up to 10 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Rig {
    async fn meter(&self) -> Value {
        self.http
            .get(format!("http://{}/sim/meter", self.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn requests(&self, key: &str) -> u64 {
        self.meter().await["requests"][key].as_u64().unwrap_or(0)
    }

    async fn set_faults(&self, faults: &Faults) {
        let r = self
            .http
            .post(format!("http://{}/sim/faults", self.addr))
            .json(faults)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// `POST /sim/...` with a JSON body; its status.
    async fn sim_post(&self, path: &str, body: Value) -> reqwest::StatusCode {
        self.http
            .post(format!("http://{}{path}", self.addr))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A signed request made by hand, as the client never sends it: status and JSON answer.
    async fn signed(&self, method: reqwest::Method, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let account = &demo_accounts()[0];
        let mut query: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        query.push(("timestamp".into(), script_manager::clock::now_ms().to_string()));
        let payload = sign::encode(&query);
        let signature = sign::signature(account.api_secret.expose(), &payload);
        let r = self
            .http
            .request(
                method,
                format!("http://{}{path}?{payload}&signature={signature}", self.addr),
            )
            .header("X-MBX-APIKEY", account.api_key.expose())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A trade made on the venue's app (`POST /sim/trade`).
    async fn trade(&self, account: &str, symbol: &str, side: &str, qty: &str) {
        let body = serde_json::json!({"account": account, "symbol": symbol, "side": side, "qty": qty});
        assert!(self.sim_post("/sim/trade", body).await.is_success());
    }

    /// The venue's position of `account` in `symbol` (0 when flat).
    async fn position(&self, account: &str, symbol: &str) -> Decimal {
        let c = caller("test", 1, Duration::from_secs(5));
        let p = self.venue.position(&c, account, symbol).await.unwrap();
        p.map_or(Decimal::ZERO, |p| p.amount)
    }

    /// The account's user-data stream, connected.
    async fn user_stream(&self, account: &str) -> Socket {
        let c = caller("test", 1, Duration::from_secs(5));
        let key = self.venue.listen_key(&c, account).await.unwrap();
        Socket::user(&format!("ws://{}", self.addr), &key).await.unwrap()
    }

    async fn sim_get(&self, path: &str) -> Value {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.encode_prometheus();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// Waits until at least `margin` is left in the current minute, so a test
/// that counts per minute is not cut in two by the boundary.
async fn away_from_minute_boundary(margin: Duration) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let left = Duration::from_millis(60_000 - ms % 60_000);
    if left < margin {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_processes_flat_out_stay_within_the_global_and_their_own_limits() {
    away_from_minute_boundary(Duration::from_secs(8)).await;
    // Venue limit 200 → ours 160 (margin 0.8); the seed's per-process limits.
    let limits = vec![
        ("trade_sync", 60),
        ("level_monitor", 100),
        ("price_update", 30),
        ("notification_check", 30),
        ("position_sync", 30),
        ("dashboard_sync", 10),
    ];
    let rig = Arc::new(
        rig(RigOptions {
            weight_limit: 200,
            knobs: Knobs { cache: false, ..ALL_ON },
            limits: limits.clone(),
            ..Default::default()
        })
        .await,
    );
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for (i, &(process, _)) in limits.iter().enumerate() {
        let rig = rig.clone();
        tasks.push(tokio::spawn(async move {
            let symbols = ["BTCUSDT".to_string()];
            while Instant::now() < stop_at {
                let c = caller(process, [1, 1, 2, 2, 3, 4][i], Duration::from_millis(200));
                // Each process uses its own endpoint/account so the simulator can attribute calls.
                let _ = match process {
                    "trade_sync" => rig
                        .venue
                        .fills_since(&c, "main", "BTCUSDT", Some(0), 100)
                        .await
                        .map(drop),
                    "level_monitor" => rig
                        .venue
                        .order_by_client_id(&c, "alt", "BTCUSDT", "nope")
                        .await
                        .map(drop),
                    "price_update" => rig.venue.prices(&c, &[]).await.map(drop),
                    "notification_check" => rig.venue.prices(&c, &symbols).await.map(drop),
                    "position_sync" => rig.venue.positions(&c, "main").await.map(drop),
                    _ => rig.venue.positions(&c, "alt").await.map(drop),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let meter = rig.meter().await;
    for (minute, weight) in meter["weight_by_minute"].as_object().unwrap() {
        assert!(
            weight.as_u64().unwrap() <= 160,
            "minute {minute}: weight {weight} above 200 × 0.8"
        );
    }
    let answers = &meter["answers"];
    assert!(
        answers.get("429").is_none() && answers.get("418").is_none(),
        "{answers}"
    );
    let count = |k: &str| meter["requests"][k].as_u64().unwrap_or(0);
    let seen = [
        ("trade_sync", count("/fapi/v1/userTrades main")),
        ("level_monitor", count("/fapi/v1/order alt")),
        ("price_update + notification_check", count("/fapi/v1/ticker/price -")),
        ("position_sync", count("/fapi/v2/positionRisk main")),
        ("dashboard_sync", count("/fapi/v2/positionRisk alt")),
    ];
    assert!(
        seen[0].1 <= 60 && seen[1].1 <= 100 && seen[2].1 <= 60 && seen[3].1 <= 30 && seen[4].1 <= 10,
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|&(_, n)| n > 0),
        "every process got some calls through: {seen:?}"
    );
    let total_weight: u64 = meter["weight_by_minute"]
        .as_object()
        .unwrap()
        .values()
        .map(|w| w.as_u64().unwrap())
        .sum();
    assert!(total_weight >= 100, "the budget was actually used: {total_weight}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_monitor_gets_in_within_a_tick_while_trade_sync_saturates() {
    away_from_minute_boundary(Duration::from_secs(6)).await;
    let rig = rig(RigOptions {
        weight_limit: 100,
        margin: 1.0,
        reserved_share: 0.2,
        limits: vec![("trade_sync", 1000), ("level_monitor", 100)],
        ..Default::default()
    })
    .await;
    let mut sent = 0;
    loop {
        let c = caller("trade_sync", 1, Duration::from_millis(100));
        match rig.venue.fills_since(&c, "main", "BTCUSDT", Some(0), 10).await {
            Ok(_) => sent += 1,
            Err(e) => {
                assert_eq!(e.kind(), VenueErrorKind::BudgetExhausted, "{e}");
                break;
            }
        }
    }
    assert_eq!(sent, 16, "trade_sync stops at 80 of 100 (weight 5 each)");
    let started = Instant::now();
    let c = caller("level_monitor", 1, Duration::from_secs(2));
    rig.venue
        .prices(&c, &[])
        .await
        .expect("level_monitor is admitted from the reserve");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(rig.meter().await["answers"].get("429"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_holds_every_caller_until_retry_after_and_never_earns_a_418() {
    let rig = rig(RigOptions {
        limits: vec![("a", 1000), ("b", 1000)],
        ..Default::default()
    })
    .await;
    rig.set_faults(&Faults {
        force_429: 1,
        force_429_retry_after_s: 2,
        ..Faults::default()
    })
    .await;
    let err = rig
        .venue
        .prices(&caller("a", 1, Duration::from_secs(1)), &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), VenueErrorKind::RateLimited);
    let paused_at = Instant::now();
    let before = rig.requests("/fapi/v1/ticker/price -").await;
    // During the pause: callers with short deadlines give up without sending.
    for process in ["a", "b"] {
        let e = rig
            .venue
            .prices(&caller(process, 1, Duration::from_millis(300)), &[])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), VenueErrorKind::BudgetExhausted);
        let e = rig
            .venue
            .positions(&caller(process, 1, Duration::from_millis(300)), "main")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), VenueErrorKind::BudgetExhausted);
    }
    assert_eq!(
        rig.requests("/fapi/v1/ticker/price -").await,
        before,
        "nothing sent during the pause"
    );
    // A caller that can wait is served once Retry-After has passed.
    rig.venue
        .prices(&caller("b", 1, Duration::from_secs(5)), &[])
        .await
        .unwrap();
    assert!(
        paused_at.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        paused_at.elapsed()
    );
    let meter = rig.meter().await;
    assert_eq!(
        meter["violations"], 0,
        "no request reached the venue inside its back-off"
    );
    assert!(meter["answers"].get("418").is_none());
    assert_eq!(
        rig.metric(r#"script_manager_api_rate_limit_responses_total{status="429"}"#),
        1.0
    );
}

#[tokio::test]
async fn identical_concurrent_gets_share_one_request_and_the_cache_answers_fresh_enough_callers() {
    let rig = Arc::new(rig(RigOptions::default()).await);
    rig.set_faults(&Faults {
        latency_ms: 300,
        ..Faults::default()
    })
    .await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let rig = rig.clone();
            tokio::spawn(async move {
                rig.venue
                    .prices(&caller("test", 2, Duration::from_secs(5)), &[])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        rig.requests("/fapi/v1/ticker/price -").await,
        1,
        "10 identical GETs, 1 upstream request"
    );
    assert_eq!(rig.metric("script_manager_api_deduplicated_total"), 9.0);

    rig.set_faults(&Faults::default()).await;
    let c = caller("test", 2, Duration::from_secs(5)).accepting_age(Duration::from_secs(30));
    let cached = rig.venue.prices(&c, &[]).await.unwrap();
    assert_eq!(cached, answers[0]);
    assert_eq!(
        rig.requests("/fapi/v1/ticker/price -").await,
        1,
        "a young enough cached price costs nothing"
    );
    assert_eq!(
        rig.metric(r#"script_manager_api_cache_requests_total{endpoint="/fapi/v1/ticker/price",result="hit"}"#),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let c = caller("test", 2, Duration::from_secs(5)).accepting_age(Duration::from_millis(100));
    rig.venue.prices(&c, &[]).await.unwrap();
    assert_eq!(
        rig.requests("/fapi/v1/ticker/price -").await,
        2,
        "older than the bound: fetched again"
    );
}

#[tokio::test]
async fn batching_is_one_call_for_all_symbols_and_off_is_one_per_symbol() {
    let symbols: Vec<String> = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let on = rig(RigOptions::default()).await;
    let prices = on
        .venue
        .prices(&caller("test", 2, Duration::from_secs(5)), &symbols)
        .await
        .unwrap();
    assert_eq!(prices.len(), 3);
    assert_eq!(on.requests("/fapi/v1/ticker/price -").await, 1);
    let off = rig(RigOptions {
        knobs: Knobs {
            batching: false,
            ..ALL_ON
        },
        ..Default::default()
    })
    .await;
    let prices = off
        .venue
        .prices(&caller("test", 2, Duration::from_secs(5)), &symbols)
        .await
        .unwrap();
    assert_eq!(prices.len(), 3);
    assert_eq!(off.requests("/fapi/v1/ticker/price -").await, 3);
}

async fn open_position(rig: &Rig, account: &str) -> (String, Decimal) {
    let positions = rig
        .venue
        .positions(&caller("test", 1, Duration::from_secs(5)), account)
        .await
        .unwrap();
    let p = positions.first().expect("demo accounts open with positions");
    (p.symbol.clone(), p.amount)
}

async fn closing_is_exactly_once(faults: Faults, timeout: Duration, client_id: &str) {
    let rig = rig(RigOptions {
        timeout,
        ..Default::default()
    })
    .await;
    let (symbol, amount) = open_position(&rig, "main").await;
    let side = if amount > Decimal::ZERO {
        OrderSide::Sell
    } else {
        OrderSide::Buy
    };
    rig.set_faults(&faults).await;
    let c = caller("level_monitor", 1, Duration::from_secs(10));
    let ack = close_exactly_once(&rig.venue, &c, "main", &symbol, side, amount.abs(), client_id)
        .await
        .unwrap();
    assert_eq!(ack.client_order_id, client_id);
    assert_eq!(ack.executed_qty, amount.abs());
    let orders = rig.sim_get("/sim/orders?account=main").await;
    let executed: Vec<_> = orders
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["clientOrderId"] == client_id)
        .collect();
    assert_eq!(executed.len(), 1, "exactly one execution: {orders}");
    assert_eq!(
        rig.requests("/fapi/v1/order main").await,
        2,
        "one POST, one lookup, no resend"
    );
    let left = rig
        .venue
        .positions(&caller("test", 1, Duration::from_secs(5)), "main")
        .await
        .unwrap();
    assert!(
        left.iter().all(|p| p.symbol != symbol),
        "position closed once, not reversed"
    );
}

#[tokio::test]
async fn a_close_order_whose_answer_is_a_5xx_after_execution_is_looked_up_not_resent() {
    closing_is_exactly_once(
        Faults {
            order_error_after_execute: 1,
            ..Faults::default()
        },
        Duration::from_secs(5),
        "sm-7-1",
    )
    .await;
}

#[tokio::test]
async fn a_close_order_that_times_out_is_looked_up_not_resent() {
    let faults = Faults {
        order_delay_after_execute_ms: 1500,
        ..Faults::default()
    };
    closing_is_exactly_once(faults, Duration::from_millis(700), "sm-8-1").await;
}

async fn recovers_from_clock_offset(offset_ms: i64, recv_window_ms: u64) {
    let rig = rig(RigOptions {
        recv_window_ms,
        ..Default::default()
    })
    .await;
    rig.venue
        .sync_time(&caller("service", 1, Duration::from_secs(5)))
        .await
        .unwrap();
    rig.set_faults(&Faults {
        clock_offset_ms: offset_ms,
        ..Faults::default()
    })
    .await;
    for _ in 0..20 {
        rig.venue
            .positions(&caller("test", 1, Duration::from_secs(5)), "main")
            .await
            .expect("recovers by re-syncing");
    }
    let rejected = rig.meter().await["answers"]["-1021"].as_u64().unwrap_or(0);
    assert_eq!(rejected, 1, "one -1021, then a re-sync; no flood");
    let offset = rig.venue.clock_offset_ms();
    assert!(
        (offset - offset_ms).abs() < 500,
        "measured offset {offset} for {offset_ms}"
    );
}

#[tokio::test]
async fn the_client_resyncs_when_the_venue_clock_runs_3s_ahead() {
    recovers_from_clock_offset(3000, 2000).await;
}

#[tokio::test]
async fn the_client_resyncs_when_the_venue_clock_runs_3s_behind() {
    recovers_from_clock_offset(-3000, 5000).await;
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_counted_and_not_retried() {
    let wrong = Account {
        name: "main".into(),
        api_key: Secret::new("sim-main-key"),
        api_secret: Secret::new("not-the-secret"),
    };
    let rig = rig(RigOptions {
        accounts: vec![wrong],
        ..Default::default()
    })
    .await;
    let e = rig
        .venue
        .positions(&caller("test", 1, Duration::from_secs(5)), "main")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), VenueErrorKind::Auth);
    assert!(!e.retriable());
    assert!(!e.to_string().contains("not-the-secret"));
    assert_eq!(rig.requests("/fapi/v2/positionRisk main").await, 1);
    assert_eq!(rig.metric(r#"script_manager_api_errors_total{kind="auth"}"#), 1.0);
}

#[tokio::test]
async fn the_venues_count_shrinks_our_share() {
    away_from_minute_boundary(Duration::from_secs(5)).await;
    let rig = rig(RigOptions {
        weight_limit: 100,
        reserved_share: 0.0,
        ..Default::default()
    })
    .await;
    let r = rig
        .http
        .post(format!("http://{}/sim/consume", rig.addr))
        .json(&serde_json::json!({"weight": 70}))
        .send()
        .await;
    assert!(r.unwrap().status().is_success());
    let mut ok = 0;
    while rig
        .venue
        .prices(&caller("test", 1, Duration::from_millis(100)), &[])
        .await
        .is_ok()
    {
        ok += 1;
        assert!(ok < 40);
    }
    // Ours is 80; another client used 70: after the first answer we know, and stop at 80.
    assert!(ok <= 6, "sent {ok} calls of weight 2");
    assert!(rig.meter().await["answers"].get("429").is_none());
    assert!(rig.metric("script_manager_api_upstream_used_weight") >= 78.0);
}

#[tokio::test]
async fn broken_answers_are_errors_of_known_kinds() {
    let rig = rig(RigOptions::default()).await;
    let mut rates = BTreeMap::new();
    rates.insert("/fapi/v1/ticker/price".to_string(), 1.0);
    rig.set_faults(&Faults {
        malformed_rate: rates.clone(),
        ..Faults::default()
    })
    .await;
    let e = rig
        .venue
        .prices(&caller("test", 1, Duration::from_secs(5)), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), VenueErrorKind::Decode);
    rig.set_faults(&Faults {
        error_rate: rates,
        ..Faults::default()
    })
    .await;
    let e = rig
        .venue
        .prices(&caller("test", 1, Duration::from_secs(5)), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), VenueErrorKind::Transient);
    assert_eq!(rig.metric(r#"script_manager_api_errors_total{kind="decode"}"#), 1.0);
    assert_eq!(
        rig.metric(
            r#"script_manager_api_calls_total{process="test",endpoint="/fapi/v1/ticker/price",status_class="5xx"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn the_simulator_keeps_a_bounded_window_of_fills_however_long_it_runs() {
    let stop = CancellationToken::new();
    let config = SimulatorConfig {
        keep_fills: 100,
        // One fill every 10 ms step: thousands over the run.
        fills_per_minute: 6_000_000.0,
        price_step_ms: 10,
        ..SimulatorConfig::default()
    };
    let (addr, _sim) = sim::start(&config, &sim_specs(&demo_accounts()), stop.clone())
        .await
        .unwrap();
    let http = http_client().unwrap();
    let meter = || async {
        let m: Value = http
            .get(format!("http://{addr}/sim/meter"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        m["fills_kept"].as_u64().unwrap()
    };
    let mut kept = 0;
    for _ in 0..100 {
        kept = meter().await;
        assert!(kept <= 200, "two accounts keep at most 100 fills each: {kept}");
        if kept == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept, 200, "the window filled up and stayed bounded");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(meter().await, 200, "more fills, same memory");
    stop.cancel();
}
