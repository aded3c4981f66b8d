//! Scale-out: real replicas on PostgreSQL share the processes evenly (each
//! ⌊P/N⌋ or ⌈P/N⌉: 4/4/4 on three, 3/3/3/3 on four), hand them over at tick
//! boundaries when a replica joins, and spread a killed replica's share. The evidence is what the `command` processes write down
//! themselves: one line per run with the time it started.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Backend, Service, SimProcess, TestStore};
use serde_json::Value;

const PROCESSES: usize = 12;
/// A count that 3 and 4 replicas do not divide: the shares must still be within one.
const UNEVEN: usize = 10;
/// A run's timeout (1 s) + the lease margin (1 s).
const LEASE_S: f64 = 2.0;

fn config(sim: &SimProcess, log: &Path, processes: usize) -> String {
    let mut c = format!(
        "builtin_processes = false\n[demo]\nenabled = false\n\
         [ha]\nenabled = true\nlease_margin_seconds = 1\nheartbeat_seconds = 0.25\n{}",
        sim.polling_exchange_toml()
    );
    for i in 0..processes {
        c.push_str(&format!(
            "[processes.p{i:02}]\nkind = \"command\"\ncommand = \"sh\"\n\
             args = [\"-c\", \"echo p{i:02} $(date +%s.%N) >> {}\"]\n\
             interval_seconds = 1\ntimeout_seconds = 1\n",
            log.display()
        ));
    }
    c
}

async fn replica(config: &str, store: &TestStore, name: &str) -> Service {
    common::start(
        config,
        &[
            ("SCRIPT_MANAGER_STORE__URL", store.url.as_str()),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", name),
        ],
    )
    .await
}

/// Replica → processes held, as `svc`'s status document shows it.
async fn shares(svc: &Service) -> BTreeMap<String, usize> {
    let status = svc.get_json("/api/script-manager/status").await;
    status["ha"]["replicas"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| {
            (
                r["replica"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

/// Waits until `svc` sees exactly `names` sharing all `PROCESSES`, each
/// within `range` (30 s at most: a share that never reaches its quota fails).
async fn settled(svc: &Service, names: &[&str], range: std::ops::RangeInclusive<usize>) -> BTreeMap<String, usize> {
    settled_of(svc, PROCESSES, names, range).await
}

/// [`settled`] for `total` processes.
async fn settled_of(
    svc: &Service,
    total: usize,
    names: &[&str],
    range: std::ops::RangeInclusive<usize>,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = shares(svc).await;
        let live: BTreeSet<&str> = s.iter().filter(|(_, n)| **n > 0).map(|(r, _)| r.as_str()).collect();
        if live == names.iter().copied().collect()
            && s.values().sum::<usize>() == total
            && s.iter()
                .filter(|(r, _)| names.contains(&r.as_str()))
                .all(|(_, n)| range.contains(n))
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "shares did not settle to {names:?} in {range:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// process → the grid slots (whole seconds) its runs were for, in order.
fn slots(log: &Path) -> BTreeMap<String, Vec<i64>> {
    let mut all: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap().lines() {
        let (id, t) = line.split_once(' ').unwrap();
        // A run starts a few ms before its tick (clocks) to a few hundred ms after (a deferred claim).
        all.entry(id.to_string())
            .or_default()
            .push((t.parse::<f64>().unwrap() - 0.2).round() as i64);
    }
    for v in all.values_mut() {
        v.sort_unstable();
    }
    all
}

fn now_s() -> f64 {
    script_manager::clock::unix_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_work_hand_it_over_without_losing_a_tick_and_spread_a_dead_ones_share() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Postgres);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let config = config(&sim, &log, PROCESSES);
    let r1 = replica(&config, &store, "r1").await;
    let _r2 = replica(&config, &store, "r2").await;
    let r3 = replica(&config, &store, "r3").await;
    settled(&r1, &["r1", "r2", "r3"], 4..=4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady_from = now_s();
    let three = settled(&r3, &["r1", "r2", "r3"], 4..=4).await;
    let metrics = r3.metrics().await;
    let held = common::sample(&metrics, "script_manager_ha_leases_held").unwrap() as usize;
    assert_eq!(held, three["r3"], "the gauge says what the status says: {three:?}");
    common::promtool_accepts(&metrics);

    // A 4th replica joins: it gets a share, handed over at tick boundaries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let joined_at = now_s();
    let r4 = replica(&config, &store, "r4").await;
    let four = settled(&r4, &["r1", "r2", "r3", "r4"], 3..=3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = now_s();
    let rebalanced = common::sample(
        &r1.metrics().await,
        r#"script_manager_ha_handovers_total{reason="rebalance"}"#,
    )
    .unwrap()
        + common::sample(
            &r3.metrics().await,
            r#"script_manager_ha_handovers_total{reason="rebalance"}"#,
        )
        .unwrap();
    assert!(rebalanced >= 1.0, "r1 or r3 handed something over: {four:?}");

    // Every slot from before the join until now ran exactly once.
    let from = steady_from.ceil() as i64;
    assert!(from < joined_at.floor() as i64);
    let until = before_kill.floor() as i64 - 1;
    for (id, seen) in slots(&log) {
        let window: Vec<i64> = seen.iter().copied().filter(|s| (from..=until).contains(s)).collect();
        let expected: Vec<i64> = (from..=until).collect();
        assert_eq!(window, expected, "{id}: every slot once across the join");
    }

    // SIGKILL r2: its share is spread over the others within one interval plus the lease.
    let mut r2 = _r2;
    let orphans: Vec<String> = r1.get_json("/api/script-manager/status").await["ha"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["replica"] == "r2")
        .map(|r| {
            r["holds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap();
    assert!(!orphans.is_empty());
    let killed_at = now_s();
    r2.kill();
    settled(&r1, &["r1", "r3", "r4"], 4..=4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = slots(&log);
    let killed = killed_at.floor() as i64;
    for id in &orphans {
        let resumed = all[id].iter().copied().find(|s| *s > killed).expect("it runs again");
        let gap = (resumed - killed) as f64;
        assert!(
            gap <= 1.0 + LEASE_S + 1.0,
            "{id} resumed {gap} s after the kill (interval 1 s + lease {LEASE_S} s)"
        );
    }
    // Nothing ran twice in any slot over the whole test.
    for (id, seen) in &all {
        let unique: BTreeSet<&i64> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{id} ran twice in a slot: {seen:?}");
    }
    let status: Value = r4.get_json("/api/script-manager/status").await;
    assert_eq!(status["ha"]["replicas"].as_array().unwrap().len(), 3, "{status:#}");
}

/// 10 processes: 3 or 4 on each of three replicas (not 2/4/4, which a cap of
/// ⌈P/N⌉ alone allows), then 2 or 3 on each of four (not 3/3/3/1), with every
/// slot run once across the join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uneven_count_is_shared_within_one_on_three_replicas_and_on_four() {
    let sim = SimProcess::start("").await;
    let store = TestStore::new(Backend::Postgres);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let config = config(&sim, &log, UNEVEN);
    let r1 = replica(&config, &store, "r1").await;
    let _r2 = replica(&config, &store, "r2").await;
    let _r3 = replica(&config, &store, "r3").await;
    settled_of(&r1, UNEVEN, &["r1", "r2", "r3"], 3..=4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady_from = now_s();
    let r4 = replica(&config, &store, "r4").await;
    settled_of(&r4, UNEVEN, &["r1", "r2", "r3", "r4"], 2..=3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let until = now_s().floor() as i64 - 1;
    let from = steady_from.ceil() as i64;
    let all = slots(&log);
    assert_eq!(all.len(), UNEVEN, "every process ran: {:?}", all.keys());
    for (id, seen) in all {
        let window: Vec<i64> = seen.iter().copied().filter(|s| (from..=until).contains(s)).collect();
        assert_eq!(
            window,
            (from..=until).collect::<Vec<_>>(),
            "{id}: every slot once across the join"
        );
    }
}
