//! Closing a position exactly once. An order whose answer is lost (a 5xx,
//! a timeout, -1007) may or may not have executed; it is looked up by its
//! client order id before anything is sent again, and a resend reuses the
//! same id, which the venue refuses (-4116) if the first one did execute.

use rust_decimal::Decimal;

use super::{Caller, OrderAck, OrderSide, Venue, VenueError};

/// How many times an unknown outcome is resolved before giving up (the caller retries later).
const MAX_ROUNDS: usize = 3;

/// Places a reduce-only MARKET close with `client_order_id`, never twice.
pub async fn close_exactly_once(
    venue: &dyn Venue,
    caller: &Caller,
    account: &str,
    symbol: &str,
    side: OrderSide,
    qty: Decimal,
    client_order_id: &str,
) -> Result<OrderAck, VenueError> {
    let mut last = None;
    for _ in 0..MAX_ROUNDS {
        match venue
            .close_position(caller, account, symbol, side, qty, client_order_id)
            .await
        {
            Ok(ack) => return Ok(ack),
            Err(VenueError::UnknownOutcome(why)) => {
                tracing::warn!(client_order_id, %why, "order outcome unknown; looking it up before any resend");
                match venue.order_by_client_id(caller, account, symbol, client_order_id).await {
                    Ok(Some(ack)) => return Ok(ack),
                    Ok(None) => last = Some(VenueError::UnknownOutcome(why)),
                    // Cannot tell: stop here rather than risk a second execution. The
                    // outcome is still unknown, whatever kept the look-up from answering.
                    Err(e) => {
                        return Err(VenueError::UnknownOutcome(format!(
                            "{why}; the look-up failed too: {e}"
                        )));
                    }
                }
            }
            // -4116: this client id already executed; the lookup tells how.
            Err(VenueError::Rejected { code: -4116, .. }) => {
                return venue
                    .order_by_client_id(caller, account, symbol, client_order_id)
                    .await?
                    .ok_or_else(|| {
                        VenueError::UnknownOutcome("venue reports a duplicate id but no such order".into())
                    });
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| VenueError::UnknownOutcome("order outcome still unknown".into())))
}
