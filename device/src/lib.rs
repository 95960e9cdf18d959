//! One running client component, shared by every Rust host of it: the Rust host library
//! (`mqtt-host`, which adds the async `Client` on top) and the bare-metal boards.
//!
//! - [`DevicePlatform`]: what the host provides ([`Socket`], [`Clock`], [`Wifi`], flash, a
//!   place for log lines), called through the component's imports.
//! - [`Program`]: the component linked against those imports, ready to instantiate.
//! - [`Device`]: one instance and its client. Every call is bounded by a [`Watchdog`]; a
//!   trap or an exhausted budget restarts the instance and gives the fresh one what the old
//!   one had accepted (the watchdog role of mqtt_as's NO_NET bridge host).
//!
//! `no_std` with `alloc`: it needs wasmtime's runtime and nothing of an operating system.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod bindings;
mod device;
mod engine_config;
mod platform;
mod program;
mod token_map;

pub use bindings::exports::mqtt_as::client::client::{
    ClientError, Config, DownReason, Event, GuestClient, Message, Polled, PublishProperties, Qos, Stats, SubscribeProperties, Subscription, Will,
};
pub use bindings::mqtt_as::client::log::Level as LogLevel;
pub use bindings::mqtt_as::client::socket::{SocketError, SocketState, TlsParams};
pub use bindings::mqtt_as::client::wifi::LinkState;
pub use bindings::mqtt_as::client::{packet_ids, storage};
pub use bindings::{MqttClient, MqttClientPre};
pub use device::{brokers, Device, DeviceError, HostState, Publish, Token, CALL_TICKS, DEFAULT_FUEL_PER_CALL, MAX_GUEST_MEMORY, MAX_RESTARTS_IN_A_ROW};
pub use engine_config::{engine_config, Watchdog};
pub use platform::{Clock, DevicePlatform, Socket, Wifi};
pub use program::Program;
pub use token_map::TokenMap;
