//! Provides the client component this crate embeds.
//!
//! The component is committed, built, in `host/component/`, with a fingerprint of everything
//! it is built from (`component/SOURCES`). When the fingerprint matches the sources, the build
//! copies those bytes: no wasm32 target, no binaryen and no guest compile, so a fresh clone
//! runs its first scenario once wasmtime alone has compiled.
//!
//! When the guest's sources changed, the feature `rebuild-component` rebuilds it (and
//! without the feature the build stops and says so):
//! 1. `cargo build` the guest (`client-component/`) for `wasm32-unknown-unknown` with the
//!    size-optimised `wasm` profile and a 64 KiB stack, in its own target dir (a nested
//!    build in the outer target dir would wait on the outer build's lock forever);
//! 2. shrink the core module with binaryen's `wasm-opt -Oz` (the `wasm-opt` crate, which
//!    builds a pinned binaryen, so every machine makes the same bytes);
//! 3. encode it as a component with `wit-component`, validating it;
//! 4. write it, the test-faults build and the core modules to `host/component/` (commit them
//!    with the change) and to `$OUT_DIR`, which `src/component.rs` embeds.
//!
//! CI rebuilds with `MQTT_REBUILD_COMPONENT=1` and fails on any byte difference, so the
//! committed bytes are exactly what the sources make (wasmtime ships its WASI adapter the
//! same way).
//!
//! Either way the build then precompiles the component (once per watchdog, see
//! `../device/src/engine_config.rs`) and its test-faults build with wasmtime's Cranelift for the
//! target (`precompile`), so a binary loads machine code at start instead of compiling
//! ~100 KB of wasm (~140 ms and ~15 MiB of peak RSS).
//!
//! Why wasm-opt: rustc at `opt-level = "z"` leaves the code section at ~73 KB; binaryen's
//! size passes take it to ~62 KB, under the 64 KiB the component is meant to fit in a
//! microcontroller's runtime (issue 6). It costs a one-off ~5 minutes to build binaryen,
//! which is why only a rebuild pays it.
//!
//! Why size over speed: built for speed (`opt-level = 3`, `wasm-opt -O3`) the component is
//! 215 KB instead of 103 KB, and a QoS 1 message through both clients takes ~15.8k user-mode
//! instructions instead of ~20.9k (`mqtt-bench instructions`). But on Linux the kernel's
//! share (loopback TCP, wake-ups) is about two thirds of the process's CPU, so the saving was
//! ~0.05 s of user time in ~1.75 s of CPU per 100k messages, and no difference in CPU or
//! rate the benchmark could tell from its rounds' spread (eight paired rounds: rate 0.91×,
//! CPU 1.13×, both within it). Measured 2026-12-03; worth measuring again if the balance of
//! host and guest work changes.

use std::env;
use std::path::{Path, PathBuf};

#[path = "../device/src/engine_config.rs"]
mod engine_config;

/// The files `component/` holds, besides `SOURCES`.
const ARTIFACTS: [&str; 4] = ["mqtt_client.wasm", "mqtt_client_test_faults.wasm", "mqtt_client_core.wasm", "mqtt_client_core.rustc.wasm"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().expect("host/ sits in the workspace root").to_path_buf();
    let committed = manifest.join("component");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let inputs = guest_inputs(&root);
    for path in inputs.iter().chain(std::iter::once(&committed)) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=MQTT_REBUILD_COMPONENT");
    println!("cargo:rerun-if-changed={}", manifest.join("../device/src/engine_config.rs").display());

    let fingerprint = fingerprint(&root, &inputs);
    let recorded = std::fs::read_to_string(committed.join("SOURCES")).unwrap_or_default();
    let forced = env::var("MQTT_REBUILD_COMPONENT").is_ok_and(|v| !v.is_empty() && v != "0");
    if recorded.trim() == fingerprint && !forced {
        for name in ARTIFACTS {
            std::fs::copy(committed.join(name), out_dir.join(name)).unwrap_or_else(|e| panic!("copying host/component/{name}: {e}"));
        }
    } else {
        rebuild::run(&root, &committed, &out_dir, &fingerprint, forced);
    }
    // The shipped component under both watchdogs (real-time hosts take the clock, the
    // simulator fuel); the test-faults build only runs in the simulator and its tests.
    use engine_config::Watchdog;
    for (name, watchdog, artifact) in [
        ("mqtt_client", Watchdog::Clock, "mqtt_client.cwasm"),
        ("mqtt_client", Watchdog::Fuel, "mqtt_client.fuel.cwasm"),
        ("mqtt_client_test_faults", Watchdog::Fuel, "mqtt_client_test_faults.fuel.cwasm"),
    ] {
        let component = std::fs::read(out_dir.join(format!("{name}.wasm"))).expect("reading the component back from OUT_DIR");
        std::fs::write(out_dir.join(artifact), precompile(&component, watchdog)).expect("writing to OUT_DIR");
    }
    println!("cargo:rustc-env=MQTT_COMPONENT_MODULE_PATH={}", out_dir.join("mqtt_client_core.wasm").display());
    println!("cargo:rustc-env=MQTT_COMPONENT_RUSTC_MODULE_PATH={}", out_dir.join("mqtt_client_core.rustc.wasm").display());
}

/// The component compiled to machine code for the target, with the engine settings the
/// library runs it under with `watchdog`; empty when Cranelift cannot compile for the
/// target (the library then compiles at load, or says it cannot). Building for the machine the build runs on,
/// Cranelift uses every feature of this CPU; the library checks at load that the CPU it
/// runs on has them, and compiles the wasm when it does not (a binary copied to an older
/// machine). Cross-compiling, it uses the target's baseline.
fn precompile(component: &[u8], watchdog: engine_config::Watchdog) -> Vec<u8> {
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let mut config = engine_config::engine_config(watchdog);
    if target != env::var("HOST").expect("cargo sets HOST")
        && let Err(e) = config.target(&target)
    {
        println!("cargo:warning=not precompiling the client component for {target}: {e}");
        return Vec::new();
    }
    let compiled = wasmtime::Engine::new(&config).and_then(|engine| engine.precompile_component(component));
    compiled.unwrap_or_else(|e| {
        println!("cargo:warning=not precompiling the client component for {target}: {e}");
        Vec::new()
    })
}

/// Every file the component is made from, sorted: the guest and the protocol core (sources
/// and manifests), the WIT, the pinned toolchain, this script and the workspace manifest (its
/// `wasm` profile). `Cargo.lock` is left out, or every dependency added anywhere in the
/// workspace would call for a rebuild; CI's rebuild catches a guest dependency that moved.
fn guest_inputs(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["client-component/src", "protocol/src", "wit"] {
        walk(&root.join(dir), &mut files);
    }
    for file in ["client-component/Cargo.toml", "protocol/Cargo.toml", "rust-toolchain.toml", "host/build.rs", "Cargo.toml"] {
        files.push(root.join(file));
    }
    files.sort();
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// FNV-1a over each input's path (relative to the workspace, `/`-separated) and contents
/// (written out rather than taken from a crate: it must stay the same across versions and
/// machines, and it guards staleness, not secrets). Of the workspace manifest only the
/// profiles count: adding a member must not call for a rebuild.
fn fingerprint(root: &Path, inputs: &[PathBuf]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for path in inputs {
        let rel = path.strip_prefix(root).unwrap_or(path);
        let name: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        feed(name.join("/").as_bytes());
        feed(&[0]);
        let contents = std::fs::read(path).unwrap_or_default();
        if rel == Path::new("Cargo.toml") {
            feed(wasm_profile(&String::from_utf8_lossy(&contents)).as_bytes());
        } else {
            feed(&contents);
        }
        feed(&[0]);
    }
    format!("{h:016x}")
}

/// Every `[profile.*]` table of the workspace manifest, as written: the guest's `wasm`
/// profile inherits `release`, and even a build-override (which only changes how proc
/// macros are built) changes the guest's bytes through the crate hashes in its symbols.
fn wasm_profile(manifest: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in manifest.lines() {
        if line.trim_start().starts_with('[') {
            inside = line.trim().starts_with("[profile.");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(not(feature = "rebuild-component"))]
mod rebuild {
    use std::path::Path;

    pub fn run(_root: &Path, _committed: &Path, _out_dir: &Path, fingerprint: &str, forced: bool) {
        let why = if forced { "MQTT_REBUILD_COMPONENT asks for a rebuild" } else { "the client component's sources changed since host/component/ was built" };
        panic!(
            "\n{why} (fingerprint {fingerprint}).\nRebuild it (needs `rustup target add wasm32-unknown-unknown` and a C++ compiler for binaryen, ~5 minutes once):\n    cargo build --release -p mqtt-host --features rebuild-component\nthen commit host/component/ with the change.\n"
        );
    }
}

#[cfg(feature = "rebuild-component")]
mod rebuild {
    use std::env;
    use std::path::Path;
    use std::process::Command;

    pub fn run(root: &Path, committed: &Path, out_dir: &Path, fingerprint: &str, _forced: bool) {
        // Shared by every build of this crate (debug, release, features): the guest is built
        // once per change, whatever profile the host uses.
        let target_dir = env::var_os("MQTT_GUEST_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target").join("guest"));
        // The shipped component, and one built with the deliberate client faults that the
        // test suite must catch (scenarios/README.md, "Proof that the expectations can fail").
        let rustc_module = build_guest(root, &target_dir, None);
        let module = optimize(out_dir, "mqtt_client_core", &rustc_module);
        let faulty = optimize(out_dir, "mqtt_client_test_faults_core", &build_guest(root, &target_dir, Some("test-faults")));
        std::fs::create_dir_all(committed).expect("creating host/component/");
        for (name, bytes) in [
            ("mqtt_client.wasm", encode(&module)),
            ("mqtt_client_test_faults.wasm", encode(&faulty)),
            ("mqtt_client_core.wasm", module),
            ("mqtt_client_core.rustc.wasm", rustc_module),
        ] {
            std::fs::write(out_dir.join(name), &bytes).expect("writing to OUT_DIR");
            std::fs::write(committed.join(name), &bytes).unwrap_or_else(|e| panic!("writing host/component/{name}: {e}"));
        }
        std::fs::write(committed.join("SOURCES"), format!("{fingerprint}\n")).expect("writing host/component/SOURCES");
    }

    fn build_guest(root: &Path, target_dir: &Path, feature: Option<&str>) -> Vec<u8> {
        let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into())).args(["--print", "sysroot"]).output().expect("running rustc");
        let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
        assert!(
            Path::new(&sysroot).join("lib/rustlib/wasm32-unknown-unknown").exists(),
            "rebuilding the client component needs the wasm32 target: rustup target add wasm32-unknown-unknown"
        );
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root)
            .args(["build", "--package", "mqtt-client-component", "--target", "wasm32-unknown-unknown", "--profile", "wasm"])
            .arg("--target-dir")
            .arg(target_dir)
            .env_remove("RUSTFLAGS")
            // `cargo clippy` runs this script too (CI rebuilds the component in its clippy
            // step), and hands its rustc wrapper down: clippy-driver compiles with MIR
            // optimisations off, which changes the guest's bytes. The guest is plain rustc's.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CLIPPY_ARGS")
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

    /// `wasm-opt -Oz` on a core module. The features are the ones rustc 1.95 enables for
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
}
