//! Builds the client component that this crate embeds.
//!
//! 1. `cargo build` the guest (`client-component/`) for `wasm32-unknown-unknown` with the
//!    size-optimised `wasm` profile and a 64 KiB stack, in its own target dir (a nested
//!    build in the outer target dir would wait on the outer build's lock forever);
//! 2. shrink the core module with binaryen's `wasm-opt -Oz` (the `wasm-opt` crate, which
//!    builds a pinned binaryen, so every machine ships the same bytes);
//! 3. encode it as a component with `wit-component`, validating it;
//! 4. write it to `$OUT_DIR/mqtt_client.wasm`, which `src/component.rs` embeds.
//!
//! Why wasm-opt: rustc at `opt-level = "z"` leaves the code section at ~73 KB; binaryen's
//! size passes take it to ~62 KB, under the 64 KiB the component is meant to fit in a
//! microcontroller's runtime (issue 6). It costs a one-off ~5 minutes to build binaryen.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().expect("host/ sits in the workspace root").to_path_buf();
    for path in ["client-component/src", "client-component/Cargo.toml", "protocol/src", "protocol/Cargo.toml", "wit", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // Shared by every build of this crate (debug, release, features): the guest is built
    // once per change, whatever profile the host uses.
    let target_dir = env::var_os("MQTT_GUEST_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target").join("guest"));

    // The shipped component, and one built with the deliberate client faults that the test
    // suite must catch (scenarios/README.md, "Proof that the expectations can fail").
    let rustc_module = build_guest(&root, &target_dir, None);
    let module = optimize(&out_dir, "mqtt_client_core", &rustc_module);
    std::fs::write(out_dir.join("mqtt_client.wasm"), encode(&module)).expect("writing the component");
    let faulty = optimize(&out_dir, "mqtt_client_test_faults_core", &build_guest(&root, &target_dir, Some("test-faults")));
    std::fs::write(out_dir.join("mqtt_client_test_faults.wasm"), encode(&faulty)).expect("writing the faulty component");
    println!("cargo:rustc-env=MQTT_COMPONENT_MODULE_BYTES={}", module.len());
    // Both core modules, for the benchmark that reports what rustc and wasm-opt each make.
    println!("cargo:rustc-env=MQTT_COMPONENT_MODULE_PATH={}", out_dir.join("mqtt_client_core.wasm").display());
    println!("cargo:rustc-env=MQTT_COMPONENT_RUSTC_MODULE_PATH={}", out_dir.join("mqtt_client_core.rustc.wasm").display());
}

fn build_guest(root: &Path, target_dir: &Path, feature: Option<&str>) -> Vec<u8> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--package", "mqtt-client-component", "--target", "wasm32-unknown-unknown", "--profile", "wasm"])
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=-zstack-size=65536");
    if let Some(f) = feature {
        cmd.args(["--features", f]);
    }
    let status = cmd.status().expect("could not run cargo to build the client component");
    assert!(status.success(), "building the client component failed (see the errors above)");
    let module_path = target_dir.join("wasm32-unknown-unknown/wasm/mqtt_client_component.wasm");
    std::fs::read(&module_path).unwrap_or_else(|e| panic!("reading {}: {e}", module_path.display()))
}

/// `wasm-opt -Oz` on a core module: writes `NAME.rustc.wasm` and `NAME.wasm` in `out_dir`,
/// returns the optimised bytes. The features are the ones rustc 1.95 enables for
/// wasm32-unknown-unknown; binaryen keeps the `component-type` custom section.
fn optimize(out_dir: &Path, name: &str, module: &[u8]) -> Vec<u8> {
    use wasm_opt::{Feature, OptimizationOptions};
    let input = out_dir.join(format!("{name}.rustc.wasm"));
    let output = out_dir.join(format!("{name}.wasm"));
    std::fs::write(&input, module).expect("writing the core module");
    OptimizationOptions::new_optimize_for_size_aggressively()
        .enable_feature(Feature::BulkMemory)
        .enable_feature(Feature::SignExt)
        .enable_feature(Feature::MutableGlobals)
        .enable_feature(Feature::TruncSat)
        .enable_feature(Feature::Multivalue)
        .enable_feature(Feature::ReferenceTypes)
        .run(&input, &output)
        .unwrap_or_else(|e| panic!("wasm-opt on {}: {e}", input.display()));
    std::fs::read(&output).unwrap_or_else(|e| panic!("reading {}: {e}", output.display()))
}

fn encode(module: &[u8]) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|enc| enc.validate(true).encode())
        .unwrap_or_else(|e| panic!("encoding the client component failed: {e:#}"))
}
