//! The simulator's HTTP surface: Binance's routes under `/fapi` (through
//! [`gate`](super::gate)), its WebSockets under `/public`, `/market` and
//! `/private` (`/private/stream` is the combined route's, [`ws`](super::ws)), and `/sim/*` for tests ([`control`](super::control)).

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use super::Sim;
use super::{control, gate, ws};

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/sim/meter", get(control::meter))
        .route("/sim/faults", get(control::get_faults).post(control::set_faults))
        .route("/sim/prices", post(control::set_prices))
        .route("/sim/delist", post(control::delist))
        .route("/sim/consume", post(control::consume))
        .route("/sim/trading", post(control::trading))
        .route("/sim/fills", get(control::fills))
        .route("/sim/orders", get(control::orders))
        .route("/sim/algo_orders", get(control::algo_orders))
        .route("/sim/trade", post(control::trade))
        .route("/sim/hedge", post(control::hedge))
        .route("/sim/accounts", post(control::add_account))
        .route("/sim/stream/drop", post(control::drop_streams))
        .route("/sim/stream/expire_keys", post(control::expire_listen_keys))
        .route("/sim/stream/book_ticker", post(control::book_ticker))
        .route("/{route}/ws/{stream}", get(ws::single))
        .route("/{route}/stream", get(ws::combined))
        .route("/private/ws", get(ws::private))
        .fallback(gate::fapi)
        .with_state(sim)
}
