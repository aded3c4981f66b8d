//! Credentials encrypted at rest: accounts added through the API keep their
//! API key and secret in the store only as XChaCha20-Poly1305 ciphertexts.
//!
//! Why an AEAD and these inputs: the tag makes any change to a stored value
//! (or a wrong key) fail to open instead of yielding garbage that would be
//! signed with; the associated data is the account's name and the field, so
//! a row's ciphertext copied onto another account (or the key swapped with
//! the secret) does not open either. XChaCha's 24-byte nonces are drawn at
//! random for every sealing, so nonces never need a counter kept in step
//! across replicas. The key's id (a hash of the key, not the key) is kept
//! with each row, so a start with another key can say so plainly, and a
//! rotation can tell which rows it has re-encrypted.
//!
//! The key comes from `store.encryption_key_file` (see
//! [`crate::config::ENCRYPTION_KEY_SETTING`]); this module never reads files
//! and never prints a key or a plaintext.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest;

use crate::config::{ENCRYPTION_KEY_SETTING, Secret};

/// One sealed value: the ciphertext (with its tag) and its nonce, both base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: String,
    pub nonce: String,
}

/// The key that seals and opens stored credentials.
pub struct Vault {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("key_id", &self.id).finish()
    }
}

/// The stored credentials cannot be used with the configured key: the
/// service refuses to start (exit 2), naming `store.encryption_key_file`.
#[derive(Debug)]
pub struct KeyRefused(pub String);

impl std::fmt::Display for KeyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{ENCRYPTION_KEY_SETTING}: {}", self.0)
    }
}

impl std::error::Error for KeyRefused {}

/// A value could not be opened: wrong key, or the row was changed or moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFailed;

impl std::fmt::Display for OpenFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot decrypt: another key sealed it, or the stored row was altered")
    }
}

impl std::error::Error for OpenFailed {}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Vault {
    pub fn new(key: [u8; 32]) -> Self {
        let mut hash = sha2::Sha256::new();
        hash.update(b"script-manager account key id v1\0");
        hash.update(key);
        let id = hex::encode(&hash.finalize()[..8]);
        Vault {
            cipher: XChaCha20Poly1305::new(&key.into()),
            id,
        }
    }

    /// The key of `store.encryption_key` (hex or base64 of 32 bytes).
    pub fn from_secret(key: &Secret) -> Result<Self, KeyRefused> {
        crate::config::decode_key32(key.expose())
            .map(Vault::new)
            .map_err(KeyRefused)
    }

    /// A short public name of the key (16 hex characters of a hash of it).
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// Seals `field` (`api_key`, `api_secret`) of account `name`.
    pub fn seal(&self, name: &str, field: &str, plaintext: &str) -> Sealed {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let aad = associated(name, field);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            // Only fails for inputs beyond XChaCha's length limit (256 GiB).
            .expect("a credential is far below the cipher's length limit");
        Sealed {
            ciphertext: B64.encode(ciphertext),
            nonce: B64.encode(nonce_bytes),
        }
    }

    /// Opens what [`Self::seal`] sealed for the same account and field.
    pub fn open(&self, name: &str, field: &str, sealed: &Sealed) -> Result<Secret, OpenFailed> {
        let nonce: [u8; 24] = B64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(OpenFailed)?;
        let ciphertext = B64.decode(&sealed.ciphertext).map_err(|_| OpenFailed)?;
        let aad = associated(name, field);
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenFailed)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| OpenFailed)
    }
}

/// What a ciphertext is bound to: the account and the field.
fn associated(name: &str, field: &str) -> Vec<u8> {
    format!("script-manager/account/v1\0{name}\0{field}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_account_field_and_key() {
        let vault = Vault::new([7; 32]);
        let sealed = vault.seal("desk-1", "api_secret", "s3cr3t-value");
        assert!(!sealed.ciphertext.contains("s3cr3t"));
        assert_eq!(
            vault.open("desk-1", "api_secret", &sealed).unwrap().expose(),
            "s3cr3t-value"
        );
        assert_eq!(vault.open("desk-2", "api_secret", &sealed), Err(OpenFailed));
        assert_eq!(vault.open("desk-1", "api_key", &sealed), Err(OpenFailed));
        assert_eq!(
            Vault::new([8; 32]).open("desk-1", "api_secret", &sealed),
            Err(OpenFailed)
        );
        let again = vault.seal("desk-1", "api_secret", "s3cr3t-value");
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce every time");
        let mut tampered = sealed.clone();
        let mut bytes = B64.decode(&tampered.ciphertext).unwrap();
        bytes[0] ^= 1;
        tampered.ciphertext = B64.encode(bytes);
        assert_eq!(vault.open("desk-1", "api_secret", &tampered), Err(OpenFailed));
    }

    #[test]
    fn key_ids_differ_by_key_and_say_nothing_of_it() {
        let a = Vault::new([1; 32]);
        assert_eq!(a.key_id().len(), 16);
        assert_ne!(a.key_id(), Vault::new([2; 32]).key_id());
        assert_eq!(a.key_id(), Vault::new([1; 32]).key_id());
        assert!(format!("{a:?}").contains(a.key_id()));
        let refused = Vault::from_secret(&Secret::new("short")).unwrap_err();
        assert!(
            refused.to_string().starts_with("store.encryption_key_file: "),
            "{refused}"
        );
    }
}
