//! The simulated exchange: a Binance USDⓈ-M–compatible HTTP server in the
//! same binary, so the default configuration exercises the real client over
//! real HTTP, and tests and benchmarks have a venue that can be metered and
//! made to misbehave.
//!
//! It serves the endpoints the client uses with Binance's shapes, headers
//! and error codes (symbol filters, hedge mode, conditional orders in the
//! Algo Order API); counts weight per fixed minute (429, then 418 for a
//! client that ignores it); checks signatures and timestamps; and takes
//! faults from configuration or `POST /sim/faults`. `GET /sim/meter` reports
//! what it served, by endpoint and account.
//!
//! Owns: the simulated venue. Imports `config` (its settings), `exchange`
//! (Binance's weight table and signing, so both sides agree) and `clock`;
//! never the client's coordination, the store or the processes.

mod account;
mod algo;
mod algo_api;
mod auth;
mod book;
mod control;
mod fapi;
mod feed;
mod form;
mod gate;
mod limits;
mod lots;
mod orders;
mod routes;
mod streams;
mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Faults, SimulatorConfig, default_symbols};

use book::Book;
use limits::Limiter;

/// One account the simulator knows.
#[derive(Debug, Clone)]
pub struct SimAccountSpec {
    pub name: String,
    pub api_key: String,
    pub api_secret: String,
}

/// An order request as it reached the simulator.
#[derive(Debug, Clone)]
pub struct OrderArrival {
    pub symbol: String,
    /// The `X-MBX-APIKEY` it came with (empty when none).
    pub api_key: String,
    pub at: std::time::Instant,
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
    arrivals: tokio::sync::broadcast::Sender<OrderArrival>,
    /// Trading done elsewhere (random fills) stops while set (`POST /sim/trading`).
    trading_paused: std::sync::atomic::AtomicBool,
    streams: Arc<streams::Streams>,
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
        book.keep_fills = config.keep_fills;
        book.keep_orders = config.keep_orders;
        book.lots = lots::from_config(config, &book.prices);
        let now = crate::clock::now_ms();
        for a in accounts {
            book.add_account(&a.api_key, &a.name, &a.api_secret, now, config.opening_positions);
            if let Some(account) = book.accounts.get_mut(&a.api_key) {
                account.hedge = config.hedge_mode;
            }
        }
        Arc::new(Sim {
            book: Mutex::new(book),
            streams: Arc::new(streams::Streams::new(config)),
            limiter: Mutex::new(Limiter::new(config.weight_limit, config.ban_after_violations)),
            faults: RwLock::new(config.faults.clone()),
            meter: Mutex::new(Meter::default()),
            arrivals: tokio::sync::broadcast::channel(4096).0,
            trading_paused: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Order requests (`POST /fapi/v1/order`) as they arrive, before anything
    /// is checked: what a benchmark times a reaction against.
    pub fn order_arrivals(&self) -> tokio::sync::broadcast::Receiver<OrderArrival> {
        self.arrivals.subscribe()
    }

    fn order_arrived(&self, symbol: &str, api_key: Option<&str>) {
        // Nobody listening is the normal case.
        let _ = self.arrivals.send(OrderArrival {
            symbol: symbol.to_string(),
            api_key: api_key.unwrap_or_default().to_string(),
            at: std::time::Instant::now(),
        });
    }

    /// Publishes a `bookTicker` event only (REST prices stay as they are);
    /// `false` for a symbol the venue does not list.
    pub fn publish_book_ticker(&self, symbol: &str, bid: Decimal, ask: Decimal) -> bool {
        let mut book = self.book();
        if !book.prices.contains_key(symbol) {
            return false;
        }
        book.publish_book(symbol, bid, ask, crate::clock::now_ms());
        true
    }

    /// Moves the price REST answers with (and publishes it on the streams),
    /// triggering the algo orders it crosses; `false` for a symbol the venue
    /// does not list.
    pub fn set_price(&self, symbol: &str, price: Decimal) -> bool {
        let matching = self.algo_matching();
        let mut book = self.book();
        if !book.prices.contains_key(symbol) {
            return false;
        }
        let now = crate::clock::now_ms();
        book.set_price(symbol, price, now);
        book.trigger_algos(now, matching);
        true
    }

    /// How a triggered algo order's MARKET order fills: as late as `fill_delay_ms` says.
    fn algo_matching(&self) -> orders::Matching {
        orders::Matching {
            delay_ms: self.faults().fill_delay_ms,
            partial: None,
        }
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

    /// Uses up one of a counted fault (`force_429`, `partial_fills`, ...): whether one was left.
    fn take_fault(&self, counter: impl FnOnce(&mut Faults) -> &mut u32) -> bool {
        let mut faults = self.faults.write().unwrap_or_else(|e| e.into_inner());
        let left = counter(&mut faults);
        let took = *left > 0;
        *left = left.saturating_sub(1);
        took
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
    spawn_market(sim.clone(), config, stop.clone());
    spawn_mark_prices(sim.clone(), stop);
    Ok((addr, sim))
}

/// `markPrice` events: every second (`@markPrice@1s`) and every third
/// (`@markPrice`); each second the mark price catches up with the last price
/// and the algo orders working on the mark price are checked.
fn spawn_mark_prices(sim: Arc<Sim>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut second: u64 = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            second += 1;
            let matching = sim.algo_matching();
            let mut book = sim.book();
            let now = crate::clock::now_ms();
            book.mark_to_market();
            book.trigger_algos(now, matching);
            for (symbol, &price) in &book.marks {
                for every_s in [1u8, 3] {
                    if second.is_multiple_of(every_s as u64) {
                        book.feed.market(feed::MarketEvent::MarkPrice {
                            symbol: symbol.clone(),
                            price,
                            time: now,
                            every_s,
                        });
                    }
                }
            }
        }
    });
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
            let matching = sim.algo_matching();
            let mut book = sim.book();
            let now = crate::clock::now_ms();
            book.step_prices(now);
            book.settle_due(now);
            book.trigger_algos(now, matching);
            let trading = !sim.trading_paused.load(std::sync::atomic::Ordering::Relaxed);
            if trading
                && book.chance(fill_chance)
                && let Some(key) = book.random_account_key()
            {
                book.random_fill(&key, None, crate::clock::now_ms());
            }
        }
    });
}
