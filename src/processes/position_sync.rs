//! `position_sync`: one positions call per account; replaces the account's
//! open positions in the store (which tells trade sync which symbols are active).
//! With streams on, an account whose user stream is healthy is only
//! reconciled every `exchange.stream_reconcile_seconds`.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::platform::{PerAccount, Platform, Polled};
use super::reconcile;
use crate::process::{Process, ProcessError, RunContext, RunReport};

pub struct PositionSync {
    platform: Arc<Platform>,
    /// While an account's user stream is healthy, its REST poll stretches.
    polled: Polled,
}

impl PositionSync {
    pub fn new(platform: Arc<Platform>) -> Self {
        PositionSync {
            platform,
            polled: Polled::default(),
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let mut open = 0;
        let mut accounts = PerAccount::new(p, "position_sync");
        for account in &p.accounts.mine() {
            if !self.polled.due(p, account) {
                continue; // its user stream keeps its positions current
            }
            if let Some(n) = accounts.record(account, reconcile::positions(p, &ctx, account).await)? {
                open += n;
                self.polled.done(account);
            }
        }
        p.events.positions_open(open);
        accounts.finish(format!("{open} open positions"))
    }
}

impl Process for PositionSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
