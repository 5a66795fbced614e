//! conveyor-host: runs Conveyor CI drivers as sandboxed WebAssembly components.
//!
//! One event's path, module by module: a backend's event source ([`backend`]: the embedded
//! SQLite queue, or a Conveyor deployment's JetStream) → the [`manager`] (worker slots; admit,
//! lock, sandbox, verdict, flush, settle) → the sandbox ([`wasm`]: a fresh instance per event
//! and its imports, one capability each) → the run's logs and its [`result`] → settled back
//! through the backend. [`routing`] decides which drivers get an event, [`registry`] keeps the
//! drivers directory loaded, [`config`] is resolved at the edge into each driver's limits and
//! grants, and [`api`] serves both modes' HTTP routes.
//!
//! The library's public API is what the `conveyor-host` binary, the end-to-end tests and the
//! benchmarks use: start a host from a [`Config`], check a component, and the sandbox's parts
//! for measuring it.

#![warn(missing_docs)]

mod api;
mod author;
mod backend;
mod check;
mod clock;
mod config;
mod conveyor;
mod daemon;
mod jwt;
mod keyed_lock;
mod manager;
mod memory;
mod metrics;
mod registry;
mod result;
mod routing;
mod store;
mod wasm;

#[cfg(test)]
mod fuzz_tests;

pub use author::{FromRun, Lang, TestCommand, new_project, test};
/// NATS mode's cross-host lease on a resource (its bucket, its take and release), for tools
/// and benches that measure or inspect it beside a host.
pub use backend::conveyor::lease::{Lease, LeaseError, Leases};
pub use check::check;
pub use config::{Config, ConfigError};
pub use conveyor::Log;
pub use daemon::{Running, run, start};
pub use wasm::bindings;
pub use wasm::engine::{EngineSettings, build as build_engine, start_epoch_ticker};
pub use wasm::imports::client::NoClient;
pub use wasm::sandbox::RunState;
pub use wasm::{
    ApiClient, Grants, GuestOutcome, Limits, LogSink, Reconciled, RunContext, RunLogger,
    RunOutcome, Sandbox,
};

/// An error and its sources, as one line (`what: because: because`).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
