//! The `script-manager` binary: runs the service, or checks a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use script_manager::config::{self, LoadOptions};
use script_manager::{app, telemetry};

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
    let config = match config::load(&options) {
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
        Command::Run => run(config),
        Command::Sim { listen } => run_sim(config, listen),
    }
}

fn run_sim(mut config: config::Config, listen: String) -> ExitCode {
    config.exchange.simulator.listen = listen;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result: anyhow::Result<()> = runtime.block_on(async {
        let telemetry = telemetry::otel::init(&config)?;
        let stop = app::shutdown_on_signals();
        let accounts = script_manager::exchange::setup::accounts(&config);
        let specs = script_manager::exchange::setup::sim_specs(&accounts);
        let (addr, _sim) = script_manager::sim::start(&config.exchange.simulator, &specs, stop.clone()).await?;
        let names: Vec<_> = accounts.iter().map(|a| a.name.as_str()).collect();
        tracing::info!(
            "simulated exchange on http://{addr} (accounts: {}); meter at /sim/meter",
            names.join(", ")
        );
        stop.cancelled().await;
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await.ok();
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("script-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: config::Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("script-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let telemetry = telemetry::otel::init(&config)?;
        let shutdown = app::shutdown_on_signals();
        let result = app::run(config, shutdown).await;
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await.ok();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("script-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}
