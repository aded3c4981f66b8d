//! What the trading tests share: fast intervals, a service pointed at a
//! simulator in its own process, levels near the price, crossing them, and
//! a webhook receiver.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{Service, SimProcess, TestStore};

/// Fast intervals so a test sees many ticks.
pub const FAST: &str = r#"
[processes.trade_sync]
interval_seconds = 0.5
timeout_seconds = 5
max_api_calls_per_minute = 2000
[processes.position_sync]
interval_seconds = 0.5
max_api_calls_per_minute = 1000
[processes.price_update]
interval_seconds = 0.5
max_api_calls_per_minute = 1000
[processes.level_monitor]
interval_seconds = 0.3
timeout_seconds = 5
max_api_calls_per_minute = 1000
[processes.notification_check]
interval_seconds = 0.3
max_api_calls_per_minute = 1000
[processes.dashboard_sync]
interval_seconds = 0.5
"#;

pub async fn service(sim: &SimProcess, store: &TestStore, extra: &str) -> Service {
    let config = format!(
        "{FAST}\n{}\n{extra}\n[http]\nadmin_token = \"{}\"\n",
        sim.exchange_toml(),
        super::TOKEN
    );
    super::start(&config, &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await
}

pub fn d(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).unwrap(),
        other => Decimal::from_str(&other.to_string()).unwrap(),
    }
}

pub async fn create_level_near(svc: &Service, sim: &SimProcess, account: &str) -> (i64, String, Decimal, Decimal) {
    let positions = svc
        .wait_get(
            "positions",
            &format!("/api/positions?account={account}"),
            Duration::from_secs(10),
            |p| p.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let p = &positions.as_array().unwrap()[0];
    let symbol = p["symbol"].as_str().unwrap().to_string();
    let amount = d(&p["amount"]);
    let price = d(&sim.get(&format!("/fapi/v1/ticker/price?symbol={symbol}")).await["price"]);
    // A stop-loss 5 % away on the losing side, a take-profit 50 % away on the winning side.
    let (sl, tp) = if amount > Decimal::ZERO {
        (price * Decimal::new(95, 2), price * Decimal::new(150, 2))
    } else {
        (price * Decimal::new(105, 2), price * Decimal::new(50, 2))
    };
    let (status, body) = svc
        .post_json(
            "/api/levels",
            &json!({"account": account, "symbol": symbol, "stop_loss": sl.round_dp(4).to_string(), "take_profit": tp.round_dp(4).to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "armed");
    (body["id"].as_i64().unwrap(), symbol, amount, sl.round_dp(4))
}

pub async fn cross(sim: &SimProcess, symbol: &str, amount: Decimal, sl: Decimal) {
    let beyond = if amount > Decimal::ZERO {
        sl * Decimal::new(98, 2)
    } else {
        sl * Decimal::new(102, 2)
    };
    sim.post("/sim/prices", &json!({symbol: beyond.round_dp(4).to_string()}))
        .await;
}

/// A webhook receiver that fails its first `failures` requests.
pub async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<(u16, String)>>>) {
    let seen: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, _body: String| {
            let log = log.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let mut log = log.lock().unwrap();
                let status = if log.len() < failures { 500 } else { 200 };
                log.push((status, key));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}
