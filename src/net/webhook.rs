//! Webhook deliveries that cannot be turned against us: every address a
//! delivery would connect to is checked (the URL's literal address, or each
//! address its name resolves to, resolved once, inside the client, so the
//! connection goes to exactly the addresses that were checked), redirects
//! are never followed, connects and whole requests have deadlines, and
//! bodies are signed (`X-Script-Manager-Signature`).
//!
//! Which addresses are special is decided here ([`classify`]); which of them
//! the operator allows is handed in as a closure (the allow-list lives in
//! `config`, which this ground floor does not import).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{StatusCode, Url};
use sha2::Sha256;

/// Every reason a delivery is refused, the `reason` label of
/// `script_manager_webhook_refused_total` (a closed set).
pub const REFUSAL_REASONS: [&str; 13] = [
    "bad_url",
    "not_allowed",
    "loopback",
    "private",
    "link_local",
    "unique_local",
    "multicast",
    "unspecified",
    "broadcast",
    "documentation",
    "metadata",
    "reserved",
    "redirect",
];

/// The header a signed body carries: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "X-Script-Manager-Signature";

/// Why an address may not receive webhooks (one of [`REFUSAL_REASONS`]), or
/// `None` for an ordinary public address. IPv4 inside IPv6 (mapped
/// `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) is judged as
/// the IPv4 address it carries.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "metadata",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        // Carrier-grade NAT (RFC 6598): private to someone's network.
        (100, 64..=127, _) => "private",
        (169, 254, _) => "link_local",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        // IETF protocol assignments, benchmarking (RFC 2544), the old class E.
        (192, 0, 0) | (198, 18..=19, _) | (240..=255, _, _) => "reserved",
        (224..=239, _, _) => "multicast",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded_v4 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated)
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return classify_v4(embedded_v4());
    }
    // NAT64's well-known prefix reaches the IPv4 address it carries.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4());
    }
    Some(match s[0] {
        // AWS's instance metadata over IPv6.
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "metadata",
        0xfe80..=0xfebf => "link_local",
        // Site-local (deprecated, still private where used).
        0xfec0..=0xfeff => "private",
        0xfc00..=0xfdff => "unique_local",
        0xff00..=0xffff => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x3fff if s[1] < 0x1000 => "documentation",
        // Discard-only (RFC 6666).
        0x0100 if s[1..4] == [0, 0, 0] => "reserved",
        _ => return None,
    })
}

/// Decides for one address: `None` lets it through, `Some(reason)` refuses it.
pub type AddressCheck = Arc<dyn Fn(IpAddr) -> Option<&'static str> + Send + Sync>;

/// A delivery that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Not attempted, or stopped, by policy (one of [`REFUSAL_REASONS`]): never retried.
    Refused(&'static str),
    /// The receiver could not be reached or answered with an error: retried.
    Failed(String),
}

/// The resolver's refusal, found again in the error chain of the request.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "webhook address refused ({})", self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves a name once and hands the connector only addresses the check let
/// through; one refused address refuses the name (a receiver with one foot
/// inside is not a receiver).
struct CheckedResolver {
    check: AddressCheck,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let check = self.check.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port (or the scheme's) in.
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            if let Some(reason) = found.iter().find_map(|a| check(a.ip())) {
                return Err(Box::new(Refused(reason)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// The one client webhooks are posted with.
pub struct WebhookClient {
    client: reqwest::Client,
    check: AddressCheck,
    /// HMAC key of the signature; unsigned bodies without one.
    signing_key: Option<Vec<u8>>,
}

impl WebhookClient {
    /// `check` judges every address (see [`classify`]); `connect` bounds the
    /// connection, `total` the whole request.
    pub fn new(
        check: AddressCheck,
        signing_key: Option<Vec<u8>>,
        connect: Duration,
        total: Duration,
    ) -> anyhow::Result<Self> {
        super::install_crypto();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver { check: check.clone() }))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past our check.
            .no_proxy()
            .connect_timeout(connect)
            .timeout(total)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(WebhookClient {
            client,
            check,
            signing_key,
        })
    }

    pub fn signs(&self) -> bool {
        self.signing_key.is_some()
    }

    /// POSTs `body` (JSON) to `url` with `headers`, signed when a key is set.
    /// A 2xx is success; a 3xx is refused (`redirect`, never followed).
    pub async fn post(&self, url: &Url, headers: &[(&str, &str)], body: Vec<u8>) -> Result<(), DeliveryError> {
        match url.host_str() {
            None | Some("") => return Err(DeliveryError::Refused("bad_url")),
            Some(host) => {
                // A literal address is connected to as it is: no resolver runs for it.
                if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                    self.refuse(ip)?;
                }
            }
        }
        let mut request = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(key) = &self.signing_key {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            request = request.header(SIGNATURE_HEADER, signature(key, t, &body));
        }
        let response = request.body(body).send().await.map_err(|e| match refusal_in(&e) {
            Some(reason) => DeliveryError::Refused(reason),
            None => DeliveryError::Failed(e.without_url().to_string()),
        })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(DeliveryError::Refused("redirect"));
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Failed(answered(status)))
        }
    }

    fn refuse(&self, ip: IpAddr) -> Result<(), DeliveryError> {
        match (self.check)(ip) {
            Some(reason) => Err(DeliveryError::Refused(reason)),
            None => Ok(()),
        }
    }
}

fn answered(status: StatusCode) -> String {
    format!("receiver answered HTTP {}", status.as_u16())
}

/// The resolver's refusal, if that is what stopped the request.
fn refusal_in(e: &reqwest::Error) -> Option<&'static str> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(Refused(reason)) = err.downcast_ref::<Refused>() {
            return Some(reason);
        }
        source = err.source();
    }
    None
}

/// The header's value: `t=<t>,v1=<lowercase hex HMAC-SHA256(key, "<t>.<body>")>`.
pub fn signature(key: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// `scheme://host[:port]` of a webhook URL: what logs may show (its path and
/// query are the receiver's credential).
pub fn origin(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        _ => format!("{}://", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_named_and_public_ones_pass() {
        let table: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::127.0.0.1", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("::", Some("unspecified")),
            ("10.0.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.254", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("100.127.255.255", Some("private")),
            ("::ffff:10.0.0.1", Some("private")),
            ("::ffff:192.168.0.1", Some("private")),
            ("64:ff9b::10.0.0.1", Some("private")),
            ("fec0::1", Some("private")),
            ("169.254.169.254", Some("metadata")),
            ("::ffff:169.254.169.254", Some("metadata")),
            ("64:ff9b::169.254.169.254", Some("metadata")),
            ("fd00:ec2::254", Some("metadata")),
            ("169.254.0.1", Some("link_local")),
            ("::ffff:169.254.1.1", Some("link_local")),
            ("fe80::1", Some("link_local")),
            ("febf::1", Some("link_local")),
            ("fc00::1", Some("unique_local")),
            ("fd12:3456::1", Some("unique_local")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("ff02::1", Some("multicast")),
            ("::ffff:224.0.0.251", Some("multicast")),
            ("255.255.255.255", Some("broadcast")),
            ("::ffff:255.255.255.255", Some("broadcast")),
            ("192.0.2.10", Some("documentation")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.200", Some("documentation")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("192.0.0.8", Some("reserved")),
            ("198.18.0.1", Some("reserved")),
            ("240.0.0.1", Some("reserved")),
            ("100::1", Some("reserved")),
            // Public: the neighbours of the special blocks included.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("169.253.255.255", None),
            ("192.0.3.1", None),
            ("198.20.0.1", None),
            ("223.255.255.255", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            ("2606:4700::1111", None),
            ("2001:db9::1", None),
            ("fe7f::1", None),
        ];
        for (text, want) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), *want, "{text}");
            if let Some(reason) = want {
                assert!(REFUSAL_REASONS.contains(reason), "{reason} is a known label");
            }
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // Known answer, computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        assert_ne!(signature(b"key", 1, b"x"), signature(b"kez", 1, b"x"));
        assert_ne!(signature(b"key", 1, b"x"), signature(b"key", 2, b"x"));
    }

    #[test]
    fn origin_keeps_scheme_host_and_port_only() {
        let url: Url = "https://hooks.slack.com/services/T0/B0/secret?x=1".parse().unwrap();
        assert_eq!(origin(&url), "https://hooks.slack.com");
        let url: Url = "http://[::1]:8080/hook/abc".parse().unwrap();
        assert_eq!(origin(&url), "http://[::1]:8080");
    }
}
