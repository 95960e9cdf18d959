//! Links the firmware for QEMU's `virt` machine and precompiles the client component for
//! wasmtime's Pulley interpreter.
//!
//! The component is the one the Rust host embeds, committed in `host/component/`: this
//! board runs the same bytes as every other host. No Cranelift goes into the firmware: it
//! loads Pulley bytecode made here, on the build machine.

use std::env;
use std::path::PathBuf;

#[path = "src/engine.rs"]
#[allow(dead_code, reason = "the firmware's side of the settings")]
mod engine;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());

    // riscv-rt's link.x reads the memory map from memory.x, found on the search path.
    std::fs::copy(manifest.join("memory.x"), out.join("memory.x")).expect("copying memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tmemory.x");
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");

    let wasm_path = manifest.join("../../../host/component/mqtt_client.wasm");
    println!("cargo:rerun-if-changed={}", wasm_path.display());
    println!("cargo:rerun-if-changed=src/engine.rs");
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("reading {}: {e}", wasm_path.display()));
    let config = engine::engine_config();
    let engine = wasmtime::Engine::new(&config).expect("an engine for Pulley");
    let compiled = engine.precompile_component(&wasm).expect("precompiling the component for Pulley");
    std::fs::write(out.join("mqtt_client.pulley.cwasm"), compiled).expect("writing to OUT_DIR");
}
