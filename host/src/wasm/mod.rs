//! Everything WebAssembly: the engine and its instance pool, the compiled-component cache, a
//! loaded driver, and the per-event sandbox with the host side of the WIT imports.
//!
//! This module knows nothing of HTTP, SQL or NATS: it reaches the rest of the host only
//! through the [`LogSink`] and [`ApiClient`] traits.

pub mod bindings;
pub mod cache;
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
pub use sandbox::{Budget, FailureKind, GuestOutcome, RunContext, RunOutcome, Sandbox};
