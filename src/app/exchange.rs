//! Brings the exchange up from configuration: the accounts, the in-process
//! simulator when `exchange.kind = "simulated"`, the budgets and the
//! client, and a first clock sync and `exchangeInfo` read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::accounts::{Accounts, Source};
use crate::budget::{Admission, Caller, ProcessCalls, SERVICE_CALLER, VENUE_INFO_CALLER, VenueWeight};
use crate::config::{Config, ExchangeKind, Secret};
use crate::domain::{AccountModes, Catalog};
use crate::exchange::binance::{Binance, TransportOptions};
use crate::exchange::{Account, Venue};
use crate::sim::{self, SimAccountSpec};
use crate::telemetry::Metrics;
use crate::upstream::Knobs;

pub struct Exchange {
    pub venue: Arc<Binance>,
    /// The in-process simulator, when running one.
    pub simulator: Option<(SocketAddr, Arc<sim::Sim>)>,
}

/// Credentials of the simulator's demo accounts, used when none are configured.
/// They only open the local simulator.
pub fn demo_accounts() -> Vec<Account> {
    ["main", "alt"]
        .iter()
        .map(|name| Account {
            name: name.to_string(),
            api_key: Secret::new(format!("sim-{name}-key")),
            api_secret: Secret::new(format!("sim-{name}-secret")),
        })
        .collect()
}

pub fn accounts(config: &Config) -> Vec<Account> {
    if config.exchange.accounts.is_empty() && config.exchange.kind == ExchangeKind::Simulated {
        return demo_accounts();
    }
    config
        .exchange
        .accounts
        .iter()
        .map(|(name, a)| Account {
            name: name.clone(),
            api_key: a.api_key.clone(),
            api_secret: a.api_secret.clone(),
        })
        .collect()
}

pub fn sim_specs(accounts: &[Account]) -> Vec<SimAccountSpec> {
    accounts
        .iter()
        .map(|a| SimAccountSpec {
            name: a.name.clone(),
            api_key: a.api_key.expose().to_string(),
            api_secret: a.api_secret.expose().to_string(),
        })
        .collect()
}

/// The coordination knobs of `[upstream]`.
pub fn knobs(config: &Config) -> Knobs {
    Knobs {
        batching: config.upstream.batching,
        dedupe: config.upstream.dedupe,
        cache: config.upstream.cache,
    }
}

/// The venue's weight budget of `[exchange]`, starting from `venue_limit`.
pub fn venue_weight(config: &Config, venue_limit: u32) -> Arc<VenueWeight> {
    let x = &config.exchange;
    Arc::new(VenueWeight::new(
        venue_limit,
        x.weight_safety_margin,
        x.reserved_share,
        x.reserved_for.iter().cloned(),
    ))
}

pub async fn start(
    config: &Config,
    metrics: Arc<Metrics>,
    calls: Arc<ProcessCalls>,
    stop: CancellationToken,
) -> anyhow::Result<Exchange> {
    let x = &config.exchange;
    let accounts = accounts(config);
    let (base_url, simulator, venue_limit) = match x.kind {
        ExchangeKind::Simulated => {
            let (addr, sim) = sim::start(&x.simulator, &sim_specs(&accounts), stop).await?;
            tracing::info!(%addr, accounts = accounts.len(), "simulated exchange started");
            (format!("http://{addr}"), Some((addr, sim)), x.simulator.weight_limit)
        }
        // Binance's documented default until exchangeInfo answers.
        ExchangeKind::BinanceUsdm => (x.base_url.clone(), None, 2400),
    };
    let weight = venue_weight(config, venue_limit);
    // Per-account caps scale with the accounts, never past what the venue lets us send.
    calls.set_ceiling(weight.limit());
    let admission = Admission::new(calls, weight);
    let options = TransportOptions {
        base_url,
        recv_window_ms: x.recv_window_ms,
        timeout: Duration::from_secs_f64(x.request_timeout_seconds),
    };
    let accounts = Accounts::new(accounts, Source::File);
    let venue = Arc::new(Binance::new(options, knobs(config), admission, metrics, accounts)?);
    Ok(Exchange { venue, simulator })
}

/// How often the venue's limits and symbol list are read again.
pub const EXCHANGE_INFO_EVERY: Duration = Duration::from_secs(600);

/// Clock offset, limits and symbols. Failures are logged, not fatal: the venue
/// may come back, and every process reports its own errors meanwhile.
/// `exchangeInfo` goes first: the venue's count of the address's weight
/// (`X-MBX-USED-WEIGHT-1M`, which other replicas or clients may have raised)
/// comes with every answer, and against the default limit it could leave no
/// room for the read that tells the real one.
pub async fn bootstrap(venue: &Binance, catalog: &Catalog) {
    read_exchange_info(venue, catalog).await;
    let caller = Caller::new(VENUE_INFO_CALLER, 1, Instant::now() + Duration::from_secs(15));
    if let Err(e) = venue.sync_time(&caller).await {
        tracing::warn!(error = %e, "cannot read the venue's clock; signed calls may be rejected until it answers");
    }
}

/// Position-mode reads made at once after start; the rest are paced.
const MODE_READS_AT_ONCE: usize = 8;
/// One paced position-mode read this often (30 weight: 360 a minute, 15 % of 2 400).
const MODE_READ_EVERY: Duration = Duration::from_secs(5);

/// Asks the venue which accounts are in hedge mode (`GET
/// /fapi/v1/positionSide/dual`, weight 30 each), once per account: at start
/// and for each account added later. The first few at once, then one every
/// [`MODE_READ_EVERY`], so a thousand accounts never spend the budget the
/// syncs need. The service supports one-way mode only: a hedge-mode account
/// is named in an error and levels on it are refused (422) until it is
/// switched and the service restarted. Until its read, an account is taken
/// for one-way (a close the venue then refuses is classified as final).
pub async fn follow_position_modes(venue: Arc<Binance>, modes: Arc<AccountModes>, stop: CancellationToken) {
    let mut changes = venue.accounts().changes();
    let mut read = std::collections::HashSet::new();
    let mut reads = 0usize;
    loop {
        changes.mark_unchanged();
        let unread: Vec<String> = venue
            .accounts()
            .names()
            .into_iter()
            .filter(|a| !read.contains(a))
            .collect();
        for account in unread {
            if reads >= MODE_READS_AT_ONCE {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(MODE_READ_EVERY) => {}
                }
            }
            if !venue.accounts().contains(&account) {
                continue; // removed meanwhile
            }
            reads += 1;
            if read_position_mode(&venue, &modes, &account).await {
                read.insert(account);
            }
        }
        read.retain(|a| venue.accounts().contains(a));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changes.changed() => {}
            // Reads that failed are tried again.
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Reads one account's position mode; false if the venue could not say.
async fn read_position_mode(venue: &Binance, modes: &AccountModes, account: &str) -> bool {
    let caller = Caller::new(SERVICE_CALLER, 5, Instant::now() + Duration::from_secs(120));
    match venue.hedge_mode(&caller, account).await {
        Ok(hedge) => {
            modes.set_hedge(account, hedge);
            if hedge {
                tracing::error!(
                    account,
                    "account is in hedge mode (dualSidePosition): script-manager closes positions in one-way mode \
                     only; levels on it are refused. Switch it to one-way mode on the venue and restart"
                );
            }
            true
        }
        Err(e) => {
            tracing::warn!(account, error = %e, "cannot read the account's position mode; assuming one-way");
            false
        }
    }
}

/// Reads `exchangeInfo`: the weight limit and the listed symbols.
async fn read_exchange_info(venue: &Binance, catalog: &Catalog) {
    let caller = Caller::new(VENUE_INFO_CALLER, 1, Instant::now() + Duration::from_secs(15));
    match venue.exchange_info(&caller).await {
        Ok(info) => {
            let weight = &venue.admission().weight;
            weight.set_venue_limit(info.weight_limit_per_minute);
            venue.admission().calls.set_ceiling(weight.limit());
            tracing::info!(
                weight_limit = info.weight_limit_per_minute,
                our_limit = weight.limit(),
                symbols = info.symbols.len(),
                "venue limits and symbols read from exchangeInfo"
            );
            catalog.replace(info.symbols);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read exchangeInfo; keeping the last limits and symbols"),
    }
}

/// Reads `exchangeInfo` again every [`EXCHANGE_INFO_EVERY`] until `stop`, so
/// a delisted symbol is noticed and new ones can be used.
pub fn spawn_exchange_info_refresh(venue: Arc<Binance>, catalog: Arc<Catalog>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(EXCHANGE_INFO_EVERY) => {}
            }
            read_exchange_info(&venue, &catalog).await;
        }
    });
}

/// The stream settings of `[exchange]`, `None` when streams are off. The
/// in-process simulator serves its streams on its own address.
pub fn stream_settings(
    config: &Config,
    simulator: Option<SocketAddr>,
    metrics: &Metrics,
) -> Option<crate::processes::platform::StreamSettings> {
    let x = &config.exchange;
    x.streams.then(|| crate::processes::platform::StreamSettings {
        base_url: match simulator {
            Some(addr) => format!("ws://{addr}"),
            // Checked when the configuration was loaded: set for any other venue.
            None => x
                .ws_url()
                .unwrap_or(crate::config::BINANCE_PRODUCTION_WS_URL)
                .to_string(),
        },
        silence: Duration::from_secs_f64(x.stream_silence_seconds),
        max_lifetime: Duration::from_secs_f64(x.stream_max_lifetime_seconds),
        listen_key_renew: Duration::from_secs_f64(x.listen_key_renew_seconds),
        reconcile: Duration::from_secs_f64(x.stream_reconcile_seconds),
        pacer: Arc::new(crate::exchange::binance::pacer::ConnectPacer::new(
            x.stream_connects_per_second,
            x.stream_connect_burst,
        )),
        user_streams_per_connection: x.user_streams_per_connection,
        connections: metrics.stream_connections.clone(),
    })
}
