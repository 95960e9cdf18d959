//! The MQTT 3.1.1 and 5.0 wire format: every control packet, both directions.
//!
//! [`Decoder`] takes a byte stream split anywhere and yields whole packets. It checks the
//! announced size against the maximum packet size *before* buffering the body, so a peer
//! cannot make it allocate more than that bound. Errors name the rule that was broken.

mod error;
mod properties;
pub mod topic;

use alloc::string::String;
use alloc::vec::Vec;

pub use error::DecodeError;
pub use properties::{Properties, PropertyContext, PropertyValues};

/// The protocol level spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Quality of service: how hard the sender tries (spec 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// 0: sent once, no acknowledgement.
    AtMostOnce = 0,
    /// 1: acknowledged (PUBACK); may arrive twice.
    AtLeastOnce = 1,
    /// 2: a four-way exchange; arrives once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS of a level number; 3 and up are malformed.
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQos(v)),
        }
    }
}

/// A non-zero MQTT packet identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(u16);

impl PacketId {
    /// `None` for 0, which is not a packet id.
    pub fn new(v: u16) -> Option<Self> {
        (v != 0).then_some(PacketId(v))
    }
    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// The will inside CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Where the broker publishes it.
    pub topic: String,
    /// What it publishes.
    pub payload: Vec<u8>,
    /// At what QoS.
    pub qos: QoS,
    /// Retained.
    pub retain: bool,
    /// MQTT 5 will properties (delay, expiry …).
    pub properties: Properties,
}

/// CONNECT: the client opens a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 3.1.1 or 5.0.
    pub protocol: ProtocolVersion,
    /// Start a new session (Clean Session in 3.1.1).
    pub clean_start: bool,
    /// Keepalive, seconds (0 disables).
    pub keep_alive: u16,
    /// Client identifier; empty asks the broker for one.
    pub client_id: String,
    /// The last will.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
    /// MQTT 5 properties.
    pub properties: Properties,
}

/// CONNACK: the broker's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// The broker resumed a session.
    pub session_present: bool,
    /// 3.1.1 return code or 5.0 reason code; 0 is success.
    pub code: u8,
    /// MQTT 5 properties (limits, assigned id …).
    pub properties: Properties,
}

/// PUBLISH: an application message, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// A resend of an earlier attempt (DUP).
    pub dup: bool,
    /// Its QoS.
    pub qos: QoS,
    /// Retain it (to the broker) / it was retained (from the broker).
    pub retain: bool,
    /// Empty only with a topic alias (MQTT 5).
    pub topic: String,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// The application payload.
    pub payload: Vec<u8>,
    /// MQTT 5 properties.
    pub properties: Properties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// The PUBLISH it answers.
    pub packet_id: PacketId,
    /// MQTT 5 reason code (0: success).
    pub reason: u8,
    /// MQTT 5 properties.
    pub properties: Properties,
}

impl PubResponse {
    /// Success (reason 0, no properties): how the client answers, and releases.
    pub fn success(packet_id: PacketId) -> PubResponse {
        PubResponse { packet_id, reason: 0, properties: Properties::default() }
    }
}

/// One filter of a SUBSCRIBE, with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter.
    pub filter: String,
    /// The highest QoS wanted.
    pub qos: QoS,
    /// MQTT 5 No Local: not the client's own messages.
    pub no_local: bool,
    /// MQTT 5 Retain As Published: keep the retain flag as sent.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling: 0 send retained, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

/// SUBSCRIBE: filters the client wants messages for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Its packet id.
    pub packet_id: PacketId,
    /// The filters, in order.
    pub filters: Vec<SubscribeFilter>,
    /// MQTT 5 properties (subscription identifier …).
    pub properties: Properties,
}

/// SUBACK and UNSUBACK: one code per filter (UNSUBACK under 3.1.1 has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The request it answers.
    pub packet_id: PacketId,
    /// Granted QoS or failure code, per filter.
    pub codes: Vec<u8>,
    /// MQTT 5 properties.
    pub properties: Properties,
}

/// UNSUBSCRIBE: filters the client no longer wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Its packet id.
    pub packet_id: PacketId,
    /// The filters.
    pub filters: Vec<String>,
    /// MQTT 5 properties.
    pub properties: Properties,
}

/// DISCONNECT (and AUTH, which has the same shape): a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// MQTT 5 reason code (0: normal).
    pub reason: u8,
    /// MQTT 5 properties.
    pub properties: Properties,
}

/// Every MQTT control packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a packet lives briefly on the stack between the codec and the session; boxing CONNECT would cost the component code and an allocation"
)]
pub enum Packet {
    /// CONNECT.
    Connect(Connect),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK: QoS 1 delivered.
    PubAck(PubResponse),
    /// PUBREC: QoS 2 received.
    PubRec(PubResponse),
    /// PUBREL: QoS 2 released.
    PubRel(PubResponse),
    /// PUBCOMP: QoS 2 complete.
    PubComp(PubResponse),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(SubAck),
    /// PINGREQ: are you there?
    PingReq,
    /// PINGRESP: yes.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// MQTT 5 AUTH (reason code and properties).
    Auth(Disconnect),
}

impl Packet {
    /// The packet type's name, as the spec writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// Largest remaining length a 4-byte variable integer can announce (spec 1.5.5).
pub const MAX_REMAINING_LENGTH: u32 = 268_435_455;

// ---------------------------------------------------------------------------------------
// Reading

/// A bounds-checked cursor over one packet's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.take(n, field)?))
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8(field)?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                // The shortest encoding only (spec 1.5.5): a final 0 after a continuation
                // byte is a longer spelling of a smaller number.
                if b == 0 && i > 0 {
                    return Err(DecodeError::MalformedVariableInteger);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVariableInteger)
    }
    fn binary(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let n = self.u16(field)? as usize;
        Ok(self.take(n, field)?.to_vec())
    }
    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let s = self.utf8(field)?;
        // Spec 1.5.4: U+0000 is not allowed in UTF-8 strings.
        if s.contains('\0') {
            return Err(DecodeError::InvalidUtf8 { field });
        }
        Ok(String::from(s))
    }
    /// A UTF-8 string whose caller checks it for U+0000 itself: a PUBLISH's topic, which
    /// the topic-name rule scans for NUL and wildcards in one pass (a second scan here was
    /// about 200 instructions a message in the component, callgrind).
    fn utf8(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.u16(field)? as usize;
        core::str::from_utf8(self.take(n, field)?).map_err(|_| DecodeError::InvalidUtf8 { field })
    }
    fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16("packet identifier")?).ok_or(DecodeError::PacketIdZero)
    }
    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }
    fn finish(&self, packet: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { packet })
        }
    }
}

/// Reads a fixed header from the start of `buf`: `Ok(None)` when more bytes are needed,
/// else (first byte, remaining length, header length).
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<(u8, u32, usize)>, DecodeError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut len = 0u32;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        len |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(DecodeError::MalformedRemainingLength);
            }
            return Ok(Some((first, len, 2 + i)));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

/// Reason codes each MQTT 5 packet may carry (spec 2.4 and the packets' reason code tables).
fn check_reason(packet: &'static str, code: u8) -> Result<(), DecodeError> {
    let allowed: &[u8] = match packet {
        "CONNACK" => &[0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F],
        "PUBACK" | "PUBREC" => &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
        "PUBREL" | "PUBCOMP" => &[0x00, 0x92],
        "SUBACK" => &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2],
        "UNSUBACK" => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
        "DISCONNECT" => &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
            0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
        ],
        "AUTH" => &[0x00, 0x18, 0x19],
        _ => return Ok(()),
    };
    if allowed.contains(&code) {
        Ok(())
    } else {
        Err(DecodeError::InvalidReasonCode { packet, code })
    }
}

fn expect_flags(first: u8, want: u8, packet: &'static str) -> Result<(), DecodeError> {
    if first & 0x0F != want {
        return Err(DecodeError::InvalidFlags { packet, flags: first & 0x0F });
    }
    Ok(())
}

fn props(r: &mut Reader<'_>, v: ProtocolVersion, ctx: PropertyContext) -> Result<Properties, DecodeError> {
    if v == ProtocolVersion::V5 {
        Properties::decode(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// A PUBLISH body (the store reads its records with this too).
pub(crate) fn decode_publish(first: u8, r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Publish, DecodeError> {
    let dup = first & 0x08 != 0;
    let qos = QoS::from_u8((first >> 1) & 0x03)?;
    let retain = first & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Protocol("DUP set on a QoS 0 PUBLISH (spec 3.3.1.1)"));
    }
    let topic = r.utf8("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce { None } else { Some(r.packet_id()?) };
    let properties = props(r, version, PropertyContext::Publish)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopic);
    }
    // NUL included (an empty topic, named by its alias, has none).
    if !topic.is_empty() {
        topic::validate_topic_name(topic)?;
    }
    let payload = r.rest().to_vec();
    Ok(Publish { dup, qos, retain, topic: String::from(topic), packet_id, payload, properties })
}

/// Decodes one packet body. `version` is the connection's protocol; a CONNECT carries its
/// own and ignores it.
pub fn decode_packet(first: u8, body: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body);
    let v5 = version == ProtocolVersion::V5;
    let packet = match first >> 4 {
        // Packets only a client sends are decoded only where a broker is modelled: the
        // client component never needs them, and leaving them out keeps it small.
        #[cfg(any(test, feature = "broker"))]
        1 => {
            expect_flags(first, 0, "CONNECT")?;
            Packet::Connect(decode_connect(&mut r)?)
        }
        2 => {
            expect_flags(first, 0, "CONNACK")?;
            let flags = r.u8("connect acknowledge flags")?;
            if flags & 0xFE != 0 {
                return Err(DecodeError::InvalidFlags { packet: "CONNACK", flags });
            }
            let code = r.u8("connect reason code")?;
            if v5 {
                check_reason("CONNACK", code)?;
            } else if code > 5 {
                // Found by the differential fuzz target against mqtt-proto, which refuses it.
                return Err(DecodeError::Protocol("CONNACK return code over 5 is reserved (spec 3.2.2.3)"));
            }
            let properties = props(&mut r, version, PropertyContext::ConnAck)?;
            if flags & 1 == 1 && code != 0 {
                return Err(DecodeError::Protocol("CONNACK with session present must have code 0"));
            }
            Packet::ConnAck(ConnAck { session_present: flags & 1 == 1, code, properties })
        }
        3 => Packet::Publish(decode_publish(first, &mut r, version)?),
        n @ 4..=7 => {
            let (name, flags) = match n {
                4 => ("PUBACK", 0),
                5 => ("PUBREC", 0),
                6 => ("PUBREL", 2),
                _ => ("PUBCOMP", 0),
            };
            expect_flags(first, flags, name)?;
            let packet_id = r.packet_id()?;
            let (reason, properties) = if v5 && !r.is_empty() {
                let reason = r.u8("reason code")?;
                check_reason(name, reason)?;
                let p = if r.is_empty() { Properties::default() } else { Properties::decode(&mut r, PropertyContext::PubResponse)? };
                (reason, p)
            } else {
                (0, Properties::default())
            };
            let resp = PubResponse { packet_id, reason, properties };
            match n {
                4 => Packet::PubAck(resp),
                5 => Packet::PubRec(resp),
                6 => Packet::PubRel(resp),
                _ => Packet::PubComp(resp),
            }
        }
        #[cfg(any(test, feature = "broker"))]
        8 => {
            expect_flags(first, 2, "SUBSCRIBE")?;
            let packet_id = r.packet_id()?;
            let properties = props(&mut r, version, PropertyContext::Subscribe)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string("topic filter")?;
                topic::validate_topic_filter(&filter)?;
                let o = r.u8("subscription options")?;
                let reserved = if v5 { 0xC0 } else { 0xFC };
                if o & reserved != 0 || (o >> 4) & 3 == 3 {
                    return Err(DecodeError::InvalidFlags { packet: "SUBSCRIBE options", flags: o });
                }
                filters.push(SubscribeFilter {
                    filter,
                    qos: QoS::from_u8(o & 3)?,
                    no_local: o & 0x04 != 0,
                    retain_as_published: o & 0x08 != 0,
                    retain_handling: (o >> 4) & 3,
                });
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("SUBSCRIBE with no topic filter (spec 3.8.3)"));
            }
            Packet::Subscribe(Subscribe { packet_id, filters, properties })
        }
        9 | 11 => {
            let (name, ctx) = if first >> 4 == 9 { ("SUBACK", PropertyContext::SubAck) } else { ("UNSUBACK", PropertyContext::UnsubAck) };
            expect_flags(first, 0, name)?;
            let packet_id = r.packet_id()?;
            let properties = props(&mut r, version, ctx)?;
            let codes = r.rest().to_vec();
            if v5 {
                for c in &codes {
                    check_reason(name, *c)?;
                }
            }
            let ack = SubAck { packet_id, codes, properties };
            if first >> 4 == 9 {
                if ack.codes.is_empty() {
                    return Err(DecodeError::Protocol("SUBACK with no return code"));
                }
                if !v5 && ack.codes.iter().any(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
                    return Err(DecodeError::Protocol("SUBACK return code not 0, 1, 2 or 0x80"));
                }
                Packet::SubAck(ack)
            } else {
                if !v5 && !ack.codes.is_empty() {
                    return Err(DecodeError::TrailingBytes { packet: "UNSUBACK" });
                }
                Packet::UnsubAck(ack)
            }
        }
        #[cfg(any(test, feature = "broker"))]
        10 => {
            expect_flags(first, 2, "UNSUBSCRIBE")?;
            let packet_id = r.packet_id()?;
            let properties = props(&mut r, version, PropertyContext::Unsubscribe)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let f = r.string("topic filter")?;
                topic::validate_topic_filter(&f)?;
                filters.push(f);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("UNSUBSCRIBE with no topic filter (spec 3.10.3)"));
            }
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })
        }
        #[cfg(any(test, feature = "broker"))]
        12 => {
            expect_flags(first, 0, "PINGREQ")?;
            Packet::PingReq
        }
        #[cfg(not(any(test, feature = "broker")))]
        1 | 8 | 10 | 12 => return Err(DecodeError::Protocol("CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ are never sent by a broker")),
        13 => {
            expect_flags(first, 0, "PINGRESP")?;
            Packet::PingResp
        }
        14 => {
            expect_flags(first, 0, "DISCONNECT")?;
            let (reason, properties) = if v5 && !r.is_empty() {
                let reason = r.u8("reason code")?;
                check_reason("DISCONNECT", reason)?;
                let p = if r.is_empty() { Properties::default() } else { Properties::decode(&mut r, PropertyContext::Disconnect)? };
                (reason, p)
            } else {
                (0, Properties::default())
            };
            Packet::Disconnect(Disconnect { reason, properties })
        }
        15 if v5 => {
            expect_flags(first, 0, "AUTH")?;
            let (reason, properties) = if !r.is_empty() {
                let reason = r.u8("reason code")?;
                check_reason("AUTH", reason)?;
                (reason, Properties::decode(&mut r, PropertyContext::Auth)?)
            } else {
                (0, Properties::default())
            };
            Packet::Auth(Disconnect { reason, properties })
        }
        t => return Err(DecodeError::UnknownPacketType(t)),
    };
    r.finish(packet.name())?;
    Ok(packet)
}

#[cfg(any(test, feature = "broker"))]
fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.string("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (name.as_str(), level) {
        ("MQTT", 4) => ProtocolVersion::V311,
        ("MQTT", 5) => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocol { level }),
    };
    let flags = r.u8("connect flags")?;
    if flags & 1 != 0 {
        return Err(DecodeError::InvalidFlags { packet: "CONNECT", flags });
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = props(r, protocol, PropertyContext::Connect)?;
    let client_id = r.string("client identifier")?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 3)?;
    let will_retain = flags & 0x20 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Protocol("will QoS/retain set without the will flag (spec 3.1.2.6)"));
    }
    let will = if will_flag {
        let properties = props(r, protocol, PropertyContext::Will)?;
        let topic = r.string("will topic")?;
        topic::validate_topic_name(&topic)?;
        let payload = r.binary("will payload")?;
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 { Some(r.string("user name")?) } else { None };
    let password = if flags & 0x40 != 0 { Some(r.binary("password")?) } else { None };
    if protocol == ProtocolVersion::V311 && password.is_some() && username.is_none() {
        return Err(DecodeError::Protocol("password without user name (spec 3.1.2.9)"));
    }
    Ok(Connect { protocol, clean_start: flags & 0x02 != 0, keep_alive, client_id, will, username, password, properties })
}

/// Incremental decoder for one direction of one connection.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already decoded. Packets are taken by moving this
    /// offset; the consumed prefix is dropped once per `feed`. Draining each packet from
    /// the front instead moves everything behind it, and one read can hold thousands of
    /// small packets: that was quadratic, and most of a subscriber's CPU under load.
    start: usize,
    version: ProtocolVersion,
    max_packet_size: u32,
}

impl Decoder {
    /// `max_packet_size` bounds a whole packet (fixed header included), as MQTT 5 does.
    pub fn new(version: ProtocolVersion, max_packet_size: u32) -> Self {
        Decoder { buf: Vec::new(), start: 0, version, max_packet_size }
    }
    /// The version to decode as (a broker learns it from CONNECT).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }
    /// Drops what is buffered (a new connection).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
    /// Bytes from the connection, in order.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }
    /// The next whole packet, `Ok(None)` if more bytes are needed. After an error the
    /// stream is unusable: the connection must be closed.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        let rest = &self.buf[self.start..];
        let Some((first, len, hdr)) = parse_fixed_header(rest)? else {
            return Ok(None);
        };
        let total = hdr as u64 + u64::from(len);
        if total > u64::from(self.max_packet_size) {
            return Err(DecodeError::PacketTooLarge { size: total, max: self.max_packet_size });
        }
        if (rest.len() as u64) < total {
            return Ok(None);
        }
        let total = total as usize;
        let result = decode_packet(first, &rest[hdr..total], self.version);
        self.start += total;
        if self.start == self.buf.len() {
            self.clear();
        }
        result.map(Some)
    }
}

// ---------------------------------------------------------------------------------------
// Writing

/// MQTT's variable byte integer (spec 1.5.5) written at the start of `out`; returns how many
/// bytes it took (at most 5 for a u32: values past 268,435,455 are refused before encoding).
fn varint_into(mut v: u32, out: &mut [u8; 5]) -> usize {
    let mut n = 0;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out[n] = b;
        n += 1;
        if v == 0 {
            return n;
        }
    }
}

#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    // Byte by byte: `extend_from_slice` of two bytes was a `memory.copy` in the component,
    // which wasmtime runs as a call out of the guest (~150 instructions for a u16).
    fn u16(&mut self, v: u16) {
        let [a, b] = v.to_be_bytes();
        self.buf.push(a);
        self.buf.push(b);
    }
    fn u32(&mut self, v: u32) {
        self.u16((v >> 16) as u16);
        self.u16(v as u16);
    }
    fn varint(&mut self, v: u32) {
        let mut bytes = [0; 5];
        let n = varint_into(v, &mut bytes);
        bytes[..n].iter().for_each(|&b| self.buf.push(b));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Strings and binaries longer than 65,535 bytes are rejected by validation before
    /// they reach the encoder (config, publish and subscribe arguments, decoded packets).
    fn binary(&mut self, b: &[u8]) {
        self.u16(b.len() as u16);
        self.bytes(b);
    }
    fn string(&mut self, s: &str) {
        self.binary(s.as_bytes());
    }
    fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

impl Packet {
    /// The packet's bytes as sent on a connection speaking `version`.
    pub fn encode(&self, version: ProtocolVersion) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(version, &mut out);
        out
    }

    /// [`Packet::encode`] appending to `out`, which is grown once, sized up front (a publish's
    /// topic and payload dominate): growing buffers from empty cost a dozen allocations per
    /// publish. The fixed header goes in front of the body once the body's length is known.
    pub fn encode_into(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        /// The longest fixed header: the type byte and a 5-byte remaining length.
        const HEAD: usize = 6;
        let v5 = version == ProtocolVersion::V5;
        let size = match self {
            Packet::Publish(p) => p.topic.len() + p.payload.len() + 32,
            _ => 32,
        };
        // The body goes straight into `out` after room for the longest fixed header, which is
        // written in place at the end and the gap closed: a body encoded apart, then copied
        // after its header, was an allocation and a copy of every packet (issue 14).
        let start = out.len();
        let mut w = Writer { buf: core::mem::take(out) };
        w.buf.reserve(size + HEAD);
        w.buf.resize(start + HEAD, 0);
        let first: u8 = match self {
            Packet::Connect(c) => {
                w.string("MQTT");
                w.u8(if c.protocol == ProtocolVersion::V5 { 5 } else { 4 });
                let mut flags = 0u8;
                if c.clean_start {
                    flags |= 0x02;
                }
                if let Some(will) = &c.will {
                    flags |= 0x04 | ((will.qos as u8) << 3);
                    if will.retain {
                        flags |= 0x20;
                    }
                }
                if c.password.is_some() {
                    flags |= 0x40;
                }
                if c.username.is_some() {
                    flags |= 0x80;
                }
                w.u8(flags);
                w.u16(c.keep_alive);
                let cv5 = c.protocol == ProtocolVersion::V5;
                if cv5 {
                    c.properties.encode(&mut w);
                }
                w.string(&c.client_id);
                if let Some(will) = &c.will {
                    if cv5 {
                        will.properties.encode(&mut w);
                    }
                    w.string(&will.topic);
                    w.binary(&will.payload);
                }
                if let Some(u) = &c.username {
                    w.string(u);
                }
                if let Some(p) = &c.password {
                    w.binary(p);
                }
                0x10
            }
            Packet::ConnAck(c) => {
                w.u8(c.session_present as u8);
                w.u8(c.code);
                if v5 {
                    c.properties.encode(&mut w);
                }
                0x20
            }
            Packet::Publish(p) => {
                w.string(&p.topic);
                if let Some(id) = p.packet_id {
                    w.u16(id.get());
                }
                if v5 {
                    p.properties.encode(&mut w);
                }
                w.bytes(&p.payload);
                0x30 | ((p.dup as u8) << 3) | ((p.qos as u8) << 1) | p.retain as u8
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                w.u16(a.packet_id.get());
                if v5 && (a.reason != 0 || !a.properties.is_empty()) {
                    w.u8(a.reason);
                    if !a.properties.is_empty() {
                        a.properties.encode(&mut w);
                    }
                }
                match self {
                    Packet::PubAck(_) => 0x40,
                    Packet::PubRec(_) => 0x50,
                    Packet::PubRel(_) => 0x62,
                    _ => 0x70,
                }
            }
            Packet::Subscribe(s) => {
                w.u16(s.packet_id.get());
                if v5 {
                    s.properties.encode(&mut w);
                }
                for f in &s.filters {
                    w.string(&f.filter);
                    let mut o = f.qos as u8;
                    if v5 {
                        o |= (f.no_local as u8) << 2 | (f.retain_as_published as u8) << 3 | (f.retain_handling & 3) << 4;
                    }
                    w.u8(o);
                }
                0x82
            }
            Packet::SubAck(a) | Packet::UnsubAck(a) => {
                w.u16(a.packet_id.get());
                if v5 {
                    a.properties.encode(&mut w);
                }
                let is_sub = matches!(self, Packet::SubAck(_));
                if is_sub || v5 {
                    w.bytes(&a.codes);
                }
                if is_sub {
                    0x90
                } else {
                    0xB0
                }
            }
            Packet::Unsubscribe(u) => {
                w.u16(u.packet_id.get());
                if v5 {
                    u.properties.encode(&mut w);
                }
                for f in &u.filters {
                    w.string(f);
                }
                0xA2
            }
            Packet::PingReq => 0xC0,
            Packet::PingResp => 0xD0,
            Packet::Disconnect(d) | Packet::Auth(d) => {
                let is_auth = matches!(self, Packet::Auth(_));
                if v5 && (d.reason != 0 || !d.properties.is_empty() || is_auth) {
                    w.u8(d.reason);
                    d.properties.encode(&mut w);
                }
                if is_auth {
                    0xF0
                } else {
                    0xE0
                }
            }
        };
        let mut buf = w.into_inner();
        let body = start + HEAD;
        let mut len = [0; 5];
        let n = varint_into((buf.len() - body) as u32, &mut len);
        let gap = HEAD - 1 - n;
        buf[start + gap] = first;
        buf[start + gap + 1..body].copy_from_slice(&len[..n]);
        buf.copy_within(start + gap.., start);
        buf.truncate(buf.len() - gap);
        *out = buf;
    }
}

#[cfg(test)]
mod tests;
