//! Signed requests, checked as Binance checks them: the API key, the
//! HMAC signature of the exact payload, and the timestamp against the
//! server's clock and `recvWindow`.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;

use super::Sim;
use super::fapi::binance_error;
use crate::exchange::binance::sign;

/// Checks key, signature and timestamp as Binance does; returns the API key.
pub fn authenticate(
    sim: &Sim,
    params: &HashMap<String, String>,
    payload: &str,
    api_key: Option<&str>,
    server_time: i64,
) -> Result<String, Box<Response>> {
    let record = |code: &str| *sim.meter().answers.entry(code.to_string()).or_default() += 1;
    let Some(key) = api_key else {
        record("-2014");
        return Err(Box::new(binance_error(
            StatusCode::UNAUTHORIZED,
            -2014,
            "API-key format invalid.",
        )));
    };
    let Some(secret) = sim.book().accounts.get(key).map(|a| a.secret.clone()) else {
        record("-2015");
        return Err(Box::new(binance_error(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )));
    };
    let signed = payload.rsplit_once("&signature=");
    let valid = signed.is_some_and(|(data, signature)| sign::verify(&secret, data, signature));
    if !valid {
        record("-1022");
        return Err(Box::new(binance_error(
            StatusCode::BAD_REQUEST,
            -1022,
            "Signature for this request is not valid.",
        )));
    }
    let timestamp: i64 = params.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let recv_window: i64 = params
        .get("recvWindow")
        .and_then(|t| t.parse().ok())
        .unwrap_or(5000)
        .min(60_000);
    if !(timestamp < server_time + 1000 && server_time - timestamp <= recv_window) {
        record("-1021");
        return Err(Box::new(binance_error(
            StatusCode::BAD_REQUEST,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )));
    }
    Ok(key.to_string())
}
