//! The audit trail: one row per mutating HTTP call. Rows are only added;
//! old ones are pruned after `AUDIT_KEPT_MS` (with the other retention
//! pruning, every ten minutes) so the table stays bounded.

use serde::Serialize;
use sqlx::Row;

use super::Store;

/// How long audit rows are kept.
pub const AUDIT_KEPT_MS: i64 = 90 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    /// Increasing per store: `before=<id>` pages back.
    pub id: i64,
    pub at_ms: i64,
    /// The token's name (`anonymous` when none was recognised).
    pub who: String,
    pub method: String,
    /// The route's template, e.g. `/api/levels/{id}`.
    pub route: String,
    /// The path as called, e.g. `/api/levels/42`.
    pub target: String,
    pub status: i64,
    /// `ok` (2xx), `refused` (4xx) or `error` (5xx).
    pub outcome: String,
    pub detail: Option<serde_json::Value>,
}

impl Store {
    pub async fn insert_audit(&self, e: &AuditEntry) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, who, method, route, target, status, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.at_ms)
        .bind(&e.who)
        .bind(&e.method)
        .bind(&e.route)
        .bind(&e.target)
        .bind(e.status)
        .bind(&e.outcome)
        .bind(e.detail.as_ref().map(|d| d.to_string()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes rows older than `before_ms`; returns how many.
    pub async fn prune_audit(&self, before_ms: i64) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM audit WHERE at < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// The newest `limit` rows, older than row `before` when given.
    pub async fn audit(&self, before: Option<i64>, limit: i64) -> anyhow::Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, who, method, route, target, status, outcome, detail FROM audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let detail: Option<String> = r.try_get("detail")?;
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at_ms: r.try_get("at")?,
                    who: r.try_get("who")?,
                    method: r.try_get("method")?,
                    route: r.try_get("route")?,
                    target: r.try_get("target")?,
                    status: r.try_get("status")?,
                    outcome: r.try_get("outcome")?,
                    detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
                })
            })
            .collect()
    }
}
