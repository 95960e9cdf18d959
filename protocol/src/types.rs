//! The vocabulary between the state machine and its driver: time, link and socket states,
//! the actions it asks for and the events it reports.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Add;

use crate::codec::{Properties, QoS};
use crate::config::TlsParams;
use crate::text;
use crate::text::Hex;

/// A point on the driver's monotonic clock, in milliseconds. The core never reads a clock:
/// every input carries one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The instant `ms` milliseconds after the driver's clock origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }
    /// Milliseconds since the driver's clock origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Instant {
    type Output = Instant;
    fn add(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms))
    }
}

/// Identifies an API request (publish, subscribe, unsubscribe) in the events that complete it.
pub type Token = u64;

/// The bit that marks the token of a publish kept in the store: `STORED_TOKEN | key`, the
/// same in every life of the client (it names the record, not the call). A client restarted
/// on the same flash reports the publishes it recovered under these tokens, so a host that
/// kept the old ones can tell what came back from the store from what it must hand over
/// again. Other tokens count up from 1 and never reach this bit.
pub const STORED_TOKEN: Token = 1 << 63;

/// [`Event::PublishFailed`]'s reason for a QoS 1/2 publish still unacknowledged when the
/// application called `disconnect`, whose store record stays open: not failed for good, the
/// next client started on that store sends it, under the same token. 0x01 is no MQTT reason
/// code a publish can fail with (failures are 0x80 and above), so no broker's answer reads
/// as this; a code rather than an event of its own because it costs the component a few
/// bytes instead of a WIT variant's lifting and lowering.
pub const KEPT_IN_STORE: u8 = 1;

/// The network link (WiFi, or an interface) as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No link: connection attempts wait for it.
    Down,
    /// Joining (WiFi association, DHCP): not usable yet.
    Connecting,
    /// Usable.
    Up,
}

/// Why a socket failed, as the driver reports it (the WIT `socket-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketError {
    /// Nothing listening.
    Refused,
    /// Reset by the peer or the network.
    Reset,
    /// Opening or using the connection took too long.
    TimedOut,
    /// No route (link down, network unreachable).
    Unreachable,
    /// The host name did not resolve.
    DnsFailed,
    /// The TLS handshake or the certificate check failed.
    TlsFailed,
    /// Closed (orderly shutdown by the peer, or locally).
    Closed,
    /// The driver does not allow this destination.
    NotPermitted,
    /// The handle is unknown to the driver.
    BadHandle,
    /// Anything else (the driver logs the detail).
    Other,
}

impl SocketError {
    /// A short lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            SocketError::Refused => "refused",
            SocketError::Reset => "reset",
            SocketError::TimedOut => "timed out",
            SocketError::Unreachable => "unreachable",
            SocketError::DnsFailed => "DNS failed",
            SocketError::TlsFailed => "TLS failed",
            SocketError::Closed => "closed",
            SocketError::NotPermitted => "not permitted",
            SocketError::BadHandle => "bad handle",
            SocketError::Other => "other",
        }
    }
}

/// IO the driver must perform for the state machine. Drain [`crate::Client::poll_transmit`]
/// *before* applying actions: bytes queued before a `CloseSocket` belong to the old socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP (optionally TLS) connection; report `handle_socket_open` or
    /// `handle_socket_error`. Any previous socket has been closed by a `CloseSocket` first.
    OpenSocket {
        /// Broker host name or address (`Config::server`).
        host: String,
        /// Broker port (`Config::port()`).
        port: u16,
        /// TLS parameters when `Config::ssl` is set.
        tls: Option<TlsParams>,
    },
    /// Close the current socket; its bytes not yet sent are dropped.
    CloseSocket,
    /// Join this WiFi network (only when `Config::ssid` is set: the client manages the link).
    JoinWifi {
        /// Network name.
        ssid: String,
        /// Its password (empty for an open network).
        password: String,
    },
    /// Leave the WiFi network (after `disconnect`, when the client manages the link).
    LeaveWifi,
}

/// Why the connection went down ([`Event::Down`]) or the first attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The link went down.
    LinkLost,
    /// The socket failed.
    Socket(SocketError),
    /// The broker did not answer in time (CONNACK, ping, acknowledgement).
    Timeout,
    /// MQTT 3.1.1: `max_repubs` republications went unacknowledged.
    MaxRepubs,
    /// MQTT 5 DISCONNECT from the broker, with its reason code.
    ServerDisconnect(u8),
    /// The broker broke the protocol; the text names the rule.
    ProtocolError(String),
    /// The application called `disconnect`.
    Requested,
}

impl DownReason {
    /// A sentence a person can act on.
    pub fn message(&self) -> String {
        match self {
            DownReason::LinkLost => "link lost".into(),
            DownReason::Socket(e) => text!("socket error: ", e.name()),
            DownReason::Timeout => "broker did not answer within response_time".into(),
            DownReason::MaxRepubs => "no acknowledgement after max_repubs republications".into(),
            DownReason::ServerDisconnect(c) => text!("broker sent DISCONNECT with reason ", Hex(*c)),
            DownReason::ProtocolError(e) => text!("protocol error: ", e),
            DownReason::Requested => "disconnect requested".into(),
        }
    }
}

impl core::fmt::Display for DownReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message())
    }
}

/// An application message received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to (a topic alias already resolved).
    pub topic: String,
    /// The application payload.
    pub payload: Vec<u8>,
    /// The QoS it was delivered with (the lower of the publisher's and the subscription's).
    pub qos: QoS,
    /// The broker's retained message for the topic, sent on subscribing.
    pub retained: bool,
    /// The broker says it may have sent this before.
    pub dup: bool,
    /// MQTT 5 only.
    pub properties: Option<Properties>,
    /// What it owes the broker while it waits in the client's queue (nothing once taken).
    pub(crate) owed: crate::client::Owed,
}

/// What happened, in the order it happened: drained with [`crate::Client::poll_event`].
/// Every API token is completed by exactly one `Published`, `PublishFailed`, `Subscribed`
/// or `Unsubscribed` (except a publish the application cancelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Connected (CONNACK accepted).
    Up {
        /// The broker kept our session (unclean session resumed).
        session_present: bool,
    },
    /// The connection went down; the client reconnects by itself (unless `Requested`).
    Down(DownReason),
    /// Not boxed: with the MQTT 5 properties out of line a message is about the size of
    /// the largest other event (32 bytes in the component), and a box was an allocation per
    /// message.
    Message(Message),
    /// A publish completed: QoS 0 handed to the socket, QoS 1 PUBACK, QoS 2 PUBCOMP.
    Published(Token),
    /// `reason` is the MQTT 5 reason code, or 0 when the publish expired, was cancelled, or
    /// the client was closed before it completed ([`KEPT_IN_STORE`] when its store keeps it
    /// for the next client).
    PublishFailed {
        /// The token `publish` returned.
        token: Token,
        /// Why (see above).
        reason: u8,
    },
    /// SUBACK, or the request failed: one granted QoS or reason code per filter (0x80 for
    /// each when the client was closed first; 0xA1 when the broker has no subscription
    /// identifiers and the request named one).
    Subscribed {
        /// The token `subscribe` returned.
        token: Token,
        /// One code per filter, in the request's order.
        codes: Vec<u8>,
    },
    /// UNSUBACK (MQTT 5 reason codes per filter; empty under 3.1.1), or 0x80 per filter
    /// when the client was closed first.
    Unsubscribed {
        /// The token `unsubscribe` returned.
        token: Token,
        /// One code per filter under MQTT 5.
        codes: Vec<u8>,
    },
    /// The answer to `broker_up`: whether the broker answered the ping in time.
    BrokerUp(bool),
    /// The link changed.
    Link(LinkState),
    /// The first connection attempt failed: the application decides (mqtt_as raises).
    ConnectFailed(String),
    /// Incoming messages were discarded because `queue_len` was reached (total so far).
    Discarded(u64),
    /// MQTT 5 enhanced authentication: the broker's AUTH (reason 0x18: a challenge, to be
    /// answered with [`crate::Client::authenticate`] within `response_time`; 0x00: a
    /// re-authentication succeeded) or the authentication data of its CONNACK (reason 0x00).
    Auth {
        /// 0x18 (continue) or 0x00 (success).
        reason: u8,
        /// The broker's authentication data.
        data: Vec<u8>,
    },
    /// Something the application should hear about that needs no action from it (a
    /// refused reconnect, the broker's reason string).
    Error(String),
}

/// A publish's place in the window, as [`crate::Client::take_sent_ids`] reports it and
/// [`crate::Client::resume_publish`] takes it back: the packet id it went out under, and
/// (QoS 2) whether the broker answered PUBREC, so that PUBREL is what goes out again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentId {
    /// The publish's token (from `publish`, or `resume_publish` in a later life).
    pub token: Token,
    /// The packet id it went out under.
    pub packet_id: u16,
    /// QoS 2: PUBREC came; PUBREL is what goes out next.
    pub released: bool,
}

/// A publish as the application asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPublish {
    /// The topic name (no wildcards).
    pub topic: String,
    /// The application payload.
    pub payload: Vec<u8>,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Ask the broker to keep it as the topic's retained message.
    pub retain: bool,
    /// MQTT 5 properties (ignored under 3.1.1).
    pub properties: Properties,
}

/// MQTT 5 properties of a SUBSCRIBE (ignored under 3.1.1). Kept with the subscription, so
/// a re-subscription after a clean reconnect carries them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Reported back with every message this subscription matches (1..=268,435,455).
    pub subscription_id: Option<u32>,
    /// User properties sent with the SUBSCRIBE.
    pub user_properties: Vec<(String, String)>,
}

/// Counters since the client was made ([`crate::Client::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted (CONNACK 0).
    pub connects: u64,
    /// Of those, the ones after the first.
    pub reconnects: u64,
    /// PUBLISH packets sent again after a missing acknowledgement (MQTT 3.1.1).
    pub republishes: u64,
    /// Incoming messages discarded because `queue_len` waited (only with `backpressure` off).
    pub discards: u64,
    /// Bytes received from and sent to the broker.
    pub bytes_in: u64,
    /// Bytes handed to the socket.
    pub bytes_out: u64,
    /// QoS 1/2 exchanges (and subscription requests) waiting for the broker now.
    pub inflight: u32,
    /// Requests queued and not yet sent now.
    pub queued: u32,
    /// Connections closed because the broker broke the protocol.
    pub protocol_errors: u64,
    /// Publishes refused because the store was full.
    pub store_full: u64,
    /// The broker in use now: 0 is `server`, then `servers` in order.
    pub broker: u32,
}

/// Why an API call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A bad argument; the text says which and why.
    Invalid(String),
    /// `max_queued` requests are already waiting.
    QueueFull,
    /// `disconnect` was called: the client takes no more requests.
    Closed,
    /// The store has no room for another message until some are acknowledged.
    StoreFull,
    /// The storage failed; the text says how.
    Storage(String),
}

impl ApiError {
    /// A sentence a person can act on.
    pub fn message(&self) -> String {
        match self {
            ApiError::Invalid(why) => text!("invalid argument: ", why),
            ApiError::QueueFull => "outgoing queue full".into(),
            ApiError::Closed => "client closed by disconnect()".into(),
            ApiError::StoreFull => "store full: no room until some publishes are acknowledged".into(),
            ApiError::Storage(why) => text!("storage: ", why),
        }
    }
}

impl core::fmt::Display for ApiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message())
    }
}

impl core::error::Error for ApiError {}
