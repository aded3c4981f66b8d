//! High availability: several replicas on one PostgreSQL, each tick run
//! exactly once, every write of a run fenced (issue 7).
//!
//! [`Coordinator`] is this replica's side of it and implements the
//! scheduler's `Coordinator` trait: it claims a process's lease before each
//! run ([`lease`] holds the SQL), keeps the leases it holds alive with a
//! heartbeat ([`heartbeat`]), notices when it can no longer prove it holds
//! one, and tells the scheduler when the next tick of the shared grid is due
//! ([`grid`]). The cluster-wide API budget is [`budget`] (the `budget`
//! layer's `ClusterBudget` trait on PostgreSQL). Timing that must agree
//! across replicas (lease expiry, slot numbers) is the database's clock.
//!
//! With `ha.share_accounts`, the exchange accounts are spread over the live
//! replicas too ([`accounts`]): the account processes run on every replica,
//! each under a lease of its own (`<process>@<replica>`), for the accounts the
//! registry says are this replica's.
//!
//! Owns: leases, fencing tokens, the replica list, the cluster budget rows,
//! which accounts are this replica's. Imports `scheduler` and `budget` (the
//! traits it implements), `accounts` (the registry it assigns), `config`,
//! `telemetry`, `clock`; never `status`, `store` or the processes.

pub mod accounts;
pub mod budget;
mod coordinator;
mod grid;
mod heartbeat;
pub mod lease;
pub mod shares;

pub use coordinator::Coordinator;

/// The advisory lock the coordination tables are created under: the same key
/// as the store's migrations (`store::SCHEMA_LOCK`, which `ha` may not
/// import), so replicas starting together never run the same DDL at once
/// (PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe against itself).
pub const SCHEMA_LOCK: i64 = 0x736d_5f73_6368_656d;

/// Runs `statements` in one transaction under [`SCHEMA_LOCK`].
async fn create_tables(pool: &sqlx::PgPool, statements: &[&str]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    for statement in statements {
        // Our own DDL, not user input.
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

use crate::config::HaConfig;

/// `ha.replica_id`, or hostname-pid.
pub fn replica_id(config: &HaConfig) -> String {
    config.replica_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "replica".into());
        format!("{host}-{}", std::process::id())
    })
}
