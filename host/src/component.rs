//! Loading the component: the bytes this crate was built with, or another file.
//!
//! The embedded component comes with its machine code, precompiled by `build.rs` for the
//! target, so loading it is a check and a copy (0.4 ms in BENCHMARKS.md) instead of a
//! Cranelift compile (159 ms, and about 10 MiB more peak memory). Wasmtime checks the precompiled code against this
//! engine and this CPU; when it does not fit (a binary copied to a CPU without a feature
//! the build machine had) the wasm is compiled instead, given the `compile` feature.

use std::path::Path;

use anyhow::Context;
use mqtt_device::{engine_config, Program, Watchdog};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::Platform;

/// The component built from `client-component/` when this crate was compiled.
pub static EMBEDDED_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_client.wasm"));

/// [`EMBEDDED_COMPONENT`] compiled to machine code for this target by `build.rs` under
/// [`Watchdog::Clock`] (empty when Cranelift could not compile for the target).
static EMBEDDED_PRECOMPILED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_client.cwasm"));

/// The same under [`Watchdog::Fuel`].
static EMBEDDED_PRECOMPILED_FUEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_client.fuel.cwasm"));

/// [`FAULTY_COMPONENT`], precompiled under [`Watchdog::Fuel`] (it only runs in the simulator
/// and its tests).
static FAULTY_PRECOMPILED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_client_test_faults.fuel.cwasm"));

/// Where the build left the component's core module (before component encoding), for the
/// benchmark that reports its size. Valid on the machine that built it.
#[doc(hidden)]
pub const CORE_MODULE_PATH: &str = env!("MQTT_COMPONENT_MODULE_PATH");

/// The same core module as rustc made it, before `wasm-opt -Oz` (see `build.rs`).
#[doc(hidden)]
pub const RUSTC_CORE_MODULE_PATH: &str = env!("MQTT_COMPONENT_RUSTC_MODULE_PATH");

/// The same component built with the test-only deliberate faults (`mqtt_protocol::TestFault`),
/// one picked per client by the CONNECT user property `x-mqtt-as-test-fault`
/// ([`with_test_fault`]). Only for proving that tests and scenarios catch a broken client;
/// never ship it.
#[doc(hidden)]
pub static FAULTY_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_client_test_faults.wasm"));

/// `config`, telling a [`FAULTY_COMPONENT`] client to show the fault named `fault`
/// (`drop-republish`, …; `mqtt_protocol::TestFault::ALL`). The shipped component would send
/// it as an ordinary MQTT 5 user property.
#[doc(hidden)]
pub fn with_test_fault(mut config: crate::Config, fault: &str) -> crate::Config {
    config.connect_user_properties.push((mqtt_protocol::test_fault::USER_PROPERTY.into(), fault.into()));
    config
}

/// A compiled component ready to instantiate: one [`Engine`] and one `InstancePre` (the
/// device's [`Program`]), shared by every [`crate::Device`] made from it. Cloning is cheap.
#[derive(Clone)]
pub struct ComponentFile {
    program: Program<dyn Platform>,
    bytes: Wasm,
    precompiled: bool,
}

impl AsRef<Program<dyn Platform>> for ComponentFile {
    fn as_ref(&self) -> &Program<dyn Platform> {
        &self.program
    }
}

/// The wasm a [`ComponentFile`] was loaded from, kept only for [`ComponentFile::bytes`]:
/// the embedded component is borrowed where the binary holds it (a copy was 107 KB of heap,
/// and it made the kernel page in as much of the binary, for a process's whole life).
#[derive(Clone)]
enum Wasm {
    Embedded(&'static [u8]),
    Loaded(std::sync::Arc<[u8]>),
}

impl ComponentFile {
    /// The embedded component under [`Watchdog::Clock`], for hosts that run in real time:
    /// its precompiled machine code when this CPU can run it, otherwise compiled from the
    /// wasm (feature `compile`, on by default).
    pub fn embedded() -> anyhow::Result<Self> {
        Self::embedded_with(Watchdog::Clock)
    }

    /// The embedded component under `watchdog` ([`Watchdog::Fuel`] for a deterministic
    /// simulation), precompiled as [`ComponentFile::embedded`] is.
    pub fn embedded_with(watchdog: Watchdog) -> anyhow::Result<Self> {
        let precompiled = match watchdog {
            Watchdog::Clock => EMBEDDED_PRECOMPILED,
            Watchdog::Fuel => EMBEDDED_PRECOMPILED_FUEL,
        };
        Self::load_embedded(precompiled, EMBEDDED_COMPONENT, watchdog)
    }

    /// [`FAULTY_COMPONENT`] under [`Watchdog::Fuel`], loaded as [`ComponentFile::embedded`]
    /// loads the shipped one.
    #[doc(hidden)]
    pub fn faulty() -> anyhow::Result<Self> {
        Self::load_embedded(FAULTY_PRECOMPILED, FAULTY_COMPONENT, Watchdog::Fuel)
    }

    /// A component file (wasm) under [`Watchdog::Clock`], compiled at load: needs the
    /// `compile` feature.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        Self::from_file_with(path, Watchdog::Clock)
    }

    /// [`ComponentFile::from_file`] under `watchdog`.
    pub fn from_file_with(path: &Path, watchdog: Watchdog) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
        Self::from_bytes_with(&bytes, watchdog).with_context(|| format!("loading component {}", path.display()))
    }

    /// A component (wasm bytes) under [`Watchdog::Clock`], compiled at load: needs the
    /// `compile` feature.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        Self::from_bytes_with(bytes, Watchdog::Clock)
    }

    /// [`ComponentFile::from_bytes`] under `watchdog`.
    pub fn from_bytes_with(bytes: &[u8], watchdog: Watchdog) -> anyhow::Result<Self> {
        let engine = runtime_engine(watchdog)?;
        let component = compile(&engine, bytes)?;
        Self::link(engine, component, Wasm::Loaded(bytes.into()), watchdog, false)
    }

    /// [`ComponentFile::load`] of bytes the binary holds. Wasmtime runs a copy of the
    /// precompiled code, so the binary's pages of it, read once, go back to the kernel
    /// afterwards: kept resident they were ~0.4 MiB of every process's peak memory.
    fn load_embedded(precompiled: &'static [u8], wasm: &'static [u8], watchdog: Watchdog) -> anyhow::Result<Self> {
        let file = Self::load(precompiled, wasm, watchdog)?;
        if file.precompiled {
            crate::resident::release(precompiled);
        }
        Ok(file)
    }

    fn load(precompiled: &[u8], wasm: &'static [u8], watchdog: Watchdog) -> anyhow::Result<Self> {
        let engine = runtime_engine(watchdog)?;
        let wasm = Wasm::Embedded(wasm);
        if precompiled.is_empty() {
            let component = compile(&engine, wasm.as_slice()).context("no precompiled component for this target")?;
            return Self::link(engine, component, wasm, watchdog, false);
        }
        // SAFETY: `Component::deserialize` trusts its input to be wasmtime's own output; these
        // bytes are what build.rs's `precompile_component` wrote, embedded at build time from
        // the same wasmtime (one version in Cargo.lock), never input from outside. Wasmtime
        // still checks version, settings and CPU features, which is the fallback below.
        match unsafe { Component::deserialize(&engine, precompiled) } {
            Ok(component) => Self::link(engine, component, wasm, watchdog, true),
            Err(why) => {
                let component = compile(&engine, wasm.as_slice()).with_context(|| format!("the precompiled component does not fit this machine ({why:#})"))?;
                tracing::info!("the precompiled client component does not fit this machine ({why:#}); compiled it instead");
                Self::link(engine, component, wasm, watchdog, false)
            }
        }
    }

    fn link(engine: Engine, component: Component, wasm: Wasm, watchdog: Watchdog, precompiled: bool) -> anyhow::Result<Self> {
        if watchdog == Watchdog::Clock {
            crate::epoch_ticker::watch(&engine);
        }
        let program = Program::new(engine, &component, watchdog)?;
        Ok(ComponentFile { program, bytes: wasm, precompiled })
    }

    /// What stops a runaway call in instances of this component.
    pub fn watchdog(&self) -> Watchdog {
        self.program.watchdog()
    }

    /// Whether this was loaded from machine code precompiled at build time (`false`: compiled
    /// at load).
    pub fn is_precompiled(&self) -> bool {
        self.precompiled
    }

    /// Names of the component's imports (interfaces), e.g. `mqtt-as:client/socket@0.1.0`.
    pub fn import_names(&self) -> Vec<String> {
        let ty = self.program.component().component_type();
        ty.imports(self.program.engine()).map(|(name, _)| name.to_string()).collect()
    }

    /// The component's bytes, as loaded (for `component --out FILE`).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

impl Wasm {
    fn as_slice(&self) -> &[u8] {
        match self {
            Wasm::Embedded(b) => b,
            Wasm::Loaded(b) => b,
        }
    }
}

/// The engine components run in. `MQTT_HOST_PERFMAP=1` makes wasmtime write
/// `/tmp/perf-PID.map`, so that `perf report` names the guest's functions instead of `[JIT]`.
fn runtime_engine(watchdog: Watchdog) -> anyhow::Result<Engine> {
    let mut config = engine_config(watchdog);
    if std::env::var_os("MQTT_HOST_PERFMAP").is_some_and(|v| v != "0") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Ok(Engine::new(&config)?)
}

#[cfg(feature = "compile")]
fn compile(engine: &Engine, wasm: &[u8]) -> anyhow::Result<Component> {
    Component::from_binary(engine, wasm).map_err(anyhow::Error::from).context("not a valid client component")
}

#[cfg(not(feature = "compile"))]
fn compile(_engine: &Engine, _wasm: &[u8]) -> anyhow::Result<Component> {
    anyhow::bail!("this build of mqtt-host cannot compile a component (its `compile` feature is off); it runs only the embedded, precompiled one")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_component_loads_precompiled_on_the_build_machine() {
        for watchdog in [Watchdog::Clock, Watchdog::Fuel] {
            let file = ComponentFile::embedded_with(watchdog).unwrap();
            assert!(file.is_precompiled(), "{watchdog:?}");
            assert_eq!(file.watchdog(), watchdog);
        }
        assert!(ComponentFile::faulty().unwrap().is_precompiled());
    }

    /// A load hands the precompiled bytes' pages back to the kernel (`resident::release`):
    /// a second load reads them again and must find them as they were, precompiled code
    /// that deserializes, and the embedded wasm is the one built.
    #[test]
    fn the_embedded_component_loads_again_after_its_pages_went_back() {
        for _ in 0..3 {
            let file = ComponentFile::embedded().unwrap();
            assert!(file.is_precompiled());
            assert_eq!(file.bytes(), EMBEDDED_COMPONENT);
            assert!(file.import_names().iter().any(|n| n.starts_with("mqtt-as:client/socket")));
        }
    }

    /// Code compiled under other engine settings (here: the other watchdog) must not be
    /// run; the wasm is compiled instead.
    #[test]
    fn precompiled_code_for_other_settings_is_refused_and_compiled_instead() {
        let foreign = Engine::new(&engine_config(Watchdog::Fuel)).unwrap().precompile_component(EMBEDDED_COMPONENT).unwrap();
        let file = ComponentFile::load(&foreign, EMBEDDED_COMPONENT, Watchdog::Clock).unwrap();
        assert!(!file.is_precompiled());
        let not_elf = ComponentFile::load(b"not an ELF file", EMBEDDED_COMPONENT, Watchdog::Clock).unwrap();
        assert!(!not_elf.is_precompiled());
    }
}
