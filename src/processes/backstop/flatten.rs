//! The kill switch: `POST /api/flatten` (every account) and `POST
//! /api/accounts/{account}/flatten`. For each account: our open conditional
//! orders are cancelled, the armed levels of every open position are retired
//! (`flattened`), and every open position is closed through the close
//! protocol, each on its own intent and worker, exactly once: a position
//! already being closed is left to that close, so a second call changes
//! nothing. The answer says what was done per symbol.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::venue::ours;
use crate::budget::Caller;
use crate::domain::PositionSide;
use crate::process::Fence;
use crate::processes::levels::close::CLOSE_CALLER;
use crate::processes::platform::Platform;
use crate::store::{BackstopState, BackstopUpdate, LevelStatus, NewLevel};

/// How long the answer waits for the closes it started to finish.
const WAIT_FOR_CLOSES: Duration = Duration::from_secs(5);

/// What the kill switch did with one position.
#[derive(Debug, Clone, Serialize)]
pub struct Flattened {
    pub account: String,
    pub symbol: String,
    /// The signed amount the venue had open.
    pub amount: String,
    /// `flat` (closed), `closing` (its close is still under way), `already_closing`
    /// (a close was under way before this call), or `failed`.
    pub outcome: &'static str,
    /// The level that carries this close (its `client_order_id` names the orders).
    pub level_id: Option<i64>,
    pub levels_retired: usize,
    pub error: Option<String>,
}

/// What one call did: positions, and our conditional orders cancelled per account.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FlattenReport {
    pub positions: Vec<Flattened>,
    pub backstops_cancelled: usize,
}

/// Why the kill switch could not act on an account (nothing was sent for it).
#[derive(Debug, Clone)]
pub struct Unable {
    /// The exchange budget is spent for now; the venue itself may be fine.
    pub budget_spent: bool,
    pub message: String,
}

impl Unable {
    fn venue(what: String, e: crate::exchange::VenueError) -> Self {
        Unable {
            budget_spent: e.kind() == crate::exchange::VenueErrorKind::BudgetExhausted,
            message: format!("{what}: {e}"),
        }
    }

    fn store(e: anyhow::Error) -> Self {
        Unable {
            budget_spent: false,
            message: format!("store: {e:#}"),
        }
    }
}

/// Flattens `accounts` (every configured one when `None`). `Err`: the venue
/// could not be asked what is open (nothing was sent for that account).
pub async fn flatten(p: &Platform, account: Option<&str>) -> Result<FlattenReport, Unable> {
    let accounts: Vec<String> = match account {
        Some(a) => vec![a.to_string()],
        None => p.accounts.clone(),
    };
    let mut report = FlattenReport::default();
    let mut started = Vec::new();
    for account in &accounts {
        tracing::warn!(account, "kill switch: flattening the account");
        report.backstops_cancelled += cancel_ours(p, account).await?;
        let caller = Caller::new(CLOSE_CALLER, 1, Instant::now() + Duration::from_secs(15));
        let open = p
            .venue
            .positions(&caller, account)
            .await
            .map_err(|e| Unable::venue(format!("cannot read the positions of `{account}`"), e))?;
        let closing: HashSet<String> = p
            .store
            .pending_intents()
            .await
            .map_err(Unable::store)?
            .into_iter()
            .filter(|i| &i.account == account)
            .map(|i| i.symbol)
            .collect();
        for position in open {
            let Some(side) = PositionSide::of(position.amount) else {
                continue;
            };
            let retired = p
                .store
                .retire_flattened(&Fence::none(), account, &position.symbol)
                .await
                .map_err(Unable::store)?;
            p.events.protection().levels_retired("flattened", retired.len());
            let mut done = Flattened {
                account: account.clone(),
                symbol: position.symbol.clone(),
                amount: position.amount.normalize().to_string(),
                outcome: "already_closing",
                level_id: None,
                levels_retired: retired.len(),
                error: None,
            };
            if !closing.contains(&position.symbol) {
                match close(p, account, &position.symbol, side).await {
                    Ok(level_id) => {
                        done.outcome = "closing";
                        done.level_id = Some(level_id);
                        started.push(report.positions.len());
                    }
                    Err(e) => {
                        done.outcome = "failed";
                        done.error = Some(e);
                    }
                }
            }
            report.positions.push(done);
        }
    }
    wait_for(p, &mut report, &started).await;
    for done in &report.positions {
        p.events.protection().flattened(match done.outcome {
            "flat" => "flat",
            "failed" => "failed",
            _ => "closing",
        });
        tracing::warn!(account = %done.account, symbol = %done.symbol, amount = %done.amount, outcome = done.outcome, "kill switch");
    }
    Ok(report)
}

/// Cancels every open conditional order of ours on `account`; returns how many.
async fn cancel_ours(p: &Platform, account: &str) -> Result<usize, Unable> {
    let caller = Caller::new(CLOSE_CALLER, 1, Instant::now() + Duration::from_secs(15));
    let prefix = ours(p);
    let open = p
        .venue
        .open_algo_orders(&caller, account, None)
        .await
        .map_err(|e| Unable::venue(format!("cannot read the conditional orders of `{account}`"), e))?;
    let mut cancelled = 0;
    for order in open.iter().filter(|o| o.client_algo_id.starts_with(&prefix)) {
        match p
            .venue
            .cancel_algo_order(&caller, account, &order.symbol, &order.client_algo_id)
            .await
        {
            Ok(()) => {
                cancelled += 1;
                p.events.protection().backstop_change("cancel", "ok");
                let _ = p
                    .store
                    .update_backstop(
                        &Fence::none(),
                        &order.client_algo_id,
                        BackstopState::Cancelled,
                        &BackstopUpdate::default(),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(account, client_algo_id = %order.client_algo_id, error = %e, "kill switch: cannot cancel a backstop")
            }
        }
    }
    Ok(cancelled)
}

/// Closes one position through the close protocol: a level of its own
/// (kind `flatten`, no prices) fired at once. Returns the level's id.
async fn close(p: &Platform, account: &str, symbol: &str, side: PositionSide) -> Result<i64, String> {
    let level = p
        .store
        .insert_level(&NewLevel {
            account: account.to_string(),
            symbol: symbol.to_string(),
            side,
            take_profit: None,
            stop_loss: None,
        })
        .await
        .map_err(|e| format!("store: {e:#}"))?;
    match p.levels.fire_now(&Fence::none(), &level, "flatten").await {
        Ok(true) => Ok(level.id),
        Ok(false) => Err("the close could not be started".into()),
        Err(e) => Err(format!("store: {e:#}")),
    }
}

/// Waits (a little) for the closes started here, so the answer can say `flat`.
async fn wait_for(p: &Platform, report: &mut FlattenReport, started: &[usize]) {
    let deadline = Instant::now() + WAIT_FOR_CLOSES;
    loop {
        let mut open = 0;
        for &i in started {
            let Some(id) = report.positions[i].level_id else {
                continue;
            };
            match p.store.level(id).await {
                Ok(Some(l)) if matches!(l.status, LevelStatus::Executed | LevelStatus::Cancelled) => {
                    report.positions[i].outcome = "flat";
                }
                Ok(Some(l)) if l.status == LevelStatus::Failed => {
                    report.positions[i].outcome = "failed";
                    report.positions[i].error = l.error;
                }
                _ => open += 1,
            }
        }
        if open == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
