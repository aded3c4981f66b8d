//! Wiring: configuration in, a running service out. Opens the store, brings
//! up the exchange ([`exchange`]), builds the processes and the scheduler,
//! serves HTTP, and shuts everything down in order on SIGTERM/SIGINT.
//!
//! Owns: the order things start and stop in. The top floor: it may import
//! every module, and nothing imports it.

mod account_work;
mod accounts;
pub mod exchange;
mod live;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::budget::{ProcessCalls, SERVICE_CALLER, SERVICE_CALLS_PER_MINUTE, VENUE_INFO_CALLER};
use crate::config::{Config, ConfigError, Egress, LoadOptions};
use crate::domain::Catalog;
use crate::ha::Coordinator;
use crate::ha::budget::PgClusterBudget;
use crate::http::{self, AppState};
use crate::processes::levels::LevelEngine;
use crate::processes::levels::close::{CloseDeps, CloseSettings, Closer};
use crate::processes::platform::StreamHealth;
use crate::processes::{self, Platform};
use crate::scheduler::{ProcessHandle, RunRecord, Scheduler};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::telemetry::otel::TracingSettings;

/// Loads and validates the configuration, each process kind checking its own settings.
pub fn load_config(options: &LoadOptions) -> Result<Config, ConfigError> {
    crate::config::load(options, processes::check_settings)
}

/// What the tracing subscriber needs from the configuration.
pub fn tracing_settings(config: &Config) -> TracingSettings {
    TracingSettings {
        log_level: config.log_level.clone(),
        json: config.log_format == crate::config::LogFormat::Json,
        service_name: config.telemetry.service_name.clone(),
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
    }
}

/// The per-process call limits: every process's, and the service's own.
pub fn process_budget(config: &Config) -> Arc<ProcessCalls> {
    let budget = Arc::new(ProcessCalls::new(
        config
            .processes
            .iter()
            .map(|(id, p)| (id.clone(), p.max_api_calls_per_minute))
            .chain([
                (SERVICE_CALLER.to_string(), SERVICE_CALLS_PER_MINUTE),
                (VENUE_INFO_CALLER.to_string(), SERVICE_CALLS_PER_MINUTE),
            ]),
    ));
    budget.set_per_account(account_work::per_account_caps(config));
    budget
}

/// Builds the scheduler for a validated configuration.
pub fn build_scheduler(
    config: &Config,
    metrics: Arc<Metrics>,
    budget: Arc<ProcessCalls>,
    platform: Option<&Arc<Platform>>,
) -> Arc<Scheduler> {
    let handles = config
        .processes
        .iter()
        .map(|(id, p)| ProcessHandle::new(id, p.clone(), processes::build(id, p, platform)))
        .collect();
    Scheduler::new(handles, metrics, budget, config.enabled, config.scheduler.run_history)
}

/// Finished runs waiting for the store: enough for bursts, bounded so a
/// stuck store cannot grow memory without end (the excess is counted).
pub const RUN_RECORD_QUEUE: usize = 4096;

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub runs: Duration,
    pub finished: Duration,
}

/// Writes finished runs to the store; every ten minutes prunes the run
/// history and finished levels, intents, alerts and notifications past retention,
/// flat positions past `store::FLAT_KEPT_MS` and audit rows past `store::AUDIT_KEPT_MS`.
pub fn spawn_run_writer(store: Arc<Store>, retention: Retention) -> mpsc::Sender<RunRecord> {
    let (tx, mut rx) = mpsc::channel::<RunRecord>(RUN_RECORD_QUEUE);
    tokio::spawn(async move {
        let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
        while let Some(record) = rx.recv().await {
            if let Err(e) = store.insert_run(&record).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot record a run in the store");
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = tokio::time::Instant::now();
                prune(&store, retention).await;
            }
        }
    });
    tx
}

async fn prune(store: &Store, retention: Retention) {
    let now = crate::clock::now_ms();
    match store.prune_runs(now - retention.runs.as_millis() as i64).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned run history"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot prune run history"),
    }
    match store.prune_backstops(now - retention.finished.as_millis() as i64).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned backstops of finished levels"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot prune backstops"),
    }
    match store.prune_finished(now - retention.finished.as_millis() as i64).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned finished levels, intents, alerts and notifications"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot prune finished rows"),
    }
    match store.prune_audit(now - crate::store::AUDIT_KEPT_MS).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned audit rows"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot prune audit rows"),
    }
    match store.prune_flat_positions(now).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned flat positions"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot prune flat positions"),
    }
}

/// Processes the scheduler will tick.
fn schedulable(scheduler: &Scheduler) -> Vec<String> {
    scheduler
        .processes()
        .iter()
        .filter(|p| p.schedulable() && scheduler.enabled())
        .map(|p| p.id.to_string())
        .collect()
}

/// Makes the scheduler claim each tick, starts the heartbeat and the pruning
/// of old cluster-budget minutes (both stop with `stop`). `cluster`: the
/// budget shared through PostgreSQL (`exchange.egress = "shared"`).
fn join_cluster(
    scheduler: &Arc<Scheduler>,
    ha: &Arc<Coordinator>,
    cluster: Option<Arc<PgClusterBudget>>,
    stop: CancellationToken,
) {
    scheduler.coordinate_with(ha.clone() as Arc<dyn crate::scheduler::Coordinator>);
    ha.spawn_heartbeat(stop.clone());
    tracing::info!(replica = %ha.replica, "ha: coordinating with the other replicas through PostgreSQL");
    let Some(cluster) = cluster else {
        tracing::info!(
            "ha: exchange.egress = \"per_replica\": this replica's venue weight budget is its own address's"
        );
        return;
    };
    ha.report_replicas_to(cluster.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            }
            let minute = crate::clock::now_ms() / 60_000;
            if let Err(e) = cluster.prune(minute - 10).await {
                tracing::debug!(error = %format!("{e:#}"), "cannot prune the cluster budget");
            }
        }
    });
}

/// Spreads the accounts over the live replicas (`ha.share_accounts`): the
/// account kinds (`processes::ACCOUNT_SHARDED`) run on every replica for its
/// own accounts. Which processes those are is read from the scheduler's
/// table when the coordinator asks (a reload may add or replace some).
async fn share_accounts(
    ha: &Arc<Coordinator>,
    scheduler: &Arc<Scheduler>,
    accounts: &Arc<crate::accounts::Accounts>,
) -> anyhow::Result<()> {
    let table = Arc::downgrade(scheduler);
    let is_account_process = move |id: &str| {
        table
            .upgrade()
            .and_then(|s| s.process(id))
            .is_some_and(|p| processes::ACCOUNT_SHARDED.contains(&p.config().kind.as_str()))
    };
    ha.share_accounts(accounts.clone(), is_account_process)
        .await
        .context("ha: cannot read the live replicas to share the accounts")
}

/// Keeps `ha_accounts_owned` at the number of accounts this replica works
/// for: the registry's watch wakes on an account added or removed and on a
/// new assignment.
fn count_owned_accounts(accounts: &Arc<crate::accounts::Accounts>, metrics: &Arc<Metrics>, stop: CancellationToken) {
    let (accounts, metrics) = (accounts.clone(), metrics.clone());
    let mut changes = accounts.changes();
    metrics.ha.accounts_owned(accounts.mine().len());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            metrics.ha.accounts_owned(accounts.mine().len());
        }
    });
}

/// Closes a previous life of this service was working on are taken up at
/// once, not after their claim's lease: with one instance per store every
/// claim is a dead one's; under HA only those of this replica's name.
async fn release_stale_claims(config: &Config, store: &Store) {
    let replica = crate::ha::replica_id(&config.ha);
    let mine = config.ha.enabled.then_some(replica.as_str());
    match store.release_claims_of(mine).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "closes left by a previous run are taken up again"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot release the claims of a previous run"),
    }
}

/// The kill switch the HTTP layer calls.
fn flatten_with(platform: Arc<Platform>) -> crate::http::flatten::Flatten {
    Arc::new(move |account: Option<String>| {
        let platform = platform.clone();
        Box::pin(async move {
            let refused = |budget_spent, message| crate::http::flatten::Refused { budget_spent, message };
            let report = processes::backstop::flatten::flatten(&platform, account.as_deref())
                .await
                .map_err(|e| refused(e.budget_spent, e.message))?;
            serde_json::to_value(report).map_err(|e| refused(false, e.to_string()))
        })
    })
}

/// `levels.backstop*` as the backstop process reads them.
pub fn backstop_settings(config: &Config) -> crate::processes::backstop::BackstopSettings {
    let l = &config.levels;
    crate::processes::backstop::BackstopSettings {
        mode: l.backstop,
        offset: rust_decimal::Decimal::from_f64_retain(l.backstop_offset)
            .unwrap_or(rust_decimal::Decimal::new(5, 3))
            .round_dp(6),
        reconcile: Duration::from_secs_f64(l.backstop_reconcile_seconds),
        resync: Default::default(),
    }
}

/// The level engine and its close workers, from `[levels]` and the exchange.
pub fn level_engine(
    config: &Config,
    store: &Arc<Store>,
    venue: &Arc<crate::exchange::binance::Binance>,
    catalog: &Arc<Catalog>,
    metrics: &Metrics,
    stream_health: &Arc<StreamHealth>,
) -> Arc<LevelEngine> {
    let l = &config.levels;
    let timeout = config.exchange.request_timeout_seconds;
    let settings = CloseSettings {
        attempt: Duration::from_secs_f64(l.close_attempt_seconds),
        lease: Duration::from_secs_f64(l.lease_seconds(timeout)),
        send_margin: Duration::from_secs_f64(l.send_margin_seconds(timeout)),
        concurrency: l.max_concurrent_closes,
    };
    let deps = CloseDeps {
        store: store.clone(),
        venue: venue.clone(),
        catalog: catalog.clone(),
        events: metrics.domain.clone(),
        stream_health: stream_health.clone(),
        webhook_url: webhook_url(config),
    };
    let closer = Closer::new(deps, settings, &crate::ha::replica_id(&config.ha));
    Arc::new(LevelEngine::new(
        store.clone(),
        metrics.domain.clone(),
        closer,
        config.ha.enabled,
    ))
}

/// `notifications.webhook_url` itself, for the outbox (never for logs).
fn webhook_url(config: &Config) -> Option<String> {
    config
        .notifications
        .webhook_url
        .as_ref()
        .map(|u| u.expose().to_string())
}

/// Webhooks configured without a signing secret go out unsigned: said once at start.
fn warn_unsigned_webhooks(config: &Config) {
    let n = &config.notifications;
    if n.signing_secret.is_none() && (n.webhook_url.is_some() || !n.allowed_webhook_hosts.is_empty()) {
        tracing::warn!(
            "webhook bodies are unsigned: set notifications.signing_secret (or signing_secret_file) so receivers can verify them"
        );
    }
}

/// Runs the service until `shutdown` fires.
pub async fn run(config: Config, options: LoadOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    metrics.config_loaded(true);
    metrics.accounts.set_limit(config.telemetry.per_account_series_limit);
    let budget = process_budget(&config);
    let store = Arc::new(Store::open(&config.store.url).await?);
    // Accounts added through the API, decrypted now: a key that cannot open them stops the start (exit 2).
    let vault = accounts::vault(&config)?;
    let stored_accounts = accounts::load(&store, vault.as_deref()).await?;
    let exchange_stop = CancellationToken::new();
    let ha_stop = CancellationToken::new();
    let ha = match config.ha.enabled {
        true => Some((
            Coordinator::connect(&config.store.url, &config.ha, metrics.clone()).await?,
            match config.exchange.egress {
                Egress::Shared => Some(Arc::new(PgClusterBudget::connect(&config.store.url).await?)),
                // Each replica's own address: the venue counts each apart.
                Egress::PerReplica => None,
            },
        )),
        false => None,
    };
    let exchange = exchange::start(&config, metrics.clone(), budget.clone(), exchange_stop.clone()).await?;
    if let Some((_, Some(cluster))) = &ha {
        exchange.venue.admission().share_with(cluster.clone());
    }
    let account_revisions = accounts::register(exchange.venue.accounts(), stored_accounts);
    let catalog = Arc::new(Catalog::default());
    exchange::bootstrap(&exchange.venue, &catalog).await;
    exchange::spawn_exchange_info_refresh(exchange.venue.clone(), catalog.clone(), exchange_stop.clone());
    let modes = Arc::new(crate::domain::AccountModes::default());
    {
        // In the background, after the first answers told the budget what the venue has counted
        // (each read weighs 30): a start never bursts past another client's share.
        let (venue, modes, stop) = (exchange.venue.clone(), modes.clone(), exchange_stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            exchange::follow_position_modes(venue, modes, stop).await;
        });
    }
    let accounts = exchange.venue.accounts().clone();
    metrics.domain.init_accounts(
        &processes::ACCOUNT_PROCESSES,
        &processes::SYMBOL_PROCESSES,
        &accounts.names(),
    );
    account_work::stale_bounds(&config, &metrics);
    store.post_level_events_to(webhook_url(&config));
    let events = crate::events::Hub::new(
        crate::events::Settings::from_config(&config.events),
        metrics.events.clone(),
    );
    store.publish_events_to(events.clone());
    events.spawn_conflation(ha_stop.clone());
    if config.ha.enabled {
        crate::events::relay::start(events.clone(), &config.store.url, ha_stop.clone())
            .await
            .context("the event relay (LISTEN/NOTIFY) cannot reach PostgreSQL")?;
    }
    warn_unsigned_webhooks(&config);
    let stream_health = Arc::new(StreamHealth::default());
    let levels = level_engine(&config, &store, &exchange.venue, &catalog, &metrics, &stream_health);
    release_stale_claims(&config, &store).await;
    let platform = Arc::new(Platform {
        store: store.clone(),
        venue: exchange.venue.clone(),
        accounts: accounts.clone(),
        symbols: config.exchange.symbols.clone(),
        events: metrics.domain.clone(),
        catalog: catalog.clone(),
        levels: levels.clone(),
        backstops: backstop_settings(&config),
        live: Arc::default(),
        stream_stale_after: Duration::from_secs_f64(config.exchange.stream_stale_seconds),
        streaming: exchange::stream_settings(&config, exchange.simulator.as_ref().map(|(addr, _)| *addr), &metrics),
        stream_metrics: metrics.stream.clone(),
        stream_health,
        webhooks: Arc::new(processes::notification_check::webhook_client(&config.notifications)?),
        webhook_url: webhook_url(&config),
        webhook_hosts: config.notifications.allowed_webhook_hosts.clone(),
        batching: config.upstream.batching,
        shared_store: config.ha.enabled,
        account_queues: Default::default(),
    });
    if let Err(e) = processes::demo::seed(&platform, &config).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot create the demo levels and alerts");
    }
    let scheduler = build_scheduler(&config, metrics.clone(), budget.clone(), Some(&platform));
    account_work::follow(
        accounts.clone(),
        scheduler.clone(),
        metrics.clone(),
        budget,
        exchange_stop.clone(),
    );
    scheduler.publish_events_to(events.clone());
    live::apply_stored_overrides(&store, &scheduler).await;
    let s = &config.scheduler;
    if s.adaptive_intervals {
        scheduler.adapt_to(crate::scheduler::Adaptive::new(
            exchange.venue.admission().weight.clone(),
            s.adapt_above_share,
            s.adapt_max_factor,
            s.adapt_from_priority,
        ));
    }
    let retention = Retention {
        runs: Duration::from_secs_f64(config.store.run_retention_days * 86_400.0),
        finished: Duration::from_secs_f64(config.store.data_retention_days * 86_400.0),
    };
    scheduler.record_runs_to(spawn_run_writer(store.clone(), retention));
    metrics.ha.init(&schedulable(&scheduler), ha.is_some());
    if let Some((coordinator, cluster)) = &ha {
        if config.ha.share_accounts {
            share_accounts(coordinator, &scheduler, &accounts).await?;
        }
        join_cluster(&scheduler, coordinator, cluster.clone(), ha_stop.clone());
    }
    count_owned_accounts(&accounts, &metrics, ha_stop.clone());
    if ha.is_some() {
        let every = Duration::from_secs_f64(config.ha.heartbeat_seconds * 2.0);
        live::follow_stored_overrides(store.clone(), scheduler.clone(), every, ha_stop.clone());
        accounts::follow(
            store.clone(),
            vault.clone(),
            accounts.clone(),
            account_revisions,
            every,
            ha_stop.clone(),
        );
    }
    let reload = live::reloader(
        options,
        config.clone(),
        scheduler.clone(),
        platform.clone(),
        metrics.clone(),
    );
    live::reload_on_sighup(reload.clone(), ha_stop.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        scheduler: scheduler.clone(),
        metrics,
        tokens: Arc::new(http::auth::Tokens::from_config(&config.http)),
        limits: Arc::new(http::shed::Limits::new(
            config.http.max_concurrent_requests,
            Duration::from_secs_f64(config.http.request_timeout_seconds),
            config.http.mutations_per_minute,
        )),
        max_body_bytes: config.http.max_body_bytes,
        webhook_hosts: config.notifications.allowed_webhook_hosts.clone(),
        started: SystemTime::now(),
        ready: ready.clone(),
        weight: Some(exchange.venue.admission().weight.clone()),
        store: Some(store.clone()),
        accounts,
        catalog: Some(catalog),
        modes,
        flatten: Some(flatten_with(platform.clone())),
        reload: Some(reload),
        vault,
        account_hooks: Some(accounts::hooks(platform.clone())),
        events: Some(events.clone()),
    };
    let addr: SocketAddr = config.http.listen.parse().context("http.listen")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (http.listen): is another instance running?"))?;
    let local = listener.local_addr()?;

    scheduler.start();
    ready.store(true, Ordering::Release);
    tracing::info!(
        "script-manager {} listening on http://{local}: metrics at /metrics, status at /api/script-manager/status ({} processes, scheduler {})",
        env!("CARGO_PKG_VERSION"),
        scheduler.processes().len(),
        if config.enabled { "enabled" } else { "disabled" },
    );

    let server_stop = CancellationToken::new();
    let max_connections = config.http.max_connections;
    let server = tokio::spawn({
        let stop = server_stop.clone();
        async move { http::serve::serve(listener, http::router(state), max_connections, stop).await }
    });

    shutdown.cancelled().await;
    ready.store(false, Ordering::Release);
    let grace = Duration::from_secs_f64(config.scheduler.shutdown_grace_seconds);
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "stopping: no new ticks; waiting for runs in flight"
    );
    let report = scheduler.shutdown(grace).await;
    tracing::info!(
        in_flight = report.in_flight,
        cancelled = report.cancelled,
        "scheduler stopped"
    );
    // Closes in flight stop where they are: their intents stay pending and
    // are taken up by the next start (or another replica) with a look-up first.
    levels.closer().shutdown(Duration::from_secs(1)).await;
    // Streams never end by themselves: end them, so the drain below is short.
    events.close_all();
    ha_stop.cancel();
    if let Some((coordinator, _)) = &ha {
        coordinator.leave().await;
    }
    server_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    exchange_stop.cancel();
    // Let the run writer drain what the last runs sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Fires the returned token on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        fire.cancel();
    });
    token
}
