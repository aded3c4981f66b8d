//! The `script-manager` binary: runs the service, checks a configuration,
//! backs up a SQLite store, re-encrypts stored accounts under a new key, or
//! runs the simulated exchange.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use script_manager::config::{Config, LoadOptions};
use script_manager::{app, sim, store, telemetry, vault};

#[derive(Parser)]
#[command(
    name = "script-manager",
    version,
    about = "Runs a trading platform's periodic processes on one scheduler and one API budget"
)]
struct Cli {
    /// TOML configuration file (also SCRIPT_MANAGER_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
    /// Take an online backup of the SQLite store into a new file PATH (the
    /// service may keep running). PostgreSQL: use pg_dump.
    Backup {
        /// Where to write the backup; must not exist.
        path: PathBuf,
    },
    /// Re-encrypt every account added through the API under a new key, in one
    /// transaction, reading them with the key of store.encryption_key_file.
    /// Then point store.encryption_key_file at the new key and restart.
    RotateEncryptionKey {
        /// A file holding the new key: 32 bytes as 64 hex characters or base64.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Run the simulated exchange alone (Binance USDⓈ-M compatible).
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9898")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = LoadOptions {
        config_path: cli.config.clone(),
        env: None,
    };
    let config = match app::load_config(&options) {
        Ok(config) => config,
        Err(e) => {
            eprint!("script-manager: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            print!("{}", config.to_redacted_toml());
            eprintln!("script-manager: configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Backup { path } => backup(&config, &path),
        Command::RotateEncryptionKey { new_key_file } => rotate_key(&config, &new_key_file),
        Command::Run => serve(config, |config, stop| app::run(config, options, stop)),
        Command::Sim { listen } => {
            let mut config = config;
            config.exchange.simulator.listen = listen;
            serve(config, run_sim)
        }
    }
}

/// Runs `service` on a multi-threaded runtime with tracing installed until
/// SIGTERM/SIGINT, then flushes spans. Exit 0, or 1 with the error.
fn serve<F, Fut>(config: Config, service: F) -> ExitCode
where
    F: FnOnce(Config, tokio_util::sync::CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("script-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let telemetry = telemetry::otel::init(&app::tracing_settings(&config))?;
        let shutdown = app::shutdown_on_signals();
        let result = service(config, shutdown).await;
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await.ok();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("script-manager: {e:#}");
            // A store migrated by a newer version, or stored accounts the configured
            // key cannot open, are start-up refusals, like a bad configuration.
            if e.chain()
                .any(|c| c.is::<store::SchemaTooNew>() || c.is::<vault::KeyRefused>())
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `backup PATH`: exit 0 with the backup written, 2 when it cannot be taken
/// as asked (PostgreSQL, PATH exists, no store), 1 when SQLite failed.
fn backup(config: &Config, path: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("script-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(store::backup_sqlite(&config.store.url, path)) {
        Ok(()) => {
            eprintln!("script-manager: backup written to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("script-manager: {e}");
            match e {
                store::BackupError::Failed(_) => ExitCode::FAILURE,
                _ => ExitCode::from(2),
            }
        }
    }
}

/// `rotate-encryption-key --new-key-file PATH`: exit 0 with every stored
/// account re-encrypted, 2 when it cannot be done as asked (no current key,
/// an unreadable or malformed new key, a row the current key cannot open:
/// then nothing changed), 1 when the store failed.
fn rotate_key(config: &Config, new_key_file: &std::path::Path) -> ExitCode {
    let refuse = |message: String| {
        eprintln!("script-manager: {message}");
        ExitCode::from(2)
    };
    let Some(current) = &config.store.encryption_key else {
        return refuse(format!(
            "{}: not set; the current key is needed to read the stored accounts",
            script_manager::config::ENCRYPTION_KEY_SETTING
        ));
    };
    let current = match vault::Vault::from_secret(current) {
        Ok(v) => v,
        Err(e) => return refuse(e.to_string()),
    };
    let text = match std::fs::read_to_string(new_key_file) {
        Ok(text) => text,
        Err(e) => return refuse(format!("--new-key-file: cannot read {}: {e}", new_key_file.display())),
    };
    let new = match script_manager::config::decode_key32(&text) {
        Ok(key) => vault::Vault::new(key),
        Err(e) => return refuse(format!("--new-key-file {}: {e}", new_key_file.display())),
    };
    if new.key_id() == current.key_id() {
        return refuse("--new-key-file holds the key already configured: nothing to rotate".into());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("script-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let store = store::Store::open(&config.store.url).await?;
        store
            .reseal_accounts(new.key_id(), |row| {
                // Rows already under the new key (a rotation run twice) are re-sealed as they are.
                let from = if row.key_id == new.key_id() { &new } else { &current };
                let open = |field: &str, sealed| {
                    from.open(&row.name, field, sealed).map_err(|e| {
                        anyhow::Error::new(vault::KeyRefused(format!(
                            "account `{}` ({field}, key id {}): {e}; nothing was changed",
                            row.name, row.key_id
                        )))
                    })
                };
                let key = open("api_key", &row.api_key)?;
                let secret = open("api_secret", &row.api_secret)?;
                Ok((
                    new.seal(&row.name, "api_key", key.expose()),
                    new.seal(&row.name, "api_secret", secret.expose()),
                ))
            })
            .await
    });
    match result {
        Ok(n) => {
            eprintln!(
                "script-manager: {n} stored account(s) re-encrypted under key id {}; now set {} to {} \
                 and restart (every replica)",
                new.key_id(),
                script_manager::config::ENCRYPTION_KEY_SETTING,
                new_key_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("script-manager: {e:#}");
            if e.chain().any(|c| c.is::<vault::KeyRefused>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The simulated exchange alone, until `stop`.
async fn run_sim(config: Config, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    let accounts = app::exchange::accounts(&config);
    let specs = app::exchange::sim_specs(&accounts);
    let (addr, _sim) = sim::start(&config.exchange.simulator, &specs, stop.clone()).await?;
    let names: Vec<_> = accounts.iter().map(|a| a.name.as_str()).collect();
    tracing::info!(
        "simulated exchange on http://{addr} (accounts: {}); meter at /sim/meter",
        names.join(", ")
    );
    stop.cancelled().await;
    Ok(())
}
