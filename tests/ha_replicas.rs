//! Three real replicas of the service against PostgreSQL and one simulated
//! exchange (its own process): every tick exactly once, failover after
//! SIGKILL, fencing of a replica frozen with SIGSTOP, one weight budget for
//! the cluster, and a PostgreSQL outage.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Backend, Service, SimProcess, TestStore};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

/// A fast lease: a run's timeout + 1 s, renewed four times a second.
const HA: &str = "[ha]\nenabled = true\nlease_margin_seconds = 1\nheartbeat_seconds = 0.25\n";

/// A process with no API calls, ticking every second: its run history is the tick history.
const TICK: &str = r#"
[processes.tick]
kind = "command"
command = "true"
interval_seconds = 1
timeout_seconds = 1
retry_count = 0
"#;
const TICK_INTERVAL_S: f64 = 1.0;
const TICK_LEASE_S: f64 = 1.0 + 1.0;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn replica(config: &str, store_url: &str, name: &str) -> Service {
    common::start(
        config,
        &[
            ("SCRIPT_MANAGER_STORE__URL", store_url),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", name),
        ],
    )
    .await
}

async fn replicas(config: &str, store_url: &str) -> Vec<(String, Service)> {
    let mut all = Vec::new();
    for name in ["r1", "r2", "r3"] {
        all.push((name.to_string(), replica(config, store_url, name).await));
    }
    all
}

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new().max_connections(2).connect(url).await.unwrap()
}

/// (slot, replica, started_at ms) of every recorded scheduled run of `process`.
async fn scheduled_runs(pool: &PgPool, process: &str) -> Vec<(i64, String, i64)> {
    sqlx::query("SELECT slot, replica, started_at FROM runs WHERE process = $1 AND slot IS NOT NULL ORDER BY slot")
        .bind(process)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("slot"), r.get("replica"), r.get("started_at")))
        .collect()
}

/// Who holds `process`, as `svc` sees it.
async fn holder(svc: &Service, process: &str) -> Option<String> {
    let doc = svc.get_json(&format!("/api/script-manager/processes/{process}")).await;
    let lease = &doc["lease"];
    if lease["expired"] == true {
        return None;
    }
    lease["holder"].as_str().map(String::from)
}

fn assert_once_each(runs: &[(i64, String, i64)], what: &str) {
    let mut seen = BTreeMap::new();
    for (slot, replica, _) in runs {
        if let Some(first) = seen.insert(*slot, replica.clone()) {
            panic!("{what}: slot {slot} ran twice ({first} and {replica})");
        }
    }
}

/// Slots between the first and last recorded that nobody ran.
fn missing(runs: &[(i64, String, i64)]) -> Vec<i64> {
    let slots: BTreeSet<i64> = runs.iter().map(|r| r.0).collect();
    match (slots.first(), slots.last()) {
        (Some(&a), Some(&b)) => (a..=b).filter(|s| !slots.contains(s)).collect(),
        _ => vec![],
    }
}

/// Polls `probe` until it yields a value; after `timeout`, fails with the last thing it said.
async fn eventually<T>(timeout: Duration, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(why) => assert!(std::time::Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(svc: &Service, series: &str) -> f64 {
    common::sample(&svc.metrics().await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_once_failover_after_sigkill_and_one_budget_for_the_cluster() {
    // A small venue limit and processes that want far more: the cluster budget is what binds.
    let sim = SimProcess::start("weight_limit = 300\nfills_per_minute = 30.0").await;
    let store = TestStore::new(Backend::Postgres);
    let config = format!(
        "{HA}{TICK}{}\n\
         [http]\nadmin_token = \"{}\"\n\
         [processes.position_sync]\ninterval_seconds = 1\nmax_api_calls_per_minute = 1000\n\
         [processes.trade_sync]\ninterval_seconds = 1\nmax_api_calls_per_minute = 1000\n\
         [processes.price_update]\ninterval_seconds = 1\n",
        // Polling, so that trade and position sync call the venue every tick.
        sim.polling_exchange_toml(),
        common::TOKEN
    );
    let mut cluster = replicas(&config, &store.url).await;
    let db = pool(&store.url).await;

    // At least 30 ticks with all three alive: each ran exactly once, none missing.
    let runs = eventually(Duration::from_secs(60), async || {
        let runs = scheduled_runs(&db, "tick").await;
        match runs.len() >= 32 {
            true => Ok(runs),
            false => Err(format!("only {} ticks ran", runs.len())),
        }
    })
    .await;
    assert_once_each(&runs, "three replicas");
    assert_eq!(
        missing(&runs),
        Vec::<i64>::new(),
        "no tick missing while replicas were alive"
    );
    assert_once_each(&scheduled_runs(&db, "price_update").await, "price_update");

    // One holder, named alike by every replica; the others count lost claims.
    let h = holder(&cluster[0].1, "tick").await.expect("tick is held");
    let mut held = 0.0;
    for (name, svc) in &cluster {
        assert_eq!(holder(svc, "tick").await.as_deref(), Some(h.as_str()));
        let m = svc.metrics().await;
        held += common::sample(&m, r#"script_manager_ha_lease_held{process="tick"}"#).unwrap();
        assert_eq!(common::sample(&m, "script_manager_ha_replicas"), Some(3.0), "{name}");
        assert_eq!(common::sample(&m, "script_manager_ha_store_up"), Some(1.0));
        if *name != h {
            assert!(common::sample(&m, r#"script_manager_ha_claims_total{result="lost"}"#).unwrap() > 0.0);
        }
    }
    assert_eq!(held, 1.0, "exactly one replica holds the lease");
    // A manual trigger is refused by a replica that does not hold the process.
    let other = &cluster.iter().find(|(n, _)| *n != h).unwrap().1;
    let (status, body) = other
        .post_json("/api/script-manager/processes/tick/trigger", &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "held_by_another_replica");
    assert!(body["error"]["message"].as_str().unwrap().contains(&h), "{body}");
    let text = cluster[0].1.metrics().await;
    assert!(
        text.contains(r#"script_manager_ha_claims_total{result="won"}"#),
        "{text}"
    );
    common::promtool_accepts(&text);

    // SIGKILL the holder: another replica runs the next tick within one interval plus the lease.
    let i = cluster.iter().position(|(n, _)| *n == h).unwrap();
    let (_, mut victim) = cluster.remove(i);
    let killed_at = now_ms();
    victim.kill();
    let (takeover_at, successor) = eventually(Duration::from_secs(15), async || {
        let runs = scheduled_runs(&db, "tick").await;
        let first = runs.into_iter().find(|r| r.2 > killed_at && r.1 != h);
        first.map(|r| (r.2, r.1)).ok_or("no replica took over".to_string())
    })
    .await;
    let gap_s = (takeover_at - killed_at) as f64 / 1000.0;
    eprintln!("failover: {successor} ran tick {gap_s:.2}s after {h} was killed");
    // 0.5 s for the claim and the run's start on a loaded 2-core machine.
    assert!(
        gap_s <= TICK_INTERVAL_S + TICK_LEASE_S + 0.5,
        "takeover after {gap_s:.2}s, more than an interval plus the lease"
    );
    let survivor = &cluster.iter().find(|(n, _)| *n == successor).unwrap().1;
    assert!(metric(survivor, r#"script_manager_ha_claims_total{result="expired"}"#).await >= 1.0);
    eventually(Duration::from_secs(10), async || {
        let alive = metric(survivor, "script_manager_ha_replicas").await;
        (alive == 2.0)
            .then_some(())
            .ok_or("the dead replica is still counted".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = scheduled_runs(&db, "tick").await;
    assert_once_each(&runs, "after the failover");
    let gap: Vec<i64> = missing(&runs);
    // The run killed in flight (never recorded) and the ticks before the lease ran out.
    assert!(
        gap.len() as f64 <= 1.0 + (TICK_INTERVAL_S + TICK_LEASE_S) / TICK_INTERVAL_S,
        "only the ticks of the failover window are missing: {gap:?}"
    );

    // The simulator's count of weight per fixed minute never went above limit × margin.
    let meter = sim.get("/sim/meter").await;
    let cap = (meter["weight_limit"].as_f64().unwrap() * 0.8).floor();
    let minutes = meter["weight_by_minute"].as_object().unwrap();
    eprintln!("venue weight per minute (cap {cap}): {minutes:?}");
    assert!(!minutes.is_empty());
    for (minute, weight) in minutes {
        let w = weight.as_f64().unwrap();
        assert!(w <= cap, "minute {minute}: weight {w} above {cap}: {meter}");
    }
    // Processes other than level_monitor may use 80 % of it (the rest is its reserve); calls weigh up to 5.
    let share = (cap * 0.8).floor();
    assert!(
        minutes.values().any(|w| w.as_f64().unwrap() >= share - 5.0),
        "the load was enough to fill the budget: {meter}"
    );
    assert_eq!(meter["violations"], 0, "{meter}");

    // Pausing a process on its holder hands it to another replica.
    let (successor_svc, last) = {
        let i = cluster.iter().position(|(n, _)| *n == successor).unwrap();
        (&cluster[i].1, &cluster[1 - i])
    };
    let (status, _) = successor_svc
        .post_json("/api/script-manager/processes/tick/pause", &json!({}))
        .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(10), async || {
        let now = holder(&last.1, "tick").await;
        (now.as_deref() == Some(last.0.as_str()))
            .then_some(())
            .ok_or("the pause did not hand the lease over".to_string())
    })
    .await;
    successor_svc
        .post_json("/api/script-manager/processes/tick/resume", &json!({}))
        .await;

    // Every lease the killed replica held has failed over by now (the slowest
    // after its run's timeout plus the margin), so the failovers counted below
    // can only come from the graceful stop.
    eventually(Duration::from_secs(60), async || {
        let doc = cluster[0].1.get_json("/api/script-manager/processes").await;
        let stale: Vec<String> = doc
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["lease"]["holder"].as_str() == Some(h.as_str()))
            .map(|p| p["id"].as_str().unwrap_or("?").to_string())
            .collect();
        stale
            .is_empty()
            .then_some(())
            .ok_or(format!("leases of the killed replica not failed over yet: {stale:?}"))
    })
    .await;

    // A graceful stop releases the leases: the other replica runs the next tick, without waiting out the lease.
    let (_, mut stopping) = cluster.remove(cluster.iter().position(|(n, _)| *n == last.0).unwrap());
    let expired = r#"script_manager_ha_claims_total{result="expired"}"#;
    let failovers_before = metric(&cluster[0].1, expired).await;
    let stopped_at = now_ms();
    assert!(stopping.stop(Duration::from_secs(20)).success());
    let remaining = cluster[0].0.clone();
    let handover = eventually(Duration::from_secs(10), async || {
        let runs = scheduled_runs(&db, "tick").await;
        let first = runs.into_iter().find(|r| r.2 > stopped_at && r.1 == remaining);
        first
            .map(|r| r.2)
            .ok_or("no replica took over after a graceful stop".to_string())
    })
    .await;
    let handover_s = (handover - stopped_at) as f64 / 1000.0;
    eprintln!("handover after a graceful stop: {handover_s:.2}s");
    assert!(handover_s <= TICK_INTERVAL_S + 1.0, "handover after {handover_s:.2}s");
    assert_eq!(
        metric(&cluster[0].1, expired).await,
        failovers_before,
        "a released lease is taken over as a hand-over, not a failover"
    );
    assert_once_each(&scheduled_runs(&db, "tick").await, "to the end");
}

fn kill(svc: &Service, signal: i32) {
    svc.signal(signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_holder_is_fenced_off_and_the_data_stays_right() {
    let sim = SimProcess::start("fills_per_minute = 120.0\nvolatility = 0.0").await;
    let store = TestStore::new(Backend::Postgres);
    // trade_sync held by one replica for every account (the lease this test
    // freezes); accounts shared over replicas are tests/accounts_ha.rs.
    let config = format!(
        "{HA}share_accounts = false\n{}\n\
         [http]\nadmin_token = \"{}\"\n\
         [processes.trade_sync]\ninterval_seconds = 1\ntimeout_seconds = 6\nmax_api_calls_per_minute = 2000\n\
         [processes.position_sync]\ninterval_seconds = 1\ntimeout_seconds = 6\nmax_api_calls_per_minute = 1000\n\
         [processes.level_monitor]\ninterval_seconds = 0.5\ntimeout_seconds = 5\nmax_api_calls_per_minute = 1000\n\
         [processes.price_update]\nenabled = false\n[processes.notification_check]\nenabled = false\n\
         [processes.dashboard_sync]\nenabled = false\n",
        // Requests in flight when the holder is frozen are still answered when it thaws
        // (then it writes, and is fenced off): longer than any freeze here.
        sim.polling_exchange_toml().replacen(
            "\n[exchange.accounts.main]",
            "\nrequest_timeout_seconds = 120\n[exchange.accounts.main]",
            1
        ),
        common::TOKEN
    );
    let mut cluster = replicas(&config, &store.url).await;
    let db = pool(&store.url).await;
    let first = &cluster[0].1;
    first
        .wait_get("trades", "/api/trades?account=main", Duration::from_secs(20), |t| {
            t.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    // Slow answers, so the holder is caught in the middle of a run; then freeze it past its lease.
    sim.post("/sim/faults", &json!({"latency_ms": 1500})).await;
    // A run that started before the fault may be about to finish; the next is slow throughout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The holder, by its own word: running trade_sync under a lease it holds
    // (fair shares may move the process, and a replica only claiming a tick
    // it will lose looks busy for a moment too).
    let held = r#"script_manager_ha_lease_held{process="trade_sync"}"#;
    let h = eventually(Duration::from_secs(15), async || {
        for (name, svc) in &cluster {
            let doc = svc.get_json("/api/script-manager/processes/trade_sync").await;
            if doc["state"] == "executing" && metric(svc, held).await == 1.0 {
                return Ok(name.clone());
            }
        }
        Err("no replica runs trade_sync under its lease".to_string())
    })
    .await;
    let i = cluster.iter().position(|(n, _)| *n == h).unwrap();
    let (_, frozen) = cluster.remove(i);
    kill(&frozen, libc::SIGSTOP);
    sim.post("/sim/faults", &json!({})).await;

    let other = &cluster[0].1;
    let successor = eventually(Duration::from_secs(20), async || {
        let now = holder(other, "trade_sync").await.filter(|n| *n != h);
        now.ok_or("nobody took over trade_sync".to_string())
    })
    .await;
    let successor = &cluster.iter().find(|(n, _)| *n == successor).unwrap().1;
    let synced = r#"script_manager_process_runs_total{process="trade_sync",outcome="success"}"#;
    let before = metric(successor, synced).await;
    eventually(Duration::from_secs(20), async || {
        let now = metric(successor, synced).await;
        (now >= before + 2.0)
            .then_some(())
            .ok_or("the new holder does not sync".to_string())
    })
    .await;

    // A stop-loss crossed while the old holder is frozen closes exactly once.
    // Trading elsewhere stops first, so the position cannot flip under the level.
    // Then positions are read again by a live replica (position_sync may have
    // been the frozen one's until its lease lapsed), so the stored side is the venue's.
    sim.post("/sim/trading", &json!({"paused": true})).await;
    let synced_positions = r#"script_manager_process_runs_total{process="position_sync",outcome="success"}"#;
    let mut before = 0.0;
    for (_, replica) in &cluster {
        before += metric(replica, synced_positions).await;
    }
    eventually(Duration::from_secs(60), async || {
        let mut now = 0.0;
        for (_, replica) in &cluster {
            now += metric(replica, synced_positions).await;
        }
        (now >= before + 2.0)
            .then_some(())
            .ok_or("no live replica syncs positions".to_string())
    })
    .await;
    let positions = other
        .wait_get(
            "positions",
            "/api/positions?account=main",
            Duration::from_secs(10),
            |p| p.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let p = &positions.as_array().unwrap()[0];
    let symbol = p["symbol"].as_str().unwrap().to_string();
    let long = !p["amount"].to_string().trim_matches('"').starts_with('-');
    let price: f64 = sim.get(&format!("/fapi/v1/ticker/price?symbol={symbol}")).await["price"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (sl, beyond) = if long {
        (price * 0.95, price * 0.93)
    } else {
        (price * 1.05, price * 1.07)
    };
    let (status, level) = other
        .post_json(
            "/api/levels",
            &json!({"account": "main", "symbol": symbol, "stop_loss": format!("{sl:.4}")}),
        )
        .await;
    assert_eq!(status, 201, "{level}");
    let id = level["id"].as_i64().unwrap();
    sim.post("/sim/prices", &json!({symbol.clone(): format!("{beyond:.4}")}))
        .await;
    other
        .wait_get(
            "the stop-loss executed",
            &format!("/api/levels/{id}"),
            Duration::from_secs(20),
            |l| l["status"] == "executed",
        )
        .await;

    // Thaw the old holder: its run resumes, and everything it tries to write is
    // refused. Whether it gets to try depends on where the freeze caught it: a
    // run whose deadline passed while frozen is cancelled at once, before any
    // write; one still waiting on the venue writes, and is fenced off. Either
    // way it learns that the lease moved on, and the data checks below show it
    // changed nothing.
    kill(&frozen, libc::SIGCONT);
    eventually(Duration::from_secs(20), async || {
        let fenced = metric(&frozen, "script_manager_ha_fencing_rejections_total").await;
        let told = frozen
            .log()
            .contains("lease lost: another replica holds it now process=trade_sync");
        (fenced >= 1.0 || told).then_some(()).ok_or_else(|| {
            format!(
                "neither fenced off nor told the lease moved on; output:\n{}",
                frozen.log()
            )
        })
    })
    .await;
    let m = frozen.metrics().await;
    assert_eq!(
        common::sample(&m, r#"script_manager_ha_lease_held{process="trade_sync"}"#),
        Some(0.0)
    );
    if common::sample(&m, "script_manager_ha_fencing_rejections_total").unwrap_or(0.0) >= 1.0 {
        assert!(frozen.log().contains("write fenced off"), "{}", frozen.log());
    }

    // The data: every fill the venue has (up to a few seconds ago) stored once, nothing else; one close order.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let settled = now_ms() - 3000;
    for account in ["main", "alt"] {
        let fills = sim.get(&format!("/sim/fills?account={account}")).await;
        let venue: BTreeSet<(String, i64)> = fills
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["symbol"].as_str().unwrap().to_string(), f["id"].as_i64().unwrap()))
            .collect();
        let recent: BTreeSet<(String, i64)> = fills
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["time"].as_i64().unwrap() > settled)
            .map(|f| (f["symbol"].as_str().unwrap().to_string(), f["id"].as_i64().unwrap()))
            .collect();
        let rows = sqlx::query("SELECT symbol, id FROM trades WHERE account = $1")
            .bind(account)
            .fetch_all(&db)
            .await
            .unwrap();
        let stored: Vec<(String, i64)> = rows.iter().map(|r| (r.get("symbol"), r.get("id"))).collect();
        let unique: BTreeSet<_> = stored.iter().cloned().collect();
        assert_eq!(unique.len(), stored.len(), "{account}: duplicate trades");
        assert!(unique.is_subset(&venue), "{account}: trades the venue does not have");
        let absent: Vec<_> = venue.difference(&unique).filter(|k| !recent.contains(k)).collect();
        assert!(absent.is_empty(), "{account}: fills never stored: {absent:?}");
    }
    let orders = sim.get("/sim/orders?account=main").await;
    let closes: Vec<&Value> = orders
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            let client = o["clientOrderId"].as_str().unwrap_or("");
            client.starts_with("sm-") && client.ends_with(&format!("-{id}-1"))
        })
        .collect();
    assert_eq!(closes.len(), 1, "exactly one close order: {orders}");
    assert_once_each(&scheduled_runs(&db, "trade_sync").await, "trade_sync");
    assert_once_each(&scheduled_runs(&db, "level_monitor").await, "level_monitor");
    drop(frozen);
}

/// A PostgreSQL server of the test's own, so it can be stopped and started.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn bin() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (Debian's postgresql package)")
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop().expect("initdb")
    }

    /// A server program, run as `postgres` when we are root (PostgreSQL refuses root).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn new() -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let pg = PrivatePostgres {
            dir,
            bin: Self::bin(),
            port: common::free_port(),
        };
        pg.run(
            "initdb",
            &["-D", &pg.data(), "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.start();
        pg
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"]);
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

async fn total_runs(cluster: &[(String, Service)]) -> u64 {
    let mut n = 0;
    for (_, svc) in cluster {
        n += svc.get_json("/api/script-manager/processes/tick").await["metrics"]["total_runs"]
            .as_u64()
            .unwrap();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_stop_while_postgres_is_away_and_resume_after() {
    let pg = PrivatePostgres::new();
    let sim = SimProcess::start("fills_per_minute = 0.0").await;
    let config = format!("builtin_processes = false\n{HA}{TICK}{}", sim.exchange_toml());
    let cluster = replicas(&config, &pg.url()).await;
    eventually(Duration::from_secs(20), async || {
        (total_runs(&cluster).await >= 3)
            .then_some(())
            .ok_or("no ticks".to_string())
    })
    .await;

    pg.stop();
    // Once the lease time has passed, nobody can prove a lease, so nobody runs.
    tokio::time::sleep(Duration::from_secs_f64(TICK_LEASE_S + 1.0)).await;
    let stalled = total_runs(&cluster).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        total_runs(&cluster).await,
        stalled,
        "a replica ran a tick without PostgreSQL"
    );
    let mut claim_errors = 0.0;
    for (name, svc) in &cluster {
        let m = svc.metrics().await;
        assert_eq!(common::sample(&m, "script_manager_ha_store_up"), Some(0.0), "{name}");
        assert_eq!(
            common::sample(&m, r#"script_manager_ha_lease_held{process="tick"}"#),
            Some(0.0),
            "{name}"
        );
        // The replica whose share `tick` is keeps trying to claim it (the
        // others leave it to that one, as they last saw it hold the lease).
        claim_errors += common::sample(&m, r#"script_manager_ha_claims_total{result="error"}"#).unwrap();
        assert!(
            svc.log().contains("PostgreSQL does not answer"),
            "{name}: {}",
            svc.log()
        );
    }
    assert!(claim_errors > 0.0, "claims failed while PostgreSQL was away");

    pg.start();
    eventually(Duration::from_secs(20), async || {
        let runs = total_runs(&cluster).await;
        (runs >= stalled + 3)
            .then_some(())
            .ok_or("ticks did not resume".to_string())
    })
    .await;
    for (name, svc) in &cluster {
        eventually(Duration::from_secs(5), async || {
            let up = metric(svc, "script_manager_ha_store_up").await;
            (up == 1.0)
                .then_some(())
                .ok_or(format!("{name} still reports PostgreSQL down"))
        })
        .await;
        assert!(svc.log().contains("PostgreSQL answers again"), "{name}");
    }
    let db = pool(&pg.url()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_once_each(&scheduled_runs(&db, "tick").await, "across the outage");
}

/// The cluster's budget on a PostgreSQL that stops: calls are admitted on
/// this replica's local share meanwhile (the venue's budget over the replicas
/// last seen), and counted by the cluster again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_admitted_on_a_local_share_while_postgres_is_away() {
    use script_manager::budget::{Admission, Caller, ProcessCalls, VenueWeight};
    use script_manager::ha::budget::PgClusterBudget;
    use std::sync::Arc;

    let pg = PrivatePostgres::new();
    let cluster = Arc::new(PgClusterBudget::connect(&pg.url()).await.unwrap());
    cluster.saw_replicas(2);
    let weight = Arc::new(VenueWeight::new(1000, 1.0, 0.2, ["level_monitor".to_string()]));
    let calls = ProcessCalls::new([("level_monitor".to_string(), 1000)]);
    let admission = Admission::new(Arc::new(calls), weight.clone());
    admission.share_with(cluster.clone());
    let caller = || {
        Caller::new(
            "level_monitor",
            1,
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
    };
    // The cluster's count for the minute(s) an admission happened in.
    let counted = async |minutes: &BTreeSet<i64>| {
        let mut used = 0;
        for m in minutes {
            used += cluster.used(*m).await.unwrap();
        }
        used
    };

    let before = weight.venue_minute();
    let admitted = admission.admit(&caller(), 5).await.unwrap();
    assert!(!admitted.local_share);
    assert!(counted(&BTreeSet::from([before, weight.venue_minute()])).await >= 5);

    pg.stop();
    let admitted = admission
        .admit(&caller(), 5)
        .await
        .expect("admitted without PostgreSQL");
    assert!(admitted.local_share);
    assert!(admission.local_share_in_use());
    let admitted = admission.admit(&caller(), 5).await.expect("and again");
    assert!(admitted.local_share);

    pg.start();
    // A background probe finds it back; calls are then counted there again.
    let back = eventually(Duration::from_secs(30), async || {
        let before = weight.venue_minute();
        let admitted = admission.admit(&caller(), 7).await.map_err(|e| e.to_string())?;
        match admitted.local_share {
            true => Err("still on the local share".to_string()),
            false => Ok(BTreeSet::from([before, weight.venue_minute()])),
        }
    })
    .await;
    assert!(!admission.local_share_in_use());
    assert!(counted(&back).await >= 7, "the cluster counts again");
}
