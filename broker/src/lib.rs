//! One MQTT 3.1.1 / 5.0 broker model, sans IO, for everything in this project that needs a
//! broker on the other end of the client: the simulator wraps it in turmoil TCP, the
//! loopback platform in memory, the property tests in their harness.
//!
//! It is driven the way the client is ([`mqtt_protocol::Client`]): the host tells it the
//! time and hands it bytes per connection ([`Broker::accept`], [`Broker::handle_input`],
//! [`Broker::handle_close`], [`Broker::handle_timeout`]) and asks what to do
//! ([`Broker::poll_output`], [`Broker::poll_timeout`]). Time is the host's milliseconds.
//!
//! It behaves like Mosquitto where the spec leaves a choice: QoS 1 duplicates are forwarded,
//! offline sessions queue QoS 1/2 messages up to `max_queued_messages` (dropping the oldest),
//! a will goes out on 1.5 × keepalive of silence, a takeover, a server DISCONNECT or a drop
//! without DISCONNECT. And it checks what the spec lets a server check of a client, reporting
//! each breach as [`Event::Violation`]: the Receive Maximum and Topic Alias Maximum it
//! announced, the Maximum Packet Size, packet ids still in use, DUP on a resend, CONNECT
//! first, well-formed packets.
//!
//! [`Knobs`] make it misbehave on purpose (lost, late or held acknowledgements, refused
//! connections, unanswered pings), for scenarios and tests of the client's resilience.

mod broker;
mod config;
mod output;
mod packets;
mod session;

pub use broker::Broker;
pub use config::{auth_answer, AckKind, Auth, BrokerConfig, Knobs};
pub use output::{ConnId, DropReason, Event, Output, Stats};
pub use session::Message;
