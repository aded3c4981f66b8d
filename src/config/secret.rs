//! Secrets stay secret: a wrapper whose `Debug`, `Display` and `Serialize`
//! never show the value, and a redactor for free-form settings (a command's
//! environment) whose keys look like they hold credentials, and of URLs.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

pub const REDACTED: &str = "[redacted]";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (signing, comparing).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in constant time, so response timing reveals nothing of the value.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.len() == candidate.len() && bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Environment values like `12345678` arrive as numbers; a token is text either way.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Uint(u64),
        }
        Ok(Secret(match Raw::deserialize(deserializer)? {
            Raw::Text(s) => s,
            Raw::Int(n) => n.to_string(),
            Raw::Uint(n) => n.to_string(),
        }))
    }
}

/// The setting that names the key encrypting stored accounts; every
/// message about that key names it.
pub const ENCRYPTION_KEY_SETTING: &str = "store.encryption_key_file";

/// A 32-byte key written as 64 hex characters or as base64 (standard
/// alphabet, padded or not). Surrounding whitespace is ignored. The error
/// says what was wrong, never the value.
pub fn decode_key32(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| "not valid hex".to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| {
                "must be 32 bytes written as 64 hex characters or as base64 (e.g. `openssl rand -hex 32`)".to_string()
            })?
    };
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "must be 32 bytes (64 hex characters or 44 base64 characters); this one is {} bytes",
            bytes.len()
        )
    })
}

/// Whether a setting's name suggests a credential.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "private",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Replaces, anywhere in the tree, the values of keys that look like credentials.
pub fn redact_by_key(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, child) in table.iter_mut() {
                if is_secret_key(key) && !matches!(child, toml::Value::Table(_)) {
                    *child = toml::Value::String(REDACTED.into());
                } else {
                    redact_by_key(child);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_by_key),
        _ => {}
    }
}

/// A URL fit for logs: no password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://{REDACTED}@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A webhook URL as a caller without the admin token may see it: scheme and
/// host (and port), then `/…` (the path and query are the receiver's
/// credential). `full` returns it whole. Not a URL: `[redacted]`.
pub fn redact_webhook_url(url: &str, full: bool) -> String {
    if full {
        return url.to_string();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // No user or password either.
    let host = authority.rsplit('@').next().unwrap_or("");
    match host.is_empty() {
        true => REDACTED.into(),
        false => format!("{scheme}://{host}/…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let bytes = decode_key32(&format!("{hex_key}\n")).unwrap();
        assert_eq!(bytes[1], 0x11);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(decode_key32(&b64).unwrap(), bytes);
        assert!(decode_key32("abcd").unwrap_err().contains("32 bytes"));
        assert!(decode_key32("not a key at all!").unwrap_err().contains("64 hex"));
        assert!(!decode_key32(&hex_key[..62]).unwrap_err().contains(&hex_key[..10]));
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert!(s.matches("hunter2-very-secret"));
        assert!(!s.matches("hunter2-very-secreT"));
        assert!(!s.matches("hunter2"));
    }

    #[test]
    fn redacts_credential_like_keys_at_any_depth() {
        let mut v: toml::Value =
            toml::from_str("[processes.a.env]\nDB_PASSWORD = \"x\"\nPATH = \"/bin\"\n[http]\nadmin_token = \"y\"\n")
                .unwrap();
        redact_by_key(&mut v);
        let text = toml::to_string(&v).unwrap();
        assert!(!text.contains("\"x\"") && !text.contains("\"y\""), "{text}");
        assert!(text.contains("/bin"));
    }

    #[test]
    fn urls_in_logs_lose_their_password() {
        assert_eq!(
            super::redact_url("postgres://u:pw@h:5432/db"),
            "postgres://[redacted]@h:5432/db"
        );
        assert_eq!(super::redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn webhook_urls_keep_scheme_and_host_unless_full() {
        let slack = "https://hooks.slack.com/services/T000/B000/XXXXsecret";
        assert_eq!(redact_webhook_url(slack, false), "https://hooks.slack.com/…");
        assert_eq!(redact_webhook_url(slack, true), slack);
        assert_eq!(
            redact_webhook_url("http://user:pw@127.0.0.1:8080?token=x", false),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(redact_webhook_url("not a url/secret", false), REDACTED);
    }
}
