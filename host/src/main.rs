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
    /// Makes a driver project that builds with `./build.sh` and passes `conveyor-host test`:
    /// the SDK and the WIT world (written from this binary), a sample driver, a resource
    /// definition and resource, and a fixture.
    New {
        /// The driver's name (lowercase letters, digits and '-').
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: conveyor_host::Lang,
        /// Where to make it (created; must be empty). Default: ./NAME.
        dir: Option<PathBuf>,
    },
    /// Runs a driver's reconcile on fixture files in the host's sandbox, with no server: one
    /// line per fixture, what differed, `N passed, N failed`; exits 1 when one failed.
    Test {
        /// The component file (`.wasm`).
        wasm: PathBuf,
        /// Fixture files (TOML), or directories of them. Default: ./fixtures.
        fixtures: Vec<PathBuf>,
        /// A host configuration file: the driver's budgets and grants under it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Runs again whenever the component or a fixture changes.
        #[arg(long)]
        watch: bool,
        /// Makes a fixture of this stored run's step for the driver first (with --data-dir).
        #[arg(long, requires = "data_dir")]
        from_run: Option<String>,
        /// The data directory of the host that stored the run.
        #[arg(long, requires = "from_run")]
        data_dir: Option<PathBuf>,
        /// Where --from-run writes the fixture. Default: ./run-RUNID.toml.
        #[arg(long, requires = "from_run")]
        out: Option<PathBuf>,
    },
}

/// How a command ended, when it did not fail outright.
enum Ended {
    Ok,
    /// `test`: a fixture failed.
    TestsFailed,
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
                conveyor_host::run(config).await.map(|()| Ended::Ok)
            }
            Command::Check { file, config } => {
                let loaded = match &config {
                    Some(path) => Some((path.as_path(), Config::load(path)?)),
                    None => None,
                };
                let report =
                    conveyor_host::check(&file, loaded.as_ref().map(|(p, c)| (*p, c))).await?;
                print!("{report}");
                Ok(Ended::Ok)
            }
            Command::New { name, lang, dir } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
                let files = conveyor_host::new_project(&name, lang, &dir)?;
                println!("made {} ({} files):", dir.display(), files.len());
                for f in files {
                    println!("  {}", f.display());
                }
                println!(
                    "next: cd {} && ./build.sh && conveyor-host test {name}.wasm fixtures/create.toml",
                    dir.display()
                );
                Ok(Ended::Ok)
            }
            Command::Test {
                wasm,
                fixtures,
                config,
                watch,
                from_run,
                data_dir,
                out,
            } => {
                let from_run = from_run.zip(data_dir).map(|(run_id, data_dir)| {
                    conveyor_host::FromRun {
                        run_id,
                        data_dir,
                        out,
                    }
                });
                let passed = conveyor_host::test(conveyor_host::TestCommand {
                    wasm,
                    fixtures,
                    config,
                    watch,
                    from_run,
                })
                .await?;
                Ok(if passed { Ended::Ok } else { Ended::TestsFailed })
            }
        }
    });
    // Compiles still queued at shutdown run on blocking threads, which dropping the runtime
    // would wait for (several seconds per Python component): the daemon has already stopped
    // cleanly, so do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(Ended::Ok) => ExitCode::SUCCESS,
        Ok(Ended::TestsFailed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
