//! The component linked against a platform's imports: what a [`crate::Device`] is made from.

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::Engine;

use crate::bindings::{MqttClient, MqttClientPre};
use crate::device::HostState;
use crate::{DevicePlatform, Watchdog};

/// One [`Engine`] and one `InstancePre`, shared by every [`crate::Device`] made from them (a
/// restart instantiates it again). Cloning is cheap.
pub struct Program<P: DevicePlatform + ?Sized> {
    pub(crate) engine: Engine,
    pub(crate) pre: MqttClientPre<HostState<P>>,
    pub(crate) watchdog: Watchdog,
    pub(crate) max_memory: usize,
}

// By hand: a derive would ask `P: Clone`, and a platform is never cloned.
impl<P: DevicePlatform + ?Sized> Clone for Program<P> {
    fn clone(&self) -> Self {
        Program { engine: self.engine.clone(), pre: self.pre.clone(), watchdog: self.watchdog, max_memory: self.max_memory }
    }
}

impl<P: DevicePlatform + ?Sized> AsRef<Program<P>> for Program<P> {
    fn as_ref(&self) -> &Program<P> {
        self
    }
}

impl<P: DevicePlatform + ?Sized> Program<P> {
    /// Links `component`, loaded into `engine` (made with [`crate::engine_config`]'s
    /// `watchdog`, or settings to the same effect), against the imports of `P`.
    pub fn new(engine: Engine, component: &Component, watchdog: Watchdog) -> wasmtime::Result<Self> {
        let mut linker = Linker::<HostState<P>>::new(&engine);
        MqttClient::add_to_linker::<HostState<P>, HasSelf<HostState<P>>>(&mut linker, |s| s)?;
        let pre = MqttClientPre::new(linker.instantiate_pre(component)?)?;
        Ok(Program { engine, pre, watchdog, max_memory: crate::MAX_GUEST_MEMORY })
    }

    /// Instances may grow their linear memory to `bytes` and no further (a `memory.grow`
    /// past it fails, which the guest reports, and the watchdog restarts it), instead of
    /// [`crate::MAX_GUEST_MEMORY`]: a board with a few MiB of RAM sets its own.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.max_memory = bytes;
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What stops a runaway call in instances of this component.
    pub fn watchdog(&self) -> Watchdog {
        self.watchdog
    }

    /// The component, as linked.
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }
}
