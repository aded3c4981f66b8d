//! The market data and order facts that both the store and the exchange
//! speak: prices, positions, fills, order sides, statuses and
//! acknowledgements. Decimals, never floats; times in ms since the epoch.
//!
//! Owns: these value types. Imports nothing of the service (ground floor), so
//! the store can keep them without importing the exchange.

mod algo;

use rust_decimal::Decimal;
use serde::Serialize;

pub use algo::{AlgoKind, AlgoOrder, AlgoOrderRequest, AlgoSize, AlgoStatus, WorkingType};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Price {
    pub symbol: String,
    pub price: Decimal,
    /// Venue time of the price, ms since the epoch.
    pub time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    pub symbol: String,
    /// Signed: > 0 long, < 0 short.
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
    pub unrealized_pnl: Decimal,
    pub update_time_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderSide {
    Buy,
    Sell,
}

impl OrderSide {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSide::Buy => "BUY",
            OrderSide::Sell => "SELL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "BUY" => Some(OrderSide::Buy),
            "SELL" => Some(OrderSide::Sell),
            _ => None,
        }
    }
}

/// Which way a position is held: what a take-profit/stop-loss level protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionSide {
    Long,
    Short,
}

impl PositionSide {
    pub fn as_str(self) -> &'static str {
        match self {
            PositionSide::Long => "long",
            PositionSide::Short => "short",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "long" => Some(PositionSide::Long),
            "short" => Some(PositionSide::Short),
            _ => None,
        }
    }

    /// The side of a signed position amount; `None` when flat.
    pub fn of(amount: Decimal) -> Option<Self> {
        match amount {
            a if a > Decimal::ZERO => Some(PositionSide::Long),
            a if a < Decimal::ZERO => Some(PositionSide::Short),
            _ => None,
        }
    }

    /// The order side that reduces this position.
    pub fn closing(self) -> OrderSide {
        match self {
            PositionSide::Long => OrderSide::Sell,
            PositionSide::Short => OrderSide::Buy,
        }
    }

    /// How much of a signed `amount` is held on this side (0 when flat or the other way).
    pub fn held(self, amount: Decimal) -> Decimal {
        match (self, PositionSide::of(amount)) {
            (PositionSide::Long, Some(PositionSide::Long)) => amount,
            (PositionSide::Short, Some(PositionSide::Short)) => -amount,
            _ => Decimal::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fill {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub side: OrderSide,
    pub price: Decimal,
    pub qty: Decimal,
    pub realized_pnl: Decimal,
    pub commission: Decimal,
    pub time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
    ExpiredInMatch,
    Other(String),
}

impl OrderStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "NEW" => OrderStatus::New,
            "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
            "FILLED" => OrderStatus::Filled,
            "CANCELED" => OrderStatus::Canceled,
            "REJECTED" => OrderStatus::Rejected,
            "EXPIRED" => OrderStatus::Expired,
            "EXPIRED_IN_MATCH" => OrderStatus::ExpiredInMatch,
            other => OrderStatus::Other(other.to_string()),
        }
    }

    /// Whether the order will not change any more (`NEW` and `PARTIALLY_FILLED` still can).
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            OrderStatus::New | OrderStatus::PartiallyFilled | OrderStatus::Other(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderAck {
    pub order_id: u64,
    pub client_order_id: String,
    pub symbol: String,
    pub status: OrderStatus,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    pub avg_price: Decimal,
    /// Venue time of the order's last change (ms); 0 when not given.
    pub update_time_ms: i64,
}

/// A symbol as the venue lists it, with the filters that bind an order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    pub symbol: String,
    /// `TRADING` (orders accepted); anything else is listed but closed.
    pub trading: bool,
    /// Quantities are multiples of this (`LOT_SIZE.stepSize`); `None` when not given.
    pub step_size: Option<Decimal>,
    /// `LOT_SIZE.minQty` and `maxQty` (limit orders).
    pub min_qty: Option<Decimal>,
    pub max_qty: Option<Decimal>,
    /// `MARKET_LOT_SIZE`: MARKET orders, whose maximum is often far below `LOT_SIZE`'s.
    pub market_min_qty: Option<Decimal>,
    pub market_max_qty: Option<Decimal>,
    pub market_step: Option<Decimal>,
    /// Prices are multiples of this (`PRICE_FILTER.tickSize`).
    pub tick_size: Option<Decimal>,
}

/// The venue's symbols as last read from `exchangeInfo`, shared by whoever
/// validates or rounds (the data API, the processes). Empty until first read.
#[derive(Debug, Default)]
pub struct Catalog {
    listings: std::sync::RwLock<Option<std::collections::BTreeMap<String, Listing>>>,
}

impl Catalog {
    /// Replaces what is known with the venue's latest answer.
    pub fn replace(&self, listings: Vec<Listing>) {
        let map = listings.into_iter().map(|l| (l.symbol.clone(), l)).collect();
        *self.listings.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
    }

    /// `Some(listed)` once the venue's list has been read; `None` before.
    pub fn lists(&self, symbol: &str) -> Option<bool> {
        let listings = self.listings.read().unwrap_or_else(|e| e.into_inner());
        listings.as_ref().map(|m| m.contains_key(symbol))
    }

    /// Whether `symbol` may be used: listed, or the list not read yet (nothing to go by).
    pub fn usable(&self, symbol: &str) -> bool {
        self.lists(symbol) != Some(false)
    }

    /// The symbol's listing as last read.
    pub fn listing(&self, symbol: &str) -> Option<Listing> {
        let listings = self.listings.read().unwrap_or_else(|e| e.into_inner());
        listings.as_ref()?.get(symbol).cloned()
    }

    pub fn step_size(&self, symbol: &str) -> Option<Decimal> {
        self.listing(symbol)?.step_size
    }

    /// The largest MARKET order (`MARKET_LOT_SIZE.maxQty`): a bigger close takes several.
    pub fn market_max_qty(&self, symbol: &str) -> Option<Decimal> {
        self.listing(symbol)?.market_max_qty.filter(|q| *q > Decimal::ZERO)
    }

    /// The smallest MARKET order (`MARKET_LOT_SIZE.minQty`, else `LOT_SIZE.minQty`).
    pub fn min_qty(&self, symbol: &str) -> Option<Decimal> {
        let listing = self.listing(symbol)?;
        listing.market_min_qty.or(listing.min_qty)
    }

    /// MARKET quantities are multiples of this (`MARKET_LOT_SIZE.stepSize`, else `LOT_SIZE.stepSize`).
    pub fn market_step(&self, symbol: &str) -> Option<Decimal> {
        let listing = self.listing(symbol)?;
        listing.market_step.or(listing.step_size).filter(|s| *s > Decimal::ZERO)
    }

    /// `qty` rounded down to `symbol`'s step (unchanged when the step is unknown).
    pub fn round_qty(&self, symbol: &str, qty: Decimal) -> Decimal {
        match self.step_size(symbol).filter(|s| *s > Decimal::ZERO) {
            Some(step) => ((qty / step).floor() * step).normalize(),
            None => qty,
        }
    }

    /// One MARKET order's share of closing `held`: the first part of its
    /// split by the symbol's MARKET filters, at most `cap` (a split after the
    /// venue refused more); zero when nothing an order may carry is left
    /// (below the step or the minimum quantity).
    pub fn market_qty(&self, symbol: &str, held: Decimal, cap: Option<Decimal>) -> Decimal {
        let qty = cap.map_or(held, |cap| held.min(cap));
        let first = self
            .split_market_qty(symbol, qty)
            .into_iter()
            .next()
            .unwrap_or_default();
        match self.min_qty(symbol) {
            Some(min) if first < min => Decimal::ZERO,
            _ => first,
        }
    }

    /// `price` rounded to the nearest tick of `symbol` (unchanged when the tick is unknown).
    pub fn round_price_to_tick(&self, symbol: &str, price: Decimal) -> Decimal {
        match self
            .listing(symbol)
            .and_then(|l| l.tick_size)
            .filter(|t| *t > Decimal::ZERO)
        {
            Some(tick) => {
                let ticks =
                    (price / tick).round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
                (ticks * tick).normalize()
            }
            None => price,
        }
    }

    /// A MARKET close of `qty` as the orders the venue accepts: rounded down
    /// to the MARKET step, in parts of at most `MARKET_LOT_SIZE.maxQty`, the
    /// last part evened out with the one before it so that no part is below
    /// the minimum where that can be helped. One part when the filters are not
    /// known; none when nothing is left after rounding.
    pub fn split_market_qty(&self, symbol: &str, qty: Decimal) -> Vec<Decimal> {
        let qty = match self.market_step(symbol) {
            Some(step) => ((qty / step).floor() * step).normalize(),
            None => qty,
        };
        if qty <= Decimal::ZERO {
            return Vec::new();
        }
        let Some(max) = self.market_max_qty(symbol) else {
            return vec![qty];
        };
        let mut parts = Vec::new();
        let mut left = qty;
        while left > max {
            parts.push(max);
            left -= max;
        }
        let min = self.min_qty(symbol).unwrap_or_default();
        if let (Some(last), true) = (parts.last_mut(), left < min) {
            let moved = (min - left).min(*last - min);
            if moved > Decimal::ZERO {
                *last -= moved;
                left += moved;
            }
        }
        parts.push(left);
        parts.into_iter().map(|p| p.normalize()).collect()
    }
}

/// Accounts the venue says are in hedge mode (`dualSidePosition`): the
/// service closes positions in one-way mode only, so it refuses levels on
/// them rather than fire orders the venue would refuse (-1106, -4061).
#[derive(Debug, Default)]
pub struct AccountModes {
    hedge: std::sync::RwLock<std::collections::BTreeSet<String>>,
}

impl AccountModes {
    pub fn set_hedge(&self, account: &str, hedge: bool) {
        let mut set = self.hedge.write().unwrap_or_else(|e| e.into_inner());
        match hedge {
            true => set.insert(account.to_string()),
            false => set.remove(account),
        };
    }

    pub fn is_hedge(&self, account: &str) -> bool {
        self.hedge.read().unwrap_or_else(|e| e.into_inner()).contains(account)
    }
}

/// A price to evaluate levels against: the best bid and ask (equal for a
/// last or mark price), the venue's time of it, and when it reached us.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub symbol: String,
    pub bid: Decimal,
    pub ask: Decimal,
    /// Venue time (ms); 0 when not given.
    pub time_ms: i64,
    /// When we received it (our monotonic clock).
    pub received: tokio::time::Instant,
}

impl Quote {
    /// One price for both sides (a REST last price, a mark price).
    pub fn single(symbol: &str, price: Decimal, time_ms: i64, received: tokio::time::Instant) -> Self {
        Quote {
            symbol: symbol.to_string(),
            bid: price,
            ask: price,
            time_ms,
            received,
        }
    }

    /// Midpoint, for what shows one price (alerts, the price cache).
    pub fn mid(&self) -> Decimal {
        (self.bid + self.ask) / Decimal::TWO
    }
}

/// Which streamed price a symbol is watched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// Best bid and ask (`bookTicker`): real time; a long's stop sells at the bid.
    #[default]
    Book,
    /// The mark price (`markPrice@1s`): smoother, updated every second.
    Mark,
}

/// The latest streamed prices, by symbol and source, shared by the stream
/// that writes them and the processes that read them.
///
/// A quote is fresh while it is recent *or* vouched for: a quiet symbol on a
/// connection that keeps delivering has not moved, so its last quote is still
/// the price. A connection vouches only for quotes it delivered itself (a quote
/// from before a reconnect is not vouched for: the price may have moved in the gap),
/// and the caller says since when (`vouch`'s `since`: for a stream re-subscribed
/// on an open connection, the venue's confirmation, not the connection's opening).
#[derive(Debug, Default)]
pub struct LivePrices {
    quotes: std::sync::RwLock<std::collections::HashMap<(String, PriceSource), Live>>,
}

#[derive(Debug)]
struct Live {
    quote: Quote,
    /// Last time the connection that delivered `quote` was seen delivering.
    vouched: tokio::time::Instant,
}

impl LivePrices {
    pub fn update(&self, source: PriceSource, quote: Quote) {
        let mut quotes = self.quotes.write().unwrap_or_else(|e| e.into_inner());
        let vouched = quote.received;
        quotes.insert((quote.symbol.clone(), source), Live { quote, vouched });
    }

    /// A connection up since `since` was delivering at `at`: the quotes it
    /// delivered for `symbols` are still current.
    pub fn vouch<'a>(
        &self,
        source: PriceSource,
        symbols: impl Iterator<Item = &'a str>,
        since: tokio::time::Instant,
        at: tokio::time::Instant,
    ) {
        let mut quotes = self.quotes.write().unwrap_or_else(|e| e.into_inner());
        for symbol in symbols {
            if let Some(live) = quotes.get_mut(&(symbol.to_string(), source))
                && live.quote.received >= since
                && at > live.vouched
            {
                live.vouched = at;
            }
        }
    }

    /// The symbol's latest `source` price if it arrived, or was vouched for, at most `max_age` ago.
    pub fn fresh(&self, symbol: &str, source: PriceSource, max_age: std::time::Duration) -> Option<Quote> {
        let quotes = self.quotes.read().unwrap_or_else(|e| e.into_inner());
        quotes
            .get(&(symbol.to_string(), source))
            .filter(|live| live.vouched.elapsed() <= max_age)
            .map(|live| live.quote.clone())
    }

    /// Symbols among `symbols` with no fresh `source` price.
    pub fn stale<'a>(
        &self,
        symbols: &'a [String],
        source: PriceSource,
        max_age: std::time::Duration,
    ) -> Vec<&'a String> {
        symbols
            .iter()
            .filter(|s| self.fresh(s, source, max_age).is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_down_to_the_step_and_unknown_symbols_are_told_apart() {
        let c = Catalog::default();
        assert_eq!(c.lists("BTCUSDT"), None, "not read yet");
        assert!(c.usable("BTCUSDT"));
        c.replace(vec![Listing {
            symbol: "BTCUSDT".into(),
            trading: true,
            step_size: Some(Decimal::new(1, 3)),
            ..Listing::default()
        }]);
        assert_eq!(c.lists("BTCUSDT"), Some(true));
        assert!(!c.usable("NOPEUSDT"));
        assert_eq!(c.round_qty("BTCUSDT", Decimal::new(12345, 4)), Decimal::new(1234, 3));
        assert_eq!(c.round_qty("ETHUSDT", Decimal::new(12345, 4)), Decimal::new(12345, 4));
        assert!(OrderStatus::parse("EXPIRED").is_final() && !OrderStatus::parse("NEW").is_final());
    }

    #[test]
    fn a_close_above_the_market_maximum_splits_into_orders_the_venue_accepts() {
        let c = Catalog::default();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            c.split_market_qty("BTCUSDT", d("7.5")),
            vec![d("7.5")],
            "filters unknown: one part"
        );
        c.replace(vec![Listing {
            symbol: "BTCUSDT".into(),
            trading: true,
            step_size: Some(d("0.001")),
            market_step: Some(d("0.001")),
            market_min_qty: Some(d("0.01")),
            market_max_qty: Some(d("2")),
            tick_size: Some(d("0.1")),
            ..Listing::default()
        }]);
        assert_eq!(
            (c.market_max_qty("BTCUSDT"), c.min_qty("BTCUSDT")),
            (Some(d("2")), Some(d("0.01")))
        );
        assert_eq!(c.split_market_qty("BTCUSDT", d("5.0009")), vec![d("2"), d("2"), d("1")]);
        assert_eq!(
            c.split_market_qty("BTCUSDT", d("4.005")),
            vec![d("2"), d("1.995"), d("0.01")]
        );
        assert_eq!(c.split_market_qty("BTCUSDT", d("2")), vec![d("2")]);
        assert!(c.split_market_qty("BTCUSDT", d("0.0004")).is_empty());
        assert_eq!(c.round_price_to_tick("BTCUSDT", d("95123.46")), d("95123.5"));
        assert_eq!(c.round_price_to_tick("ETHUSDT", d("1.234")), d("1.234"), "tick unknown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_symbol_stays_fresh_only_while_its_own_connection_vouches_for_it() {
        let live = LivePrices::default();
        let age = std::time::Duration::from_secs(5);
        let t0 = tokio::time::Instant::now();
        live.update(PriceSource::Book, Quote::single("BTCUSDT", Decimal::ONE, 0, t0));
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        assert!(
            live.fresh("BTCUSDT", PriceSource::Book, age).is_none(),
            "old and not vouched for"
        );
        // The connection that delivered it is still delivering: the price has not moved.
        live.vouch(
            PriceSource::Book,
            ["BTCUSDT"].into_iter(),
            t0,
            tokio::time::Instant::now(),
        );
        let quote = live.fresh("BTCUSDT", PriceSource::Book, age).expect("vouched for");
        assert_eq!(quote.received, t0, "the quote itself is unchanged");
        assert!(live.fresh("BTCUSDT", PriceSource::Mark, age).is_none(), "per source");
        // A connection opened after the quote arrived does not vouch for it.
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        let reconnected = tokio::time::Instant::now();
        live.vouch(PriceSource::Book, ["BTCUSDT"].into_iter(), reconnected, reconnected);
        assert!(live.fresh("BTCUSDT", PriceSource::Book, age).is_none());
    }
}
