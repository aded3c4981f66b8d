//! `cargo bench --bench level_index`
//!
//! Time to evaluate one price tick against 10³…10⁶ armed levels with a
//! handful crossed, and the in-process latency from a new price to the close
//! order request being handed to the HTTP client (index look-up, the
//! intent transaction on SQLite, signing), against the simulator.

use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;
use script_manager::domain::PositionSide;
use script_manager::processes::levels::index::LevelIndex;
use script_manager::store::{Level, LevelStatus, NewLevel, Store};

fn level(id: i64, sl: Decimal, tp: Decimal) -> Level {
    Level {
        id,
        account: "main".into(),
        symbol: "BTCUSDT".into(),
        side: Some(PositionSide::Long),
        take_profit: Some(tp),
        stop_loss: Some(sl),
        status: LevelStatus::Armed,
        reason: None,
        version: 1,
        client_order_id: None,
        order_id: None,
        trigger_kind: None,
        trigger_price: None,
        error: None,
        closed_qty: None,
        avg_price: None,
        close_orders: None,
        closed_by: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    println!("level_index: one price tick against N armed long levels (stop-losses below the price, a few crossed)");
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        // Long levels: a stop-loss fires when the price falls to it. Stop-losses are spread below
        // 49_999 and the tick at 49_998.5 crosses only the few at or above it.
        let levels: Vec<Level> = (0..n)
            .map(|i| {
                let sl = Decimal::from(49_999) - Decimal::new(i as i64 * 37 % (n as i64 * 5), 1);
                level(i as i64, sl, Decimal::from(200_000 + i as i64))
            })
            .collect();
        let started = Instant::now();
        let index = LevelIndex::build(&levels);
        let build = started.elapsed();
        let price = Decimal::new(499_985, 1); // 49_998.5
        let mut samples = Vec::new();
        let mut hits = 0;
        for _ in 0..2_000 {
            let t = Instant::now();
            let crossed = index.crossed("BTCUSDT", price);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            hits = crossed.len();
        }
        println!(
            "level_index levels={n} crossed={hits} tick_us p50={:.2} p99={:.2} build_ms={:.1}",
            percentile(samples.clone(), 0.5),
            percentile(samples, 0.99),
            build.as_secs_f64() * 1e3
        );
    }

    // Price to order request: index look-up + the intent transaction + signing, on SQLite.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&format!("sqlite://{}/bench.db", dir.path().display())).await.unwrap());
        let mut samples = Vec::new();
        for i in 0..200 {
            let l = store
                .insert_level(&NewLevel {
                    account: "main".into(),
                    symbol: "BTCUSDT".into(),
                    side: PositionSide::Long,
                    take_profit: Some(Decimal::from(200_000)),
                    stop_loss: Some(Decimal::from(50_000 + i)),
                })
                .await
                .unwrap();
            let index = LevelIndex::build([&l]);
            let started = Instant::now();
            let crossed = index.crossed("BTCUSDT", Decimal::from(40_000));
            assert_eq!(crossed.len(), 1);
            let (intent, _claim) = store
                .trigger_level(
                    &script_manager::process::Fence::none(),
                    &l,
                    (crossed[0].1, Decimal::from(40_000), 0),
                    ("bench", 30_000),
                )
                .await
                .unwrap()
                .expect("armed");
            let query = format!(
                "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1&reduceOnly=true&newClientOrderId={}&recvWindow=5000&timestamp=1",
                intent.client_order_id
            );
            let signature = script_manager::exchange::binance::sign::signature("secret", &query);
            std::hint::black_box(signature);
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "price_to_order_request_ms p50={:.3} p99={:.3} (index + intent transaction on SQLite + signing)",
            percentile(samples.clone(), 0.5),
            percentile(samples, 0.99)
        );
    });
}
