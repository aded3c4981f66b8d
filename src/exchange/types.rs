//! What only the exchange speaks: account credentials and the venue's limits and symbols.

pub use crate::accounts::Account;

#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeInfo {
    /// REQUEST_WEIGHT per minute.
    pub weight_limit_per_minute: u32,
    pub symbols: Vec<crate::domain::Listing>,
}
