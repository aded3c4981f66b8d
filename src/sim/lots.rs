//! Each symbol's quantity and price filters, as `exchangeInfo` lists them and
//! orders are held to: `LOT_SIZE` (limit orders), `MARKET_LOT_SIZE` (MARKET
//! orders, with a much smaller maximum than `LOT_SIZE`, so closing a large
//! position takes several orders) and `PRICE_FILTER`'s tick (trigger prices).
//! Fixed at start from the opening prices and `[exchange.simulator]`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;

use super::book::STEP_SIZE;
use super::orders::OrderReject;
use crate::config::SimulatorConfig;

/// What a MARKET order may be worth at the opening price when not configured.
const DEFAULT_MARKET_MAX_NOTIONAL: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lot {
    /// `minQty` of both `LOT_SIZE` and `MARKET_LOT_SIZE`.
    pub min_qty: Decimal,
    /// `LOT_SIZE.maxQty`.
    pub max_qty: Decimal,
    /// `MARKET_LOT_SIZE.maxQty`.
    pub market_max_qty: Decimal,
    /// `PRICE_FILTER.tickSize`.
    pub tick: Decimal,
}

impl Lot {
    /// The defaults for a symbol opening at `price`.
    pub fn for_price(price: Decimal) -> Lot {
        let worth = Decimal::from(DEFAULT_MARKET_MAX_NOTIONAL) / price.max(Decimal::new(1, 8));
        let market_max_qty = round_down(worth).max(STEP_SIZE);
        Lot {
            min_qty: STEP_SIZE,
            max_qty: market_max_qty * Decimal::TEN,
            market_max_qty,
            tick: tick_size(price),
        }
    }

    /// Checks a MARKET order's quantity as the venue does, in its order.
    pub fn check_market(&self, qty: Decimal) -> Result<(), OrderReject> {
        let reject = |code, msg| Err(OrderReject { code, msg });
        if qty <= Decimal::ZERO {
            return reject(-4003, "Quantity less than or equal to zero.");
        }
        if !(qty % STEP_SIZE).is_zero() {
            return reject(-1111, "Precision is over the maximum defined for this asset.");
        }
        if qty < self.min_qty {
            return reject(-4004, "Quantity less than min quantity.");
        }
        if qty > self.market_max_qty {
            return reject(-4005, "Quantity greater than max quantity.");
        }
        Ok(())
    }

    /// Checks a trigger price: positive and a whole number of ticks.
    pub fn check_price(&self, price: Decimal) -> Result<(), OrderReject> {
        if price <= Decimal::ZERO {
            return Err(OrderReject {
                code: -4006,
                msg: "Stop price less than zero.",
            });
        }
        if !(price % self.tick).is_zero() {
            return Err(OrderReject {
                code: -4014,
                msg: "Price not increased by tick size.",
            });
        }
        Ok(())
    }
}

/// Every listed symbol's filters: the defaults, then what `config` sets.
pub fn from_config(config: &SimulatorConfig, prices: &BTreeMap<String, Decimal>) -> BTreeMap<String, Lot> {
    let set = |map: &BTreeMap<String, f64>, symbol: &str| {
        map.get(symbol)
            .and_then(|&q| Decimal::from_f64(q))
            .map(round_down)
            .filter(|q| *q > Decimal::ZERO)
    };
    prices
        .iter()
        .map(|(symbol, &price)| {
            let mut lot = Lot::for_price(price);
            if let Some(q) = set(&config.market_max_qty, symbol) {
                lot.market_max_qty = q;
                lot.max_qty = q * Decimal::TEN;
            }
            if let Some(q) = set(&config.max_qty, symbol) {
                lot.max_qty = q;
            }
            if let Some(q) = set(&config.min_qty, symbol) {
                lot.min_qty = q;
            }
            (symbol.clone(), lot)
        })
        .collect()
}

pub fn defaults(prices: &BTreeMap<String, Decimal>) -> BTreeMap<String, Lot> {
    prices.iter().map(|(s, &p)| (s.clone(), Lot::for_price(p))).collect()
}

fn round_down(q: Decimal) -> Decimal {
    ((q / STEP_SIZE).floor() * STEP_SIZE).normalize()
}

/// The price step of a symbol opening at `price` (the walk rounds as `book::round_price`).
fn tick_size(price: Decimal) -> Decimal {
    if price >= Decimal::from(1000) {
        Decimal::new(1, 1)
    } else if price >= Decimal::from(10) {
        Decimal::new(1, 2)
    } else {
        Decimal::new(1, 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_orders_are_held_to_market_lot_size() {
        let lot = Lot::for_price(Decimal::from(100_000));
        assert_eq!(lot.market_max_qty, Decimal::TEN, "1 000 000 USDT of BTC");
        assert_eq!(lot.max_qty, Decimal::ONE_HUNDRED);
        assert_eq!(lot.tick, Decimal::new(1, 1));
        let code = |q: Decimal| lot.check_market(q).err().map(|r| r.code);
        assert_eq!(code(Decimal::ZERO), Some(-4003));
        assert_eq!(code(Decimal::new(15, 4)), Some(-1111));
        assert_eq!(code(Decimal::new(10_001, 3)), Some(-4005));
        assert_eq!(code(Decimal::TEN), None);
        let mut config = SimulatorConfig::default();
        config.min_qty.insert("BTCUSDT".into(), 0.01);
        config.market_max_qty.insert("BTCUSDT".into(), 2.5);
        let prices = [("BTCUSDT".to_string(), Decimal::from(100_000))].into();
        let lot = from_config(&config, &prices)["BTCUSDT"];
        assert_eq!(
            (lot.min_qty, lot.market_max_qty),
            (Decimal::new(1, 2), Decimal::new(25, 1))
        );
        assert_eq!(lot.check_market(Decimal::new(5, 3)).unwrap_err().code, -4004);
        assert_eq!(lot.check_market(Decimal::new(2501, 3)).unwrap_err().code, -4005);
        assert_eq!(lot.check_price(Decimal::new(950_005, 2)).unwrap_err().code, -4014);
        assert!(lot.check_price(Decimal::new(950_001, 1)).is_ok());
    }
}
