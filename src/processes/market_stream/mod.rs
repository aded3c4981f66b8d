//! `market_stream` (continuous): the venue's prices by WebSocket for exactly
//! the symbols that have armed levels or active alerts. `bookTicker` rides
//! `/public` and `markPrice@1s` rides `/market`, at most 200 streams a
//! connection; subscriptions follow the symbols as they change
//! ([`connections`]). Each event updates the table of latest prices, and an
//! event for a symbol with armed levels is evaluated at once by the level
//! engine: a stop-loss fires on the price event itself. REST (level_monitor,
//! price_update, notification_check) covers whatever is stale.

mod connections;
mod requests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::levels::Tally;
use super::platform::{Platform, distinct};
use crate::domain::Quote;
use crate::exchange::binance::ws::Route;
use crate::process::{ErrorKind, Process, ProcessError, RunContext, RunReport};
use connections::{Connections, Note, price_source, stream_name};

/// How often the watched symbols are read again.
const REFRESH: Duration = Duration::from_secs(1);

pub struct MarketStream {
    platform: Arc<Platform>,
}

impl MarketStream {
    pub fn new(platform: Arc<Platform>) -> Self {
        MarketStream { platform }
    }

    async fn run_stream(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let Some(settings) = p.streaming.clone() else {
            return Err(ProcessError::permanent(
                ErrorKind::Internal,
                "exchange.streams is off: market_stream has nothing to do",
            ));
        };
        let (notes_tx, mut notes) = mpsc::channel::<Note>(8192);
        let mut connections = Connections::new(settings, p.stream_metrics.clone(), notes_tx);
        let mut refresh = tokio::time::interval(REFRESH);
        let mut tally = Tally::default();
        let stopped = loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => break Ok(()),
                _ = refresh.tick() => {
                    let wanted = match self.watched().await {
                        Ok(wanted) => wanted,
                        Err(e) => break Err(e),
                    };
                    connections.reconcile(&wanted);
                    connections.vouch(&p.live);
                    let wanted: Vec<String> = wanted.into_iter().collect();
                    p.stream_metrics.stale_symbols(p.live.stale(&wanted, p.levels.source(), p.stream_stale_after).len());
                }
                note = notes.recv() => match note {
                    Some(Note::Quote(id, route, quote)) => {
                        ctx.usage.event();
                        connections.heard(id);
                        self.on_quote(&ctx, route, quote, &mut tally).await;
                    }
                    Some(Note::Up(id)) => connections.up(id),
                    Some(Note::Subscribed(id, streams, at)) => connections.subscribed(id, streams, at),
                    Some(Note::Renew(id)) => connections.renew(id),
                    Some(Note::Down(id, reason)) => connections.down(id, reason),
                    None => {}
                },
            }
        };
        connections.close_all();
        stopped.map(|()| RunReport {
            summary: Some(format!("{} levels fired from streamed prices", tally.fired)),
        })
    }

    /// A price arrived: into the table, and to the level engine when levels trigger on it.
    async fn on_quote(&self, ctx: &RunContext, route: Route, quote: Quote, tally: &mut Tally) {
        let p = &self.platform;
        p.stream_metrics.message(stream_name(route), "", quote.time_ms);
        let source = price_source(route);
        if let Some(hub) = p.store.event_hub() {
            let from = match source {
                crate::domain::PriceSource::Mark => crate::events::Source::Mark,
                _ => crate::events::Source::Book,
            };
            hub.quote(&quote.symbol, from, quote.bid, quote.ask, quote.time_ms);
        }
        p.live.update(source, quote.clone());
        if source != p.levels.source() {
            return;
        }
        let span = tracing::info_span!(parent: None, "streamed price", symbol = %quote.symbol);
        let evaluated = tracing::Instrument::instrument(p.levels.evaluate(&ctx.fence, &quote, tally), span).await;
        if let Err(e) = evaluated {
            tracing::warn!(error = %e, "cannot evaluate a streamed price; level_monitor's tick will");
        }
        for failure in tally.failures.drain(..) {
            tracing::warn!(error = %failure, "a level fired from a streamed price failed");
        }
    }

    /// Symbols with armed levels or active alerts, and those the event
    /// stream's clients asked for, that the venue lists.
    async fn watched(&self) -> Result<BTreeSet<String>, ProcessError> {
        let p = &self.platform;
        let levels = p.levels.symbols().await?;
        let alerts = p.store.alerts(true).await.map_err(|e| p.store_error(e))?;
        let asked = p.store.event_hub().map(|h| h.wanted_symbols()).unwrap_or_default();
        let symbols = distinct(
            levels
                .into_iter()
                .chain(alerts.into_iter().map(|a| a.symbol))
                .chain(asked),
        );
        Ok(p.listed("market_stream", symbols).into_iter().collect())
    }
}

impl Process for MarketStream {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_stream(ctx))
    }
}
