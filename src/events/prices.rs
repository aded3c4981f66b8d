//! Price conflation: quotes arrive as fast as the venue sends them (many a
//! second per symbol); a screen needs the latest one a few times a second.
//! Each quote only updates its symbol's pending point; a timer
//! (`events.price_interval_ms`) publishes every symbol that changed since
//! the last tick, once. So a symbol gets at most one `price` event per
//! interval, whatever the venue's rate, and a quiet symbol none.
//!
//! Which symbols: whatever arrives, and that is by construction only the
//! symbols something watches (the market stream follows armed levels,
//! active alerts and the symbols clients asked for; price_update polls the
//! symbols in use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::hub::{Filter, Hub, Kind};

/// Where a quote came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The order book's best bid and ask (`bookTicker`): `price` is the midpoint.
    Book,
    /// The mark price (`markPrice@1s`).
    Mark,
    /// A REST last price (price_update).
    Rest,
}

#[derive(Debug, Default, Clone)]
struct Point {
    bid: Option<Decimal>,
    ask: Option<Decimal>,
    price: Option<Decimal>,
    mark: Option<Decimal>,
    time_ms: i64,
    dirty: bool,
}

#[derive(Default)]
pub(super) struct Prices {
    points: Mutex<HashMap<String, Point>>,
    /// The last published event of each symbol (local or relayed): the snapshot's prices.
    latest: Mutex<HashMap<String, Value>>,
}

impl Prices {
    pub(super) fn remember(&self, symbol: &str, data: Value) {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(symbol.to_string(), data);
    }

    /// Takes the symbols that changed since the last call, as event data.
    fn take_changed(&self) -> Vec<(String, Value)> {
        let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        points
            .iter_mut()
            .filter(|(_, p)| p.dirty)
            .map(|(symbol, p)| {
                p.dirty = false;
                let text = |d: Option<Decimal>| d.map(|d| d.normalize().to_string());
                let data = json!({
                    "symbol": symbol, "price": text(p.price), "bid": text(p.bid), "ask": text(p.ask),
                    "mark": text(p.mark), "time": p.time_ms,
                });
                (symbol.clone(), data)
            })
            .collect()
    }
}

impl Hub {
    /// A quote arrived. Cheap: one map update; the timer publishes it.
    /// A REST price older than what the stream gave is ignored.
    pub fn quote(&self, symbol: &str, source: Source, bid: Decimal, ask: Decimal, time_ms: i64) {
        let mut points = self.prices.points.lock().unwrap_or_else(|e| e.into_inner());
        let p = points.entry(symbol.to_string()).or_default();
        match source {
            Source::Book => {
                p.bid = Some(bid);
                p.ask = Some(ask);
                p.price = Some((bid + ask) / Decimal::TWO);
            }
            Source::Mark => p.mark = Some(bid),
            Source::Rest if time_ms >= p.time_ms || p.price.is_none() => p.price = Some(bid),
            Source::Rest => return,
        }
        p.time_ms = p.time_ms.max(time_ms);
        p.dirty = true;
    }

    /// Publishes the symbols that changed since the last tick.
    pub fn flush_prices(&self) {
        for (symbol, data) in self.prices.take_changed() {
            self.publish(Kind::Price, None, Some(&symbol), &data);
        }
    }

    /// Publishes conflated prices every `events.price_interval_ms` until `stop`.
    pub fn spawn_conflation(self: &Arc<Self>, stop: CancellationToken) {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hub.settings().price_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => hub.flush_prices(),
                }
            }
        });
    }

    /// The latest price of every symbol `filter` lets through (the snapshot's).
    pub fn latest_prices(&self, filter: &Filter) -> Vec<Value> {
        let latest = self.prices.latest.lock().unwrap_or_else(|e| e.into_inner());
        let mut prices: Vec<(&String, &Value)> = latest.iter().filter(|(s, _)| filter.symbol_ok(s)).collect();
        prices.sort_by(|a, b| a.0.cmp(b.0));
        prices.into_iter().map(|(_, v)| v.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::hub::{Settings, Start};
    use super::*;

    #[test]
    fn many_quotes_make_one_event_per_tick() {
        let hub = Hub::new(
            Settings {
                price_interval: std::time::Duration::from_millis(250),
                keepalive: std::time::Duration::from_secs(15),
                buffer: 100,
                client_queue: 100,
                max_clients: 10,
            },
            Arc::default(),
        );
        for i in 0..50 {
            hub.quote(
                "BTCUSDT",
                Source::Book,
                Decimal::from(100 + i),
                Decimal::from(102 + i),
                i,
            );
        }
        hub.quote("ETHUSDT", Source::Rest, Decimal::from(7), Decimal::from(7), 1);
        hub.flush_prices();
        hub.flush_prices();
        assert_eq!(hub.seq(), 2, "one event per changed symbol, none for unchanged ones");
        let prices = hub.latest_prices(&Filter::new(None, None, Some(vec!["BTCUSDT".into()])));
        assert_eq!(prices.len(), 1);
        assert_eq!(prices[0]["price"], "150");
        let mut sub = hub.subscribe(Filter::default(), None).unwrap();
        assert!(matches!(sub.start(), Some(Start::Snapshot { seq: 2, reset: None })));
    }
}
