//! HMAC-SHA256 request signing, as Binance specifies: the signature is the
//! lowercase hex HMAC of the exact query string (and body) sent.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
