//! The `script-manager` binary: runs the service, or checks a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use script_manager::config::{Config, LoadOptions};
use script_manager::{app, sim, telemetry};

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
            ExitCode::FAILURE
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
