//! Live overrides of process settings, kept so that a restart and the other
//! replicas put them in force too.

use std::collections::BTreeMap;

use sqlx::Row;

use super::Store;
use crate::config::{Overrides, SetOverrides};

impl Store {
    /// Every process's overrides, by process id.
    pub async fn process_overrides(&self) -> anyhow::Result<BTreeMap<String, SetOverrides>> {
        let rows = sqlx::query("SELECT process, settings, set_by, set_at FROM process_overrides")
            .fetch_all(self.pool())
            .await?;
        let mut all = BTreeMap::new();
        for row in rows {
            let process: String = row.try_get("process")?;
            let settings: String = row.try_get("settings")?;
            let values: Overrides = match serde_json::from_str(&settings) {
                Ok(values) => values,
                Err(e) => {
                    tracing::warn!(%process, error = %e, "ignoring unreadable stored overrides");
                    continue;
                }
            };
            all.insert(
                process,
                SetOverrides {
                    values,
                    set_by: row.try_get("set_by")?,
                    set_at_ms: row.try_get("set_at")?,
                },
            );
        }
        Ok(all)
    }

    /// Stores `process`'s overrides (replacing any), or removes them (`None`).
    pub async fn save_process_overrides(&self, process: &str, overrides: Option<&SetOverrides>) -> anyhow::Result<()> {
        match overrides {
            Some(o) => {
                sqlx::query(
                    "INSERT INTO process_overrides (process, settings, set_by, set_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (process) DO UPDATE SET settings = excluded.settings, \
                     set_by = excluded.set_by, set_at = excluded.set_at",
                )
                .bind(process)
                .bind(serde_json::to_string(&o.values)?)
                .bind(&o.set_by)
                .bind(o.set_at_ms)
                .execute(self.pool())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM process_overrides WHERE process = $1")
                    .bind(process)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }
}
