//! `cargo bench --bench scheduler_lag -- N INTERVAL_S DURATION_S`
//!
//! Runs N trivial processes every INTERVAL_S seconds for DURATION_S through
//! the real scheduler and prints one line:
//! `script-manager jobs=N runs=R lag_ms p50=… p99=… max=… cpu_per_s=… rss_mb=… missed=M`
//! (lag = actual start − scheduled start; missed = expected runs − runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use script_manager::budget::ProcessCalls;
use script_manager::config::{ProcessConfig, process_defaults};
use script_manager::process::{Process, ProcessError, RunContext, RunReport};
use script_manager::scheduler::{ProcessHandle, Scheduler};
use script_manager::telemetry::{Metrics, resources};

struct Noop;

impl Process for Noop {
    fn run(&self, _ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(async { Ok(RunReport::default()) })
    }
}

fn rss_mb() -> f64 {
    resources::resident_bytes() as f64 / 1048576.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // cargo adds `--bench`; ignore flags.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let interval: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let duration: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let handles: Vec<ProcessHandle> = (0..n)
            .map(|i| {
                let config = ProcessConfig {
                    interval_seconds: interval,
                    timeout_seconds: interval,
                    max_api_calls_per_minute: 0,
                    ..process_defaults("noop")
                };
                let p: Arc<dyn Process> = Arc::new(Noop);
                ProcessHandle::new(&format!("job_{i}"), config, Some(p))
            })
            .collect();
        let scheduler = Scheduler::new(handles, Arc::new(Metrics::new()), Arc::new(ProcessCalls::new([])), true, 1);
        // Large enough that no record is dropped: the bench counts every run.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 20);
        scheduler.record_runs_to(tx);
        let collector = tokio::spawn(async move {
            let mut lags = Vec::new();
            while let Some(r) = rx.recv().await {
                lags.push(r.lag_seconds * 1000.0);
            }
            lags
        });
        let (cpu0, wall0) = (resources::cpu_seconds(), Instant::now());
        scheduler.start();
        // Half an interval past the end, so the tick at DURATION_S is counted whatever the jitter.
        tokio::time::sleep(Duration::from_secs_f64(duration + interval / 2.0)).await;
        let (cpu1, wall1) = (resources::cpu_seconds(), Instant::now());
        let rss = rss_mb();
        scheduler.shutdown(Duration::from_secs(5)).await;
        drop(scheduler);
        let mut lags = collector.await.unwrap();
        lags.sort_by(|a, b| a.total_cmp(b));
        // Ticks at 0, interval, 2×interval, … up to DURATION_S.
        let per_job = (duration / interval).floor() as usize + 1;
        let expected = per_job * n;
        let runs = lags.len();
        println!(
            "script-manager jobs={n} runs={runs} lag_ms p50={:.3} p99={:.3} max={:.3} cpu_per_s={:.4} rss_mb={:.1} missed={}",
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.last().copied().unwrap_or(f64::NAN),
            (cpu1 - cpu0) / (wall1 - wall0).as_secs_f64(),
            rss,
            expected.saturating_sub(runs),
        );
    });
}
