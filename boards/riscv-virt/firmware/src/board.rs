//! The component's imports on this board, and the client that drives it: the same `Device`
//! as the Rust host's (`mqtt-device`), so a trap or a call that runs out of fuel restarts the
//! instance and hands the fresh one what the failed one held, as it does there.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use mqtt_device::{Clock, Config, DevicePlatform, LinkState, LogLevel, Program, Socket, SocketError, SocketState, TlsParams, Watchdog, Wifi};
use mqtt_protocol::store::Flash;
use smoltcp::wire::Ipv4Address;
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::engine;
use crate::flash::CfiFlash;
use crate::net::Network;

/// The client component, precompiled for Pulley by `build.rs`. Loaded where it lies (in the
/// firmware image, flash on a chip) rather than copied to the heap, which saves its 336 KB
/// of RAM; aligned, as wasmtime reads it as an ELF file in place.
static COMPONENT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_client.pulley.cwasm")));

#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

/// The guest's linear memory may grow to this and no further (a `memory.grow` past it
/// fails, which the guest reports), so that no peer can exhaust the board's RAM through it.
const MAX_GUEST_MEMORY: usize = 16 << 20;

/// What the client runs on: the network, the flash, the machine timer.
pub struct Board {
    pub net: Network,
    flash: Option<CfiFlash>,
}

impl Socket for Board {
    fn open(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError> {
        if tls.is_some() {
            crate::println!("socket: TLS is not on this board yet");
            return Err(SocketError::TlsFailed);
        }
        let Ok(address) = host.parse::<Ipv4Address>() else {
            crate::println!("socket: `{host}` is not an IPv4 address, and this board has no DNS");
            return Err(SocketError::DnsFailed);
        };
        self.net.open(address, port)
    }
    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        self.net.status(handle)
    }
    fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        self.net.send(handle, data)
    }
    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        self.net.recv(handle, max)
    }
    fn close(&mut self, handle: u32) {
        self.net.close(handle)
    }
}

impl Clock for Board {
    fn now_ms(&mut self) -> u64 {
        crate::machine::now_ms()
    }
}

/// The board's "WiFi" is virtio-net's cable: up or down as QEMU's `set_link` leaves it.
impl Wifi for Board {
    fn state(&mut self) -> LinkState {
        if self.net.link_up() {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }
    fn connect(&mut self, _ssid: &str, _password: &str) -> Result<(), String> {
        Ok(())
    }
    fn disconnect(&mut self) {}
}

impl DevicePlatform for Board {
    /// The CFI flash bank when the board was told to keep a store (`store=on`); otherwise
    /// none, and the client keeps nothing across a power cut (as mqtt_as).
    fn storage(&mut self) -> Option<&mut dyn Flash> {
        self.flash.as_mut().map(|f| f as &mut dyn Flash)
    }

    fn log(&mut self, _device: &str, level: LogLevel, message: &str) {
        if !matches!(level, LogLevel::Trace | LogLevel::Debug) {
            crate::println!("client: {message}");
        }
    }
}

/// The client, on this board.
pub type Device = mqtt_device::Device<Board>;

/// Loads the component, instantiates it on `net` and `flash` and creates the client with
/// `config`. Each call into it gets [`engine::FUEL_PER_CALL`] of fuel.
pub fn start(net: Network, flash: Option<CfiFlash>, config: Config) -> Result<Device, String> {
    let engine = Engine::new(&engine::engine_config(usize::BITS)).map_err(|e| alloc::format!("engine: {e}"))?;
    // SAFETY: bytes that `build.rs` made with `Engine::precompile_component` under the
    // same engine settings (wasmtime checks the header and settings before using them),
    // in a static: they live as long as the firmware and nothing writes to them.
    let component =
        unsafe { Component::deserialize_raw(&engine, core::ptr::NonNull::from(&COMPONENT.0)) }.map_err(|e| alloc::format!("loading the component: {e}"))?;
    let program = Program::new(engine, &component, Watchdog::Fuel).map_err(|e| alloc::format!("linking: {e}"))?.with_memory_limit(MAX_GUEST_MEMORY);
    let mut device = Device::new(&program, Box::new(Board { net, flash }), config, "riscv-virt").map_err(|e| match e {
        mqtt_device::DeviceError::Client(mqtt_device::ClientError::Invalid(why)) => {
            alloc::format!("the config was refused: {}", crate::args::with_setting_names(&why))
        }
        other => alloc::format!("the config was refused: {other}"),
    })?;
    device.set_fuel_per_call(engine::FUEL_PER_CALL);
    Ok(device)
}
