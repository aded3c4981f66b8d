//! The HA primitives against the machine's PostgreSQL: leases with slots and
//! fencing tokens, fenced store writes, and the cluster's shared budget.
//! (Whole replicas are in `tests/ha_replicas.rs`.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestStore};
use script_manager::budget::{Admission, ProcessCalls, VenueWeight};
use script_manager::ha::budget::PgClusterBudget as ClusterBudget;
use script_manager::ha::lease::{Claim, Leases};
use script_manager::process::{ErrorKind, Fence, Fenced};
use script_manager::processes::platform::store_error;
use script_manager::store::Store;
use script_manager::telemetry::Metrics;
use sqlx::postgres::PgPoolOptions;

/// A grid whose slot changes every millisecond: each claim is for a new tick.
const EVERY_MS: (i64, i64) = (1, 0);
/// A grid whose slot does not change during a test: every claim is for the same tick.
const HOURLY: (i64, i64) = (3_600_000, 0);

async fn leases() -> (Arc<Leases>, sqlx::PgPool, TestStore) {
    let store = TestStore::new(Backend::Postgres);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&store.url)
        .await
        .unwrap();
    (Arc::new(Leases::new(pool.clone()).await.unwrap()), pool, store)
}

fn won(c: &Claim) -> Option<i64> {
    match c {
        Claim::Won { token, .. } => Some(*token),
        Claim::Lost => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_wins_a_tick_and_keeps_the_lease_while_it_renews() {
    let (leases, _pool, _store) = leases().await;
    let claims: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|holder| {
            let leases = leases.clone();
            tokio::spawn(async move {
                let c = leases
                    .claim("trade_sync", holder, 10_000, HOURLY, false, &[])
                    .await
                    .unwrap();
                (holder.to_string(), c)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for c in claims {
        let (holder, claim) = c.await.unwrap();
        if let Some(token) = won(&claim) {
            winners.push((holder, token));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one replica runs the tick: {winners:?}");
    let (holder, t1) = winners.pop().unwrap();
    assert_eq!(t1, 1);
    // The same tick is never granted twice, not even to its winner.
    for other in ["a", "b", "c"] {
        assert_eq!(
            leases
                .claim("trade_sync", other, 10_000, HOURLY, false, &[])
                .await
                .unwrap(),
            Claim::Lost
        );
    }
    // Later ticks: the holder wins each (with a new, larger token); the others lose while it holds the lease.
    let mut last = t1;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        for other in ["a", "b", "c"].into_iter().filter(|o| *o != holder) {
            assert_eq!(
                leases
                    .claim("trade_sync", other, 10_000, EVERY_MS, false, &[])
                    .await
                    .unwrap(),
                Claim::Lost
            );
        }
        let token = won(&leases
            .claim("trade_sync", &holder, 10_000, EVERY_MS, false, &[])
            .await
            .unwrap())
        .expect("the holder keeps its lease");
        assert!(token > last, "tokens only grow");
        last = token;
    }
    let renewed = leases.renew(&holder, &[("trade_sync".into(), 10_000)]).await.unwrap();
    assert_eq!(renewed, vec![("trade_sync".to_string(), last)]);
    // Processes are independent.
    assert!(matches!(
        leases
            .claim("level_monitor", "b", 10_000, HOURLY, false, &[])
            .await
            .unwrap(),
        Claim::Won { token: 1, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off() {
    let (leases, _pool, pg) = leases().await;
    let store = Store::open(&pg.url).await.unwrap();
    // Rejections are counted where a refused write is mapped to a run error.
    let metrics = Metrics::new();
    let rejections = || fencing_rejections(&metrics);
    let t1 = won(&leases
        .claim("position_sync", "a", 300, EVERY_MS, false, &[])
        .await
        .unwrap())
    .unwrap();
    let fence_a = Fence::lease(Arc::from("position_sync"), t1);
    store
        .replace_positions(&fence_a, "main", &[], 1)
        .await
        .expect("the holder writes under its lease");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        leases
            .claim("position_sync", "b", 10_000, EVERY_MS, false, &[])
            .await
            .unwrap(),
        Claim::Lost,
        "held"
    );
    // a freezes past its lease; b takes over (a failover, not a hand-over).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Claim::Won {
        token: t2, took_over, ..
    } = leases
        .claim("position_sync", "b", 10_000, EVERY_MS, false, &[])
        .await
        .unwrap()
    else {
        panic!("b takes the expired lease")
    };
    assert!(t2 > t1 && took_over);
    assert!(
        leases
            .renew("a", &[("position_sync".into(), 10_000)])
            .await
            .unwrap()
            .is_empty(),
        "a cannot renew what it lost"
    );
    let err = store
        .replace_positions(&fence_a, "main", &[], 2)
        .await
        .expect_err("a's write is fenced off");
    let fenced = err.downcast_ref::<Fenced>().expect("a Fenced error");
    assert_eq!((fenced.token, fenced.current), (t1, Some(t2)));
    assert_eq!(store_error(&metrics.domain, err).kind, ErrorKind::Fenced);
    assert_eq!(rejections(), 1);
    let fence_b = Fence::lease(Arc::from("position_sync"), t2);
    store.replace_positions(&fence_b, "main", &[], 3).await.unwrap();
    assert_eq!(rejections(), 1);
    // A release hands over at once, and is not counted as a failover.
    assert_eq!(leases.release_all("b").await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(matches!(
        leases
            .claim("position_sync", "c", 10_000, EVERY_MS, false, &[])
            .await
            .unwrap(),
        Claim::Won { took_over: false, .. }
    ));
    let view = leases.view().await.unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!((view[0].holder.as_str(), view[0].expired), ("c", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_needs_the_lease_but_takes_no_tick() {
    let (leases, _pool, _store) = leases().await;
    let Claim::Won { slot, .. } = leases.claim("p", "a", 10_000, HOURLY, true, &[]).await.unwrap() else {
        panic!("a free lease can be taken for a manual run")
    };
    assert_eq!(
        leases.claim("p", "b", 10_000, HOURLY, true, &[]).await.unwrap(),
        Claim::Lost,
        "held by a"
    );
    let Claim::Won { slot: tick, .. } = leases.claim("p", "a", 10_000, HOURLY, false, &[]).await.unwrap() else {
        panic!("the scheduled tick still runs after a manual run")
    };
    assert_eq!(tick, slot + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_budget_never_grants_more_than_its_cap() {
    let (_leases, pool, _store) = leases().await;
    let budget = Arc::new(ClusterBudget::new(pool).await.unwrap());
    let minute = 29_000_000;
    // 3 "replicas" × 2 processes race for weight 5 each; the cap is 96, the per-process limit 12 calls.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let budget = budget.clone();
            tokio::spawn(async move {
                let process = if i % 2 == 0 { "trade_sync" } else { "position_sync" };
                budget.try_take(process, 12, 5, 96, minute).await.unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap() as u32;
    }
    assert_eq!(
        granted, 19,
        "96 / 5 = 19 calls fit (and 2 × 12 calls per process would be 24)"
    );
    assert_eq!(budget.used(minute).await.unwrap(), 95);
    // A per-process limit binds on its own.
    assert!(budget.try_take("level_monitor", 2, 1, 1000, minute + 1).await.unwrap());
    assert!(budget.try_take("level_monitor", 2, 1, 1000, minute + 1).await.unwrap());
    assert!(!budget.try_take("level_monitor", 2, 1, 1000, minute + 1).await.unwrap());
    // The venue's own count raises ours, never lowers it.
    budget.observe_used(minute + 1, 900).await.unwrap();
    budget.observe_used(minute + 1, 10).await.unwrap();
    assert_eq!(budget.used(minute + 1).await.unwrap(), 900);
    assert!(
        !budget
            .try_take("price_update", 10, 101, 1000, minute + 1)
            .await
            .unwrap()
    );
    assert!(
        budget
            .try_take("price_update", 10, 100, 1000, minute + 1)
            .await
            .unwrap()
    );
    assert_eq!(
        budget.prune(minute + 1).await.unwrap(),
        3,
        "weight + 2 process rows of the old minute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_venue_count_raises_the_cluster_row_of_the_minute_it_was_counted_in() {
    let (_leases, pool, _store) = leases().await;
    let cluster = Arc::new(ClusterBudget::new(pool).await.unwrap());
    // Our clock reads 100 ms before a minute turns.
    let minute_start = 29_000_100 * 60_000;
    let weight = Arc::new(VenueWeight::new(2400, 1.0, 0.0, []).anchored_at(minute_start + 59_900));
    let admission = Admission::new(Arc::new(ProcessCalls::new([])), weight.clone());
    admission.share_with(cluster.clone());
    let sent_in = weight.venue_minute();
    // The answer, with the old minute's count, arrives once the next minute has begun.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(weight.venue_minute(), sent_in + 1);
    admission.observe_used_weight(2300, sent_in).await;
    assert_eq!(
        cluster.used(sent_in).await.unwrap(),
        2300,
        "the minute it was counted in"
    );
    assert_eq!(
        cluster.used(sent_in + 1).await.unwrap(),
        0,
        "the new minute is untouched"
    );
    assert_eq!(weight.usage().used, 0, "and so is ours");
}

/// `script_manager_ha_fencing_rejections_total` as scraped.
fn fencing_rejections(metrics: &Metrics) -> u64 {
    metrics
        .encode_prometheus()
        .lines()
        .find_map(|l| l.strip_prefix("script_manager_ha_fencing_rejections_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the series exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_processes_are_held_by_one_replica_whatever_the_race() {
    let (leases, _pool, _store) = leases().await;
    let group = |me: &str| -> Vec<String> {
        ["a", "b", "c"]
            .iter()
            .filter(|p| **p != me)
            .map(|p| p.to_string())
            .collect()
    };
    // Two replicas race for the three members of one group, many times over.
    let mut tasks = Vec::new();
    for round in 0..20 {
        for (holder, process) in [
            ("r1", "a"),
            ("r2", "b"),
            ("r1", "c"),
            ("r2", "a"),
            ("r1", "b"),
            ("r2", "c"),
        ] {
            let leases = leases.clone();
            let linked = group(process);
            tasks.push(tokio::spawn(async move {
                let c = leases
                    .claim(process, holder, 10_000, EVERY_MS, false, &linked)
                    .await
                    .unwrap();
                (round, holder, process, won(&c).is_some())
            }));
        }
    }
    let mut winners = std::collections::BTreeSet::new();
    for t in tasks {
        let (_, holder, _, won) = t.await.unwrap();
        if won {
            winners.insert(holder);
        }
    }
    assert_eq!(winners.len(), 1, "the group was split between {winners:?}");
    // An unlinked process is free to go elsewhere.
    let other = if winners.contains("r1") { "r2" } else { "r1" };
    assert!(won(&leases.claim("z", other, 10_000, EVERY_MS, false, &[]).await.unwrap()).is_some());
    // Once the holder releases every member, the other replica takes the group.
    let holder = *winners.iter().next().unwrap();
    for p in ["a", "b", "c"] {
        leases.release(p, holder).await.unwrap();
    }
    assert!(
        won(&leases
            .claim("b", other, 10_000, EVERY_MS, false, &group("b"))
            .await
            .unwrap())
        .is_some()
    );
    assert!(
        won(&leases
            .claim("a", holder, 10_000, EVERY_MS, false, &group("a"))
            .await
            .unwrap())
        .is_none(),
        "b is held by {other} now, so a cannot go to {holder}"
    );
}
