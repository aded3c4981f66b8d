//! The money path against a simulator that behaves like the venue, on SQLite
//! and PostgreSQL: closes confirmed only when the position is flat (ACK-only
//! answers, thin books, a SIGKILL between a partial fill and its follow-up),
//! closes refused for good, one failure never blocking the rest, one
//! account's bad credentials never blocking the others, unknown and delisted
//! symbols.

mod common;

use std::time::Duration;

use common::trading::{FAST, create_level_near, cross, d, receiver};
use common::venue::{amount as venue_position, orders};
use common::{Backend, Service, SimProcess, TestStore};
use rust_decimal::Decimal;
use serde_json::{Value, json};

async fn start(sim: &SimProcess, store: &TestStore, extra: &str, env: &[(&str, &str)]) -> Service {
    let config = format!(
        "{FAST}\n{}\n{extra}\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    let mut all = vec![("SCRIPT_MANAGER_STORE__URL", store.url.as_str())];
    all.extend_from_slice(env);
    common::start(&config, &all).await
}

async fn wait_level(svc: &Service, id: i64, status: &str) -> Value {
    svc.wait_get(
        &format!("level {id} to be {status}"),
        &format!("/api/levels/{id}"),
        Duration::from_secs(30),
        |l| l["status"] == status,
    )
    .await
}

/// An executed level took the whole position flat, never past it.
async fn assert_flat(svc: &Service, sim: &SimProcess, id: i64, symbol: &str, amount: Decimal, closes: usize) {
    let level = wait_level(svc, id, "executed").await;
    assert_eq!(
        venue_position(sim, "main", symbol).await,
        Decimal::ZERO,
        "the position is flat"
    );
    assert_eq!(d(&level["closed_qty"]), amount.abs(), "the summed closes: {level}");
    assert_eq!(level["close_orders"], closes as i64, "{level}");
    let placed = orders(sim, "main", symbol).await;
    assert_eq!(placed.len(), closes, "one order per close, no duplicate: {placed:?}");
    let base = level["client_order_id"].as_str().unwrap();
    for (n, order) in placed.iter().enumerate() {
        let id = if n == 0 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        assert_eq!(order["clientOrderId"], id.as_str(), "deterministic ids");
        assert_eq!(order["reduceOnly"], true);
    }
    let executed: Decimal = placed.iter().map(|o| d(&o["executedQty"])).sum();
    assert_eq!(
        executed,
        amount.abs(),
        "the venue executed exactly the position, no flip"
    );
}

async fn ack_only(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let svc = start(&sim, &store, "", &[]).await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    // Accepted, nothing filled yet, for 1.5 s: the answer to the close says NEW.
    sim.post("/sim/faults", &json!({"fill_delay_ms": 1500})).await;
    cross(&sim, &symbol, amount, sl).await;
    wait_level(&svc, id, "triggered").await;
    for _ in 0..10 {
        let placed = orders(&sim, "main", &symbol).await;
        let level = svc.get_json(&format!("/api/levels/{id}")).await;
        if placed.first().is_some_and(|o| o["status"] == "NEW") {
            assert_ne!(level["status"], "executed", "executed before the venue filled anything");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_flat(&svc, &sim, id, &symbol, amount, 1).await;
}

async fn thin_book(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let svc = start(&sim, &store, "", &[]).await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    // The first close fills 40 % and expires.
    sim.post("/sim/faults", &json!({"partial_fills": 1, "partial_fill_ratio": 0.4}))
        .await;
    cross(&sim, &symbol, amount, sl).await;
    assert_flat(&svc, &sim, id, &symbol, amount, 2).await;
    let first = &orders(&sim, "main", &symbol).await[0];
    assert_eq!(first["status"], "EXPIRED", "{first}");
    assert!(d(&first["executedQty"]) < amount.abs());
}

async fn sigkill_between_partial_and_follow_up(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let env = [("SCRIPT_MANAGER_EXCHANGE__REQUEST_TIMEOUT_SECONDS", "10")];
    let mut svc = start(&sim, &store, "", &env).await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    // The first close fills 40 %, expires, and its answer is held: the service is still waiting when killed.
    sim.post(
        "/sim/faults",
        &json!({"partial_fills": 1, "partial_fill_ratio": 0.4, "order_delay_after_execute_ms": 4000}),
    )
    .await;
    cross(&sim, &symbol, amount, sl).await;
    let mut placed = Vec::new();
    for _ in 0..200 {
        placed = orders(&sim, "main", &symbol).await;
        if !placed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(placed.len(), 1, "the partial close reached the venue");
    svc.kill();
    assert_ne!(
        venue_position(&sim, "main", &symbol).await,
        Decimal::ZERO,
        "part is still open"
    );
    sim.post("/sim/faults", &json!({})).await;
    let svc = start(&sim, &store, "", &env).await;
    assert_flat(&svc, &sim, id, &symbol, amount, 2).await;
}

async fn rejected_for_good(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let (url, seen) = receiver(0).await;
    let svc = start(
        &sim,
        &store,
        &format!("[notifications]\nwebhook_url = \"{url}\"\nallowed_webhook_hosts = [\"127.0.0.1\"]"),
        &[],
    )
    .await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    // -1121 (the symbol is no longer traded) is final in the refusal table: nothing a retry can change.
    sim.post("/sim/faults", &json!({"reject_orders": 1, "reject_code": -1121}))
        .await;
    cross(&sim, &symbol, amount, sl).await;
    let level = wait_level(&svc, id, "failed").await;
    assert!(level["error"].as_str().unwrap().contains("-1121"), "{level}");
    assert_eq!(
        venue_position(&sim, "main", &symbol).await,
        amount,
        "nothing was closed"
    );
    let m = svc.metrics().await;
    assert_eq!(
        common::sample(
            &m,
            r#"script_manager_level_triggers_total{kind="stop_loss",outcome="failed"}"#
        ),
        Some(1.0)
    );
    for _ in 0..100 {
        if seen.lock().unwrap().iter().any(|(_, key)| key.ends_with("-failed")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no level_failed webhook: {:?}", seen.lock().unwrap());
}

async fn one_failure_never_blocks_the_rest(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let svc = start(&sim, &store, "", &[]).await;
    let (a, a_symbol, a_amount, a_sl) = create_level_near(&svc, &sim, "main").await;
    let (b, b_symbol, b_amount, b_sl) = create_level_near(&svc, &sim, "alt").await;
    // Both crossed by one price move: the first close sent is refused for good, the other must still close.
    sim.post("/sim/faults", &json!({"reject_orders": 1, "reject_code": -1121}))
        .await;
    let beyond = |amount: Decimal, sl: Decimal| {
        if amount > Decimal::ZERO {
            sl * Decimal::new(98, 2)
        } else {
            sl * Decimal::new(102, 2)
        }
    };
    let mut prices = serde_json::Map::new();
    prices.insert(a_symbol.clone(), json!(beyond(a_amount, a_sl).round_dp(4).to_string()));
    prices.insert(b_symbol.clone(), json!(beyond(b_amount, b_sl).round_dp(4).to_string()));
    sim.post("/sim/prices", &Value::Object(prices)).await;
    // Well inside the 30 s after which a level dropped from the index would come back.
    let settled = svc
        .wait_get("both levels to settle", "/api/levels", Duration::from_secs(10), |ls| {
            ls.as_array()
                .unwrap()
                .iter()
                .filter(|l| l["id"] == a || l["id"] == b)
                .all(|l| l["status"] == "executed" || l["status"] == "failed")
        })
        .await;
    let statuses: Vec<&Value> = settled.as_array().unwrap().iter().map(|l| &l["status"]).collect();
    assert!(
        statuses.contains(&&json!("executed")) && statuses.contains(&&json!("failed")),
        "{settled}"
    );
}

async fn stuck_intent_never_blocks_a_new_level(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let svc = start(&sim, &store, "", &[]).await;
    let (a, a_symbol, a_amount, a_sl) = create_level_near(&svc, &sim, "main").await;
    let (b, b_symbol, b_amount, b_sl) = create_level_near(&svc, &sim, "alt").await;
    // A's close executes but its answer is lost, and every lookup fails: A stays pending for good.
    sim.post(
        "/sim/faults",
        &json!({"order_error_after_execute": 1, "error_rate": {"GET /fapi/v1/order": 1.0}}),
    )
    .await;
    cross(&sim, &a_symbol, a_amount, a_sl).await;
    wait_level(&svc, a, "triggered").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cross(&sim, &b_symbol, b_amount, b_sl).await;
    wait_level(&svc, b, "executed").await;
    let level_a = svc.get_json(&format!("/api/levels/{a}")).await;
    assert_eq!(level_a["status"], "triggered", "A is still pending: {level_a}");
    assert_eq!(
        orders(&sim, "main", &a_symbol).await.len(),
        1,
        "A was never resent blindly"
    );
}

async fn bad_credentials_of_one_account(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 120.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let exchange = sim
        .exchange_toml()
        .replace("api_secret = \"sim-alt-secret\"", "api_secret = \"wrong-secret\"");
    let config = format!("{FAST}\n{exchange}\n[http]\nadmin_token = \"{}\"\n", common::TOKEN);
    let svc = common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await;
    let positions = svc
        .wait_get(
            "main's positions",
            "/api/positions?account=main",
            Duration::from_secs(15),
            |p| p.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert!(!positions.as_array().unwrap().is_empty());
    svc.wait_get(
        "main's trades",
        "/api/trades?account=main",
        Duration::from_secs(15),
        |t| t.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    svc.wait_get(
        "main's dashboard",
        "/api/dashboard/main",
        Duration::from_secs(15),
        |d| d["account"] == "main",
    )
    .await;
    let doc = svc
        .wait_for("position_sync to report alt", Duration::from_secs(15), |d| {
            d["processes"]["position_sync"]["last_error_message"]
                .as_str()
                .is_some_and(|m| m.contains("account `alt`"))
        })
        .await;
    let message = doc["processes"]["position_sync"]["last_error_message"]
        .as_str()
        .unwrap();
    assert!(!message.contains("wrong-secret"), "{message}");
    // Both account processes have met alt's bad secret (whichever ran first).
    for _ in 0..150 {
        let m = svc.metrics().await;
        let met = |process: &str| {
            common::sample(
                &m,
                &format!(r#"script_manager_account_errors_total{{process="{process}",account="alt"}}"#),
            )
            .is_some_and(|n| n >= 1.0)
        };
        if met("position_sync") && met("trade_sync") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = svc.metrics().await;
    for process in ["position_sync", "trade_sync"] {
        let failed = common::sample(
            &m,
            &format!(r#"script_manager_account_errors_total{{process="{process}",account="alt"}}"#),
        );
        assert!(failed >= Some(1.0), "{process}: {failed:?}");
        let fine = common::sample(
            &m,
            &format!(r#"script_manager_account_errors_total{{process="{process}",account="main"}}"#),
        );
        assert_eq!(fine, Some(0.0), "{process}");
    }
}

async fn unknown_and_delisted_symbols(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    // A stream's reconciliation counts as trade sync's poll: polled again after a second.
    let svc = start(
        &sim,
        &store,
        "",
        &[("SCRIPT_MANAGER_EXCHANGE__STREAM_RECONCILE_SECONDS", "1")],
    )
    .await;
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": "NOPEUSDT", "stop_loss": "1"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("symbol:"),
        "{body}"
    );
    let (status, body) = svc
        .post_json(
            "/api/alerts",
            &json!({"symbol": "NOPEUSDT", "condition": "above", "price": "1"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // A symbol the account traded is delisted: trade sync skips it and goes on succeeding.
    let trades = svc
        .wait_get("trades", "/api/trades?account=main", Duration::from_secs(15), |t| {
            t.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let symbol = trades[0]["symbol"].as_str().unwrap().to_string();
    sim.post("/sim/delist", &json!({"symbol": symbol})).await;
    let before = svc.get_json("/api/script-manager/processes/trade_sync").await["metrics"]["success_count"]
        .as_u64()
        .unwrap();
    svc.wait_get(
        "trade_sync to go on",
        "/api/script-manager/processes/trade_sync",
        Duration::from_secs(15),
        |p| p["metrics"]["success_count"].as_u64() >= Some(before + 3) && p["status"] == "running",
    )
    .await;
    let skipped = common::sample(
        &svc.metrics().await,
        r#"script_manager_symbols_skipped_total{process="trade_sync"}"#,
    );
    assert!(skipped >= Some(1.0), "{skipped:?}");
}

/// Finished levels, intents, triggered alerts and sent notifications go after
/// the retention; armed levels, active alerts and pending work stay.
async fn finished_rows_are_pruned(backend: Backend) {
    use script_manager::domain::PositionSide;
    use script_manager::process::Fence;
    use script_manager::store::{CloseOutcome, Ending, NewAlert, NewLevel, Store};
    let test_store = TestStore::new(backend);
    let store = Store::open(&test_store.url).await.unwrap();
    let level = |symbol: &str| NewLevel {
        account: "main".into(),
        symbol: symbol.into(),
        side: PositionSide::Long,
        take_profit: None,
        stop_loss: Some(Decimal::ONE),
    };
    let done = store.insert_level(&level("BTCUSDT")).await.unwrap();
    let armed = store.insert_level(&level("ETHUSDT")).await.unwrap();
    let none = Fence::none();
    let (intent, claim) = store
        .trigger_level(&none, &done, ("stop_loss", Decimal::ONE, 0), ("test", 30_000))
        .await
        .unwrap()
        .unwrap();
    let outcome = CloseOutcome {
        ending: Ending::Executed,
        closed_qty: Decimal::ONE,
        avg_price: Some(Decimal::ONE),
        last_order_id: Some(7),
        orders: 1,
    };
    assert!(store.finish_intent(&claim, &intent, &outcome, None).await.unwrap());
    // A second settle of the same close (the stream's and the tick's at once) finishes nothing.
    let late = CloseOutcome {
        ending: Ending::Failed("settled twice".into()),
        ..outcome.clone()
    };
    assert!(!store.finish_intent(&claim, &intent, &late, None).await.unwrap());
    let finished = store.level(done.id).await.unwrap().unwrap();
    assert_eq!(finished.status.as_str(), "executed", "the first outcome stands");
    let alert = NewAlert {
        symbol: "BTCUSDT".into(),
        condition: "below".into(),
        price: Decimal::TEN,
        webhook_url: None,
    };
    let fired = store.insert_alert(&alert).await.unwrap();
    let active = store.insert_alert(&alert).await.unwrap();
    store.trigger_alert(&none, &fired, Decimal::ONE, None).await.unwrap();
    // Nothing is old enough yet.
    assert_eq!(store.prune_finished(0).await.unwrap(), 0);
    let later = script_manager::clock::now_ms() + 1_000;
    let gone = store.prune_finished(later).await.unwrap();
    assert_eq!(gone, 3, "the executed level, its intent and the triggered alert");
    let levels: Vec<i64> = store.levels(None).await.unwrap().iter().map(|l| l.id).collect();
    assert_eq!(levels, vec![armed.id]);
    let alerts: Vec<i64> = store.alerts(false).await.unwrap().iter().map(|a| a.id).collect();
    assert_eq!(alerts, vec![active.id]);
    assert_eq!(
        store.pending_notifications().await.unwrap(),
        2,
        "undelivered notifications stay"
    );
}

/// position_sync replacing an account's positions and user_stream applying an
/// `ACCOUNT_UPDATE` for the same row at the same moment both succeed.
async fn concurrent_position_writes(backend: Backend) {
    use script_manager::domain::Position;
    use script_manager::process::Fence;
    use script_manager::store::Store;
    let test_store = TestStore::new(backend);
    let store = std::sync::Arc::new(Store::open(&test_store.url).await.unwrap());
    let position = |amount: i64| Position {
        symbol: "BTCUSDT".into(),
        amount: Decimal::from(amount),
        entry_price: Decimal::ONE,
        mark_price: Decimal::ONE,
        unrealized_pnl: Decimal::ZERO,
        update_time_ms: 0,
    };
    for round in 0..40 {
        let (a, b) = (store.clone(), store.clone());
        let (p1, p2) = (position(round + 1), position(-(round + 1)));
        let replace = tokio::spawn(async move { a.replace_positions(&Fence::none(), "main", &[p1], 1).await });
        let update = tokio::spawn(async move { b.update_positions(&Fence::none(), "main", &[p2], 2).await });
        replace
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: position_sync's write: {e:#}"));
        update
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: user_stream's write: {e:#}"));
        let stored = store.positions(Some("main")).await.unwrap();
        assert_eq!(stored.len(), 1, "round {round}: one row per symbol");
    }
}

macro_rules! on_both_stores {
    ($($name:ident => $body:ident;)*) => {
        mod sqlite {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { $body(Backend::Sqlite).await })*
        }
        mod postgres {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { $body(Backend::Postgres).await })*
        }
    };
}

on_both_stores! {
    an_ack_only_close_is_executed_once_filled => ack_only;
    a_thin_book_close_is_followed_up_until_flat => thin_book;
    a_sigkill_between_partial_fill_and_follow_up_ends_flat => sigkill_between_partial_and_follow_up;
    a_close_refused_for_good_fails_the_level_and_tells => rejected_for_good;
    one_failing_close_does_not_stop_the_other => one_failure_never_blocks_the_rest;
    a_stuck_pending_intent_does_not_stop_a_new_level => stuck_intent_never_blocks_a_new_level;
    one_accounts_bad_credentials_do_not_stop_the_other => bad_credentials_of_one_account;
    unknown_symbols_are_refused_and_delisted_ones_skipped => unknown_and_delisted_symbols;
    finished_rows_are_pruned_after_retention => finished_rows_are_pruned;
    concurrent_position_writes_of_sync_and_stream_both_succeed => concurrent_position_writes;
}
