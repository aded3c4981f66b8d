//! Lease primitives for several replicas, against the machine's PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, TestStore};
use script_manager::ha::lease::{Claim, Leases};
use sqlx::postgres::PgPoolOptions;

async fn leases() -> (Leases, sqlx::PgPool, TestStore) {
    let store = TestStore::new(Backend::Postgres);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&store.url)
        .await
        .unwrap();
    (Leases::new(pool.clone()).await.unwrap(), pool, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_wins_each_slot_and_tokens_only_grow() {
    let (leases, _pool, _store) = leases().await;
    let leases = std::sync::Arc::new(leases);
    let claims: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|holder| {
            let leases = leases.clone();
            tokio::spawn(async move { leases.claim("trade_sync", holder, 1, 10_000).await.unwrap() })
        })
        .collect();
    let mut won = Vec::new();
    for c in claims {
        if let Claim::Won { token, .. } = c.await.unwrap() {
            won.push(token);
        }
    }
    assert_eq!(won, vec![1], "exactly one replica runs slot 1");
    // Nobody runs slot 1 again, not even the winner.
    for holder in ["a", "b", "c"] {
        assert!(matches!(
            leases.claim("trade_sync", holder, 1, 10_000).await.unwrap(),
            Claim::AlreadyRan { last_slot: 1 } | Claim::Held { .. }
        ));
    }
    // Processes are independent.
    assert!(matches!(
        leases.claim("level_monitor", "b", 1, 10_000).await.unwrap(),
        Claim::Won { token: 1, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_blocks_others_until_released_or_expired() {
    let (leases, pool, _store) = leases().await;
    let Claim::Won { token: t1, .. } = leases.claim("p", "a", 1, 10_000).await.unwrap() else {
        panic!()
    };
    assert!(
        matches!(leases.claim("p", "b", 2, 10_000).await.unwrap(), Claim::Held { ref holder, .. } if holder == "a")
    );
    leases.release("p", "a", t1).await.unwrap();
    let Claim::Won { token: t2, .. } = leases.claim("p", "b", 2, 300).await.unwrap() else {
        panic!()
    };
    assert!(t2 > t1);
    // b freezes past its lease; c takes over; b's token is no longer current and its renewal fails.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Claim::Won { token: t3, .. } = leases.claim("p", "c", 3, 10_000).await.unwrap() else {
        panic!()
    };
    assert!(t3 > t2);
    let mut tx = pool.begin().await.unwrap();
    assert!(
        !Leases::is_current(&mut tx, "p", t2).await.unwrap(),
        "the frozen replica is fenced off"
    );
    assert!(Leases::is_current(&mut tx, "p", t3).await.unwrap());
    tx.rollback().await.unwrap();
    assert!(!leases.renew("p", "b", t2, 10_000).await.unwrap());
    assert!(leases.renew("p", "c", t3, 10_000).await.unwrap());
}
