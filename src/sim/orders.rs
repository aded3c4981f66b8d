//! MARKET orders as the venue handles them, inconveniences included: an
//! order is accepted (`NEW`, nothing filled) and fills at once or after a
//! delay; a thin book fills part of it and expires the rest; reduce-only
//! never opens or flips a position and is refused on a flat one (-2022); a
//! client order id is used once (-4116); a MARKET order is held to the
//! symbol's `MARKET_LOT_SIZE` (-4003, -4004, -4005). Orders placed outside
//! the service (`/sim/trade`) are plain MARKET orders that may open or flip a
//! position. Orders are kept for lookups up to `Book::keep_orders` per account.

use rust_decimal::Decimal;
use serde::Serialize;

use super::book::{Book, Filled, STEP_SIZE};
use super::feed::OrderUpdate;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimOrder {
    pub order_id: u64,
    pub symbol: String,
    pub status: &'static str,
    pub client_order_id: String,
    pub price: Decimal,
    pub avg_price: Decimal,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    pub cum_quote: Decimal,
    pub time_in_force: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub side: &'static str,
    pub position_side: &'static str,
    pub reduce_only: bool,
    pub close_position: bool,
    pub time: i64,
    pub update_time: i64,
    /// When a delayed order fills (not part of Binance's shape).
    #[serde(skip)]
    fill_at: i64,
    /// The share a thin book fills.
    #[serde(skip)]
    partial: Option<Decimal>,
}

impl SimOrder {
    /// What Binance answers with `newOrderRespType=ACK`: accepted, nothing filled yet.
    pub fn ack(&self) -> SimOrder {
        SimOrder {
            status: "NEW",
            executed_qty: Decimal::ZERO,
            avg_price: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            update_time: self.time,
            ..self.clone()
        }
    }
}

/// Why an order was refused, as Binance codes.
#[derive(Debug, PartialEq, Eq)]
pub struct OrderReject {
    pub code: i64,
    pub msg: &'static str,
}

/// How the book treats one order (from the faults in force).
#[derive(Debug, Clone, Copy, Default)]
pub struct Matching {
    /// The order stays `NEW` this long.
    pub delay_ms: u64,
    /// Thin book: only this share fills, the rest expires.
    pub partial: Option<Decimal>,
}

/// An order about to be accepted.
#[derive(Debug, Clone, Copy)]
pub struct NewOrder<'a> {
    pub symbol: &'a str,
    pub side: &'static str,
    pub qty: Decimal,
    pub client_order_id: &'a str,
    /// Never opens or flips a position; refused on a flat or opposite one (-2022).
    pub reduce_only: bool,
}

impl Book {
    /// A reduce-only MARKET order (the service's close): accepted now, filled now or after `matching.delay_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn market_order(
        &mut self,
        api_key: &str,
        symbol: &str,
        side: &'static str,
        qty: Decimal,
        client_order_id: &str,
        now_ms: i64,
        matching: Matching,
    ) -> Result<SimOrder, OrderReject> {
        let order = NewOrder {
            symbol,
            side,
            qty,
            client_order_id,
            reduce_only: true,
        };
        self.place(api_key, order, now_ms, matching)
    }

    /// A MARKET order placed outside the service (the venue's app, another
    /// bot): not reduce-only, so it may open, grow, close or flip a position.
    pub fn outside_trade(
        &mut self,
        api_key: &str,
        symbol: &str,
        side: &'static str,
        qty: Decimal,
        now_ms: i64,
    ) -> Result<SimOrder, OrderReject> {
        let client_order_id = format!("web_{}", rand::random::<u64>());
        let order = NewOrder {
            symbol,
            side,
            qty,
            client_order_id: &client_order_id,
            reduce_only: false,
        };
        self.place(api_key, order, now_ms, Matching::default())
    }

    /// A MARKET order held to the symbol's `MARKET_LOT_SIZE`, accepted, and
    /// filled at once unless `matching` delays it.
    pub fn place(
        &mut self,
        api_key: &str,
        order: NewOrder,
        now_ms: i64,
        matching: Matching,
    ) -> Result<SimOrder, OrderReject> {
        if let Some(lot) = self.lots.get(order.symbol) {
            lot.check_market(order.qty)?;
        }
        self.accept(api_key, order, now_ms, matching)?;
        if matching.delay_ms == 0 {
            self.settle_due(now_ms);
        }
        Ok(self.accounts[api_key].orders[order.client_order_id].clone())
    }

    /// Checks an order and records it `NEW` (told to the user stream), to be
    /// filled by `settle_due`: its order id.
    pub(super) fn accept(
        &mut self,
        api_key: &str,
        new: NewOrder,
        now_ms: i64,
        matching: Matching,
    ) -> Result<u64, OrderReject> {
        let NewOrder {
            symbol,
            side,
            qty,
            client_order_id,
            reduce_only,
        } = new;
        if !self.prices.contains_key(symbol) {
            return Err(OrderReject {
                code: -1121,
                msg: "Invalid symbol.",
            });
        }
        let account = self.accounts.get(api_key).ok_or(OrderReject {
            code: -2015,
            msg: "Invalid API-key.",
        })?;
        if account.orders.contains_key(client_order_id) {
            return Err(OrderReject {
                code: -4116,
                msg: "ClientOrderId is duplicated.",
            });
        }
        if qty <= Decimal::ZERO || !(qty % STEP_SIZE).is_zero() {
            return Err(OrderReject {
                code: -1111,
                msg: "Precision is over the maximum defined for this asset.",
            });
        }
        if reduce_only && !reduces(self.position(api_key, symbol), side) {
            return Err(OrderReject {
                code: -2022,
                msg: "ReduceOnly Order is rejected.",
            });
        }
        let order = SimOrder {
            order_id: self.next_order_id(),
            symbol: symbol.to_string(),
            status: "NEW",
            client_order_id: client_order_id.to_string(),
            price: Decimal::ZERO,
            avg_price: Decimal::ZERO,
            orig_qty: qty,
            executed_qty: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            time_in_force: "GTC",
            kind: "MARKET",
            side,
            position_side: "BOTH",
            reduce_only,
            close_position: false,
            time: now_ms,
            update_time: now_ms,
            fill_at: now_ms + matching.delay_ms as i64,
            partial: matching.partial,
        };
        let order_id = order.order_id;
        let accepted = OrderUpdate {
            symbol,
            client_order_id,
            side,
            orig_qty: qty,
            execution: "NEW",
            status: "NEW",
            order_id,
            last_qty: Decimal::ZERO,
            last_price: Decimal::ZERO,
            cumulative_qty: Decimal::ZERO,
            avg_price: Decimal::ZERO,
            commission: Decimal::ZERO,
            realized: Decimal::ZERO,
            trade_id: 0,
            reduce_only,
            time: now_ms,
        };
        self.feed.user(api_key, accepted.payload());
        let account = self.accounts.get_mut(api_key).expect("checked above");
        account.orders.insert(client_order_id.to_string(), order);
        self.pending.push((api_key.to_string(), client_order_id.to_string()));
        self.prune_orders(api_key);
        Ok(order_id)
    }

    /// Fills every accepted order whose time has come, at the current price.
    pub fn settle_due(&mut self, now_ms: i64) {
        let due: Vec<(String, String)> = {
            let accounts = &self.accounts;
            let (due, waiting): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(key, id)| {
                accounts
                    .get(key)
                    .and_then(|a| a.orders.get(id))
                    .is_none_or(|o| o.fill_at <= now_ms)
            });
            self.pending = waiting;
            due
        };
        for (key, id) in due {
            self.execute(&key, &id, now_ms);
        }
    }

    /// Matches one accepted order against the position as it is now.
    fn execute(&mut self, api_key: &str, client_order_id: &str, now_ms: i64) {
        let order: SimOrder = match self.accounts.get(api_key).and_then(|a| a.orders.get(client_order_id)) {
            Some(order) => order.clone(),
            None => return,
        };
        let position = self.position(api_key, &order.symbol);
        let price = self.prices.get(&order.symbol).copied();
        // Reduce-only: never more than the position, never the wrong way.
        let room = match (order.reduce_only, reduces(position, order.side)) {
            (false, _) => order.orig_qty,
            (true, true) => position.abs(),
            (true, false) => Decimal::ZERO,
        };
        let mut executed = order.orig_qty.min(room);
        if let Some(share) = order.partial {
            executed = round_down_to_step(executed * share);
        }
        let (Some(price), true) = (price, executed > Decimal::ZERO) else {
            self.finish(api_key, &order, "EXPIRED", None, now_ms);
            return;
        };
        let filled = self.fill(
            api_key,
            &order.symbol,
            order.side,
            executed,
            price,
            order.order_id,
            now_ms,
        );
        let status = if executed == order.orig_qty {
            "FILLED"
        } else {
            "EXPIRED"
        };
        self.finish(api_key, &order, status, Some((executed, price, filled)), now_ms);
    }

    /// The order's final state, told to the account's user-data stream: its
    /// fill (`TRADE`), then, when a thin book left part, the expiry.
    fn finish(
        &mut self,
        api_key: &str,
        order: &SimOrder,
        status: &'static str,
        fill: Option<(Decimal, Decimal, Filled)>,
        now_ms: i64,
    ) {
        let (qty, price) = fill.map_or((Decimal::ZERO, Decimal::ZERO), |(q, p, _)| (q, p));
        if let Some(o) = self
            .accounts
            .get_mut(api_key)
            .and_then(|a| a.orders.get_mut(&order.client_order_id))
        {
            o.status = status;
            o.executed_qty = qty;
            o.avg_price = price;
            o.cum_quote = (qty * price).round_dp(8);
            o.update_time = now_ms;
        }
        let update = OrderUpdate {
            symbol: &order.symbol,
            client_order_id: &order.client_order_id,
            side: order.side,
            orig_qty: order.orig_qty,
            execution: "EXPIRED",
            status,
            order_id: order.order_id,
            last_qty: Decimal::ZERO,
            last_price: Decimal::ZERO,
            cumulative_qty: qty,
            avg_price: price,
            commission: Decimal::ZERO,
            realized: Decimal::ZERO,
            trade_id: 0,
            reduce_only: order.reduce_only,
            time: now_ms,
        };
        if let Some((qty, price, filled)) = fill {
            let trade = OrderUpdate {
                execution: "TRADE",
                status: if status == "FILLED" {
                    "FILLED"
                } else {
                    "PARTIALLY_FILLED"
                },
                last_qty: qty,
                last_price: price,
                commission: filled.commission,
                realized: filled.realized,
                trade_id: filled.id,
                ..update.clone()
            };
            self.feed.user(api_key, trade.payload());
        }
        if status != "FILLED" {
            self.feed.user(api_key, update.payload());
        }
        self.algo_order_done(api_key, order.order_id, qty, price, now_ms);
    }

    pub(super) fn position(&self, api_key: &str, symbol: &str) -> Decimal {
        self.accounts
            .get(api_key)
            .and_then(|a| a.positions.get(symbol))
            .map(|p| p.amount)
            .unwrap_or_default()
    }

    /// Forgets the oldest finished orders past `keep_orders` (in batches, so it stays cheap).
    fn prune_orders(&mut self, api_key: &str) {
        let keep = self.keep_orders;
        let Some(account) = self.accounts.get_mut(api_key) else {
            return;
        };
        if account.orders.len() <= keep + keep / 10 {
            return;
        }
        let mut finished: Vec<(u64, String)> = account
            .orders
            .values()
            .filter(|o| o.status != "NEW")
            .map(|o| (o.order_id, o.client_order_id.clone()))
            .collect();
        finished.sort_unstable();
        let excess = account.orders.len().saturating_sub(keep);
        for (_, id) in finished.into_iter().take(excess) {
            account.orders.remove(&id);
        }
    }
}

/// Whether a `side` order reduces a position of `amount` (signed).
pub(super) fn reduces(amount: Decimal, side: &str) -> bool {
    (side == "SELL" && amount > Decimal::ZERO) || (side == "BUY" && amount < Decimal::ZERO)
}

fn round_down_to_step(q: Decimal) -> Decimal {
    (q / STEP_SIZE).floor() * STEP_SIZE
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn book() -> Book {
        let mut prices = BTreeMap::new();
        prices.insert("BTCUSDT".to_string(), Decimal::from(100_000));
        let mut b = Book::new(7, 0.001, prices);
        b.add_account("k", "main", "s", 0, 0);
        b
    }

    fn now() -> Matching {
        Matching::default()
    }

    #[test]
    fn reduce_only_orders_close_and_never_open() {
        let mut b = book();
        b.fill("k", "BTCUSDT", "BUY", Decimal::new(2, 0), Decimal::from(100_000), 1, 0);
        let refused = b.market_order("k", "BTCUSDT", "BUY", Decimal::ONE, "c1", 1, now());
        assert_eq!(refused.unwrap_err().code, -2022);
        b.set_price("BTCUSDT", Decimal::from(101_000), 0);
        let o = b
            .market_order("k", "BTCUSDT", "SELL", Decimal::from(5), "c2", 2, now())
            .unwrap();
        assert_eq!(o.executed_qty, Decimal::from(2), "never more than the position");
        assert_eq!(o.status, "EXPIRED", "the rest of a reduce-only order expires");
        assert!(b.accounts["k"].positions["BTCUSDT"].amount.is_zero());
        assert_eq!(b.accounts["k"].fills.back().unwrap().realized_pnl, Decimal::from(2_000));
        let again = b.market_order("k", "BTCUSDT", "SELL", Decimal::ONE, "c2", 3, now());
        assert_eq!(again.unwrap_err().code, -4116);
        let flat = b.market_order("k", "BTCUSDT", "SELL", Decimal::ONE, "c3", 3, now());
        assert_eq!(flat.unwrap_err().code, -2022, "refused on a flat position");
        let unknown = b.market_order("k", "NOPEUSDT", "SELL", Decimal::ONE, "c4", 3, now());
        assert_eq!(unknown.unwrap_err().code, -1121);
    }

    #[test]
    fn a_trade_made_outside_the_service_may_open_and_flip_a_position() {
        let mut b = book();
        let mut events = b.feed.user.subscribe();
        let o = b.outside_trade("k", "BTCUSDT", "BUY", Decimal::ONE, 1).unwrap();
        assert!(o.client_order_id.starts_with("web_") && !o.reduce_only);
        assert_eq!((o.status, o.executed_qty), ("FILLED", Decimal::ONE));
        b.outside_trade("k", "BTCUSDT", "SELL", Decimal::from(3), 2).unwrap();
        assert_eq!(
            b.accounts["k"].positions["BTCUSDT"].amount,
            Decimal::from(-2),
            "flipped"
        );
        assert_eq!(b.accounts["k"].orders.len(), 2);
        let seen: Vec<String> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| {
                format!(
                    "{} {}",
                    e.payload["e"].as_str().unwrap(),
                    e.payload["o"]["x"].as_str().unwrap_or("")
                )
            })
            .collect();
        let one = ["ORDER_TRADE_UPDATE NEW", "ACCOUNT_UPDATE ", "ORDER_TRADE_UPDATE TRADE"];
        assert_eq!(seen, [one, one].concat(), "as for the service's own orders");
        let refused = b.outside_trade("k", "BTCUSDT", "BUY", Decimal::from(11), 3);
        assert_eq!(
            refused.unwrap_err().code,
            -4005,
            "above MARKET_LOT_SIZE.maxQty (10 BTC)"
        );
    }

    #[test]
    fn a_delayed_order_is_new_until_it_fills_and_a_thin_book_expires_the_rest() {
        let mut b = book();
        b.fill("k", "BTCUSDT", "BUY", Decimal::from(1), Decimal::from(100_000), 1, 0);
        let thin = Matching {
            delay_ms: 100,
            partial: Some(Decimal::new(4, 1)),
        };
        let o = b
            .market_order("k", "BTCUSDT", "SELL", Decimal::ONE, "c1", 1_000, thin)
            .unwrap();
        assert_eq!((o.status, o.executed_qty), ("NEW", Decimal::ZERO));
        b.settle_due(1_050);
        assert_eq!(b.accounts["k"].orders["c1"].status, "NEW");
        b.settle_due(1_100);
        let o = &b.accounts["k"].orders["c1"];
        assert_eq!((o.status, o.executed_qty), ("EXPIRED", Decimal::new(4, 1)));
        assert_eq!(b.accounts["k"].positions["BTCUSDT"].amount, Decimal::new(6, 1));
    }

    #[test]
    fn orders_and_fills_are_kept_for_a_bounded_window() {
        let mut b = book();
        b.keep_orders = 100;
        b.keep_fills = 150;
        b.fill(
            "k",
            "BTCUSDT",
            "BUY",
            Decimal::from(1_000),
            Decimal::from(100_000),
            1,
            0,
        );
        for i in 0..1_000 {
            b.market_order("k", "BTCUSDT", "SELL", Decimal::new(1, 3), &format!("c{i}"), i, now())
                .unwrap();
        }
        let account = &b.accounts["k"];
        assert!(account.orders.len() <= 110, "{} orders kept", account.orders.len());
        assert!(account.orders.contains_key("c999"), "the newest stay");
        assert_eq!(account.fills.len(), 150);
    }
}
