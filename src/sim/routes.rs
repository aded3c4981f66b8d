//! The simulator's HTTP surface: Binance's routes under `/fapi` (through
//! [`gate`](super::gate)), and `/sim/*` for tests ([`control`](super::control)).

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use super::Sim;
use super::{control, gate};

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/sim/meter", get(control::meter))
        .route("/sim/faults", get(control::get_faults).post(control::set_faults))
        .route("/sim/prices", post(control::set_prices))
        .route("/sim/delist", post(control::delist))
        .route("/sim/consume", post(control::consume))
        .route("/sim/fills", get(control::fills))
        .route("/sim/orders", get(control::orders))
        .fallback(gate::fapi)
        .with_state(sim)
}
