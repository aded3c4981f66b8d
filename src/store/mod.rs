//! The store: SQLite (a file, created on first run) or PostgreSQL, through
//! one set of migrations and portable SQL (sqlx's `Any` driver).
//!
//! Decimals are TEXT and times are BIGINT milliseconds, so both engines
//! store exactly the same values. Writes that belong together take one
//! transaction; each concern has its own file of queries.
//!
//! Owns: the schema, migrations and every query. Imports `domain` (the
//! facts it keeps), `process` (a run's `Fence` and `RunRecord`), `config`
//! (URL redaction) and `clock`; never the exchange, scheduler or status.

mod accounts;
mod audit;
mod backstops;
mod dashboard;
mod fence;
mod intents;
mod levels;
mod market;
mod notifications;
mod overrides;
mod positions;
mod runs;
mod trades;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rust_decimal::Decimal;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use accounts::{NewStoredAccount, StoredAccount};
pub use audit::{AUDIT_KEPT_MS, AuditEntry};
pub use backstops::{Backstop, BackstopState, BackstopUpdate, NewBackstop};
pub use dashboard::Snapshot;
pub use intents::{Claim, CloseOutcome, Ending, Intent};
pub use levels::{Level, LevelStatus, NewLevel};
pub use market::StoredPrice;
pub use notifications::{Alert, NewAlert, Notification};
pub use positions::{FLAT_KEPT_MS, PositionChange, StoredPosition};
pub use trades::StoredTrade;

/// Length of the installation id in client order ids (Binance allows 36 characters in all).
pub const INSTALLATION_ID_LEN: usize = 6;

/// Migrations, applied in order; `{{ID}}` is the dialect's auto-increment key.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial", include_str!("../../migrations/0001_initial.sql")),
    ("0002_run_slots", include_str!("../../migrations/0002_run_slots.sql")),
    (
        "0003_close_protocol",
        include_str!("../../migrations/0003_close_protocol.sql"),
    ),
    (
        "0004_process_overrides",
        include_str!("../../migrations/0004_process_overrides.sql"),
    ),
    (
        "0005_level_positions",
        include_str!("../../migrations/0005_level_positions.sql"),
    ),
    (
        "0006_position_times",
        include_str!("../../migrations/0006_position_times.sql"),
    ),
    ("0007_backstops", include_str!("../../migrations/0007_backstops.sql")),
    ("0008_audit", include_str!("../../migrations/0008_audit.sql")),
    ("0009_accounts", include_str!("../../migrations/0009_accounts.sql")),
];

/// The PostgreSQL advisory lock (session level, one bigint key) held while
/// a replica checks and applies migrations. Above 2^31, so it never meets the
/// `hashtext` keys of `ha`'s per-group locks. `ha` creates its tables under
/// the same key (`ha::SCHEMA_LOCK`).
pub const SCHEMA_LOCK: i64 = 0x736d_5f73_6368_656d; // "sm_schem"

/// The store has migrations this binary does not know: it was migrated by a
/// newer version. The service refuses to start (exit code 2).
#[derive(Debug)]
pub struct SchemaTooNew {
    /// The applied migrations this binary does not have, by name.
    pub unknown: Vec<String>,
}

impl std::fmt::Display for SchemaTooNew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = MIGRATIONS.last().map(|(n, _)| *n).unwrap_or("none");
        write!(
            f,
            "the store's schema is newer than this binary: it has migration(s) {} applied, \
             and this binary knows migrations up to {known} only. A newer version of \
             script-manager has migrated this store; run that version (or newer) instead. \
             Downgrading is not supported: to go back, restore a backup taken before the upgrade \
             (see docs/operations.md)",
            self.unknown.join(", ")
        )
    }
}

impl std::error::Error for SchemaTooNew {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

pub struct Store {
    pool: AnyPool,
    pub dialect: Dialect,
    /// Bumped whenever this instance adds or removes a level, so a cache of
    /// armed levels (level_monitor) knows to re-read them.
    levels_generation: AtomicU64,
    /// This installation's id (kept in the store; part of every client order id).
    installation: String,
    /// Where level events (retired levels) are posted; set once at start.
    events_webhook: std::sync::OnceLock<String>,
    /// The live event stream every write is published to, after its commit; set once at start.
    events: std::sync::OnceLock<std::sync::Arc<crate::events::Hub>>,
}

impl Store {
    /// Connects (creating a SQLite file and its directory if needed) and migrates.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            anyhow::bail!("store.url must start with sqlite:// or postgres://");
        };
        let mut store = Store {
            pool: Self::pool_for(&url, dialect).await?,
            dialect,
            levels_generation: AtomicU64::new(0),
            installation: String::new(),
            events_webhook: Default::default(),
            events: Default::default(),
        };
        if dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA journal_mode=WAL").execute(&store.pool).await?;
        }
        if store.migrate().await? > 0 {
            // Connections that prepared statements before a migration may keep the
            // old shape of a table (`SELECT *` with a column too few); start afresh.
            store.pool.close().await;
            store.pool = Self::pool_for(&url, dialect).await?;
        }
        store.installation = store.installation_id().await?;
        Ok(store)
    }

    /// This installation's id: made on the first start, then read back, so
    /// every replica on one store and every restart use the same one.
    async fn installation_id(&self) -> anyhow::Result<String> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let fresh: String = (0..INSTALLATION_ID_LEN)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect();
        sqlx::query(
            "INSERT INTO installation (singleton, id, created_at) VALUES (1, $1, $2) ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(fresh)
        .bind(crate::clock::now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id FROM installation WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// This installation's id (six lowercase letters and digits).
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// Where events written by the store itself (a level retired with its
    /// position) are posted; the service's `notifications.webhook_url`.
    pub fn post_level_events_to(&self, url: Option<String>) {
        if let Some(url) = url {
            let _ = self.events_webhook.set(url);
        }
    }

    /// Publishes every committed write (fills, positions, levels, alerts,
    /// notifications) to `hub`: one seam, so every writer is covered.
    pub fn publish_events_to(&self, hub: std::sync::Arc<crate::events::Hub>) {
        let _ = self.events.set(hub);
    }

    /// The live event stream, when this service has one.
    pub fn event_hub(&self) -> Option<&std::sync::Arc<crate::events::Hub>> {
        self.events.get()
    }

    /// Publishes one event (call after the write's commit).
    pub(crate) fn emit(
        &self,
        kind: crate::events::Kind,
        account: Option<&str>,
        symbol: Option<&str>,
        data: &serde_json::Value,
    ) {
        if let Some(hub) = self.events.get() {
            hub.publish(kind, account, symbol, data);
        }
    }

    /// A level's row as a `level` event.
    pub(crate) fn emit_level(&self, l: &Level) {
        if self.events.get().is_some() {
            self.emit(
                crate::events::Kind::Level,
                Some(&l.account),
                Some(&l.symbol),
                &serde_json::json!(l),
            );
        }
    }

    pub(crate) fn events_webhook(&self) -> Option<&str> {
        self.events_webhook.get().map(String::as_str)
    }

    /// The database's clock in ms since the epoch, as SQL: claims that other
    /// replicas honour are timed by the one clock they share.
    pub(crate) fn now_sql(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Dialect::Postgres => "CAST(extract(epoch from clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    async fn pool_for(url: &str, dialect: Dialect) -> anyhow::Result<AnyPool> {
        let max = if dialect == Dialect::Sqlite { 4 } else { 10 };
        AnyPoolOptions::new()
            .max_connections(max)
            .connect(url)
            .await
            .with_context(|| format!("cannot open the store at {}", crate::config::redact_url(url)))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Changes whenever a level is added or removed through this store.
    pub fn levels_generation(&self) -> u64 {
        self.levels_generation.load(Ordering::Acquire)
    }

    fn levels_changed(&self) {
        self.levels_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Applies the migrations not applied yet; returns how many. Refuses a
    /// store that has a migration this binary does not know (`SchemaTooNew`).
    ///
    /// On PostgreSQL the whole check-and-apply runs on one connection holding
    /// the advisory lock [`SCHEMA_LOCK`], so replicas that start together
    /// migrate one after the other: the first applies, the others find
    /// everything applied. (A SQLite file belongs to one service; each
    /// migration is one transaction there.)
    async fn migrate(&self) -> anyhow::Result<usize> {
        let mut conn = self.pool.acquire().await?;
        if self.dialect == Dialect::Sqlite {
            return self.migrate_on(&mut conn).await;
        }
        let free: bool = sqlx::query("SELECT pg_try_advisory_lock($1) AS free")
            .bind(SCHEMA_LOCK)
            .fetch_one(&mut *conn)
            .await
            .context("cannot take the migration lock")?
            .try_get("free")?;
        if !free {
            tracing::info!("another replica is checking or migrating the store; waiting for it");
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(SCHEMA_LOCK)
                .execute(&mut *conn)
                .await
                .context("cannot take the migration lock")?;
        }
        let result = self.migrate_on(&mut conn).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // Ending the session releases the lock too.
            let _ = sqlx::Connection::close(conn.detach()).await;
        }
        result
    }

    async fn migrate_on(&self, conn: &mut sqlx::AnyConnection) -> anyhow::Result<usize> {
        let mut applied = 0;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let names: Vec<String> = sqlx::query("SELECT name FROM schema_migrations ORDER BY name")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        let unknown: Vec<String> = names
            .into_iter()
            .filter(|n| !MIGRATIONS.iter().any(|(m, _)| m == n))
            .collect();
        if !unknown.is_empty() {
            return Err(SchemaTooNew { unknown }.into());
        }
        let id = match self.dialect {
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        for (name, sql) in MIGRATIONS {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let done: Option<AnyRow> = sqlx::query("SELECT name FROM schema_migrations WHERE name = $1")
                .bind(*name)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            let sql = strip_comments(&sql.replace("{{ID}}", id));
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                // Our own migration files, not user input.
                sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("migration {name}"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)")
                .bind(*name)
                .bind(crate::clock::now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(migration = name, "store migrated");
            applied += 1;
        }
        Ok(applied)
    }
}

/// Why a backup was not taken: what the operator should do differs.
#[derive(Debug)]
pub enum BackupError {
    /// The store is PostgreSQL: back it up with its own tools.
    Postgres,
    /// The destination exists; a backup never overwrites anything.
    Exists(std::path::PathBuf),
    /// The configured SQLite file does not exist.
    NoStore(String),
    /// SQLite refused or failed (disk full, permissions, ...).
    Failed(anyhow::Error),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Postgres => write!(
                f,
                "the store is PostgreSQL: back it up with pg_dump (e.g. `pg_dump -Fc -f store.dump DATABASE_URL`) \
                 and restore with pg_restore; see docs/operations.md"
            ),
            BackupError::Exists(p) => write!(
                f,
                "{} already exists; a backup never overwrites a file: name a new path",
                p.display()
            ),
            BackupError::NoStore(file) => write!(
                f,
                "no SQLite store at {file}: check store.url (the service creates the file on its first start)"
            ),
            BackupError::Failed(e) => write!(f, "backup failed: {e:#}"),
        }
    }
}

impl std::error::Error for BackupError {}

/// An online backup of the SQLite store at `url` into a new file `dest`
/// (`VACUUM INTO`): one consistent snapshot, taken while the service keeps
/// writing (WAL readers never block writers), compacted, and usable as a
/// store as it is. Opens the store read-only and never migrates it.
pub async fn backup_sqlite(url: &str, dest: &std::path::Path) -> Result<(), BackupError> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Err(if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            BackupError::Postgres
        } else {
            BackupError::Failed(anyhow::anyhow!("store.url must start with sqlite:// or postgres://"))
        });
    };
    let file = path.split('?').next().unwrap_or(path);
    if !std::path::Path::new(file).is_file() {
        return Err(BackupError::NoStore(file.to_string()));
    }
    if dest.exists() || dest.is_symlink() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let dest_text = dest
        .to_str()
        .ok_or_else(|| BackupError::Failed(anyhow::anyhow!("{} is not valid UTF-8", dest.display())))?;
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{file}?mode=ro"))
        .await
        .with_context(|| format!("cannot open {file}"))
        .map_err(BackupError::Failed)?;
    let result = sqlx::query("VACUUM INTO $1")
        .bind(dest_text)
        .execute(&mut conn)
        .await
        .with_context(|| format!("VACUUM INTO {}", dest.display()));
    let _ = conn.close().await;
    result.map(|_| ()).map_err(BackupError::Failed)
}

fn strip_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// Reads a TEXT decimal column.
pub(crate) fn dec(row: &AnyRow, column: &str) -> anyhow::Result<Decimal> {
    let text: String = row.try_get(column)?;
    Decimal::from_str(&text).with_context(|| format!("{column}: `{text}` is not a decimal"))
}

pub(crate) fn opt_dec(row: &AnyRow, column: &str) -> anyhow::Result<Option<Decimal>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Decimal::from_str(&t).with_context(|| format!("{column}: `{t}` is not a decimal")))
        .transpose()
}
