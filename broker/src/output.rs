//! What the broker asks of its host: bytes to send, connections to close, and what happened.

use std::collections::BTreeMap;

use mqtt_protocol::QoS;

use crate::Message;

/// One connection, as the host's [`crate::Broker::accept`] named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// The next thing the host must do, from [`crate::Broker::poll_output`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the connection.
    Transmit { conn: ConnId, bytes: Vec<u8> },
    /// The broker is done with the connection: close it once the bytes before are written.
    Close { conn: ConnId },
    /// Something the host may record.
    Event(Event),
}

/// What the broker did or saw, for the host's log and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected {
        client: String,
        clean: bool,
        session_present: bool,
    },
    /// A CONNECT turned away, with the CONNACK code and why.
    Refused {
        client: String,
        code: u8,
        why: &'static str,
    },
    /// Enhanced authentication: a challenge went out.
    AuthChallenged {
        client: String,
    },
    Authenticated {
        client: String,
    },
    Subscribed {
        client: String,
        filters: Vec<String>,
    },
    Unsubscribed {
        client: String,
        filters: Vec<String>,
    },
    /// A PUBLISH as a client sent it (duplicates included), its topic alias resolved.
    Received {
        client: String,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        dup: bool,
    },
    /// A message the broker accepted (from a client, [`crate::Broker::publish`] or a will),
    /// and the sessions it went to.
    Routed {
        message: Message,
        to: Vec<String>,
    },
    /// A message the broker let go of before the client had it.
    Dropped {
        client: String,
        message: Message,
        why: DropReason,
    },
    /// An acknowledgement the knobs dropped or sent late.
    AckDropped {
        packet: &'static str,
    },
    AckDelayed {
        packet: &'static str,
        ms: u64,
    },
    /// 1.5 × keepalive passed without a packet from the client.
    KeepaliveExpired {
        client: String,
    },
    /// A will went out.
    WillPublished {
        client: String,
        topic: String,
    },
    /// A 3.1.1 client sent a packet over `maximum_packet_size`, which 3.1.1 cannot announce:
    /// the connection is dropped, and no rule was broken.
    Oversize {
        client: String,
        size: u64,
        max: u32,
    },
    /// The client broke a rule the spec lets a server check. Always a failed run.
    Violation {
        client: String,
        what: String,
    },
}

/// Why the broker let a message go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue passed `max_queued_messages`; the oldest went.
    QueueFull,
    /// Its message expiry passed before it could be sent.
    Expired,
    /// The broker crashed and did not keep its sessions.
    Crashed,
    /// The session ended (a clean start, its expiry, or a clean session's disconnect).
    SessionEnded,
    /// The access control (`BrokerConfig::deny`) refused the publish; `client` is the
    /// publisher.
    Denied,
}

impl DropReason {
    pub fn describe(self) -> &'static str {
        match self {
            DropReason::QueueFull => "the session's queue overflowed (max_queued_messages)",
            DropReason::Expired => "expired (message expiry) before it was sent",
            DropReason::Crashed => "broker restarted without persistence",
            DropReason::SessionEnded => "the session ended (clean start or expiry)",
            DropReason::Denied => "denied by the broker's access control",
        }
    }
}

/// Running totals; they survive crashes.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Per client id: the most QoS 1/2 messages the broker had in flight to it at once.
    pub max_inflight: BTreeMap<String, u64>,
    /// Messages whose expiry passed in a queue.
    pub expired: u64,
    pub violations: u64,
}
