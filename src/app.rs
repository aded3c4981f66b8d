//! Wiring: configuration in, a running service out. Builds the processes,
//! the scheduler and the HTTP server, and shuts them down in order on
//! SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::budget::ApiBudget;
use crate::config::Config;
use crate::exchange;
use crate::http::{self, AppState};
use crate::processes;
use crate::scheduler::{ProcessHandle, Scheduler};
use crate::telemetry::Metrics;

/// The per-process call limits: every process's, and the service's own.
pub fn process_budget(config: &Config) -> Arc<ApiBudget> {
    Arc::new(ApiBudget::new(
        config
            .processes
            .iter()
            .map(|(id, p)| (id.clone(), p.max_api_calls_per_minute))
            .chain([(
                exchange::setup::SERVICE_CALLER.to_string(),
                exchange::setup::SERVICE_CALLS_PER_MINUTE,
            )]),
    ))
}

/// Builds the scheduler for a validated configuration.
pub fn build_scheduler(config: &Config, metrics: Arc<Metrics>, budget: Arc<ApiBudget>) -> Arc<Scheduler> {
    let handles = config
        .processes
        .iter()
        .map(|(id, p)| ProcessHandle::new(id, p.clone(), processes::build(id, &p.kind, &p.settings)))
        .collect();
    Scheduler::new(handles, metrics, budget, config.enabled, config.scheduler.run_history)
}

/// Runs the service until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let budget = process_budget(&config);
    let exchange_stop = CancellationToken::new();
    let exchange = exchange::setup::start(&config, metrics.clone(), budget.clone(), exchange_stop.clone()).await?;
    let scheduler = build_scheduler(&config, metrics.clone(), budget);
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        scheduler: scheduler.clone(),
        metrics,
        admin_token: config.http.admin_token.clone(),
        started: SystemTime::now(),
        ready: ready.clone(),
        upstream: Some(exchange.upstream.clone()),
    };
    let addr: SocketAddr = config.http.listen.parse().context("http.listen")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (http.listen): is another instance running?"))?;
    let local = listener.local_addr()?;

    for p in scheduler.processes() {
        if p.config.enabled && p.process.is_none() {
            tracing::warn!(process = %p.id, kind = %p.config.kind, "this build has no implementation of this kind yet; the process is listed but not run");
        }
    }
    scheduler.start();
    ready.store(true, Ordering::Release);
    tracing::info!(
        "script-manager {} listening on http://{local}: metrics at /metrics, status at /api/script-manager/status ({} processes, scheduler {})",
        env!("CARGO_PKG_VERSION"),
        scheduler.processes().len(),
        if config.enabled { "enabled" } else { "disabled" },
    );

    let server_stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = server_stop.clone();
        async move {
            axum::serve(listener, http::router(state).into_make_service())
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
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
    server_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    exchange_stop.cancel();
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
