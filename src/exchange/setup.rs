//! Brings the exchange up from configuration: the accounts, the in-process
//! simulator when `exchange.kind = "simulated"`, the shared budget and
//! client, and a first clock sync and `exchangeInfo` read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::binance::Binance;
use super::{Account, Caller, Venue};
use crate::budget::{ApiBudget, GlobalBudget};
use crate::config::{Config, ExchangeKind, Secret};
use crate::sim::{self, SimAccountSpec};
use crate::telemetry::Metrics;
use crate::upstream::{Knobs, Upstream, UpstreamOptions};

/// The caller id of the service's own calls (clock sync, exchangeInfo).
pub const SERVICE_CALLER: &str = "service";

/// Budget (calls per minute) of the service's own calls.
pub const SERVICE_CALLS_PER_MINUTE: u32 = 30;

pub struct Exchange {
    pub venue: Arc<Binance>,
    pub upstream: Arc<Upstream>,
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

pub async fn start(
    config: &Config,
    metrics: Arc<Metrics>,
    process_budget: Arc<ApiBudget>,
    cluster: Option<Arc<crate::ha::budget::ClusterBudget>>,
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
    let budget = Arc::new(GlobalBudget::new(
        venue_limit,
        x.weight_safety_margin,
        x.reserved_share,
        x.reserved_for.iter().cloned(),
    ));
    let upstream = Upstream::new(
        UpstreamOptions {
            base_url,
            knobs: Knobs {
                batching: config.upstream.batching,
                dedupe: config.upstream.dedupe,
                cache: config.upstream.cache,
            },
            recv_window_ms: x.recv_window_ms,
            timeout: Duration::from_secs_f64(x.request_timeout_seconds),
        },
        budget,
        process_budget,
        metrics,
    )?;
    if let Some(cluster) = cluster {
        upstream.share_budget(cluster);
    }
    let venue = Arc::new(Binance::new(upstream.clone(), accounts));
    bootstrap(&venue, &upstream).await;
    Ok(Exchange {
        venue,
        upstream,
        simulator,
    })
}

/// Clock offset and limits. Failures are logged, not fatal: the venue may
/// come back, and every process reports its own errors meanwhile.
async fn bootstrap(venue: &Binance, upstream: &Arc<Upstream>) {
    let caller = Caller::new(SERVICE_CALLER, 1, Instant::now() + Duration::from_secs(15));
    if let Err(e) = upstream.sync_time(&caller).await {
        tracing::warn!(error = %e, "cannot read the venue's clock; signed calls may be rejected until it answers");
    }
    match venue.exchange_info(&caller).await {
        Ok(info) => {
            upstream.budget.set_venue_limit(info.weight_limit_per_minute);
            tracing::info!(
                weight_limit = info.weight_limit_per_minute,
                our_limit = upstream.budget.limit(),
                symbols = info.symbols.len(),
                "venue limits read from exchangeInfo"
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot read exchangeInfo; using the default weight limit"),
    }
}
