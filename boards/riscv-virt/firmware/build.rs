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

    config_keys(&manifest.join("../../../hosts/config_keys.json"), &out.join("config_keys.rs"));

    let wasm_path = manifest.join("../../../host/component/mqtt_client.wasm");
    println!("cargo:rerun-if-changed={}", wasm_path.display());
    println!("cargo:rerun-if-changed=src/engine.rs");
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("reading {}: {e}", wasm_path.display()));
    let width = env::var("CARGO_CFG_TARGET_POINTER_WIDTH").expect("cargo sets the target's pointer width");
    let config = engine::engine_config(width.parse().expect("a number of bits"));
    let engine = wasmtime::Engine::new(&config).expect("an engine for Pulley");
    let compiled = engine.precompile_component(&wasm).expect("precompiling the component for Pulley");
    std::fs::write(out.join("mqtt_client.pulley.cwasm"), compiled).expect("writing to OUT_DIR");
}

/// Writes `set_key`, which sets a config key by its name or an alias from a boot setting's
/// text, from the core's key list (`hosts/config_keys.json`, which a host test makes from
/// the core and keeps current): the Python and Node hosts read the same list, so a key has
/// the same names on every host, and a key added to the core reaches this board's settings
/// with no edit here.
fn config_keys(json: &std::path::Path, out: &std::path::Path) {
    println!("cargo:rerun-if-changed={}", json.display());
    let text = std::fs::read_to_string(json).unwrap_or_else(|e| panic!("reading {}: {e}", json.display()));
    let list: serde_json::Value = serde_json::from_str(&text).expect("hosts/config_keys.json is JSON");
    let mut arms = String::new();
    let mut fields = Vec::new();
    for key in list["keys"].as_array().expect("a `keys` list") {
        let field = key["field"].as_str().expect("a field");
        let name = key["name"].as_str().expect("a name");
        let ty = key["type"].as_str().expect("a type");
        let mut patterns = vec![format!("{name:?}")];
        for alias in key["aliases"].as_array().expect("aliases") {
            patterns.push(format!("{:?}", alias.as_str().expect("an alias")));
        }
        fields.push((field.to_string(), name.to_string()));
        arms.push_str(&format!(
            "        {} => config.{field} = <{ty} as FromWord>::from_word(value).map_err(|why| alloc::format!(\"{name}: {{why}}\"))?,\n",
            patterns.join(" | ")
        ));
    }
    let code = format!(
        "/// Sets the config key `key` (a name or an alias of `hosts/config_keys.json`) from `value`;\n\
         /// `Ok(false)` if no key has that name.\n\
         pub fn set_key(config: &mut Config, key: &str, value: &str) -> Result<bool, String> {{\n    match key {{\n{arms}        _ => return Ok(false),\n    }}\n    Ok(true)\n}}\n\n\
         /// Each key's field in the config record, and its name in the schema.\n\
         pub const FIELD_NAMES: &[(&str, &str)] = &{fields:?};\n"
    );
    std::fs::write(out, code).expect("writing to OUT_DIR");
}
