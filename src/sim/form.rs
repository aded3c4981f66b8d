//! Binance's parameters arrive form-encoded, in the query string or the
//! body; this decodes them the way the venue does (percent-escapes, `+`).

use std::collections::HashMap;

pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_escapes_and_plus() {
        let p = super::parse_form("symbol=BTCUSDT&newClientOrderId=sm-1%2F2&note=a+b&flag");
        assert_eq!(p["symbol"], "BTCUSDT");
        assert_eq!(p["newClientOrderId"], "sm-1/2");
        assert_eq!(p["note"], "a b");
        assert_eq!(p["flag"], "");
    }
}
