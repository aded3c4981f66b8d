//! Accounts spread over replicas (`ha.share_accounts`, issue 23): two real
//! replicas on PostgreSQL and one simulated exchange in its own process, 20
//! accounts. Each replica works its own share (the rendezvous rule every
//! replica computes); a replica killed with SIGKILL has its accounts taken
//! over by the survivor; one restarted under the same name gets its share
//! back. Throughout, every fill the venue made for every account is stored,
//! and stored once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Backend, Service, SimProcess, TestStore};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

const ACCOUNTS: usize = 20;
/// A fast heartbeat: a replica counts as gone 3 × 0.25 + 1 = 1.75 s after its last beat.
const HA: &str = "[ha]\nenabled = true\nlease_margin_seconds = 1\nheartbeat_seconds = 0.25\nshare_accounts = true\n";
/// trade_sync's interval: with the heartbeat's window, what a hand-over should take.
const TRADE_SYNC_INTERVAL_S: f64 = 1.0;
const ALIVE_WINDOW_S: f64 = 1.75;
const OWNED: &str = "script_manager_ha_accounts_owned";

fn names() -> Vec<String> {
    (1..=ACCOUNTS).map(|i| format!("a{i:02}")).collect()
}

fn accounts_toml() -> String {
    names()
        .iter()
        .map(|a| format!("[exchange.accounts.{a}]\napi_key = \"sim-{a}-key\"\napi_secret = \"sim-{a}-secret\"\n"))
        .collect()
}

/// The service's configuration: polling (streams off), only the account
/// processes and what they need, fast ticks, a venue with room for them;
/// `egress` is `exchange.egress`.
fn config(sim: &SimProcess, egress: &str) -> String {
    format!(
        "{HA}[demo]\nenabled = false\n\
         [exchange]\nkind = \"binance-usdm\"\nbase_url = \"{}\"\nstreams = false\nsymbols = [\"BTCUSDT\"]\n\
         egress = \"{egress}\"\n\
         {}\
         [processes.trade_sync]\ninterval_seconds = {TRADE_SYNC_INTERVAL_S}\ntimeout_seconds = 5\nmax_api_calls_per_minute = 5000\n\
         [processes.position_sync]\ninterval_seconds = 2\ntimeout_seconds = 5\nmax_api_calls_per_minute = 5000\n\
         [processes.dashboard_sync]\ninterval_seconds = 2\n\
         [processes.level_monitor]\nenabled = false\n[processes.price_update]\nenabled = false\n\
         [processes.notification_check]\nenabled = false\n[processes.backstop_sync]\nenabled = false\n",
        sim.base,
        accounts_toml()
    )
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

async fn owned(svc: &Service) -> usize {
    common::sample(&svc.metrics().await, OWNED).unwrap_or(-1.0) as usize
}

/// Polls `probe` until it yields a value; after `timeout`, fails with the last thing it said.
async fn eventually<T>(timeout: Duration, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The accounts the rule gives each replica, as every replica computes it.
fn expected(replicas: &[&str]) -> BTreeMap<String, Vec<String>> {
    let replicas: Vec<String> = replicas.iter().map(|r| r.to_string()).collect();
    let mut shares: BTreeMap<String, Vec<String>> = replicas.iter().map(|r| (r.clone(), vec![])).collect();
    for account in names() {
        let owner = script_manager::ha::accounts::owner(&account, &replicas).unwrap();
        shares.get_mut(owner).unwrap().push(account);
    }
    shares
}

/// Every account's fills on the venue, as (account, symbol, id).
async fn venue_fills(sim: &SimProcess) -> BTreeSet<(String, String, i64)> {
    let mut all = BTreeSet::new();
    for account in names() {
        for f in sim
            .get(&format!("/sim/fills?account={account}"))
            .await
            .as_array()
            .unwrap()
        {
            all.insert((
                account.clone(),
                f["symbol"].as_str().unwrap().to_string(),
                f["id"].as_i64().unwrap(),
            ));
        }
    }
    all
}

/// Rows per stored fill, as (account, symbol, id) → how many rows.
async fn stored(db: &PgPool) -> BTreeMap<(String, String, i64), i64> {
    sqlx::query("SELECT account, symbol, id, count(*) AS n FROM trades GROUP BY account, symbol, id")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get("account"), r.get("symbol"), r.get("id")), r.get("n")))
        .collect()
}

/// A trade on every account (as its owner would make on the venue's app).
async fn trade_everywhere(sim: &SimProcess, side: &str) {
    for account in names() {
        common::venue::trade(sim, &account, "BTCUSDT", side, "0.01").await;
    }
}

/// Waits until every fill the venue has is stored, then checks none is stored twice
/// and nothing is stored the venue does not have. Returns when it held.
async fn all_stored_once(sim: &SimProcess, db: &PgPool, what: &str) -> Instant {
    let venue = venue_fills(sim).await;
    let at = eventually(Duration::from_secs(30), async || {
        let rows = stored(db).await;
        let missing: Vec<_> = venue.iter().filter(|k| !rows.contains_key(*k)).collect();
        match missing.is_empty() {
            true => Ok(Instant::now()),
            false => Err(format!(
                "{what}: {} fills not stored, e.g. {:?}",
                missing.len(),
                missing[0]
            )),
        }
    })
    .await;
    let rows = stored(db).await;
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "{what}: fills stored more than once: {twice:?}");
    let keys: BTreeSet<_> = rows.keys().cloned().collect();
    assert!(
        keys.is_subset(&venue_fills(sim).await),
        "{what}: stored fills the venue does not have"
    );
    at
}

/// Rows of the cluster's weight budget in PostgreSQL (0 when its table was never created).
async fn cluster_budget_rows(db: &PgPool) -> i64 {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('ha_budget')::text")
        .fetch_one(db)
        .await
        .unwrap();
    match exists {
        Some(_) => sqlx::query_scalar("SELECT count(*) FROM ha_budget")
            .fetch_one(db)
            .await
            .unwrap(),
        None => 0,
    }
}

/// Replicas whose scheduled trade_sync runs the store recorded since `since_ms`.
async fn trade_sync_runners(db: &PgPool, since_ms: i64) -> BTreeSet<String> {
    sqlx::query("SELECT DISTINCT replica FROM runs WHERE process = 'trade_sync' AND started_at > $1")
        .bind(since_ms)
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<Option<String>, _>("replica"))
        .collect()
}

fn now_ms() -> i64 {
    script_manager::clock::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_accounts_and_a_killed_ones_move_without_a_fill_lost_or_stored_twice() {
    // No trading but ours, and room on the venue for 20 accounts polled every second.
    let sim = SimProcess::start(&format!(
        "weight_limit = 60000\nfills_per_minute = 0.0\nvolatility = 0.0\n{}",
        accounts_toml()
    ))
    .await;
    let store = TestStore::new(Backend::Postgres);
    let config = config(&sim, "shared");
    let r1 = replica(&config, &store, "r1").await;
    let mut r2 = replica(&config, &store, "r2").await;
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&store.url)
        .await
        .unwrap();

    // Each replica works its own share: the rule's, seen by each, disjoint and together all.
    let shares = expected(&["r1", "r2"]);
    let (n1, n2) = (shares["r1"].len(), shares["r2"].len());
    assert!(n1 > 0 && n2 > 0 && n1 + n2 == ACCOUNTS, "{shares:?}");
    eventually(Duration::from_secs(20), async || {
        let (o1, o2) = (owned(&r1).await, owned(&r2).await);
        match (o1, o2) == (n1, n2) {
            true => Ok(()),
            false => Err(format!("owned r1 {o1}, r2 {o2}; expected {n1}, {n2}")),
        }
    })
    .await;
    // Both run trade_sync, each under its own lease: no contention, each its own holder.
    let started = now_ms();
    eventually(Duration::from_secs(20), async || {
        let runners = trade_sync_runners(&db, started).await;
        match runners.len() == 2 {
            true => Ok(()),
            false => Err(format!(
                "trade_sync ran on {runners:?} only; r2: {}\n{}",
                r2.get_json("/api/script-manager/processes/trade_sync").await,
                r2.log()
            )),
        }
    })
    .await;
    for (name, svc) in [("r1", &r1), ("r2", &r2)] {
        let doc = svc.get_json("/api/script-manager/processes/trade_sync").await;
        assert_eq!(
            doc["lease"]["holder"], name,
            "each replica shows its own instance: {doc}"
        );
        assert_eq!(doc["lease"]["held_here"], true, "{doc}");
        let m = svc.metrics().await;
        assert_eq!(
            common::sample(&m, r#"script_manager_ha_lease_held{process="trade_sync"}"#),
            Some(1.0),
            "{name}"
        );
    }
    let keys: BTreeSet<String> = sqlx::query("SELECT process FROM ha_leases WHERE process LIKE 'trade_sync%'")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("process"))
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["trade_sync@r1".to_string(), "trade_sync@r2".to_string()])
    );

    // Fills on every account: each stored once, by whichever replica owns it.
    trade_everywhere(&sim, "BUY").await;
    all_stored_once(&sim, &db, "both alive").await;
    assert!(
        cluster_budget_rows(&db).await > 0,
        "egress shared: the weight is counted for the cluster"
    );

    // SIGKILL r2, then more fills at once: the survivor takes r2's accounts
    // over from their stored cursors.
    let killed = Instant::now();
    r2.kill();
    trade_everywhere(&sim, "BUY").await;
    let traded = killed.elapsed().as_secs_f64();
    let took_over = eventually(Duration::from_secs(30), async || match owned(&r1).await {
        ACCOUNTS => Ok(Instant::now()),
        n => Err(format!("r1 owns {n} accounts after the kill")),
    })
    .await;
    let stored_at = all_stored_once(&sim, &db, "after the kill").await;
    eprintln!(
        "r1 owned r2's {n2} accounts {:.2} s after the kill, and had stored every fill made after it (the last \
         made {traded:.2} s after the kill) {:.2} s after (trade_sync interval {TRADE_SYNC_INTERVAL_S} s + alive \
         window {ALIVE_WINDOW_S} s = {:.2} s)",
        (took_over - killed).as_secs_f64(),
        (stored_at - killed).as_secs_f64(),
        TRADE_SYNC_INTERVAL_S + ALIVE_WINDOW_S
    );
    let doc = r1.get_json("/api/script-manager/status").await;
    assert_eq!(doc["ha"]["replicas_alive"], 1, "{doc}");

    // r2 comes back under its name: it gets its share back, and fills made
    // meanwhile (both may work an account for a moment) are stored once.
    let r2 = replica(&config, &store, "r2").await;
    eventually(Duration::from_secs(20), async || {
        let (o1, o2) = (owned(&r1).await, owned(&r2).await);
        match (o1, o2) == (n1, n2) {
            true => Ok(()),
            false => Err(format!("after the rejoin: owned r1 {o1}, r2 {o2}; expected {n1}, {n2}")),
        }
    })
    .await;
    trade_everywhere(&sim, "SELL").await;
    all_stored_once(&sim, &db, "after the rejoin").await;
    assert!(
        venue_fills(&sim).await.len() >= 3 * ACCOUNTS,
        "a fill or more per trade"
    );
    for svc in [&r1, &r2] {
        let m = svc.metrics().await;
        assert_eq!(
            common::sample(&m, "script_manager_ha_fencing_rejections_total"),
            Some(0.0),
            "per-replica leases are never contended"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_address_per_replica_each_replica_keeps_its_own_weight_budget() {
    let sim = SimProcess::start(&format!(
        "weight_limit = 60000\nfills_per_minute = 0.0\nvolatility = 0.0\n{}",
        accounts_toml()
    ))
    .await;
    let store = TestStore::new(Backend::Postgres);
    let config = config(&sim, "per_replica");
    let r1 = replica(&config, &store, "r1").await;
    let r2 = replica(&config, &store, "r2").await;
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&store.url)
        .await
        .unwrap();
    let shares = expected(&["r1", "r2"]);
    eventually(Duration::from_secs(20), async || {
        let (o1, o2) = (owned(&r1).await, owned(&r2).await);
        match (o1, o2) == (shares["r1"].len(), shares["r2"].len()) {
            true => Ok(()),
            false => Err(format!("owned r1 {o1}, r2 {o2}; expected {shares:?}")),
        }
    })
    .await;
    trade_everywhere(&sim, "BUY").await;
    all_stored_once(&sim, &db, "per replica").await;
    // Both spent weight on the venue, each against its own budget: nothing in PostgreSQL.
    for svc in [&r1, &r2] {
        let used = common::sample(&svc.metrics().await, "script_manager_api_weight_used").unwrap_or(0.0);
        assert!(used > 0.0, "each replica counts its own weight");
    }
    assert_eq!(
        cluster_budget_rows(&db).await,
        0,
        "no cluster budget with per_replica egress"
    );
    assert!(r1.log().contains("exchange.egress = \"per_replica\""), "{}", r1.log());
}
