//! Scheduling beyond fixed intervals, on the real binary with `command`
//! processes that write down when they start and end (the evidence comes from
//! the children, not from the scheduler): chains, exclusion, live overrides,
//! reload.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Service, TOKEN, sample};
use serde_json::json;

/// A command process that appends `<id> start <t>` and `<id> end <t>` (Unix
/// seconds) to `log`, sleeping `seconds` between the two.
fn job(id: &str, log: &Path, seconds: f64, extra: &str) -> String {
    format!(
        r#"
[processes.{id}]
kind = "command"
command = "sh"
args = ["-c", "echo {id} start $(date +%s.%N) >> {log}; sleep {seconds}; echo {id} end $(date +%s.%N) >> {log}"]
timeout_seconds = 10
{extra}
"#,
        log = log.display()
    )
}

const BASE: &str = r#"
builtin_processes = false
[exchange]
streams = false
[demo]
enabled = false
"#;

/// (process, start, end) of every finished run in `log`, by start.
fn runs(log: &Path) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open: std::collections::HashMap<String, f64> = Default::default();
    let mut done = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [id, what, t] = parts[..] else { continue };
        let t: f64 = t.parse().unwrap();
        match what {
            "start" => {
                assert!(
                    open.insert(id.to_string(), t).is_none(),
                    "{id} started twice at once:\n{text}"
                );
            }
            _ => done.push((id.to_string(), open.remove(id).expect("an end after a start"), t)),
        }
    }
    done.sort_by(|a, b| a.1.total_cmp(&b.1));
    done
}

fn assert_no_overlap(runs: &[(String, f64, f64)], ids: &[&str]) {
    let mine: Vec<_> = runs.iter().filter(|r| ids.contains(&r.0.as_str())).collect();
    for pair in mine.windows(2) {
        assert!(pair[1].1 >= pair[0].2, "{:?} and {:?} overlap", pair[0], pair[1]);
    }
}

async fn start(config: &str) -> Service {
    common::start(config, &[("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN", TOKEN)]).await
}

#[tokio::test]
async fn a_chain_runs_in_order_after_each_leader_and_never_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let config = format!(
        "{BASE}{}{}{}",
        job("a", &log, 0.2, "interval_seconds = 1"),
        job("b", &log, 0.2, "after = [\"a\"]\ninterval_seconds = 30"),
        job("c", &log, 0.2, "after = [\"b\"]\ninterval_seconds = 30"),
    );
    let svc = start(&config).await;
    svc.wait_for("b to wait for a", Duration::from_secs(5), |s| {
        s["processes"]["c"]["waiting_for"] == json!(["b"])
    })
    .await;
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let runs = runs(&log);
    let order: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert!(order.len() >= 12, "{runs:?}");
    for (i, step) in order.chunks(3).filter(|c| c.len() == 3).enumerate() {
        assert_eq!(step, ["a", "b", "c"], "round {i}: {runs:?}");
    }
    assert_no_overlap(&runs, &["a", "b", "c"]);
    let status = svc.get_json("/api/script-manager/runs?process=b&limit=5").await;
    assert!(
        status.as_array().unwrap().iter().all(|r| r["trigger"] == "after"),
        "{status}"
    );
}

#[tokio::test]
async fn exclusive_processes_never_overlap_and_their_skips_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let config = format!(
        "{BASE}{}{}",
        job("x", &log, 0.7, "interval_seconds = 1\nexclusive_with = [\"y\"]"),
        job("y", &log, 0.7, "interval_seconds = 1\nstart_offset_seconds = 0.5"),
    );
    let svc = start(&config).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let runs = runs(&log);
    assert!(runs.iter().filter(|r| r.0 == "x").count() >= 3, "{runs:?}");
    assert!(runs.iter().filter(|r| r.0 == "y").count() >= 3, "{runs:?}");
    assert_no_overlap(&runs, &["x", "y"]);
    let metrics = svc.metrics().await;
    let skipped: f64 = ["x", "y"]
        .iter()
        .flat_map(|id| ["overlap", "exclusive"].map(move |r| (id, r)))
        .map(|(id, reason)| {
            sample(
                &metrics,
                &format!(r#"script_manager_process_skipped_runs_total{{process="{id}",reason="{reason}"}}"#),
            )
            .unwrap()
        })
        .sum();
    assert!(skipped >= 2.0, "1.4 s of work per second cannot all run: {skipped}");
}

#[test]
fn a_cycle_or_an_unknown_name_exits_2_naming_them() {
    let config = format!(
        "{BASE}{}{}{}",
        job("a", Path::new("/dev/null"), 0.0, "after = [\"c\"]"),
        job(
            "b",
            Path::new("/dev/null"),
            0.0,
            "after = [\"a\"]\nexclusive_with = [\"ghost\"]"
        ),
        job("c", Path::new("/dev/null"), 0.0, "after = [\"b\"]"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("processes.a.after") && stderr.contains("a → c → b → a"),
        "{stderr}"
    );
    assert!(
        stderr.contains("processes.b.exclusive_with") && stderr.contains("`ghost`"),
        "{stderr}"
    );
}

async fn patch(svc: &Service, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = svc
        .http
        .patch(svc.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Starts of `id` in `log` at or after `from` (Unix seconds).
fn starts_after(log: &Path, id: &str, from: f64) -> usize {
    runs(log).iter().filter(|r| r.0 == id && r.1 >= from).count()
}

fn now() -> f64 {
    script_manager::clock::unix_seconds()
}

#[tokio::test]
async fn an_interval_changed_live_takes_effect_within_one_old_interval_survives_a_restart_and_reverts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let store = format!("sqlite://{}/store.db", dir.path().display());
    let config = format!("{BASE}{}", job("p", &log, 0.0, "interval_seconds = 2"));
    let env = [
        ("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN", TOKEN),
        ("SCRIPT_MANAGER_STORE__URL", store.as_str()),
    ];
    let mut svc = common::start(&config, &env).await;
    let (status, body) = patch(&svc, "/api/script-manager/processes/p", json!({"interval_seconds": -1})).await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("interval_seconds:"),
        "{body}"
    );
    let (status, _) = patch(&svc, "/api/script-manager/processes/p", json!({"command": "rm"})).await;
    assert_eq!(status, 422, "only scheduling settings change at run time");
    let r = svc
        .http
        .patch(svc.url("/api/script-manager/processes/p"))
        .json(&json!({"interval_seconds": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "the admin token is required");

    let (status, body) = patch(
        &svc,
        "/api/script-manager/processes/p",
        json!({"interval_seconds": 0.5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["interval_seconds"], 0.5);
    assert_eq!(body["overrides"]["set_by"], "admin");
    assert_eq!(body["overrides"]["values"], json!({"interval_seconds": 0.5}));
    let changed = now();
    // Within one old interval (2 s) the new one is in force: 2 s later, at
    // least 2 runs at 0.5 s have happened (the old pace would allow one).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fast = starts_after(&log, "p", changed + 2.0);
    assert!(
        fast >= 3,
        "{fast} runs in the 2 s after the first old interval: {:?}",
        runs(&log)
    );
    let metrics = svc.metrics().await;
    assert_eq!(
        sample(&metrics, r#"script_manager_process_interval_seconds{process="p"}"#),
        Some(0.5)
    );

    svc.stop(Duration::from_secs(10));
    let svc = common::start(&config, &env).await;
    let doc = svc.get_json("/api/script-manager/processes/p").await;
    assert_eq!(doc["interval_seconds"], 0.5, "kept across a restart: {doc}");
    let restarted = now();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(starts_after(&log, "p", restarted) >= 4, "{:?}", runs(&log));

    let r = svc
        .http
        .delete(svc.url("/api/script-manager/processes/p/overrides"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (doc["interval_seconds"].clone(), doc["overrides"].clone()),
        (json!(2.0), json!(null))
    );
    let reverted = now();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let slow = starts_after(&log, "p", reverted + 0.6);
    assert!(slow <= 2, "back at 2 s: {slow} runs in 3.9 s: {:?}", runs(&log));
}

/// Sends SIGHUP and waits for the log line that says how it went.
async fn sighup(svc: &Service, expect: &str) {
    let before = svc.log().matches(expect).count();
    svc.signal(libc::SIGHUP);
    for _ in 0..100 {
        if svc.log().matches(expect).count() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no `{expect}` after SIGHUP:\n{}", svc.log());
}

#[tokio::test]
async fn sighup_applies_a_valid_file_and_refuses_a_broken_one_without_losing_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let first = format!(
        "{BASE}{}{}{}",
        job("steady", &log, 0.0, "interval_seconds = 1"),
        job("doomed", &log, 0.0, "interval_seconds = 1"),
        job("changed", &log, 0.0, "interval_seconds = 3"),
    );
    let svc = start(&first).await;
    let config = svc.dir.path().join("config.toml");
    let started = now();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    std::fs::write(&config, format!("{first}\n[processes.steady]\nnonsense = [")).unwrap();
    sighup(&svc, "configuration reload refused").await;
    let metrics = svc.metrics().await;
    assert_eq!(
        sample(&metrics, "script_manager_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(metrics.contains(r#"process="doomed""#), "nothing changed");

    let second = format!(
        "{BASE}{}{}{}",
        job("steady", &log, 0.0, "interval_seconds = 1"),
        job("changed", &log, 0.0, "interval_seconds = 0.5"),
        job("fresh", &log, 0.0, "interval_seconds = 1"),
    );
    std::fs::write(&config, second).unwrap();
    sighup(&svc, "configuration reloaded").await;
    let reloaded = now();
    let metrics = svc.metrics().await;
    assert_eq!(
        sample(&metrics, "script_manager_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(!metrics.contains(r#"process="doomed""#), "its series are gone");
    common::promtool_accepts(&metrics);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let ended = now();

    let runs = runs(&log);
    let steady: Vec<f64> = runs.iter().filter(|r| r.0 == "steady").map(|r| r.1).collect();
    assert!(steady.len() as f64 >= (ended - started).floor(), "{steady:?}");
    for pair in steady.windows(2) {
        assert!(
            (pair[1] - pair[0] - 1.0).abs() < 0.3,
            "steady stays on its 1 s grid, no tick lost or doubled: {steady:?}"
        );
    }
    assert!(runs.iter().filter(|r| r.0 == "fresh").count() >= 2, "{runs:?}");
    assert_eq!(
        runs.iter().filter(|r| r.0 == "doomed" && r.1 > reloaded + 0.1).count(),
        0,
        "{runs:?}"
    );
    assert!(
        runs.iter().filter(|r| r.0 == "changed" && r.1 > reloaded).count() >= 3,
        "{runs:?}"
    );

    let r = svc
        .http
        .post(svc.url("/-/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["processes"]["added"], json!([]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_two_replicas_on_postgresql_the_chain_and_the_exclusion_hold() {
    let sim = common::SimProcess::start("").await;
    let store = common::TestStore::new(common::Backend::Postgres);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    // y on 2 s: the exclusive pair contends on every other tick and is idle
    // between, so it can be handed over (a group moves when none of it runs or waits).
    let config = format!(
        "builtin_processes = false\n[demo]\nenabled = false\n\
         [ha]\nenabled = true\nlease_margin_seconds = 1\nheartbeat_seconds = 0.25\n{}{}{}{}{}{}",
        sim.polling_exchange_toml(),
        job("a", &log, 0.2, "interval_seconds = 1"),
        job("b", &log, 0.2, "after = [\"a\"]\ninterval_seconds = 30"),
        job("c", &log, 0.2, "after = [\"b\"]\ninterval_seconds = 30"),
        job("x", &log, 0.7, "interval_seconds = 1\nexclusive_with = [\"y\"]"),
        job("y", &log, 0.7, "interval_seconds = 2\nstart_offset_seconds = 0.5"),
    );
    let mut replicas = Vec::new();
    // The first replica holds both groups; the second joins and gets its share
    // (one group) by hand-over while the chain and the exclusion keep holding.
    // (With these names the one joining owns the chain.)
    for name in ["r2", "r1"] {
        let env = [
            ("SCRIPT_MANAGER_STORE__URL", store.url.as_str()),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", name),
            ("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN", TOKEN),
        ];
        replicas.push(common::start(&config, &env).await);
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let settled = |status: &serde_json::Value| {
        let counts: Vec<u64> = status["ha"]["replicas"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["count"].as_u64()).collect())
            .unwrap_or_default();
        counts.len() == 2 && counts.iter().all(|n| *n >= 2)
    };
    replicas[1]
        .wait_for("each replica to hold one group", Duration::from_secs(15), settled)
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let runs = runs(&log);
    let chain: Vec<&str> = runs
        .iter()
        .map(|r| r.0.as_str())
        .filter(|id| ["a", "b", "c"].contains(id))
        .collect();
    assert!(chain.len() >= 15, "{runs:?}");
    // From the first a on, rounds of a, b, c: a chain runs in order, each step once.
    let from = chain.iter().position(|id| *id == "a").unwrap();
    for (i, step) in chain[from..].chunks(3).filter(|c| c.len() == 3).enumerate() {
        assert_eq!(step, ["a", "b", "c"], "round {i}: {runs:?}");
    }
    assert_no_overlap(&runs, &["a", "b", "c"]);
    assert_no_overlap(&runs, &["x", "y"]);
    assert!(runs.iter().filter(|r| r.0 == "y").count() >= 3, "{runs:?}");
    // Each group is held by one replica, as both replicas see it, and the two
    // groups by different replicas (their fair shares).
    for svc in &replicas {
        let status = svc.get_json("/api/script-manager/status").await;
        let mut holders_of_groups = Vec::new();
        for group in [["a", "b", "c"].as_slice(), &["x", "y"]] {
            let holders: std::collections::BTreeSet<String> = group
                .iter()
                .filter_map(|id| status["processes"][id]["lease"]["holder"].as_str().map(String::from))
                .collect();
            assert_eq!(holders.len(), 1, "{group:?} held by {holders:?}");
            holders_of_groups.extend(holders);
        }
        assert_ne!(holders_of_groups[0], holders_of_groups[1], "{}", status["ha"]);
    }
    // An override made through one replica is stored and followed by the other.
    let r = replicas[0]
        .http
        .patch(replicas[0].url("/api/script-manager/processes/y"))
        .bearer_auth(TOKEN)
        .json(&json!({"interval_seconds": 2.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    replicas[1]
        .wait_get(
            "the other replica to follow the override",
            "/api/script-manager/processes/y",
            Duration::from_secs(5),
            |doc| doc["interval_seconds"] == 2.5 && doc["overrides"]["set_by"] == "admin",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_another_client_on_70_percent_of_the_weight_less_urgent_work_stretches_and_nothing_is_refused() {
    under_another_clients_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ha_intervals_stretch_by_whole_steps_of_the_shared_grid() {
    under_another_clients_load(true).await;
}

/// Another client spends 70 % of the venue's weight: less urgent processes
/// stretch, level_monitor and priority 1 keep their intervals, nothing is
/// refused. Under HA (`ha`) a stretch is a whole number of the grid's steps,
/// and the runs' own slots show the skipped grid points.
async fn under_another_clients_load(ha: bool) {
    let sim = common::SimProcess::start("weight_limit = 300\nfills_per_minute = 6.0").await;
    // Another client of the same API key spends 70 % of the venue's limit every minute.
    let other = {
        let (http, url) = (sim.http.clone(), format!("{}/sim/consume", sim.base));
        tokio::spawn(async move {
            let mut minute = -1;
            loop {
                let now = (script_manager::clock::now_ms() / 60_000) as i64;
                if now != minute {
                    minute = now;
                    let _ = http.post(&url).json(&json!({"weight": 210})).send().await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let store = ha.then(|| common::TestStore::new(common::Backend::Postgres));
    let ha_toml = if ha {
        "[ha]\nenabled = true\nheartbeat_seconds = 0.25\n"
    } else {
        ""
    };
    // Under HA on 1 s, so that stretched runs come often enough to count grid points.
    let interval = if ha { 1.0 } else { 5.0 };
    let config = format!(
        "[demo]\nenabled = true\n{ha_toml}{}\n[processes.notification_check]\nstart_offset_seconds = 0\n\
         interval_seconds = {interval}\n",
        sim.polling_exchange_toml()
    );
    let svc = match &store {
        Some(store) => {
            let env = [
                ("SCRIPT_MANAGER_STORE__URL", store.url.as_str()),
                ("SCRIPT_MANAGER_HA__REPLICA_ID", "solo"),
                ("SCRIPT_MANAGER_HTTP__ADMIN_TOKEN", TOKEN),
            ];
            common::start(&config, &env).await
        }
        None => start(&config).await,
    };
    let effective = |m: &str, id: &str| {
        sample(
            m,
            &format!(r#"script_manager_process_effective_interval_seconds{{process="{id}"}}"#),
        )
        .unwrap()
    };
    let mut stretched = 0.0;
    for _ in 0..100 {
        let m = svc.metrics().await;
        stretched = effective(&m, "notification_check");
        if stretched > interval {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stretched > interval,
        "notification_check (priority 2, {interval} s) stretched: {stretched}"
    );
    if ha {
        assert_eq!(stretched.fract(), 0.0, "a whole number of 1 s grid steps: {stretched}");
    }
    let before = svc.get_json("/api/script-manager/processes/level_monitor").await["metrics"]["total_runs"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m = svc.metrics().await;
    assert_eq!(effective(&m, "level_monitor"), 2.0, "level_monitor keeps its interval");
    assert_eq!(effective(&m, "trade_sync"), 30.0, "priority 1 keeps its interval");
    let after = svc.get_json("/api/script-manager/processes/level_monitor").await["metrics"]["total_runs"]
        .as_u64()
        .unwrap();
    assert!(
        after - before >= 4,
        "level_monitor ran {} times in 10 s at 2 s",
        after - before
    );
    if ha {
        // The venue's weight (and the other client's spend) starts again at
        // each minute's turn, and the budget is relaxed until our next call
        // sees it spent again: watch the runs between seconds 8 and 58.
        let second = (script_manager::clock::now_ms() / 1000) % 60;
        if !(8..=45).contains(&second) {
            tokio::time::sleep(Duration::from_secs(((68 - second) % 60) as u64)).await;
        }
        let mut tight = false;
        for _ in 0..50 {
            if effective(&svc.metrics().await, "notification_check") > interval {
                tight = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(tight, "notification_check stretched again after the minute's turn");
        // On a 1 s grid with no offset a slot is a unix second (database clock).
        let from = script_manager::clock::now_ms() / 1000 + 1;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let runs = svc
            .get_json("/api/script-manager/runs?process=notification_check&limit=100")
            .await;
        let mut slots: Vec<i64> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["slot"].as_i64())
            .filter(|s| *s > from)
            .collect();
        slots.sort_unstable();
        assert!(slots.len() >= 2, "{runs}");
        // The runs since, by their grid slots (1 s apart): grid points are skipped.
        let steps: Vec<i64> = slots.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            steps.iter().all(|d| *d >= 2),
            "stretched runs skip grid points: {slots:?}"
        );
    }
    let meter = sim.get("/sim/meter").await;
    assert!(meter["answers"].get("429").is_none(), "no 429: {meter}");
    assert!(meter["answers"].get("418").is_none(), "no 418: {meter}");
    other.abort();
}
