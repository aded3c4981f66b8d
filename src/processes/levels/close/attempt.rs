//! One attempt at a close: take the intent as far as it can go now, under
//! a claim and a deadline, and say what comes next.
//!
//! ```text
//! order n ──▶ look it up (unless surely unsent; "not found" is asked again before it is believed)
//!    found ─▶ wait until final ─▶ read the position ─ flat ─▶ executed
//!                                      │ open ─▶ advance to n+1 (store) ─▶ send n+1 (at once if n filled something)
//!    not found ─▶ size it: the streamed position for a fresh trigger, else the venue's ─▶ nothing held ─▶ cancelled / executed
//!                 │ send order n: reduce-only MARKET, ≤ MARKET_LOT_SIZE, client id `base` / `base-n`
//!                 │ refused ─▶ the refusal table (exchange::refusals): retry later · look up · split · re-read · final
//! ```
//!
//! Orders are reduce-only and sized from the position, so a close never
//! flips a position; the deterministic ids and the look-up before any resend
//! make a second execution of one order impossible; every write is
//! conditional on the claim, and an order leaves only while the claim has
//! `send_margin` left on this process's own monotonic clock.

use std::time::Duration;

use rust_decimal::Decimal;
use tokio::time::Instant;

use super::{CloseDeps, Settled};
use crate::budget::Caller;
use crate::domain::{OrderAck, PositionSide};
use crate::exchange::orders::close_exactly_once;
use crate::exchange::refusals::{CloseStep, close_step};
use crate::process::{Fence, ProcessError};
use crate::processes::backstop::record;
use crate::processes::platform::store_error;
use crate::store::{BackstopState, BackstopUpdate, Claim, CloseOutcome, Ending, Intent};

/// How many times "no such order" is asked before it is believed (it may not be visible yet).
const LOOKUPS_BEFORE_NOT_FOUND: u32 = 3;
const LOOKUP_AGAIN_AFTER: Duration = Duration::from_millis(300);

/// What a close knows between attempts (in memory: a new owner starts with the defaults).
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Order `attempt` was surely never sent (just triggered, or refused): no look-up first.
    pub unsent: bool,
    /// The venue refused a larger order (-4005): parts are at most this.
    pub split_max: Option<Decimal>,
    /// When the first order was acknowledged (monotonic), and the venue's time of it.
    pub first_ack: Option<(Instant, i64)>,
    /// Some order of this close has been acknowledged (its backstops are cancelled then).
    pub acked_once: bool,
    /// Orders (by number) the venue acknowledged: never sent again, whatever a look-up says.
    pub acked: std::collections::BTreeSet<i64>,
}

/// What the attempt came to.
#[derive(Debug)]
pub(super) enum Step {
    /// The close is over (or someone else finished it).
    Done(Settled),
    /// It moved on (an order filled part): go on at once.
    Again,
    /// Not now: wait the backoff, then go on (why, and what the venue's answer called for).
    Retry(String, CloseStep),
}

/// One attempt of one intent.
pub(super) struct Attempt<'a> {
    pub deps: &'a CloseDeps,
    pub claim: &'a Claim,
    /// Orders may leave until then (the claim's end minus the send margin, monotonic).
    pub send_until: Instant,
    pub caller: Caller,
}

impl Attempt<'_> {
    /// Takes `intent` as far as it can go before the caller's deadline.
    pub async fn run(&self, intent: &mut Intent, progress: &mut Progress) -> Step {
        let Some(side) = side_of(intent) else {
            let why = format!("intent has no side (`{}`)", intent.side);
            return self.finish(intent, None, Ending::Failed(why)).await;
        };
        let n = intent.attempt;
        let id = intent.order_client_id(n);
        let found = match progress.unsent {
            true => None,
            false => match self.look_up(intent, &id).await {
                Ok(None) if progress.acked.contains(&n) => {
                    let why = format!("order {id} was acknowledged but is not visible yet");
                    return Step::Retry(why, CloseStep::LookUp);
                }
                Ok(found) => found,
                Err(why) => return Step::Retry(why, CloseStep::LookUp),
            },
        };
        let ack = match found {
            Some(ack) => ack,
            None => match self.send(intent, side, &id, progress).await {
                Ok(ack) => ack,
                Err(step) => return step,
            },
        };
        progress.unsent = false;
        progress.acked.insert(n);
        let ack = match self.until_final(intent, &id, ack).await {
            Ok(ack) => ack,
            Err(why) => return Step::Retry(why, CloseStep::LookUp),
        };
        let amount = match self.position(intent).await {
            Ok(amount) => amount,
            Err(why) => return Step::Retry(why, CloseStep::LookUp),
        };
        if side.held(amount).is_zero() {
            let ending = self.nothing_left(intent, ack.executed_qty, amount);
            return self.finish(intent, Some(&ack), ending).await;
        }
        match self.advance(intent, &ack).await {
            Ok(true) => {}
            Ok(false) => return Step::Done(Settled::Elsewhere),
            Err(e) => return Step::Retry(e.message, CloseStep::RetryLater),
        }
        progress.unsent = true;
        if ack.executed_qty.is_zero() {
            let why = format!("order {id} ended {:?} with nothing filled", ack.status);
            return Step::Retry(why, CloseStep::RetryLater);
        }
        tracing::warn!(client_order_id = %id, filled = %ack.executed_qty, open = %side.held(amount), "close left part of the position open; closing the rest");
        Step::Again
    }

    /// Sends order `id` for what is held, or says why not. `Ok`: the venue's acknowledgement.
    async fn send(
        &self,
        intent: &Intent,
        side: PositionSide,
        id: &str,
        progress: &mut Progress,
    ) -> Result<OrderAck, Step> {
        let d = self.deps;
        // A fresh trigger sends at once, sized from the streamed position; the venue's word confirms after.
        let from_stream = intent.attempt == 0
            && progress.unsent
            && intent.qty > Decimal::ZERO
            && d.stream_health.healthy(&intent.account);
        let held = match from_stream {
            true => intent.qty,
            false => {
                let amount = self
                    .position(intent)
                    .await
                    .map_err(|why| Step::Retry(why, CloseStep::RetryLater))?;
                let held = side.held(amount);
                if held.is_zero() {
                    let ending = self.nothing_left(intent, Decimal::ZERO, amount);
                    return Err(self.finish(intent, None, ending).await);
                }
                held
            }
        };
        let qty = d.catalog.market_qty(&intent.symbol, held, progress.split_max);
        if qty.is_zero() {
            let why = format!("{held} open is below the symbol's minimum order quantity");
            return Err(self.finish(intent, None, Ending::Failed(why)).await);
        }
        if Instant::now() >= self.send_until {
            let why = "the claim ends too soon to send an order safely".to_string();
            return Err(Step::Retry(why, CloseStep::RetryLater));
        }
        tracing::info!(client_order_id = %id, %qty, side = side.closing().as_str(), from_stream, "sending a reduce-only close");
        // Admission may not hold the order past the point where it may still leave.
        let caller = Caller {
            deadline: self.caller.deadline.min(self.send_until),
            ..self.caller.clone()
        };
        let sent = close_exactly_once(
            &*d.venue,
            &caller,
            &intent.account,
            &intent.symbol,
            side.closing(),
            qty,
            id,
        )
        .await;
        let e = match sent {
            Ok(ack) => {
                if !progress.acked_once {
                    progress.acked_once = true;
                    progress.first_ack = Some((Instant::now(), ack.update_time_ms));
                    self.cancel_backstops(intent).await;
                }
                return Ok(ack);
            }
            Err(e) => e,
        };
        let step = close_step(&e);
        d.events.protection().close_refused(step.as_str());
        let why = format!("order {id}: {e}");
        tracing::warn!(client_order_id = %id, error = %e, step = step.as_str(), "close order not placed");
        Err(match step {
            CloseStep::RetryLater => {
                progress.unsent = true;
                Step::Retry(why, step)
            }
            CloseStep::LookUp => {
                progress.unsent = false;
                Step::Retry(why, step)
            }
            CloseStep::Split => {
                progress.unsent = true;
                progress.split_max = Some(d.catalog.market_qty(&intent.symbol, qty / Decimal::TWO, None));
                Step::Again
            }
            CloseStep::Reread => {
                progress.unsent = true;
                match self.position(intent).await {
                    Ok(amount) if side.held(amount).is_zero() => {
                        let ending = self.nothing_left(intent, Decimal::ZERO, amount);
                        self.finish(intent, None, ending).await
                    }
                    Ok(_) => Step::Retry(why, step),
                    Err(read) => Step::Retry(read, step),
                }
            }
            CloseStep::Final => {
                self.finish(intent, None, Ending::Failed(format!("venue refused the close: {e}")))
                    .await
            }
        })
    }

    /// Looks order `id` up; "not found" is believed only after asking again (it may not be visible yet).
    async fn look_up(&self, intent: &Intent, id: &str) -> Result<Option<OrderAck>, String> {
        for round in 1..=LOOKUPS_BEFORE_NOT_FOUND {
            let found = self
                .deps
                .venue
                .order_by_client_id(&self.caller, &intent.account, &intent.symbol, id)
                .await
                .map_err(|e| format!("cannot look order {id} up: {e}"))?;
            if found.is_some() || round == LOOKUPS_BEFORE_NOT_FOUND {
                return Ok(found);
            }
            if Instant::now() + LOOKUP_AGAIN_AFTER > self.caller.deadline {
                return Err(format!("order {id} not found yet; asking again later"));
            }
            tokio::time::sleep(LOOKUP_AGAIN_AFTER).await;
        }
        Ok(None)
    }

    /// Polls order `id` until it is final, within the deadline.
    async fn until_final(&self, intent: &Intent, id: &str, mut ack: OrderAck) -> Result<OrderAck, String> {
        let mut wait = Duration::from_millis(25);
        while !ack.status.is_final() {
            if Instant::now() + wait + Duration::from_millis(100) > self.caller.deadline {
                return Err(format!("order {id} is {:?}, not final yet", ack.status));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
            ack = match self
                .deps
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

    /// The venue's signed position of the intent's account and symbol now.
    async fn position(&self, intent: &Intent) -> Result<Decimal, String> {
        let position = self
            .deps
            .venue
            .position(&self.caller, &intent.account, &intent.symbol)
            .await
            .map_err(|e| format!("cannot read the position: {e}"))?;
        Ok(position.map(|p| p.amount).unwrap_or_default())
    }

    /// Nothing more is held on the level's side: executed if this close took
    /// any of it, else cancelled because the position went away by itself.
    fn nothing_left(&self, intent: &Intent, last_filled: Decimal, amount: Decimal) -> Ending {
        if !(intent.filled_qty + last_filled).is_zero() {
            Ending::Executed
        } else if amount.is_zero() {
            Ending::Cancelled("position_closed")
        } else {
            Ending::Cancelled("position_flipped")
        }
    }

    /// Order n is final and the position is still open: its fill joins the sums, n+1 is next.
    async fn advance(&self, intent: &mut Intent, ack: &OrderAck) -> Result<bool, ProcessError> {
        let d = self.deps;
        let moved = d
            .store
            .advance_intent(self.claim, intent, ack.executed_qty, ack.avg_price, ack.order_id as i64)
            .await
            .map_err(|e| store_error(&d.events, e))?;
        if moved {
            intent.filled_qty += ack.executed_qty;
            intent.notional += ack.executed_qty * ack.avg_price;
            intent.order_id = Some(ack.order_id as i64);
            intent.attempt += 1;
        }
        Ok(moved)
    }

    /// Our first order has left: the level's backstops on the venue have
    /// done their job as a second line and are cancelled (best effort:
    /// `backstop_sync` cancels what is left, since the level is no longer armed).
    async fn cancel_backstops(&self, intent: &Intent) {
        let d = self.deps;
        let Ok(rows) = d.store.backstops_of_level(intent.level_id).await else {
            return;
        };
        for b in rows.iter().filter(|b| b.state.on_venue()) {
            let cancelled = d
                .venue
                .cancel_algo_order(&self.caller, &b.account, &b.symbol, &b.client_algo_id)
                .await;
            match cancelled {
                Ok(()) => {
                    d.events.protection().backstop_change("cancel", "ok");
                    let none = Fence::none();
                    let _ = d
                        .store
                        .update_backstop(
                            &none,
                            &b.client_algo_id,
                            BackstopState::Cancelled,
                            &BackstopUpdate::default(),
                        )
                        .await;
                }
                Err(e) => {
                    tracing::debug!(client_algo_id = %b.client_algo_id, error = %e, "backstop not cancelled by the close; backstop_sync will")
                }
            }
        }
    }

    /// Nothing was held any more when this close looked: if the level's
    /// backstop fired, the venue took the position flat and the level says so.
    async fn closed_by_venue(&self, intent: &Intent) -> Option<Step> {
        let d = self.deps;
        let none = Fence::none();
        let fired = record::fired_backstop(&d.store, &*d.venue, &self.caller, &none, intent.level_id).await;
        let b = match fired {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                return Some(Step::Retry(
                    format!("cannot ask about the backstop: {e:#}"),
                    CloseStep::LookUp,
                ));
            }
        };
        let fill = record::filled(&d.store, &*d.venue, &self.caller, &none, &b)
            .await
            .ok()
            .flatten()
            .unwrap_or((Decimal::ZERO, None));
        match d
            .store
            .record_venue_close(&none, &b, fill, d.webhook_url.as_deref())
            .await
        {
            Ok(true) => Some(Step::Done(Settled::ClosedByVenue)),
            Ok(false) => Some(Step::Done(Settled::Elsewhere)),
            Err(e) => Some(Step::Retry(store_error(&d.events, e).message, CloseStep::RetryLater)),
        }
    }

    /// Records the end. `last` is the final order whose fill is not yet in the intent's sums.
    async fn finish(&self, intent: &Intent, last: Option<&OrderAck>, ending: Ending) -> Step {
        let d = self.deps;
        if matches!(ending, Ending::Cancelled(_))
            && let Some(step) = self.closed_by_venue(intent).await
        {
            return step;
        }
        let outcome = outcome(intent, last, ending);
        match d
            .store
            .finish_intent(self.claim, intent, &outcome, d.webhook_url.as_deref())
            .await
        {
            Ok(false) => Step::Done(Settled::Elsewhere),
            Ok(true) => Step::Done(match outcome.ending {
                Ending::Executed => Settled::Executed,
                Ending::Failed(why) => Settled::Failed(why),
                Ending::Cancelled(reason) => Settled::Cancelled(reason),
            }),
            Err(e) => Step::Retry(store_error(&d.events, e).message, CloseStep::RetryLater),
        }
    }
}

/// The side of the position an intent closes (its order side is the other).
fn side_of(intent: &Intent) -> Option<PositionSide> {
    match intent.side.as_str() {
        "SELL" => Some(PositionSide::Long),
        "BUY" => Some(PositionSide::Short),
        _ => None,
    }
}

/// What the close took, for the record.
fn outcome(intent: &Intent, last: Option<&OrderAck>, ending: Ending) -> CloseOutcome {
    let (qty, notional) = match last {
        Some(a) => (
            intent.filled_qty + a.executed_qty,
            intent.notional + a.executed_qty * a.avg_price,
        ),
        None => (intent.filled_qty, intent.notional),
    };
    CloseOutcome {
        ending,
        closed_qty: qty.normalize(),
        avg_price: (!qty.is_zero()).then(|| (notional / qty).round_dp(8).normalize()),
        last_order_id: last.map(|a| a.order_id as i64).or(intent.order_id),
        orders: intent.attempt + last.is_some() as i64,
    }
}
