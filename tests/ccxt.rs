//! A third-party Binance client drives the simulator as if it were the venue:
//! ccxt's `binanceusdm` (PyPI; `scripts/test` installs it) runs
//! `tests/ccxt/binanceusdm.py` against a simulator in its own process.

mod common;

use std::process::Command;

use common::SimProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_binanceusdm_drives_the_simulator_like_the_venue() {
    let has_ccxt = Command::new("python3")
        .args(["-c", "import ccxt"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_ccxt,
        "this test needs python3 with ccxt: run scripts/test, which installs it (or pip install ccxt)"
    );
    let sim = SimProcess::start("fills_per_minute = 0.0\nvolatility = 0.0").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ccxt/binanceusdm.py");
    let base = sim.base.clone();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(base).output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ccxt checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all ccxt checks passed"), "{stdout}");
}
