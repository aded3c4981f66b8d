//! The `script-manager` binary: runs the service, checks a configuration,
//! backs up a SQLite store, or runs the simulated exchange.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use script_manager::config::{Config, LoadOptions};
use script_manager::{app, sim, store, telemetry};

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
            // A store migrated by a newer version is a start-up refusal, like a bad configuration.
            if e.chain().any(|c| c.is::<store::SchemaTooNew>()) {
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
