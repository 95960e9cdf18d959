//! MQTT 5 reason codes (spec 2.4) by name, so the session never spells a bare hex value.
//! Events and the WIT carry the plain byte (`ReasonCode::X.0`): a reason code is data the
//! broker or the application reads, and a byte is what every host can pass on.

/// An MQTT 5 reason code. Codes of 0x80 and above are failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// Success (also "granted QoS 0" in a SUBACK, "normal disconnection").
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    /// AUTH: the exchange goes on (a challenge or an answer).
    pub const CONTINUE_AUTHENTICATION: ReasonCode = ReasonCode(0x18);
    /// AUTH: the client starts a re-authentication.
    pub const RE_AUTHENTICATE: ReasonCode = ReasonCode(0x19);
    /// A failure the code says nothing more about (also 3.1.1's SUBACK failure).
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// The packet could not be parsed.
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    /// The protocol name or level is not one we speak.
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    /// The server's access control refused it (a PUBACK, PUBREC or SUBACK code).
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    /// A topic filter that is not well formed.
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8F);
    /// A topic name that is not well formed.
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    /// PUBREL for a packet id we do not hold.
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    /// More QoS 1/2 publishes in flight than the Receive Maximum we announced.
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    /// A topic alias over the maximum we announced.
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    /// Larger than the broker's Maximum Packet Size.
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    /// Over the broker's Maximum QoS.
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9B);
    /// The broker has no subscription identifiers (CONNACK said so).
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA1);

    /// 0x80 and above.
    pub const fn is_failure(self) -> bool {
        self.0 >= 0x80
    }
}
