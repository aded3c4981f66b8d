//! Protection against the venue's inconvenient corners (issue 21), the real
//! binary against a simulator process over HTTP and WebSockets: a position
//! closed and reversed on the venue's app, a position larger than one MARKET
//! order may carry, one symbol's close answer held while another crosses,
//! an account in hedge mode.

mod common;

use std::time::Duration;

use common::trading::{FAST, d, receiver};
use common::venue::{amount, price, stored, trade};
use common::{Backend, Service, SimProcess, TestStore};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// A quiet venue: no opening positions, no trading elsewhere, prices still.
const QUIET: &str = "fills_per_minute = 0.0\nvolatility = 0.0\nopening_positions = 0";

async fn start(sim: &SimProcess, store: &TestStore, extra: &str) -> Service {
    let config = format!(
        "{FAST}\n{}\n{extra}\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", store.url.as_str())]).await
}

async fn level(svc: &Service, body: Value) -> i64 {
    let (status, level) = svc.post_json("/api/levels", &body).await;
    assert_eq!(status, 201, "{level}");
    level["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_closed_and_reversed_on_the_venue_retires_its_level_without_an_order() {
    let sim = SimProcess::start(QUIET).await;
    let store = TestStore::new(Backend::Sqlite);
    let (url, seen) = receiver(0).await;
    let svc = start(
        &sim,
        &store,
        &format!("[notifications]\nwebhook_url = \"{url}\"\nallowed_webhook_hosts = [\"127.0.0.1\"]"),
    )
    .await;
    trade(&sim, "main", "BTCUSDT", "BUY", "2").await;
    stored(&svc, "main", "BTCUSDT", Decimal::from(2)).await;
    let p = price(&sim, "BTCUSDT").await;
    let stop = (p * Decimal::new(90, 2)).round_dp(2);
    let id = level(
        &svc,
        json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": stop.to_string()}),
    )
    .await;

    // The user closes the long on the venue's app and opens a short.
    trade(&sim, "main", "BTCUSDT", "SELL", "3").await;
    let retired = svc
        .wait_get(
            "the level retired",
            &format!("/api/levels/{id}"),
            Duration::from_secs(15),
            |l| l["status"] != "armed",
        )
        .await;
    assert_eq!(retired["status"], "cancelled", "{retired}");
    assert_eq!(retired["reason"], "position_flipped", "{retired}");
    // The old long's stop must not read as the short's stop (fire at or above it): move through it both ways.
    sim.post(
        "/sim/prices",
        &json!({"BTCUSDT": (stop * Decimal::new(95, 2)).to_string()}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.post(
        "/sim/prices",
        &json!({"BTCUSDT": (p * Decimal::new(110, 2)).to_string()}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let placed = common::venue::orders(&sim, "main", "BTCUSDT").await;
    assert!(
        placed
            .iter()
            .all(|o| o["clientOrderId"].as_str().unwrap().starts_with("web_")),
        "no order of ours: {placed:?}"
    );
    assert_eq!(
        amount(&sim, "main", "BTCUSDT").await,
        Decimal::from(-1),
        "the short is untouched"
    );
    svc.wait_get(
        "the level_cancelled webhook",
        "/api/levels",
        Duration::from_secs(10),
        |_| seen.lock().unwrap().iter().any(|(_, key)| key.ends_with("-cancelled")),
    )
    .await;
    let m = svc.metrics().await;
    assert_eq!(
        common::sample(&m, r#"script_manager_levels_retired_total{reason="position_flipped"}"#),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_larger_than_one_market_order_closes_in_parts() {
    let sim = SimProcess::start(&format!("{QUIET}\nmarket_max_qty = {{ BTCUSDT = 10.0 }}")).await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "").await;
    // The venue's MARKET limit binds the user too: 15 opened as 10 + 5.
    trade(&sim, "main", "BTCUSDT", "BUY", "10").await;
    trade(&sim, "main", "BTCUSDT", "BUY", "5").await;
    stored(&svc, "main", "BTCUSDT", Decimal::from(15)).await;
    let p = price(&sim, "BTCUSDT").await;
    let stop = (p * Decimal::new(95, 2)).round_dp(2);
    let id = level(
        &svc,
        json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": stop.to_string()}),
    )
    .await;
    sim.post(
        "/sim/prices",
        &json!({"BTCUSDT": (stop * Decimal::new(98, 2)).round_dp(2).to_string()}),
    )
    .await;
    let done = svc
        .wait_get(
            "the level executed",
            &format!("/api/levels/{id}"),
            Duration::from_secs(30),
            |l| l["status"] == "executed" || l["status"] == "failed",
        )
        .await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(amount(&sim, "main", "BTCUSDT").await, Decimal::ZERO, "flat");
    let ours: Vec<Value> = common::venue::orders(&sim, "main", "BTCUSDT")
        .await
        .into_iter()
        .filter(|o| o["clientOrderId"].as_str().unwrap().starts_with("sm-"))
        .collect();
    assert!(ours.len() >= 2, "{ours:?}");
    assert!(ours.iter().all(|o| d(&o["origQty"]) <= Decimal::from(10)), "{ours:?}");
    assert_eq!(
        ours.iter().map(|o| d(&o["executedQty"])).sum::<Decimal>(),
        Decimal::from(15)
    );
    let m = svc.metrics().await;
    assert_eq!(
        common::sample(&m, r#"script_manager_level_close_refusals_total{step="split"}"#),
        Some(0.0),
        "split from the filters, not after a refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_held_by_the_venue_never_delays_another_symbols_trigger() {
    let sim = SimProcess::start(QUIET).await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "").await;
    trade(&sim, "main", "BTCUSDT", "BUY", "1").await;
    trade(&sim, "main", "ETHUSDT", "BUY", "1").await;
    stored(&svc, "main", "BTCUSDT", Decimal::ONE).await;
    stored(&svc, "main", "ETHUSDT", Decimal::ONE).await;
    let (btc, eth) = (price(&sim, "BTCUSDT").await, price(&sim, "ETHUSDT").await);
    let stop = |p: Decimal| (p * Decimal::new(95, 2)).round_dp(2);
    let a = level(
        &svc,
        json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": stop(btc).to_string()}),
    )
    .await;
    let b = level(
        &svc,
        json!({"account": "main", "symbol": "ETHUSDT", "stop_loss": stop(eth).to_string()}),
    )
    .await;

    // The venue takes BTC's close and holds its answer for 20 s.
    sim.post("/sim/faults", &json!({"hold_orders_ms": {"BTCUSDT": 20000}}))
        .await;
    sim.post(
        "/sim/prices",
        &json!({"BTCUSDT": (btc * Decimal::new(90, 2)).round_dp(2).to_string()}),
    )
    .await;
    for _ in 0..200 {
        if common::venue::orders(&sim, "main", "BTCUSDT").await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        common::venue::orders(&sim, "main", "BTCUSDT").await.len(),
        2,
        "the app's buy and our held close"
    );

    // ETH crosses now: its close goes out and finishes while BTC's answer is still held.
    sim.post(
        "/sim/prices",
        &json!({"ETHUSDT": (eth * Decimal::new(90, 2)).round_dp(2).to_string()}),
    )
    .await;
    let eth_done = svc
        .wait_get(
            "ETH executed",
            &format!("/api/levels/{b}"),
            Duration::from_secs(15),
            |l| l["status"] == "executed",
        )
        .await;
    let btc_now = svc.get_json(&format!("/api/levels/{a}")).await;
    assert_eq!(
        btc_now["status"], "triggered",
        "BTC is still waiting on the venue: {btc_now} / {eth_done}"
    );
    // And BTC's close completes once the venue answers.
    svc.wait_get(
        "BTC executed",
        &format!("/api/levels/{a}"),
        Duration::from_secs(60),
        |l| l["status"] == "executed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_on_a_hedge_mode_account_are_refused_with_the_reason() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    sim.post("/sim/hedge", &json!({"account": "alt", "enabled": true}))
        .await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "").await;
    // Read in the background shortly after start (each read weighs 30).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !svc.log().contains("hedge mode") {
        assert!(
            std::time::Instant::now() < deadline,
            "no hedge-mode error: {}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "alt", "symbol": "BTCUSDT", "side": "long", "stop_loss": "1"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("account:") && message.contains("hedge mode"),
        "{message}"
    );
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": "BTCUSDT", "side": "long", "stop_loss": "1"}),
        )
        .await;
    assert_eq!(status, 201, "one-way accounts are served: {body}");
}
