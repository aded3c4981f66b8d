//! The six trading processes against the simulator (in its own process), on
//! SQLite and on PostgreSQL: trades without gaps or duplicates across a
//! SIGKILL, stop-losses executed exactly once under faults and restarts,
//! alerts delivered exactly once, dashboards that match a recomputation.

mod common;

use std::collections::BTreeSet;

use std::time::Duration;

use common::trading::{FAST, create_level_near, cross, d, receiver, service};
use common::{Backend, Service, SimProcess, TestStore};
use rust_decimal::Decimal;
use serde_json::{Value, json};

async fn successes(svc: &Service, process: &str) -> u64 {
    svc.get_json(&format!("/api/script-manager/processes/{process}")).await["metrics"]["success_count"]
        .as_u64()
        .unwrap_or(0)
}

async fn wait_runs(svc: &Service, process: &str, more: u64) {
    let start = successes(svc, process).await;
    svc.wait_for(
        &format!("{more} more successful {process} runs"),
        Duration::from_secs(30),
        |d| {
            d["processes"][process]["metrics"]["success_count"]
                .as_u64()
                .unwrap_or(0)
                >= start + more
        },
    )
    .await;
}

type Key = (String, u64);

fn sim_keys(fills: &Value) -> BTreeSet<Key> {
    fills
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["symbol"].as_str().unwrap().to_string(), f["id"].as_u64().unwrap()))
        .collect()
}

async fn trades_survive_a_sigkill(backend: Backend) {
    let sim = SimProcess::start(
        "fills_per_minute = 600.0\nprice_step_ms = 100\nweight_limit = 100000\n\
         [exchange.simulator.symbols]\nBTCUSDT = 100000.0\nETHUSDT = 4000.0\nSOLUSDT = 200.0",
    )
    .await;
    let store = TestStore::new(backend);
    let all = sim.get("/fapi/v1/exchangeInfo").await["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].clone())
        .collect::<Vec<_>>();
    let symbols_env = serde_json::to_string(&all).unwrap();
    let mut svc = common::start(
        &format!("{FAST}\n{}\n", sim.exchange_toml()),
        &[
            ("SCRIPT_MANAGER_STORE__URL", &store.url),
            ("SCRIPT_MANAGER_EXCHANGE__SYMBOLS", &symbols_env),
        ],
    )
    .await;
    wait_runs(&svc, "trade_sync", 2).await;
    svc.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let svc = common::start(
        &format!("{FAST}\n{}\n", sim.exchange_toml()),
        &[
            ("SCRIPT_MANAGER_STORE__URL", &store.url),
            ("SCRIPT_MANAGER_EXCHANGE__SYMBOLS", &symbols_env),
        ],
    )
    .await;
    for account in ["main", "alt"] {
        let before = sim_keys(&sim.get(&format!("/sim/fills?account={account}")).await);
        wait_runs(&svc, "trade_sync", 2).await;
        let after = sim_keys(&sim.get(&format!("/sim/fills?account={account}")).await);
        assert!(after.len() > before.len(), "fills kept appearing during the test");
        let stored = svc
            .get_json(&format!("/api/trades?account={account}&limit=10000"))
            .await;
        let rows = stored.as_array().unwrap();
        let keys: BTreeSet<Key> = rows
            .iter()
            .map(|t| (t["symbol"].as_str().unwrap().to_string(), t["id"].as_u64().unwrap()))
            .collect();
        assert_eq!(keys.len(), rows.len(), "{account}: a trade stored twice");
        let missing: Vec<_> = before.difference(&keys).collect();
        assert!(
            missing.is_empty(),
            "{account}: fills missing from the store: {missing:?}"
        );
        let invented: Vec<_> = keys.difference(&after).collect();
        assert!(
            invented.is_empty(),
            "{account}: trades the venue never had: {invented:?}"
        );
        assert!(
            before.len() > 10,
            "{account}: the simulator produced fills ({})",
            before.len()
        );
    }
}

async fn assert_closed_once(svc: &Service, sim: &SimProcess, id: i64, account: &str, symbol: &str) {
    let level = svc
        .wait_get(
            "the level to be executed",
            &format!("/api/levels/{id}"),
            Duration::from_secs(30),
            |l| l["status"] == "executed",
        )
        .await;
    let client_id = level["client_order_id"].as_str().unwrap().to_string();
    // sm-<installation>-<level>-<version>: six letters or digits for the installation.
    let installation = client_id
        .strip_prefix("sm-")
        .and_then(|rest| rest.strip_suffix(&format!("-{id}-1")))
        .unwrap_or_else(|| panic!("{client_id} is not sm-<installation>-{id}-1"));
    assert!(
        installation.len() == 6
            && installation
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{client_id}"
    );
    assert!(level["order_id"].as_i64().is_some(), "{level}");
    let orders = sim.get(&format!("/sim/orders?account={account}")).await;
    let executions: Vec<&Value> = orders
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["symbol"] == symbol)
        .collect();
    assert_eq!(executions.len(), 1, "exactly one close order: {orders}");
    assert_eq!(executions[0]["clientOrderId"], client_id.as_str());
    assert_eq!(executions[0]["reduceOnly"], true);
    assert_eq!(executions[0]["orderId"].as_i64(), level["order_id"].as_i64());
}

async fn stop_loss_exactly_once(backend: Backend, faults: Value, timeout_s: f64, restart_while_in_flight: bool) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let env_timeout = timeout_s.to_string();
    let env = [
        ("SCRIPT_MANAGER_STORE__URL", store.url.as_str()),
        ("SCRIPT_MANAGER_EXCHANGE__REQUEST_TIMEOUT_SECONDS", env_timeout.as_str()),
    ];
    let config = format!(
        "{FAST}\n{}\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    let mut svc = common::start(&config, &env).await;
    let (id, symbol, amount, sl) = create_level_near(&svc, &sim, "main").await;
    sim.post("/sim/faults", &faults).await;
    cross(&sim, &symbol, amount, sl).await;
    if restart_while_in_flight {
        svc.wait_get(
            "the trigger",
            &format!("/api/levels/{id}"),
            Duration::from_secs(10),
            |l| l["status"] == "triggered",
        )
        .await;
        svc.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        svc = common::start(&config, &env).await;
    }
    assert_closed_once(&svc, &sim, id, "main", &symbol).await;
    // Later ticks change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let orders = sim.get("/sim/orders?account=main").await;
    assert_eq!(orders.as_array().unwrap().len(), 1, "{orders}");
    let m = svc.metrics().await;
    assert_eq!(
        common::sample(
            &m,
            r#"script_manager_level_triggers_total{kind="stop_loss",outcome="executed"}"#
        ),
        Some(1.0)
    );
}

async fn alert_delivered_once(backend: Backend, restart: bool) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(backend);
    let (url, seen) = receiver(2).await;
    let config = format!(
        "{FAST}\n{}\n[http]\nadmin_token = \"{}\"\n\
         [notifications]\nallowed_webhook_hosts = [\"127.0.0.1\"]\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    let env = [("SCRIPT_MANAGER_STORE__URL", store.url.as_str())];
    let mut svc = common::start(&config, &env).await;
    let price = d(&sim.get("/fapi/v1/ticker/price?symbol=ETHUSDT").await["price"]);
    let (status, body) = svc
        .post_json("/api/alerts", &json!({"symbol": "ETHUSDT", "condition": "below", "price": (price * Decimal::new(99, 2)).round_dp(2).to_string(), "webhook_url": url}))
        .await;
    assert_eq!(status, 201, "{body}");
    sim.post(
        "/sim/prices",
        &json!({"ETHUSDT": (price * Decimal::new(97, 2)).round_dp(2).to_string()}),
    )
    .await;
    if restart {
        // Kill after the first failed attempt; the pending delivery must survive.
        for _ in 0..100 {
            if !seen.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        svc.kill();
        svc = common::start(&config, &env).await;
    }
    for _ in 0..200 {
        if seen.lock().unwrap().iter().any(|(s, _)| *s == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen.lock().unwrap().clone();
    let ok: Vec<_> = seen.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one successful delivery: {seen:?}\n{}", svc.log());
    assert_eq!(seen.len(), 3, "two failures, then the success: {seen:?}");
    let keys: BTreeSet<&String> = seen.iter().map(|(_, k)| k).collect();
    assert_eq!(keys.len(), 1, "one dedupe key throughout: {keys:?}");
    let alerts = svc.get_json("/api/alerts").await;
    assert_eq!(alerts[0]["status"], "triggered");
}

async fn dashboard_matches_a_recomputation(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0\nopening_positions = 6").await;
    let store = TestStore::new(backend);
    let svc = service(&sim, &store, "").await;
    wait_runs(&svc, "trade_sync", 2).await;
    wait_runs(&svc, "dashboard_sync", 2).await;
    for account in ["main", "alt"] {
        let trades = svc
            .get_json(&format!("/api/trades?account={account}&limit=10000"))
            .await;
        let positions = svc.get_json(&format!("/api/positions?account={account}")).await;
        let dash = svc.get_json(&format!("/api/dashboard/{account}")).await["analytics"].clone();
        let trades = trades.as_array().unwrap();
        assert!(!trades.is_empty());
        let realized: Decimal = trades.iter().map(|t| d(&t["realized_pnl"])).sum();
        let closing: Vec<_> = trades.iter().filter(|t| !d(&t["realized_pnl"]).is_zero()).collect();
        let wins = closing.iter().filter(|t| d(&t["realized_pnl"]) > Decimal::ZERO).count();
        let volume: Decimal = trades.iter().map(|t| d(&t["price"]) * d(&t["qty"])).sum();
        let exposure: Decimal = positions
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (d(&p["amount"]) * d(&p["mark_price"])).abs())
            .sum();
        let unrealized: Decimal = positions
            .as_array()
            .unwrap()
            .iter()
            .map(|p| d(&p["unrealized_pnl"]))
            .sum();
        assert_eq!(
            dash["trade_count"].as_u64().unwrap() as usize,
            trades.len(),
            "{account}"
        );
        assert_eq!(d(&dash["realized_pnl_30d"]), realized, "{account}");
        assert_eq!(
            d(&dash["realized_pnl_24h"]),
            realized,
            "{account}: all trades are recent"
        );
        assert_eq!(d(&dash["volume"]), volume, "{account}");
        assert_eq!(d(&dash["exposure"]), exposure, "{account}");
        assert_eq!(d(&dash["unrealized_pnl"]), unrealized, "{account}");
        let win_rate = if closing.is_empty() {
            Decimal::ZERO
        } else {
            (Decimal::from(wins) / Decimal::from(closing.len())).round_dp(4)
        };
        assert_eq!(d(&dash["win_rate"]), win_rate, "{account}");
    }
}

async fn bad_input_is_refused_with_4xx(backend: Backend) {
    let sim = SimProcess::start("fills_per_minute = 0.0").await;
    let store = TestStore::new(backend);
    let svc = service(&sim, &store, "").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"account": "main", "symbol": "BTCUSDT"}), "take_profit"),
        (
            json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": "abc"}),
            "stop_loss",
        ),
        (
            json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": -5}),
            "stop_loss",
        ),
        (
            json!({"account": "nobody", "symbol": "BTCUSDT", "stop_loss": 5}),
            "account",
        ),
        (
            json!({"account": "main", "symbol": "BTC/USDT", "stop_loss": 5}),
            "symbol",
        ),
        (
            json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": 5, "colour": 1}),
            "colour",
        ),
        (json!(["not", "an", "object"]), ""),
    ];
    for (body, field) in cases {
        let (status, answer) = svc.post_json("/api/levels", &body).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{answer}");
    }
    let (status, answer) = svc
        .post_json(
            "/api/alerts",
            &json!({"symbol": "ETHUSDT", "condition": "sideways", "price": 1}),
        )
        .await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_field")));
    let (status, _) = svc
        .post_json(
            "/api/alerts",
            &json!({"symbol": "ETHUSDT", "condition": "above", "price": 1, "webhook_url": "ftp://x"}),
        )
        .await;
    assert_eq!(status, 422);
    let r = svc
        .http
        .post(svc.url("/api/levels"))
        .bearer_auth(common::TOKEN)
        .body("{oops")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = svc
        .http
        .post(svc.url("/api/levels"))
        .json(&json!({"account": "main", "symbol": "BTCUSDT", "stop_loss": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "writes need the token");
    for path in [
        "/api/levels/999",
        "/api/levels/abc",
        "/api/dashboard/nobody",
        "/api/trades?limit=0",
        "/api/positions?x=1",
    ] {
        let r = svc.http.get(svc.url(path)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string());
    }
    let r = svc
        .http
        .delete(svc.url("/api/alerts/424242"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

async fn stop_loss_plain(b: Backend) {
    stop_loss_exactly_once(b, json!({}), 5.0, false).await
}
async fn stop_loss_5xx(b: Backend) {
    stop_loss_exactly_once(b, json!({"order_error_after_execute": 1}), 5.0, false).await
}
async fn stop_loss_timeout(b: Backend) {
    stop_loss_exactly_once(b, json!({"order_delay_after_execute_ms": 2500}), 1.0, false).await
}
async fn stop_loss_restart(b: Backend) {
    stop_loss_exactly_once(b, json!({"order_delay_after_execute_ms": 3000}), 10.0, true).await
}
async fn alert_once(b: Backend) {
    alert_delivered_once(b, false).await
}
async fn alert_restart(b: Backend) {
    alert_delivered_once(b, true).await
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
    trades_match_the_venue_across_a_sigkill => trades_survive_a_sigkill;
    stop_loss_closes_once => stop_loss_plain;
    stop_loss_closes_once_despite_5xx_after_execution => stop_loss_5xx;
    stop_loss_closes_once_despite_a_timeout => stop_loss_timeout;
    stop_loss_closes_once_across_a_restart_between_send_and_record => stop_loss_restart;
    alert_is_delivered_once_after_two_failures => alert_once;
    pending_delivery_survives_a_restart => alert_restart;
    dashboard_equals_a_recomputation => dashboard_matches_a_recomputation;
    bad_data_api_input_gets_4xx => bad_input_is_refused_with_4xx;
}

#[tokio::test]
async fn the_default_configuration_runs_all_six_within_a_minute() {
    let store = TestStore::new(Backend::Sqlite);
    let svc = common::start("", &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await;
    // The seed's six succeed; the two streams (continuous, on by default) are up.
    let doc = svc
        .wait_for("every process to succeed or be up", Duration::from_secs(60), |d| {
            d["processes"]
                .as_object()
                .unwrap()
                .values()
                .all(|p| match p["mode"].as_str() {
                    Some("continuous") => p["continuous"]["up"] == true,
                    _ => p["metrics"]["success_count"].as_u64() >= Some(1),
                })
        })
        .await;
    assert_eq!(doc["total_processes"], 9);
    assert_eq!(doc["running_processes"], 9, "{doc:#}");
    assert_eq!(doc["error_processes"], 0, "{doc:#}");
}
