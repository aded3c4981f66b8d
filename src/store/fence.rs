//! Fencing: every write a run makes is committed only while the run's lease
//! token is still its process's current one (issue 7).
//!
//! With one replica there is nothing to fence and [`Fence::none`] costs
//! nothing. With several, the write's own transaction reads the lease row
//! `FOR SHARE`, so a new claim cannot slip in between the check and the
//! commit, and a replica that was frozen past its lease commits nothing.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use sqlx::{Any, Row, Transaction};

use super::Store;

/// The lease a run's writes are conditional on.
#[derive(Clone, Default)]
pub struct Fence {
    lease: Option<(Arc<str>, i64)>,
    rejections: Counter,
}

impl Fence {
    /// No condition: a single replica.
    pub fn none() -> Self {
        Fence::default()
    }

    /// Writes commit only while `token` is `process`'s current lease token;
    /// each refused write counts in `rejections`.
    pub fn lease(process: Arc<str>, token: i64, rejections: Counter) -> Self {
        Fence {
            lease: Some((process, token)),
            rejections,
        }
    }

    pub fn token(&self) -> Option<i64> {
        self.lease.as_ref().map(|(_, t)| *t)
    }
}

/// A write refused because the run's lease has moved on to a newer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub process: String,
    pub token: i64,
    pub current: Option<i64>,
}

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write fenced off: this run's lease on `{}` (token {}) is no longer current ({}); another replica holds it, nothing was committed",
            self.process,
            self.token,
            match self.current {
                Some(t) => format!("current token {t}"),
                None => "no lease row".into(),
            }
        )
    }
}

impl std::error::Error for Fenced {}

impl Store {
    /// Begins a write transaction that may commit only under `fence`.
    pub(crate) async fn begin_fenced(&self, fence: &Fence) -> anyhow::Result<Transaction<'static, Any>> {
        let mut tx = self.pool().begin().await?;
        if let Some((process, token)) = &fence.lease {
            let row = sqlx::query("SELECT token FROM ha_leases WHERE process = $1 FOR SHARE")
                .bind(process.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            let current = row.map(|r| r.try_get::<i64, _>("token")).transpose()?;
            if current != Some(*token) {
                tx.rollback().await?;
                fence.rejections.inc();
                let fenced = Fenced {
                    process: process.to_string(),
                    token: *token,
                    current,
                };
                tracing::warn!(process = %process, token, ?current, "write fenced off: lease lost");
                return Err(fenced.into());
            }
        }
        Ok(tx)
    }
}
