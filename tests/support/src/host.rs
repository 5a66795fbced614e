//! A host to test: started in this process ([`Host::start`]), which is what most tests do, or
//! as the `conveyor-host` binary ([`Host::spawn`]) for what needs a process of its own
//! (a SIGKILL, a restart of the same data directory, the binary's own output), and the
//! binary's command line ([`run_cli`]).
//!
//! Either way the host runs in a directory holding `drivers/` (see [`crate::workdir`]), from
//! a `host.toml` written there that listens on an ephemeral loopback port and keeps its data
//! in `data/`, with the test's own TOML appended.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::logging::{self, HOST_THREAD_PREFIX, LogBuffer};

/// How long a host may take to start serving, and to finish loading its drivers.
const START_WITHIN: Duration = Duration::from_secs(120);
/// How long an in-process host gets to stop when dropped: its running reconciles are
/// abandoned after that, as the binary's would be by the SIGKILL that drops a spawned host.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// A running host: its API's URL, its log, and how to stop it. Dropping it stops it.
pub struct Host {
    /// `http://127.0.0.1:<port>` (`https` with `[api.tls]`).
    pub url: String,
    log: Log,
    runner: Runner,
}

enum Log {
    /// An in-process host's events, kept by [`crate::logging`].
    Kept(LogBuffer),
    /// A spawned host's stderr.
    File(PathBuf),
}

enum Runner {
    InProcess(InProcess),
    Spawned(Child),
    Stopped,
}

/// A host running on its own Tokio runtime, on threads of its own named after its id.
struct InProcess {
    id: u64,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Writes `dir/host.toml`: an ephemeral loopback port, `drivers/` and `data/`, then `extra`.
fn write_config(dir: &Path, extra: &str) -> (PathBuf, String) {
    let text = format!(
        "drivers_dir = \"drivers\"\ndata_dir = \"data\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n"
    );
    let path = dir.join("host.toml");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    (path, text)
}

/// The one call into the host library: parses the config as `conveyor-host run` would (paths
/// relative to `base`) and starts the daemon.
async fn start_daemon(text: &str, base: &Path) -> anyhow::Result<conveyor_host::Running> {
    let config = conveyor_host::Config::parse(text, base)
        .map_err(|e| anyhow::anyhow!("{}: {e}", base.join("host.toml").display()))?;
    conveyor_host::start(config).await
}

impl Host {
    /// Starts a host in this process, in `dir` (which holds `drivers/`), with `extra_config`
    /// appended to its config, and returns once every driver file found at start is loaded
    /// or failed.
    pub fn start(dir: &Path, extra_config: &str) -> Host {
        let host = Host::start_serving(dir, extra_config);
        host.settle();
        host
    }

    /// [`Host::start`], returning as soon as the API serves, while drivers may still load.
    pub fn start_serving(dir: &Path, extra_config: &str) -> Host {
        logging::init();
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let log = logging::register(id);
        let (_, text) = write_config(dir, extra_config);
        let base = dir.to_path_buf();
        let name = format!("{HOST_THREAD_PREFIX}{id}");
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<Result<(&'static str, SocketAddr), String>>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name(name)
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot build a runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match start_daemon(&text, &base).await {
                        Ok(running) => {
                            let _ = ready_tx.send(Ok((running.scheme, running.addr)));
                            // Stopped when the sender is used or dropped.
                            let _ = stop_rx.await;
                            let _ = tokio::time::timeout(STOP_WITHIN, running.stop()).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
                // As the binary does: compiles still queued run on blocking threads, which are
                // not waited for.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .expect("spawn a thread for the in-process host");
        let (scheme, addr) = match ready_rx.recv_timeout(START_WITHIN) {
            Ok(Ok(started)) => started,
            failed => {
                logging::unregister(id);
                let why = match failed {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {START_WITHIN:?}"),
                };
                panic!(
                    "the in-process host did not start: {why}\nits log:\n{}",
                    read_kept(&log)
                );
            }
        };
        Host {
            url: format!("{scheme}://{addr}"),
            log: Log::Kept(log),
            runner: Runner::InProcess(InProcess { id, stop, thread }),
        }
    }

    /// Starts the `conveyor-host` binary `bin` (`env!("CARGO_BIN_EXE_conveyor-host")` in an
    /// integration test) as [`Host::start`] starts one in process, with extra variables in its
    /// environment. Its stderr goes to `dir/host.log`.
    pub fn spawn(bin: &Path, dir: &Path, extra_config: &str, env: &[(&str, &str)]) -> Host {
        let host = Host::spawn_serving(bin, dir, extra_config, env);
        host.settle();
        host
    }

    /// [`Host::spawn`], returning as soon as the API serves, while drivers may still load.
    pub fn spawn_serving(bin: &Path, dir: &Path, extra_config: &str, env: &[(&str, &str)]) -> Host {
        let (config, _) = write_config(dir, extra_config);
        let log = dir.join("host.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let mut child = crate::process::end_with_this_process(&mut Command::new(bin))
            .args(["run", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("the host's stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("conveyor-host listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(START_WITHIN) {
            Ok(url) => Host {
                url,
                log: Log::File(log),
                runner: Runner::Spawned(child),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not start; its log:\n{}",
                    bin.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// Waits until every driver file found at start is loaded or failed; stops the host and
    /// panics with its log if that takes longer than two minutes.
    fn settle(&self) {
        if !crate::wait::wait_for_drivers(&self.url, START_WITHIN) {
            panic!(
                "the drivers did not finish loading within {START_WITHIN:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// What the host logged so far: a spawned host's stderr, or the events an in-process
    /// host's threads emitted (see [`crate::logging`]), in the binary's format.
    pub fn log(&self) -> String {
        match &self.log {
            Log::Kept(buffer) => read_kept(buffer),
            Log::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
        }
    }

    /// A spawned host's process id (`None` for an in-process host, or once stopped).
    pub fn pid(&self) -> Option<u32> {
        match &self.runner {
            Runner::Spawned(child) => Some(child.id()),
            _ => None,
        }
    }

    /// SIGKILL: the spawned host gets no chance to clean up. Only a spawned host can be
    /// killed; an in-process one panics here.
    pub fn kill(&mut self) {
        match &mut self.runner {
            Runner::Spawned(child) => {
                let _ = child.kill();
                let _ = child.wait();
                self.runner = Runner::Stopped;
            }
            Runner::InProcess(_) => {
                panic!("an in-process host cannot be killed: start it with Host::spawn")
            }
            Runner::Stopped => {}
        }
    }

    /// Stops the host gracefully (SIGTERM for a spawned host) and says whether it stopped
    /// cleanly (a spawned host: exit status 0).
    pub fn stop(&mut self) -> bool {
        match std::mem::replace(&mut self.runner, Runner::Stopped) {
            Runner::Spawned(mut child) => {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                child.wait().is_ok_and(|s| s.success())
            }
            Runner::InProcess(host) => host.stop(),
            Runner::Stopped => true,
        }
    }
}

impl InProcess {
    fn stop(self) -> bool {
        let _ = self.stop.send(());
        let stopped = self.thread.join().is_ok();
        logging::unregister(self.id);
        stopped
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.runner, Runner::Stopped) {
            Runner::Spawned(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Runner::InProcess(host) => {
                host.stop();
            }
            Runner::Stopped => {}
        }
    }
}

fn read_kept(buffer: &LogBuffer) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Runs the `conveyor-host` binary `bin` with arguments and returns its exit code (-1 when
/// killed by a signal), stdout and stderr.
pub fn run_cli(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", bin.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
