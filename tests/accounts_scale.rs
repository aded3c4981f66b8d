//! Many accounts (issue 23): the per-account series stay bounded at 10 000
//! accounts, and the real binary with 300 accounts on the embedded
//! simulator syncs every one without a run timing out.

mod common;

use std::time::Duration;

use script_manager::processes::{ACCOUNT_PROCESSES, SYMBOL_PROCESSES};
use script_manager::telemetry::Metrics;

const MB: usize = 1024 * 1024;

/// 10 000 accounts with a user stream each, 40 of them failing: `/metrics`
/// stays under 1 MB in both formats, healthy accounts have no series of
/// their own, the failing ones do, the aggregates count them all, and
/// promtool accepts the text. A size, not a time: nothing here can flake.
#[test]
fn metrics_stay_under_a_megabyte_at_ten_thousand_accounts() {
    let m = Metrics::new();
    let names: Vec<String> = (0..10_000).map(|i| format!("acct-{i:05}")).collect();
    m.domain.init_accounts(&ACCOUNT_PROCESSES, &SYMBOL_PROCESSES, &names);
    for name in &names {
        m.stream.init("user", name);
        m.stream.up("user", name, true);
        m.stream.message("user", name, 0);
        for process in ACCOUNT_PROCESSES {
            m.domain.account_synced(process, name);
        }
    }
    m.stream.init("book", "");
    for name in names.iter().step_by(250) {
        m.domain.account_failed("trade_sync", name);
        m.stream.listen_key(name, false);
    }
    let text = m.encode_prometheus();
    let open = m.encode_openmetrics();
    eprintln!(
        "10 000 accounts, limit 100: {} bytes (text), {} bytes (OpenMetrics)",
        text.len(),
        open.len()
    );
    assert!(
        text.len() < MB && open.len() < MB,
        "{} / {} bytes",
        text.len(),
        open.len()
    );
    let healthy = r#"account="acct-00001""#;
    assert!(!text.contains(healthy), "a healthy account has no series of its own");
    for series in [
        r#"script_manager_account_errors_total{process="trade_sync",account="acct-00250"} 1"#,
        r#"script_manager_stream_up{stream="user",account="acct-00250"} 1"#,
        r#"script_manager_stream_listen_key_renewals_total{account="acct-00250",result="failed"} 1"#,
        r#"script_manager_stream_up{stream="book",account=""} 0"#,
        r#"script_manager_accounts{state="failing"} 40"#,
        r#"script_manager_accounts{state="ok"} 9960"#,
        r#"script_manager_account_series_limited 1"#,
        r#"script_manager_account_failures_total{process="trade_sync"} 40"#,
        r#"script_manager_stream_user_messages_total 10000"#,
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    common::promtool_accepts(&text);

    // Without the limit: every account's series, as before (what the limit saves).
    m.accounts.set_limit(usize::MAX);
    let unbounded = m.encode_prometheus();
    eprintln!("10 000 accounts, no limit: {} bytes", unbounded.len());
    assert!(unbounded.contains(healthy));
    assert!(unbounded.contains("script_manager_account_series_limited 0"));
}

/// 300 accounts in the file, the embedded simulator, SQLite, streams off (so
/// trade_sync and position_sync poll every account over REST: the heaviest
/// case for them). Sized for ~1–2 minutes on 2 cores: the simulator's
/// weight limit is raised to 200 000/min (at the venue's 2 400 the first
/// full sweep of 300 accounts alone takes several minutes of weight), the
/// account processes work 16 accounts at a time, and both run every 30 s
/// (position_sync's default is 60 s). Every account ends with its positions
/// (position_sync), its fills (trade_sync) and its dashboard (dashboard_sync)
/// in the store, no run of them timed out, and the per-account series are in
/// their bounded mode (limit 100): healthy accounts absent, aggregates present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_accounts_are_all_synced_and_no_run_times_out() {
    const N: usize = 300;
    let mut config = String::from(
        "[exchange]\nkind = \"simulated\"\nstreams = false\n\
         [exchange.simulator]\nweight_limit = 200000\n\
         [demo]\nenabled = false\n\
         [processes.trade_sync]\naccount_concurrency = 16\n\
         [processes.position_sync]\ninterval_seconds = 30\naccount_concurrency = 16\n",
    );
    for i in 0..N {
        config.push_str(&format!(
            "[exchange.accounts.acct-{i:03}]\napi_key = \"key-{i:03}\"\napi_secret = \"secret-{i:03}\"\n"
        ));
    }
    // The run summaries ("synced N of M accounts, K still due") are logged at debug.
    let svc = common::start(
        &config,
        &[("SCRIPT_MANAGER_LOG_LEVEL", "script_manager::scheduler=debug,info")],
    )
    .await;
    let names: Vec<String> = (0..N).map(|i| format!("acct-{i:03}")).collect();
    // Every account has its positions (3 each in the simulator) and its fills
    // stored: position_sync and trade_sync each reached every account.
    let accounts_in = |doc: &serde_json::Value| -> usize {
        doc.as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["account"].as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            })
            .unwrap_or(0)
    };
    svc.wait_get(
        "positions of every account",
        "/api/positions",
        Duration::from_secs(150),
        |d| accounts_in(d) == N,
    )
    .await;
    svc.wait_get(
        "fills of every account",
        "/api/trades?limit=10000",
        Duration::from_secs(150),
        |d| accounts_in(d) == N,
    )
    .await;
    // Every account has a dashboard snapshot: dashboard_sync ran for it, after trade_sync did.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut missing = Vec::new();
        for name in &names {
            let r = svc
                .http
                .get(svc.url(&format!("/api/dashboard/{name}")))
                .send()
                .await
                .unwrap();
            if !r.status().is_success() {
                missing.push(name.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} accounts without a dashboard, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            svc.log()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The runs say how far they got ("synced N of 300 accounts, K still due").
    let log = svc.log();
    for process in ["trade_sync", "position_sync", "dashboard_sync"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("process.id={process}")) && l.contains(&format!("of {N} accounts"))),
            "{process}: no run summary"
        );
    }
    // No run of the account processes timed out.
    for process in ["trade_sync", "position_sync", "dashboard_sync"] {
        let runs = svc
            .get_json(&format!("/api/script-manager/runs?process={process}&limit=1000"))
            .await;
        let runs = runs.as_array().cloned().unwrap_or_default();
        assert!(!runs.is_empty(), "{process}: no runs recorded");
        for run in &runs {
            assert_ne!(run["outcome"], "timeout", "{process}: {run}");
            assert_ne!(run["error_kind"], "timeout", "{process}: {run}");
        }
    }
    let metrics = svc.metrics().await;
    assert!(
        metrics.contains("script_manager_account_series_limited 1"),
        "300 accounts is above the default limit of 100"
    );
    assert_eq!(
        common::sample(&metrics, r#"script_manager_accounts{state="ok"}"#),
        Some(N as f64),
        "every account ok"
    );
    assert!(
        !metrics.contains(r#"account="acct-000""#),
        "healthy accounts have no series of their own"
    );
    common::promtool_accepts(&metrics);
}
