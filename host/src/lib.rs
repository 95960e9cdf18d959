//! Embed the MQTT client component in a Rust program.
//!
//! - [`ComponentFile`]: the compiled component (the embedded one, or any file), compiled
//!   once per [`wasmtime::Engine`] and instantiated many times (`InstancePre`).
//! - [`Platform`]: what a host provides — [`Socket`], [`Clock`], [`Wifi`], and optionally
//!   flash ([`Platform::storage`], e.g. a [`FileFlash`]) so that unacknowledged publishes
//!   survive a power cut — the same imports on the simulator, a board, or your own host.
//! - [`Device`]: one running client. Every call is bounded by a [`Watchdog`] (the clock, or
//!   fuel for a deterministic simulation); a trap or an exhausted budget restarts the
//!   instance and hands it the publishes the old one had accepted but not completed (the
//!   watchdog role of the NO_NET bridge's host).
//! - [`Client`]: an async (tokio) handle shaped like mqtt_as: `connect().await`,
//!   `publish(..).await` returning when the broker acknowledged, an event stream. Run by a
//!   task of its own ([`Client::spawn`]), or by whichever task polls its [`EventLoop`]
//!   ([`Client::new`], rumqttc's shape).

mod client;
mod component;
mod config_builder;
mod epoch_ticker;
pub mod file_flash;
pub mod loopback;
mod packet_log;
mod platform;
mod resident;
pub mod settings;
pub mod source_position;
mod store_lock;
pub mod stream_sockets;

pub use client::{Client, ClientEvent, Error as ClientCallError, EventLoop, Events};
pub use component::{with_test_fault, ComponentFile, CORE_MODULE_PATH, EMBEDDED_COMPONENT, FAULTY_COMPONENT, RUSTC_CORE_MODULE_PATH};
pub use config_builder::{ConfigBuilder, ConfigValue};
pub use mqtt_device::{
    brokers, ClientError, Config, DeviceError, DownReason, Event, LinkState, LogLevel, Message, Publish, PublishProperties, Qos, SocketError, SocketState,
    Stats, SubscribeProperties, Subscription, TlsParams, Token, Watchdog, Will, MAX_GUEST_MEMORY, MAX_RESTARTS_IN_A_ROW,
};
/// One running client on a [`Platform`] (see [`mqtt_device::Device`]).
pub type Device = mqtt_device::Device<dyn Platform>;
pub use file_flash::FileFlash;
pub use mqtt_protocol::store::{Flash, Geometry, MemFlash};
pub use mqtt_protocol::with_config_keys;
/// The reason `Event::PublishFailed` carries (from [`Device`]) for a publish the store keeps
/// when the client is closed before it completed: the next client on that store sends it.
pub use mqtt_protocol::KEPT_IN_STORE;
pub use packet_log::PacketLog;
pub use platform::{Clock, Platform, Socket, Wifi};
pub use settings::{default_config, Settings, WillSetting};

/// The QoS for an MQTT level number (0, 1, 2); `None` for anything else.
pub fn qos_from_level(level: u8) -> Option<Qos> {
    match level {
        0 => Some(Qos::AtMostOnce),
        1 => Some(Qos::AtLeastOnce),
        2 => Some(Qos::ExactlyOnce),
        _ => None,
    }
}
