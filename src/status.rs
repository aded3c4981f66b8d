//! The status document of `GET /api/script-manager/status`: the seed's shape,
//! field for field, plus what an operator needs next (state, schedule, last
//! error).
//!
//! Owns: the document's shape. Imports `scheduler`, `budget` (usage) and `clock`.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::clock::rfc3339 as fmt_time;
use crate::scheduler::{ProcessHandle, Scheduler};

/// `running` (scheduled and healthy), `error` (last run failed), `paused`, or
/// `stopped` (disabled, scheduler off, or kind not available in this build).
fn status_of(scheduler: &Scheduler, p: &ProcessHandle, consecutive_failures: u64) -> &'static str {
    if !scheduler.enabled() || !p.schedulable() {
        "stopped"
    } else if p.is_paused() {
        "paused"
    } else if consecutive_failures > 0 {
        "error"
    } else {
        "running"
    }
}

/// `executing` while a run is in flight, otherwise `idle` (or `unavailable`).
fn state_of(p: &ProcessHandle) -> &'static str {
    if p.process.is_none() {
        "unavailable"
    } else if p.is_running() {
        "executing"
    } else {
        "idle"
    }
}

pub fn process_document(scheduler: &Scheduler, p: &ProcessHandle) -> Value {
    let calls = scheduler.budget().calls_last_minute(&p.id);
    let config = p.config();
    let waiting_for = waiting_for(scheduler, p);
    let s = p.stats();
    let status = status_of(scheduler, p, s.consecutive_failures);
    let avg = if s.total_runs > 0 {
        s.total_duration / s.total_runs as f64
    } else {
        0.0
    };
    json!({
        "id": &*p.id,
        "process_name": p.name,
        "kind": config.kind,
        "mode": config.mode,
        "status": status,
        "state": state_of(p),
        "enabled": config.enabled,
        "paused": p.is_paused(),
        "interval_seconds": config.interval_seconds,
        "timeout_seconds": config.timeout_seconds,
        "priority": config.priority,
        "retry_count": config.retry_count,
        "max_api_calls_per_minute": config.max_api_calls_per_minute,
        "after": config.after,
        "exclusive_with": scheduler.exclusive_peers(&p.id).iter().map(|q| q.id.to_string()).collect::<Vec<_>>(),
        "waiting_for": waiting_for,
        "overrides": p.overrides().map(|o| json!({
            "values": o.values,
            "set_by": o.set_by,
            "set_at": fmt_time(crate::clock::from_ms(o.set_at_ms)),
        })),
        "lease": lease_of(scheduler, p),
        "continuous": p.continuous().then(|| json!({
            "up": p.is_running() && status != "paused",
            "restarts": s.restarts,
            "last_event": s.last_event.map(fmt_time),
        })),
        "last_run": s.last_run.map(fmt_time),
        "last_success": s.last_success.map(fmt_time),
        "last_error": s.last_error.map(fmt_time),
        "last_error_message": s.last_error_message,
        "last_error_kind": s.last_error_kind,
        "next_run": if status == "stopped" { None } else { s.next_run.map(fmt_time) },
        "metrics": {
            "total_runs": s.total_runs,
            "success_count": s.success_count,
            "error_count": s.error_count,
            "timeout_count": s.timeout_count,
            "skipped_count": s.skipped_count,
            "avg_duration": avg,
            "last_duration": s.last_duration,
            "api_calls_last_minute": calls,
            "consecutive_failures": s.consecutive_failures,
            "last_run": s.last_run.map(fmt_time),
            "last_success": s.last_success.map(fmt_time),
            "last_error": s.last_error.map(fmt_time),
            "last_error_message": s.last_error_message,
        },
    })
}

/// What an idle process waits for: the processes of its chain that have
/// not succeeded since it last started, or the exclusive peers running while
/// one of its ticks waits.
fn waiting_for(scheduler: &Scheduler, p: &ProcessHandle) -> Vec<String> {
    if p.is_running() || !p.schedulable() {
        return Vec::new();
    }
    let mut waiting = p.waiting_for();
    if p.waiting.load(std::sync::atomic::Ordering::Acquire) {
        let peers = scheduler.exclusive_peers(&p.id);
        waiting.extend(peers.iter().filter(|q| q.is_running()).map(|q| q.id.to_string()));
    }
    waiting
}

/// Under HA: which replica holds the process's lease and until when (null on a single replica).
fn lease_of(scheduler: &Scheduler, p: &ProcessHandle) -> Value {
    let Some(ha) = scheduler.coordinator() else {
        return Value::Null;
    };
    match ha.holder(&p.id) {
        Some(h) => json!({
            "holder": h.replica,
            "lease_expires_at": fmt_time(h.lease_expires_at),
            "expired": h.expired,
            "token": h.token,
            "held_here": ha.holds(&p.id),
        }),
        None => json!({"holder": null, "lease_expires_at": null, "expired": true, "token": null, "held_here": false}),
    }
}

pub fn document(scheduler: &Scheduler, started: SystemTime, weight: Option<crate::budget::Usage>) -> Value {
    let mut processes = serde_json::Map::new();
    let (mut running, mut errors, mut paused, mut total_calls) = (0, 0, 0, 0u64);
    for p in scheduler.processes().iter() {
        let doc = process_document(scheduler, p);
        match doc["status"].as_str() {
            Some("running") => running += 1,
            Some("error") => errors += 1,
            Some("paused") => paused += 1,
            _ => {}
        }
        total_calls += doc["metrics"]["api_calls_last_minute"].as_u64().unwrap_or(0);
        processes.insert(p.id.to_string(), doc);
    }
    json!({
        "processes": processes,
        "api_usage": {
            "total_calls_last_minute": total_calls,
            "estimated_calls_per_hour": total_calls * 60,
            "weight_used_this_minute": weight.map(|w| w.used),
            "weight_limit_per_minute": weight.map(|w| w.limit),
            "venue_used_weight": weight.map(|w| w.venue_used),
            "venue_weight_limit": weight.map(|w| w.venue_limit),
            "paused_by_venue": weight.map(|w| w.paused),
        },
        "total_processes": scheduler.processes().len(),
        "running_processes": running,
        "error_processes": errors,
        "paused_processes": paused,
        "scheduler_enabled": scheduler.enabled(),
        "ha": scheduler.coordinator().map(|ha| {
            let view = ha.cluster();
            json!({
                "replica": &*view.replica,
                "replicas_alive": view.replicas_alive,
                "store_up": view.store_up,
                "replicas": view.holdings.iter().map(|(replica, holds)| json!({
                    "replica": replica,
                    "holds": holds,
                    "count": holds.len(),
                })).collect::<Vec<_>>(),
            })
        }),
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": fmt_time(started),
        "uptime_seconds": started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "generated_at": fmt_time(SystemTime::now()),
    })
}
