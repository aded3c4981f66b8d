//! Process kinds, registered in one place.
//!
//! Each kind lives in its own file and is self-contained: it parses its own
//! settings (rejecting keys it does not know) and implements
//! [`crate::process::Process`]. Adding a kind means adding a file and one
//! line in each match below.

pub mod command;

use std::collections::BTreeMap;
use std::sync::Arc;

use figment::value::Value;

use crate::process::Process;

/// The seed's trading processes. Their implementations arrive with the
/// exchange layer and the store; until then they are listed but not run.
pub const TRADING_KINDS: [&str; 6] = [
    "trade_sync",
    "level_monitor",
    "price_update",
    "notification_check",
    "position_sync",
    "dashboard_sync",
];

/// Checks a kind's settings. `Err` if the kind is unknown; otherwise the
/// problems found, as (setting key, message).
pub fn check_settings(kind: &str, settings: &BTreeMap<String, Value>) -> Result<Vec<(String, String)>, String> {
    match kind {
        "command" => Ok(command::CommandSettings::parse(settings).err().unwrap_or_default()),
        k if TRADING_KINDS.contains(&k) => Ok(settings
            .keys()
            .map(|key| (key.clone(), "unknown setting".to_string()))
            .collect()),
        other => Err(format!(
            "unknown kind `{other}`; known kinds: command, {}",
            TRADING_KINDS.join(", ")
        )),
    }
}

/// Builds the implementation of a validated process; `None` if this build has none yet.
pub fn build(id: &str, kind: &str, settings: &BTreeMap<String, Value>) -> Option<Arc<dyn Process>> {
    match kind {
        "command" => {
            let settings = command::CommandSettings::parse(settings).ok()?;
            Some(Arc::new(command::CommandProcess::new(id, settings)))
        }
        _ => None,
    }
}
