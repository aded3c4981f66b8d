//! What only the exchange speaks: account credentials and the venue's limits and symbols.

use crate::config::Secret;

/// Credentials of one exchange account.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub api_key: Secret,
    pub api_secret: Secret,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeInfo {
    /// REQUEST_WEIGHT per minute.
    pub weight_limit_per_minute: u32,
    pub symbols: Vec<crate::domain::Listing>,
}
