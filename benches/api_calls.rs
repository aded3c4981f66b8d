//! `cargo bench --bench api_calls [-- SPEEDUP WINDOW_S]`
//!
//! The seed's headline: exchange calls per minute of the six processes
//! against the simulated exchange, for the workload 10 accounts, 20 symbols,
//! 30 open positions, 60 armed levels, 100 alerts, in three configurations:
//! coordinated (streams off: the polling service), streaming (the defaults:
//! market_stream and user_stream up, REST only to reconcile and keep listen
//! keys alive, and backstop_sync keeping a conditional order on the venue per
//! armed stop-loss), uncoordinated (`upstream.batching/dedupe/cache = false`), and
//! the seed's "before" pattern (its old intervals, no coordination); plus the
//! floor, the fewest calls that keep every data type as fresh as its interval
//! requires when polling.
//!
//! Time is accelerated: every interval (and timeout, never below 1 s, and offset) is divided by
//! SPEEDUP (default 10) and the simulator's meter is read over WINDOW_S
//! seconds (default 30) of wall time, which stand for SPEEDUP × WINDOW_S
//! seconds of platform time; calls per minute are reported in platform time.
//! Ratios between configurations do not depend on the speed-up. The
//! streaming configuration runs 6 × faster again (its REST cycles are 5 and 30
//! minutes long; the window then holds 30 platform minutes). Budgets are set
//! out of the way so the numbers are demand, not what a limit allowed.
//! `API_CALLS_BY_ENDPOINT=1` prints the simulator's meter by endpoint and account.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use script_manager::app::exchange::sim_specs;
use script_manager::budget::{Admission, ProcessCalls, VenueWeight};
use script_manager::config::{Config, ProcessConfig, ProcessMode, process_defaults};
use script_manager::exchange::binance::{Binance, TransportOptions};
use script_manager::exchange::{Account, Caller, Venue};
use script_manager::net::http_client;
use script_manager::processes::Platform;
use script_manager::processes::platform::StreamSettings;
use script_manager::sim::{self, SimulatorConfig};
use script_manager::store::{NewAlert, NewLevel, Store};
use script_manager::telemetry::Metrics;
use script_manager::upstream::Knobs;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const ACCOUNTS: usize = 10;
const SYMBOLS: usize = 20;
const LEVELS: usize = 60;
const ALERTS: usize = 100;

/// (id, kind, interval s) of each scheduled process.
type Plan = Vec<(&'static str, &'static str, f64)>;

fn seed_intervals() -> Plan {
    vec![
        ("trade_sync", "trade_sync", 30.0),
        ("level_monitor", "level_monitor", 2.0),
        ("price_update", "price_update", 10.0),
        ("notification_check", "notification_check", 5.0),
        ("position_sync", "position_sync", 60.0),
        ("dashboard_sync", "dashboard_sync", 30.0),
    ]
}

/// The seed's problem statement: main.py auto-sync every 2 s, background_sync.py every 30 s,
/// monitor/main.py every 1 s; one open view: TradesView (sync 30 s, prices 2 s, notifications 3 s),
/// DashboardView and PositionsView (30 s); MonitoringView's refresh makes no exchange call.
fn before_intervals() -> Plan {
    vec![
        ("main_auto_sync", "trade_sync", 2.0),
        ("background_sync", "trade_sync", 30.0),
        ("trades_view_sync", "trade_sync", 30.0),
        ("monitor", "level_monitor", 1.0),
        ("trades_view_prices", "price_update", 2.0),
        ("trades_view_notifications", "notification_check", 3.0),
        ("positions_view_sync", "position_sync", 30.0),
        ("dashboard_view_sync", "dashboard_sync", 30.0),
    ]
}

struct Outcome {
    calls_per_min: f64,
    weight_per_min: f64,
    failed_runs: u64,
    pairs: usize,
    /// (account, symbol, trade-sync interval) triples with at least one new fill, per minute.
    changed_per_min: f64,
}

fn accounts() -> Vec<Account> {
    (0..ACCOUNTS)
        .map(|i| Account {
            name: format!("acct{i}"),
            api_key: script_manager::config::Secret::new(format!("key-{i}")),
            api_secret: script_manager::config::Secret::new(format!("secret-{i}")),
        })
        .collect()
}

async fn meter_totals(http: &reqwest::Client, base: &str) -> (f64, f64) {
    let m: Value = http
        .get(format!("{base}/sim/meter"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let calls: f64 = m["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    if std::env::var_os("API_CALLS_BY_ENDPOINT").is_some() {
        eprintln!("  {}", m["requests"]);
    }
    let weight: f64 = m["weight_by_minute"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    (calls, weight)
}

/// Timeouts are accelerated like intervals, but never below this (seconds).
const MIN_TIMEOUT_S: f64 = 1.0;

/// The streaming configuration runs this much faster again than the others.
const STREAMING_SPEEDUP: f64 = 6.0;

/// The seed's intervals plus the two streams.
/// The defaults: the seed's six, the two streams, and the venue-side
/// backstops (one per armed stop-loss: placements, cancels, reconciliation reads).
fn streaming_plan() -> Plan {
    let mut plan = seed_intervals();
    plan.push(("market_stream", "market_stream", 0.0));
    plan.push(("user_stream", "user_stream", 0.0));
    plan.push(("backstop_sync", "backstop_sync", 1.0));
    plan
}

/// Stream settings for the simulator at `addr`, their REST intervals accelerated like the rest.
fn stream_settings(addr: std::net::SocketAddr, speedup: f64) -> StreamSettings {
    StreamSettings {
        base_url: format!("ws://{addr}"),
        silence: Duration::from_secs(10),
        max_lifetime: Duration::from_secs(86_400),
        listen_key_renew: Duration::from_secs_f64(1800.0 / speedup),
        reconcile: Duration::from_secs_f64(300.0 / speedup),
        pacer: std::sync::Arc::new(script_manager::exchange::binance::pacer::ConnectPacer::new(1.0, 5)),
        user_streams_per_connection: 50,
        connections: std::sync::Arc::default(),
    }
}

async fn run(plan: &Plan, knobs: Knobs, streams: bool, speedup: f64, window: f64) -> Outcome {
    let stop = CancellationToken::new();
    let mut symbols = BTreeMap::new();
    for i in 0..SYMBOLS {
        symbols.insert(format!("SYM{i:02}USDT"), 10.0 + 7.0 * i as f64);
    }
    let sim_config = SimulatorConfig {
        symbols,
        weight_limit: 100_000_000,
        fills_per_minute: 6.0 * speedup,
        opening_positions: 3,
        volatility: 0.0002,
        ..SimulatorConfig::default()
    };
    let accounts = accounts();
    let (addr, _sim) = sim::start(&sim_config, &sim_specs(&accounts), stop.clone())
        .await
        .unwrap();
    let base = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(&format!("sqlite://{}/bench.db", dir.path().display()))
            .await
            .unwrap(),
    );
    let metrics = Arc::new(Metrics::new());
    let limits = plan
        .iter()
        .map(|(id, _, _)| (id.to_string(), 1_000_000))
        .chain([("service".to_string(), 1_000_000)]);
    let process_budget = Arc::new(ProcessCalls::new(limits));
    let budget = Arc::new(VenueWeight::new(100_000_000, 0.8, 0.2, ["level_monitor".to_string()]));
    let options = TransportOptions {
        base_url: base.clone(),
        recv_window_ms: 5000,
        timeout: Duration::from_secs(10),
    };
    let admission = Admission::new(process_budget.clone(), budget);
    let venue = Arc::new(
        Binance::new(
            options,
            knobs,
            admission,
            metrics.clone(),
            script_manager::accounts::Accounts::new(accounts.clone(), script_manager::accounts::Source::File),
        )
        .unwrap(),
    );
    let caller = Caller::new("service", 1, Instant::now() + Duration::from_secs(30));
    venue.sync_time(&caller).await.unwrap();

    // The workload: 60 armed levels far from the price on open positions, 100 alerts that never fire.
    let mut levels = 0;
    let mut positions = 0;
    for a in &accounts {
        let open = venue.positions(&caller, &a.name).await.unwrap();
        positions += open.len();
        for p in open {
            for k in 0..2 {
                if levels < LEVELS {
                    let (tp, sl) = if p.amount > Decimal::ZERO {
                        (p.mark_price * Decimal::from(3 + k), p.mark_price / Decimal::from(3 + k))
                    } else {
                        (p.mark_price / Decimal::from(3 + k), p.mark_price * Decimal::from(3 + k))
                    };
                    let level = NewLevel {
                        account: a.name.clone(),
                        symbol: p.symbol.clone(),
                        side: script_manager::domain::PositionSide::of(p.amount).expect("an open position"),
                        take_profit: Some(tp.round_dp(6)),
                        stop_loss: Some(sl.round_dp(6)),
                    };
                    store.insert_level(&level).await.unwrap();
                    levels += 1;
                }
            }
        }
    }
    for i in 0..ALERTS {
        let alert = NewAlert {
            symbol: format!("SYM{:02}USDT", i % SYMBOLS),
            condition: "above".into(),
            price: Decimal::from(1_000_000 + i as i64),
            webhook_url: None,
        };
        store.insert_alert(&alert).await.unwrap();
    }
    assert_eq!(
        (levels, positions >= 30),
        (LEVELS, true),
        "workload: {levels} levels, {positions} positions"
    );

    let mut config: Config = script_manager::app::load_config(&script_manager::config::LoadOptions {
        config_path: None,
        env: Some(vec![("SCRIPT_MANAGER_BUILTIN_PROCESSES".into(), "false".into())]),
    })
    .unwrap();
    let catalog: Arc<script_manager::domain::Catalog> = Arc::default();
    // The symbols' filters, as the service reads them at start (backstops need the ticks).
    script_manager::app::exchange::bootstrap(&venue, &catalog).await;
    let stream_health: Arc<script_manager::processes::platform::StreamHealth> = Arc::default();
    let levels = script_manager::app::level_engine(&config, &store, &venue, &catalog, &metrics, &stream_health);
    let platform = Arc::new(Platform {
        store: store.clone(),
        venue: venue.clone(),
        accounts: venue.accounts().clone(),
        symbols: Vec::new(),
        events: metrics.domain.clone(),
        catalog,
        levels,
        backstops: script_manager::processes::backstop::BackstopSettings {
            // Placed only where they are planned (the streaming configuration), reconciled at the accelerated pace.
            reconcile: Duration::from_secs_f64(config.levels.backstop_reconcile_seconds / speedup),
            ..script_manager::app::backstop_settings(&config)
        },
        live: Arc::default(),
        stream_stale_after: Duration::from_secs(5),
        streaming: streams.then(|| stream_settings(addr, speedup)),
        stream_metrics: metrics.stream.clone(),
        stream_health,
        webhooks: Arc::new(
            script_manager::processes::notification_check::webhook_client(&config.notifications).unwrap(),
        ),
        webhook_url: None,
        webhook_hosts: Vec::new(),
        batching: knobs.batching,
        shared_store: false,
        account_queues: Default::default(),
    });
    for (i, &(id, kind, interval)) in plan.iter().enumerate() {
        let defaults = process_defaults(kind);
        if kind.ends_with("_stream") {
            // Continuous, as built in: the timeout is the lease, not a limit on the run.
            let p = ProcessConfig {
                mode: ProcessMode::Continuous,
                interval_seconds: 10.0,
                timeout_seconds: 10.0,
                max_api_calls_per_minute: 1_000_000,
                ..defaults
            };
            config.processes.insert(id.to_string(), p);
            continue;
        }
        let p = ProcessConfig {
            interval_seconds: interval / speedup,
            // The simulator's answers take real milliseconds: a timeout of a
            // few ms (backstop_sync's 1 s at 60 x) would cut placements short
            // and count their retries, a cost the platform never sees.
            timeout_seconds: (interval / speedup).max(MIN_TIMEOUT_S),
            start_offset_seconds: (i as f64 * 0.1) / speedup,
            max_api_calls_per_minute: 1_000_000,
            retry_count: 0,
            ..defaults
        };
        config.processes.insert(id.to_string(), p);
    }
    let scheduler = script_manager::app::build_scheduler(&config, metrics.clone(), process_budget, Some(&platform));
    scheduler.start();
    let http = http_client().unwrap();
    // Warm up past the longest interval, so every process has run and caches are filled.
    tokio::time::sleep(Duration::from_secs_f64(60.0 / speedup + 1.0)).await;
    let failed_before: u64 = scheduler.processes().iter().map(|p| p.stats().error_count).sum();
    let (c0, w0) = meter_totals(&http, &base).await;
    let t0 = script_manager::clock::now_ms();
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let (c1, w1) = meter_totals(&http, &base).await;
    let t1 = script_manager::clock::now_ms();
    // Fills that appeared in the window, bucketed by trade sync interval (30 s platform time).
    let bucket_ms = (30_000.0 / speedup) as i64;
    let mut changed = std::collections::BTreeSet::new();
    for a in &accounts {
        let fills: Value = http
            .get(format!("{base}/sim/fills?account={}", a.name))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for f in fills.as_array().unwrap() {
            let t = f["time"].as_i64().unwrap();
            if t >= t0 && t < t1 {
                changed.insert((a.name.clone(), f["symbol"].as_str().unwrap().to_string(), t / bucket_ms));
            }
        }
    }
    if std::env::var_os("API_CALLS_BY_ENDPOINT").is_some() {
        // What the backstops and levels did in the run, by outcome.
        for line in metrics.encode_prometheus().lines() {
            if (line.contains("backstop") || line.contains("level")) && !line.starts_with('#') && !line.ends_with(" 0")
            {
                eprintln!("  {line}");
            }
        }
    }
    let failed_after: u64 = scheduler.processes().iter().map(|p| p.stats().error_count).sum();
    // Failed runs invalidate the numbers: say which process failed and why.
    for p in scheduler.processes().iter() {
        let stats = p.stats();
        if stats.error_count > 0 {
            eprintln!(
                "  {}: {} failed runs, last: {}",
                p.id,
                stats.error_count,
                stats.last_error_message.as_deref().unwrap_or("-")
            );
        }
    }
    let mut pairs = 0;
    for a in venue.accounts().names() {
        let mut symbols = store.account_symbols(&a).await.unwrap();
        symbols.extend(store.traded_symbols(&a, 0).await.unwrap());
        symbols.sort();
        symbols.dedup();
        pairs += symbols.len();
    }
    scheduler.shutdown(Duration::from_secs(5)).await;
    stop.cancel();
    let platform_minutes = window * speedup / 60.0;
    Outcome {
        calls_per_min: (c1 - c0) / platform_minutes,
        weight_per_min: (w1 - w0) / platform_minutes,
        failed_runs: failed_after - failed_before,
        pairs,
        changed_per_min: changed.len() as f64 / platform_minutes,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let speedup: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let window: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let on = Knobs { batching: true, dedupe: true, cache: true };
        let off = Knobs { batching: false, dedupe: false, cache: false };
        let coordinated = run(&seed_intervals(), on, false, speedup, window).await;
        // REST only reconciles while streams are up (every 5 min, listen keys every 30 min):
        // a longer stretch of platform time, so the window holds whole cycles of both.
        let streaming = run(&streaming_plan(), on, true, speedup * STREAMING_SPEEDUP, window).await;
        let uncoordinated = run(&seed_intervals(), off, false, speedup, window).await;
        let before = run(&before_intervals(), off, false, speedup, window).await;
        // Floor: prices once per level_monitor interval (2 s: 30 batched calls of weight 2 a minute);
        // per account one positions call per trade sync interval (30 s: 2 a minute, weight 5), which
        // also keeps positions fresher than their 60 s; and one fills call (weight 5) per
        // (account, symbol, 30 s) that actually had a new fill. Dashboards and notifications need
        // no call of their own.
        let pairs = coordinated.pairs as f64;
        let changed = coordinated.changed_per_min;
        let floor_calls = 30.0 + 2.0 * ACCOUNTS as f64 + changed;
        let floor_weight = 30.0 * 2.0 + 2.0 * ACCOUNTS as f64 * 5.0 + changed * 5.0;
        for (name, o) in [
            ("coordinated", &coordinated),
            ("streaming", &streaming),
            ("uncoordinated", &uncoordinated),
            ("seed_before", &before),
        ] {
            println!(
                "config={name} calls_per_min={:.1} weight_per_min={:.1} failed_runs={}",
                o.calls_per_min, o.weight_per_min, o.failed_runs
            );
        }
        println!("config=floor calls_per_min={floor_calls:.1} weight_per_min={floor_weight:.1} covered_pairs={pairs} changed_pairs_per_min={changed:.1}");
        println!(
            "ratio coordinated/uncoordinated={:.3} coordinated/seed_before={:.3} coordinated/floor={:.3} (speedup={speedup} window_s={window})",
            coordinated.calls_per_min / uncoordinated.calls_per_min,
            coordinated.calls_per_min / before.calls_per_min,
            coordinated.calls_per_min / floor_calls,
        );
        println!(
            "ratio streaming/uncoordinated={:.4} streaming/coordinated={:.3}",
            streaming.calls_per_min / uncoordinated.calls_per_min,
            streaming.calls_per_min / coordinated.calls_per_min,
        );
    });
}
