//! The host side of the WIT imports, one module per capability.

pub mod client;
pub mod http;
pub mod log;
pub mod stdio;
