//! What the venue should hold, and what to do about what it holds: the
//! backstops armed levels want (a pure function of the levels, the mode, the
//! offset and the symbols' ticks), compared with the latest row of each.
//! No I/O here, so every rule is a unit test.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;

use crate::config::BackstopMode;
use crate::domain::{Catalog, PositionSide};
use crate::store::{Backstop, BackstopState, Level};

/// A backstop an armed level wants.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub level_id: i64,
    /// `stop_loss` or `take_profit`.
    pub kind: &'static str,
    pub account: String,
    pub symbol: String,
    pub side: PositionSide,
    pub trigger_price: Decimal,
}

impl Want {
    /// `s` for a stop-loss, `t` for a take-profit: the letter in the client algo id.
    pub fn letter(&self) -> char {
        if self.kind == "stop_loss" { 's' } else { 't' }
    }
}

/// What one pass should do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Place these (want, generation, failures so far).
    pub place: Vec<(Want, i64, i64)>,
    /// Cancel these: on the venue (or maybe) and not wanted any more.
    pub cancel: Vec<Backstop>,
    /// How each wanted backstop stands, for the gauge: `live`, `placing`, `missing`, `failed`.
    pub states: HashMap<&'static str, usize>,
}

/// The backstops `levels` (armed) want under `mode`, each `offset` beyond
/// its level in the losing direction for a stop-loss (the winning one for a
/// take-profit), rounded to the tick away from the level.
pub fn wants(mode: BackstopMode, offset: Decimal, levels: &[Level], catalog: &Catalog) -> Vec<Want> {
    if mode == BackstopMode::Off {
        return Vec::new();
    }
    let mut out = Vec::new();
    for l in levels {
        let Some(side) = l.side else { continue };
        let mut add = |kind: &'static str, price: Decimal| {
            let tick = catalog.listing(&l.symbol).and_then(|x| x.tick_size);
            out.push(Want {
                level_id: l.id,
                kind,
                account: l.account.clone(),
                symbol: l.symbol.clone(),
                side,
                trigger_price: trigger_price(kind, side, price, offset, tick),
            });
        };
        if let Some(sl) = l.stop_loss {
            add("stop_loss", sl);
        }
        if let (BackstopMode::Both, Some(tp)) = (mode, l.take_profit) {
            add("take_profit", tp);
        }
    }
    out
}

/// The venue's trigger for a level at `price`: further from the market than
/// the level by `offset`, on a whole tick, never nearer than the offset.
pub fn trigger_price(
    kind: &str,
    side: PositionSide,
    price: Decimal,
    offset: Decimal,
    tick: Option<Decimal>,
) -> Decimal {
    // A long's stop and a short's take-profit are below the market: move down.
    let down = (kind == "stop_loss") == (side == PositionSide::Long);
    let raw = if down {
        price * (Decimal::ONE - offset)
    } else {
        price * (Decimal::ONE + offset)
    };
    match tick.filter(|t| *t > Decimal::ZERO) {
        Some(tick) if down => ((raw / tick).floor() * tick).normalize(),
        Some(tick) => ((raw / tick).ceil() * tick).normalize(),
        None => raw.round_dp(8).normalize(),
    }
}

/// Compares `wants` with the latest row of each (level, kind) and the rows
/// that are on the venue, at `now_ms`. The backstops of `closing` levels
/// (triggered: our close is under way) are left where they are: the close
/// cancels them once its first order is acknowledged, and until then they
/// are the position's second line.
pub fn plan(wants: &[Want], latest: &[Backstop], closing: &HashSet<i64>, now_ms: i64) -> Plan {
    let mut plan = Plan::default();
    let by_key: HashMap<(i64, &str), &Backstop> = latest.iter().map(|b| ((b.level_id, b.kind.as_str()), b)).collect();
    for want in wants {
        let state = match by_key.get(&(want.level_id, want.kind)) {
            None => {
                plan.place.push((want.clone(), 1, 0));
                "missing"
            }
            Some(b) => match b.state {
                BackstopState::Live => "live",
                BackstopState::Placing => "placing",
                // It fired: the position is closing (or closed) by the venue; nothing to place.
                BackstopState::Triggered | BackstopState::Recorded => "live",
                BackstopState::Failed | BackstopState::Cancelled => {
                    if b.next_at <= now_ms {
                        plan.place.push((want.clone(), b.generation + 1, b.failures));
                    }
                    if b.state == BackstopState::Failed {
                        "failed"
                    } else {
                        "missing"
                    }
                }
            },
        };
        *plan.states.entry(state).or_default() += 1;
    }
    let wanted: HashSet<(i64, &str)> = wants.iter().map(|w| (w.level_id, w.kind)).collect();
    plan.cancel = latest
        .iter()
        .filter(|b| {
            b.state.on_venue()
                && b.next_at <= now_ms
                && !closing.contains(&b.level_id)
                && !wanted.contains(&(b.level_id, b.kind.as_str()))
        })
        .cloned()
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LevelStatus;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn level(id: i64, side: PositionSide, tp: Option<&str>, sl: Option<&str>) -> Level {
        Level {
            id,
            account: "main".into(),
            symbol: "BTCUSDT".into(),
            side: Some(side),
            take_profit: tp.map(d),
            stop_loss: sl.map(d),
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

    fn row(level_id: i64, kind: &str, state: BackstopState, generation: i64, next_at: i64) -> Backstop {
        Backstop {
            client_algo_id: format!("sm-x-{level_id}-{}{generation}", &kind[..1]),
            level_id,
            kind: kind.into(),
            account: "main".into(),
            symbol: "BTCUSDT".into(),
            side: "SELL".into(),
            trigger_price: d("99"),
            state,
            generation,
            algo_id: None,
            order_id: None,
            failures: generation - 1,
            next_at,
            error: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn the_trigger_is_beyond_the_level_on_a_whole_tick() {
        let tick = Some(d("0.1"));
        let off = d("0.005");
        // A long's stop at 100: 99.5, rounded down (further from the market).
        assert_eq!(
            trigger_price("stop_loss", PositionSide::Long, d("100"), off, tick),
            d("99.5")
        );
        assert_eq!(
            trigger_price("stop_loss", PositionSide::Long, d("100.03"), off, tick),
            d("99.5")
        );
        // A short's stop at 100: 100.5, rounded up.
        assert_eq!(
            trigger_price("stop_loss", PositionSide::Short, d("100.03"), off, tick),
            d("100.6")
        );
        // Take-profits move the other way: a long's above, a short's below.
        assert_eq!(
            trigger_price("take_profit", PositionSide::Long, d("200"), off, tick),
            d("201")
        );
        assert_eq!(
            trigger_price("take_profit", PositionSide::Short, d("50"), off, tick),
            d("49.7")
        );
    }

    #[test]
    fn stop_losses_by_default_take_profits_with_both_nothing_when_off() {
        let levels = [
            level(1, PositionSide::Long, Some("120"), Some("90")),
            level(2, PositionSide::Short, Some("80"), None),
        ];
        let cat = Catalog::default();
        let off = d("0.005");
        let kinds = |mode| -> Vec<(i64, &str)> {
            wants(mode, off, &levels, &cat)
                .iter()
                .map(|w| (w.level_id, w.kind))
                .collect()
        };
        assert_eq!(kinds(BackstopMode::StopLoss), vec![(1, "stop_loss")]);
        assert_eq!(
            kinds(BackstopMode::Both),
            vec![(1, "stop_loss"), (1, "take_profit"), (2, "take_profit")]
        );
        assert!(kinds(BackstopMode::Off).is_empty());
    }

    #[test]
    fn missing_ones_are_placed_unwanted_ones_cancelled_failed_ones_after_their_wait() {
        let cat = Catalog::default();
        let levels = [
            level(1, PositionSide::Long, None, Some("90")),
            level(2, PositionSide::Long, None, Some("90")),
            level(3, PositionSide::Long, None, Some("90")),
            level(4, PositionSide::Long, None, Some("90")),
        ];
        let w = wants(BackstopMode::StopLoss, d("0.005"), &levels, &cat);
        let latest = [
            row(2, "stop_loss", BackstopState::Live, 1, 0),
            row(3, "stop_loss", BackstopState::Failed, 2, 5_000),
            row(4, "stop_loss", BackstopState::Failed, 1, 500),
            row(9, "stop_loss", BackstopState::Live, 1, 0), // level 9 is no longer armed
            row(8, "stop_loss", BackstopState::Cancelled, 1, 0),
        ];
        let p = plan(&w, &latest, &HashSet::new(), 1_000);
        let placed: Vec<(i64, i64)> = p.place.iter().map(|(w, g, _)| (w.level_id, *g)).collect();
        assert_eq!(placed, vec![(1, 1), (4, 2)], "level 3 waits until 5 000 ms");
        assert_eq!(p.cancel.iter().map(|b| b.level_id).collect::<Vec<_>>(), vec![9]);
        assert_eq!(p.states.get("live"), Some(&1));
        assert_eq!(p.states.get("missing"), Some(&1));
        assert_eq!(p.states.get("failed"), Some(&2));
        // Level 9 triggered (our close under way): its backstop stays until the close cancels it.
        let closing: HashSet<i64> = [9].into();
        assert!(plan(&w, &latest, &closing, 1_000).cancel.is_empty());
    }
}
