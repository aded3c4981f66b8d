//! The kill switch: `POST /api/flatten` (every account) and `POST
//! /api/accounts/{account}/flatten`. For each account, on its own: the
//! armed levels of every open position are retired (`flattened`), every
//! open position is closed through the close protocol (each on its own
//! intent and worker, exactly once: a position already being closed is left
//! to that close, so a second call changes nothing), and then our open
//! conditional orders are cancelled, but for those of levels still armed on
//! other symbols (which `backstop_sync` would only place again). One
//! account's failure is reported and the others are still flattened. The
//! answer says what was done per symbol, within a few seconds.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::venue::ours;
use crate::budget::Caller;
use crate::domain::PositionSide;
use crate::exchange::{VenueError, VenueErrorKind};
use crate::process::Fence;
use crate::processes::levels::close::CLOSE_CALLER;
use crate::processes::platform::Platform;
use crate::store::{BackstopState, BackstopUpdate, LevelStatus, NewLevel};

/// The venue calls of one request are admitted within this (it answers in time).
const ANSWER_WITHIN: Duration = Duration::from_secs(6);
/// How long the answer waits for the closes it started to finish.
const WAIT_FOR_CLOSES: Duration = Duration::from_secs(2);

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

/// An account the kill switch could not act on (nothing was sent for it).
#[derive(Debug, Clone, Serialize)]
pub struct Unflattened {
    pub account: String,
    pub error: String,
    /// The exchange budget was spent: try again shortly.
    #[serde(skip)]
    pub budget_spent: bool,
}

/// What one call did: positions, our conditional orders cancelled, accounts it could not act on.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FlattenReport {
    pub positions: Vec<Flattened>,
    pub backstops_cancelled: usize,
    pub failed_accounts: Vec<Unflattened>,
}

/// Why the kill switch could not act at all (every account failed).
#[derive(Debug, Clone)]
pub struct Unable {
    /// The exchange budget is spent for now; the venue itself may be fine.
    pub budget_spent: bool,
    pub message: String,
}

/// Flattens `account` (every configured one when `None`). `Err` only when no
/// account could be acted on; otherwise the report lists what failed.
pub async fn flatten(p: &Platform, account: Option<&str>) -> Result<FlattenReport, Unable> {
    let accounts: Vec<String> = match account {
        Some(a) => vec![a.to_string()],
        None => p.accounts.names(),
    };
    let caller = Caller::new(CLOSE_CALLER, 1, Instant::now() + ANSWER_WITHIN);
    let mut report = FlattenReport::default();
    let mut started = Vec::new();
    for account in &accounts {
        tracing::warn!(account, "kill switch: flattening the account");
        if let Err(e) = flatten_account(p, &caller, account, &mut report, &mut started).await {
            tracing::error!(account, error = %e.error, "kill switch: cannot flatten the account");
            report.failed_accounts.push(e);
        }
    }
    if !accounts.is_empty() && report.failed_accounts.len() == accounts.len() {
        let first = &report.failed_accounts[0];
        return Err(Unable {
            budget_spent: report.failed_accounts.iter().all(|f| f.budget_spent),
            message: first.error.clone(),
        });
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

/// One account: retire and close every open position, then cancel what is left of ours.
async fn flatten_account(
    p: &Platform,
    caller: &Caller,
    account: &str,
    report: &mut FlattenReport,
    started: &mut Vec<usize>,
) -> Result<(), Unflattened> {
    let unable = |what: &str, e: VenueError| Unflattened {
        account: account.to_string(),
        error: format!("{what}: {e}"),
        budget_spent: e.kind() == VenueErrorKind::BudgetExhausted,
    };
    let store_failed = |e: anyhow::Error| Unflattened {
        account: account.to_string(),
        error: format!("store: {e:#}"),
        budget_spent: false,
    };
    let open = p
        .venue
        .positions(caller, account)
        .await
        .map_err(|e| unable("cannot read the positions", e))?;
    let closing: HashSet<String> = p
        .store
        .pending_intents()
        .await
        .map_err(store_failed)?
        .into_iter()
        .filter(|i| i.account == account)
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
            .map_err(store_failed)?;
        p.events.protection().levels_retired("flattened", retired.len());
        let mut done = Flattened {
            account: account.to_string(),
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
    report.backstops_cancelled += cancel_ours(p, caller, account, true)
        .await
        .map_err(|e| unable("cannot read the conditional orders", e))?;
    Ok(())
}

/// An account is being removed (`DELETE /api/accounts/{name}`), its armed
/// levels already retired: every conditional order of ours on it is
/// cancelled while its credentials still work. Returns how many, or `None`
/// when the venue refuses the credentials themselves (revoked: nothing can
/// be cancelled with them, and removal must still be possible). `Err` when
/// the venue could not be asked for now (then nothing should be removed).
pub async fn cancel_backstops(p: &Platform, account: &str) -> Result<Option<usize>, Unable> {
    let caller = Caller::new(CLOSE_CALLER, 1, Instant::now() + ANSWER_WITHIN);
    match cancel_ours(p, &caller, account, false).await {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == VenueErrorKind::Auth => {
            tracing::warn!(account, error = %e, "the venue refuses the account's credentials: its conditional orders cannot be cancelled by us");
            Ok(None)
        }
        Err(e) => Err(Unable {
            budget_spent: e.kind() == VenueErrorKind::BudgetExhausted,
            message: format!("cannot read the conditional orders: {e}"),
        }),
    }
}

/// Cancels our open conditional orders on `account`, but (`keep_armed`)
/// those of levels still armed (on symbols with nothing open); returns how many.
async fn cancel_ours(p: &Platform, caller: &Caller, account: &str, keep_armed: bool) -> Result<usize, VenueError> {
    let prefix = ours(p);
    let open = p.venue.open_algo_orders(caller, account, None).await?;
    let armed: HashSet<i64> = p
        .store
        .levels(Some(LevelStatus::Armed))
        .await
        .map(|ls| ls.iter().map(|l| l.id).collect())
        .unwrap_or_default();
    let mut cancelled = 0;
    for order in open.iter().filter(|o| o.client_algo_id.starts_with(&prefix)) {
        let row = p.store.backstop(&order.client_algo_id).await.ok().flatten();
        if keep_armed && row.is_some_and(|b| armed.contains(&b.level_id)) {
            continue;
        }
        match p
            .venue
            .cancel_algo_order(caller, account, &order.symbol, &order.client_algo_id)
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
