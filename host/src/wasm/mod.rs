//! Everything WebAssembly: the engine and its instance pool, the compiled-component cache and
//! its compile queue, a
//! loaded driver, the per-event sandbox with the host side of the WIT imports, a driver's
//! grants and the redaction of its secrets.
//!
//! This module knows nothing of the host's API, SQL or NATS: it reaches the rest of the host
//! only through the [`LogSink`] and [`ApiClient`] traits, and reads only the per-driver
//! settings of [`crate::config`].

pub mod bindings;
pub mod cache;
pub mod compile_queue;
pub mod driver;
pub mod engine;
pub mod grants;
pub mod imports;
pub mod redact;
pub mod sandbox;

pub use driver::{DriverInfo, LoadedDriver};
pub use grants::Grants;
pub use imports::client::ApiClient;
pub use imports::log::LogSink;
pub use sandbox::{Budget, FailureKind, GuestOutcome, Reconciled, RunContext, RunOutcome, Sandbox};
