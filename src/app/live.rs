//! Configuration changes while running: reload on SIGHUP or `POST /-/reload`,
//! and overrides kept in the store (read at start-up, and followed while
//! running when several replicas share one store).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, LoadOptions};
use crate::http::Reload;
use crate::processes::{self, Platform};
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Reloads from where the configuration first came from. An invalid
/// configuration changes nothing: the problems are logged and returned, and
/// `script_manager_config_last_reload_successful` drops to 0.
pub fn reloader(
    options: LoadOptions,
    running: Config,
    scheduler: Arc<Scheduler>,
    platform: Arc<Platform>,
    metrics: Arc<Metrics>,
) -> Reload {
    let running = Mutex::new(running);
    let serial = Mutex::new(());
    Arc::new(move || {
        let _one_at_a_time = serial.lock().unwrap_or_else(|e| e.into_inner());
        let config = match super::load_config(&options) {
            Ok(config) => config,
            Err(e) => {
                metrics.config_loaded(false);
                let problems: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
                tracing::error!(problems = %problems.join("; "), "configuration reload refused; nothing changed");
                return Err(problems.join("; "));
            }
        };
        let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
        let build = |id: &str, p: &crate::config::ProcessConfig| processes::build(id, p, Some(&platform));
        let report = scheduler.reload(&config.processes, &build);
        scheduler
            .budget()
            .set_per_account(super::account_work::per_account_caps(&config));
        super::account_work::stale_bounds(&config, &metrics);
        metrics.config_loaded(true);
        let restart_needed = sections_needing_restart(&running, &config);
        if !restart_needed.is_empty() {
            tracing::warn!(
                sections = %restart_needed.join(", "),
                "these settings changed but take effect only at the next restart"
            );
        }
        tracing::info!(
            added = ?report.added,
            removed = ?report.removed,
            changed = ?report.changed,
            replaced = ?report.replaced,
            "configuration reloaded"
        );
        *running = config;
        Ok(report)
    })
}

/// The top-level sections, other than `processes`, that differ.
fn sections_needing_restart(old: &Config, new: &Config) -> Vec<String> {
    let as_table = |c: &Config| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => Default::default(),
    };
    let (old, new) = (as_table(old), as_table(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).filter(|k| *k != "processes").collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// Reloads on every SIGHUP until `stop`.
pub fn reload_on_sighup(reload: Reload, stop: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot listen for SIGHUP; reload with POST /-/reload");
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP received: reloading the configuration");
            let reload = reload.clone();
            let _ = tokio::task::spawn_blocking(move || reload()).await;
        }
    });
}

/// Puts the stored overrides in force (and takes away those no longer stored).
pub async fn apply_stored_overrides(store: &Store, scheduler: &Scheduler) {
    match store.process_overrides().await {
        Ok(stored) => {
            for p in scheduler.processes().iter() {
                let wanted = stored.get(&*p.id).cloned();
                if p.overrides() != wanted {
                    scheduler.set_overrides(&p.id, wanted);
                }
            }
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read the stored process overrides"),
    }
}

/// Under HA: follows the overrides other replicas store, every `every`.
pub fn follow_stored_overrides(store: Arc<Store>, scheduler: Arc<Scheduler>, every: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            apply_stored_overrides(&store, &scheduler).await;
        }
    });
}
