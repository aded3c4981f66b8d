//! Conditional orders resting on the venue (the Algo Order API), client
//! against simulator: placed and listed, triggered by the price, the MARKET
//! order they become, `ALGO_UPDATE` on the user stream; refusals (-2021,
//! -4120, a refused placement), cancels and expiry on a flat position.

use std::time::Duration;

use reqwest::Method;
use rust_decimal::Decimal;
use script_manager::domain::Catalog;
use script_manager::exchange::binance::ws::StreamEvent;
use script_manager::exchange::{
    AlgoKind, AlgoOrder, AlgoOrderRequest, AlgoSize, AlgoStatus, Caller, OrderSide, Venue, VenueError, WorkingType,
};
use script_manager::sim::Faults;
use serde_json::json;

use super::{Rig, RigOptions, caller, d, events_until, eventually, rig};

fn c() -> Caller {
    caller("level_monitor", 1, Duration::from_secs(10))
}

/// A rig with no opening positions and `main` long 0.05 BTCUSDT; the symbols' filters.
async fn long_btc() -> (Rig, Catalog) {
    let rig = rig(RigOptions {
        configure: |c| c.opening_positions = 0,
        ..Default::default()
    })
    .await;
    rig.trade("main", "BTCUSDT", "BUY", "0.05").await;
    let catalog = Catalog::default();
    catalog.replace(rig.venue.exchange_info(&c()).await.unwrap().symbols);
    (rig, catalog)
}

async fn price(rig: &Rig, symbol: &str) -> Decimal {
    let prices = rig.venue.prices(&c(), &[symbol.to_string()]).await.unwrap();
    prices[0].price
}

async fn set_price(rig: &Rig, symbol: &str, price: Decimal) {
    let status = rig.sim_post("/sim/prices", json!({ symbol: price.to_string() })).await;
    assert!(status.is_success());
}

/// A `closePosition` sell of `kind` at `share` of the current price, rounded to the tick.
async fn sell(rig: &Rig, catalog: &Catalog, kind: AlgoKind, share: &str, id: &str) -> AlgoOrderRequest {
    let trigger = catalog.round_price_to_tick("BTCUSDT", price(rig, "BTCUSDT").await * d(share));
    AlgoOrderRequest {
        symbol: "BTCUSDT".into(),
        side: OrderSide::Sell,
        kind,
        trigger_price: trigger,
        working_type: WorkingType::ContractPrice,
        size: AlgoSize::ClosePosition,
        price_protect: false,
        client_algo_id: id.into(),
    }
}

async fn by_id(rig: &Rig, id: &str) -> Option<AlgoOrder> {
    rig.venue
        .algo_order_by_client_id(&c(), "main", "BTCUSDT", id)
        .await
        .unwrap()
}

fn code(result: Result<impl std::fmt::Debug, VenueError>) -> i64 {
    match result {
        Err(VenueError::Rejected { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_resting_stop_closes_the_position_when_the_price_crosses_and_says_so_on_the_user_stream() {
    let (rig, catalog) = long_btc().await;
    let mut stream = rig.user_stream("main").await;
    let stop = sell(&rig, &catalog, AlgoKind::StopMarket, "0.9", "sm-1-sl").await;
    let placed = rig.venue.place_algo_order(&c(), "main", &stop).await.unwrap();
    assert_eq!(
        (placed.status.clone(), placed.client_algo_id.as_str()),
        (AlgoStatus::New, "sm-1-sl")
    );
    assert!(placed.close_position && placed.order_id.is_none());
    assert_eq!(placed.trigger_price, stop.trigger_price);
    let open = rig.venue.open_algo_orders(&c(), "main", Some("BTCUSDT")).await.unwrap();
    assert_eq!(open, std::slice::from_ref(&placed));
    assert_eq!(rig.venue.open_algo_orders(&c(), "main", None).await.unwrap().len(), 1);
    assert!(rig.venue.open_algo_orders(&c(), "alt", None).await.unwrap().is_empty());

    set_price(&rig, "BTCUSDT", stop.trigger_price - d("100")).await;
    let done = eventually("the stop to finish", async || {
        by_id(&rig, "sm-1-sl")
            .await
            .filter(|a| a.status == AlgoStatus::Finished)
    })
    .await;
    let order_id = done.order_id.expect("the MARKET order it became");
    assert!(done.trigger_time_ms > 0);
    assert_eq!(
        rig.position("main", "BTCUSDT").await,
        Decimal::ZERO,
        "closed by the venue"
    );
    assert!(rig.venue.open_algo_orders(&c(), "main", None).await.unwrap().is_empty());
    let events = events_until(&mut stream, |seen| {
        seen.iter()
            .any(|e| matches!(e, StreamEvent::Algo { order, .. } if order.status == AlgoStatus::Finished))
    })
    .await;
    let statuses: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Algo { order, .. } => Some(order.status.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]);
    let triggered = events.iter().find_map(|e| match e {
        StreamEvent::Algo { order, .. } if order.status == AlgoStatus::Triggered => Some(order),
        _ => None,
    });
    assert_eq!(triggered.unwrap().order_id, Some(order_id), "`ai`: the order it became");
    let fill = events.iter().find_map(|e| match e {
        StreamEvent::Fill { fill, client_order_id } => Some((fill, client_order_id)),
        _ => None,
    });
    let (fill, client_order_id) = fill.expect("its fill on the stream");
    assert_eq!((fill.order_id, fill.qty), (order_id, d("0.05")));
    assert_ne!(client_order_id, "sm-1-sl", "the venue names the triggered order itself");
}

#[tokio::test]
async fn refusals_a_stop_through_the_price_a_stop_on_the_order_route_and_a_refused_placement() {
    let (rig, catalog) = long_btc().await;
    let through = sell(&rig, &catalog, AlgoKind::StopMarket, "1.1", "sm-2-sl").await;
    assert_eq!(code(rig.venue.place_algo_order(&c(), "main", &through).await), -2021);
    let profit_below = sell(&rig, &catalog, AlgoKind::TakeProfitMarket, "0.9", "sm-2-tp").await;
    assert_eq!(
        code(rig.venue.place_algo_order(&c(), "main", &profit_below).await),
        -2021
    );
    let mut off_tick = sell(&rig, &catalog, AlgoKind::StopMarket, "0.9", "sm-2-x").await;
    off_tick.trigger_price += d("0.05");
    assert_eq!(code(rig.venue.place_algo_order(&c(), "main", &off_tick).await), -4014);
    let stop_order = [
        ("symbol", "BTCUSDT"),
        ("side", "SELL"),
        ("type", "STOP_MARKET"),
        ("stopPrice", "50000"),
        ("closePosition", "true"),
    ];
    let (status, body) = rig.signed(Method::POST, "/fapi/v1/order", &stop_order).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(-4120)), "{body}");

    rig.set_faults(&Faults {
        reject_algo_orders: 1,
        ..Faults::default()
    })
    .await;
    let stop = sell(&rig, &catalog, AlgoKind::StopMarket, "0.9", "sm-2-sl").await;
    assert_eq!(code(rig.venue.place_algo_order(&c(), "main", &stop).await), -4045);
    assert!(by_id(&rig, "sm-2-sl").await.is_none(), "nothing rests on the venue");
    let placed = rig.venue.place_algo_order(&c(), "main", &stop).await.unwrap();
    assert_eq!(placed.status, AlgoStatus::New, "the next one is accepted");
    assert_eq!(
        code(rig.venue.place_algo_order(&c(), "main", &stop).await),
        -4116,
        "same client id"
    );
}

#[tokio::test]
async fn a_cancelled_stop_is_gone_and_unknown_ones_are_told_apart() {
    let (rig, catalog) = long_btc().await;
    let tp = sell(&rig, &catalog, AlgoKind::TakeProfitMarket, "1.1", "sm-3-tp").await;
    rig.venue.place_algo_order(&c(), "main", &tp).await.unwrap();
    rig.venue
        .cancel_algo_order(&c(), "main", "BTCUSDT", "sm-3-tp")
        .await
        .unwrap();
    assert!(
        rig.venue
            .open_algo_orders(&c(), "main", Some("BTCUSDT"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(by_id(&rig, "sm-3-tp").await.unwrap().status, AlgoStatus::Canceled);
    let again = rig.venue.cancel_algo_order(&c(), "main", "BTCUSDT", "sm-3-tp").await;
    assert_eq!(code(again), -2011);
    assert_eq!(
        code(rig.venue.cancel_algo_order(&c(), "main", "BTCUSDT", "nope").await),
        -2011
    );
    assert!(by_id(&rig, "nope").await.is_none(), "-2013: none by that id");
    // Crossing is checked inside /sim/prices: had it been open, it would have fired by now.
    set_price(&rig, "BTCUSDT", tp.trigger_price + d("100")).await;
    assert_eq!(
        rig.position("main", "BTCUSDT").await,
        d("0.05"),
        "a cancelled stop never fires"
    );
}

#[tokio::test]
async fn a_close_position_stop_expires_when_the_position_is_already_flat() {
    let (rig, catalog) = long_btc().await;
    let mut stop = sell(&rig, &catalog, AlgoKind::StopMarket, "0.9", "sm-4-sl").await;
    stop.working_type = WorkingType::MarkPrice;
    rig.venue.place_algo_order(&c(), "main", &stop).await.unwrap();
    rig.trade("main", "BTCUSDT", "SELL", "0.05").await;
    // Far through the trigger: the walk cannot bring it back before the mark follows.
    set_price(&rig, "BTCUSDT", (stop.trigger_price * d("0.8")).round_dp(1)).await;
    let expired = eventually("the stop to expire (the mark follows within a second)", async || {
        by_id(&rig, "sm-4-sl").await.filter(|a| a.status.is_final())
    })
    .await;
    assert_eq!((expired.status, expired.order_id), (AlgoStatus::Expired, None));
    assert_eq!(
        rig.position("main", "BTCUSDT").await,
        Decimal::ZERO,
        "nothing opened the other way"
    );
    let orders = rig.sim_get("/sim/orders?account=main").await;
    assert_eq!(orders.as_array().unwrap().len(), 2, "only the two trades: {orders}");
}
