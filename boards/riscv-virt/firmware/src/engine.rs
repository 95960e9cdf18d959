//! The wasmtime settings the component runs under on this board, shared as source by
//! `build.rs` (which precompiles it for Pulley) and the firmware (which loads that): an
//! artifact loads only into an engine with the same settings.
//!
//! No virtual memory and no signal handlers here: linear memory is a plain allocation that
//! grows by copying, every bounds check is explicit (Pulley does them anyway), and a
//! runaway call is stopped by fuel rather than a clock interrupt.

/// Pulley's flavour for a core whose pointers are `pointer_width` bits (RV64 or RV32): the
/// firmware's own width at run time, the target's (not the build machine's) in `build.rs`.
pub fn pulley(pointer_width: u32) -> &'static str {
    if pointer_width == 32 {
        "pulley32"
    } else {
        "pulley64"
    }
}

/// Fuel a single call into the component may burn before it traps: a thousand times what a
/// `poll` that takes a full read costs, so only a call that runs away meets it.
pub const FUEL_PER_CALL: u64 = 200_000_000;

pub fn engine_config(pointer_width: u32) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    // Named on both sides: a RISC-V build of wasmtime would otherwise expect native code.
    config.target(pulley(pointer_width)).expect("wasmtime built with Pulley");
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.signals_based_traps(false);
    config.memory_reservation(0);
    config.memory_guard_size(0);
    config.memory_reservation_for_growth(0);
    config.memory_init_cow(false);
    config
}
