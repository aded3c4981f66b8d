//! Following the account registry while running: what must change when an
//! account is added, removed or moved to another replica.
//!
//! - An added account is synced within seconds, not at the next tick: the
//!   account processes (trade_sync, position_sync; dashboard_sync follows
//!   trade_sync) are triggered through the scheduler, and their queues take
//!   a new account as due at once. A trigger refused because a run is in
//!   flight (that run read the accounts before the change) is tried again
//!   each second until one is accepted. Chosen over a short tick per process
//!   because the scheduler, its history and its metrics stay the one place a
//!   run starts from.
//! - The per-account call caps follow this replica's number of accounts.
//! - Removed accounts' series leave `/metrics`; new ones start at zero.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::budget::ProcessCalls;
use crate::config::Config;
use crate::processes;
use crate::scheduler::{Scheduler, TriggerError};
use crate::telemetry::Metrics;

/// Kinds triggered when an account appears (dashboard_sync is chained after trade_sync).
const TRIGGERED_KINDS: [&str; 2] = ["trade_sync", "position_sync"];
/// How long a refused trigger is tried again (a run in flight ends within its timeout).
const TRIGGER_FOR: Duration = Duration::from_secs(120);

/// The ids of the processes whose call cap is per account.
pub fn per_account_caps(config: &Config) -> Vec<String> {
    config
        .processes
        .iter()
        .filter(|(_, p)| processes::PER_ACCOUNT_CAPS.contains(&p.kind.as_str()))
        .map(|(id, _)| id.clone())
        .collect()
}

/// When an account counts as stale for each account process: not synced for
/// three intervals plus a timeout, or (streams on, trade and position sync)
/// twice the reconcile interval while its user stream is healthy.
pub fn stale_bounds(config: &Config, metrics: &Metrics) {
    for p in config.processes.values().filter(|p| p.enabled) {
        let Some(kind) = processes::ACCOUNT_PROCESSES.iter().find(|k| **k == p.kind) else {
            continue;
        };
        let mut bound = 3.0 * p.interval_seconds + p.timeout_seconds;
        if config.exchange.streams && *kind != "dashboard_sync" {
            bound = bound.max(2.0 * config.exchange.stream_reconcile_seconds + p.interval_seconds);
        }
        metrics.accounts.stale_after(kind, Duration::from_secs_f64(bound));
    }
}

/// Follows `accounts` until `stop` (see the module's documentation).
pub fn follow(
    accounts: Arc<Accounts>,
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
    budget: Arc<ProcessCalls>,
    stop: CancellationToken,
) {
    budget.set_accounts(accounts.mine().len());
    tokio::spawn(async move {
        let mut changes = accounts.changes();
        let mut known: BTreeSet<String> = accounts.mine().into_iter().collect();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            let names = accounts.names();
            let mine: BTreeSet<String> = accounts.mine().into_iter().collect();
            budget.set_accounts(mine.len());
            metrics.accounts.retain(&names);
            let added: Vec<&String> = mine.difference(&known).collect();
            if !added.is_empty() {
                tracing::info!(accounts = added.len(), "accounts added: syncing them now");
                trigger_account_processes(scheduler.clone(), stop.clone());
            }
            known = mine;
        }
    });
}

/// Triggers every enabled trade_sync and position_sync process, again each
/// second while a run of it is in flight (or a peer it excludes is).
fn trigger_account_processes(scheduler: Arc<Scheduler>, stop: CancellationToken) {
    let mut pending: Vec<String> = scheduler
        .processes()
        .iter()
        .filter(|p| TRIGGERED_KINDS.contains(&p.config().kind.as_str()))
        .map(|p| p.id.to_string())
        .collect();
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + TRIGGER_FOR;
        while !pending.is_empty() && tokio::time::Instant::now() < until {
            pending.retain(|id| match scheduler.trigger(id) {
                Err(TriggerError::AlreadyRunning | TriggerError::PeerRunning(_)) => true,
                Ok(()) => false,
                Err(e) => {
                    tracing::debug!(process = %id, error = ?e, "not triggered for the new accounts; its next tick takes them");
                    false
                }
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}
