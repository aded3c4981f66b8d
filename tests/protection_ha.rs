//! One close, many would-be senders (issue 21): the streamed price's fire,
//! level_monitor's tick and a second replica all see the same crossing and
//! the same pending intent; exactly one of them works it at a time. Two
//! real replicas on PostgreSQL against one simulator process, with streams.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::trading::d;
use common::{Backend, Service, SimProcess, TestStore};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const HA: &str = "[ha]\nenabled = true\nlease_margin_seconds = 1\nheartbeat_seconds = 0.25\n";

async fn replica(config: &str, store_url: &str, name: &str) -> Service {
    common::start(
        config,
        &[
            ("SCRIPT_MANAGER_STORE__URL", store_url),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", name),
        ],
    )
    .await
}

async fn metric(svc: &Service, series: &str) -> f64 {
    common::sample(&svc.metrics().await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_the_tick_and_another_replica_close_one_intent_once() {
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Postgres);
    let config = format!(
        "{HA}{}\n[http]\nadmin_token = \"{}\"\n\
         [processes.level_monitor]\ninterval_seconds = 0.3\ntimeout_seconds = 5\nmax_api_calls_per_minute = 2000\n\
         [processes.position_sync]\ninterval_seconds = 1\nmax_api_calls_per_minute = 1000\n\
         [processes.trade_sync]\ninterval_seconds = 1\ntimeout_seconds = 5\nmax_api_calls_per_minute = 2000\n\
         [processes.price_update]\nenabled = false\n[processes.dashboard_sync]\nenabled = false\n\
         [levels]\nclose_attempt_seconds = 2\nbackstop = \"off\"\n",
        sim.exchange_toml(),
        common::TOKEN
    );
    let r1 = replica(&config, &store.url, "r1").await;
    let r2 = replica(&config, &store.url, "r2").await;
    let positions = r1
        .wait_get(
            "positions",
            "/api/positions?account=main",
            Duration::from_secs(20),
            |p| p.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let p = &positions.as_array().unwrap()[0];
    let symbol = p["symbol"].as_str().unwrap().to_string();
    let amount = d(&p["amount"]);
    let price = d(&sim.get(&format!("/fapi/v1/ticker/price?symbol={symbol}")).await["price"]);
    let (sl, beyond) = if amount > Decimal::ZERO {
        (price * Decimal::new(95, 2), price * Decimal::new(93, 2))
    } else {
        (price * Decimal::new(105, 2), price * Decimal::new(107, 2))
    };
    let (status, level) = r2
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": symbol, "stop_loss": sl.round_dp(4).to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{level}");
    let id = level["id"].as_i64().unwrap();
    // Both replicas' ticks and the stream must have the level before the price moves.
    for svc in [&r1, &r2] {
        svc.wait_get(
            "the level armed here",
            "/api/script-manager/status",
            Duration::from_secs(10),
            |_| true,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Orders stay NEW for 2.5 s and every third answer is lost: the close stays
    // pending across several attempts while every path keeps looking at it.
    sim.post(
        "/sim/faults",
        &json!({"fill_delay_ms": 2500, "order_error_after_execute": 1}),
    )
    .await;
    sim.post("/sim/prices", &json!({symbol.clone(): beyond.round_dp(4).to_string()}))
        .await;
    for _ in 0..6 {
        for svc in [&r1, &r2] {
            let _ = svc
                .post_json("/api/script-manager/processes/level_monitor/trigger", &json!({}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let executed = r1
        .wait_get(
            "the stop-loss executed",
            &format!("/api/levels/{id}"),
            Duration::from_secs(60),
            |l| l["status"] != "armed" && l["status"] != "triggered",
        )
        .await;
    assert_eq!(executed["status"], "executed", "{executed}");
    assert_eq!(d(&executed["closed_qty"]), amount.abs(), "{executed}");

    let orders = sim.get("/sim/orders?account=main").await;
    let ours: Vec<&Value> = orders
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["symbol"] == symbol.as_str())
        .collect();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &ours {
        *per_id.entry(o["clientOrderId"].as_str().unwrap()).or_default() += 1;
    }
    assert!(per_id.values().all(|n| *n == 1), "one order per step: {per_id:?}");
    assert_eq!(
        ours.len() as i64,
        executed["close_orders"].as_i64().unwrap(),
        "{orders}"
    );
    let filled: Decimal = ours.iter().map(|o| d(&o["executedQty"])).sum();
    assert_eq!(filled, amount.abs(), "exactly the position, never past it");

    for svc in [&r1, &r2] {
        let failed = r#"script_manager_level_triggers_total{kind="stop_loss",outcome="failed"}"#;
        assert_eq!(metric(svc, failed).await, 0.0);
        assert_eq!(metric(svc, "script_manager_level_close_retrying").await, 0.0);
    }
    let executed_counts: f64 = {
        let series = r#"script_manager_level_triggers_total{kind="stop_loss",outcome="executed"}"#;
        metric(&r1, series).await + metric(&r2, series).await
    };
    assert_eq!(executed_counts, 1.0, "recorded once across the cluster");
    let notes = r1.get_json("/api/notifications").await;
    let kinds: Vec<&str> = notes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert!(!kinds.contains(&"level_failed"), "{notes}");
    assert_eq!(kinds.iter().filter(|k| **k == "level_executed").count(), 1, "{notes}");
}
