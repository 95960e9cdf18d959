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
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Down,
    Connecting,
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketError {
    Refused,
    Reset,
    TimedOut,
    Unreachable,
    DnsFailed,
    TlsFailed,
    Closed,
    NotPermitted,
    BadHandle,
    Other,
}

impl SocketError {
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
        host: String,
        port: u16,
        tls: Option<TlsParams>,
    },
    CloseSocket,
    JoinWifi {
        ssid: String,
        password: String,
    },
    LeaveWifi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    LinkLost,
    Socket(SocketError),
    /// The broker did not answer in time (CONNACK, ping, acknowledgement).
    Timeout,
    /// MQTT 3.1.1: `max_repubs` republications went unacknowledged.
    MaxRepubs,
    /// MQTT 5 DISCONNECT from the broker, with its reason code.
    ServerDisconnect(u8),
    /// The broker broke the protocol; the text names the rule.
    ProtocolError(String),
    Requested,
}

impl DownReason {
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
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retained: bool,
    pub dup: bool,
    /// MQTT 5 only.
    pub properties: Option<Properties>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Up {
        session_present: bool,
    },
    Down(DownReason),
    /// Boxed: a message with its MQTT 5 properties is ten times the size of any other event,
    /// and every queued event would pay for it (events wait in the client until polled).
    Message(alloc::boxed::Box<Message>),
    Published(Token),
    /// `reason` is the MQTT 5 reason code, or 0 when the publish expired, was cancelled, or
    /// the client was closed before it completed.
    PublishFailed {
        token: Token,
        reason: u8,
    },
    Subscribed {
        token: Token,
        codes: Vec<u8>,
    },
    Unsubscribed {
        token: Token,
        codes: Vec<u8>,
    },
    BrokerUp(bool),
    Link(LinkState),
    /// The first connection attempt failed: the application decides (mqtt_as raises).
    ConnectFailed(String),
    /// Incoming messages were discarded because `queue_len` was reached (total so far).
    Discarded(u64),
    /// MQTT 5 enhanced authentication: the broker's AUTH (reason 0x18: a challenge, to be
    /// answered with [`crate::Client::authenticate`] within `response_time`; 0x00: a
    /// re-authentication succeeded) or the authentication data of its CONNACK (reason 0x00).
    Auth {
        reason: u8,
        data: Vec<u8>,
    },
    Error(String),
}

/// A publish as the application asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPublish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
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
    pub user_properties: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connects: u64,
    pub reconnects: u64,
    pub republishes: u64,
    pub discards: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub inflight: u32,
    pub queued: u32,
    pub protocol_errors: u64,
}

/// Why an API call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    Invalid(String),
    QueueFull,
    Closed,
}

impl ApiError {
    pub fn message(&self) -> String {
        match self {
            ApiError::Invalid(why) => text!("invalid argument: ", why),
            ApiError::QueueFull => "outgoing queue full".into(),
            ApiError::Closed => "client closed by disconnect()".into(),
        }
    }
}

impl core::fmt::Display for ApiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message())
    }
}
