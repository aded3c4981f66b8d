//! The backstop's steps on the venue, each idempotent: place (row first, a
//! deterministic client algo id, a lost answer looked up), cancel (a
//! "not open" answer is as good as done), settle a placement whose answer
//! was lost, and reconcile the venue's open conditional orders with the rows.

use std::collections::{HashMap, HashSet};

use super::plan::Want;
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::domain::{AlgoKind, AlgoOrder, AlgoOrderRequest, AlgoSize, AlgoStatus, WorkingType};
use crate::exchange::VenueError;
use crate::process::{ProcessError, RunContext};
use crate::processes::platform::{Platform, venue_error};
use crate::store::{Backstop, BackstopState, BackstopUpdate, NewBackstop};

/// A placement the venue does not show yet is not believed gone before this.
const NOT_VISIBLE_FOR_MS: i64 = 300_000;
/// And is asked about again after this.
const ASK_AGAIN_MS: i64 = 15_000;

/// Waits before a backstop is placed again after a refusal: 2 s doubling to 5 min.
/// Also the least time between two placements of one level's backstop: never a cancel/replace loop.
const REPLACE: Backoff = Backoff::new(std::time::Duration::from_secs(2), std::time::Duration::from_secs(300)).exact();

/// The prefix of every client algo id of this installation.
pub fn ours(p: &Platform) -> String {
    format!("sm-{}-", p.store.installation())
}

/// Places generation `generation` of `want`'s backstop. `Ok(Some(code))`:
/// refused with that code (-2021 means the price is already through).
pub async fn place(
    p: &Platform,
    ctx: &RunContext,
    want: &Want,
    generation: i64,
    failures: i64,
) -> Result<Option<i64>, ProcessError> {
    let row = NewBackstop {
        client_algo_id: format!("{}{}-{}{generation}", ours(p), want.level_id, want.letter()),
        level_id: want.level_id,
        kind: want.kind,
        account: want.account.clone(),
        symbol: want.symbol.clone(),
        side: want.side.closing().as_str(),
        trigger_price: want.trigger_price,
        generation,
        failures,
    };
    if !p
        .store
        .insert_backstop(&ctx.fence, &row)
        .await
        .map_err(|e| p.store_error(e))?
    {
        return Ok(None); // placed already (another run): settled from its row
    }
    let request = AlgoOrderRequest {
        symbol: want.symbol.clone(),
        side: want.side.closing(),
        kind: match want.kind {
            "stop_loss" => AlgoKind::StopMarket,
            _ => AlgoKind::TakeProfitMarket,
        },
        trigger_price: want.trigger_price,
        working_type: WorkingType::MarkPrice,
        size: AlgoSize::ClosePosition,
        price_protect: true,
        client_algo_id: row.client_algo_id.clone(),
    };
    let placed = p
        .venue
        .place_algo_order(&ctx.caller(None), &want.account, &request)
        .await;
    let protection = p.events.protection();
    match placed {
        Ok(order) => {
            protection.backstop_change("place", "ok");
            tracing::info!(level = want.level_id, client_algo_id = %row.client_algo_id, trigger = %want.trigger_price, "backstop placed on the venue");
            set(p, ctx, &row.client_algo_id, BackstopState::Live, live(&order)).await?;
            Ok(None)
        }
        // Lost: the next pass looks the id up.
        Err(e @ (VenueError::UnknownOutcome(_) | VenueError::Decode(_))) => {
            protection.backstop_change("place", "unknown");
            tracing::warn!(client_algo_id = %row.client_algo_id, error = %e, "backstop placement unanswered; looking it up next");
            Ok(None)
        }
        Err(e) => {
            let code = match &e {
                VenueError::Rejected { code, .. } => Some(*code),
                _ => None,
            };
            protection.backstop_change("place", if code.is_some() { "refused" } else { "error" });
            tracing::warn!(level = want.level_id, client_algo_id = %row.client_algo_id, error = %e, "backstop not placed");
            failed(p, ctx, &row.client_algo_id, failures + 1, &e.to_string()).await?;
            Ok(code)
        }
    }
}

/// Cancels a backstop that is no longer wanted; one the venue no longer has open is done too.
pub async fn cancel(p: &Platform, ctx: &RunContext, b: &Backstop) -> Result<(), ProcessError> {
    let cancelled = p
        .venue
        .cancel_algo_order(&ctx.caller(None), &b.account, &b.symbol, &b.client_algo_id)
        .await;
    let protection = p.events.protection();
    match cancelled {
        Ok(()) => protection.backstop_change("cancel", "ok"),
        // Not open: it fired, expired, or never existed. Settle it from its status.
        Err(VenueError::Rejected {
            code: -2011 | -2013, ..
        }) => {
            protection.backstop_change("cancel", "not_open");
            return settle(p, ctx, b).await;
        }
        Err(e) => {
            protection.backstop_change("cancel", "error");
            return Err(venue_error(e));
        }
    }
    tracing::info!(level = b.level_id, client_algo_id = %b.client_algo_id, "backstop cancelled");
    set(
        p,
        ctx,
        &b.client_algo_id,
        BackstopState::Cancelled,
        BackstopUpdate::default(),
    )
    .await
}

/// Settles a row from the venue's word on its order: open (live), fired
/// (triggered), or gone or never there (failed, so a new one is placed if
/// still wanted; cancelled if not).
pub async fn settle(p: &Platform, ctx: &RunContext, b: &Backstop) -> Result<(), ProcessError> {
    let found = p
        .venue
        .algo_order_by_client_id(&ctx.caller(None), &b.account, &b.symbol, &b.client_algo_id)
        .await
        .map_err(venue_error)?;
    settle_with(p, ctx, b, found.as_ref()).await
}

pub(super) async fn settle_with(
    p: &Platform,
    ctx: &RunContext,
    b: &Backstop,
    found: Option<&AlgoOrder>,
) -> Result<(), ProcessError> {
    match found.map(|o| &o.status) {
        Some(AlgoStatus::New) => set(p, ctx, &b.client_algo_id, BackstopState::Live, live(found.unwrap())).await,
        Some(AlgoStatus::Triggering | AlgoStatus::Triggered | AlgoStatus::Finished) => {
            let order = found.unwrap();
            let update = BackstopUpdate {
                order_id: order.order_id.map(|id| id as i64),
                ..live(order)
            };
            set(p, ctx, &b.client_algo_id, BackstopState::Triggered, update).await
        }
        Some(status) => {
            let why = format!("the venue ended it: {}", status.as_str());
            failed(p, ctx, &b.client_algo_id, b.failures + 1, &why).await
        }
        // The venue may not show an order it just took (for a while): ask again later.
        None if now_ms() - b.created_at < NOT_VISIBLE_FOR_MS => {
            let update = BackstopUpdate {
                next_at: Some(now_ms() + ASK_AGAIN_MS),
                ..BackstopUpdate::default()
            };
            set(p, ctx, &b.client_algo_id, b.state, update).await
        }
        None => failed(p, ctx, &b.client_algo_id, b.failures + 1, "the venue has no such order").await,
    }
}

/// The venue's open conditional orders against the rows, for one account:
/// ours without a row on the venue (or whose row is not the one wanted) are
/// cancelled as orphans, one given up on but still wanted is taken back,
/// rows on the venue that it no longer has open are settled, other
/// clients' orders are never touched. Returns how many orphans were cancelled.
pub async fn reconcile(
    p: &Platform,
    ctx: &RunContext,
    account: &str,
    rows: &[Backstop],
    wanted: &HashSet<String>,
) -> Result<usize, ProcessError> {
    let prefix = ours(p);
    let by_id: HashMap<&str, &Backstop> = rows.iter().map(|b| (b.client_algo_id.as_str(), b)).collect();
    let mut orphans = 0;
    let open = p
        .venue
        .open_algo_orders(&ctx.caller(None), account, None)
        .await
        .map_err(venue_error)?;
    let mut seen = HashSet::new();
    for order in open.iter().filter(|o| o.client_algo_id.starts_with(&prefix)) {
        seen.insert(order.client_algo_id.as_str());
        match by_id.get(order.client_algo_id.as_str()) {
            Some(b) if b.state == BackstopState::Placing => settle_with(p, ctx, b, Some(order)).await?,
            Some(b) if b.state.on_venue() || b.state == BackstopState::Triggered => {}
            Some(b) if b.state == BackstopState::Failed && wanted.contains(&b.client_algo_id) => {
                tracing::info!(account, client_algo_id = %b.client_algo_id, "a backstop given up on is open on the venue after all; live again");
                p.store
                    .revive_backstop(&ctx.fence, &b.client_algo_id, order.algo_id as i64)
                    .await
                    .map_err(|e| p.store_error(e))?;
            }
            _ => {
                tracing::warn!(account, client_algo_id = %order.client_algo_id, "an orphan backstop of ours is open on the venue; cancelling it");
                cancel(p, ctx, &orphan_row(account, order)).await?;
                orphans += 1;
            }
        }
    }
    for b in rows.iter().filter(|b| b.account == account && b.state.on_venue()) {
        if !seen.contains(b.client_algo_id.as_str()) {
            settle(p, ctx, b).await?;
        }
    }
    Ok(orphans)
}

/// A row for an order of ours the store does not know (for cancelling it).
fn orphan_row(account: &str, o: &AlgoOrder) -> Backstop {
    Backstop {
        client_algo_id: o.client_algo_id.clone(),
        level_id: 0,
        kind: String::new(),
        account: account.to_string(),
        symbol: o.symbol.clone(),
        side: o.side.as_str().to_string(),
        trigger_price: o.trigger_price,
        state: BackstopState::Live,
        generation: 0,
        algo_id: Some(o.algo_id as i64),
        order_id: None,
        failures: 0,
        next_at: 0,
        error: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn live(o: &AlgoOrder) -> BackstopUpdate {
    BackstopUpdate {
        algo_id: Some(o.algo_id as i64),
        ..BackstopUpdate::default()
    }
}

async fn set(
    p: &Platform,
    ctx: &RunContext,
    id: &str,
    state: BackstopState,
    u: BackstopUpdate,
) -> Result<(), ProcessError> {
    p.store
        .update_backstop(&ctx.fence, id, state, &u)
        .await
        .map_err(|e| p.store_error(e))?;
    Ok(())
}

/// Marks a placement failed; a new generation may go after the backoff.
async fn failed(p: &Platform, ctx: &RunContext, id: &str, failures: i64, why: &str) -> Result<(), ProcessError> {
    let wait = REPLACE.wait(failures.max(1) as u32).as_millis() as i64;
    let update = BackstopUpdate {
        error: Some(why.to_string()),
        failures: Some(failures),
        next_at: Some(now_ms() + wait),
        ..BackstopUpdate::default()
    };
    set(p, ctx, id, BackstopState::Failed, update).await
}
