//! The end-to-end tests of conveyor-host: real drivers built for wasm32-wasip2 (and in Python
//! and JavaScript), a real SQLite file or a real nats-server, over HTTP, WebSocket and SSE.
//! The harness is `tests/support` (the `support` crate, shared with the benches).
//!
//! One module per area. Most tests start the host in this process ([`Host::start`]); the
//! ones that need a process of their own spawn the `conveyor-host` binary ([`spawn`]): a
//! SIGKILL, a restart on the same data directory, the command line, and a grant read from
//! the host process's environment.
//!
//! A test checks one behaviour. Where several need the same costly setup, they share it: a
//! [`Fixture`] (a host started by the first test that needs it, kept for the process's life,
//! each test using resources of its own), or a scenario run once whose observations each test
//! checks its part of. Either way a test runs alone or in any order.

mod author;
mod compat;
mod control;
mod dashboard;
mod embedded;
mod guarantees;
mod nats;
mod outcomes;
mod polyglot;
mod retention;
mod sandbox;
mod security;

use std::path::Path;
use std::sync::Once;

use support::Host;

/// The host binary.
pub fn host_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_conveyor-host"))
}

/// Spawns the host binary in `dir` (see [`Host::spawn`]) and waits for its drivers.
pub fn spawn(dir: &Path, extra_config: &str) -> Host {
    Host::spawn(host_bin(), dir, extra_config, &[])
}

/// Runs the host binary's command line: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    support::run_cli(host_bin(), args)
}

/// A temporary directory holding the named drivers (see [`support::workdir`]). The first
/// call also starts [`warm_up`].
pub fn workdir(drivers: &[&str]) -> tempfile::TempDir {
    warm_up();
    support::workdir(drivers)
}

/// Starts, on threads of their own and once per process, what takes the polyglot tests long
/// to prepare: the JavaScript drivers' builds, and the polyglot module's scenario of two
/// starts of the binary (which builds the Python driver, about ten seconds, then compiles
/// it, as long again) followed by its in-process host. The polyglot tests run last, since
/// libtest starts tests in name order; this way their hosts are ready by then and their work
/// fills the time the tests before them spend waiting on sleeps and timeouts. Only when the
/// whole suite (or the polyglot module) runs ([`whole_suite`]). Whatever fails here fails
/// again, with its message, in the test that needs it; a host spawned here ends with the
/// thread, or the process.
fn warm_up() {
    static WARM_UP: Once = Once::new();
    WARM_UP.call_once(|| {
        if !whole_suite() {
            return;
        }
        std::thread::spawn(|| {
            support::example_driver("js-driver");
            polyglot::starlingmonkey_driver();
        });
        std::thread::spawn(|| {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(polyglot::warm_up());
            }
        });
    });
}

/// Whether this run is the whole suite or the whole polyglot module: no test name filter on
/// the command line but a prefix of `polyglot::`, and no `--skip` that leaves out the
/// polyglot tests. (A run of a few tests does not pay for the warm-up: the polyglot tests it
/// selects prepare what they need themselves.)
fn whole_suite() -> bool {
    const WITH_VALUE: [&str; 6] = [
        "--test-threads",
        "--logfile",
        "--color",
        "--format",
        "--shuffle-seed",
        "-Z",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--skip" {
            let skip = args.next().unwrap_or_default();
            if skip.contains("polyglot") || "polyglot::".contains(skip.as_str()) {
                return false;
            }
        } else if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') && !"polyglot::".starts_with(arg.as_str()) {
            return false;
        }
    }
    true
}

/// [`workdir`] with a compile cache of its own (see [`support::workdir_cold`]), for the tests
/// of the first compile.
pub fn workdir_cold(drivers: &[&str]) -> tempfile::TempDir {
    warm_up();
    support::workdir_cold(drivers)
}

/// An in-process host with the directory it runs in.
pub struct Fixture {
    /// The host.
    pub host: Host,
    /// Its directory (`drivers/`, `data/`, `host.toml`).
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts a host in a new directory holding `drivers`, with `extra_config`.
    pub fn start(drivers: &[&str], extra_config: &str) -> Fixture {
        let dir = workdir(drivers);
        let host = Host::start(dir.path(), extra_config);
        Fixture { host, dir }
    }
}
