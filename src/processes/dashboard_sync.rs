//! `dashboard_sync`: per-account analytics computed from the store (no
//! exchange calls) and cached as snapshots that the data API serves.

use std::sync::Arc;

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::accounts_queue::{AccountWorkSettings, AccountsQueue};
use super::platform::Platform;
use crate::clock::now_ms;
use crate::process::{Process, ProcessError, RunContext, RunReport};
use crate::store::{StoredPosition, StoredTrade};

const DAY_MS: i64 = 24 * 3600 * 1000;

pub struct DashboardSync {
    platform: Arc<Platform>,
    queue: Arc<AccountsQueue>,
}

/// The analytics of one account at `now`: realized PnL over 24 h / 7 d / 30 d,
/// win rate, trade count, volume and commission (30 d), exposure and unrealized PnL.
pub fn analytics(trades: &[StoredTrade], positions: &[StoredPosition], now: i64) -> Value {
    let pnl = |days: i64| -> Decimal {
        trades
            .iter()
            .filter(|t| t.time >= now - days * DAY_MS)
            .map(|t| t.realized_pnl)
            .sum()
    };
    let month: Vec<&StoredTrade> = trades.iter().filter(|t| t.time >= now - 30 * DAY_MS).collect();
    let closing: Vec<&&StoredTrade> = month.iter().filter(|t| !t.realized_pnl.is_zero()).collect();
    let wins = closing.iter().filter(|t| t.realized_pnl > Decimal::ZERO).count();
    let win_rate = if closing.is_empty() {
        Decimal::ZERO
    } else {
        Decimal::from(wins) / Decimal::from(closing.len())
    };
    let volume: Decimal = month.iter().map(|t| t.price * t.qty).sum();
    let commission: Decimal = month.iter().map(|t| t.commission).sum();
    let exposure: Decimal = positions.iter().map(|p| (p.amount * p.mark_price).abs()).sum();
    let unrealized: Decimal = positions.iter().map(|p| p.unrealized_pnl).sum();
    json!({
        "realized_pnl_24h": pnl(1).normalize().to_string(),
        "realized_pnl_7d": pnl(7).normalize().to_string(),
        "realized_pnl_30d": pnl(30).normalize().to_string(),
        "win_rate": win_rate.round_dp(4).normalize().to_string(),
        "trade_count": month.len(),
        "volume": volume.normalize().to_string(),
        "commission": commission.normalize().to_string(),
        "exposure": exposure.normalize().to_string(),
        "unrealized_pnl": unrealized.normalize().to_string(),
        "open_positions": positions.len(),
    })
}

impl DashboardSync {
    pub fn new(
        id: &str,
        platform: Arc<Platform>,
        interval: std::time::Duration,
        settings: AccountWorkSettings,
    ) -> Self {
        let queue = Arc::new(AccountsQueue::new("dashboard_sync", interval, settings));
        platform.account_queues.register(id, &queue);
        DashboardSync { platform, queue }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let now = now_ms();
        let worked = self
            .queue
            .run(
                p,
                &ctx,
                |_| true,
                |ctx, account| async move { self.compute(&ctx, &account, now).await },
            )
            .await?;
        if let Some(oldest) = p.store.oldest_snapshot_ms().await.map_err(|e| p.store_error(e))? {
            p.events.oldest_snapshot_ms(oldest);
        }
        let done = worked.results.len();
        worked.finish(format!("{done} dashboards"))
    }

    /// Computes and stores one account's analytics.
    async fn compute(&self, ctx: &RunContext, account: &str, now: i64) -> Result<(), ProcessError> {
        let p = &self.platform;
        let trades = p
            .store
            .trades_since(account, now - 30 * DAY_MS)
            .await
            .map_err(|e| p.store_error(e))?;
        let positions = p.store.positions(Some(account)).await.map_err(|e| p.store_error(e))?;
        let data = analytics(&trades, &positions, now);
        p.store
            .put_snapshot(&ctx.fence, account, &data, now)
            .await
            .map_err(|e| p.store_error(e))
    }
}

impl Process for DashboardSync {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
