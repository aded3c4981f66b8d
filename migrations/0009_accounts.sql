-- Exchange accounts added through the admin API (POST /api/accounts); the
-- file's accounts are never stored. The API key and secret are kept only
-- encrypted (XChaCha20-Poly1305 under store.encryption_key_file, the
-- account's name and the field as associated data): each value is its
-- base64 ciphertext and its own random 24-byte nonce. `key_id` names the
-- key that sealed the row (a hash of it, not the key), for rotation
-- (script-manager rotate-encryption-key). `revision` grows with every change
-- of credentials, so other replicas (HA) know to read the row again.
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    api_key_ciphertext TEXT NOT NULL,
    api_key_nonce TEXT NOT NULL,
    api_secret_ciphertext TEXT NOT NULL,
    api_secret_nonce TEXT NOT NULL,
    key_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
)
