//! When the venue's backstop closed a position: find out (the row, or the
//! venue when the row cannot tell), read what it filled, and record the
//! level as executed by the venue. Shared by `backstop_sync` and by a close
//! that finds its position already flat, so the record is right whichever
//! notices first.

use rust_decimal::Decimal;

use crate::budget::Caller;
use crate::domain::AlgoStatus;
use crate::exchange::Venue;
use crate::process::Fence;
use crate::store::{Backstop, BackstopState, BackstopUpdate, Store};

/// Fills looked for per symbol when the store has none of the order yet.
const RECENT_FILLS: u32 = 100;

/// The level's backstop that fired, if one did: from the rows, asking the
/// venue about one that may still be resting there (and noting the answer).
pub async fn fired_backstop(
    store: &Store,
    venue: &dyn Venue,
    caller: &Caller,
    fence: &Fence,
    level_id: i64,
) -> anyhow::Result<Option<Backstop>> {
    for mut b in store.backstops_of_level(level_id).await? {
        match b.state {
            BackstopState::Triggered | BackstopState::Recorded => return Ok(Some(b)),
            BackstopState::Live | BackstopState::Placing => {
                let found = venue
                    .algo_order_by_client_id(caller, &b.account, &b.symbol, &b.client_algo_id)
                    .await?;
                if let Some(order) = found
                    && matches!(order.status, AlgoStatus::Triggered | AlgoStatus::Finished)
                {
                    let update = BackstopUpdate {
                        algo_id: Some(order.algo_id as i64),
                        order_id: order.order_id.map(|id| id as i64),
                        ..BackstopUpdate::default()
                    };
                    store
                        .update_backstop(fence, &b.client_algo_id, BackstopState::Triggered, &update)
                        .await?;
                    b.state = BackstopState::Triggered;
                    b.order_id = update.order_id;
                    return Ok(Some(b));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// What the fired backstop's MARKET order filled: (quantity, average price),
/// from the stored fills, else the venue's recent fills of the symbol
/// (stored on the way). `None` while nothing is known yet.
pub async fn filled(
    store: &Store,
    venue: &dyn Venue,
    caller: &Caller,
    fence: &Fence,
    b: &Backstop,
) -> anyhow::Result<Option<(Decimal, Option<Decimal>)>> {
    let Some(order_id) = b.order_id else {
        return Ok(None);
    };
    let mut fills = store.fills_of_order(&b.account, &b.symbol, order_id).await?;
    if fills.is_empty() {
        let recent = venue
            .fills_since(caller, &b.account, &b.symbol, None, RECENT_FILLS)
            .await?;
        let ours: Vec<_> = recent.into_iter().filter(|f| f.order_id as i64 == order_id).collect();
        if !ours.is_empty() {
            store.insert_streamed_fills(fence, &b.account, &ours).await?;
            fills = store.fills_of_order(&b.account, &b.symbol, order_id).await?;
        }
    }
    if fills.is_empty() {
        return Ok(None);
    }
    let qty: Decimal = fills.iter().map(|f| f.qty).sum();
    let notional: Decimal = fills.iter().map(|f| f.qty * f.price).sum();
    let avg = (!qty.is_zero()).then(|| (notional / qty).round_dp(8).normalize());
    Ok(Some((qty, avg)))
}
