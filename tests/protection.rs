//! Protection you can trust (issue 21): a level belongs to its position, a
//! close never gives up while a retry can work, exactly one sender per
//! close. Store tests run on SQLite and PostgreSQL; service tests run the
//! real binary against a simulator process over HTTP and WebSockets.

mod common;

use std::time::Duration;

use common::trading::{FAST, create_level_near, cross, d, receiver};
use common::venue::{amount as venue_amount, orders};
use common::{Backend, Service, SimProcess, TestStore};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use script_manager::domain::PositionSide;
use script_manager::process::Fence;
use script_manager::store::{CloseOutcome, Ending, NewLevel, Store};

async fn start(sim: &SimProcess, store: &TestStore, extra: &str) -> Service {
    let config = format!(
        "{FAST}\n{}\n{extra}\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", store.url.as_str())]).await
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

/// Two close workers (two replicas, or the stream and the tick) ask for the
/// same intent: one holds it, the other gets nothing until the claim lapses,
/// and a claim that was taken over can neither move the intent nor finish it.
async fn one_claim_at_a_time(backend: Backend) {
    let test_store = TestStore::new(backend);
    let store = Store::open(&test_store.url).await.unwrap();
    let level = store
        .insert_level(&NewLevel {
            account: "main".into(),
            symbol: "BTCUSDT".into(),
            side: PositionSide::Long,
            take_profit: None,
            stop_loss: Some(Decimal::ONE),
        })
        .await
        .unwrap();
    let (intent, a) = store
        .trigger_level(&Fence::none(), &level, ("stop_loss", Decimal::ONE, 0), ("a", 60_000))
        .await
        .unwrap()
        .expect("armed");
    assert!(
        intent
            .client_order_id
            .starts_with(&format!("sm-{}-{}-", store.installation(), level.id)),
        "the id carries the installation: {}",
        intent.client_order_id
    );
    assert!(
        intent.client_order_id.len() + "-99".len() <= 36,
        "{}",
        intent.client_order_id
    );
    let id = intent.client_order_id.clone();
    assert_eq!(store.claim_intent(&id, "b", 60_000).await.unwrap(), None, "a holds it");
    let (_, renewed) = store.claim_intent(&id, "a", 60_000).await.unwrap().expect("a renews");
    assert_eq!(renewed, a, "a renewal keeps the token");
    assert!(
        store.unclaimed_intents().await.unwrap().is_empty(),
        "a live claim is nobody's to adopt"
    );

    // a's claim lapses (a frozen replica): b takes over with a new token.
    store.release_intent(&id, &a).await.unwrap();
    assert_eq!(store.unclaimed_intents().await.unwrap().len(), 1);
    let (_, b) = store
        .claim_intent(&id, "b", 60_000)
        .await
        .unwrap()
        .expect("lapsed: b takes it");
    assert!(b.token > a.token, "{b:?} after {a:?}");
    assert_eq!(store.claim_intent(&id, "a", 60_000).await.unwrap(), None, "a lost it");

    // a comes back and tries to write: nothing happens.
    assert!(
        !store
            .advance_intent(&a, &intent, Decimal::ONE, Decimal::ONE, 1)
            .await
            .unwrap()
    );
    let outcome = |ending| CloseOutcome {
        ending,
        closed_qty: Decimal::ZERO,
        avg_price: None,
        last_order_id: None,
        orders: 0,
    };
    let stale = outcome(Ending::Cancelled("position_closed"));
    assert!(!store.finish_intent(&a, &intent, &stale, None).await.unwrap());
    assert_eq!(
        store.level(level.id).await.unwrap().unwrap().status.as_str(),
        "triggered"
    );
    assert!(
        store
            .finish_intent(&b, &intent, &outcome(Ending::Executed), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.level(level.id).await.unwrap().unwrap().status.as_str(),
        "executed"
    );
    assert_eq!(store.claim_intent(&id, "b", 60_000).await.unwrap(), None, "finished");
}

/// A restarted service takes up its previous life's closes at once: its own
/// replica's claims (HA), or every claim (one instance per store).
async fn stale_claims_are_released(backend: Backend) {
    let test_store = TestStore::new(backend);
    let store = Store::open(&test_store.url).await.unwrap();
    let level = store
        .insert_level(&NewLevel {
            account: "main".into(),
            symbol: "BTCUSDT".into(),
            side: PositionSide::Short,
            take_profit: None,
            stop_loss: Some(Decimal::TEN),
        })
        .await
        .unwrap();
    let (intent, _) = store
        .trigger_level(
            &Fence::none(),
            &level,
            ("stop_loss", Decimal::TEN, 0),
            ("r_1/dead", 60_000),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.release_claims_of(Some("r%1")).await.unwrap(),
        0,
        "LIKE patterns are escaped"
    );
    assert_eq!(
        store.release_claims_of(Some("r_2")).await.unwrap(),
        0,
        "another replica's claim stays"
    );
    assert!(store.unclaimed_intents().await.unwrap().is_empty());
    assert_eq!(store.release_claims_of(Some("r_1")).await.unwrap(), 1);
    let adoptable = store.unclaimed_intents().await.unwrap();
    assert_eq!(adoptable.len(), 1);
    assert_eq!(adoptable[0].client_order_id, intent.client_order_id);
}

/// The installation id is made once and kept: a second start reads it back.
async fn installation_id_is_kept(backend: Backend) {
    let test_store = TestStore::new(backend);
    let first = Store::open(&test_store.url).await.unwrap().installation().to_string();
    let again = Store::open(&test_store.url).await.unwrap().installation().to_string();
    assert_eq!(first.len(), script_manager::store::INSTALLATION_ID_LEN);
    assert_eq!(first, again);
    let other = TestStore::new(backend);
    let elsewhere = Store::open(&other.url).await.unwrap().installation().to_string();
    assert_ne!(first, elsewhere, "a fresh store is another installation");
}

/// A position written flat or the other way retires the levels set for it,
/// in the same transaction, with a reason and an outbox event; one that grows keeps them.
async fn levels_retire_with_their_position(backend: Backend) {
    use script_manager::domain::Position;
    let test_store = TestStore::new(backend);
    let store = Store::open(&test_store.url).await.unwrap();
    let position = |symbol: &str, amount: i64, time: i64| Position {
        symbol: symbol.into(),
        amount: Decimal::from(amount),
        entry_price: Decimal::ONE,
        mark_price: Decimal::ONE,
        unrealized_pnl: Decimal::ZERO,
        update_time_ms: time,
    };
    let none = Fence::none();
    store
        .update_positions(
            &none,
            "main",
            &[position("BTCUSDT", 2, 10), position("ETHUSDT", -3, 10)],
            0,
        )
        .await
        .unwrap();
    let level = |symbol: &str, side| NewLevel {
        account: "main".into(),
        symbol: symbol.into(),
        side,
        take_profit: None,
        stop_loss: Some(Decimal::ONE),
    };
    let btc = store.insert_level(&level("BTCUSDT", PositionSide::Long)).await.unwrap();
    let eth = store
        .insert_level(&level("ETHUSDT", PositionSide::Short))
        .await
        .unwrap();

    // BTC grows: its level stays armed.
    let changes = store
        .update_positions(&none, "main", &[position("BTCUSDT", 5, 20)], 0)
        .await
        .unwrap();
    assert!(changes.iter().all(|c| c.retired.is_empty()), "{changes:?}");
    assert_eq!(store.level(btc.id).await.unwrap().unwrap().status.as_str(), "armed");

    // BTC flips to a short (closed on the venue's app, a short opened): retired, never re-read as the short's.
    let changes = store
        .update_positions(&none, "main", &[position("BTCUSDT", -1, 30)], 0)
        .await
        .unwrap();
    assert_eq!(changes[0].retired, vec![btc.id]);
    assert_eq!(changes[0].retire_reason(), "position_flipped");
    let retired = store.level(btc.id).await.unwrap().unwrap();
    assert_eq!(
        (retired.status.as_str(), retired.reason.as_deref()),
        ("cancelled", Some("position_flipped"))
    );

    // ETH disappears from a full snapshot: flat, retired.
    let changes = store
        .replace_positions(&none, "main", &[position("BTCUSDT", -1, 40)], 0)
        .await
        .unwrap();
    let eth_change = changes.iter().find(|c| c.symbol == "ETHUSDT").expect("ETH went flat");
    assert_eq!(eth_change.retired, vec![eth.id]);
    let retired = store.level(eth.id).await.unwrap().unwrap();
    assert_eq!(
        (retired.status.as_str(), retired.reason.as_deref()),
        ("cancelled", Some("position_closed"))
    );
    let notes = store.notifications(10).await.unwrap();
    let cancelled = notes.iter().filter(|n| n["kind"] == "level_cancelled").count();
    assert_eq!(cancelled, 2, "{notes:?}");
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
    a_close_has_one_claim_at_a_time_and_a_lost_claim_writes_nothing => one_claim_at_a_time;
    the_installation_id_is_made_once_and_kept => installation_id_is_kept;
    levels_are_retired_with_their_position => levels_retire_with_their_position;
    a_restart_releases_its_previous_lifes_claims => stale_claims_are_released;
}

/// -4131 (best price outside PERCENT_PRICE: a fast market) twice, then
/// accepted: the close goes on until flat, the level is executed, and no
/// `level_failed` is ever said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_refusal_is_retried_until_flat() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    let (url, seen) = receiver(0).await;
    let svc = start(
        &sim,
        &store,
        &format!("[notifications]\nwebhook_url = \"{url}\"\nallowed_webhook_hosts = [\"127.0.0.1\"]"),
    )
    .await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    sim.post("/sim/faults", &json!({"reject_orders": 2, "reject_code": -4131}))
        .await;
    cross(&sim, &symbol, amount, sl).await;
    let level = wait_level(&svc, id, "executed").await;
    assert_eq!(d(&level["closed_qty"]), amount.abs(), "{level}");
    assert_eq!(venue_amount(&sim, "main", &symbol).await, Decimal::ZERO, "flat");
    let placed = orders(&sim, "main", &symbol).await;
    assert_eq!(
        placed.len(),
        1,
        "refused orders are not placed; one accepted: {placed:?}"
    );
    let m = svc.metrics().await;
    assert_eq!(
        common::sample(&m, r#"script_manager_level_close_refusals_total{step="retry_later"}"#),
        Some(2.0)
    );
    assert_eq!(common::sample(&m, "script_manager_level_close_retrying"), Some(0.0));
    assert_eq!(
        common::sample(
            &m,
            r#"script_manager_level_triggers_total{kind="stop_loss",outcome="failed"}"#
        ),
        Some(0.0)
    );
    svc.wait_get("the executed webhook", "/api/levels", Duration::from_secs(10), |_| {
        seen.lock().unwrap().iter().any(|(_, key)| key.ends_with("-executed"))
    })
    .await;
    assert!(
        !seen.lock().unwrap().iter().any(|(_, key)| key.ends_with("-failed")),
        "{:?}",
        seen.lock().unwrap()
    );
}

/// -4005 (above the most one MARKET order may carry): the close is split,
/// the parts take the position flat, and the split is not a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_too_large_for_one_order_is_split() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "").await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    sim.post("/sim/faults", &json!({"reject_orders": 1, "reject_code": -4005}))
        .await;
    cross(&sim, &symbol, amount, sl).await;
    let level = wait_level(&svc, id, "executed").await;
    assert_eq!(venue_amount(&sim, "main", &symbol).await, Decimal::ZERO, "flat");
    let placed = orders(&sim, "main", &symbol).await;
    assert!(placed.len() >= 2, "split into parts: {placed:?}");
    let executed: Decimal = placed.iter().map(|o| d(&o["executedQty"])).sum();
    assert_eq!(executed, amount.abs(), "exactly the position, never past it");
    assert!(placed.iter().all(|o| d(&o["origQty"]) < amount.abs()), "{placed:?}");
    assert_eq!(level["close_orders"], placed.len() as i64, "{level}");
}

/// The field a 422 names (`{"error": {"message": "<field>: ..."}}`).
fn field(body: &Value) -> Option<&str> {
    body["error"]["message"].as_str()?.split(':').next()
}

/// A level records the side of the position it protects: taken from the
/// open position, or named in the request when there is none yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_is_created_for_a_position() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Sqlite);
    let svc = start(&sim, &store, "").await;
    let positions = svc
        .wait_get(
            "positions",
            "/api/positions?account=main",
            Duration::from_secs(10),
            |p| p.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let open = &positions.as_array().unwrap()[0];
    let symbol = open["symbol"].as_str().unwrap();
    let held = if d(&open["amount"]) > Decimal::ZERO {
        "long"
    } else {
        "short"
    };
    let other = if held == "long" { "short" } else { "long" };
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": symbol, "stop_loss": "1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["side"], held, "the open position's side: {body}");

    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": symbol, "side": other, "stop_loss": "1"}),
        )
        .await;
    assert_eq!((status, field(&body)), (422, Some("side")), "{body}");

    let flat = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
        .into_iter()
        .find(|s| !positions.as_array().unwrap().iter().any(|p| p["symbol"] == *s))
        .expect("a symbol without a position");
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": flat, "stop_loss": "1"}),
        )
        .await;
    assert_eq!((status, field(&body)), (422, Some("symbol")), "{body}");
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": flat, "side": "short", "stop_loss": "2", "take_profit": "1"}),
        )
        .await;
    assert_eq!(status, 201, "a side named for a position not open yet: {body}");
    assert_eq!(body["side"], "short");
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": flat, "side": "long", "stop_loss": "2", "take_profit": "1"}),
        )
        .await;
    assert_eq!((status, field(&body)), (422, Some("take_profit")), "{body}");
}
