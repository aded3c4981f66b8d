//! Fenced writes (HA): a write transaction that commits only while the run's
//! lease token is still its process's current one.
//!
//! With one replica there is nothing to fence and `Fence::none()` costs
//! nothing. With several, the write's own transaction reads the lease row
//! `FOR SHARE`, so a new claim cannot slip in between the check and the
//! commit, and a replica that was frozen past its lease commits nothing.

use sqlx::{Any, Row, Transaction};

use super::Store;
use crate::process::{Fence, Fenced};

impl Store {
    /// Begins a write transaction that may commit only under `fence`; a stale
    /// token rolls back and answers [`Fenced`] (inside the `anyhow::Error`).
    pub(crate) async fn begin_fenced(&self, fence: &Fence) -> anyhow::Result<Transaction<'static, Any>> {
        let mut tx = self.pool().begin().await?;
        if let Some((process, token)) = fence.condition() {
            let row = sqlx::query("SELECT token FROM ha_leases WHERE process = $1 FOR SHARE")
                .bind(process.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            let current = row.map(|r| r.try_get::<i64, _>("token")).transpose()?;
            if current != Some(token) {
                tx.rollback().await?;
                tracing::warn!(process, token, ?current, "write fenced off: lease lost");
                return Err(Fenced {
                    process: process.to_string(),
                    token,
                    current,
                }
                .into());
            }
        }
        Ok(tx)
    }
}
