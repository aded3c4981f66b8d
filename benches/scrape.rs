//! `cargo bench --bench scrape`
//!
//! Time and bytes allocated to encode `/metrics` (Prometheus text and
//! OpenMetrics) with 6, 100 and 1000 configured processes, every series
//! populated (each process has run once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use script_manager::config::process_defaults;
use script_manager::telemetry::Metrics;
use script_manager::telemetry::metrics::{ErrorLabels, Outcome, RunLabels, TraceLabels, labels};

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
    for n in [6usize, 100, 1000] {
        let m = Metrics::new();
        for i in 0..n {
            let id = format!("process_{i}");
            m.init_process(&id, &process_defaults("command"));
            m.runs
                .get_or_create(&RunLabels {
                    process: id.clone(),
                    outcome: Outcome::success,
                })
                .inc();
            m.errors
                .get_or_create(&ErrorLabels {
                    process: id.clone(),
                    kind: "timeout",
                })
                .inc();
            m.duration.get_or_create(&labels(&id)).observe(
                0.042,
                Some(TraceLabels {
                    trace_id: format!("{i:032x}"),
                }),
                None,
            );
            m.lag.get_or_create(&labels(&id)).observe(0.0007);
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
