//! The streams over real WebSockets against the simulator: a stop-loss fired
//! by a streamed price alone, a silent-but-open socket replaced, user-data
//! events after reconnects and expired listen keys, a planned reconnect that
//! loses nothing.

mod common;

use std::time::Duration;

use common::trading::{FAST, create_level_near, d};
use common::{Backend, Service, SimProcess, TestStore};
use rust_decimal::Decimal;
use serde_json::json;

/// A service with streams on, pointed at the simulator, plus `env`.
async fn start(sim: &SimProcess, store: &TestStore, env: &[(&str, &str)]) -> Service {
    let config = format!(
        "{FAST}\n{}\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    let ws = sim.base.replace("http://", "ws://");
    let mut all = vec![
        ("SCRIPT_MANAGER_STORE__URL", store.url.as_str()),
        ("SCRIPT_MANAGER_EXCHANGE__STREAMS", "true"),
        ("SCRIPT_MANAGER_EXCHANGE__WS_BASE_URL", ws.as_str()),
        ("SCRIPT_MANAGER_EXCHANGE__STREAM_SILENCE_SECONDS", "2"),
    ];
    all.extend_from_slice(env);
    common::start(&config, &all).await
}

async fn metric(svc: &Service, series: &str) -> f64 {
    common::sample(&svc.metrics().await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_loss_fires_from_a_streamed_price_while_rest_prices_are_unchanged() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    // level_monitor's tick far away: what fires, fires from the stream.
    let env = [
        ("SCRIPT_MANAGER_PROCESSES__LEVEL_MONITOR__INTERVAL_SECONDS", "120"),
        ("SCRIPT_MANAGER_PROCESSES__LEVEL_MONITOR__START_OFFSET_SECONDS", "120"),
        ("SCRIPT_MANAGER_PROCESSES__USER_STREAM__ENABLED", "false"),
    ];
    let svc = start(&sim, &store, &env).await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    let rest_before = d(&sim.get(&format!("/fapi/v1/ticker/price?symbol={symbol}")).await["price"]);
    let beyond = if amount > Decimal::ZERO {
        sl * Decimal::new(98, 2)
    } else {
        sl * Decimal::new(102, 2)
    };
    let beyond = beyond.round_dp(4).to_string();
    let mut executed = None;
    for _ in 0..100 {
        sim.post(
            "/sim/stream/book_ticker",
            &json!({"symbol": symbol, "bid": beyond, "ask": beyond}),
        )
        .await;
        let level = svc.get_json(&format!("/api/levels/{id}")).await;
        if level["status"] == "executed" {
            executed = Some(level);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let level = executed.unwrap_or_else(|| panic!("not executed from the stream:\n{}", svc.log()));
    assert_eq!(d(&level["closed_qty"]), amount.abs());
    let rest_after = d(&sim.get(&format!("/fapi/v1/ticker/price?symbol={symbol}")).await["price"]);
    assert_eq!(rest_before, rest_after, "REST never saw the crossing price");
    let runs = svc.get_json("/api/script-manager/processes/level_monitor").await;
    assert_eq!(
        runs["metrics"]["total_runs"], 0,
        "level_monitor's tick did not run: the stream fired it"
    );
    assert!(
        metric(
            &svc,
            r#"script_manager_stream_messages_total{stream="book",account=""}"#
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(&svc, r#"script_manager_process_up{process="market_stream"}"#).await,
        1.0
    );
}

/// Every fill the simulator made for `account`, by trade id.
async fn sim_fill_ids(sim: &SimProcess, account: &str) -> std::collections::BTreeSet<u64> {
    let fills = sim.get(&format!("/sim/fills?account={account}")).await;
    fills
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect()
}

/// Every fill the service stored for `account` (trade ids; a duplicate would show twice).
async fn stored_fill_ids(svc: &Service, account: &str) -> Vec<u64> {
    let trades = svc
        .get_json(&format!("/api/trades?account={account}&limit=10000"))
        .await;
    let mut ids: Vec<u64> = trades
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// Waits until the service has stored exactly the simulator's fills of `account`, each once.
async fn fills_match(svc: &Service, sim: &SimProcess, account: &str) {
    let mut last = (Default::default(), Vec::new());
    for _ in 0..100 {
        let venue = sim_fill_ids(sim, account).await;
        let stored = stored_fill_ids(svc, account).await;
        let unique: std::collections::BTreeSet<u64> = stored.iter().copied().collect();
        assert_eq!(unique.len(), stored.len(), "a fill stored twice: {stored:?}");
        if unique == venue {
            return;
        }
        last = (venue, stored);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "stored fills differ from the venue's: venue {:?}, stored {:?}\n{}",
        last.0,
        last.1,
        svc.log()
    );
}

/// trade_sync and position_sync far apart: what arrives, arrives by stream or reconciliation.
const STREAMS_ONLY: [(&str, &str); 4] = [
    ("SCRIPT_MANAGER_PROCESSES__TRADE_SYNC__INTERVAL_SECONDS", "600"),
    ("SCRIPT_MANAGER_PROCESSES__TRADE_SYNC__START_OFFSET_SECONDS", "600"),
    ("SCRIPT_MANAGER_PROCESSES__POSITION_SYNC__INTERVAL_SECONDS", "600"),
    ("SCRIPT_MANAGER_PROCESSES__POSITION_SYNC__START_OFFSET_SECONDS", "600"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_made_while_the_user_stream_is_down_arrive_after_it_reconnects_once_each() {
    let sim = SimProcess::start("fills_per_minute = 600.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, &STREAMS_ONLY).await;
    let up = r#"script_manager_stream_up{stream="user",account="main"}"#;
    svc.wait_get(
        "the user stream",
        "/api/script-manager/status",
        Duration::from_secs(15),
        |_| true,
    )
    .await;
    for _ in 0..100 {
        if metric(&svc, up).await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&svc, up).await, 1.0, "{}", svc.log());
    fills_match(&svc, &sim, "main").await;
    // Down: every connection dropped; fills go on at the venue meanwhile.
    sim.post("/sim/stream/drop", &json!({})).await;
    let closed = r#"script_manager_stream_reconnects_total{stream="user",account="main",reason="closed"}"#;
    // Back up (reconciled first) after the drop.
    for _ in 0..100 {
        if metric(&svc, closed).await >= 1.0 && metric(&svc, up).await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&svc, closed).await >= 1.0, "{}", svc.log());
    assert_eq!(metric(&svc, up).await, 1.0, "{}", svc.log());
    fills_match(&svc, &sim, "main").await;
    fills_match(&svc, &sim, "alt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_stream_restarts_after_its_store_fails_while_the_other_streams_on() {
    let sim = SimProcess::start("fills_per_minute = 600.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, &STREAMS_ONLY).await;
    fills_match(&svc, &sim, "main").await;
    fills_match(&svc, &sim, "alt").await;
    // From now on the store refuses alt's fills (main's are taken as before).
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&store.url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_alt BEFORE INSERT ON trades WHEN NEW.account = 'alt' \
         BEGIN SELECT RAISE(ABORT, 'injected: the store refuses alt'); END",
    )
    .execute(&db)
    .await
    .unwrap();
    let store_failed = r#"script_manager_stream_reconnects_total{stream="user",account="alt",reason="store"}"#;
    let main_up = r#"script_manager_stream_up{stream="user",account="main"}"#;
    svc.eventually("alt's stream to fail on the store", Duration::from_secs(30), || async {
        metric(&svc, store_failed).await >= 1.0
    })
    .await;
    // main streams on throughout: up, and its new fills stored.
    let main_before = stored_fill_ids(&svc, "main").await.len();
    svc.eventually("main's fills while alt fails", Duration::from_secs(30), || async {
        assert_eq!(metric(&svc, main_up).await, 1.0, "main's stream stays up");
        stored_fill_ids(&svc, "main").await.len() > main_before + 2
    })
    .await;
    assert!(
        !svc.log().contains(r#"account="main" reason="store""#),
        "main never failed"
    );
    // The store recovers: alt's stream comes back on its own (reconciled), and streams again.
    sqlx::query("DROP TRIGGER refuse_alt").execute(&db).await.unwrap();
    let alt_up = r#"script_manager_stream_up{stream="user",account="alt"}"#;
    svc.eventually("alt's stream back up", Duration::from_secs(60), || async {
        metric(&svc, alt_up).await == 1.0
    })
    .await;
    let alt_back = stored_fill_ids(&svc, "alt").await.len();
    svc.eventually("alt's later fills stored", Duration::from_secs(30), || async {
        stored_fill_ids(&svc, "alt").await.len() > alt_back + 1
    })
    .await;
    fills_match(&svc, &sim, "alt").await;
    fills_match(&svc, &sim, "main").await;
    assert_eq!(
        metric(
            &svc,
            r#"script_manager_stream_reconnects_total{stream="user",account="main",reason="store"}"#
        )
        .await,
        0.0
    );
    assert!(
        svc.log()
            .contains(r#"user stream ended; reconnecting account="alt" reason="store""#),
        "the failure is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_listen_key_is_renewed_and_events_resume() {
    let sim = SimProcess::start("fills_per_minute = 300.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, &STREAMS_ONLY).await;
    fills_match(&svc, &sim, "main").await;
    sim.post("/sim/stream/expire_keys", &json!({})).await;
    let renewed = r#"script_manager_stream_reconnects_total{stream="user",account="main",reason="listen_key"}"#;
    for _ in 0..100 {
        if metric(&svc, renewed).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&svc, renewed).await >= 1.0, "{}", svc.log());
    let before = stored_fill_ids(&svc, "main").await.len();
    // New fills arrive again (by the stream: trade_sync is far away).
    for _ in 0..100 {
        if stored_fill_ids(&svc, "main").await.len() > before + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored_fill_ids(&svc, "main").await.len() > before + 1, "events resumed");
    fills_match(&svc, &sim, "main").await;
    assert!(
        metric(
            &svc,
            r#"script_manager_stream_listen_key_renewals_total{account="main",result="ok"}"#
        )
        .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_but_open_market_socket_is_replaced() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.001\nprice_step_ms = 50").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(
        &sim,
        &store,
        &[("SCRIPT_MANAGER_PROCESSES__USER_STREAM__ENABLED", "false")],
    )
    .await;
    create_level_near(&svc, &sim, "main").await;
    let messages = r#"script_manager_stream_messages_total{stream="book",account=""}"#;
    for _ in 0..100 {
        if metric(&svc, messages).await > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&svc, messages).await > 0.0, "prices stream in");
    // The sockets stay open and say nothing.
    sim.post("/sim/faults", &json!({"ws_silent": true})).await;
    let silent = r#"script_manager_stream_reconnects_total{stream="book",account="",reason="silent"}"#;
    for _ in 0..100 {
        if metric(&svc, silent).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&svc, silent).await >= 1.0, "silence detected: {}", svc.log());
    sim.post("/sim/faults", &json!({})).await;
    let before = metric(&svc, messages).await;
    for _ in 0..100 {
        if metric(&svc, messages).await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(&svc, messages).await > before,
        "prices flow again on the new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_reconnect_ahead_of_the_venues_close_loses_nothing() {
    // The venue closes connections after 4 s (standing for 24 h); ours replace theirs ahead of it.
    let sim = SimProcess::start(
        "fills_per_minute = 300.0\nvolatility = 0.001\nprice_step_ms = 50\nws_max_lifetime_seconds = 4",
    )
    .await;
    let store = TestStore::new(Backend::Sqlite);
    let mut env = STREAMS_ONLY.to_vec();
    env.push(("SCRIPT_MANAGER_EXCHANGE__STREAM_MAX_LIFETIME_SECONDS", "4"));
    let svc = start(&sim, &store, &env).await;
    // A far alert keeps a symbol watched (a level would be retired when trading elsewhere flips its position).
    let (status, alert) = svc
        .post_json(
            "/api/alerts",
            &json!({"symbol": "BTCUSDT", "condition": "above", "price": "100000000"}),
        )
        .await;
    assert_eq!(status, 201, "{alert}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let planned = r#"script_manager_stream_reconnects_total{stream="book",account="",reason="planned"}"#;
    assert!(metric(&svc, planned).await >= 2.0, "{}", svc.log());
    let lost = r#"script_manager_stream_reconnects_total{stream="book",account="",reason="closed"}"#;
    assert_eq!(metric(&svc, lost).await, 0.0, "no connection was closed under us");
    assert_eq!(
        metric(&svc, r#"script_manager_stream_up{stream="book",account=""}"#).await,
        1.0
    );
    fills_match(&svc, &sim, "main").await;
    fills_match(&svc, &sim, "alt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_streams_off_the_service_polls_as_before() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    let config = format!(
        "{FAST}\n{}\n[http]\nadmin_token = \"{}\"\n",
        sim.polling_exchange_toml(),
        common::TOKEN
    );
    let svc = common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", store.url.as_str())]).await;
    let doc = svc.get_json("/api/script-manager/status").await;
    let ids: Vec<&str> = doc["processes"]
        .as_object()
        .expect("processes is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ids.len(), 7, "the six polling processes and backstop_sync: {ids:?}");
    assert!(!ids.contains(&"market_stream") && !ids.contains(&"user_stream"));

    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    common::trading::cross(&sim, &symbol, amount, sl).await;
    let level = svc
        .wait_get(
            "the level executed by polling",
            &format!("/api/levels/{id}"),
            Duration::from_secs(30),
            |l| l["status"] == "executed",
        )
        .await;
    assert_eq!(d(&level["closed_qty"]), amount.abs());
    let runs = svc.get_json("/api/script-manager/processes/level_monitor").await;
    assert!(runs["metrics"]["total_runs"].as_u64().unwrap_or(0) > 0, "{runs:#}");

    let meter = sim.get("/sim/meter").await;
    assert_eq!(
        meter["ws_connections"],
        json!({"public": 0, "market": 0, "private": 0}),
        "no socket opened: {meter:#}"
    );
    let asked_for_listen_keys = meter["requests"]
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.starts_with("/fapi/v1/listenKey"));
    assert!(!asked_for_listen_keys, "no listen key asked for: {meter:#}");
    assert!(
        !svc.metrics().await.contains("script_manager_stream_up{"),
        "no stream series while streams are off"
    );
}

/// `SUBSCRIBE`s the simulator received and answered as `how` (`answered`, `unanswered`, `refused`, `late`).
async fn subscribes(sim: &SimProcess, how: &str) -> u64 {
    sim.get("/sim/meter").await["ws_subscribes"][how].as_u64().unwrap_or(0)
}

/// An alert that never fires: it keeps `symbol` watched by market_stream.
async fn watch(svc: &Service, symbol: &str) -> i64 {
    let (status, body) = svc
        .post_json(
            "/api/alerts",
            &json!({"symbol": symbol, "condition": "above", "price": "1000000000"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

async fn unwatch(svc: &Service, alert: i64) {
    let r = svc
        .http
        .delete(svc.url(&format!("/api/alerts/{alert}")))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribed_symbol_is_fresh_only_from_an_event_after_its_confirmed_subscribe() {
    // No price steps: a symbol's book moves only when the test posts it. Pings keep quiet sockets open.
    let sim =
        SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0\nprice_step_ms = 3600000\nws_ping_seconds = 0.5")
            .await;
    let store = TestStore::new(Backend::Sqlite);
    let env = [
        ("SCRIPT_MANAGER_PROCESSES__USER_STREAM__ENABLED", "false"),
        ("SCRIPT_MANAGER_EXCHANGE__STREAM_STALE_SECONDS", "1"),
    ];
    let svc = start(&sim, &store, &env).await;
    // BTCUSDT ticks all along, so the connection keeps delivering (and vouching).
    let ticker = {
        let (http, base) = (sim.http.clone(), sim.base.clone());
        tokio::spawn(async move {
            loop {
                let body = json!({"symbol": "BTCUSDT", "bid": "100000", "ask": "100000"});
                let _ = http
                    .post(format!("{base}/sim/stream/book_ticker"))
                    .json(&body)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let eth_tick = json!({"symbol": "ETHUSDT", "bid": "4000", "ask": "4000"});
    let stale = "script_manager_stream_stale_symbols";
    watch(&svc, "BTCUSDT").await;
    let mut eth = watch(&svc, "ETHUSDT").await;
    // The gauge reads 0 before the first look: first see ETHUSDT watched and never quoted.
    svc.eventually("ETHUSDT watched", Duration::from_secs(30), || async {
        metric(&svc, stale).await >= 1.0
    })
    .await;
    svc.eventually("both symbols fresh", Duration::from_secs(30), || async {
        sim.post("/sim/stream/book_ticker", &eth_tick).await;
        metric(&svc, stale).await == 0.0
    })
    .await;

    // ETHUSDT dropped; its quote ages; wanted again on the same connection (SUBSCRIBE answered).
    unwatch(&svc, eth).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answered = subscribes(&sim, "answered").await;
    eth = watch(&svc, "ETHUSDT").await;
    svc.eventually("the SUBSCRIBE answered", Duration::from_secs(30), || async {
        subscribes(&sim, "answered").await > answered
    })
    .await;
    for _ in 0..15 {
        assert!(
            metric(&svc, stale).await >= 1.0,
            "ETHUSDT's quote from before its re-subscription is not fresh:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.eventually("fresh from a new event", Duration::from_secs(30), || async {
        sim.post("/sim/stream/book_ticker", &eth_tick).await;
        metric(&svc, stale).await == 0.0
    })
    .await;

    // Again, with SUBSCRIBE carried out but never answered: not fresh, and the connection is replaced.
    unwatch(&svc, eth).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sim.post("/sim/faults", &json!({"ws_subscribe_unanswered": true})).await;
    let unanswered = subscribes(&sim, "unanswered").await;
    eth = watch(&svc, "ETHUSDT").await;
    svc.eventually("the SUBSCRIBE received", Duration::from_secs(30), || async {
        subscribes(&sim, "unanswered").await > unanswered
    })
    .await;
    assert!(metric(&svc, stale).await >= 1.0, "unconfirmed: not vouched for");
    let timeout = r#"script_manager_stream_reconnects_total{stream="book",account="",reason="subscribe_timeout"}"#;
    svc.eventually(
        "the unconfirmed connection replaced",
        Duration::from_secs(30),
        || async { metric(&svc, timeout).await >= 1.0 },
    )
    .await;
    sim.post("/sim/faults", &json!({})).await;
    let book_up = r#"script_manager_stream_up{stream="book",account=""}"#;
    svc.eventually("a new connection", Duration::from_secs(30), || async {
        metric(&svc, book_up).await == 1.0
    })
    .await;
    // BTCUSDT's next tick makes it fresh on the new connection; ETHUSDT's old quote stays unvouched.
    svc.eventually("BTCUSDT fresh again", Duration::from_secs(30), || async {
        metric(&svc, stale).await == 1.0
    })
    .await;
    for _ in 0..10 {
        assert!(
            metric(&svc, stale).await >= 1.0,
            "the new connection does not vouch for the old quote"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.eventually("fresh from a new event", Duration::from_secs(30), || async {
        sim.post("/sim/stream/book_ticker", &eth_tick).await;
        metric(&svc, stale).await == 0.0
    })
    .await;

    // A refused SUBSCRIBE replaces the connection too.
    unwatch(&svc, eth).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.post("/sim/faults", &json!({"ws_subscribe_refused": true})).await;
    watch(&svc, "ETHUSDT").await;
    let refused = r#"script_manager_stream_reconnects_total{stream="book",account="",reason="subscribe_refused"}"#;
    svc.eventually("the refusing connection replaced", Duration::from_secs(30), || async {
        metric(&svc, refused).await >= 1.0
    })
    .await;
    sim.post("/sim/faults", &json!({})).await;
    svc.eventually("ETHUSDT streamed again", Duration::from_secs(30), || async {
        sim.post("/sim/stream/book_ticker", &eth_tick).await;
        metric(&svc, book_up).await == 1.0 && metric(&svc, stale).await == 0.0
    })
    .await;
    ticker.abort();
}
