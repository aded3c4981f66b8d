//! `cargo bench --bench scrape`
//!
//! Time and bytes allocated to encode `/metrics` (Prometheus text and
//! OpenMetrics) with 6, 100 and 1000 configured processes, every series
//! populated (each process has run once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use script_manager::process::ErrorKind;
use script_manager::telemetry::process::{FinishedRun, Outcome};
use script_manager::telemetry::{Metrics, ProcessInfo};

struct Counting;
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let info = ProcessInfo {
        enabled: true,
        interval_seconds: 30.0,
        timeout_seconds: 30.0,
        priority: 3,
        retry_count: 1,
        max_api_calls_per_minute: 60,
        error_kinds: &ErrorKind::NAMES,
    };
    for n in [6usize, 100, 1000] {
        let m = Metrics::new();
        for i in 0..n {
            let id = format!("process_{i}");
            let series = m.init_process(&id, &info);
            // One failed run: every run, error, duration and lag series has a value.
            m.process.finished(
                &series,
                FinishedRun {
                    outcome: Outcome::timeout,
                    duration_seconds: 0.042,
                    lag_seconds: Some(0.0007),
                    trace_id: Some(format!("{i:032x}")),
                    error_kind: Some("timeout"),
                    child: None,
                    process: &id,
                },
            );
        }
        for (format, encode) in [
            ("prometheus", Metrics::encode_prometheus as fn(&Metrics) -> String),
            ("openmetrics", Metrics::encode_openmetrics),
        ] {
            let _warm = encode(&m);
            let rounds = if n >= 1000 { 50 } else { 300 };
            let before = ALLOCATED.load(Ordering::Relaxed);
            let started = Instant::now();
            let mut bytes = 0;
            for _ in 0..rounds {
                bytes = std::hint::black_box(encode(&m)).len();
            }
            let per = started.elapsed().as_secs_f64() * 1e3 / rounds as f64;
            let allocated = (ALLOCATED.load(Ordering::Relaxed) - before) / rounds as u64;
            println!(
                "scrape processes={n} format={format} encode_ms={per:.3} allocated_kib={:.0} body_kib={:.0}",
                allocated as f64 / 1024.0,
                bytes as f64 / 1024.0
            );
        }
    }
}
