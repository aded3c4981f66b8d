//! `position_sync`: one positions call per account; replaces the account's
//! open positions in the store (which tells trade sync which symbols are active).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::platform::{PerAccount, Platform, venue_error};
use crate::clock::now_ms;
use crate::process::{Process, ProcessError, RunContext, RunReport};

pub struct PositionSync {
    platform: Arc<Platform>,
}

impl PositionSync {
    pub fn new(platform: Arc<Platform>) -> Self {
        PositionSync { platform }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let mut open = 0;
        let mut accounts = PerAccount::new(p, "position_sync");
        for account in &p.accounts {
            open += accounts.record(account, self.sync(&ctx, account).await)?.unwrap_or(0);
        }
        p.events.positions_open(open);
        accounts.finish(format!("{open} open positions"))
    }

    /// Replaces one account's positions; returns how many are open.
    async fn sync(&self, ctx: &RunContext, account: &str) -> Result<usize, ProcessError> {
        let p = &self.platform;
        let positions = p
            .venue
            .positions(&ctx.caller(None), account)
            .await
            .map_err(venue_error)?;
        p.store
            .replace_positions(&ctx.fence, account, &positions, now_ms())
            .await
            .map_err(|e| p.store_error(e))?;
        Ok(positions.len())
    }
}

impl Process for PositionSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
