//! Leases with fencing tokens, kept in PostgreSQL and timed by the
//! database's clock, never the replicas'.
//!
//! One row per process says which replica holds it, until when, the last
//! grid slot granted and the fencing token. A replica that holds a lease
//! keeps it by renewing it; another may take it only once it has expired or
//! was released. Each claim is for one slot (a tick on the grid all replicas
//! share, numbered from the database's clock), is granted at most once, and
//! bumps the token; a write made for a run commits only while its token is
//! still the current one (`store::Fence`), so a replica that was frozen past
//! its lease cannot commit anything.

use sqlx::{PgPool, Row};

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This replica runs the tick; its writes must carry `token`.
    Won {
        token: i64,
        slot: i64,
        /// The lease was another replica's and lapsed without being released: a failover.
        took_over: bool,
    },
    /// Another replica holds the lease, or this slot was already granted.
    Lost,
}

/// What the heartbeat reads back: one row per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub process: String,
    pub holder: String,
    pub token: i64,
    /// Unix milliseconds, database clock.
    pub expires_at_ms: i64,
    pub expired: bool,
    /// The replica that asked for it (its fair share), if any.
    pub wanted_by: Option<String>,
}

/// The slot of the tick nearest to the database's now on a grid of
/// `interval_ms` shifted by `offset_ms`. Rounding (not flooring) lets a
/// replica fire a few milliseconds early or late and still name the same tick.
const SLOT: &str = "round((extract(epoch from now()) * 1000 - $4) / $5)::bigint";

pub struct Leases {
    pool: PgPool,
}

impl Leases {
    /// Creates the coordination tables if needed.
    pub async fn new(pool: PgPool) -> anyhow::Result<Self> {
        super::create_tables(
            &pool,
            &[
                "CREATE TABLE IF NOT EXISTS ha_leases (
                process TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                token BIGINT NOT NULL,
                last_slot BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL,
                released BOOLEAN NOT NULL DEFAULT false,
                taken_over BOOLEAN NOT NULL DEFAULT false
            )",
                // The replica whose fair share a process is asks its holder for it (scale-out).
                "ALTER TABLE ha_leases ADD COLUMN IF NOT EXISTS wanted_by TEXT",
                "CREATE TABLE IF NOT EXISTS ha_replicas (
                replica TEXT PRIMARY KEY,
                last_seen TIMESTAMPTZ NOT NULL
            )",
            ],
        )
        .await?;
        Ok(Leases { pool })
    }

    /// Claims the current tick of `process` (on the grid `interval_ms` +
    /// `offset_ms`) for `holder`, with a lease of `lease_ms`. A manual run
    /// (`manual`) needs the lease but no new slot.
    ///
    /// `linked` are the processes `process` is chained or exclusive with
    /// (directly or not): while another replica holds a live lease on any of
    /// them, the claim is lost, so a group is always run by one replica.
    /// Claims in a group are serialized by an advisory lock on the group, so
    /// two replicas cannot each take one member at the same instant.
    pub async fn claim(
        &self,
        process: &str,
        holder: &str,
        lease_ms: i64,
        grid: (i64, i64),
        manual: bool,
        linked: &[String],
    ) -> anyhow::Result<Claim> {
        if linked.is_empty() {
            return self.claim_on(&self.pool, process, holder, lease_ms, grid, manual).await;
        }
        let mut tx = self.pool.begin().await?;
        let mut group: Vec<&str> = linked.iter().map(String::as_str).chain([process]).collect();
        group.sort_unstable();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("script-manager group {}", group[0]))
            .execute(&mut *tx)
            .await?;
        let held_elsewhere = sqlx::query(
            "SELECT 1 FROM ha_leases
              WHERE process = ANY($1) AND holder <> $2 AND NOT released AND expires_at >= now() LIMIT 1",
        )
        .bind(linked)
        .bind(holder)
        .fetch_optional(&mut *tx)
        .await?;
        if held_elsewhere.is_some() {
            tx.rollback().await?;
            return Ok(Claim::Lost);
        }
        let claim = self.claim_on(&mut *tx, process, holder, lease_ms, grid, manual).await?;
        tx.commit().await?;
        Ok(claim)
    }

    async fn claim_on<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        executor: E,
        process: &str,
        holder: &str,
        lease_ms: i64,
        grid: (i64, i64),
        manual: bool,
    ) -> anyhow::Result<Claim> {
        let (interval_ms, offset_ms) = grid;
        let sql = format!(
            "INSERT INTO ha_leases (process, holder, token, last_slot, expires_at)
             VALUES ($1, $2, 1, {SLOT} - CASE WHEN $6 THEN 1 ELSE 0 END,
                     now() + make_interval(secs => $3::double precision / 1000))
             ON CONFLICT (process) DO UPDATE
                SET holder = excluded.holder,
                    token = ha_leases.token + 1,
                    last_slot = CASE WHEN $6 THEN ha_leases.last_slot ELSE {SLOT} END,
                    expires_at = excluded.expires_at,
                    released = false,
                    wanted_by = CASE WHEN ha_leases.holder = excluded.holder THEN ha_leases.wanted_by END,
                    taken_over = ha_leases.holder <> excluded.holder AND NOT ha_leases.released
              WHERE ($6 OR ha_leases.last_slot < {SLOT})
                AND (ha_leases.holder = excluded.holder OR ha_leases.released OR ha_leases.expires_at < now())
             RETURNING token, last_slot, taken_over"
        );
        let won = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .bind(holder)
            .bind(lease_ms)
            .bind(offset_ms as f64)
            .bind(interval_ms.max(1) as f64)
            .bind(manual)
            .fetch_optional(executor)
            .await?;
        Ok(match won {
            Some(row) => Claim::Won {
                token: row.try_get("token")?,
                slot: row.try_get("last_slot")?,
                took_over: row.try_get("taken_over")?,
            },
            None => Claim::Lost,
        })
    }

    /// Extends the unexpired leases `holder` holds among `processes` (each
    /// by its own lease length) and reports the holder alive. Returns the
    /// processes whose lease was extended, with their tokens.
    pub async fn renew(&self, holder: &str, processes: &[(String, i64)]) -> anyhow::Result<Vec<(String, i64)>> {
        let names: Vec<String> = processes.iter().map(|(p, _)| p.clone()).collect();
        let leases: Vec<i64> = processes.iter().map(|(_, ms)| *ms).collect();
        let rows = sqlx::query(
            "UPDATE ha_leases l SET expires_at = now() + make_interval(secs => v.ms::double precision / 1000)
               FROM unnest($2::text[], $3::bigint[]) AS v(process, ms)
              WHERE l.process = v.process AND l.holder = $1 AND NOT l.released AND l.expires_at >= now()
             RETURNING l.process, l.token",
        )
        .bind(holder)
        .bind(&names)
        .bind(&leases)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("process")?, r.try_get("token")?)))
            .collect()
    }

    /// Records `replica` alive now; returns the replicas seen within `window_ms`, by name.
    pub async fn heartbeat(&self, replica: &str, window_ms: i64) -> anyhow::Result<Vec<String>> {
        sqlx::query(
            "INSERT INTO ha_replicas (replica, last_seen) VALUES ($1, now())
             ON CONFLICT (replica) DO UPDATE SET last_seen = now()",
        )
        .bind(replica)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT replica FROM ha_replicas
              WHERE last_seen > now() - make_interval(secs => $1::double precision / 1000) ORDER BY replica",
        )
        .bind(window_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("replica")?)).collect()
    }

    /// Deletes the heartbeat rows of replicas not seen for `older_than_ms`
    /// (replicas that died or were renamed: a `hostname-pid` id is new at
    /// every restart). Returns how many went.
    pub async fn prune_replicas(&self, older_than_ms: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM ha_replicas WHERE last_seen < now() - make_interval(secs => $1::double precision / 1000)",
        )
        .bind(older_than_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Deletes the per-replica leases (`<process>@<replica>`, see
    /// `coordinator::lease_key`) that lapsed and whose replica's heartbeat
    /// row is gone (pruned: not seen for an hour or more), so a `hostname-pid`
    /// replica id, new at every start, leaves no rows behind. Returns how many.
    pub async fn prune_own_leases(&self) -> anyhow::Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM ha_leases l
              WHERE position('@' in l.process) > 0 AND (l.released OR l.expires_at < now())
                AND NOT EXISTS (SELECT 1 FROM ha_replicas r WHERE r.replica = l.holder)",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Every lease, for the status document.
    pub async fn view(&self) -> anyhow::Result<Vec<LeaseView>> {
        let rows = sqlx::query(
            "SELECT process, holder, token, (extract(epoch from expires_at) * 1000)::bigint AS expires_ms,
                    (released OR expires_at < now()) AS expired, wanted_by
               FROM ha_leases ORDER BY process",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseView {
                    process: r.try_get("process")?,
                    holder: r.try_get("holder")?,
                    token: r.try_get("token")?,
                    expires_at_ms: r.try_get("expires_ms")?,
                    expired: r.try_get("expired")?,
                    wanted_by: r.try_get("wanted_by")?,
                })
            })
            .collect()
    }

    /// Gives up `holder`'s leases at once (graceful shutdown), so another
    /// replica takes over at its next tick instead of after the lease time.
    pub async fn release_all(&self, holder: &str) -> anyhow::Result<u64> {
        Ok(
            sqlx::query("UPDATE ha_leases SET released = true, expires_at = now() WHERE holder = $1 AND NOT released")
                .bind(holder)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Gives up one lease (paused here, or shutting down while idle), and
    /// withdraws `holder`'s request for it, if any.
    pub async fn release(&self, process: &str, holder: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE ha_leases SET released = (released OR holder = $2),
                    expires_at = CASE WHEN holder = $2 THEN now() ELSE expires_at END,
                    wanted_by = CASE WHEN wanted_by = $2 OR holder = $2 THEN NULL ELSE wanted_by END
              WHERE process = $1 AND (holder = $2 OR wanted_by = $2)",
        )
        .bind(process)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `replica`, whose fair share `process` is, asks its holder to hand it over.
    pub async fn want(&self, process: &str, replica: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE ha_leases SET wanted_by = $2
              WHERE process = $1 AND holder <> $2 AND wanted_by IS DISTINCT FROM $2",
        )
        .bind(process)
        .bind(replica)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The database's clock, unix milliseconds.
    pub async fn now_ms(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS now_ms")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("now_ms")?)
    }

    /// Removes the replica's heartbeat row (graceful shutdown).
    pub async fn leave(&self, replica: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM ha_replicas WHERE replica = $1")
            .bind(replica)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
