//! The exchange seen by processes: one [`Venue`] trait, the Binance USDⓈ-M
//! Futures implementation ([`binance`]), closing a position exactly once
//! ([`orders`]), and the closed set of failure kinds ([`VenueError`]). Every
//! call names its caller ([`Caller`]) so the budget can admit it by
//! process, priority and deadline.
//!
//! Owns: everything venue-specific (routes, weights, signing, headers, error
//! codes). Imports `upstream`, `budget`, `domain`, `telemetry`, `config`
//! (credentials), `net`, `clock`; never `ha`, `store`, `sim` or the processes.

pub mod binance;
mod error;
pub mod orders;
pub mod refusals;
mod types;

use futures::future::BoxFuture;

pub use crate::budget::Caller;
pub use crate::domain::{
    AlgoKind, AlgoOrder, AlgoOrderRequest, AlgoSize, AlgoStatus, Fill, Listing, OrderAck, OrderSide, OrderStatus,
    Position, Price, WorkingType,
};
pub use error::{VenueError, VenueErrorKind};
pub use types::{Account, ExchangeInfo};

/// What the platform needs from an exchange.
pub trait Venue: Send + Sync + 'static {
    /// The account's user-data stream key: created, or the valid one returned and extended.
    fn listen_key<'a>(&'a self, caller: &'a Caller, account: &'a str) -> BoxFuture<'a, Result<String, VenueError>>;
    /// Extends a listen key (it expires 60 minutes after its last extension).
    fn keep_alive<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), VenueError>>;
    /// Limits and symbols, read at start-up (and whenever limits may have changed).
    fn exchange_info<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<ExchangeInfo, VenueError>>;
    /// Current prices of `symbols` (all symbols when empty), no older than `caller.max_age`.
    fn prices<'a>(&'a self, caller: &'a Caller, symbols: &'a [String])
    -> BoxFuture<'a, Result<Vec<Price>, VenueError>>;
    /// The position of `account` in `symbol` as the venue has it now; `None` when flat.
    fn position<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, VenueError>>;
    /// Every position row the venue lists for an account, flat ones included
    /// (each with the venue's time of its last change): one state of the account.
    fn position_rows<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Position>, VenueError>>;
    /// Open positions of an account.
    fn positions<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Position>, VenueError>> {
        Box::pin(async move {
            let rows = self.position_rows(caller, account).await?;
            Ok(rows.into_iter().filter(|p| !p.amount.is_zero()).collect())
        })
    }
    /// When each symbol's position of `account` last changed (ms), open or not: a fill
    /// changes it, so a symbol whose time has not moved has no new fills.
    fn position_update_times<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>, VenueError>>;
    /// Fills of `account` in `symbol` with trade id ≥ `from_id` (oldest first, at most `limit`).
    fn fills_since<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        from_id: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Fill>, VenueError>>;
    /// A reduce-only MARKET order that closes `qty` of a position.
    fn close_position<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        side: OrderSide,
        qty: rust_decimal::Decimal,
        client_order_id: &'a str,
    ) -> BoxFuture<'a, Result<OrderAck, VenueError>>;
    /// The order with this client id, `None` if the venue has none.
    fn order_by_client_id<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        client_order_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<OrderAck>, VenueError>>;
    /// Whether the account is in hedge mode (`dualSidePosition`): then orders
    /// must name a position side and `reduceOnly` is refused.
    fn hedge_mode<'a>(&'a self, caller: &'a Caller, account: &'a str) -> BoxFuture<'a, Result<bool, VenueError>>;
    /// Rests a conditional order on the venue (the Algo Order API). A lost
    /// answer (`UnknownOutcome`) is settled by `algo_order_by_client_id`.
    fn place_algo_order<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        request: &'a AlgoOrderRequest,
    ) -> BoxFuture<'a, Result<AlgoOrder, VenueError>>;
    /// Cancels an open conditional order; one that is not open (unknown,
    /// triggered, finished) is `Rejected` with -2011.
    fn cancel_algo_order<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        client_algo_id: &'a str,
    ) -> BoxFuture<'a, Result<(), VenueError>>;
    /// The account's open conditional orders, of `symbol` or all (weight 1 or 40).
    fn open_algo_orders<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<AlgoOrder>, VenueError>>;
    /// The conditional order with this client id in any state, `None` if the venue has none.
    fn algo_order_by_client_id<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        client_algo_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AlgoOrder>, VenueError>>;
}
