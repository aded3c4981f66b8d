//! Binance USDⓈ-M Futures: everything that is Binance lives here. Routes and
//! weights ([`weights`], shared with the simulator), signing ([`sign`]), the
//! HTTP transport with `X-MBX-*` headers, clock sync and error-code
//! classification ([`transport`]), the JSON shapes ([`wire`]) and the
//! [`Venue`](super::Venue) implementation ([`client`]); the pace of new
//! WebSocket connections ([`pacer`]).

mod client;
pub mod pacer;
pub mod sign;
pub mod transport;
pub mod weights;
mod wire;
pub mod ws;

pub use client::Binance;
pub use transport::TransportOptions;
