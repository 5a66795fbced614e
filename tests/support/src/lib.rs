//! The harness that conveyor-host's end-to-end tests (`tests/e2e`) and its benches
//! (`host/benches`) share. Internal: not published.
//!
//! By job:
//! - [`certs`]: a CA and the certificates it signs, for TLS and JWT tests;
//! - [`paths`]: where the workspace and its cargo target directory are;
//! - [`drivers`]: building the Rust drivers for wasm32-wasip2 and the Python and JavaScript
//!   example drivers, and a temporary directory holding some of them;
//! - [`host`]: a host to test, started in this process or as the `conveyor-host` binary, and
//!   the binary's command line;
//! - [`http`]: the host's HTTP API, as methods of [`Host`];
//! - [`stream`]: reading a log stream over SSE ([`Sse`]) or WebSocket ([`Ws`]);
//! - [`wait`]: polling until something holds;
//! - [`nats`]: a nats-server with JetStream set up as Conveyor's, and a stand-in for the
//!   Conveyor server's engine;
//! - [`logging`]: the test process's tracing subscriber, which also keeps each in-process
//!   host's log;
//! - [`timing`]: timestamps in results and durations in reports.
//!
//! The `conveyor-host` binary's path (`CARGO_BIN_EXE_conveyor-host`) is only known to the
//! integration tests themselves, so the functions that run it take it as an argument.

#![warn(missing_docs)]

pub mod bench;
pub mod browser;
pub mod certs;
pub mod drivers;
pub mod host;
pub mod http;
pub mod logging;
pub mod nats;
pub mod paths;
mod process;
pub mod stream;
pub mod timing;
pub mod wait;

pub use drivers::{
    BuildError, RUST_DRIVERS, build_example_driver, build_rust_drivers, driver_file,
    example_driver, example_driver_variant, rust_driver, workdir, workdir_cold,
};
pub use host::{Host, run_cli};
pub use paths::{target_dir, tempdir, workspace};
pub use stream::{Sse, SseFrame, Ws};
pub use timing::{duration_between, format_duration, parse_time};
pub use wait::{poll, wait_until};
