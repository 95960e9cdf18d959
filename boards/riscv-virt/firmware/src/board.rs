//! The component's imports on this board, and the calls that drive it.

use alloc::string::String;
use alloc::vec::Vec;

use mqtt_protocol::store::{Flash, FlashError};
use smoltcp::wire::Ipv4Address;
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

use crate::bindings::exports::mqtt_as::client::client::{ClientError, Config, GuestClient, Polled, Publish};
use crate::bindings::mqtt_as::client::{clock, log, packet_ids, socket, storage, wifi};
use crate::bindings::MqttClient;
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

pub struct Board {
    pub net: Network,
    flash: Option<CfiFlash>,
    limits: StoreLimits,
}

impl socket::Host for Board {
    fn open(&mut self, host: String, port: u16, tls: Option<socket::TlsParams>) -> Result<u32, socket::SocketError> {
        if tls.is_some() {
            crate::println!("socket: TLS is not on this board yet");
            return Err(socket::SocketError::TlsFailed);
        }
        let Ok(address) = host.parse::<Ipv4Address>() else {
            crate::println!("socket: `{host}` is not an IPv4 address, and this board has no DNS");
            return Err(socket::SocketError::DnsFailed);
        };
        self.net.open(address, port)
    }
    fn status(&mut self, handle: u32) -> Result<socket::SocketState, socket::SocketError> {
        self.net.status(handle)
    }
    fn send(&mut self, handle: u32, data: Vec<u8>) -> Result<u32, socket::SocketError> {
        self.net.send(handle, &data)
    }
    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, socket::SocketError> {
        self.net.recv(handle, max)
    }
    fn close(&mut self, handle: u32) {
        self.net.close(handle)
    }
}

impl clock::Host for Board {
    fn now_ms(&mut self) -> u64 {
        crate::machine::now_ms()
    }
    fn wall_ms(&mut self) -> Option<u64> {
        None
    }
}

/// The board's "WiFi" is virtio-net's cable: up or down as QEMU's `set_link` leaves it.
impl wifi::Host for Board {
    fn state(&mut self) -> wifi::LinkState {
        self.link()
    }
    fn connect(&mut self, _ssid: String, _password: String) -> Result<(), String> {
        Ok(())
    }
    fn disconnect(&mut self) {}
    fn rssi(&mut self) -> Option<i32> {
        None
    }
}

fn storage_error(e: FlashError) -> storage::StorageError {
    match e {
        FlashError::OutOfRange => storage::StorageError::OutOfRange,
        FlashError::Io => storage::StorageError::Io,
    }
}

/// The CFI flash bank when the board was told to keep a store (`store=on`); otherwise
/// capacity 0, and the client keeps nothing across a power cut (as mqtt_as).
impl storage::Host for Board {
    fn geometry(&mut self) -> storage::Layout {
        let g = self.flash.as_ref().map(|f| f.geometry()).unwrap_or_default();
        storage::Layout { capacity: g.capacity, sector_size: g.sector_size, write_size: g.write_size }
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, storage::StorageError> {
        self.flash.as_mut().ok_or(storage::StorageError::OutOfRange)?.read(offset, len).map_err(storage_error)
    }
    fn write(&mut self, offset: u32, data: Vec<u8>) -> Result<(), storage::StorageError> {
        self.flash.as_mut().ok_or(storage::StorageError::OutOfRange)?.write(offset, &data).map_err(storage_error)
    }
    fn erase(&mut self, sector: u32) -> Result<(), storage::StorageError> {
        self.flash.as_mut().ok_or(storage::StorageError::OutOfRange)?.erase(sector).map_err(storage_error)
    }
    fn sync(&mut self) -> Result<(), storage::StorageError> {
        self.flash.as_mut().ok_or(storage::StorageError::OutOfRange)?.sync().map_err(storage_error)
    }
}

/// Only a host that replaces a failed instance needs the ids; this one stops instead (see
/// `Client::call`).
impl packet_ids::Host for Board {
    fn sent(&mut self, _publishes: Vec<packet_ids::InFlight>) {}
    fn session(&mut self, _broker: u32) {}
}

impl log::Host for Board {
    fn log(&mut self, level: log::Level, message: String) {
        if !matches!(level, log::Level::Trace | log::Level::Debug) {
            crate::println!("client: {message}");
        }
    }
}

impl Board {
    pub fn link(&self) -> wifi::LinkState {
        if self.net.link_up() {
            wifi::LinkState::Up
        } else {
            wifi::LinkState::Down
        }
    }
}

/// One instance of the component and its client.
pub struct Client {
    store: Store<Board>,
    bindings: MqttClient,
    client: ResourceAny,
}

/// A call into the component failed: a trap, or its fuel ran out.
pub type Trap = wasmtime::Error;

impl Client {
    pub fn new(net: Network, flash: Option<CfiFlash>, config: &Config) -> Result<Client, String> {
        let engine = Engine::new(&engine::engine_config(usize::BITS)).map_err(|e| alloc::format!("engine: {e}"))?;
        // SAFETY: bytes that `build.rs` made with `Engine::precompile_component` under the
        // same engine settings (wasmtime checks the header and settings before using them),
        // in a static: they live as long as the firmware and nothing writes to them.
        let component =
            unsafe { Component::deserialize_raw(&engine, core::ptr::NonNull::from(&COMPONENT.0)) }.map_err(|e| alloc::format!("loading the component: {e}"))?;
        let mut linker = Linker::new(&engine);
        MqttClient::add_to_linker::<Board, HasSelf<Board>>(&mut linker, |b| b).map_err(|e| alloc::format!("linking: {e}"))?;
        let limits = StoreLimitsBuilder::new().memory_size(MAX_GUEST_MEMORY).build();
        let mut store = Store::new(&engine, Board { net, flash, limits });
        store.limiter(|b| &mut b.limits);
        store.set_fuel(engine::FUEL_PER_CALL).map_err(|e| alloc::format!("fuel: {e}"))?;
        let bindings = MqttClient::instantiate(&mut store, &component, &linker).map_err(|e| alloc::format!("instantiating: {e}"))?;
        store.set_fuel(engine::FUEL_PER_CALL).map_err(|e| alloc::format!("fuel: {e}"))?;
        let client =
            bindings.mqtt_as_client_client().client().call_create(&mut store, config).map_err(|e| alloc::format!("create: {e}"))?.map_err(|e| match e {
                ClientError::Invalid(why) => alloc::format!("the config was refused: {}", crate::args::with_setting_names(&why)),
                other => alloc::format!("the config was refused: {other:?}"),
            })?;
        Ok(Client { store, bindings, client })
    }

    pub fn board(&mut self) -> &mut Board {
        self.store.data_mut()
    }

    /// One call into the client with a fresh fuel budget.
    fn call<T>(&mut self, f: impl FnOnce(&GuestClient, &mut Store<Board>, ResourceAny) -> Result<T, Trap>) -> Result<T, Trap> {
        self.store.set_fuel(engine::FUEL_PER_CALL)?;
        f(&self.bindings.mqtt_as_client_client().client(), &mut self.store, self.client)
    }

    pub fn connect(&mut self) -> Result<(), String> {
        self.call(|api, store, c| api.call_connect(store, c)).map_err(|e| alloc::format!("connect: {e}"))?.map_err(|e| alloc::format!("connect: {e:?}"))
    }

    pub fn subscribe(&mut self, filter: &str) -> Result<u64, String> {
        use crate::bindings::exports::mqtt_as::client::client::{Qos, Subscription};
        let sub = Subscription { filter: filter.into(), qos: Qos::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 };
        self.call(|api, store, c| api.call_subscribe(store, c, &[sub], None))
            .map_err(|e| alloc::format!("subscribe: {e}"))?
            .map_err(|e| alloc::format!("subscribe: {e:?}"))
    }

    pub fn publish(&mut self, now: u64, p: Publish) -> Result<Result<u64, String>, Trap> {
        let mut answers = self.call(|api, store, c| api.call_publish(store, c, now, &[p]))?;
        Ok(answers.pop().map_or_else(|| Err("no answer".into()), |a| a.map_err(|e| alloc::format!("{e:?}"))))
    }

    pub fn poll(&mut self, now: u64, max_messages: u32) -> Result<Polled, Trap> {
        let link = self.store.data().link();
        self.call(|api, store, c| api.call_poll(store, c, now, link, max_messages))
    }

    pub fn stats(&mut self) -> Result<crate::bindings::exports::mqtt_as::client::client::Stats, Trap> {
        self.call(|api, store, c| api.call_stats(store, c))
    }

    pub fn disconnect(&mut self) -> Result<(), Trap> {
        self.call(|api, store, c| api.call_disconnect(store, c))
    }
}
