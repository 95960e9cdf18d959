//! Builds the client component that this crate embeds.
//!
//! 1. `cargo build` the guest (`client-component/`) for `wasm32-unknown-unknown` with the
//!    size-optimised `wasm` profile and a 64 KiB stack, in its own target dir (a nested
//!    build in the outer target dir would wait on the outer build's lock forever);
//! 2. encode the core module as a component with `wit-component`, validating it;
//! 3. write it to `$OUT_DIR/mqtt_client.wasm`, which `src/component.rs` embeds.

use std::env;
use std::path::PathBuf;
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
    let target_dir = env::var_os("MQTT_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("guest"));

    let fault = env::var_os("CARGO_FEATURE_FAULT_DROP_REPUBLISH").is_some();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--package", "mqtt-client-component", "--target", "wasm32-unknown-unknown", "--profile", "wasm"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=-zstack-size=65536");
    if fault {
        cmd.args(["--features", "fault-drop-republish"]);
    }
    let status = cmd.status().expect("could not run cargo to build the client component");
    assert!(status.success(), "building the client component failed (see the errors above)");

    let module_path = target_dir.join("wasm32-unknown-unknown/wasm/mqtt_client_component.wasm");
    let module = std::fs::read(&module_path).unwrap_or_else(|e| panic!("reading {}: {e}", module_path.display()));
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|enc| enc.validate(true).encode())
        .unwrap_or_else(|e| panic!("encoding the client component failed: {e:#}"));
    std::fs::write(out_dir.join("mqtt_client.wasm"), &component).expect("writing the component");
    println!("cargo:rustc-env=MQTT_COMPONENT_MODULE_BYTES={}", module.len());
}
