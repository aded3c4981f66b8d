//! `position_sync`: one positions call per account; replaces the account's
//! open positions in the store (which tells trade sync which symbols are active).
//! With streams on, an account whose user stream is healthy is only
//! reconciled every `exchange.stream_reconcile_seconds`.
//! Each account is a unit of work of its own ([`AccountsQueue`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::accounts_queue::{AccountWorkSettings, AccountsQueue};
use super::platform::{Platform, Polled};
use super::reconcile;
use crate::process::{Process, ProcessError, RunContext, RunReport};

pub struct PositionSync {
    platform: Arc<Platform>,
    /// While an account's user stream is healthy, its REST poll stretches.
    polled: Polled,
    queue: Arc<AccountsQueue>,
}

impl PositionSync {
    pub fn new(id: &str, platform: Arc<Platform>, interval: Duration, settings: AccountWorkSettings) -> Self {
        let queue = Arc::new(AccountsQueue::new("position_sync", interval, settings));
        platform.account_queues.register(id, &queue);
        PositionSync {
            platform,
            polled: Polled::default(),
            queue,
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        // A healthy user stream keeps its positions current: polled only every reconcile interval.
        let eligible = |account: &str| self.polled.due(p, account);
        let worked = self
            .queue
            .run(p, &ctx, eligible, |ctx, account| async move {
                let started = tokio::time::Instant::now();
                let n = reconcile::positions(p, &ctx, &account).await?;
                self.polled.done(&account);
                p.stream_health.positions_read(&account, started);
                Ok(n)
            })
            .await?;
        let open: usize = worked.results.iter().map(|(_, n)| n).sum();
        // The accounts synced in this run: with many accounts a run covers a share of them.
        p.events
            .positions_open(p.store.open_positions_count().await.unwrap_or(open));
        worked.finish(format!("{open} open positions in the accounts synced"))
    }
}

impl Process for PositionSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
