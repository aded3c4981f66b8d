//! Outbound HTTP set-up: the TLS crypto provider (ring) installed once for
//! the whole process, and the one factory of `reqwest` clients (exchange
//! transport, webhooks, OTLP export all use it or its provider).
//!
//! Owns: TLS provider and client construction, and webhooks' address policy
//! and signing (`webhook`). Imports nothing of the service.

pub mod webhook;

use std::sync::Once;
use std::time::Duration;

/// Selects ring as the TLS crypto provider for every client in the process.
/// Idempotent; called by [`http_client`] and before the OTLP exporter starts.
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client with TLS set up and idle connections kept 30 s.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    install_crypto();
    Ok(reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?)
}
