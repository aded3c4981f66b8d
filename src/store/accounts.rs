//! Accounts added through the admin API, with their credentials sealed
//! (`vault`): the store only ever sees ciphertexts and nonces, never a key or
//! a secret. The file's accounts are not stored. A key rotation re-seals
//! every row in one transaction, so a failure leaves all rows as they were.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::Store;
use crate::vault::Sealed;

/// One stored account: sealed credentials and who changed it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub name: String,
    pub api_key: Sealed,
    pub api_secret: Sealed,
    /// The id of the key that sealed the row (`Vault::key_id`).
    pub key_id: String,
    /// Grows with every change of credentials (other replicas re-read the row).
    pub revision: i64,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// Sealed credentials to store for `name`, by `by` (the token's name).
#[derive(Debug, Clone)]
pub struct NewStoredAccount {
    pub name: String,
    pub api_key: Sealed,
    pub api_secret: Sealed,
    pub key_id: String,
    pub by: String,
}

const COLUMNS: &str = "name, api_key_ciphertext, api_key_nonce, api_secret_ciphertext, api_secret_nonce, \
                       key_id, revision, created_at, created_by, updated_at, updated_by";

fn row(r: &AnyRow) -> anyhow::Result<StoredAccount> {
    Ok(StoredAccount {
        name: r.try_get("name")?,
        api_key: Sealed {
            ciphertext: r.try_get("api_key_ciphertext")?,
            nonce: r.try_get("api_key_nonce")?,
        },
        api_secret: Sealed {
            ciphertext: r.try_get("api_secret_ciphertext")?,
            nonce: r.try_get("api_secret_nonce")?,
        },
        key_id: r.try_get("key_id")?,
        revision: r.try_get("revision")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        updated_at: r.try_get("updated_at")?,
        updated_by: r.try_get("updated_by")?,
    })
}

impl Store {
    /// Every stored account, by name.
    pub async fn stored_accounts(&self) -> anyhow::Result<Vec<StoredAccount>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM accounts ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row).collect()
    }

    pub async fn stored_account(&self, name: &str) -> anyhow::Result<Option<StoredAccount>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM accounts WHERE name = $1"
        )))
        .bind(name.to_string())
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(row).transpose()
    }

    /// Stores a new account; `None` when one of that name is stored already.
    pub async fn insert_account(&self, a: &NewStoredAccount) -> anyhow::Result<Option<StoredAccount>> {
        let now = crate::clock::now_ms();
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO accounts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $7, $8) \
             ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
        )))
        .bind(a.name.clone())
        .bind(a.api_key.ciphertext.clone())
        .bind(a.api_key.nonce.clone())
        .bind(a.api_secret.ciphertext.clone())
        .bind(a.api_secret.nonce.clone())
        .bind(a.key_id.clone())
        .bind(now)
        .bind(a.by.clone())
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(row).transpose()
    }

    /// Replaces the account's credentials (a rotation); `None` when it is not stored.
    pub async fn update_account_credentials(&self, a: &NewStoredAccount) -> anyhow::Result<Option<StoredAccount>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE accounts SET api_key_ciphertext = $2, api_key_nonce = $3, api_secret_ciphertext = $4, \
             api_secret_nonce = $5, key_id = $6, revision = revision + 1, updated_at = $7, updated_by = $8 \
             WHERE name = $1 RETURNING {COLUMNS}"
        )))
        .bind(a.name.clone())
        .bind(a.api_key.ciphertext.clone())
        .bind(a.api_key.nonce.clone())
        .bind(a.api_secret.ciphertext.clone())
        .bind(a.api_secret.nonce.clone())
        .bind(a.key_id.clone())
        .bind(crate::clock::now_ms())
        .bind(a.by.clone())
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(row).transpose()
    }

    /// Removes the account's row; false when it was not stored.
    pub async fn delete_account(&self, name: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM accounts WHERE name = $1")
            .bind(name.to_string())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Re-seals every row with `reseal` (which opens with the old key and
    /// seals with the new), all in one transaction: either every row moves
    /// to `new_key_id` or none does. Returns how many rows were re-sealed.
    pub async fn reseal_accounts(
        &self,
        new_key_id: &str,
        reseal: impl Fn(&StoredAccount) -> anyhow::Result<(Sealed, Sealed)>,
    ) -> anyhow::Result<usize> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM accounts ORDER BY name"
        )))
        .fetch_all(&mut *tx)
        .await?;
        let rows: Vec<StoredAccount> = rows.iter().map(row).collect::<anyhow::Result<_>>()?;
        let now = crate::clock::now_ms();
        for a in &rows {
            let (key, secret) = reseal(a)?;
            sqlx::query(
                "UPDATE accounts SET api_key_ciphertext = $2, api_key_nonce = $3, api_secret_ciphertext = $4, \
                 api_secret_nonce = $5, key_id = $6, revision = revision + 1, updated_at = $7 WHERE name = $1",
            )
            .bind(a.name.clone())
            .bind(key.ciphertext)
            .bind(key.nonce)
            .bind(secret.ciphertext)
            .bind(secret.nonce)
            .bind(new_key_id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}
