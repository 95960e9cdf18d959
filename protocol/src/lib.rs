//! Sans-IO MQTT 3.1.1 / 5.0 client with mqtt_as's resilience.
//!
//! No IO, no clock, no threads, no OS randomness: the [`Client`] is told the time and handed
//! bytes, and asked what to send, what IO to perform, what happened and when to come back.
//! Every host (the WebAssembly component, tests, the simulator's broker model) drives the
//! same code. See `protocol/README.md` for the design and the codec choice.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod client;
pub mod codec;
mod config;
pub mod reason;
mod rng;
pub mod store;
pub mod test_fault;
pub mod text;
mod types;

pub use client::{Client, FAST_PROBES, MAX_UNSENT, PROBE_MS};
pub use codec::{Packet, PacketId, Properties, PropertyValues, ProtocolVersion, QoS, SubscribeFilter};
pub use config::{publish_fits, Config, ConfigError, TlsParams, Will};
pub use reason::ReasonCode;
pub use rng::SplitMix64;
pub use test_fault::TestFault;
pub use types::{
    Action, ApiError, DownReason, Event, Instant, LinkState, Message, OutgoingPublish, SentId, SocketError, Stats, SubscribeProperties, Token, KEPT_IN_STORE,
    STORED_TOKEN,
};
