//! One API budget for the whole cluster, kept in PostgreSQL: the `budget`
//! layer's [`ClusterBudget`] step of admission.
//!
//! Each replica still admits a call through its own budgets first (per
//! process, then the venue's weight with priorities and the 429 pause); then
//! the call takes its share of the cluster's count for the venue's current
//! minute with one conditional upsert. The row can only grow up to the cap,
//! so however many replicas ask at once, the venue never sees more than
//! limit × margin from all of them together. The venue's own count
//! (`X-MBX-USED-WEIGHT-1M`) raises the row, as it raises the local one.
//! While PostgreSQL cannot be reached, admission takes from a local share:
//! the venue's budget divided by the replicas the heartbeat last saw alive.

use std::sync::atomic::{AtomicU32, Ordering};

use futures::future::BoxFuture;
use sqlx::{PgPool, Row};

use crate::budget::ClusterBudget;

pub struct PgClusterBudget {
    pool: PgPool,
    /// Replicas alive at the last heartbeat that reached PostgreSQL (0: none yet).
    replicas: AtomicU32,
}

/// The weight scope; a process's calls are counted under `calls:<process>`.
const WEIGHT: &str = "weight";

impl PgClusterBudget {
    /// Its own connections, so a burst of calls never delays a lease renewal.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(6)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("ha: cannot connect to {}: {e}", crate::config::redact_url(url)))?;
        Self::new(pool).await
    }

    pub async fn new(pool: PgPool) -> anyhow::Result<Self> {
        super::create_tables(
            &pool,
            &["CREATE TABLE IF NOT EXISTS ha_budget (
                scope TEXT NOT NULL,
                minute BIGINT NOT NULL,
                used BIGINT NOT NULL,
                PRIMARY KEY (scope, minute)
            )"],
        )
        .await?;
        Ok(PgClusterBudget {
            pool,
            replicas: AtomicU32::new(0),
        })
    }

    /// The heartbeat saw `alive` replicas (kept while PostgreSQL is away).
    pub fn saw_replicas(&self, alive: i64) {
        self.replicas
            .store(alive.clamp(0, u32::MAX as i64) as u32, Ordering::Relaxed);
    }

    /// Takes one call of `process` (up to `calls_limit` in the minute) and
    /// `weight` (up to `weight_cap`) in venue minute `minute`, both or
    /// neither. `Ok(false)`: the minute is spent for this caller.
    pub async fn try_take(
        &self,
        process: &str,
        calls_limit: u32,
        weight: u32,
        weight_cap: u32,
        minute: i64,
    ) -> anyhow::Result<bool> {
        if calls_limit == 0 || weight > weight_cap {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        let took_call = take(&mut tx, &format!("calls:{process}"), minute, 1, calls_limit).await?;
        if !took_call || !take(&mut tx, WEIGHT, minute, weight, weight_cap).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The venue says `used` weight is spent in `minute`: the cluster's count is at least that.
    pub async fn observe_used(&self, minute: i64, used: u32) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO ha_budget (scope, minute, used) VALUES ($1, $2, $3)
             ON CONFLICT (scope, minute) DO UPDATE SET used = GREATEST(ha_budget.used, excluded.used)",
        )
        .bind(WEIGHT)
        .bind(minute)
        .bind(used as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Weight the cluster counted in `minute`.
    pub async fn used(&self, minute: i64) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT used FROM ha_budget WHERE scope = $1 AND minute = $2")
            .bind(WEIGHT)
            .bind(minute)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("used")).transpose()?.unwrap_or(0))
    }

    /// Forgets minutes older than `before`.
    pub async fn prune(&self, before: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query("DELETE FROM ha_budget WHERE minute < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

impl ClusterBudget for PgClusterBudget {
    fn try_take<'a>(
        &'a self,
        process: &'a str,
        calls_limit: u32,
        weight: u32,
        weight_cap: u32,
        minute: i64,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(PgClusterBudget::try_take(
            self,
            process,
            calls_limit,
            weight,
            weight_cap,
            minute,
        ))
    }

    fn observe_used(&self, minute: i64, used: u32) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(PgClusterBudget::observe_used(self, minute, used))
    }

    fn ping(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed)
    }
}

async fn take(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    scope: &str,
    minute: i64,
    amount: u32,
    cap: u32,
) -> anyhow::Result<bool> {
    if amount > cap {
        return Ok(false);
    }
    let row = sqlx::query(
        "INSERT INTO ha_budget (scope, minute, used) VALUES ($1, $2, $3)
         ON CONFLICT (scope, minute) DO UPDATE SET used = ha_budget.used + excluded.used
          WHERE ha_budget.used + excluded.used <= $4
         RETURNING used",
    )
    .bind(scope)
    .bind(minute)
    .bind(amount as i64)
    .bind(cap as i64)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}
