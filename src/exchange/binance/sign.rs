//! A request as Binance reads it: form-encoded parameters, and for signed
//! routes `recvWindow`, a `timestamp` on the venue's clock and the
//! HMAC-SHA256 `signature` (lowercase hex of the exact payload sent), last.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use sha2::Sha256;

use crate::clock::now_ms;
use crate::exchange::Account;

/// A request ready to send. `api_key` goes in `X-MBX-APIKEY`.
pub struct Prepared {
    pub method: Method,
    pub url: String,
    pub body: Option<String>,
    pub api_key: Option<String>,
}

/// Who a request speaks for.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// Public data.
    None,
    /// The API key header only (listen keys).
    Key(&'a Account),
    /// Signed with the account's secret.
    Signed(&'a Account),
}

/// Builds the URL (and body for POST); signed requests get `recvWindow`,
/// `timestamp` (venue time) and `signature` last.
pub fn prepare(
    base_url: &str,
    method: Method,
    endpoint: &str,
    params: &[(String, String)],
    credentials: Credentials<'_>,
    recv_window_ms: u64,
    clock_offset_ms: i64,
) -> Prepared {
    let mut query: Vec<(String, String)> = params.to_vec();
    let mut api_key = None;
    if let Credentials::Key(account) = credentials {
        api_key = Some(account.api_key.expose().to_string());
    }
    if let Credentials::Signed(account) = credentials {
        query.push(("recvWindow".into(), recv_window_ms.to_string()));
        query.push(("timestamp".into(), (now_ms() + clock_offset_ms).to_string()));
        let payload = encode(&query);
        let signature = signature(account.api_secret.expose(), &payload);
        query.push(("signature".into(), signature));
        api_key = Some(account.api_key.expose().to_string());
    }
    let encoded = encode(&query);
    let (url, body) = if method == Method::POST {
        (format!("{base_url}{endpoint}"), Some(encoded))
    } else if encoded.is_empty() {
        (format!("{base_url}{endpoint}"), None)
    } else {
        (format!("{base_url}{endpoint}?{encoded}"), None)
    };
    Prepared {
        method,
        url,
        body,
        api_key,
    }
}

pub fn encode(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn signature(secret: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a presented signature (used by the simulator).
pub fn verify(secret: &str, payload: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = signature(secret, payload);
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_put_the_signature_last() {
        let account = Account {
            name: "main".into(),
            api_key: crate::config::Secret::new("key"),
            api_secret: crate::config::Secret::new("secret"),
        };
        let p = prepare(
            "http://x",
            Method::GET,
            "/fapi/v1/userTrades",
            &[("symbol".into(), "BTCUSDT".into())],
            Credentials::Signed(&account),
            5000,
            0,
        );
        let query = p.url.split_once('?').unwrap().1;
        let (payload, signature) = query.rsplit_once("&signature=").unwrap();
        assert!(payload.starts_with("symbol=BTCUSDT&recvWindow=5000&timestamp="));
        assert!(verify("secret", payload, signature));
        assert_eq!(p.api_key.as_deref(), Some("key"));
    }

    #[test]
    fn binance_documented_test_vector() {
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let payload = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let expected = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
        assert_eq!(super::signature(secret, payload), expected);
        assert!(super::verify(secret, payload, expected));
        assert!(!super::verify("wrong", payload, expected));
    }
}
