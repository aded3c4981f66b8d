//! Process kinds, registered in one place.
//!
//! Each kind lives in its own file and is self-contained: it parses its own
//! settings (rejecting keys it does not know) and implements
//! [`crate::process::Process`]. Adding a kind means adding a file and one
//! line in each match below.
//!
//! Owns: what each kind does. Imports `process` (the trait), `exchange`,
//! `store`, `telemetry` (through `DomainEvents` only), `config`, `budget`,
//! `clock`, `net`; never the scheduler, `ha`, `http` or `status`.

pub mod accounts_queue;
pub mod backstop;
pub mod command;
pub mod dashboard_sync;
pub mod demo;
pub mod level_monitor;
pub mod levels;
pub mod market_stream;
pub mod notification_check;
pub mod platform;
pub mod position_sync;
pub mod price_update;
pub mod reconcile;
pub mod trade_sync;
pub mod user_stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use figment::value::Value;

pub use platform::Platform;

use crate::config::ProcessConfig;
use crate::process::Process;

/// The seed's trading processes (they need the store and the exchange).
pub const TRADING_KINDS: [&str; 6] = crate::config::SEED_PROCESSES;

/// The stream processes (continuous), run when `exchange.streams` is on.
pub const STREAM_KINDS: [&str; 2] = ["market_stream", "user_stream"];

/// Protection beyond the seed's processes: the venue-side backstops.
pub const PROTECTION_KINDS: [&str; 1] = ["backstop_sync"];

/// The processes that serve every account, each account a unit of work of
/// its own (`accounts_queue`), counted per account when one fails.
pub const ACCOUNT_PROCESSES: [&str; 3] = ["trade_sync", "position_sync", "dashboard_sync"];
/// The kinds that work account by account over `Accounts::mine()`: under HA
/// with `ha.share_accounts`, every replica runs them for its own accounts
/// (a lease per replica, never contended), instead of one replica for all.
pub const ACCOUNT_SHARDED: [&str; 4] = ["trade_sync", "position_sync", "dashboard_sync", "user_stream"];
/// Kinds whose `max_api_calls_per_minute` is per account: the effective cap
/// is that × this replica's accounts, at most the venue weight budget.
pub const PER_ACCOUNT_CAPS: [&str; 3] = ["trade_sync", "position_sync", "user_stream"];
/// The processes that leave out symbols the venue does not list, and count them.
pub const SYMBOL_PROCESSES: [&str; 4] = ["trade_sync", "level_monitor", "price_update", "notification_check"];

/// Checks a kind's settings. `Err` if the kind is unknown; otherwise the
/// problems found, as (setting key, message).
pub fn check_settings(kind: &str, settings: &BTreeMap<String, Value>) -> Result<Vec<(String, String)>, String> {
    match kind {
        "command" => Ok(command::CommandSettings::parse(settings).err().unwrap_or_default()),
        "level_monitor" => Ok(level_monitor::LevelMonitorSettings::parse(settings)
            .err()
            .unwrap_or_default()),
        k if ACCOUNT_PROCESSES.contains(&k) => Ok(accounts_queue::AccountWorkSettings::parse(settings)
            .err()
            .unwrap_or_default()),
        k if TRADING_KINDS.contains(&k) || STREAM_KINDS.contains(&k) || PROTECTION_KINDS.contains(&k) => Ok(settings
            .keys()
            .map(|key| (key.clone(), "unknown setting".to_string()))
            .collect()),
        other => Err(format!(
            "unknown kind `{other}`; known kinds: command, {}, {}, {}",
            TRADING_KINDS.join(", "),
            STREAM_KINDS.join(", "),
            PROTECTION_KINDS.join(", ")
        )),
    }
}

/// Builds the implementation of a validated process; `None` for a trading
/// kind when the service runs without a platform (store and exchange).
pub fn build(id: &str, config: &ProcessConfig, platform: Option<&Arc<Platform>>) -> Option<Arc<dyn Process>> {
    let interval = Duration::from_secs_f64(config.interval_seconds);
    let p = || platform.cloned();
    let account_work = || accounts_queue::AccountWorkSettings::parse(&config.settings).ok();
    Some(match config.kind.as_str() {
        "command" => Arc::new(command::CommandProcess::new(
            id,
            command::CommandSettings::parse(&config.settings).ok()?,
        )),
        "trade_sync" => {
            let platform = p()?;
            let batching = platform.batching;
            Arc::new(trade_sync::TradeSync::new(
                id,
                platform,
                interval,
                batching,
                account_work()?,
            ))
        }
        "level_monitor" => Arc::new(level_monitor::LevelMonitor::new(
            p()?,
            interval,
            level_monitor::LevelMonitorSettings::parse(&config.settings).ok()?,
        )),
        "price_update" => Arc::new(price_update::PriceUpdate::new(p()?, interval)),
        "notification_check" => Arc::new(notification_check::NotificationCheck::new(p()?, interval)),
        "position_sync" => Arc::new(position_sync::PositionSync::new(id, p()?, interval, account_work()?)),
        "market_stream" => Arc::new(market_stream::MarketStream::new(p()?)),
        "user_stream" => Arc::new(user_stream::UserStream::new(p()?)),
        "dashboard_sync" => Arc::new(dashboard_sync::DashboardSync::new(id, p()?, interval, account_work()?)),
        "backstop_sync" => Arc::new(backstop::BackstopSync::new(p()?)),
        _ => return None,
    })
}
