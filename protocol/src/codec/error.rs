use alloc::string::String;
use core::fmt;

use crate::reason::ReasonCode;
use crate::text;
use crate::text::Hex;

/// A byte stream that is not valid MQTT. Each variant names the rule that was broken.
/// `#[non_exhaustive]`: stricter checks add variants, and callers report, not match, them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The remaining-length field runs past four bytes (spec 2.2.3).
    MalformedRemainingLength,
    /// A variable byte integer inside the packet runs past four bytes (spec 1.5.5).
    MalformedVariableInteger,
    /// The packet is larger than the negotiated maximum packet size.
    PacketTooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// Packet type 0, or AUTH (15) on an MQTT 3.1.1 connection.
    UnknownPacketType(u8),
    /// Reserved fixed-header flags or option bits have the wrong value.
    InvalidFlags {
        /// The packet it was found in.
        packet: &'static str,
        /// The flags as found.
        flags: u8,
    },
    /// A field ends past the end of the packet.
    Truncated {
        /// The field.
        field: &'static str,
    },
    /// Bytes are left after the last field of the packet.
    TrailingBytes {
        /// The packet it was found in.
        packet: &'static str,
    },
    /// A string is not well-formed UTF-8, or contains U+0000 (spec 1.5.4).
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A string or binary is longer than 65,535 bytes.
    StringTooLong,
    /// A topic name or filter is empty (spec 4.7.3).
    EmptyTopic,
    /// A PUBLISH topic contains `+` or `#` (spec 3.3.2.1).
    WildcardInTopicName,
    /// A topic filter uses a wildcard anywhere but a whole level (spec 4.7.1).
    InvalidTopicFilter,
    /// A QoS of 3 (spec 4.3).
    InvalidQos(u8),
    /// Packet identifier 0 (spec 2.2.1).
    PacketIdZero,
    /// A property identifier the spec does not define.
    UnknownProperty(u8),
    /// The property exists but may not appear in this packet (spec table 2-4).
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet it was found in.
        packet: &'static str,
    },
    /// A property other than User Property or Subscription Identifier appears twice.
    DuplicateProperty(u8),
    /// A property value out of its range (a Receive Maximum of 0, a QoS of 3 …).
    InvalidPropertyValue {
        /// The property identifier.
        id: u8,
        /// What is wrong with the value.
        why: &'static str,
    },
    /// CONNECT names a protocol other than MQTT 3.1.1 or 5.0.
    UnsupportedProtocol {
        /// The protocol level CONNECT named.
        level: u8,
    },
    /// The reason code is not one the spec allows in this packet (MQTT 5 section 2.4).
    InvalidReasonCode {
        /// The packet it was found in.
        packet: &'static str,
        /// The code as found.
        code: u8,
    },
    /// Any other rule; the text cites it.
    Protocol(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code a DISCONNECT for this error carries.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Protocol(_) | DecodeError::UnknownPacketType(_) | DecodeError::InvalidReasonCode { .. } => ReasonCode::PROTOCOL_ERROR,
            DecodeError::WildcardInTopicName => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::InvalidTopicFilter => ReasonCode::TOPIC_FILTER_INVALID,
            DecodeError::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

impl DecodeError {
    /// What was wrong, citing the rule.
    pub fn message(&self) -> String {
        match self {
            Self::MalformedRemainingLength => "malformed remaining length: more than 4 bytes, or not the shortest encoding (spec 2.2.3)".into(),
            Self::MalformedVariableInteger => "malformed variable byte integer: more than 4 bytes, or not the shortest encoding (spec 1.5.5)".into(),
            Self::PacketTooLarge { size, max } => text!("packet of ", size, " bytes is over the maximum packet size of ", max),
            Self::UnknownPacketType(t) => text!("unknown or reserved packet type ", t),
            Self::InvalidFlags { packet, flags } => text!("invalid reserved flags ", Hex(*flags), " in ", packet),
            Self::Truncated { field } => text!(field, " runs past the end of the packet"),
            Self::TrailingBytes { packet } => text!("unexpected bytes after the end of ", packet),
            Self::InvalidUtf8 { field } => text!(field, " is not valid MQTT UTF-8 (spec 1.5.4)"),
            Self::StringTooLong => "string longer than 65535 bytes".into(),
            Self::EmptyTopic => "empty topic (spec 4.7.3)".into(),
            Self::WildcardInTopicName => "wildcard in a PUBLISH topic name (spec 3.3.2.1)".into(),
            Self::InvalidTopicFilter => "wildcard not alone in its topic level (spec 4.7.1)".into(),
            Self::InvalidQos(q) => text!("invalid QoS ", q),
            Self::PacketIdZero => "packet identifier 0 (spec 2.2.1)".into(),
            Self::UnknownProperty(id) => text!("unknown property ", Hex(*id)),
            Self::PropertyNotAllowed { id, packet } => text!("property ", Hex(*id), " is not allowed in ", packet),
            Self::DuplicateProperty(id) => text!("property ", Hex(*id), " appears more than once"),
            Self::InvalidPropertyValue { id, why } => text!("property ", Hex(*id), " ", why),
            Self::UnsupportedProtocol { level } => text!("unsupported protocol name or level ", level),
            Self::InvalidReasonCode { packet, code } => text!("reason code ", Hex(*code), " is not allowed in ", packet),
            Self::Protocol(why) => (*why).into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl core::error::Error for DecodeError {}
