//! The wasmtime settings the client component runs under.
//!
//! Shared, as source, by `build.rs` (which precompiles the embedded component) and by
//! [`crate::ComponentFile`] at run time: a precompiled artifact loads only into an engine
//! whose tunables and wasm features match the ones it was compiled with, so both sides must
//! build their `Config` here and nowhere else.

/// A fresh wasmtime `Config` for the client component.
pub fn engine_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    // Fuel bounds every call: a runaway guest becomes an error, not a hung host.
    config.consume_fuel(true);
    config.wasm_component_model(true);
    config
}
