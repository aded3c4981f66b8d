//! Conditional orders as Binance's Algo Order API keeps them (since
//! 2025-12-09 the only way to rest a stop on the venue): `STOP_MARKET` and
//! `TAKE_PROFIT_MARKET`, triggered by the mark price (which lags, updated each
//! second) or the last price, for the whole position (`closePosition`) or a
//! reduce-only quantity. When the price crosses, an order goes `NEW` →
//! `TRIGGERING` → `TRIGGERED`, becomes a MARKET order filled through the
//! normal path (its `ORDER_TRADE_UPDATE` and `ACCOUNT_UPDATE`, under a client
//! id of the venue's, not the caller's), and ends `FINISHED` once that order
//! is final; a `closePosition` order with nothing to close ends `EXPIRED`.
//! Every change is an `ALGO_UPDATE` on the account's user stream.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::book::Book;
use super::orders::{Matching, NewOrder, OrderReject, reduces};

/// `MAX_NUM_ALGO_ORDERS` per symbol, as `exchangeInfo` lists it.
pub const MAX_OPEN_PER_SYMBOL: usize = 10;
/// `triggerProtect`: a price-protected order waits while mark and last price
/// are further apart than this share.
const TRIGGER_PROTECT: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

/// A conditional order as placed.
#[derive(Debug, Clone)]
pub struct AlgoRequest {
    pub symbol: String,
    pub side: &'static str,
    /// `STOP_MARKET` or `TAKE_PROFIT_MARKET`.
    pub order_type: &'static str,
    pub trigger_price: Decimal,
    /// `MARK_PRICE` or `CONTRACT_PRICE`.
    pub working_type: &'static str,
    pub close_position: bool,
    /// 0 with `close_position`.
    pub quantity: Decimal,
    pub price_protect: bool,
    pub client_algo_id: String,
    pub position_side: &'static str,
}

#[derive(Debug, Clone)]
pub struct SimAlgo {
    pub algo_id: u64,
    pub request: AlgoRequest,
    pub status: &'static str,
    pub create_time: i64,
    pub update_time: i64,
    pub trigger_time: i64,
    /// The MARKET order it became once triggered.
    pub actual_order_id: Option<u64>,
    pub actual_price: Decimal,
    pub executed_qty: Decimal,
    pub reject_reason: &'static str,
}

impl SimAlgo {
    pub fn is_open(&self) -> bool {
        self.status == "NEW"
    }

    /// The REST shape (`POST`/`GET /fapi/v1/algoOrder`, `openAlgoOrders`, ...).
    pub fn rest(&self) -> Value {
        let r = &self.request;
        json!({
            "algoId": self.algo_id, "clientAlgoId": r.client_algo_id, "algoType": "CONDITIONAL",
            "orderType": r.order_type, "symbol": r.symbol, "side": r.side, "positionSide": r.position_side,
            "timeInForce": "GTC", "quantity": r.quantity.to_string(), "algoStatus": self.status,
            "actualOrderId": self.actual_order_id.map(|id| id.to_string()).unwrap_or_default(),
            "actualPrice": self.actual_price.to_string(), "triggerPrice": r.trigger_price.to_string(),
            "price": "0", "icebergQuantity": null, "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": r.working_type, "priceMatch": "NONE", "closePosition": r.close_position,
            "priceProtect": r.price_protect, "reduceOnly": !r.close_position, "activatePrice": "",
            "callbackRate": "", "createTime": self.create_time, "updateTime": self.update_time,
            "triggerTime": self.trigger_time, "goodTillDate": 0,
        })
    }

    /// The `ALGO_UPDATE` user-stream event for its current state.
    pub fn event(&self, now_ms: i64) -> Value {
        let r = &self.request;
        json!({
            "e": "ALGO_UPDATE", "E": now_ms, "T": now_ms,
            "o": {
                "caid": r.client_algo_id, "aid": self.algo_id, "at": "CONDITIONAL", "o": r.order_type,
                "s": r.symbol, "S": r.side, "ps": r.position_side, "f": "GTC", "q": r.quantity.to_string(),
                "X": self.status, "ai": self.actual_order_id.map(|id| id.to_string()).unwrap_or_default(),
                "ap": self.actual_price.to_string(), "aq": self.executed_qty.to_string(),
                "act": if self.actual_order_id.is_some() { "MARKET" } else { "" },
                "tp": r.trigger_price.to_string(), "p": "0", "V": "EXPIRE_MAKER", "wt": r.working_type,
                "pm": "NONE", "cp": r.close_position, "pP": r.price_protect, "R": !r.close_position,
                "tt": self.trigger_time, "gtd": 0, "rm": self.reject_reason,
            }
        })
    }
}

/// Whether `price` has reached the trigger of a `side` order of `order_type`.
fn crossed(order_type: &str, side: &str, price: Decimal, trigger: Decimal) -> bool {
    match (order_type, side) {
        ("STOP_MARKET", "SELL") | ("TAKE_PROFIT_MARKET", "BUY") => price <= trigger,
        _ => price >= trigger,
    }
}

/// How an algo order is named in a cancel or a query.
#[derive(Debug, Clone)]
pub enum AlgoRef {
    Id(u64),
    Client(String),
}

impl Book {
    /// Places a conditional order, or refuses it as the venue would.
    pub fn place_algo(&mut self, api_key: &str, r: AlgoRequest, now_ms: i64) -> Result<SimAlgo, OrderReject> {
        let reject = |code, msg| Err(OrderReject { code, msg });
        let Some(lot) = self.lots.get(&r.symbol).copied() else {
            return reject(-1121, "Invalid symbol.");
        };
        lot.check_price(r.trigger_price)?;
        if !r.close_position {
            lot.check_market(r.quantity)?;
        }
        let Some(account) = self.accounts.get(api_key) else {
            return reject(-2015, "Invalid API-key.");
        };
        if account
            .algos
            .values()
            .any(|a| a.request.client_algo_id == r.client_algo_id)
        {
            return reject(-4116, "ClientOrderId is duplicated.");
        }
        let open = account
            .algos
            .values()
            .filter(|a| a.is_open() && a.request.symbol == r.symbol)
            .count();
        if open >= MAX_OPEN_PER_SYMBOL {
            return reject(-4045, "Reach max stop order limit.");
        }
        if crossed(r.order_type, r.side, self.working_price(&r), r.trigger_price) {
            return reject(-2021, "Order would immediately trigger.");
        }
        self.next_algo_id += 1;
        let algo = SimAlgo {
            algo_id: self.next_algo_id,
            request: r,
            status: "NEW",
            create_time: now_ms,
            update_time: now_ms,
            trigger_time: 0,
            actual_order_id: None,
            actual_price: Decimal::ZERO,
            executed_qty: Decimal::ZERO,
            reject_reason: "",
        };
        self.feed.user(api_key, algo.event(now_ms));
        let account = self.accounts.get_mut(api_key).expect("checked above");
        account.algos.insert(algo.algo_id, algo.clone());
        self.prune_algos(api_key);
        Ok(algo)
    }

    pub fn algo(&self, api_key: &str, by: &AlgoRef) -> Option<&SimAlgo> {
        let algos = &self.accounts.get(api_key)?.algos;
        match by {
            AlgoRef::Id(id) => algos.get(id),
            AlgoRef::Client(c) => algos.values().find(|a| &a.request.client_algo_id == c),
        }
    }

    /// Cancels an open algo order (-2011 when there is none by that name).
    pub fn cancel_algo(&mut self, api_key: &str, by: &AlgoRef, now_ms: i64) -> Result<SimAlgo, OrderReject> {
        match self.algo(api_key, by).filter(|a| a.is_open()).map(|a| a.algo_id) {
            Some(id) => Ok(self.set_algo_status(api_key, id, "CANCELED", now_ms)),
            None => Err(OrderReject {
                code: -2011,
                msg: "Unknown order sent.",
            }),
        }
    }

    /// Cancels every open algo order of `symbol`: how many.
    pub fn cancel_open_algos(&mut self, api_key: &str, symbol: &str, now_ms: i64) -> usize {
        let ids: Vec<u64> = self.accounts.get(api_key).map_or(Vec::new(), |a| {
            a.algos
                .values()
                .filter(|a| a.is_open() && a.request.symbol == symbol)
                .map(|a| a.algo_id)
                .collect()
        });
        for &id in &ids {
            self.set_algo_status(api_key, id, "CANCELED", now_ms);
        }
        ids.len()
    }

    /// Triggers every open algo order whose price has crossed.
    pub fn trigger_algos(&mut self, now_ms: i64, matching: Matching) {
        let due: Vec<(String, u64)> = self
            .accounts
            .iter()
            .flat_map(|(key, account)| account.algos.values().map(move |a| (key, a)))
            .filter(|(_, a)| a.is_open() && self.should_trigger(&a.request))
            .map(|(key, a)| (key.clone(), a.algo_id))
            .collect();
        for (key, id) in due {
            self.trigger(&key, id, now_ms, matching);
        }
    }

    fn should_trigger(&self, r: &AlgoRequest) -> bool {
        let (Some(&last), Some(&mark)) = (self.prices.get(&r.symbol), self.marks.get(&r.symbol)) else {
            return false;
        };
        let diverged = !mark.is_zero() && ((mark - last).abs() / mark) > TRIGGER_PROTECT;
        crossed(r.order_type, r.side, self.working_price(r), r.trigger_price) && !(r.price_protect && diverged)
    }

    fn working_price(&self, r: &AlgoRequest) -> Decimal {
        let prices = match r.working_type {
            "MARK_PRICE" => &self.marks,
            _ => &self.prices,
        };
        prices.get(&r.symbol).copied().unwrap_or_default()
    }

    /// `TRIGGERING`, then the MARKET order it becomes (`TRIGGERED`), filled
    /// now or after `matching.delay_ms`; `EXPIRED` with nothing to close.
    fn trigger(&mut self, api_key: &str, id: u64, now_ms: i64, matching: Matching) {
        let Some(r) = self.accounts[api_key].algos.get(&id).map(|a| a.request.clone()) else {
            return;
        };
        if let Some(a) = self.algo_mut(api_key, id) {
            a.trigger_time = now_ms;
        }
        self.set_algo_status(api_key, id, "TRIGGERING", now_ms);
        let position = self.position(api_key, &r.symbol);
        let qty = match (r.close_position, reduces(position, r.side)) {
            (true, true) => position.abs(),
            (true, false) => {
                self.set_algo_status(api_key, id, "EXPIRED", now_ms);
                return;
            }
            (false, _) => r.quantity,
        };
        let client_order_id = format!("algo_{id}");
        let order = NewOrder {
            symbol: &r.symbol,
            side: r.side,
            qty,
            client_order_id: &client_order_id,
            reduce_only: true,
        };
        match self.accept(api_key, order, now_ms, matching) {
            Ok(order_id) => {
                if let Some(a) = self.algo_mut(api_key, id) {
                    a.actual_order_id = Some(order_id);
                }
                self.set_algo_status(api_key, id, "TRIGGERED", now_ms);
                if matching.delay_ms == 0 {
                    self.settle_due(now_ms);
                }
            }
            Err(reject) => {
                if let Some(a) = self.algo_mut(api_key, id) {
                    a.reject_reason = reject.msg;
                }
                self.set_algo_status(api_key, id, "REJECTED", now_ms);
            }
        }
    }

    /// A triggered order's MARKET order is final: the algo order is `FINISHED`.
    pub(super) fn algo_order_done(
        &mut self,
        api_key: &str,
        order_id: u64,
        executed: Decimal,
        avg_price: Decimal,
        now_ms: i64,
    ) {
        let Some(account) = self.accounts.get_mut(api_key) else {
            return;
        };
        let Some(algo) = account
            .algos
            .values_mut()
            .rev()
            .find(|a| a.actual_order_id == Some(order_id) && a.status == "TRIGGERED")
        else {
            return;
        };
        algo.executed_qty = executed;
        algo.actual_price = avg_price;
        let id = algo.algo_id;
        self.set_algo_status(api_key, id, "FINISHED", now_ms);
    }

    fn algo_mut(&mut self, api_key: &str, id: u64) -> Option<&mut SimAlgo> {
        self.accounts.get_mut(api_key)?.algos.get_mut(&id)
    }

    /// Moves an algo order to `status` and tells the user stream: the order as it is now.
    fn set_algo_status(&mut self, api_key: &str, id: u64, status: &'static str, now_ms: i64) -> SimAlgo {
        let algo = self.algo_mut(api_key, id).expect("an algo order of this account");
        algo.status = status;
        algo.update_time = now_ms;
        let algo = algo.clone();
        self.feed.user(api_key, algo.event(now_ms));
        algo
    }

    /// Forgets the oldest finished algo orders past `keep_orders`.
    fn prune_algos(&mut self, api_key: &str) {
        let keep = self.keep_orders;
        let Some(account) = self.accounts.get_mut(api_key) else {
            return;
        };
        if account.algos.len() <= keep + keep / 10 {
            return;
        }
        let excess = account.algos.len().saturating_sub(keep);
        let old: Vec<u64> = account
            .algos
            .values()
            .filter(|a| !a.is_open() && a.status != "TRIGGERED" && a.status != "TRIGGERING")
            .map(|a| a.algo_id)
            .take(excess)
            .collect();
        for id in old {
            account.algos.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn book_with_long() -> Book {
        let prices: BTreeMap<String, Decimal> = [("BTCUSDT".to_string(), Decimal::from(100_000))].into();
        let mut b = Book::new(7, 0.0, prices);
        b.add_account("k", "main", "s", 0, 0);
        b.outside_trade("k", "BTCUSDT", "BUY", Decimal::ONE, 0).unwrap();
        b
    }

    fn stop(trigger: i64, working_type: &'static str) -> AlgoRequest {
        AlgoRequest {
            symbol: "BTCUSDT".into(),
            side: "SELL",
            order_type: "STOP_MARKET",
            trigger_price: Decimal::from(trigger),
            working_type,
            close_position: true,
            quantity: Decimal::ZERO,
            price_protect: false,
            client_algo_id: format!("sl-{working_type}"),
            position_side: "BOTH",
        }
    }

    fn statuses(events: &mut tokio::sync::broadcast::Receiver<super::super::feed::UserEvent>) -> Vec<String> {
        std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| e.payload["e"] == "ALGO_UPDATE")
            .map(|e| e.payload["o"]["X"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_mark_price_stop_waits_for_the_mark_and_a_last_price_stop_does_not() {
        let mut b = book_with_long();
        let mut events = b.feed.user.subscribe();
        let refused = b.place_algo("k", stop(100_001, "CONTRACT_PRICE"), 1);
        assert_eq!(refused.unwrap_err().code, -2021, "would trigger at once");
        let mark = b.place_algo("k", stop(95_000, "MARK_PRICE"), 1).unwrap();
        b.set_price("BTCUSDT", Decimal::from(94_000), 2);
        b.trigger_algos(2, Matching::default());
        assert_eq!(
            b.algo("k", &AlgoRef::Id(mark.algo_id)).unwrap().status,
            "NEW",
            "the mark has not moved yet"
        );
        b.mark_to_market();
        b.trigger_algos(3, Matching::default());
        let done = b.algo("k", &AlgoRef::Id(mark.algo_id)).unwrap();
        assert_eq!(done.status, "FINISHED");
        assert_eq!(done.executed_qty, Decimal::ONE);
        assert!(b.accounts["k"].positions["BTCUSDT"].amount.is_zero(), "closed");
        let order = &b.accounts["k"].orders[&format!("algo_{}", mark.algo_id)];
        assert_eq!(Some(order.order_id), done.actual_order_id);
        assert_eq!(statuses(&mut events), ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]);
        // Flat now: a closePosition stop that triggers has nothing to close.
        let last = b.place_algo("k", stop(93_000, "CONTRACT_PRICE"), 4).unwrap();
        b.set_price("BTCUSDT", Decimal::from(92_000), 5);
        b.trigger_algos(5, Matching::default());
        let expired = b.algo("k", &AlgoRef::Id(last.algo_id)).unwrap();
        assert_eq!((expired.status, expired.actual_order_id), ("EXPIRED", None));
        assert_eq!(statuses(&mut events), ["NEW", "TRIGGERING", "EXPIRED"]);
    }
}
