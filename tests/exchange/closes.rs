//! What a protective close meets at the venue, client against simulator:
//! `MARKET_LOT_SIZE` (a big position takes several orders), refusals with
//! Binance's codes and messages, answers slow for one route or one symbol,
//! trades made on the venue's app, hedge mode.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rust_decimal::Decimal;
use script_manager::domain::{Catalog, OrderStatus};
use script_manager::exchange::binance::ws::StreamEvent;
use script_manager::exchange::orders::close_exactly_once;
use script_manager::exchange::{
    AlgoKind, AlgoOrderRequest, AlgoSize, OrderSide, Venue, VenueError, VenueErrorKind, WorkingType,
};
use script_manager::sim::Faults;
use serde_json::json;
use tokio::time::Instant;

use super::{RigOptions, caller, d, events_until, eventually, rig};

fn close_caller() -> script_manager::exchange::Caller {
    caller("level_monitor", 1, Duration::from_secs(10))
}

fn rejected(result: Result<impl std::fmt::Debug, VenueError>) -> (i64, String) {
    match result {
        Err(VenueError::Rejected { code, msg }) => (code, msg),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_market_order_above_market_lot_size_is_refused_and_the_catalog_splits_the_close() {
    let rig = rig(RigOptions {
        configure: |c| {
            c.opening_positions = 0;
            c.market_max_qty.insert("BTCUSDT".into(), 0.5);
            c.min_qty.insert("BTCUSDT".into(), 0.01);
        },
        ..Default::default()
    })
    .await;
    let info = rig.venue.exchange_info(&close_caller()).await.unwrap();
    let btc = info.symbols.iter().find(|l| l.symbol == "BTCUSDT").unwrap().clone();
    assert_eq!(
        (btc.market_max_qty, btc.max_qty, btc.market_min_qty, btc.min_qty),
        (Some(d("0.5")), Some(d("5")), Some(d("0.01")), Some(d("0.01")))
    );
    assert_eq!((btc.market_step, btc.tick_size), (Some(d("0.001")), Some(d("0.1"))));
    let eth = info.symbols.iter().find(|l| l.symbol == "ETHUSDT").unwrap();
    assert_eq!(
        eth.market_max_qty,
        Some(d("250")),
        "default: 1 000 000 USDT at the opening price"
    );
    let catalog = Catalog::default();
    catalog.replace(info.symbols);
    for qty in ["0.5", "0.5", "0.2"] {
        rig.trade("main", "BTCUSDT", "BUY", qty).await;
    }
    let close = |qty: Decimal, id: String| {
        let venue = &rig.venue;
        async move {
            venue
                .close_position(&close_caller(), "main", "BTCUSDT", OrderSide::Sell, qty, &id)
                .await
        }
    };
    let (code, msg) = rejected(close(d("1.2"), "sm-1-1".into()).await);
    assert_eq!((code, msg.as_str()), (-4005, "Quantity greater than max quantity."));
    let (code, _) = rejected(close(d("0.005"), "sm-1-2".into()).await);
    assert_eq!(code, -4004, "below minQty");
    let parts = catalog.split_market_qty("BTCUSDT", d("1.2"));
    assert_eq!(parts, [d("0.5"), d("0.5"), d("0.2")]);
    for (i, qty) in parts.into_iter().enumerate() {
        let ack = close(qty, format!("sm-1-{}", i + 3)).await.unwrap();
        assert_eq!((ack.status, ack.executed_qty), (OrderStatus::Filled, qty));
    }
    assert_eq!(rig.position("main", "BTCUSDT").await, Decimal::ZERO);
}

#[tokio::test]
async fn refused_orders_carry_binance_codes_and_messages_and_later_ones_go_through() {
    let rig = rig(RigOptions {
        configure: |c| c.opening_positions = 0,
        ..Default::default()
    })
    .await;
    rig.trade("main", "BTCUSDT", "BUY", "0.1").await;
    let cases = [
        (
            -4131,
            "The counterparty's best price does not meet the PERCENT_PRICE filter limit.",
        ),
        (
            -1008,
            "Server is currently overloaded with other requests. Please try again in a few minutes.",
        ),
        (-1015, "Too many new orders; current limit is 1200 orders per MINUTE."),
        (-2019, "Margin is insufficient."),
    ];
    let close = |id: String| {
        let venue = &rig.venue;
        async move {
            venue
                .close_position(&close_caller(), "main", "BTCUSDT", OrderSide::Sell, d("0.001"), &id)
                .await
        }
    };
    for (i, (code, msg)) in cases.into_iter().enumerate() {
        rig.set_faults(&Faults {
            reject_orders: 2,
            reject_code: code,
            ..Faults::default()
        })
        .await;
        for n in 0..2 {
            assert_eq!(rejected(close(format!("sm-{i}-{n}")).await), (code, msg.to_string()));
        }
        let ack = close(format!("sm-{i}-ok")).await.expect("the third goes through");
        assert_eq!(ack.executed_qty, d("0.001"));
    }
    // -1001 comes as a 503: the client cannot tell whether it executed, looks
    // it up (nothing), and sends it again under the same id.
    rig.set_faults(&Faults {
        reject_orders: 1,
        reject_code: -1001,
        ..Faults::default()
    })
    .await;
    let ack = close_exactly_once(
        &rig.venue,
        &close_caller(),
        "main",
        "BTCUSDT",
        OrderSide::Sell,
        d("0.001"),
        "sm-9-1",
    )
    .await
    .unwrap();
    assert_eq!(ack.executed_qty, d("0.001"));
    assert_eq!(
        rig.position("main", "BTCUSDT").await,
        d("0.095"),
        "five closes of 0.001 executed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_symbol_is_answered_late_while_other_symbols_and_routes_are_not_held() {
    let rig = Arc::new(
        rig(RigOptions {
            timeout: Duration::from_secs(5),
            configure: |c| c.opening_positions = 0,
            ..Default::default()
        })
        .await,
    );
    rig.trade("main", "BTCUSDT", "BUY", "0.1").await;
    rig.trade("main", "ETHUSDT", "BUY", "1").await;
    let delays: BTreeMap<String, u64> = [("/fapi/v2/positionRisk".to_string(), 400)].into();
    rig.set_faults(&Faults {
        route_delay_ms: delays,
        ..Faults::default()
    })
    .await;
    let started = Instant::now();
    rig.venue.positions(&close_caller(), "main").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    let holds: BTreeMap<String, u64> = [("BTCUSDT".to_string(), 20_000)].into();
    rig.set_faults(&Faults {
        hold_orders_ms: holds,
        ..Faults::default()
    })
    .await;
    let held = {
        let rig = rig.clone();
        tokio::spawn(async move {
            rig.venue
                .close_position(&close_caller(), "main", "BTCUSDT", OrderSide::Sell, d("0.1"), "sm-20-1")
                .await
        })
    };
    eventually("the held order to execute", async || {
        let orders = rig.sim_get("/sim/orders?account=main").await;
        let filled = orders
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["clientOrderId"] == "sm-20-1" && o["status"] == "FILLED");
        filled.then_some(())
    })
    .await;
    let eth = rig
        .venue
        .close_position(&close_caller(), "main", "ETHUSDT", OrderSide::Sell, d("1"), "sm-21-1")
        .await
        .expect("another symbol's order is answered");
    assert_eq!(eth.status, OrderStatus::Filled);
    assert_eq!(
        rig.position("main", "BTCUSDT").await,
        Decimal::ZERO,
        "reads are not held either"
    );
    assert!(!held.is_finished(), "the BTCUSDT answer is still held");
    let lost = held.await.unwrap().unwrap_err();
    assert_eq!(lost.kind(), VenueErrorKind::UnknownOutcome, "{lost}");
    let found = rig
        .venue
        .order_by_client_id(&close_caller(), "main", "BTCUSDT", "sm-20-1")
        .await
        .unwrap()
        .expect("the venue has it");
    assert_eq!((found.status, found.executed_qty), (OrderStatus::Filled, d("0.1")));
}

#[tokio::test]
async fn a_trade_on_the_venues_app_is_an_order_a_fill_and_user_stream_events() {
    let rig = rig(RigOptions {
        configure: |c| c.opening_positions = 0,
        ..Default::default()
    })
    .await;
    let mut stream = rig.user_stream("main").await;
    rig.trade("main", "BTCUSDT", "BUY", "0.01").await;
    rig.trade("main", "BTCUSDT", "SELL", "0.03").await;
    let events = events_until(&mut stream, |seen| {
        seen.iter()
            .any(|e| matches!(e, StreamEvent::Positions(p) if p[0].amount == d("-0.02")))
            && seen.iter().filter(|e| matches!(e, StreamEvent::Fill { .. })).count() == 2
    })
    .await;
    let accepted: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Order {
                client_order_id,
                status,
            } if status == "NEW" => Some(client_order_id),
            _ => None,
        })
        .collect();
    assert_eq!(accepted.len(), 2, "{events:?}");
    assert!(accepted.iter().all(|id| id.starts_with("web_")), "{accepted:?}");
    let fills: Vec<Decimal> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Fill { fill, client_order_id } if client_order_id.starts_with("web_") => Some(fill.qty),
            _ => None,
        })
        .collect();
    assert_eq!(fills, [d("0.01"), d("0.03")]);
    let orders = rig.sim_get("/sim/orders?account=main").await;
    let orders = orders.as_array().unwrap();
    assert_eq!(orders.len(), 2);
    assert!(
        orders
            .iter()
            .all(|o| o["reduceOnly"] == false && o["status"] == "FILLED"),
        "{orders:?}"
    );
    assert_eq!(
        rig.position("main", "BTCUSDT").await,
        d("-0.02"),
        "opened, then flipped"
    );
    assert_eq!(
        rig.sim_get("/sim/fills?account=main").await.as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn hedge_mode_is_read_from_the_venue_and_orders_are_refused_as_it_refuses_them() {
    let rig = rig(RigOptions {
        configure: |c| c.opening_positions = 0,
        ..Default::default()
    })
    .await;
    rig.trade("main", "BTCUSDT", "BUY", "0.01").await;
    assert!(!rig.venue.hedge_mode(&close_caller(), "main").await.unwrap());
    let status = rig
        .sim_post("/sim/hedge", json!({"account": "main", "enabled": true}))
        .await;
    assert!(status.is_success());
    assert!(rig.venue.hedge_mode(&close_caller(), "main").await.unwrap());
    assert!(
        !rig.venue.hedge_mode(&close_caller(), "alt").await.unwrap(),
        "per account"
    );
    let close = rig
        .venue
        .close_position(
            &close_caller(),
            "main",
            "BTCUSDT",
            OrderSide::Sell,
            d("0.01"),
            "sm-30-1",
        )
        .await;
    assert_eq!(
        rejected(close),
        (-1106, "Parameter 'reduceOnly' sent when not required.".to_string())
    );
    let stop = AlgoOrderRequest {
        symbol: "BTCUSDT".into(),
        side: OrderSide::Sell,
        kind: AlgoKind::StopMarket,
        trigger_price: d("50000"),
        working_type: WorkingType::MarkPrice,
        size: AlgoSize::ClosePosition,
        price_protect: false,
        client_algo_id: "sm-30-sl".into(),
    };
    let (code, _) = rejected(rig.venue.place_algo_order(&close_caller(), "main", &stop).await);
    assert_eq!(code, -4061, "no positionSide in hedge mode");
    let plain = [
        ("symbol", "BTCUSDT"),
        ("side", "SELL"),
        ("type", "MARKET"),
        ("quantity", "0.01"),
    ];
    let (status, body) = rig.signed(Method::POST, "/fapi/v1/order", &plain).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(-4061)), "{body}");
    assert_eq!(rig.position("main", "BTCUSDT").await, d("0.01"), "nothing executed");
    assert_eq!(rig.requests("/fapi/v1/positionSide/dual main").await, 2);
}
