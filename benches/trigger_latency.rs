//! `cargo bench --bench trigger_latency [-- TRIGGERS] [--rtt-ms=0,20]`
//!
//! How long a stop-loss takes: from the simulator publishing a price that
//! crosses it to the close order arriving back at the simulator, measured on
//! one clock (both ends in this process). The whole service runs in-process
//! (`app::run`: HTTP, store, scheduler, exchange client, streams) against a
//! simulator of its own, in two configurations, one after the other:
//!
//! - streaming (`exchange.streams = true`, the default): the crossing price is
//!   a `bookTicker` event only (REST prices never move); triggers one at a
//!   time, each waiting for the previous close to finish;
//! - polling (`exchange.streams = false`): the crossing price is the REST
//!   price; level_monitor ticks every 2 s (the seed's interval), so triggers
//!   are published in rounds, one per symbol at a random moment of a 2 s
//!   window, so their phases against the tick are spread evenly.
//!
//! The workload: ACCOUNTS accounts each with a position in each of SYMBOLS
//! symbols, one stop-loss per position, spaced 0.5 % apart per symbol so
//! each published price crosses exactly one more level. TRIGGERS (default
//! 1000) triggers per configuration; a trigger with no order within 10 s is
//! counted as missed.
//!
//! `--rtt-ms` (default `0,20`) runs both configurations once per value with
//! every venue request held that long before the simulator handles it: the
//! order's own trip shows as +rtt, and every venue call made *before* the
//! order (a position read, say) as another +rtt. At 20 ms a p50 near
//! 0 ms + 20 means no round trip before the order leaves; near + 40, one.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use script_manager::app;
use script_manager::config::LoadOptions;
use script_manager::sim::{self, OrderArrival, Sim, SimAccountSpec, SimulatorConfig};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const ACCOUNTS: usize = 20;
const SYMBOLS: usize = 50;
const PRICE: f64 = 100.0;
const TOKEN: &str = "bench-admin-token";
const ORDER_TIMEOUT: Duration = Duration::from_secs(10);

/// One armed stop-loss, and the price that crosses it (and no other still armed).
struct Target {
    id: i64,
    symbol: String,
    api_key: String,
    cross: Decimal,
}

struct Service {
    http: reqwest::Client,
    base: String,
    sim: std::sync::Arc<Sim>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        r.json().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn level_status(&self, id: i64) -> String {
        self.get(&format!("/api/levels/{id}")).await["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until level `id` is no longer armed or pending (its close finished).
    async fn settled(&self, id: i64) {
        let deadline = Instant::now() + ORDER_TIMEOUT;
        while Instant::now() < deadline {
            let status = self.level_status(id).await;
            if status != "armed" && status != "triggered" && status != "pending" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn symbols() -> BTreeMap<String, f64> {
    (0..SYMBOLS).map(|i| (format!("S{i:02}USDT"), PRICE)).collect()
}

fn accounts() -> Vec<SimAccountSpec> {
    (0..ACCOUNTS)
        .map(|i| SimAccountSpec {
            name: format!("a{i:02}"),
            api_key: format!("bench-key-{i:02}"),
            api_secret: format!("bench-secret-{i:02}"),
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The simulator, then the service pointed at it, with every position stored.
/// `rtt_ms`: every request waits this long at the venue before it is handled
/// (the venue's round trip, as seen from the order's arrival).
async fn start(streams: bool, rtt_ms: u64) -> Service {
    let stop = CancellationToken::new();
    let config = SimulatorConfig {
        faults: script_manager::sim::Faults {
            latency_ms: rtt_ms,
            ..Default::default()
        },
        listen: "127.0.0.1:0".into(),
        symbols: symbols(),
        volatility: 0.0,
        fills_per_minute: 0.0,
        opening_positions: SYMBOLS,
        weight_limit: 1_000_000,
        price_step_ms: 60_000,
        ..SimulatorConfig::default()
    };
    let (addr, sim) = sim::start(&config, &accounts(), stop.clone()).await.expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut toml = format!(
        "log_level = \"error\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"{TOKEN}\"\n\
         [store]\nurl = \"sqlite://{}/bench.db\"\n\
         [demo]\nenabled = false\n\
         [exchange]\nkind = \"binance-usdm\"\nbase_url = \"http://{addr}\"\nws_base_url = \"ws://{addr}\"\nstreams = {streams}\n",
        dir.path().display()
    );
    for a in accounts() {
        toml += &format!(
            "[exchange.accounts.{}]\napi_key = \"{}\"\napi_secret = \"{}\"\n",
            a.name, a.api_key, a.api_secret
        );
    }
    // Budgets out of the way: the numbers are reaction time, not what a limit allowed.
    for process in [
        "level_monitor",
        "market_stream",
        "user_stream",
        "position_sync",
        "trade_sync",
    ] {
        if streams || !process.ends_with("_stream") {
            toml += &format!("[processes.{process}]\nmax_api_calls_per_minute = 100000\n");
        }
    }
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, toml).unwrap();
    let options = LoadOptions {
        config_path: Some(path),
        env: Some(Vec::new()),
    };
    let config = app::load_config(&options).unwrap_or_else(|e| panic!("bench configuration: {e:?}"));
    let service_stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = app::run(config, Default::default(), service_stop).await {
            eprintln!("service failed: {e:#}");
        }
    });
    let svc = Service {
        http: script_manager::net::http_client().expect("HTTP client"),
        base: format!("http://127.0.0.1:{port}"),
        sim,
        stop,
        _dir: dir,
    };
    wait_for_positions(&svc).await;
    svc
}

async fn wait_for_positions(svc: &Service) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let open = match svc.http.get(format!("{}/api/positions", svc.base)).send().await {
            Ok(r) => r.json::<Value>().await.ok().and_then(|v| v.as_array().map(Vec::len)),
            Err(_) => None,
        };
        if open == Some(ACCOUNTS * SYMBOLS) {
            return;
        }
        assert!(Instant::now() < deadline, "positions never all stored: {open:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn dec(v: &Value) -> Decimal {
    v.as_str().and_then(|s| s.parse().ok()).expect("a decimal string")
}

/// Targets with their account's rank (the stop's distance from the price).
type Ranked = Vec<(usize, Target)>;

/// One stop-loss per position, and per symbol the order to cross them in:
/// longs from the nearest down, then shorts from the nearest up.
async fn arm(svc: &Service) -> Vec<Vec<Target>> {
    let keys: HashMap<String, String> = accounts().into_iter().map(|a| (a.name, a.api_key)).collect();
    let positions = svc.get("/api/positions").await;
    let price = Decimal::from_f64(PRICE).unwrap();
    let step = Decimal::new(5, 3); // 0.5 %
    let nudge = Decimal::new(1, 1); // 0.1 past the stop
    let mut per_symbol: BTreeMap<String, (Ranked, Ranked)> = BTreeMap::new();
    for p in positions.as_array().unwrap() {
        let account = p["account"].as_str().unwrap();
        let symbol = p["symbol"].as_str().unwrap().to_string();
        let rank: usize = account[1..].parse().unwrap();
        let distance = step * Decimal::from(rank + 1);
        let long = dec(&p["amount"]) > Decimal::ZERO;
        let stop = if long {
            price * (Decimal::ONE - distance)
        } else {
            price * (Decimal::ONE + distance)
        };
        let r = svc
            .http
            .post(format!("{}/api/levels", svc.base))
            .bearer_auth(TOKEN)
            .json(&json!({"account": account, "symbol": symbol, "stop_loss": stop.round_dp(2).to_string()}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            201,
            "creating a level: {}",
            r.text().await.unwrap_or_default()
        );
        let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        let target = Target {
            id,
            symbol: symbol.clone(),
            api_key: keys[account].clone(),
            cross: if long { stop - nudge } else { stop + nudge },
        };
        let (longs, shorts) = per_symbol.entry(symbol).or_default();
        if long {
            longs.push((rank, target));
        } else {
            shorts.push((rank, target));
        }
    }
    per_symbol
        .into_values()
        .map(|(mut longs, mut shorts)| {
            longs.sort_by_key(|(rank, _)| *rank);
            shorts.sort_by_key(|(rank, _)| *rank);
            longs.into_iter().chain(shorts).map(|(_, t)| t).collect()
        })
        .collect()
}

/// Waits for the order of `target` to arrive; its arrival instant.
async fn arrival(rx: &mut broadcast::Receiver<OrderArrival>, symbol: &str, api_key: &str) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + ORDER_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(a)) if a.symbol == symbol && a.api_key == api_key => return Some(a.at),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

/// Latencies in ms, and how many triggers had no order within the timeout.
type Sample = (Vec<f64>, usize);

async fn streaming(triggers: usize, rtt_ms: u64) -> Sample {
    let svc = start(true, rtt_ms).await;
    let plan = arm(&svc).await;
    // Let market_stream subscribe to every symbol with armed levels.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut rx = svc.sim.order_arrivals();
    let (mut latencies, mut missed) = (Vec::new(), 0);
    let order: Vec<&Target> = interleave(&plan).into_iter().take(triggers).collect();
    for t in order {
        rx = rx.resubscribe();
        let published = Instant::now();
        assert!(svc.sim.publish_book_ticker(&t.symbol, t.cross, t.cross));
        match arrival(&mut rx, &t.symbol, &t.api_key).await {
            Some(at) => latencies.push(at.duration_since(published).as_secs_f64() * 1000.0),
            None => missed += 1,
        }
        svc.settled(t.id).await;
    }
    svc.stop.cancel();
    (latencies, missed)
}

async fn polling(triggers: usize, rtt_ms: u64) -> Sample {
    let svc = start(false, rtt_ms).await;
    let plan = arm(&svc).await;
    let mut rx = svc.sim.order_arrivals();
    let (mut latencies, mut missed) = (Vec::new(), 0);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut round = 0;
    while latencies.len() + missed < triggers {
        let batch: Vec<&Target> = plan
            .iter()
            .filter_map(|targets| targets.get(round))
            .take(triggers - latencies.len() - missed)
            .collect();
        assert!(!batch.is_empty(), "more triggers asked than levels armed");
        round += 1;
        // Each symbol's crossing at its own random moment of one tick interval.
        let mut offsets: Vec<(Duration, &Target)> = batch
            .into_iter()
            .map(|t| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (Duration::from_micros(seed % 2_000_000), t)
            })
            .collect();
        offsets.sort_by_key(|(o, _)| *o);
        rx = rx.resubscribe();
        let begin = Instant::now();
        let mut published = HashMap::new();
        for (offset, t) in &offsets {
            tokio::time::sleep_until((begin + *offset).into()).await;
            published.insert((t.symbol.clone(), t.api_key.clone()), Instant::now());
            assert!(svc.sim.set_price(&t.symbol, t.cross));
        }
        let deadline = tokio::time::Instant::now() + ORDER_TIMEOUT;
        while !published.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(a)) => {
                    if let Some(p) = published.remove(&(a.symbol, a.api_key)) {
                        latencies.push(a.at.duration_since(p).as_secs_f64() * 1000.0);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                _ => break,
            }
        }
        missed += published.len();
        for (_, t) in &offsets {
            svc.settled(t.id).await;
        }
    }
    svc.stop.cancel();
    (latencies, missed)
}

/// Round-robin over the symbols, so consecutive triggers touch different ones.
fn interleave(plan: &[Vec<Target>]) -> Vec<&Target> {
    let depth = plan.iter().map(Vec::len).max().unwrap_or(0);
    (0..depth)
        .flat_map(|i| plan.iter().filter_map(move |targets| targets.get(i)))
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn report(mode: &str, (mut latencies, missed): Sample) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "mode={mode} triggers={} missed={missed} p50_ms={p50:.2} p99_ms={p99:.2} min_ms={:.2} max_ms={:.2}",
        latencies.len(),
        latencies.first().copied().unwrap_or(f64::NAN),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    (p50, p99)
}

fn main() {
    let triggers: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    assert!(
        triggers <= ACCOUNTS * SYMBOLS,
        "at most {} triggers",
        ACCOUNTS * SYMBOLS
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rtts: Vec<u64> = std::env::args()
        .find_map(|a| a.strip_prefix("--rtt-ms=").map(String::from))
        .map(|list| list.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 20]);
    runtime.block_on(async move {
        for rtt in rtts {
            let streamed = report(&format!("streaming rtt_ms={rtt}"), streaming(triggers, rtt).await);
            let polled = report(&format!("polling rtt_ms={rtt}"), polling(triggers, rtt).await);
            println!(
                "rtt_ms={rtt} ratio polling/streaming p50={:.0}x p99={:.0}x",
                polled.0 / streamed.0,
                polled.1 / streamed.1
            );
        }
    });
}
