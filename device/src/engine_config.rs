//! The wasmtime settings the client component runs under.
//!
//! Shared, as source, by the host's `build.rs` (which precompiles the embedded component) and
//! by its `ComponentFile` at run time: a precompiled artifact loads only into an engine
//! whose tunables and wasm features match the ones it was compiled with, so both sides must
//! build their `Config` here and nowhere else.

/// What stops a guest call that runs away (a bug: a loop that never ends). Either way the
/// call traps, and the device restarts the instance with what it had accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watchdog {
    /// Wall-clock time: a call still running after about a second traps. Each function
    /// entry and loop checks an epoch counter that a background thread advances, which
    /// costs less than counting fuel: a QoS 1 publish to its PUBACK, in memory, took 3.95 µs
    /// against 4.50 µs under fuel in one `boundary` benchmark run, and 3.31 against 3.52 µs
    /// in BENCHMARKS.md. Where a runaway call stops depends on the machine's speed and
    /// load, so this is for hosts that run in real time.
    Clock,
    /// Counted instructions: a call traps after the same work on every run, whatever the
    /// machine, which a deterministic simulation needs, at the cost above.
    Fuel,
}

/// A fresh wasmtime `Config` for the client component under `watchdog`.
pub fn engine_config(watchdog: Watchdog) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    match watchdog {
        Watchdog::Clock => config.epoch_interruption(true),
        Watchdog::Fuel => config.consume_fuel(true),
    };
    config.wasm_component_model(true);
    config
}
