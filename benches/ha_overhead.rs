//! `cargo bench --bench ha_overhead [-- postgres://...]`
//!
//! What several replicas cost a run, against a real PostgreSQL (default: the
//! machine's, database `test`; a fresh database is created and dropped):
//! the claim before each run, a store write with and without its fencing
//! check, and one call's admission in the cluster budget.

use std::sync::Arc;
use std::time::Instant;

use script_manager::ha::budget::PgClusterBudget;
use script_manager::ha::lease::{Claim, Leases};
use script_manager::process::Fence;
use script_manager::store::Store;
use sqlx::postgres::PgPoolOptions;

const N: usize = 2_000;

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, samples: Vec<f64>) {
    println!(
        "{what:<44} p50 {:>7.3} ms   p99 {:>7.3} ms   ({} samples)",
        percentile(samples.clone(), 0.5),
        percentile(samples.clone(), 0.99),
        samples.len()
    );
}

async fn timed<F, Fut>(mut f: F) -> Vec<f64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(N);
    for i in 0..N {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::args()
        .nth(1)
        .filter(|a| a.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("sm_bench_ha_{}", std::process::id());
    let admin_pool = PgPoolOptions::new().max_connections(1).connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin_pool)
        .await?;
    let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b));
    let result = run(&url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&admin_pool)
        .await?;
    result
}

async fn run(url: &str) -> anyhow::Result<()> {
    println!("ha_overhead: PostgreSQL at {}", script_manager::config::redact_url(url));
    let store = Store::open(url).await?;
    let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
    let leases = Arc::new(Leases::new(pool.clone()).await?);

    // Every claim is for a new tick (a 1 ms grid), as the holder makes them.
    let mut token = 0;
    let claims = timed(|_| {
        let leases = leases.clone();
        async move {
            let _ = leases.claim("bench", "replica-a", 10_000, (1, 0), false, &[]).await;
        }
    })
    .await;
    if let Claim::Won { token: t, .. } = leases.claim("bench", "replica-a", 10_000, (1, 0), true, &[]).await? {
        token = t;
    }
    report("claim a tick (holder)", claims);
    let lost = timed(|_| {
        let leases = leases.clone();
        async move {
            let _ = leases.claim("bench", "replica-b", 10_000, (1, 0), false, &[]).await;
        }
    })
    .await;
    report("claim a tick (another replica holds it)", lost);

    let fence = Fence::lease(Arc::from("bench"), token);
    let none = Fence::none();
    let store = Arc::new(store);
    let data = serde_json::json!({"pnl": "12.5"});
    let plain = timed(|i| {
        let (store, none, data) = (store.clone(), none.clone(), data.clone());
        async move {
            store.put_snapshot(&none, "main", &data, i as i64).await.unwrap();
        }
    })
    .await;
    report("snapshot write, no fence", plain);
    let fenced = timed(|i| {
        let (store, fence, data) = (store.clone(), fence.clone(), data.clone());
        async move {
            store.put_snapshot(&fence, "main", &data, i as i64).await.unwrap();
        }
    })
    .await;
    report("snapshot write, fenced", fenced);

    let budget = Arc::new(PgClusterBudget::new(pool).await?);
    let minute = 1;
    let admits = timed(|_| {
        let budget = budget.clone();
        async move {
            budget.try_take("bench", u32::MAX, 1, u32::MAX, minute).await.unwrap();
        }
    })
    .await;
    report("cluster budget: admit one call", admits);
    Ok(())
}
