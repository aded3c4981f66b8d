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
