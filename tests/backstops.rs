//! Protection that outlives the service (issue 22): a conditional order on
//! the venue for every armed stop-loss, kept in sync, reconciled, recorded
//! when it fires while the service is away, and the kill switch. The real
//! binary against a simulator process over HTTP and WebSockets.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::trading::{FAST, d};
use common::venue::{amount as venue_amount, price, stored, trade};
use common::{Backend, Service, SimProcess, TestStore};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// No opening positions, no trading elsewhere, prices still.
const QUIET: &str = "fills_per_minute = 0.0\nvolatility = 0.0\nopening_positions = 0";

async fn start(sim: &SimProcess, store: &TestStore) -> Service {
    let config = format!(
        "{FAST}\n{}\n[levels]\nbackstop_reconcile_seconds = 5\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", store.url.as_str())]).await
}

async fn algo_orders(sim: &SimProcess, account: &str) -> Vec<Value> {
    sim.get(&format!("/sim/algo_orders?account={account}"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

fn open(orders: &[Value]) -> Vec<&Value> {
    orders.iter().filter(|o| o["algoStatus"] == "NEW").collect()
}

async fn our_orders(sim: &SimProcess, symbol: &str) -> Vec<Value> {
    sim.get("/sim/orders?account=main")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["symbol"] == symbol && o["clientOrderId"].as_str().unwrap_or("").starts_with("sm-"))
        .cloned()
        .collect()
}

async fn level(svc: &Service, account: &str, symbol: &str, stop: Decimal) -> i64 {
    let body = json!({"account": account, "symbol": symbol, "stop_loss": stop.to_string()});
    let (status, level) = svc.post_json("/api/levels", &body).await;
    assert_eq!(status, 201, "{level}");
    level["id"].as_i64().unwrap()
}

/// Polls the simulator until `check` holds; fails with the last answer after `timeout`.
async fn until(sim: &SimProcess, what: &str, timeout: Duration, mut check: impl AsyncFnMut(&SimProcess) -> bool) {
    let deadline = Instant::now() + timeout;
    while !check(sim).await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backstop_follows_its_level_onto_the_venue_and_away() {
    let sim = SimProcess::start(QUIET).await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store).await;
    trade(&sim, "main", "BTCUSDT", "BUY", "1").await;
    stored(&svc, "main", "BTCUSDT", Decimal::ONE).await;
    let stop = (price(&sim, "BTCUSDT").await * Decimal::new(95, 2)).round_dp(1);
    let armed = Instant::now();
    let id = level(&svc, "main", "BTCUSDT", stop).await;
    until(
        &sim,
        "one backstop on the venue",
        Duration::from_secs(20),
        async |sim| open(&algo_orders(sim, "main").await).len() == 1,
    )
    .await;
    println!("backstop placed {:?} after the level was armed", armed.elapsed());
    let orders = algo_orders(&sim, "main").await;
    let b = open(&orders)[0];
    // The stop moved 0.5 % further down (a long), on a whole tick of 0.1, rounded away from the market.
    let expected = ((stop * Decimal::new(995, 3)) / Decimal::new(1, 1)).floor() * Decimal::new(1, 1);
    assert_eq!(d(&b["triggerPrice"]), expected, "{b}");
    assert_eq!(
        (
            &b["side"],
            &b["orderType"],
            &b["workingType"],
            &b["closePosition"],
            &b["priceProtect"]
        ),
        (
            &json!("SELL"),
            &json!("STOP_MARKET"),
            &json!("MARK_PRICE"),
            &json!(true),
            &json!(true)
        ),
        "{b}"
    );
    let client = b["clientAlgoId"].as_str().unwrap();
    assert!(
        client.starts_with("sm-") && client.contains(&format!("-{id}-s")),
        "{client}"
    );
    // The row turns live when the venue's answer is read, a moment after the
    // order rests there (on a loaded machine, more than a moment).
    let doc = svc
        .wait_get(
            "the backstop recorded live",
            &format!("/api/levels/{id}"),
            Duration::from_secs(10),
            |doc| doc["backstops"][0]["state"] == "live",
        )
        .await;
    assert_eq!(doc["backstops"][0]["client_algo_id"], client);

    let (status, _) = svc.delete(&format!("/api/levels/{id}")).await;
    assert_eq!(status, 204);
    let deleted = Instant::now();
    until(&sim, "the backstop gone", Duration::from_secs(20), async |sim| {
        open(&algo_orders(sim, "main").await).is_empty()
    })
    .await;
    println!("backstop cancelled {:?} after the level was deleted", deleted.elapsed());
    let m = svc.metrics().await;
    assert_eq!(
        common::sample(
            &m,
            r#"script_manager_backstop_changes_total{action="place",outcome="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        common::sample(
            &m,
            r#"script_manager_backstop_changes_total{action="cancel",outcome="ok"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_close_fires_first_and_the_backstop_is_cancelled() {
    let sim = SimProcess::start(QUIET).await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store).await;
    trade(&sim, "main", "ETHUSDT", "BUY", "2").await;
    stored(&svc, "main", "ETHUSDT", Decimal::TWO).await;
    let stop = (price(&sim, "ETHUSDT").await * Decimal::new(95, 2)).round_dp(1);
    let id = level(&svc, "main", "ETHUSDT", stop).await;
    until(&sim, "the backstop", Duration::from_secs(20), async |sim| {
        open(&algo_orders(sim, "main").await).len() == 1
    })
    .await;
    // Through the level (0.2 % below it), not through the backstop (0.5 % below).
    let through = (stop * Decimal::new(998, 3)).round_dp(1);
    sim.post("/sim/prices", &json!({"ETHUSDT": through.to_string()})).await;
    let done = svc
        .wait_get(
            "the level executed",
            &format!("/api/levels/{id}"),
            Duration::from_secs(20),
            |l| l["status"] == "executed",
        )
        .await;
    assert_eq!(done["closed_by"], "service", "{done}");
    until(&sim, "the backstop cancelled", Duration::from_secs(20), async |sim| {
        let all = algo_orders(sim, "main").await;
        all.len() == 1 && all[0]["algoStatus"] == "CANCELED"
    })
    .await;
    assert_eq!(our_orders(&sim, "ETHUSDT").await.len(), 1, "one close in total");
    assert_eq!(venue_amount(&sim, "main", "ETHUSDT").await, Decimal::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_by_the_venue_while_the_service_is_down_is_recorded_after_restart() {
    let sim = SimProcess::start(QUIET).await;
    let store = TestStore::new(Backend::Sqlite);
    let mut svc = start(&sim, &store).await;
    trade(&sim, "main", "BTCUSDT", "BUY", "1").await;
    stored(&svc, "main", "BTCUSDT", Decimal::ONE).await;
    let p = price(&sim, "BTCUSDT").await;
    let stop = (p * Decimal::new(95, 2)).round_dp(1);
    let id = level(&svc, "main", "BTCUSDT", stop).await;
    until(&sim, "the backstop", Duration::from_secs(20), async |sim| {
        open(&algo_orders(sim, "main").await).len() == 1
    })
    .await;
    svc.kill();
    // Far through: the venue's backstop fires (on the mark price, a second later) and closes the position.
    sim.post(
        "/sim/prices",
        &json!({"BTCUSDT": (p * Decimal::new(90, 2)).round_dp(1).to_string()}),
    )
    .await;
    until(
        &sim,
        "the venue's backstop to close the position",
        Duration::from_secs(20),
        async |sim| venue_amount(sim, "main", "BTCUSDT").await.is_zero(),
    )
    .await;
    let svc = start(&sim, &store).await;
    let done = svc
        .wait_get(
            "the level executed by the venue",
            &format!("/api/levels/{id}"),
            Duration::from_secs(30),
            |l| l["status"] != "armed" && l["status"] != "triggered",
        )
        .await;
    assert_eq!(
        (&done["status"], &done["closed_by"]),
        (&json!("executed"), &json!("venue")),
        "{done}"
    );
    assert_eq!(d(&done["closed_qty"]), Decimal::ONE, "{done}");
    assert!(done["avg_price"].is_string(), "{done}");
    assert!(our_orders(&sim, "BTCUSDT").await.is_empty(), "no order of ours");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        open(&algo_orders(&sim, "main").await).is_empty(),
        "no algo order left open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_ours_are_cancelled_and_other_clients_orders_left_alone() {
    use script_manager::app::exchange::demo_accounts;
    use script_manager::budget::{Admission, Caller, ProcessCalls, VenueWeight};
    use script_manager::domain::{AlgoKind, AlgoOrderRequest, AlgoSize, OrderSide, WorkingType};
    use script_manager::exchange::Venue;
    use script_manager::exchange::binance::{Binance, TransportOptions};

    let sim = SimProcess::start(QUIET).await;
    let store = TestStore::new(Backend::Sqlite);
    let installation = script_manager::store::Store::open(&store.url)
        .await
        .unwrap()
        .installation()
        .to_string();
    trade(&sim, "main", "BTCUSDT", "BUY", "1").await;
    // A client of our own, as another program on the account would be.
    let weight = Arc::new(VenueWeight::new(2400, 0.8, 0.0, []));
    let admission = Admission::new(Arc::new(ProcessCalls::new([("test".to_string(), 1000)])), weight);
    let options = TransportOptions {
        base_url: sim.base.clone(),
        recv_window_ms: 5000,
        timeout: Duration::from_secs(5),
    };
    let knobs = script_manager::upstream::Knobs {
        batching: false,
        dedupe: false,
        cache: false,
    };
    let metrics = Arc::new(script_manager::telemetry::Metrics::new());
    let venue = Binance::new(
        options,
        knobs,
        admission,
        metrics,
        script_manager::accounts::Accounts::new(demo_accounts(), script_manager::accounts::Source::File),
    )
    .unwrap();
    let caller = Caller::new("test", 1, tokio::time::Instant::now() + Duration::from_secs(10));
    let p = price(&sim, "BTCUSDT").await;
    for client in [format!("sm-{installation}-999-s1"), "their-stop-1".to_string()] {
        let request = AlgoOrderRequest {
            symbol: "BTCUSDT".into(),
            side: OrderSide::Sell,
            kind: AlgoKind::StopMarket,
            trigger_price: (p * Decimal::new(80, 2)).round_dp(1),
            working_type: WorkingType::MarkPrice,
            size: AlgoSize::ClosePosition,
            price_protect: false,
            client_algo_id: client,
        };
        venue.place_algo_order(&caller, "main", &request).await.unwrap();
    }
    assert_eq!(open(&algo_orders(&sim, "main").await).len(), 2);
    let _svc = start(&sim, &store).await;
    until(&sim, "the orphan cancelled", Duration::from_secs(20), async |sim| {
        let all = algo_orders(sim, "main").await;
        let status = |prefix: &str| {
            all.iter()
                .find(|o| o["clientAlgoId"].as_str().unwrap().starts_with(prefix))
                .map(|o| o["algoStatus"].as_str().unwrap().to_string())
        };
        status("sm-").as_deref() == Some("CANCELED") && status("their-").as_deref() == Some("NEW")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = algo_orders(&sim, "main").await;
    let theirs = all.iter().find(|o| o["clientAlgoId"] == "their-stop-1").unwrap();
    assert_eq!(theirs["algoStatus"], "NEW", "never touched: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_flattens_an_account_once() {
    let sim = SimProcess::start(QUIET).await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store).await;
    trade(&sim, "main", "BTCUSDT", "BUY", "1").await;
    trade(&sim, "main", "ETHUSDT", "SELL", "3").await;
    trade(&sim, "main", "SOLUSDT", "BUY", "10").await;
    trade(&sim, "alt", "BTCUSDT", "BUY", "2").await;
    stored(&svc, "main", "SOLUSDT", Decimal::TEN).await;
    let mut levels = Vec::new();
    for (symbol, long) in [("BTCUSDT", true), ("ETHUSDT", false)] {
        let p = price(&sim, symbol).await;
        let stop = if long {
            p * Decimal::new(95, 2)
        } else {
            p * Decimal::new(105, 2)
        };
        levels.push(level(&svc, "main", symbol, stop.round_dp(1)).await);
    }
    until(&sim, "two backstops", Duration::from_secs(20), async |sim| {
        open(&algo_orders(sim, "main").await).len() == 2
    })
    .await;

    let (status, report) = svc.post_json("/api/accounts/main/flatten", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["failed_accounts"], json!([]), "{report}");
    let positions = report["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 3, "{report}");
    for symbol in ["BTCUSDT", "ETHUSDT", "SOLUSDT"] {
        until(&sim, &format!("{symbol} flat"), Duration::from_secs(20), async |sim| {
            venue_amount(sim, "main", symbol).await.is_zero()
        })
        .await;
        assert_eq!(our_orders(&sim, symbol).await.len(), 1, "{symbol}: closed once");
    }
    assert_eq!(
        venue_amount(&sim, "alt", "BTCUSDT").await,
        Decimal::TWO,
        "another account is untouched"
    );
    for id in &levels {
        let l = svc.get_json(&format!("/api/levels/{id}")).await;
        assert_eq!(
            (&l["status"], &l["reason"]),
            (&json!("cancelled"), &json!("flattened")),
            "{l}"
        );
    }
    // The backstops are cancelled (by the kill switch, or first by the closes it started).
    until(&sim, "no backstop left open", Duration::from_secs(20), async |sim| {
        open(&algo_orders(sim, "main").await).is_empty()
    })
    .await;

    let (status, again) = svc.post_json("/api/accounts/main/flatten", &json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["positions"], json!([]), "nothing open: a no-op");
    assert_eq!(again["backstops_cancelled"], 0);
    for symbol in ["BTCUSDT", "ETHUSDT", "SOLUSDT"] {
        assert_eq!(our_orders(&sim, symbol).await.len(), 1, "{symbol}: no second close");
    }
    let (status, _) = svc.post_json("/api/accounts/nobody/flatten", &json!({})).await;
    assert_eq!(status, 404);
}
