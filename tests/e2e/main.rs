//! The end-to-end tests of conveyor-host: real drivers built for wasm32-wasip2 (and in Python
//! and JavaScript), a real SQLite file or a real nats-server, over HTTP, WebSocket and SSE.
//! The harness is `tests/support` (the `support` crate, shared with the benches).
//!
//! One module per area. Most tests start the host in this process ([`Host::start`]); the
//! ones that need a process of their own spawn the `conveyor-host` binary ([`spawn`]): a
//! SIGKILL, a restart on the same data directory, the command line, and what the process's
//! environment or its process-wide metrics decide.
//!
//! A test checks one behaviour. Where several need the same costly setup, they share it: a
//! [`Fixture`] (a host started by the first test that needs it, kept for the process's life,
//! each test using resources of its own), or a scenario run once whose observations each test
//! checks its part of. Either way a test runs alone or in any order.

mod control;
mod embedded;
mod nats;
mod polyglot;
mod sandbox;

use std::path::Path;

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
        let dir = support::workdir(drivers);
        let host = Host::start(dir.path(), extra_config);
        Fixture { host, dir }
    }
}
