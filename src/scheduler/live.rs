//! Changes without a restart: live overrides of a process's settings and
//! reloads of the whole process table.
//!
//! Settings are swapped whole on the process's handle; the tick loop and
//! each run read them once (a run in flight finishes under the settings it
//! started with, the next tick uses the new ones). A reload keeps the
//! handle of every process whose kind and kind settings did not change, so
//! its timetable entry, grid, counters and series go on untouched; a
//! process whose kind or kind settings changed gets a new handle (its old
//! run, if any, finishes first: the new one waits for it); a removed
//! process stops ticking and its series leave `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::state::ProcessHandle;
use super::{Scheduler, Table, process_info};
use crate::config::{ProcessConfig, SetOverrides};
use crate::process::Process;

/// What a reload changed, by process id.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Settings changed in place (the process keeps its grid).
    pub changed: Vec<String>,
    /// Kind, mode or kind settings changed: a new instance of the process.
    pub replaced: Vec<String>,
}

/// Builds a process of a configured kind (`None`: not in this build).
pub type Build<'a> = &'a dyn Fn(&str, &ProcessConfig) -> Option<Arc<dyn Process>>;

impl Scheduler {
    /// Puts `overrides` (or none: the file's values) in force for `id` from
    /// its next tick. `None` if there is no such process.
    pub fn set_overrides(&self, id: &str, overrides: Option<SetOverrides>) -> Option<Arc<ProcessConfig>> {
        let p = self.process(id)?;
        if p.overrides() == overrides {
            return Some(p.config());
        }
        let before = p.config();
        let now = p.set_layers(None, Some(overrides.clone()));
        self.settings_changed(&p, &before, &now);
        let values = overrides.as_ref().map(|o| serde_json::json!(o.values));
        self.emit(
            id,
            "overrides",
            serde_json::json!({"overrides": values, "set_by": overrides.as_ref().map(|o| o.set_by.as_str())}),
        );
        Some(now)
    }

    /// Makes what depends on a process's settings follow them: gauges, its
    /// call budget, and a continuous process's run when it is switched off or on.
    fn settings_changed(&self, p: &ProcessHandle, before: &ProcessConfig, now: &ProcessConfig) {
        self.metrics.process.configure(&p.id, &process_info(now));
        self.budget.set_limit(&p.id, Some(now.max_api_calls_per_minute));
        if before.enabled != now.enabled {
            if p.continuous() {
                match now.enabled {
                    true => p.wake.notify_one(),
                    false => {
                        p.interrupt();
                    }
                }
            }
            if !now.enabled
                && let Some(ha) = self.ha.get()
            {
                let (ha, id) = (ha.clone(), p.id.clone());
                tokio::spawn(async move { ha.release(&id, "pause").await });
            }
            if let Some(ha) = self.ha.get() {
                ha.link(&self.link_groups());
            }
        }
        tracing::info!(
            process = %p.id,
            interval_s = now.interval_seconds,
            timeout_s = now.timeout_seconds,
            priority = now.priority,
            retry_count = now.retry_count,
            max_api_calls_per_minute = now.max_api_calls_per_minute,
            enabled = now.enabled,
            "process settings changed; in force from its next tick"
        );
    }

    /// Makes the scheduler run `processes` (a reloaded configuration): adds,
    /// removes and changes processes without touching the others.
    pub fn reload(self: &Arc<Self>, processes: &BTreeMap<String, ProcessConfig>, build: Build<'_>) -> ReloadReport {
        let old = self.table();
        let mut report = ReloadReport::default();
        let mut handles = Vec::with_capacity(processes.len());
        let mut fresh = Vec::new();
        for (id, config) in processes {
            match old.get(id) {
                Some(p) if same_instance(&p.file_config(), config) => {
                    let changed = *p.file_config() != *config;
                    let before = p.config();
                    let now = p.set_layers(Some(config.clone()), None);
                    if changed {
                        report.changed.push(id.clone());
                        self.settings_changed(p, &before, &now);
                    }
                    handles.push(p.clone());
                }
                Some(p) => {
                    report.replaced.push(id.clone());
                    let new = Arc::new(ProcessHandle::new(id, config.clone(), build(id, config)));
                    new.set_layers(None, Some(p.overrides()));
                    new.follow(p.clone());
                    self.retire(p, false);
                    fresh.push(new.clone());
                    handles.push(new);
                }
                None => {
                    report.added.push(id.clone());
                    let new = Arc::new(ProcessHandle::new(id, config.clone(), build(id, config)));
                    fresh.push(new.clone());
                    handles.push(new);
                }
            }
        }
        for p in old.processes.iter().filter(|p| !processes.contains_key(&*p.id)) {
            report.removed.push(p.id.to_string());
            self.retire(p, true);
        }
        for p in &fresh {
            let config = p.config();
            // Creates its series (or finds a replaced instance's) and shows its settings.
            let _ = p.series.set(self.metrics.init_process(&p.id, &process_info(&config)));
            self.budget.set_limit(&p.id, Some(config.max_api_calls_per_minute));
            self.metrics.ha.held(&p.id, self.ha.get().is_none() && p.schedulable());
        }
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Table::new(handles));
        match self.ha.get() {
            Some(ha) => ha.link(&self.link_groups()),
            None => self
                .metrics
                .ha
                .leases_held(self.processes().iter().filter(|p| p.schedulable()).count()),
        }
        for p in fresh {
            self.take_in(p);
        }
        report
    }

    /// Hands a new process to the tick loop (or its supervisor, when continuous).
    fn take_in(self: &Arc<Self>, p: Arc<ProcessHandle>) {
        if !self.enabled || self.stop_ticking.is_cancelled() || p.process.is_none() {
            return;
        }
        if p.continuous() {
            self.tracker.spawn(self.clone().supervise(p));
        } else {
            let _ = self.added.send(p);
        }
    }

    /// Takes a process out: no more ticks; a run in flight finishes. When
    /// `gone`, its series, budget and lease go too (a replaced process keeps them).
    fn retire(&self, p: &Arc<ProcessHandle>, gone: bool) {
        p.remove();
        if p.continuous() {
            p.interrupt();
            p.wake.notify_one();
        }
        if gone {
            self.metrics.remove_process(&p.id);
            self.budget.set_limit(&p.id, None);
            if let Some(ha) = self.ha.get() {
                let (ha, id) = (ha.clone(), p.id.clone());
                tokio::spawn(async move { ha.release(&id, "removed").await });
            }
        }
    }
}

/// Whether a reload may keep the running instance of a process: same kind,
/// mode and kind settings (only scheduling settings differ).
fn same_instance(old: &ProcessConfig, new: &ProcessConfig) -> bool {
    old.kind == new.kind && old.mode == new.mode && old.settings == new.settings && old.name == new.name
}
