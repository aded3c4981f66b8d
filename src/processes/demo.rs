//! Demo data for the simulated exchange's first run: a level around each
//! open position and two price alerts, close enough to the price that the
//! random walk reaches them within minutes.

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use tokio::time::Instant;

use super::Platform;
use crate::budget::{Caller, SERVICE_CALLER};
use crate::config::{Config, ExchangeKind};
use crate::store::{NewAlert, NewLevel};

/// Accounts that get demo levels.
const DEMO_ACCOUNTS: usize = 3;

pub async fn seed(platform: &Platform, config: &Config) -> anyhow::Result<()> {
    if !config.demo.enabled || config.exchange.kind != ExchangeKind::Simulated {
        return Ok(());
    }
    let store = &platform.store;
    if !store.levels(None).await?.is_empty() || !store.alerts(false).await?.is_empty() {
        return Ok(());
    }
    let caller = Caller::new(SERVICE_CALLER, 3, Instant::now() + std::time::Duration::from_secs(10));
    let distance = Decimal::from_f64(config.demo.distance).unwrap_or(Decimal::new(5, 3));
    let (up, down) = (Decimal::ONE + distance, Decimal::ONE - distance);
    let mut levels = 0;
    // A few accounts are enough to show it; a thousand would spend the start's budget.
    for account in platform.accounts.names().iter().take(DEMO_ACCOUNTS) {
        for p in platform.venue.positions(&caller, account).await?.into_iter().take(2) {
            let Some(side) = crate::domain::PositionSide::of(p.amount) else {
                continue;
            };
            let (take_profit, stop_loss) = if p.amount > Decimal::ZERO {
                (p.mark_price * up, p.mark_price * down)
            } else {
                (p.mark_price * down, p.mark_price * up)
            };
            let level = NewLevel {
                account: account.clone(),
                symbol: p.symbol.clone(),
                side,
                take_profit: Some(take_profit.round_dp(4)),
                stop_loss: Some(stop_loss.round_dp(4)),
            };
            store.insert_level(&level).await?;
            levels += 1;
        }
    }
    let prices = platform
        .venue
        .prices(&caller, &["BTCUSDT".to_string(), "ETHUSDT".to_string()])
        .await?;
    for (price, condition, factor) in prices
        .iter()
        .zip([("above", up), ("below", down)])
        .map(|(p, (c, f))| (p, c, f))
    {
        store
            .insert_alert(&NewAlert {
                symbol: price.symbol.clone(),
                condition: condition.into(),
                price: (price.price * factor).round_dp(4),
                webhook_url: None,
            })
            .await?;
    }
    tracing::info!(
        levels,
        alerts = prices.len(),
        "demo levels and alerts created (demo.enabled)"
    );
    Ok(())
}
