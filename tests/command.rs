//! The `command` kind with real child programs.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use figment::value::Value;
use script_manager::budget::ProcessCalls;
use script_manager::config::{ProcessConfig, process_defaults};
use script_manager::process::ErrorKind;
use script_manager::processes;
use script_manager::scheduler::{ProcessHandle, RunRecord, Scheduler};
use script_manager::telemetry::Metrics;

fn command(script: &str, timeout: f64, retries: u32) -> ProcessConfig {
    let mut settings = BTreeMap::new();
    settings.insert("command".to_string(), Value::from("sh"));
    settings.insert(
        "args".to_string(),
        Value::from(vec![Value::from("-c"), Value::from(script)]),
    );
    settings.insert("kill_grace_seconds".to_string(), Value::from(0.5));
    ProcessConfig {
        interval_seconds: 3600.0,
        start_offset_seconds: 3000.0,
        timeout_seconds: timeout,
        retry_count: retries,
        retry_backoff_seconds: 0.05,
        settings,
        ..process_defaults("command")
    }
}

/// Triggers one run of a command process and returns its record.
async fn run_once(config: ProcessConfig) -> (RunRecord, Arc<Scheduler>) {
    assert!(
        processes::check_settings("command", &config.settings)
            .unwrap()
            .is_empty()
    );
    let process = processes::build("job", &config, None).expect("command kind builds");
    let handle = ProcessHandle::new("job", config, Some(process));
    let budget = Arc::new(ProcessCalls::new([("job".to_string(), 100)]));
    let scheduler = Scheduler::new(vec![handle], Arc::new(Metrics::new()), budget, true, 10);
    scheduler.trigger("job").unwrap();
    let p = scheduler.process("job").unwrap().clone();
    for _ in 0..400 {
        if let Some(r) = p.stats().history.back() {
            return (r.clone(), scheduler);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the run did not finish");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // A grandchild that ignores SIGTERM, and the script itself.
    let script = format!(
        "(trap '' TERM; sleep 300) & echo $! > {p}; echo $$ >> {p}; sleep 300",
        p = pids.display()
    );
    let (record, _s) = run_once(command(&script, 0.5, 0)).await;
    assert_eq!(record.outcome, "timeout");
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    let mut gone = false;
    for _ in 0..100 {
        gone = pids.iter().all(|&pid| common::process_gone(pid));
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "left behind: {pids:?}");
}

#[tokio::test]
async fn exit_status_maps_to_an_error_with_the_last_stderr_line() {
    let (record, _s) = run_once(command("echo starting; echo 'disk full' >&2; exit 3", 5.0, 0)).await;
    assert_eq!(record.outcome, "error");
    assert_eq!(record.error_kind, Some(ErrorKind::ExitStatus));
    let message = record.error_message.unwrap();
    assert!(
        message.contains("status 3") && message.contains("disk full"),
        "{message}"
    );

    let (record, _s) = run_once(command("exit 0", 5.0, 0)).await;
    assert_eq!(record.outcome, "success");

    let (record, _s) = run_once(command("kill -KILL $$", 5.0, 0)).await;
    assert_eq!(record.error_kind, Some(ErrorKind::Signal));
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error_and_not_retried() {
    let mut config = command("", 5.0, 3);
    config
        .settings
        .insert("command".into(), Value::from("/nonexistent/script-xyz"));
    config.settings.remove("args");
    let (record, _s) = run_once(config).await;
    assert_eq!(record.error_kind, Some(ErrorKind::Spawn));
    assert_eq!(record.attempts, 1);
    assert!(record.error_message.unwrap().contains("/nonexistent/script-xyz"));
}

#[tokio::test]
async fn failing_exit_is_retried_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tried");
    let script = format!(
        "if [ -e {m} ]; then exit 0; else touch {m}; exit 1; fi",
        m = marker.display()
    );
    let (record, _s) = run_once(command(&script, 5.0, 2)).await;
    assert_eq!((record.outcome, record.attempts), ("success", 2));
}

#[tokio::test]
async fn reported_api_calls_count_toward_the_budget() {
    let (record, s) = run_once(command(
        "echo SCRIPT_MANAGER_API_CALLS=7; echo SCRIPT_MANAGER_API_CALLS=5",
        5.0,
        0,
    ))
    .await;
    assert_eq!(record.api_calls, 12);
    assert_eq!(s.budget().calls_last_minute("job"), 12);
    assert!(s.budget().can_make_api_calls("job", 88));
    assert!(!s.budget().can_make_api_calls("job", 89));
}

#[tokio::test]
async fn cpu_time_and_peak_memory_are_recorded() {
    let (record, _s) = run_once(command("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done", 30.0, 0)).await;
    assert_eq!(record.outcome, "success");
    let cpu = record.child_cpu_seconds.unwrap();
    assert!(cpu > 0.05, "a busy loop uses CPU: {cpu}");
    let rss = record.child_peak_rss_bytes.unwrap();
    assert!(rss > 100_000, "peak RSS in bytes: {rss}");
}
