//! The simulated venue as a test looks at it: trades made on it as a user
//! would, its orders, fills and prices, and the service's view of positions.
#![allow(dead_code)]

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::trading::d;
use super::{Service, SimProcess};

/// Trades on `account` as its owner would on the venue's app.
pub async fn trade(sim: &SimProcess, account: &str, symbol: &str, side: &str, qty: &str) {
    let body = json!({"account": account, "symbol": symbol, "side": side, "qty": qty});
    sim.post("/sim/trade", &body).await;
}

/// The simulator's orders for `symbol` of `account`, oldest first.
pub async fn orders(sim: &SimProcess, account: &str, symbol: &str) -> Vec<Value> {
    let all = sim.get(&format!("/sim/orders?account={account}")).await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|o| o["symbol"] == symbol)
        .cloned()
        .collect()
}

/// The venue's signed position of `account` in `symbol`, summed from its fills (0 when flat).
pub async fn amount(sim: &SimProcess, account: &str, symbol: &str) -> Decimal {
    let fills = sim.get(&format!("/sim/fills?account={account}")).await;
    fills
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["symbol"] == symbol)
        .map(|f| {
            if f["side"] == "BUY" {
                d(&f["qty"])
            } else {
                -d(&f["qty"])
            }
        })
        .sum()
}

/// The last price of `symbol`.
pub async fn price(sim: &SimProcess, symbol: &str) -> Decimal {
    d(&sim.get(&format!("/fapi/v1/ticker/price?symbol={symbol}")).await["price"])
}

/// Waits until the service stores `amount` for `account`'s `symbol`.
pub async fn stored(svc: &Service, account: &str, symbol: &str, amount: Decimal) {
    svc.wait_get(
        &format!("{account} {symbol} stored at {amount}"),
        &format!("/api/positions?account={account}"),
        Duration::from_secs(15),
        |ps| {
            ps.as_array()
                .unwrap()
                .iter()
                .any(|p| p["symbol"] == symbol && d(&p["amount"]) == amount)
        },
    )
    .await;
}
