//! What the trading processes share: the store, the venue, the accounts and
//! symbols they cover, the handle they report through, and an HTTP client
//! for webhooks. Also the mapping of store and venue failures to run errors.

use std::sync::Arc;

use super::accounts_queue::{AccountSync, AccountsQueue};
use super::levels::LevelEngine;
use crate::domain::{Catalog, LivePrices};
use crate::exchange::{Venue, VenueError, VenueErrorKind};
use crate::process::{ErrorKind, Fenced, ProcessError};
use crate::store::Store;
use crate::telemetry::domain::DomainEvents;
use crate::telemetry::stream::StreamMetrics;

pub struct Platform {
    pub store: Arc<Store>,
    pub venue: Arc<dyn Venue>,
    /// The live registry of accounts (file and API); read per use, never cached.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Symbols trade sync always covers (`exchange.symbols`).
    pub symbols: Vec<String>,
    pub events: DomainEvents,
    /// The venue's listed symbols (refreshed from `exchangeInfo`).
    pub catalog: Arc<Catalog>,
    /// Armed levels and their closes, shared by level_monitor and market_stream.
    pub levels: Arc<LevelEngine>,
    /// The venue-side backstops' settings (`levels.backstop*`).
    pub backstops: super::backstop::BackstopSettings,
    /// The latest streamed prices (written by market_stream).
    pub live: Arc<LivePrices>,
    /// A streamed price older than this is stale: REST is asked instead.
    pub stream_stale_after: std::time::Duration,
    /// The WebSocket settings when `exchange.streams` is on.
    pub streaming: Option<StreamSettings>,
    /// Which accounts' user streams are up and reconciled right now.
    pub stream_health: Arc<StreamHealth>,
    pub stream_metrics: Arc<StreamMetrics>,
    /// Posts webhooks: checked addresses, no redirects, signed bodies.
    pub webhooks: Arc<crate::net::webhook::WebhookClient>,
    /// Receiver of position events (TP/SL executed or failed) and of alerts without their own.
    pub webhook_url: Option<String>,
    /// Hosts webhooks may be posted to (`notifications.allowed_webhook_hosts`; empty: any).
    pub webhook_hosts: Vec<String>,
    /// `upstream.batching`: trade sync asks one positions call which symbols changed.
    pub batching: bool,
    /// Other replicas write to the same store (HA): what is cached from it must be re-checked there.
    pub shared_store: bool,
    /// The per-account state of the account processes, by process id.
    pub account_queues: AccountQueues,
}

/// The account processes' queues by process id, for the HTTP layer's view
/// of one account. Held weakly: a process replaced or removed by a reload
/// takes its queue with it.
#[derive(Default)]
pub struct AccountQueues {
    queues: std::sync::Mutex<std::collections::BTreeMap<String, std::sync::Weak<AccountsQueue>>>,
}

impl AccountQueues {
    /// `id`'s queue (a newer instance of the process replaces the older one).
    pub fn register(&self, id: &str, queue: &Arc<AccountsQueue>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|_, q| q.strong_count() > 0);
        queues.insert(id.to_string(), Arc::downgrade(queue));
    }

    /// What every account process knows of `account`, by process id.
    pub fn account(&self, account: &str) -> Vec<AccountSync> {
        let queues: Vec<(String, Arc<AccountsQueue>)> = {
            let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            queues
                .iter()
                .filter_map(|(id, q)| Some((id.clone(), q.upgrade()?)))
                .collect()
        };
        queues.iter().filter_map(|(id, q)| q.snapshot(id, account)).collect()
    }
}

/// How the streams connect and when they give up on a connection.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `ws://` or `wss://` base of the routed paths.
    pub base_url: String,
    /// Nothing received this long: the connection is replaced.
    pub silence: std::time::Duration,
    /// The venue closes connections after this long; ours reconnect ahead of it.
    pub max_lifetime: std::time::Duration,
    /// How often a listen key is extended.
    pub listen_key_renew: std::time::Duration,
    /// How often a healthy user stream's account is reconciled over REST.
    pub reconcile: std::time::Duration,
    /// The one pace of new connections, shared by every stream (`exchange.stream_connects_per_second`).
    pub pacer: Arc<crate::exchange::binance::pacer::ConnectPacer>,
    /// Listen keys one user-stream connection carries (`exchange.user_streams_per_connection`).
    pub user_streams_per_connection: usize,
    /// Aggregate connection series (open, listen keys, connects by result, paced).
    pub connections: Arc<crate::telemetry::stream::StreamConnections>,
}

/// Accounts whose user stream is connected and reconciled: their events
/// arrive as they happen, so REST polling for them can stretch. When each
/// was last reconciled is kept too: a reconciliation reads what a poll of
/// position_sync or trade_sync would (positions, fills of every covered
/// symbol), so it counts as one for both. And the other way round: when the
/// sync processes last read an account (the moment the read started), so a
/// stream that subscribed before that read need not read it again.
#[derive(Debug, Default)]
pub struct StreamHealth {
    healthy: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    reads: std::sync::Mutex<std::collections::HashMap<String, Reads>>,
}

/// When the last successful REST reads of an account started.
#[derive(Debug, Default, Clone, Copy)]
struct Reads {
    positions: Option<tokio::time::Instant>,
    fills: Option<tokio::time::Instant>,
}

/// What a stream subscribed at some moment still has to read over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToRead {
    pub positions: bool,
    pub fills: bool,
}

impl StreamHealth {
    /// `healthy`: the account's stream has just been connected and reconciled.
    pub fn set(&self, account: &str, healthy: bool) {
        let mut map = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        match healthy {
            true => map.insert(account.to_string(), tokio::time::Instant::now()),
            false => map.remove(account),
        };
    }

    pub fn healthy(&self, account: &str) -> bool {
        self.reconciled_at(account).is_some()
    }

    /// When the account's healthy stream was reconciled; `None` while it is not healthy.
    pub fn reconciled_at(&self, account: &str) -> Option<tokio::time::Instant> {
        self.healthy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .copied()
    }

    /// position_sync read the account's positions in a read that started at `started`.
    pub fn positions_read(&self, account: &str, started: tokio::time::Instant) {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.entry(account.to_string()).or_default().positions = Some(started);
    }

    /// trade_sync read the fills of every covered symbol that could have new ones, from `started`.
    pub fn fills_read(&self, account: &str, started: tokio::time::Instant) {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.entry(account.to_string()).or_default().fills = Some(started);
    }

    /// What a stream subscribed at `subscribed` must read: positions unless
    /// a positions read started after it; fills unless a fills read started
    /// after it and after the last positions read (whose symbols it then
    /// covered), and no positions are to be read now.
    pub fn to_read(&self, account: &str, subscribed: tokio::time::Instant) -> ToRead {
        let reads = self
            .reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .copied()
            .unwrap_or_default();
        let after = |t: Option<tokio::time::Instant>| t.is_some_and(|t| t >= subscribed);
        let positions = !after(reads.positions);
        ToRead {
            positions,
            // Positions read now may name symbols no earlier fills read covered.
            fills: positions || !(after(reads.fills) && reads.fills >= reads.positions),
        }
    }
}

/// When each account was last polled over REST, so a process can stretch
/// its polling of accounts whose user stream is healthy.
#[derive(Debug, Default)]
pub struct Polled {
    at: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

impl Polled {
    /// Whether `account` is due: always, unless its user stream is healthy
    /// and it was polled, or its stream reconciled, within `streaming.reconcile`.
    pub fn due(&self, p: &Platform, account: &str) -> bool {
        let Some(settings) = &p.streaming else {
            return true;
        };
        let Some(reconciled) = p.stream_health.reconciled_at(account) else {
            return true;
        };
        let polled = self.at.lock().unwrap_or_else(|e| e.into_inner()).get(account).copied();
        let last = polled.map_or(reconciled, |t| t.max(reconciled));
        last.elapsed() >= settings.reconcile
    }

    pub fn done(&self, account: &str) {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        at.insert(account.to_string(), tokio::time::Instant::now());
    }
}

impl StreamSettings {
    /// When a connection opened now should be replaced, ahead of the venue's close.
    pub fn planned_reconnect(&self) -> std::time::Duration {
        self.max_lifetime - (self.max_lifetime / 10).min(std::time::Duration::from_secs(600))
    }
}

impl Platform {
    /// Each account process's state of `account` (last success, last error,
    /// next due, consecutive failures); empty for an account no process has seen yet.
    pub fn account_sync(&self, account: &str) -> Vec<AccountSync> {
        self.account_queues.account(account)
    }

    /// Counts the levels that position writes retired (their position went flat or the other way).
    pub fn count_retired(&self, changes: &[crate::store::PositionChange]) {
        for change in changes.iter().filter(|c| !c.retired.is_empty()) {
            self.events
                .protection()
                .levels_retired(change.retire_reason(), change.retired.len());
        }
    }

    /// A store failure, as a run error (see [`store_error`]).
    pub fn store_error(&self, e: anyhow::Error) -> ProcessError {
        store_error(&self.events, e)
    }
}

/// A store failure, as a run error; a fenced write is counted here, where it is mapped.
pub fn store_error(events: &DomainEvents, e: anyhow::Error) -> ProcessError {
    if let Some(fenced) = e.downcast_ref::<Fenced>() {
        events.write_fenced();
        return ProcessError::permanent(ErrorKind::Fenced, fenced.to_string());
    }
    ProcessError::retriable(ErrorKind::Store, format!("store: {e:#}"))
}

impl Platform {
    /// A quote per symbol: the streamed one where it is fresh, REST (cache
    /// within `max_age`) for the rest, asked in one batch.
    pub async fn current_quotes(
        &self,
        ctx: &crate::process::RunContext,
        symbols: &[String],
        max_age: std::time::Duration,
    ) -> Result<Vec<crate::domain::Quote>, ProcessError> {
        let source = self.levels.source();
        let mut quotes = Vec::with_capacity(symbols.len());
        let mut stale = Vec::new();
        for symbol in symbols {
            match self.live.fresh(symbol, source, self.stream_stale_after) {
                Some(quote) => quotes.push(quote),
                None => stale.push(symbol.clone()),
            }
        }
        if !stale.is_empty() {
            let prices = self
                .venue
                .prices(&ctx.caller(Some(max_age)), &stale)
                .await
                .map_err(venue_error)?;
            let received = tokio::time::Instant::now();
            quotes.extend(
                prices
                    .iter()
                    .map(|r| crate::domain::Quote::single(&r.symbol, r.price, r.time_ms, received)),
            );
        }
        Ok(quotes)
    }

    /// Prices of `symbols` ([`Self::current_quotes`]; a book counts at its midpoint).
    pub async fn current_prices(
        &self,
        ctx: &crate::process::RunContext,
        symbols: &[String],
        max_age: std::time::Duration,
    ) -> Result<Vec<crate::domain::Price>, ProcessError> {
        let quotes = self.current_quotes(ctx, symbols, max_age).await?;
        Ok(quotes
            .into_iter()
            .map(|q| crate::domain::Price {
                price: if q.bid == q.ask { q.bid } else { q.mid() },
                time_ms: q.time_ms,
                symbol: q.symbol,
            })
            .collect())
    }

    /// `symbols` without those the venue does not list, each left out counted for `process`.
    pub fn listed(&self, process: &'static str, symbols: Vec<String>) -> Vec<String> {
        symbols
            .into_iter()
            .filter(|s| {
                let usable = self.catalog.usable(s);
                if !usable {
                    self.events.symbol_skipped(process);
                    tracing::debug!(process, symbol = %s, "skipping a symbol the venue does not list");
                }
                usable
            })
            .collect()
    }
}

/// Symbols once each, sorted: what a process asks prices or fills for.
pub fn distinct(symbols: impl IntoIterator<Item = String>) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = symbols.into_iter().collect();
    set.into_iter().collect()
}

/// A venue failure, as a run error of a matching kind.
pub fn venue_error(e: VenueError) -> ProcessError {
    let kind = match e.kind() {
        VenueErrorKind::BudgetExhausted => ErrorKind::BudgetExhausted,
        _ => ErrorKind::Upstream,
    };
    ProcessError::new(kind, e.to_string(), e.retriable())
}

#[cfg(test)]
mod tests {
    use super::{StreamHealth, ToRead};
    use std::time::Duration;
    use tokio::time::Instant;

    const BOTH: ToRead = ToRead {
        positions: true,
        fills: true,
    };

    #[test]
    fn a_stream_reads_what_no_sync_read_after_it_subscribed() {
        let h = StreamHealth::default();
        let subscribed = Instant::now();
        let before = subscribed - Duration::from_secs(1);
        let after = subscribed + Duration::from_secs(1);
        let later = after + Duration::from_secs(1);
        assert_eq!(h.to_read("a", subscribed), BOTH, "nothing read yet");
        h.positions_read("a", before);
        h.fills_read("a", before);
        assert_eq!(
            h.to_read("a", subscribed),
            BOTH,
            "reads from before the subscription count for nothing"
        );
        h.fills_read("a", after);
        assert_eq!(
            h.to_read("a", subscribed),
            BOTH,
            "positions to read: their symbols' fills too"
        );
        h.positions_read("a", after);
        h.fills_read("a", later);
        assert_eq!(
            h.to_read("a", subscribed),
            ToRead {
                positions: false,
                fills: false
            },
            "both read after the subscription, fills after positions"
        );
        h.positions_read("a", later + Duration::from_secs(1));
        assert_eq!(
            h.to_read("a", subscribed),
            ToRead {
                positions: false,
                fills: true
            },
            "positions newer than the fills may name symbols the fills read did not cover"
        );
        assert_eq!(h.to_read("b", subscribed), BOTH, "per account");
    }
}
