//! Store operations (issue 24): replicas starting together on one fresh
//! PostgreSQL database migrate it once; a store migrated by a newer binary is
//! refused at start; heartbeat rows of long-gone replicas are pruned; an
//! online backup of a SQLite store taken while the service writes restores
//! into a store the service starts on, with the data that was there.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Service, SimProcess, TOKEN, TestStore};
use serde_json::{Value, json};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

/// The migrations this binary ships, by name.
fn shipped_migrations() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".sql")
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// A process that writes a run record every 0.2 s and makes no API call.
const TICK: &str = r#"
[processes.tick]
kind = "command"
command = "true"
interval_seconds = 0.2
timeout_seconds = 2
retry_count = 0
"#;

const HA: &str = "[ha]\nenabled = true\nlease_margin_seconds = 1\nheartbeat_seconds = 0.25\n";

fn with_token(config: &str) -> String {
    format!("{config}\n[http]\nadmin_token = \"{TOKEN}\"\n")
}

async fn pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new().max_connections(2).connect(url).await.unwrap()
}

async fn migrations(url: &str) -> Vec<String> {
    let pool = pool(url).await;
    let names = sqlx::query("SELECT name FROM schema_migrations ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("name"))
        .collect();
    pool.close().await;
    names
}

/// Runs the binary with `args` to its end (at most 60 s): (exit code, stderr).
fn run_to_exit(args: &[&str], config: &Path, store_url: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_script-manager"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("SCRIPT_MANAGER_STORE__URL", store_url)
        .env(
            "SCRIPT_MANAGER_HTTP__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("script-manager {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), reader.join().unwrap())
}

fn write_config(dir: &Path, config: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_started_at_once_on_a_fresh_database_migrate_it_once() {
    let store = TestStore::new(Backend::Postgres);
    // Replicas share one exchange: a simulator of its own process.
    let sim = SimProcess::start("").await;
    let config = format!("{HA}{TICK}{}", sim.exchange_toml());
    let env_a = [
        ("SCRIPT_MANAGER_STORE__URL", store.url.as_str()),
        ("SCRIPT_MANAGER_HA__REPLICA_ID", "a"),
    ];
    let env_b = [
        ("SCRIPT_MANAGER_STORE__URL", store.url.as_str()),
        ("SCRIPT_MANAGER_HA__REPLICA_ID", "b"),
    ];
    // Both processes are spawned before either is waited for.
    let (a, b) = tokio::join!(common::start(&config, &env_a), common::start(&config, &env_b));
    // Both are ready (common::start waited for /readyz), and every migration is recorded once.
    let shipped = shipped_migrations();
    assert!(shipped.len() >= 8, "migrations/ has {shipped:?}");
    assert_eq!(migrations(&store.url).await, shipped);
    // Each migration was applied by exactly one of them: the other found it done.
    let applied: usize = [&a, &b]
        .iter()
        .map(|svc| svc.log().lines().filter(|l| l.contains("store migrated")).count())
        .sum();
    assert_eq!(
        applied,
        shipped.len(),
        "each migration applied once; logs:\na:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    for svc in [&a, &b] {
        let ready = svc.http.get(svc.url("/readyz")).send().await.unwrap();
        assert!(ready.status().is_success());
    }
}

async fn refuses_a_newer_schema(backend: Backend) {
    let store = TestStore::new(backend);
    let mut svc = common::start(TICK, &[("SCRIPT_MANAGER_STORE__URL", &store.url)]).await;
    assert!(svc.stop(Duration::from_secs(20)).success());
    let pool = pool(&store.url).await;
    sqlx::query("INSERT INTO schema_migrations (name, applied_at) VALUES ('0099_from_the_future', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let config = write_config(svc.dir.path(), TICK);
    let (code, stderr) = run_to_exit(&[], &config, &store.url);
    assert_eq!(
        code,
        Some(2),
        "{backend:?}: refused with exit code 2; stderr:\n{stderr}"
    );
    let newest = shipped_migrations().pop().unwrap();
    for needle in ["0099_from_the_future", newest.as_str(), "newer", "run that version"] {
        assert!(
            stderr.contains(needle),
            "{backend:?}: error names `{needle}`:\n{stderr}"
        );
    }
    // Nothing was changed: the future row is still there, nothing was added.
    let mut expected = shipped_migrations();
    expected.push("0099_from_the_future".into());
    assert_eq!(migrations(&store.url).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_migrated_by_a_newer_binary_is_refused_sqlite() {
    refuses_a_newer_schema(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_migrated_by_a_newer_binary_is_refused_postgres() {
    refuses_a_newer_schema(Backend::Postgres).await;
}

async fn replica_rows(url: &str) -> BTreeSet<String> {
    let pool = pool(url).await;
    let rows = sqlx::query("SELECT replica FROM ha_replicas")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("replica"))
        .collect();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_rows_of_long_gone_replicas_are_pruned_and_live_ones_stay() {
    let store = TestStore::new(Backend::Postgres);
    // Replicas share one exchange: a simulator of its own process.
    let sim = SimProcess::start("").await;
    let config = format!("{HA}{TICK}{}", sim.exchange_toml());
    let a = common::start(
        &config,
        &[
            ("SCRIPT_MANAGER_STORE__URL", &store.url),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", "a"),
        ],
    )
    .await;
    // Rows as restarts under hostname-pid leave them: two hours old (gone), and
    // ten minutes old (kept: within the hour a row is kept for).
    let pool = pool(&store.url).await;
    sqlx::query(
        "INSERT INTO ha_replicas (replica, last_seen) VALUES
           ('host-101', now() - interval '2 hours'), ('host-102', now() - interval '3 days'),
           ('host-103', now() - interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    // A replica prunes on its first heartbeat.
    let b = common::start(
        &config,
        &[
            ("SCRIPT_MANAGER_STORE__URL", &store.url),
            ("SCRIPT_MANAGER_HA__REPLICA_ID", "b"),
        ],
    )
    .await;
    // The live replicas and the recent row stay; the stale ones go.
    let expected: BTreeSet<String> = ["a", "b", "host-103"].iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = replica_rows(&store.url).await;
        if rows == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "heartbeat rows {rows:?}, expected {expected:?}\na:\n{}\nb:\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both still count two live replicas (the recent row is outside the alive window).
    for svc in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive = common::sample(&svc.metrics().await, "script_manager_ha_replicas");
            if alive == Some(2.0) {
                break;
            }
            assert!(Instant::now() < deadline, "replicas alive: {alive:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The ids of the alerts the service serves.
async fn alert_ids(svc: &Service) -> BTreeSet<i64> {
    ids(&svc.get_json("/api/alerts?limit=10000").await)
}

/// The ids of the runs of `tick` the service serves.
async fn run_ids(svc: &Service) -> BTreeSet<i64> {
    ids(&svc.get_json("/api/script-manager/runs?process=tick&limit=10000").await)
}

fn ids(doc: &Value) -> BTreeSet<i64> {
    doc.as_array()
        .unwrap_or_else(|| panic!("a list: {doc}"))
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_service_writes_restores_into_a_store_it_serves() {
    let config = with_token(TICK);
    let svc = common::start(&config, &[]).await;
    let store_url = format!("sqlite://{}/store.db", svc.dir.path().display());
    let config_path = write_config(svc.dir.path(), &config);

    // Alerts created through the API while the backup runs (and runs recorded every 0.2 s).
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (http, base, stop) = (svc.http.clone(), svc.base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut price = 1000;
            while !stop.is_cancelled() {
                price += 1;
                let r = http
                    .post(format!("{base}/api/alerts"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"symbol": "BTCUSDT", "condition": "above", "price": price.to_string()}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if status == 201 {
                    acknowledged.push(body["id"].as_i64().unwrap());
                } else {
                    assert_eq!(status, 503, "only 'symbols not read yet' is expected: {body}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        })
    };
    // Some of everything first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alert_ids(&svc).await.len() < 5 || run_ids(&svc).await.len() < 3 {
        assert!(Instant::now() < deadline, "no alerts or runs yet:\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alerts_before = alert_ids(&svc).await;
    let runs_before = run_ids(&svc).await;

    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup.db");
    let backup_text = backup.to_str().unwrap();
    let (code, stderr) =
        tokio::task::block_in_place(|| run_to_exit(&["backup", backup_text], &config_path, &store_url));
    assert_eq!(code, Some(0), "backup: {stderr}");
    // The service kept writing meanwhile.
    let more = tokio::time::timeout(Duration::from_secs(10), async {
        while alert_ids(&svc).await.len() <= alerts_before.len() + 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(more.is_ok(), "alerts kept being created after the backup");
    stop.cancel();
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() > alerts_before.len());

    // A second backup to the same path is refused, nothing overwritten.
    let size = std::fs::metadata(&backup).unwrap().len();
    let (code, stderr) =
        tokio::task::block_in_place(|| run_to_exit(&["backup", backup_text], &config_path, &store_url));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::metadata(&backup).unwrap().len(), size);
    // PostgreSQL stores are backed up with pg_dump.
    let (code, stderr) = tokio::task::block_in_place(|| {
        run_to_exit(
            &["backup", backups.path().join("pg.db").to_str().unwrap()],
            &config_path,
            "postgres://postgres@127.0.0.1:5432/test",
        )
    });
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("pg_dump"), "{stderr}");
    drop(svc);

    // Restore: the file copied in place of a store, the service started on it.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored = restored_dir.path().join("store.db");
    std::fs::copy(&backup, &restored).unwrap();
    let restored_url = format!("sqlite://{}", restored.display());
    let svc = common::start(&config, &[("SCRIPT_MANAGER_STORE__URL", &restored_url)]).await;
    let alerts_after = alert_ids(&svc).await;
    assert!(
        alerts_before.is_subset(&alerts_after),
        "every alert created before the backup is served: missing {:?}",
        alerts_before.difference(&alerts_after).collect::<Vec<_>>()
    );
    // Nothing in it that the service never had (the first start's demo alerts are in alerts_before).
    let had: BTreeSet<i64> = acknowledged.into_iter().chain(alerts_before.iter().copied()).collect();
    assert!(alerts_after.is_subset(&had), "{alerts_after:?} vs {had:?}");
    let runs_after = run_ids(&svc).await;
    assert!(
        runs_before.is_subset(&runs_after),
        "every run recorded before the backup is served"
    );
    assert_eq!(migrations(&restored_url).await, shipped_migrations());
}
