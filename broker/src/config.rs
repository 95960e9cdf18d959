//! What the broker announces and enforces, and the knobs a test turns to make it misbehave.

use std::collections::{BTreeMap, BTreeSet};

/// The broker's settings: what it announces in CONNACK (MQTT 5) and holds its clients to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Receive Maximum it announces (MQTT 5): more unacknowledged QoS 1/2 publishes than this
    /// from a client is a violation. It is also the broker's own QoS 1/2 window to each client.
    pub receive_maximum: u16,
    /// Topic Alias Maximum it announces (MQTT 5); 0 allows no alias.
    pub topic_alias_maximum: u16,
    /// Maximum Packet Size it announces (MQTT 5); a larger packet from a client is a
    /// violation. `None` announces nothing and accepts up to 1 MiB.
    pub maximum_packet_size: Option<u32>,
    /// Server Keep Alive it announces (MQTT 5), replacing the client's own; `None` keeps the
    /// client's.
    pub server_keep_alive: Option<u16>,
    /// QoS 1/2 messages queued per session before the oldest is dropped (Mosquitto's
    /// `max_queued_messages`).
    pub max_queued_messages: usize,
    /// Enhanced authentication (MQTT 5 section 4.12) it demands of every client but those in
    /// `exempt`.
    pub auth: Option<Auth>,
    /// Topic filters its access control denies, as a Mosquitto ACL would: a PUBLISH to a
    /// matching topic is not routed and, under MQTT 5, acknowledged with 0x87 (Not
    /// authorized; 3.1.1 has no code for it, so the broker acknowledges and drops it, as
    /// Mosquitto does); a SUBSCRIBE to a filter a deny entry matches (or equals) is refused in
    /// its SUBACK (0x87; 0x80 under 3.1.1).
    pub deny: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            receive_maximum: 20,
            topic_alias_maximum: 0,
            maximum_packet_size: None,
            server_keep_alive: None,
            max_queued_messages: 1000,
            auth: None,
            deny: Vec::new(),
        }
    }
}

/// A challenge–response mechanism standing in for SCRAM or Kerberos: the answer is the
/// challenge XORed with the shared secret ([`auth_answer`]). It models the exchange (a round
/// trip the application answers, on every reconnect), not the cryptography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub method: String,
    pub secret: Vec<u8>,
    /// Client ids let in without the exchange (a test's own instruments).
    pub exempt: BTreeSet<String>,
}

impl BrokerConfig {
    /// Whether the access control denies `topic` (a topic name or a subscription filter).
    pub fn denies(&self, topic: &str) -> bool {
        self.deny.iter().any(|d| d == topic || mqtt_protocol::codec::topic::topic_matches(d, topic))
    }
}

/// The answer to a challenge of the [`Auth`] mechanism.
pub fn auth_answer(challenge: &[u8], secret: &[u8]) -> Vec<u8> {
    challenge.iter().zip(secret.iter().cycle()).map(|(c, s)| c ^ s).collect()
}

/// The packets the broker answers with, as the knobs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize), serde(rename_all = "lowercase"))]
pub enum AckKind {
    Connack,
    Puback,
    Pubrec,
    Pubcomp,
    Suback,
    Unsuback,
    Pingresp,
}

/// Misbehaviour on demand. Each count is used up one packet at a time.
#[derive(Debug, Default, Clone)]
pub struct Knobs {
    /// The next N of a kind are never sent (lost, as far as the client can tell).
    pub drop: BTreeMap<AckKind, u32>,
    /// The next N of a kind are sent this many ms late: (count, ms). A late CONNACK holds the
    /// whole connection back; any other late packet is overtaken by later ones, as a broker
    /// slow to persist would do.
    pub delay: BTreeMap<AckKind, (u32, u64)>,
    /// Kinds held back until [`crate::Broker::release_held`] (a stalled broker).
    pub hold: BTreeSet<AckKind>,
    /// Refuse every CONNECT with this CONNACK code.
    pub refuse_code: Option<u8>,
    /// Leave PINGREQ unanswered.
    pub stop_pings: bool,
}

impl Knobs {
    pub(crate) fn take_drop(&mut self, kind: AckKind) -> bool {
        take_one(self.drop.get_mut(&kind))
    }

    pub(crate) fn take_delay(&mut self, kind: AckKind) -> Option<u64> {
        let (n, ms) = self.delay.get_mut(&kind)?;
        take_one(Some(n)).then_some(*ms)
    }
}

fn take_one(n: Option<&mut u32>) -> bool {
    match n {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}
