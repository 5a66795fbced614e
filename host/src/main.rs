//! The `conveyor-host` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use conveyor_host::Config;

/// Runs Conveyor CI drivers as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "conveyor-host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the host: loads the drivers, serves the API, handles events until SIGTERM/Ctrl-C.
    Run {
        /// The host configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Loads a driver component the way the host would and prints its info, or why it would
    /// not load. With --config, also what that configuration grants it.
    Check {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// A host configuration file: report the driver's budget and which of the capabilities
        /// it imports the configuration grants.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => {
                let config = Config::load(&config)?;
                conveyor_host::run(config).await
            }
            Command::Check { file, config } => {
                let loaded = match &config {
                    Some(path) => Some((path.as_path(), Config::load(path)?)),
                    None => None,
                };
                let report =
                    conveyor_host::check(&file, loaded.as_ref().map(|(p, c)| (*p, c))).await?;
                print!("{report}");
                Ok(())
            }
        }
    });
    // Compiles still queued at shutdown run on blocking threads, which dropping the runtime
    // would wait for (several seconds per Python component): the daemon has already stopped
    // cleanly, so do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
