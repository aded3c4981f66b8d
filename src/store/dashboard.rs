//! Cached per-account analytics.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::Store;
use crate::process::Fence;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub account: String,
    pub data: Value,
    pub computed_at: i64,
}

impl Store {
    pub async fn put_snapshot(&self, fence: &Fence, account: &str, data: &Value, now: i64) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(fence).await?;
        sqlx::query(
            "INSERT INTO dashboard_snapshots (account, data, computed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account) DO UPDATE SET data = excluded.data, computed_at = excluded.computed_at",
        )
        .bind(account.to_string())
        .bind(data.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn snapshot(&self, account: &str) -> anyhow::Result<Option<Snapshot>> {
        let row = sqlx::query("SELECT * FROM dashboard_snapshots WHERE account = $1")
            .bind(account.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| {
            let data: String = r.try_get("data")?;
            Ok(Snapshot {
                account: r.try_get("account")?,
                data: serde_json::from_str(&data)?,
                computed_at: r.try_get("computed_at")?,
            })
        })
        .transpose()
    }

    /// Time of the oldest snapshot, if any.
    pub async fn oldest_snapshot_ms(&self) -> anyhow::Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(computed_at) AS oldest FROM dashboard_snapshots")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("oldest")?)
    }
}
