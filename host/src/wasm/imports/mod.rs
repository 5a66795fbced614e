//! The host side of the WIT imports, one module per capability. Each capability has its own
//! context type, which implements the capability's WIT `Host` trait (or wasmtime's view trait
//! for WASI and `wasi:http`); the sandbox's store state only composes them, and links each
//! with a projection onto its field.

pub mod client;
pub mod http;
pub mod log;
pub mod stdio;
pub mod wasi;

/// The `conveyor:driver/types` interface: types only, no functions, so its context holds
/// nothing.
#[derive(Debug, Default)]
pub struct Types;

impl crate::wasm::bindings::conveyor::driver::types::Host for Types {}
