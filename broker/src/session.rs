//! A client's session on the broker: what it subscribed to, what waits for it, what is in
//! flight each way. It outlives connections (and, with persistence, crashes).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mqtt_protocol::codec::Publish;
use mqtt_protocol::{Packet, PacketId, PropertyValues, QoS};

use crate::ConnId;

/// An application message inside the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// When it expires (host ms), from MQTT 5's Message Expiry Interval.
    pub expires_at: Option<u64>,
}

impl Message {
    /// The PUBLISH that carries it, with the expiry that is left at `now`.
    pub(crate) fn packet(&self, id: Option<PacketId>, dup: bool, now: u64) -> Packet {
        let properties =
            PropertyValues { message_expiry_interval: self.expires_at.map(|t| (t.saturating_sub(now) / 1000).max(1) as u32), ..Default::default() }.into();
        Packet::Publish(Publish {
            dup: dup && id.is_some(),
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            packet_id: id,
            payload: self.payload.clone(),
            properties,
        })
    }
}

/// What a SUBSCRIBE asked for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub qos: QoS,
    /// MQTT 5 No Local: never send the session its own messages on this filter.
    pub no_local: bool,
    /// MQTT 5 Retain As Published: forward the retain flag as the publisher set it.
    pub retain_as_published: bool,
}

#[derive(Debug)]
pub(crate) struct Session {
    /// Session Expiry Interval in ms; `None` never expires (3.1.1 `clean = false`).
    pub expiry_ms: Option<u64>,
    pub subscriptions: BTreeMap<String, Subscription>,
    /// To the client: sent, not yet acknowledged, by packet id; `true` once PUBREC came.
    pub inflight: BTreeMap<u16, (Message, bool)>,
    /// To the client: waiting for room in the window.
    pub queue: VecDeque<Message>,
    next_id: u16,
    /// From the client: QoS 2 ids between PUBLISH and PUBREL (exactly once).
    pub incoming_qos2: BTreeSet<u16>,
    /// From the client: QoS 1/2 publishes whose PUBACK/PUBREC was dropped, with their
    /// payload. The client cannot have seen the acknowledgement, so the id is still its
    /// message's: the next PUBLISH with it must be that message again, with DUP
    /// (MQTT-3.3.1-1, MQTT-2.2.1-3).
    pub owed: BTreeMap<u16, Vec<u8>>,
    pub connection: Option<ConnId>,
    pub disconnected_at: Option<u64>,
    /// How many QoS 1/2 messages may be in flight to the client.
    pub window: usize,
}

impl Session {
    pub fn new(expiry_ms: Option<u64>, window: usize) -> Session {
        Session {
            expiry_ms,
            subscriptions: BTreeMap::new(),
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            next_id: 0,
            incoming_qos2: BTreeSet::new(),
            owed: BTreeMap::new(),
            connection: None,
            disconnected_at: None,
            window,
        }
    }

    pub fn expired(&self, now: u64) -> bool {
        match (self.expiry_ms, self.disconnected_at) {
            (Some(e), Some(at)) => now.saturating_sub(at) > e,
            _ => false,
        }
    }

    /// The highest QoS of the subscriptions matching `topic`, if any does, and whether one of
    /// them keeps the retain flag (Retain As Published). A subscription with No Local (MQTT 5)
    /// does not match the session's own messages.
    pub fn granted(&self, topic: &str, own: bool) -> Option<(QoS, bool)> {
        let matching: Vec<&Subscription> =
            self.subscriptions.iter().filter(|(f, s)| !(own && s.no_local) && mqtt_protocol::codec::topic::topic_matches(f, topic)).map(|(_, s)| s).collect();
        let qos = matching.iter().map(|s| s.qos).max()?;
        Some((qos, matching.iter().any(|s| s.retain_as_published)))
    }

    /// A packet id not in flight to the client.
    pub fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_id) {
                return PacketId::new(self.next_id).expect("never zero");
            }
        }
    }

    /// Everything still owed to the client: in flight, then queued.
    pub fn undelivered(&self) -> impl Iterator<Item = &Message> {
        self.inflight.values().map(|(m, _)| m).chain(self.queue.iter())
    }
}
