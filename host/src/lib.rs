//! conveyor-host: runs Conveyor CI drivers as sandboxed WebAssembly components.
//!
//! One event's path, module by module:
//! [`events`] (where deliveries come from) → [`manager`] (which driver, how many at once,
//! retries) → [`wasm`] (a fresh sandboxed instance per event, its imports) → [`logs`] and the
//! result → settled back through [`events`]. [`resources`] and [`api`] are the embedded
//! control plane; [`store`] is its SQLite file.

pub mod api;
pub mod check;
pub mod clock;
pub mod config;
pub mod conveyor;
pub mod daemon;
pub mod events;
pub mod logs;
pub mod manager;
pub mod metrics;
pub mod registry;
pub mod resources;
pub mod rest_client;
pub mod store;
pub mod wasm;
