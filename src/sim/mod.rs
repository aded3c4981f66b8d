//! The simulated exchange: a Binance USDⓈ-M–compatible HTTP server in the
//! same binary, so the default configuration exercises the real client over
//! real HTTP, and tests and benchmarks have a venue that can be metered and
//! made to misbehave.
//!
//! It serves the endpoints the client uses with Binance's shapes, headers
//! and error codes; counts weight per fixed minute (429, then 418 for a
//! client that ignores it); checks signatures and timestamps; and takes
//! faults from configuration or `POST /sim/faults`. `GET /sim/meter` reports
//! what it served, by endpoint and account.

mod book;
mod limits;
mod routes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use book::Book;
use limits::Limiter;

/// Misbehaviour on demand, for tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added to every answer.
    pub latency_ms: u64,
    /// Per route (`/fapi/v1/ticker/price`): share of requests answered 503 without doing anything.
    pub error_rate: BTreeMap<String, f64>,
    /// Per route: share of requests answered 200 with a body cut in half.
    pub malformed_rate: BTreeMap<String, f64>,
    /// The next N orders execute, then the answer is a 503.
    pub order_error_after_execute: u32,
    /// Orders execute, then the answer is held this long (the client times out).
    pub order_delay_after_execute_ms: u64,
    /// The simulator's clock runs this far ahead of (or behind) real time.
    pub clock_offset_ms: i64,
    /// The next N requests are answered 429 with `Retry-After: force_429_retry_after_s`.
    pub force_429: u32,
    pub force_429_retry_after_s: u64,
}

/// Settings of the simulator (`[exchange.simulator]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Address of the in-process simulator; port 0 picks a free one.
    pub listen: String,
    pub seed: u64,
    /// Symbols and their opening prices; empty means the ten default ones.
    /// (A list here replaces the defaults rather than adding to them.)
    pub symbols: BTreeMap<String, f64>,
    /// REQUEST_WEIGHT per minute, as `exchangeInfo` reports it.
    pub weight_limit: u32,
    /// Requests sent during a 429 back-off before a 418 ban.
    pub ban_after_violations: u32,
    pub price_step_ms: u64,
    /// Largest relative price move per step.
    pub volatility: f64,
    /// Fills appearing across all accounts (trading done elsewhere).
    pub fills_per_minute: f64,
    /// Positions each account opens with.
    pub opening_positions: usize,
    pub faults: Faults,
}

/// The symbols the simulator lists when none are configured, with opening prices.
pub fn default_symbols() -> BTreeMap<String, f64> {
    let symbols = [
        ("BTCUSDT", 100_000.0),
        ("ETHUSDT", 4_000.0),
        ("SOLUSDT", 200.0),
        ("BNBUSDT", 700.0),
        ("XRPUSDT", 2.5),
        ("DOGEUSDT", 0.35),
        ("ADAUSDT", 0.9),
        ("AVAXUSDT", 40.0),
        ("LINKUSDT", 20.0),
        ("LTCUSDT", 100.0),
    ];
    symbols.iter().map(|&(s, p)| (s.to_string(), p)).collect()
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            listen: "127.0.0.1:0".into(),
            seed: 42,
            symbols: BTreeMap::new(),
            weight_limit: 2400,
            ban_after_violations: 3,
            price_step_ms: 500,
            volatility: 0.0005,
            fills_per_minute: 6.0,
            opening_positions: 3,
            faults: Faults::default(),
        }
    }
}

/// One account the simulator knows.
#[derive(Debug, Clone)]
pub struct SimAccountSpec {
    pub name: String,
    pub api_key: String,
    pub api_secret: String,
}

/// What the simulator has served, for tests and benchmarks.
#[derive(Debug, Default, Serialize)]
pub struct Meter {
    /// "ENDPOINT ACCOUNT" → requests (ACCOUNT is `-` for unsigned ones).
    pub requests: BTreeMap<String, u64>,
    /// Answers by status ("200", "429", "418", "-1021", ...).
    pub answers: BTreeMap<String, u64>,
}

pub struct Sim {
    book: Mutex<Book>,
    limiter: Mutex<Limiter>,
    faults: RwLock<Faults>,
    meter: Mutex<Meter>,
}

impl Sim {
    pub fn new(config: &SimulatorConfig, accounts: &[SimAccountSpec]) -> Arc<Self> {
        let symbols = if config.symbols.is_empty() {
            default_symbols()
        } else {
            config.symbols.clone()
        };
        let prices = symbols
            .iter()
            .map(|(s, &p)| (s.clone(), Decimal::from_f64(p).unwrap_or(Decimal::ONE)))
            .collect();
        let mut book = Book::new(config.seed, config.volatility, prices);
        let now = routes::wall_ms();
        for a in accounts {
            book.add_account(&a.api_key, &a.name, &a.api_secret, now, config.opening_positions);
        }
        Arc::new(Sim {
            book: Mutex::new(book),
            limiter: Mutex::new(Limiter::new(config.weight_limit, config.ban_after_violations)),
            faults: RwLock::new(config.faults.clone()),
            meter: Mutex::new(Meter::default()),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn faults(&self) -> Faults {
        self.faults.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds the simulator and runs it (with its price and fill generators) until `stop` fires.
pub async fn start(
    config: &SimulatorConfig,
    accounts: &[SimAccountSpec],
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, Arc<Sim>)> {
    let sim = Sim::new(config, accounts);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (exchange.simulator.listen): {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = routes::router(sim.clone());
    let server_stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await;
    });
    spawn_market(sim.clone(), config, stop);
    Ok((addr, sim))
}

fn spawn_market(sim: Arc<Sim>, config: &SimulatorConfig, stop: CancellationToken) {
    let step = Duration::from_millis(config.price_step_ms.max(10));
    let fill_chance = config.fills_per_minute / 60_000.0 * step.as_millis() as f64;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(step);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let mut book = sim.book();
            book.step_prices();
            if book.chance(fill_chance)
                && let Some(key) = book.random_account_key()
            {
                book.random_fill(&key, None, routes::wall_ms());
            }
        }
    });
}
