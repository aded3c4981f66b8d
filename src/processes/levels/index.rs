//! Armed levels sorted by trigger price, per symbol, so a price tick costs
//! O(log n + triggered) instead of a scan of every level.
//!
//! For a long position the stop-loss fires at or below its price and the
//! take-profit at or above; for a short, the other way round. The direction
//! is the level's own side, recorded when it was created: never recomputed
//! from whatever position is stored now.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

use crate::domain::PositionSide;
use crate::store::Level;

/// `take_profit` or `stop_loss`.
pub type TriggerKind = &'static str;

#[derive(Debug, Default)]
struct SymbolIndex {
    /// Fires when price ≤ key.
    below: BTreeMap<(Decimal, i64), TriggerKind>,
    /// Fires when price ≥ key.
    above: BTreeMap<(Decimal, i64), TriggerKind>,
}

#[derive(Debug, Default)]
pub struct LevelIndex {
    symbols: HashMap<String, SymbolIndex>,
    /// Level id → +1 (long) or -1 (short): which way its close goes.
    directions: HashMap<i64, i8>,
    len: usize,
}

impl LevelIndex {
    /// Indexes `levels` by their own side (a level without one is left out).
    pub fn build<'a>(levels: impl IntoIterator<Item = &'a Level>) -> Self {
        let mut index = LevelIndex::default();
        for l in levels {
            index.insert(l);
        }
        index
    }

    /// Adds a level (again, after a trigger that could not be committed).
    pub fn insert(&mut self, l: &Level) {
        let Some(side) = l.side else {
            return;
        };
        let direction = if side == PositionSide::Long { 1 } else { -1 };
        self.directions.insert(l.id, direction);
        let s = self.symbols.entry(l.symbol.clone()).or_default();
        let long = direction > 0;
        if let Some(tp) = l.take_profit {
            let side = if long { &mut s.above } else { &mut s.below };
            side.insert((tp, l.id), "take_profit");
            self.len += 1;
        }
        if let Some(sl) = l.stop_loss {
            let side = if long { &mut s.below } else { &mut s.above };
            side.insert((sl, l.id), "stop_loss");
            self.len += 1;
        }
    }

    /// Levels whose price `price` has reached, stop-losses first.
    pub fn crossed(&self, symbol: &str, price: Decimal) -> Vec<(i64, TriggerKind, Decimal)> {
        let Some(s) = self.symbols.get(symbol) else {
            return Vec::new();
        };
        let mut hits: Vec<(i64, TriggerKind, Decimal)> = s
            .below
            .range((price, i64::MIN)..)
            .chain(s.above.range(..=(price, i64::MAX)))
            .map(|(&(at, id), &kind)| (id, kind, at))
            .collect();
        hits.sort_by_key(|&(id, kind, _)| (id, kind != "stop_loss"));
        hits.dedup_by_key(|h| h.0);
        hits
    }

    /// Levels a quote crosses: a long's on the bid (it closes by selling), a
    /// short's on the ask, each once, stop-losses first.
    pub fn crossed_quote(&self, symbol: &str, bid: Decimal, ask: Decimal) -> Vec<(i64, TriggerKind)> {
        let on = |price: Decimal, direction: i8| {
            self.crossed(symbol, price)
                .into_iter()
                .filter(move |(id, _, _)| self.direction(*id) == Some(direction))
                .map(|(id, kind, _)| (id, kind))
        };
        on(bid, 1).chain(on(ask, -1)).collect()
    }

    /// +1 if level `id` guards a long position, -1 a short one.
    pub fn direction(&self, id: i64) -> Option<i8> {
        self.directions.get(&id).copied()
    }

    /// Removes every entry of a level (after it fired).
    pub fn remove(&mut self, symbol: &str, id: i64) {
        self.directions.remove(&id);
        if let Some(s) = self.symbols.get_mut(symbol) {
            let before = s.below.len() + s.above.len();
            s.below.retain(|&(_, i), _| i != id);
            s.above.retain(|&(_, i), _| i != id);
            self.len -= before - (s.below.len() + s.above.len());
        }
    }

    pub fn symbols(&self) -> Vec<String> {
        self.symbols
            .iter()
            .filter(|(_, s)| !s.below.is_empty() || !s.above.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Number of armed trigger prices.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LevelStatus;

    fn level(id: i64, symbol: &str, side: Option<PositionSide>, tp: Option<i64>, sl: Option<i64>) -> Level {
        Level {
            id,
            account: "main".into(),
            symbol: symbol.into(),
            side,
            take_profit: tp.map(Decimal::from),
            stop_loss: sl.map(Decimal::from),
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

    const LONG: Option<PositionSide> = Some(PositionSide::Long);
    const SHORT: Option<PositionSide> = Some(PositionSide::Short);

    #[test]
    fn long_and_short_levels_fire_on_the_right_side() {
        let levels = [
            level(1, "BTC", LONG, Some(110), Some(90)),
            level(2, "BTC", SHORT, Some(80), Some(120)),
            level(3, "BTC", LONG, None, Some(95)),
            level(4, "BTC", None, None, Some(95)), // no side known: not indexed
        ];
        let idx = LevelIndex::build(&levels);
        assert_eq!(idx.len(), 5);
        let idx = LevelIndex::build(&levels[2..3]);
        assert_eq!(idx.crossed("BTC", Decimal::from(96)), vec![]);
        assert_eq!(
            idx.crossed("BTC", Decimal::from(95)),
            vec![(3, "stop_loss", Decimal::from(95))]
        );

        let idx = LevelIndex::build(&levels[..2]);
        assert_eq!(idx.crossed("BTC", Decimal::from(100)), vec![]);
        assert_eq!(
            idx.crossed("BTC", Decimal::from(89)),
            vec![(1, "stop_loss", Decimal::from(90))]
        );
        assert_eq!(
            idx.crossed("BTC", Decimal::from(111)),
            vec![(1, "take_profit", Decimal::from(110))]
        );
        assert_eq!(
            idx.crossed("BTC", Decimal::from(121)),
            vec![
                (1, "take_profit", Decimal::from(110)),
                (2, "stop_loss", Decimal::from(120))
            ]
        );
        assert_eq!(
            idx.crossed("BTC", Decimal::from(79)),
            vec![
                (1, "stop_loss", Decimal::from(90)),
                (2, "take_profit", Decimal::from(80))
            ]
        );
        assert!(idx.crossed("ETH", Decimal::from(1)).is_empty());
    }

    #[test]
    fn the_side_is_the_levels_own_whatever_its_prices_say() {
        // A stop-loss at 90 set for a long fires only when the bid falls to 90,
        // never as a short's stop when the ask rises past it.
        let idx = LevelIndex::build(&[level(7, "BTC", LONG, None, Some(90))]);
        assert!(
            idx.crossed_quote("BTC", Decimal::from(95), Decimal::from(96))
                .is_empty()
        );
        assert!(
            idx.crossed_quote("BTC", Decimal::from(91), Decimal::from(200))
                .is_empty()
        );
        assert_eq!(
            idx.crossed_quote("BTC", Decimal::from(90), Decimal::from(91)),
            vec![(7, "stop_loss")]
        );
        let short = LevelIndex::build(&[level(8, "BTC", SHORT, None, Some(110))]);
        assert!(
            short
                .crossed_quote("BTC", Decimal::from(111), Decimal::from(109))
                .is_empty()
        );
        assert_eq!(
            short.crossed_quote("BTC", Decimal::from(109), Decimal::from(110)),
            vec![(8, "stop_loss")]
        );
    }

    #[test]
    fn removed_levels_stop_firing() {
        let mut idx = LevelIndex::build(&[level(1, "BTC", LONG, Some(110), Some(90))]);
        idx.remove("BTC", 1);
        assert!(idx.is_empty());
        assert!(idx.crossed("BTC", Decimal::from(50)).is_empty());
    }
}
