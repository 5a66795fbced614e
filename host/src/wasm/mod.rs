//! Everything WebAssembly: the engine and its instance pool, the compiled-component cache and
//! its compile queue, a loaded driver, the per-event sandbox, and the host side of the WIT
//! imports, one capability per module under [`imports`].
//!
//! This module knows nothing of the host's API, SQL, NATS or config file: it reaches the rest
//! of the host only through the [`LogSink`] and [`ApiClient`] traits, and takes each driver's
//! [`Limits`] and [`Grants`] as resolved values.

pub mod bindings;
pub mod cache;
pub mod compile_queue;
pub mod driver;
pub mod engine;
pub mod grants;
pub mod imports;
pub mod redact;
pub mod sandbox;

pub use driver::DriverInfo;
pub use grants::Grants;
pub use imports::client::ApiClient;
pub use imports::log::{LogSink, RunLogger};
pub use sandbox::{FailureKind, GuestOutcome, Limits, Reconciled, RunContext, RunOutcome, Sandbox};
