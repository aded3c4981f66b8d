//! The close protocol: a crossed level is done when the venue's position is
//! flat, whatever the venue answers on the way.
//!
//! ```text
//! intent (attempt n) ──▶ look order n up (unless surely unsent)
//!      found ─▶ wait until final ─▶ read the position ─ flat ─▶ executed
//!                                        │ open, n+1 < MAX ─▶ advance to n+1 (store) ─▶ send order n+1
//!                                        │ open, no orders left ─▶ failed
//!      not found ─▶ read the position ─ flat ─▶ executed (or failed: nothing was open)
//!                                        │ open ─▶ send order n: reduce-only MARKET for the open quantity,
//!                                                   client id `base` / `base-n`, never resent blindly
//! ```
//!
//! Every step that cannot be decided now (an answer lost, an order not final
//! yet, the venue away) leaves the intent pending at order n; the next settle
//! starts again with "look order n up". Orders are reduce-only and sized from
//! the venue's position read just before sending, so a close never flips a
//! position, and the ids make a second execution of one order impossible.

use std::time::Duration;

use rust_decimal::Decimal;
use tokio::time::Instant;

use super::platform::Platform;
use crate::budget::Caller;
use crate::exchange::orders::close_exactly_once;
use crate::exchange::{OrderAck, OrderSide, VenueError};
use crate::process::{ProcessError, RunContext};
use crate::store::{CloseOutcome, Intent};

/// Close orders one intent may send before it is failed.
pub const MAX_CLOSE_ORDERS: i64 = 5;

/// What settling an intent came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// The position is flat; the level is executed.
    Executed,
    /// The position could not be taken flat; the level is failed (the reason).
    Failed(String),
    /// Not decided yet; a later settle goes on from where this one stopped (why).
    Pending(String),
    /// Another settle (another path or replica) finished it first; nothing to record.
    Elsewhere,
}

/// One settle of one intent.
pub struct Close<'a> {
    platform: &'a Platform,
    ctx: &'a RunContext,
    caller: Caller,
    /// When the first order was acknowledged here (monotonic), and the venue's time of it.
    pub first_ack: Option<(Instant, i64)>,
}

impl<'a> Close<'a> {
    pub fn new(platform: &'a Platform, ctx: &'a RunContext) -> Self {
        Close {
            platform,
            ctx,
            caller: ctx.caller(None),
            first_ack: None,
        }
    }

    /// Takes `intent` as far as it can go now. `unsent`: order `intent.attempt`
    /// was surely never sent (a trigger just committed), so no lookup first.
    /// Errors are store failures only; the venue's answers are outcomes.
    pub async fn settle(&mut self, mut intent: Intent, mut unsent: bool) -> Result<Settled, ProcessError> {
        let p = self.platform;
        let Some(side) = OrderSide::parse(&intent.side) else {
            return self
                .finish(&intent, None, Some(format!("intent has no side (`{}`)", intent.side)))
                .await;
        };
        loop {
            let n = intent.attempt;
            let id = intent.order_client_id(n);
            let found = match unsent {
                true => None,
                false => match p
                    .venue
                    .order_by_client_id(&self.caller, &intent.account, &intent.symbol, &id)
                    .await
                {
                    Ok(found) => found,
                    Err(e) => return Ok(Settled::Pending(format!("cannot look order {id} up: {e}"))),
                },
            };
            let ack = match found {
                Some(ack) => ack,
                None => {
                    let open = match self.open_qty(&intent, side).await {
                        Ok(open) => open,
                        Err(e) => return Ok(Settled::Pending(format!("cannot read the position: {e}"))),
                    };
                    if open.is_zero() {
                        return self.finish(&intent, None, None).await;
                    }
                    match self.send(&intent, side, &id, open).await? {
                        Ok(ack) => ack,
                        Err(settled) => return Ok(settled),
                    }
                }
            };
            let ack = match self.until_final(&intent, &id, ack).await {
                Ok(ack) => ack,
                Err(why) => return Ok(Settled::Pending(why)),
            };
            let open = match self.open_qty(&intent, side).await {
                Ok(open) => open,
                Err(e) => return Ok(Settled::Pending(format!("cannot read the position: {e}"))),
            };
            if open.is_zero() {
                return self.finish(&intent, Some(&ack), None).await;
            }
            if n + 1 >= MAX_CLOSE_ORDERS {
                let why = format!("{open} still open after {} close orders", n + 1);
                return self.finish(&intent, Some(&ack), Some(why)).await;
            }
            tracing::warn!(client_order_id = %id, status = ?ack.status, filled = %ack.executed_qty, %open, "close left part of the position open; closing the rest");
            let moved = p
                .store
                .advance_intent(
                    &self.ctx.fence,
                    &intent,
                    ack.executed_qty,
                    ack.avg_price,
                    ack.order_id as i64,
                )
                .await
                .map_err(|e| p.store_error(e))?;
            if !moved {
                return Ok(Settled::Pending("another run moved the intent on".into()));
            }
            intent.filled_qty += ack.executed_qty;
            intent.notional += ack.executed_qty * ack.avg_price;
            intent.order_id = Some(ack.order_id as i64);
            intent.attempt += 1;
            unsent = true;
        }
    }

    /// Sends order `id` for `open` (rounded to the symbol's step). `Err` is
    /// how the intent settles when the venue refuses or cannot be heard.
    async fn send(
        &mut self,
        intent: &Intent,
        side: OrderSide,
        id: &str,
        open: Decimal,
    ) -> Result<Result<OrderAck, Settled>, ProcessError> {
        let p = self.platform;
        let qty = p.catalog.round_qty(&intent.symbol, open);
        if qty.is_zero() {
            let why = format!("{open} open is below the symbol's step size");
            return self.finish(intent, None, Some(why)).await.map(Err);
        }
        tracing::info!(client_order_id = %id, %qty, side = side.as_str(), "sending a reduce-only close");
        let sent = close_exactly_once(&*p.venue, &self.caller, &intent.account, &intent.symbol, side, qty, id).await;
        match sent {
            Ok(ack) => {
                self.first_ack.get_or_insert((Instant::now(), ack.update_time_ms));
                Ok(Ok(ack))
            }
            // Reduce-only refused: flat meanwhile (done), or the venue will not close it (failed).
            Err(VenueError::Rejected { code: -2022, msg }) => match self.open_qty(intent, side).await {
                Ok(open) if open.is_zero() => self.finish(intent, None, None).await.map(Err),
                Ok(_) => self
                    .finish(
                        intent,
                        None,
                        Some(format!("venue refused the reduce-only close: {msg}")),
                    )
                    .await
                    .map(Err),
                Err(e) => Ok(Err(Settled::Pending(format!("cannot read the position: {e}")))),
            },
            Err(e @ (VenueError::Rejected { .. } | VenueError::Auth(_))) => self
                .finish(intent, None, Some(format!("venue refused the close: {e}")))
                .await
                .map(Err),
            Err(e) => Ok(Err(Settled::Pending(format!("order {id}: {e}")))),
        }
    }

    /// Polls order `id` until it is final, within the run's deadline.
    async fn until_final(&self, intent: &Intent, id: &str, mut ack: OrderAck) -> Result<OrderAck, String> {
        let mut wait = Duration::from_millis(25);
        while !ack.status.is_final() {
            if Instant::now() + wait + Duration::from_millis(100) > self.ctx.deadline {
                return Err(format!("order {id} is {:?}, not final yet", ack.status));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
            ack = match self
                .platform
                .venue
                .order_by_client_id(&self.caller, &intent.account, &intent.symbol, id)
                .await
            {
                Ok(Some(ack)) => ack,
                Ok(None) => return Err(format!("order {id} acknowledged but not found")),
                Err(e) => return Err(format!("cannot look order {id} up: {e}")),
            };
        }
        Ok(ack)
    }

    /// What of the position this intent closes is still open at the venue:
    /// the part `side` reduces (a position on the other side is not ours to close).
    async fn open_qty(&self, intent: &Intent, side: OrderSide) -> Result<Decimal, VenueError> {
        let position = self
            .platform
            .venue
            .position(&self.caller, &intent.account, &intent.symbol)
            .await?;
        let amount = position.map(|p| p.amount).unwrap_or_default();
        Ok(match side {
            OrderSide::Sell if amount > Decimal::ZERO => amount,
            OrderSide::Buy if amount < Decimal::ZERO => -amount,
            _ => Decimal::ZERO,
        })
    }

    /// Records the end: executed when `error` is `None`. `last` is the final
    /// order whose fill is not yet in the intent's sums.
    fn finish_outcome(intent: &Intent, last: Option<&OrderAck>, error: Option<String>) -> CloseOutcome {
        let (qty, notional) = match last {
            Some(a) => (
                intent.filled_qty + a.executed_qty,
                intent.notional + a.executed_qty * a.avg_price,
            ),
            None => (intent.filled_qty, intent.notional),
        };
        let nothing_closed = qty.is_zero() && error.is_none();
        CloseOutcome {
            error: match nothing_closed {
                true => Some("no open position to close".into()),
                false => error,
            },
            closed_qty: qty.normalize(),
            avg_price: (!qty.is_zero()).then(|| (notional / qty).round_dp(8).normalize()),
            last_order_id: last.map(|a| a.order_id as i64).or(intent.order_id),
            orders: intent.attempt + last.is_some() as i64,
        }
    }

    async fn finish(
        &self,
        intent: &Intent,
        last: Option<&OrderAck>,
        error: Option<String>,
    ) -> Result<Settled, ProcessError> {
        let p = self.platform;
        let outcome = Self::finish_outcome(intent, last, error);
        let finished = p
            .store
            .finish_intent(&self.ctx.fence, intent, &outcome, p.webhook_url.as_deref())
            .await
            .map_err(|e| p.store_error(e))?;
        Ok(match (finished, outcome.error) {
            (false, _) => Settled::Elsewhere,
            (true, None) => Settled::Executed,
            (true, Some(why)) => Settled::Failed(why),
        })
    }
}
