//! Loading the component: the bytes this crate was built with, or another file.

use std::path::Path;

use anyhow::Context;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::{MqttClient, MqttClientPre};
use crate::device::HostState;

/// The component built from `client-component/` when this crate was compiled.
pub static EMBEDDED_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_client.wasm"));

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

/// A compiled component ready to instantiate: one [`Engine`] and one `InstancePre`, shared
/// by every [`crate::Device`] made from it. Cloning is cheap.
#[derive(Clone)]
pub struct ComponentFile {
    pub(crate) engine: Engine,
    pub(crate) pre: MqttClientPre<HostState>,
    bytes: std::sync::Arc<Vec<u8>>,
}

impl ComponentFile {
    /// The embedded component.
    pub fn embedded() -> anyhow::Result<Self> {
        Self::from_bytes(EMBEDDED_COMPONENT)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("loading component {}", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let mut config = Config::new();
        // Fuel bounds every call: a runaway guest becomes an error, not a hung host.
        config.consume_fuel(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let component = Component::from_binary(&engine, bytes).map_err(anyhow::Error::from).context("not a valid client component")?;
        let mut linker = Linker::<HostState>::new(&engine);
        MqttClient::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;
        let pre = MqttClientPre::new(linker.instantiate_pre(&component)?)?;
        Ok(ComponentFile { engine, pre, bytes: std::sync::Arc::new(bytes.to_vec()) })
    }

    /// Names of the component's imports (interfaces), e.g. `mqtt-as:client/socket@0.1.0`.
    pub fn import_names(&self) -> Vec<String> {
        let ty = self.pre.instance_pre().component().component_type();
        ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect()
    }

    /// The component's bytes, as loaded (for `component --out FILE`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}
