//! Leases with fencing tokens, kept in PostgreSQL and timed by the
//! database's clock, never the replicas'.
//!
//! A tick of a process is identified by its slot (its index on a grid all
//! replicas share). [`Leases::claim`] grants the slot to one replica only:
//! the row is taken if its lease has expired or its holder is the claimant,
//! and only for a slot later than the last one granted. Every grant bumps
//! the process's fencing token; a write made for a run must check, in its own
//! transaction, that the token is still current ([`Leases::is_current`]), so a
//! replica that was frozen past its lease cannot commit anything.

use sqlx::{PgPool, Postgres, Row, Transaction};

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This replica runs the slot; writes must carry `token`.
    Won { token: i64, expires_at_ms: i64 },
    /// Another replica holds an unexpired lease.
    Held { holder: String, expires_at_ms: i64 },
    /// The slot (or a later one) was already granted: the tick ran elsewhere.
    AlreadyRan { last_slot: i64 },
}

pub struct Leases {
    pool: PgPool,
}

impl Leases {
    pub async fn new(pool: PgPool) -> anyhow::Result<Self> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS ha_leases (
                process TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                token BIGINT NOT NULL,
                last_slot BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )",
        )
        .execute(&pool)
        .await?;
        Ok(Leases { pool })
    }

    /// Claims `slot` of `process` for `holder`, for `lease_ms` of database time.
    pub async fn claim(&self, process: &str, holder: &str, slot: i64, lease_ms: i64) -> anyhow::Result<Claim> {
        let won = sqlx::query(
            "INSERT INTO ha_leases (process, holder, token, last_slot, expires_at)
             VALUES ($1, $2, 1, $3, now() + make_interval(secs => $4::double precision / 1000))
             ON CONFLICT (process) DO UPDATE
                SET holder = excluded.holder, token = ha_leases.token + 1,
                    last_slot = excluded.last_slot, expires_at = excluded.expires_at
              WHERE ha_leases.last_slot < excluded.last_slot
                AND (ha_leases.expires_at < now() OR ha_leases.holder = excluded.holder)
             RETURNING token, (extract(epoch from expires_at) * 1000)::bigint AS expires_ms",
        )
        .bind(process)
        .bind(holder)
        .bind(slot)
        .bind(lease_ms)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = won {
            return Ok(Claim::Won {
                token: row.try_get("token")?,
                expires_at_ms: row.try_get("expires_ms")?,
            });
        }
        let row = sqlx::query(
            "SELECT holder, last_slot, (extract(epoch from expires_at) * 1000)::bigint AS expires_ms,
                    expires_at < now() AS expired
               FROM ha_leases WHERE process = $1",
        )
        .bind(process)
        .fetch_one(&self.pool)
        .await?;
        let last_slot: i64 = row.try_get("last_slot")?;
        let expired: bool = row.try_get("expired")?;
        if last_slot >= slot || expired {
            return Ok(Claim::AlreadyRan { last_slot });
        }
        Ok(Claim::Held {
            holder: row.try_get("holder")?,
            expires_at_ms: row.try_get("expires_ms")?,
        })
    }

    /// Extends a lease while a long run is in flight; `false` if it was lost.
    pub async fn renew(&self, process: &str, holder: &str, token: i64, lease_ms: i64) -> anyhow::Result<bool> {
        let n = sqlx::query(
            "UPDATE ha_leases SET expires_at = now() + make_interval(secs => $4::double precision / 1000)
              WHERE process = $1 AND holder = $2 AND token = $3 AND expires_at >= now()",
        )
        .bind(process)
        .bind(holder)
        .bind(token)
        .bind(lease_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Ends a lease early (the run finished), keeping its slot and token.
    pub async fn release(&self, process: &str, holder: &str, token: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE ha_leases SET expires_at = now() WHERE process = $1 AND holder = $2 AND token = $3")
            .bind(process)
            .bind(holder)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inside a write's transaction: whether `token` is still the process's
    /// current one. Locks the lease row until the transaction ends, so a
    /// claim cannot slip in between the check and the commit.
    pub async fn is_current(tx: &mut Transaction<'_, Postgres>, process: &str, token: i64) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT token FROM ha_leases WHERE process = $1 FOR SHARE")
            .bind(process)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>("token"))
            .transpose()?
            .is_some_and(|t| t == token))
    }
}
