//! Scheduler semantics on tokio's paused clock: deterministic, no real waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use script_manager::budget::ProcessCalls;
use script_manager::config::{ProcessConfig, process_defaults};
use script_manager::process::{ErrorKind, Process, ProcessError, RunContext, RunReport, Trigger};
use script_manager::scheduler::{ProcessHandle, Scheduler, TriggerError};
use script_manager::telemetry::Metrics;
use tokio::time::{advance, sleep};

type Work = dyn Fn(RunContext) -> BoxFuture<'static, Result<RunReport, ProcessError>> + Send + Sync;

/// A process whose behaviour is a closure; records when each attempt starts.
struct Scripted {
    id: &'static str,
    log: Arc<Mutex<Vec<(String, Duration)>>>,
    epoch: tokio::time::Instant,
    work: Box<Work>,
}

impl Process for Scripted {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        self.log
            .lock()
            .unwrap()
            .push((self.id.to_string(), self.epoch.elapsed()));
        (self.work)(ctx)
    }
}

struct Harness {
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
    log: Arc<Mutex<Vec<(String, Duration)>>>,
}

fn cfg(interval: f64, timeout: f64, retries: u32, priority: u8) -> ProcessConfig {
    ProcessConfig {
        interval_seconds: interval,
        timeout_seconds: timeout,
        retry_count: retries,
        priority,
        retry_backoff_seconds: 1.0,
        ..process_defaults("test")
    }
}

fn harness(procs: Vec<(&'static str, ProcessConfig, Box<Work>)>) -> Harness {
    let log = Arc::new(Mutex::new(Vec::new()));
    let epoch = tokio::time::Instant::now();
    let metrics = Arc::new(Metrics::new());
    let handles = procs
        .into_iter()
        .map(|(id, config, work)| {
            let p: Arc<dyn Process> = Arc::new(Scripted {
                id,
                log: log.clone(),
                epoch,
                work,
            });
            ProcessHandle::new(id, config, Some(p))
        })
        .collect();
    let budget = Arc::new(ProcessCalls::new([]));
    let scheduler = Scheduler::new(handles, metrics.clone(), budget, true, 100);
    Harness {
        scheduler,
        metrics,
        log,
    }
}

fn ok_after(d: Duration) -> Box<Work> {
    Box::new(move |_| {
        Box::pin(async move {
            sleep(d).await;
            Ok(RunReport::default())
        })
    })
}

/// The value of one exported series, e.g. `script_manager_process_runs_total{process="a",outcome="success"}`.
fn sample(m: &Metrics, series: &str) -> f64 {
    let text = m.encode_prometheus();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

impl Harness {
    fn starts(&self, id: &str) -> Vec<Duration> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == id)
            .map(|(_, t)| *t)
            .collect()
    }
    fn order(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }
}

/// Lets spawned tasks run without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn fixed_rate_ticks_without_drift() {
    let h = harness(vec![("a", cfg(1.0, 1.0, 0, 1), ok_after(Duration::from_millis(300)))]);
    h.scheduler.start();
    sleep(Duration::from_millis(4500)).await;
    let starts = h.starts("a");
    let expected: Vec<_> = (0..5).map(Duration::from_secs).collect();
    assert_eq!(
        starts, expected,
        "ticks stay on the grid although each run takes 300 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_run_is_never_overlapped() {
    let h = harness(vec![(
        "slow",
        cfg(1.0, 10.0, 0, 1),
        ok_after(Duration::from_millis(2500)),
    )]);
    h.scheduler.start();
    sleep(Duration::from_millis(6100)).await;
    // Runs at 0 s (until 2.5), 3 s (until 5.5), 6 s; the ticks at 1, 2, 4, 5 are skipped.
    assert_eq!(
        h.starts("slow"),
        vec![Duration::ZERO, Duration::from_secs(3), Duration::from_secs(6)]
    );
    assert_eq!(
        sample(
            &h.metrics,
            r#"script_manager_process_skipped_runs_total{process="slow",reason="overlap"}"#
        ),
        4.0
    );
}

#[tokio::test(start_paused = true)]
async fn late_wake_up_coalesces_missed_ticks_into_one_run() {
    let h = harness(vec![("a", cfg(1.0, 1.0, 0, 1), ok_after(Duration::ZERO))]);
    h.scheduler.start();
    settle().await;
    assert_eq!(h.starts("a").len(), 1);
    // The clock jumps 3.5 s while the scheduler sleeps, as after a stall.
    advance(Duration::from_millis(3500)).await;
    settle().await;
    assert_eq!(h.starts("a").len(), 2, "one run for the ticks at 1, 2 and 3 s");
    assert_eq!(
        sample(
            &h.metrics,
            r#"script_manager_process_skipped_runs_total{process="a",reason="missed"}"#
        ),
        2.0
    );
    sleep(Duration::from_millis(600)).await;
    assert_eq!(h.starts("a").len(), 3, "back on the grid at 4 s");
}

#[tokio::test(start_paused = true)]
async fn timeout_is_its_own_outcome_and_error_is_another() {
    let h = harness(vec![
        ("hangs", cfg(10.0, 1.0, 0, 1), ok_after(Duration::from_secs(60))),
        (
            "fails",
            cfg(10.0, 1.0, 0, 1),
            Box::new(|_| Box::pin(async { Err(ProcessError::permanent(ErrorKind::Internal, "boom")) })),
        ),
    ]);
    h.scheduler.start();
    sleep(Duration::from_secs(8)).await;
    let m = &h.metrics;
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_runs_total{process="hangs",outcome="timeout"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_runs_total{process="hangs",outcome="error"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_errors_total{process="hangs",kind="timeout"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_runs_total{process="fails",outcome="error"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_runs_total{process="fails",outcome="timeout"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_errors_total{process="fails",kind="internal"}"#
        ),
        1.0
    );
    let hangs = h.scheduler.process("hangs").unwrap();
    assert_eq!(hangs.stats().timeout_count, 1);
    assert!(!hangs.is_running(), "the timed-out attempt was cancelled");
}

fn fail_first_then_ok(retriable: bool) -> Box<Work> {
    let calls = Arc::new(Mutex::new(0));
    Box::new(move |_| {
        let calls = calls.clone();
        Box::pin(async move {
            let mut n = calls.lock().unwrap();
            *n += 1;
            if *n == 1 {
                Err(ProcessError::new(ErrorKind::Internal, "flaky", retriable))
            } else {
                Ok(RunReport::default())
            }
        })
    })
}

#[tokio::test(start_paused = true)]
async fn retries_only_retriable_errors_and_only_before_the_next_tick() {
    let h = harness(vec![
        // Room for a retry: backoff ≤ 1.5 s + timeout 1 s < 10 s.
        ("roomy", cfg(10.0, 1.0, 3, 1), fail_first_then_ok(true)),
        // No room: backoff ≥ 1 s + timeout 1.5 s > 2 s interval.
        ("tight", cfg(2.0, 1.5, 3, 1), fail_first_then_ok(true)),
        // Retriable budget, but the error is permanent.
        ("final", cfg(10.0, 1.0, 3, 1), fail_first_then_ok(false)),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(1900)).await;
    let m = &h.metrics;
    assert_eq!(h.starts("roomy").len(), 2, "retried within the interval");
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_runs_total{process="roomy",outcome="success"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(m, r#"script_manager_process_retries_total{process="roomy"}"#),
        1.0
    );
    let roomy = h
        .scheduler
        .process("roomy")
        .unwrap()
        .stats()
        .history
        .back()
        .unwrap()
        .attempts;
    assert_eq!(roomy, 2);
    assert_eq!(
        h.starts("tight"),
        vec![Duration::ZERO],
        "a retry could not finish before the next tick"
    );
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_runs_total{process="tight",outcome="error"}"#
        ),
        1.0
    );
    assert_eq!(h.starts("final").len(), 1, "permanent errors are not retried");
    assert_eq!(
        sample(m, r#"script_manager_process_retries_total{process="final"}"#),
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_an_error_of_kind_panic_and_the_scheduler_goes_on() {
    let h = harness(vec![
        (
            "panics",
            cfg(1.0, 1.0, 0, 1),
            Box::new(|_| Box::pin(async { panic!("bad process") })),
        ),
        ("fine", cfg(1.0, 1.0, 0, 2), ok_after(Duration::ZERO)),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(2500)).await;
    let m = &h.metrics;
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_errors_total{process="panics",kind="panic"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            m,
            r#"script_manager_process_runs_total{process="fine",outcome="success"}"#
        ),
        3.0
    );
    let stats = h.scheduler.process("panics").unwrap().stats().clone();
    assert!(stats.last_error_message.unwrap().contains("bad process"));
    assert_eq!(stats.consecutive_failures, 3);
}

#[tokio::test(start_paused = true)]
async fn due_at_the_same_instant_starts_in_priority_order() {
    let h = harness(vec![
        ("low", cfg(1.0, 1.0, 0, 4), ok_after(Duration::ZERO)),
        ("high", cfg(1.0, 1.0, 0, 1), ok_after(Duration::ZERO)),
        ("mid", cfg(1.0, 1.0, 0, 2), ok_after(Duration::ZERO)),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.order(), ["high", "mid", "low", "high", "mid", "low"]);
}

#[tokio::test(start_paused = true)]
async fn pause_resume_and_trigger() {
    let h = harness(vec![("a", cfg(1.0, 5.0, 0, 1), ok_after(Duration::from_millis(200)))]);
    let s = &h.scheduler;
    s.start();
    sleep(Duration::from_millis(500)).await;
    assert_eq!(h.starts("a").len(), 1);

    assert_eq!(s.pause("a"), Some(true));
    sleep(Duration::from_secs(3)).await;
    assert_eq!(h.starts("a").len(), 1, "no scheduled run while paused");
    assert_eq!(
        sample(
            &h.metrics,
            r#"script_manager_process_skipped_runs_total{process="a",reason="paused"}"#
        ),
        3.0
    );
    assert_eq!(sample(&h.metrics, r#"script_manager_process_paused{process="a"}"#), 1.0);

    s.trigger("a").expect("a manual trigger works while paused");
    settle().await;
    assert_eq!(h.starts("a").len(), 2);
    assert_eq!(
        s.trigger("a"),
        Err(TriggerError::AlreadyRunning),
        "single flight holds for manual runs too"
    );
    assert_eq!(s.trigger("nope"), Err(TriggerError::UnknownProcess));

    assert_eq!(s.resume("a"), Some(true));
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(h.starts("a").len(), 3, "ticks resume on the grid");
    let last = h
        .scheduler
        .process("a")
        .unwrap()
        .stats()
        .history
        .iter()
        .any(|r| r.trigger == script_manager::process::Trigger::Manual);
    assert!(last, "the manual run is recorded as such");
}

fn until_cancelled(d: Duration) -> Box<Work> {
    Box::new(move |ctx: RunContext| {
        Box::pin(async move {
            tokio::select! {
                _ = sleep(d) => Ok(RunReport::default()),
                _ = ctx.cancel.cancelled() => Err(ProcessError::permanent(ErrorKind::Cancelled, "stopped")),
            }
        })
    })
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_run_in_flight_finish_within_the_grace_period() {
    let h = harness(vec![(
        "a",
        cfg(10.0, 30.0, 0, 1),
        until_cancelled(Duration::from_secs(3)),
    )]);
    h.scheduler.start();
    settle().await;
    let report = h.scheduler.shutdown(Duration::from_secs(10)).await;
    assert_eq!((report.in_flight, report.cancelled), (1, false));
    assert_eq!(
        sample(
            &h.metrics,
            r#"script_manager_process_runs_total{process="a",outcome="success"}"#
        ),
        1.0
    );
    sleep(Duration::from_secs(30)).await;
    assert_eq!(h.starts("a").len(), 1, "no tick after shutdown");
    assert_eq!(h.scheduler.trigger("a"), Err(TriggerError::ShuttingDown));
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_runs_that_outlive_the_grace_period() {
    let h = harness(vec![(
        "a",
        cfg(10.0, 300.0, 2, 1),
        until_cancelled(Duration::from_secs(120)),
    )]);
    h.scheduler.start();
    settle().await;
    let report = h.scheduler.shutdown(Duration::from_secs(1)).await;
    assert_eq!((report.in_flight, report.cancelled), (1, true));
    assert_eq!(
        sample(
            &h.metrics,
            r#"script_manager_process_errors_total{process="a",kind="cancelled"}"#
        ),
        1.0
    );
    assert_eq!(h.starts("a").len(), 1, "a cancelled run is not retried");
}

#[tokio::test(start_paused = true)]
async fn the_run_history_queue_is_bounded_and_counts_what_it_drops() {
    let h = harness(vec![("a", cfg(1.0, 0.5, 0, 1), ok_after(Duration::from_millis(10)))]);
    // Nobody reads the queue (a store that stopped answering): it must not grow past its bound.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    h.scheduler.record_runs_to(tx);
    h.scheduler.start();
    for _ in 0..30 {
        advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
    let runs: f64 = ["success", "error", "timeout"]
        .iter()
        .map(|o| {
            sample(
                &h.metrics,
                &format!(r#"script_manager_process_runs_total{{process="a",outcome="{o}"}}"#),
            )
        })
        .sum();
    assert!(runs >= 10.0, "{runs} runs");
    let mut queued = 0;
    while rx.try_recv().is_ok() {
        queued += 1;
    }
    assert_eq!(queued, 4, "the queue holds its bound, no more");
    assert_eq!(
        sample(&h.metrics, "script_manager_run_records_dropped_total"),
        runs - 4.0,
        "every record that did not fit is counted"
    );
}

fn continuous(timeout: f64) -> ProcessConfig {
    ProcessConfig {
        mode: script_manager::config::ProcessMode::Continuous,
        ..cfg(1.0, timeout, 3, 1)
    }
}

/// A stream that runs until cancelled, counting how many copies run at once.
fn stream_until_cancelled(
    live: Arc<std::sync::atomic::AtomicI32>,
    peak: Arc<std::sync::atomic::AtomicI32>,
) -> Box<Work> {
    use std::sync::atomic::Ordering;
    Box::new(move |ctx| {
        let (live, peak) = (live.clone(), peak.clone());
        Box::pin(async move {
            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            ctx.usage.event();
            ctx.cancel.cancelled().await;
            live.fetch_sub(1, Ordering::SeqCst);
            Ok(RunReport::default())
        })
    })
}

#[tokio::test(start_paused = true)]
async fn a_continuous_process_that_keeps_failing_is_restarted_with_growing_waits() {
    let failing: Box<Work> =
        Box::new(|_| Box::pin(async { Err(ProcessError::retriable(ErrorKind::Upstream, "connection refused")) }));
    let h = harness(vec![("stream", continuous(2.0), failing)]);
    h.scheduler.start();
    sleep(Duration::from_secs(20)).await;
    let starts = h.starts("stream");
    assert!(starts.len() >= 4, "restarted: {starts:?}");
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] < Duration::from_secs(1), "the first restart is quick: {gaps:?}");
    assert!(
        gaps.last().unwrap() > &gaps[0],
        "waits grow while it keeps failing: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(45)),
        "waits are bounded: {gaps:?}"
    );
    let restarts = sample(&h.metrics, r#"script_manager_process_restarts_total{process="stream"}"#);
    assert_eq!(restarts as usize, starts.len() - 1);
    assert_eq!(
        h.scheduler.process("stream").unwrap().stats().restarts as usize,
        starts.len() - 1
    );
}

/// A coordinator for a replica whose claims are refused (another replica
/// holds the process) until `free_at`, then granted.
struct HeldElsewhereUntil {
    free_at: tokio::time::Instant,
    claims: std::sync::atomic::AtomicU32,
}

impl script_manager::scheduler::Coordinator for HeldElsewhereUntil {
    fn replica(&self) -> Arc<str> {
        Arc::from("here")
    }
    fn until_next_tick(&self, interval: Duration, _offset: Duration, _guard: Duration) -> Duration {
        interval
    }
    fn claim<'a>(
        &'a self,
        _process: &'a Arc<str>,
        _timeout: Duration,
        _grid: (Duration, Duration),
        _manual: bool,
    ) -> BoxFuture<'a, Option<script_manager::scheduler::Granted>> {
        Box::pin(async move {
            self.claims.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.holds("").then_some(script_manager::scheduler::Granted {
                token: 1,
                slot: None,
                key: None,
            })
        })
    }
    fn release<'a>(&'a self, _process: &'a str, _reason: &'static str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn finished<'a>(&'a self, _process: &'a str, _group_idle: bool) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn should_hand_over(&self, _process: &str) -> bool {
        false
    }
    fn owner(&self, _process: &str) -> Option<String> {
        Some("here".into())
    }
    fn holds(&self, _process: &str) -> bool {
        tokio::time::Instant::now() >= self.free_at
    }
    fn holder(&self, _process: &str) -> Option<script_manager::scheduler::Holder> {
        None
    }
    fn link(&self, _groups: &std::collections::BTreeMap<String, String>) {}
    fn cluster(&self) -> script_manager::scheduler::ClusterView {
        script_manager::scheduler::ClusterView {
            replica: self.replica(),
            replicas_alive: 2,
            store_up: true,
            holdings: Default::default(),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_continuous_process_held_elsewhere_starts_within_a_second_of_being_free() {
    let live = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let h = harness(vec![("stream", continuous(2.0), stream_until_cancelled(live, peak))]);
    // Held by another replica for two minutes: long enough for a failure
    // backoff to reach its 30 s ceiling, were lost claims counted as failures.
    let free_at = tokio::time::Instant::now() + Duration::from_secs(120);
    let coordinator = Arc::new(HeldElsewhereUntil {
        free_at,
        claims: Default::default(),
    });
    h.scheduler.coordinate_with(coordinator.clone());
    h.scheduler.start();
    sleep(Duration::from_secs(125)).await;
    let starts = h.starts("stream");
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert!(
        starts[0] >= Duration::from_secs(120) && starts[0] <= Duration::from_millis(121_500),
        "started {:?} after start-up; free after 120 s",
        starts[0]
    );
    let claims = coordinator.claims.load(std::sync::atomic::Ordering::SeqCst);
    assert!((100..=130).contains(&claims), "about one claim a second: {claims}");
    let restarts = sample(&h.metrics, r#"script_manager_process_restarts_total{process="stream"}"#);
    assert_eq!(restarts, 0.0, "a claim lost is not a restart");
    h.scheduler.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_continuous_process_runs_once_and_a_trigger_restarts_it_at_once() {
    let live = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let h = harness(vec![(
        "stream",
        continuous(2.0),
        stream_until_cancelled(live.clone(), peak.clone()),
    )]);
    h.scheduler.start();
    sleep(Duration::from_secs(10)).await;
    assert_eq!(
        h.starts("stream").len(),
        1,
        "a long run, not one per interval or timeout"
    );
    assert_eq!(
        sample(&h.metrics, r#"script_manager_process_up{process="stream"}"#),
        1.0
    );
    assert!(
        sample(
            &h.metrics,
            r#"script_manager_process_last_event_timestamp_seconds{process="stream"}"#
        ) > 0.0
    );
    h.scheduler.trigger("stream").unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(h.starts("stream").len(), 2, "a trigger reconnects at once");
    h.scheduler.trigger("stream").unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(h.starts("stream").len(), 3);
    assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 1, "never two at once");

    h.scheduler.pause("stream").unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0, "paused: not running");
    assert_eq!(
        sample(&h.metrics, r#"script_manager_process_up{process="stream"}"#),
        0.0
    );
    assert_eq!(h.starts("stream").len(), 3);
    h.scheduler.resume("stream").unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(h.starts("stream").len(), 4, "resumed: running again");

    let report = h.scheduler.shutdown(Duration::from_secs(5)).await;
    assert!(
        !report.cancelled,
        "a continuous run stops at shutdown without waiting out the grace"
    );
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn intervals_stretch_while_the_venue_holds_us_back_and_come_back_after() {
    use script_manager::budget::VenueWeight;
    use script_manager::scheduler::Adaptive;
    let mut low = cfg(1.0, 1.0, 0, 3);
    low.kind = "dashboard_sync".into();
    let mut monitor = cfg(1.0, 1.0, 0, 3);
    monitor.kind = "level_monitor".into();
    let h = harness(vec![
        ("urgent", cfg(1.0, 1.0, 0, 1), ok_after(Duration::from_millis(10))),
        ("low", low, ok_after(Duration::from_millis(10))),
        ("monitor", monitor, ok_after(Duration::from_millis(10))),
    ]);
    let weight = Arc::new(VenueWeight::new(1000, 1.0, 0.0, []));
    h.scheduler.adapt_to(Adaptive::new(weight.clone(), 0.8, 4.0, 2));
    // A 429 with Retry-After 10 s: less urgent work waits 4× its interval meanwhile.
    weight.pause_for(Duration::from_secs(10));
    h.scheduler.start();
    sleep(Duration::from_millis(9500)).await;
    let effective = r#"script_manager_process_effective_interval_seconds{process="low"}"#;
    assert_eq!(sample(&h.metrics, effective), 4.0);
    let paused_low = h.starts("low").len();
    assert!(
        (3..=4).contains(&paused_low),
        "low ran {paused_low} times in 9.5 s at 4 s"
    );
    assert_eq!(h.starts("urgent").len(), 10, "priority 1 never stretches");
    assert_eq!(h.starts("monitor").len(), 10, "level_monitor never stretches");
    // The pause is over: back to its own interval.
    sleep(Duration::from_secs(10)).await;
    let after = h.starts("low").len() - paused_low;
    assert!(after >= 8, "low ran {after} times in the 10 s after the pause");
    assert_eq!(sample(&h.metrics, effective), 1.0);
}

fn chained(after: &[&str], deadline: f64) -> ProcessConfig {
    ProcessConfig {
        after: after.iter().map(|s| s.to_string()).collect(),
        ..cfg(deadline, 5.0, 0, 3)
    }
}

fn always_fails() -> Box<Work> {
    Box::new(|_| Box::pin(async { Err(ProcessError::permanent(ErrorKind::Internal, "no")) }))
}

#[tokio::test(start_paused = true)]
async fn a_chain_runs_in_order_right_after_each_leader_and_never_on_its_own_clock() {
    let h = harness(vec![
        ("a", cfg(1.0, 1.0, 0, 1), ok_after(Duration::from_millis(100))),
        ("b", chained(&["a"], 30.0), ok_after(Duration::from_millis(100))),
        ("c", chained(&["b"], 30.0), ok_after(Duration::from_millis(100))),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(3500)).await;
    let ms = |id| h.starts(id).iter().map(|d| d.as_millis()).collect::<Vec<_>>();
    assert_eq!(ms("a"), [0, 1000, 2000, 3000]);
    assert_eq!(ms("b"), [100, 1100, 2100, 3100], "b right after each a");
    assert_eq!(ms("c"), [200, 1200, 2200, 3200], "c right after each b");
    let b = h.scheduler.process("b").unwrap();
    assert!(b.stats().history.iter().all(|r| r.trigger == Trigger::After));
}

#[tokio::test(start_paused = true)]
async fn a_chain_past_its_deadline_runs_anyway_and_says_so() {
    let h = harness(vec![
        ("a", cfg(1.0, 1.0, 0, 1), always_fails()),
        ("b", chained(&["a"], 2.5), ok_after(Duration::ZERO)),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(1500)).await;
    assert!(h.starts("b").is_empty(), "a failed: b waits");
    assert_eq!(h.scheduler.process("b").unwrap().waiting_for(), ["a"]);
    sleep(Duration::from_millis(4000)).await;
    let ms: Vec<_> = h.starts("b").iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [2500, 5000], "every deadline, counted from its last start");
    let b = h.scheduler.process("b").unwrap();
    assert!(b.stats().history.iter().all(|r| r.trigger == Trigger::Deadline));
}

#[tokio::test(start_paused = true)]
async fn exclusive_processes_never_overlap_and_a_tick_that_waits_too_long_is_skipped() {
    let mut y = cfg(1.0, 1.0, 0, 2);
    y.exclusive_with = vec!["x".into()];
    y.start_offset_seconds = 0.5;
    let h = harness(vec![
        ("x", cfg(1.0, 1.0, 0, 1), ok_after(Duration::from_millis(700))),
        ("y", y, ok_after(Duration::from_millis(700))),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(6000)).await;
    let mut runs: Vec<(Duration, &str)> = Vec::new();
    for id in ["x", "y"] {
        runs.extend(h.starts(id).into_iter().map(|t| (t, id)));
    }
    runs.sort();
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].0 + Duration::from_millis(700),
            "{pair:?} overlap: {runs:?}"
        );
    }
    // 1.4 s of work per second of ticks cannot all fit: ticks that came while
    // their own earlier tick was still waiting or running were skipped, and counted.
    let skipped = |id, reason| {
        sample(
            &h.metrics,
            &format!(r#"script_manager_process_skipped_runs_total{{process="{id}",reason="{reason}"}}"#),
        )
    };
    let total: f64 = ["x", "y"]
        .iter()
        .map(|id| skipped(id, "overlap") + skipped(id, "exclusive"))
        .sum();
    assert_eq!(
        total as usize + runs.len(),
        12,
        "every tick ran or was counted: {runs:?}"
    );
    assert!(runs.len() >= 6, "both still run: {runs:?}");
}

#[tokio::test(start_paused = true)]
async fn a_tick_that_waits_for_its_peer_longer_than_its_timeout_is_skipped_as_exclusive() {
    let mut y = cfg(1.0, 0.1, 0, 2);
    y.exclusive_with = vec!["x".into()];
    y.start_offset_seconds = 0.5;
    let h = harness(vec![
        ("x", cfg(1.0, 1.0, 0, 1), ok_after(Duration::from_millis(800))),
        ("y", y, ok_after(Duration::from_millis(50))),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(2700)).await;
    assert!(h.starts("y").is_empty(), "x always runs when y is due: {:?}", h.order());
    assert_eq!(
        sample(
            &h.metrics,
            r#"script_manager_process_skipped_runs_total{process="y",reason="exclusive"}"#
        ),
        3.0
    );
    assert_eq!(
        h.scheduler.trigger("y"),
        Err(TriggerError::PeerRunning("x".into())),
        "a manual run is refused too while x runs"
    );
}

#[tokio::test(start_paused = true)]
async fn overrides_apply_from_the_next_tick_and_go_back_to_the_file() {
    use script_manager::config::{Overrides, SetOverrides};
    let h = harness(vec![("a", cfg(2.0, 1.0, 0, 1), ok_after(Duration::ZERO))]);
    h.scheduler.start();
    sleep(Duration::from_millis(100)).await;
    let set = SetOverrides {
        values: Overrides {
            interval_seconds: Some(0.5),
            ..Overrides::default()
        },
        set_by: "admin".into(),
        set_at_ms: 0,
    };
    h.scheduler.set_overrides("a", Some(set)).unwrap();
    assert_eq!(
        sample(&h.metrics, r#"script_manager_process_interval_seconds{process="a"}"#),
        0.5
    );
    sleep(Duration::from_millis(3000)).await;
    let ms: Vec<_> = h.starts("a").iter().map(|d| d.as_millis()).collect();
    assert_eq!(
        ms,
        [0, 2000, 2500, 3000],
        "the tick already due keeps its time, then 0.5 s"
    );
    h.scheduler.set_overrides("a", None).unwrap();
    sleep(Duration::from_millis(3000)).await;
    let ms: Vec<_> = h.starts("a").iter().map(|d| d.as_millis()).collect();
    assert_eq!(
        ms,
        [0, 2000, 2500, 3000, 3500, 5500],
        "back to 2 s after the tick already due"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_adds_removes_and_changes_processes_and_keeps_the_others_on_their_grid() {
    let h = harness(vec![
        ("steady", cfg(1.0, 1.0, 0, 1), ok_after(Duration::from_millis(10))),
        ("doomed", cfg(1.0, 1.0, 0, 1), ok_after(Duration::from_millis(10))),
        ("changed", cfg(2.0, 1.0, 0, 1), ok_after(Duration::from_millis(10))),
    ]);
    h.scheduler.start();
    sleep(Duration::from_millis(2300)).await;
    let mut table = std::collections::BTreeMap::new();
    table.insert("steady".to_string(), cfg(1.0, 1.0, 0, 1));
    table.insert("changed".to_string(), cfg(0.5, 1.0, 0, 1));
    table.insert("fresh".to_string(), cfg(1.0, 1.0, 0, 1));
    let (log, epoch) = (h.log.clone(), tokio::time::Instant::now() - Duration::from_millis(2300));
    let build = move |id: &str, _: &ProcessConfig| -> Option<Arc<dyn Process>> {
        Some(Arc::new(Scripted {
            id: Box::leak(id.to_string().into_boxed_str()),
            log: log.clone(),
            epoch,
            work: ok_after(Duration::from_millis(10)),
        }))
    };
    let report = h.scheduler.reload(&table, &build);
    assert_eq!(
        (report.added, report.removed, report.changed, report.replaced),
        (
            vec!["fresh".to_string()],
            vec!["doomed".to_string()],
            vec!["changed".to_string()],
            vec![]
        )
    );
    sleep(Duration::from_millis(2300)).await;
    let ms = |id| h.starts(id).iter().map(|d| d.as_millis()).collect::<Vec<_>>();
    assert_eq!(ms("steady"), [0, 1000, 2000, 3000, 4000], "no tick lost or doubled");
    assert_eq!(ms("doomed"), [0, 1000, 2000], "no tick after its removal");
    assert_eq!(ms("changed"), [0, 2000, 4000, 4500], "the tick already due, then 0.5 s");
    assert_eq!(ms("fresh"), [2300, 3300, 4300], "runs from the reload on");
    let text = h.metrics.encode_prometheus();
    assert!(!text.contains(r#"process="doomed""#), "its series are gone:\n{text}");
    assert!(text.contains(r#"script_manager_process_runs_total{process="fresh",outcome="success"} 3"#));
}
