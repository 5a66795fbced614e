//! Host bindings generated from `wit/driver.wit` (documented there).

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "driver",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use conveyor::driver::client::{ClientError, Created};
pub use conveyor::driver::types::{DriverInfo as WitDriverInfo, Outcome};
