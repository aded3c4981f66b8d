//! The simulated market and accounts: seeded random-walk prices, positions
//! that fills change, fills that appear over time, and MARKET order matching.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::algo::SimAlgo;
use super::feed::{Feed, MarketEvent, OrderUpdate, account_update};
use super::lots::Lot;
use super::orders::SimOrder;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimFill {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub side: &'static str,
    pub price: Decimal,
    pub qty: Decimal,
    pub realized_pnl: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: &'static str,
    pub time: i64,
    pub position_side: &'static str,
    pub buyer: bool,
    pub maker: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SimPosition {
    pub amount: Decimal,
    pub entry: Decimal,
    pub update_time: i64,
}

/// One account. Everything it keeps is bounded: fills (`keep_fills`),
/// orders and finished algo orders (`keep_orders`), a position row per
/// symbol; an account that never traded holds empty collections only.
#[derive(Debug, Default)]
pub struct SimAccount {
    pub name: String,
    pub secret: String,
    pub positions: BTreeMap<String, SimPosition>,
    /// Oldest first; at most `Book::keep_fills` (a venue's history window).
    pub fills: VecDeque<SimFill>,
    /// By client order id; at most `Book::keep_orders`.
    pub orders: HashMap<String, SimOrder>,
    /// Conditional orders by algo id (oldest first); finished ones at most `Book::keep_orders`.
    pub algos: BTreeMap<u64, SimAlgo>,
    /// Hedge mode (`dualSidePosition`): orders must name `positionSide`, never `reduceOnly`.
    pub hedge: bool,
}

pub struct Book {
    rng: StdRng,
    volatility: f64,
    pub prices: BTreeMap<String, Decimal>,
    /// Mark prices: the last price as of the latest `markPrice` tick (every
    /// second), so they lag a fast move as the venue's do.
    pub marks: BTreeMap<String, Decimal>,
    /// Each symbol's quantity and price filters.
    pub lots: BTreeMap<String, Lot>,
    /// Each listed symbol's last 24 h, for `ticker/24hr`.
    pub day: BTreeMap<String, DayStats>,
    /// By API key.
    pub accounts: HashMap<String, SimAccount>,
    /// The API keys, sorted: random trading picks from them by the seeded
    /// generator without sorting every account on every pick.
    keys: Vec<String>,
    next_trade_id: u64,
    next_order_id: u64,
    pub(super) next_algo_id: u64,
    /// Orders accepted but not filled yet: (API key, client order id).
    pub(super) pending: Vec<(String, String)>,
    /// Where market and user-data events go (WebSocket subscribers).
    pub feed: Feed,
    /// `u` of the next `bookTicker` event.
    update_id: u64,
    pub keep_fills: usize,
    pub keep_orders: usize,
}

/// Open, high, low and volume since the simulator started (its "24 h").
#[derive(Debug, Clone, Default)]
pub struct DayStats {
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub volume: Decimal,
    pub quote_volume: Decimal,
    pub trades: u64,
}

impl DayStats {
    fn opening(price: Decimal) -> Self {
        DayStats {
            open: price,
            high: price,
            low: price,
            ..DayStats::default()
        }
    }

    fn saw(&mut self, price: Decimal) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
    }
}

/// What one fill did (for the `ORDER_TRADE_UPDATE` its caller publishes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Filled {
    pub id: u64,
    pub realized: Decimal,
    pub commission: Decimal,
}

/// Every symbol trades in steps of this quantity (`LOT_SIZE.stepSize`).
pub const STEP_SIZE: Decimal = Decimal::from_parts(1, 0, 0, false, 3);

impl Book {
    /// Ids start from the wall clock, so a restarted simulator never reuses the
    /// ids of an earlier run (a store's sync cursors stay valid).
    pub fn new(seed: u64, volatility: f64, prices: BTreeMap<String, Decimal>) -> Self {
        let base = crate::clock::now_ms().max(0) as u64;
        Book {
            rng: StdRng::seed_from_u64(seed),
            volatility,
            day: prices.iter().map(|(s, &p)| (s.clone(), DayStats::opening(p))).collect(),
            marks: prices.clone(),
            lots: super::lots::defaults(&prices),
            prices,
            accounts: HashMap::new(),
            keys: Vec::new(),
            pending: Vec::new(),
            feed: Feed::default(),
            update_id: 0,
            keep_fills: 10_000,
            keep_orders: 10_000,
            next_trade_id: base,
            next_order_id: base,
            next_algo_id: base,
        }
    }

    /// Adds an account with a few opening positions.
    pub fn add_account(&mut self, api_key: &str, name: &str, secret: &str, now_ms: i64, opening_positions: usize) {
        if let Err(at) = self.keys.binary_search_by(|k| k.as_str().cmp(api_key)) {
            self.keys.insert(at, api_key.to_string());
        }
        self.accounts.insert(
            api_key.to_string(),
            SimAccount {
                name: name.into(),
                secret: secret.into(),
                ..SimAccount::default()
            },
        );
        // Consecutive symbols from a random start: each opening position in a symbol of its own.
        let symbols: Vec<String> = self.prices.keys().cloned().collect();
        let start = self.rng.random_range(0..symbols.len().max(1));
        for i in 0..opening_positions.min(symbols.len()) {
            let symbol = &symbols[(start + i) % symbols.len()];
            self.random_fill(api_key, Some(symbol), now_ms);
        }
    }

    /// One step of the random walk for every symbol. Every symbol's book is
    /// published, moved or not: on the venue the best quantities change all
    /// the time, so `bookTicker` keeps coming for a symbol whose price is still.
    pub fn step_prices(&mut self, now_ms: i64) {
        for (symbol, price) in self.prices.iter_mut() {
            let change = 1.0 + self.rng.random_range(-self.volatility..=self.volatility);
            *price = round_price(price.to_f64().unwrap_or(1.0) * change);
            if let Some(day) = self.day.get_mut(symbol) {
                day.saw(*price);
            }
        }
        let books: Vec<(String, Decimal)> = self.prices.iter().map(|(s, p)| (s.clone(), *p)).collect();
        for (symbol, price) in books {
            self.publish_book(&symbol, price, price, now_ms);
        }
    }

    pub fn set_price(&mut self, symbol: &str, price: Decimal, now_ms: i64) {
        self.prices.insert(symbol.to_string(), price);
        self.day
            .entry(symbol.to_string())
            .or_insert_with(|| DayStats::opening(price))
            .saw(price);
        self.publish_book(symbol, price, price, now_ms);
    }

    /// A `bookTicker` event (the book itself unchanged: REST prices stay as they are).
    pub fn publish_book(&mut self, symbol: &str, bid: Decimal, ask: Decimal, now_ms: i64) {
        self.update_id += 1;
        self.feed.market(MarketEvent::BookTicker {
            symbol: symbol.to_string(),
            bid,
            ask,
            update_id: self.update_id,
            time: now_ms,
        });
    }

    /// The mark prices catch up with the last prices (a `markPrice` tick).
    pub fn mark_to_market(&mut self) {
        self.marks.clone_from(&self.prices);
    }

    /// The venue stops listing `symbol`: every route answers -1121 for it.
    pub fn delist(&mut self, symbol: &str) -> bool {
        self.day.remove(symbol);
        self.marks.remove(symbol);
        self.prices.remove(symbol).is_some()
    }

    /// A fill from the account's own trading elsewhere (a UI, another bot): trade sync always has work.
    pub fn random_fill(&mut self, api_key: &str, symbol: Option<&str>, now_ms: i64) {
        let symbol = match symbol {
            Some(s) => s.to_string(),
            None => {
                let symbols: Vec<&String> = self.prices.keys().collect();
                symbols[self.rng.random_range(0..symbols.len())].clone()
            }
        };
        let price = self.prices[&symbol];
        let notional = self.rng.random_range(200.0..2_000.0);
        let qty = round_qty(notional / price.to_f64().unwrap_or(1.0));
        let side = if self.rng.random_bool(0.5) { "BUY" } else { "SELL" };
        let order_id = self.next_order_id();
        let filled = self.fill(api_key, &symbol, side, qty, price, order_id, now_ms);
        let client_id = format!("web-{order_id}");
        let update = OrderUpdate {
            symbol: &symbol,
            client_order_id: &client_id,
            side,
            orig_qty: qty,
            execution: "TRADE",
            status: "FILLED",
            order_id,
            last_qty: qty,
            last_price: price,
            cumulative_qty: qty,
            avg_price: price,
            commission: filled.commission,
            realized: filled.realized,
            trade_id: filled.id,
            reduce_only: false,
            time: now_ms,
        };
        self.feed.user(api_key, update.payload());
    }

    pub(super) fn next_order_id(&mut self) -> u64 {
        self.next_order_id += 1;
        self.next_order_id
    }

    /// Applies a fill to the account's position and records it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill(
        &mut self,
        api_key: &str,
        symbol: &str,
        side: &'static str,
        qty: Decimal,
        price: Decimal,
        order_id: u64,
        now_ms: i64,
    ) -> Filled {
        self.next_trade_id += 1;
        let id = self.next_trade_id;
        let Some(account) = self.accounts.get_mut(api_key) else {
            return Filled::default();
        };
        let position = account.positions.entry(symbol.to_string()).or_default();
        let signed = if side == "BUY" { qty } else { -qty };
        let mut realized = Decimal::ZERO;
        let same_direction =
            position.amount.is_zero() || (position.amount.is_sign_positive() == signed.is_sign_positive());
        if same_direction {
            let total = position.amount.abs() + qty;
            position.entry = (position.entry * position.amount.abs() + price * qty) / total;
            position.amount += signed;
        } else {
            let closed = qty.min(position.amount.abs());
            let direction = if position.amount.is_sign_positive() {
                Decimal::ONE
            } else {
                -Decimal::ONE
            };
            realized = (price - position.entry) * closed * direction;
            position.amount += signed;
            if position.amount.is_zero() {
                position.entry = Decimal::ZERO;
            } else if position.amount.is_sign_positive() != (direction == Decimal::ONE) {
                position.entry = price; // flipped: the rest opened at this price
            }
        }
        // A closed position keeps its row: Binance reports its last update time too.
        position.update_time = now_ms;
        let quote = (price * qty).round_dp(8);
        let commission = (quote * Decimal::new(4, 4)).round_dp(8);
        let position = position.clone();
        if let Some(day) = self.day.get_mut(symbol) {
            day.volume += qty;
            day.quote_volume += quote;
            day.trades += 1;
        }
        account.fills.push_back(SimFill {
            symbol: symbol.to_string(),
            id,
            order_id,
            side,
            price,
            qty,
            realized_pnl: realized.round_dp(8),
            quote_qty: quote,
            commission,
            commission_asset: "USDT",
            time: now_ms,
            position_side: "BOTH",
            buyer: side == "BUY",
            maker: false,
        });
        while account.fills.len() > self.keep_fills {
            account.fills.pop_front();
        }
        let mark = self.prices.get(symbol).copied().unwrap_or(price);
        let unrealized = (mark - position.entry) * position.amount;
        self.feed.user(
            api_key,
            account_update(symbol, position.amount, position.entry, unrealized, now_ms),
        );
        Filled {
            id,
            realized: realized.round_dp(8),
            commission,
        }
    }

    pub fn random_account_key(&mut self) -> Option<String> {
        (!self.keys.is_empty()).then(|| self.keys[self.rng.random_range(0..self.keys.len())].clone())
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }
}

fn round_price(p: f64) -> Decimal {
    let digits = if p >= 1000.0 {
        1
    } else if p >= 10.0 {
        2
    } else {
        4
    };
    Decimal::from_f64(p).unwrap_or(Decimal::ONE).round_dp(digits)
}

fn round_qty(q: f64) -> Decimal {
    let q = Decimal::from_f64(q).unwrap_or(Decimal::ONE).round_dp(3);
    if q.is_zero() { Decimal::new(1, 3) } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Book {
        let mut prices = BTreeMap::new();
        prices.insert("BTCUSDT".to_string(), Decimal::from(100_000));
        Book::new(7, 0.001, prices)
    }

    #[test]
    fn a_restarted_simulator_never_reuses_trade_ids() {
        let mut first = book();
        first.add_account("k", "main", "s", 0, 3);
        let last = first.accounts["k"].fills.iter().map(|f| f.id).max().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut second = book();
        second.add_account("k", "main", "s", 0, 3);
        let first_new = second.accounts["k"].fills.iter().map(|f| f.id).min().unwrap();
        assert!(first_new > last, "{first_new} after {last}");
    }

    #[test]
    fn ten_thousand_idle_accounts_hold_nothing_and_fills_stay_bounded() {
        let mut b = book();
        b.keep_fills = 100;
        for i in 0..10_000 {
            b.add_account(&format!("k{i:05}"), &format!("a{i:05}"), "s", 0, 0);
        }
        assert_eq!(b.accounts.len(), 10_000);
        assert!(
            b.accounts
                .values()
                .all(|a| a.fills.capacity() == 0 && a.positions.is_empty())
        );
        for _ in 0..1_000 {
            b.random_fill("k00042", None, 0);
        }
        assert_eq!(b.accounts["k00042"].fills.len(), 100, "at most keep_fills kept");
        let picked = b.random_account_key().unwrap();
        assert!(b.accounts.contains_key(&picked));
    }

    #[test]
    fn same_seed_same_walk() {
        let (mut a, mut b) = (book(), book());
        for _ in 0..10 {
            a.step_prices(0);
            b.step_prices(0);
        }
        assert_eq!(a.prices, b.prices);
        assert_ne!(a.prices["BTCUSDT"], Decimal::from(100_000));
    }
}
