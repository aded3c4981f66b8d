//! The run history: every finished run, pruned by retention.

use serde_json::{Value, json};
use sqlx::Row;

use super::Store;
use crate::clock::{ms_of, rfc3339_ms};
use crate::process::RunRecord;

impl Store {
    pub async fn insert_run(&self, r: &RunRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO runs (process, trigger, started_at, finished_at, duration_seconds, lag_seconds, attempts, \
             outcome, error_kind, error_message, api_calls, trace_id, slot, replica, lease_token) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(r.process.to_string())
        .bind(r.trigger.as_str())
        .bind(ms_of(r.started_at))
        .bind(ms_of(r.finished_at))
        .bind(r.duration_seconds)
        .bind(r.lag_seconds)
        .bind(r.attempts as i64)
        .bind(r.outcome)
        .bind(r.error_kind.map(|k| k.as_str()))
        .bind(r.error_message.clone())
        .bind(r.api_calls as i64)
        .bind(r.trace_id.clone())
        .bind(r.lease.as_ref().and_then(|l| l.slot))
        .bind(r.lease.as_ref().map(|l| l.replica.to_string()))
        .bind(r.lease.as_ref().map(|l| l.token))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn runs(&self, process: Option<&str>, limit: i64) -> anyhow::Result<Vec<Value>> {
        let rows = match process {
            Some(p) => {
                sqlx::query("SELECT * FROM runs WHERE process = $1 ORDER BY finished_at DESC, id DESC LIMIT $2")
                    .bind(p.to_string())
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM runs ORDER BY finished_at DESC, id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                let time = |c: &str| -> anyhow::Result<String> { Ok(rfc3339_ms(r.try_get(c)?)) };
                Ok(json!({
                    "id": r.try_get::<i64, _>("id")?,
                    "process": r.try_get::<String, _>("process")?,
                    "trigger": r.try_get::<String, _>("trigger")?,
                    "started_at": time("started_at")?,
                    "finished_at": time("finished_at")?,
                    "duration_seconds": r.try_get::<f64, _>("duration_seconds")?,
                    "lag_seconds": r.try_get::<f64, _>("lag_seconds")?,
                    "attempts": r.try_get::<i64, _>("attempts")?,
                    "outcome": r.try_get::<String, _>("outcome")?,
                    "error_kind": r.try_get::<Option<String>, _>("error_kind")?,
                    "error_message": r.try_get::<Option<String>, _>("error_message")?,
                    "api_calls": r.try_get::<i64, _>("api_calls")?,
                    "trace_id": r.try_get::<Option<String>, _>("trace_id")?,
                    "slot": r.try_get::<Option<i64>, _>("slot")?,
                    "replica": r.try_get::<Option<String>, _>("replica")?,
                    "lease_token": r.try_get::<Option<i64>, _>("lease_token")?,
                }))
            })
            .collect()
    }

    /// Deletes runs that finished before `before_ms`; returns how many.
    pub async fn prune_runs(&self, before_ms: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query("DELETE FROM runs WHERE finished_at < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
