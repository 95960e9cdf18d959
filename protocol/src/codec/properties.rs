//! MQTT 5 properties (spec 2.2.2): one struct for all of them, and a table of which
//! packet may carry which, so a misplaced property is reported by name.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use super::{DecodeError, Reader, Writer};

/// Where a property list appears; decides which identifiers are allowed (spec 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT.
    Connect,
    /// The will's properties inside CONNECT.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResponse,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl PropertyContext {
    /// The packet's name, as errors report it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Will => "will properties",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubResponse => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        }
    }
}

/// A packet's MQTT 5 properties, kept out of line: most packets carry none (every packet
/// under 3.1.1), and inline the 27 fields made every packet ~200 bytes larger, to build,
/// move (each move a `memory.copy` in the component) and drop field by field, several times
/// per message (counted with callgrind, issue 14). Reads go through `Deref` to the values
/// (an empty set when there are none); a write through `DerefMut` makes room first.
#[derive(Debug, Clone, Default)]
pub struct Properties(pub(super) Option<Box<PropertyValues>>);

/// Every MQTT 5 property. `None`/empty means absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyValues {
    /// Payload Format Indicator (0x01): 1 when the payload is UTF-8 text.
    pub payload_format_indicator: Option<u8>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type (0x03), a MIME type or the application's own.
    pub content_type: Option<String>,
    /// Response Topic (0x08): where a request's answer goes.
    pub response_topic: Option<String>,
    /// Correlation Data (0x09): ties an answer to its request.
    pub correlation_data: Option<Vec<u8>>,
    /// Subscription Identifiers (0x0B): on SUBSCRIBE one, on a PUBLISH every matching one.
    pub subscription_identifiers: Vec<u32>,
    /// Session Expiry Interval (0x11), seconds.
    pub session_expiry_interval: Option<u32>,
    /// Assigned Client Identifier (0x12): the id the broker chose for an empty one.
    pub assigned_client_identifier: Option<String>,
    /// Server Keep Alive (0x13): the keepalive the broker imposes, seconds.
    pub server_keep_alive: Option<u16>,
    /// Authentication Method (0x15): enhanced authentication's mechanism.
    pub authentication_method: Option<String>,
    /// Authentication Data (0x16): the mechanism's bytes.
    pub authentication_data: Option<Vec<u8>>,
    /// Request Problem Information (0x17).
    pub request_problem_information: Option<u8>,
    /// Will Delay Interval (0x18), seconds.
    pub will_delay_interval: Option<u32>,
    /// Request Response Information (0x19).
    pub request_response_information: Option<u8>,
    /// Response Information (0x1A).
    pub response_information: Option<String>,
    /// Server Reference (0x1C): another broker to use.
    pub server_reference: Option<String>,
    /// Reason String (0x1F): a human-readable reason.
    pub reason_string: Option<String>,
    /// Receive Maximum (0x21): QoS 1/2 publishes the sender accepts unacknowledged.
    pub receive_maximum: Option<u16>,
    /// Topic Alias Maximum (0x22): the highest alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Topic Alias (0x23): stands for the topic on this connection.
    pub topic_alias: Option<u16>,
    /// Maximum QoS (0x24) the broker supports.
    pub maximum_qos: Option<u8>,
    /// Retain Available (0x25).
    pub retain_available: Option<u8>,
    /// User Properties (0x26): name–value pairs, in order, repeats allowed.
    pub user_properties: Vec<(String, String)>,
    /// Maximum Packet Size (0x27) the sender accepts, bytes.
    pub maximum_packet_size: Option<u32>,
    /// Wildcard Subscription Available (0x28).
    pub wildcard_subscription_available: Option<u8>,
    /// Subscription Identifier Available (0x29).
    pub subscription_identifier_available: Option<u8>,
    /// Shared Subscription Available (0x2A).
    pub shared_subscription_available: Option<u8>,
}

impl core::ops::Deref for Properties {
    type Target = PropertyValues;

    fn deref(&self) -> &PropertyValues {
        static NONE: PropertyValues = PropertyValues::NONE;
        self.0.as_deref().unwrap_or(&NONE)
    }
}

impl core::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertyValues {
        self.0.get_or_insert_with(Default::default)
    }
}

impl From<PropertyValues> for Properties {
    fn from(values: PropertyValues) -> Self {
        Properties(Some(Box::new(values)))
    }
}

/// Equal when they carry the same properties, whether or not room was made for them.
impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl Default for PropertyValues {
    /// Out of line on purpose: built inline, the 27 fields cost ~200 bytes of component code
    /// at each place one is made.
    #[inline(never)]
    fn default() -> Self {
        PropertyValues::NONE
    }
}

impl PropertyValues {
    /// No property set (what an empty `Properties` reads as).
    pub const NONE: PropertyValues = PropertyValues {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };
}

use PropertyContext as C;

/// Property identifiers with the contexts that may carry them (spec table 2-4).
fn allowed(id: u8, ctx: PropertyContext) -> Option<bool> {
    let ok = match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(ctx, C::Publish | C::Will),
        0x0B => matches!(ctx, C::Publish | C::Subscribe),
        0x11 => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => ctx == C::ConnAck,
        0x15 | 0x16 => matches!(ctx, C::Connect | C::ConnAck | C::Auth),
        0x17 | 0x19 => ctx == C::Connect,
        0x18 => ctx == C::Will,
        0x1C => matches!(ctx, C::ConnAck | C::Disconnect),
        0x1F => !matches!(ctx, C::Connect | C::Will | C::Publish | C::Subscribe | C::Unsubscribe),
        0x21 | 0x22 | 0x27 => matches!(ctx, C::Connect | C::ConnAck),
        0x23 => ctx == C::Publish,
        0x26 => true,
        _ => return None,
    };
    Some(ok)
}

/// A property value as read from the wire, before it is stored in its field.
enum Value {
    Int(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

impl Properties {
    /// No property set.
    pub fn is_empty(&self) -> bool {
        // Encoding to nothing, rather than `== PropertyValues::NONE`: the comparison of 27
        // fields cost ~700 bytes of component code, and `body` is there anyway.
        self.0.as_ref().is_none_or(|v| v.body().is_empty())
    }

    /// The values, moved out (all absent when there are none).
    pub fn into_values(self) -> PropertyValues {
        self.0.map(|v| *v).unwrap_or_default()
    }

    /// The values when room was made for them, without encoding to find out (`is_empty` does).
    pub fn values(&self) -> Option<&PropertyValues> {
        self.0.as_deref()
    }

    /// Takes one property out without making room for the rest when there are none.
    pub fn take<T>(&mut self, field: impl FnOnce(&mut PropertyValues) -> &mut Option<T>) -> Option<T> {
        self.0.as_mut().and_then(|v| field(v).take())
    }

    pub(crate) fn decode(r: &mut Reader<'_>, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.varint("property length")? as usize;
        if len == 0 {
            return Ok(Properties(None));
        }
        let mut r = r.sub(len, "properties")?;
        let mut p = PropertyValues::default();
        while !r.is_empty() {
            let id = r.varint("property identifier")?;
            let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(0xFF))?;
            match allowed(id, ctx) {
                None => return Err(DecodeError::UnknownProperty(id)),
                Some(false) => return Err(DecodeError::PropertyNotAllowed { id, packet: ctx.name() }),
                Some(true) => {}
            }
            // Read by wire type first, then store: one reader call per type instead of one
            // per property keeps this small in the component.
            let value = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    let v = r.u8("property value")?;
                    if v > 1 {
                        return Err(DecodeError::InvalidPropertyValue { id, why: "must be 0 or 1" });
                    }
                    Value::Int(u32::from(v))
                }
                0x13 | 0x21 | 0x22 | 0x23 => Value::Int(u32::from(r.u16("property value")?)),
                0x02 | 0x11 | 0x18 | 0x27 => Value::Int(r.u32("property value")?),
                0x0B => Value::Int(r.varint("subscription identifier")?),
                0x09 | 0x16 => Value::Bin(r.binary("property value")?),
                0x26 => Value::Pair(r.string("user property name")?, r.string("user property value")?),
                _ => Value::Str(r.string("property value")?),
            };
            let nonzero = matches!(id, 0x0B | 0x21 | 0x23 | 0x27);
            if nonzero && matches!(value, Value::Int(0)) {
                return Err(DecodeError::InvalidPropertyValue { id, why: "must not be 0" });
            }
            p.store(id, value)?;
        }
        Ok(p.into())
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match &self.0 {
            Some(values) => {
                let body = values.body();
                w.varint(body.len() as u32);
                w.bytes(&body);
            }
            None => w.varint(0),
        }
    }
}

impl PropertyValues {
    fn store(&mut self, id: u8, value: Value) -> Result<(), DecodeError> {
        // Out of line: inlined at its 27 call sites it cost ~230 more bytes of component code.
        #[inline(never)]
        fn once<T>(slot: &mut Option<T>, id: u8, v: T) -> Result<(), DecodeError> {
            if slot.is_some() {
                return Err(DecodeError::DuplicateProperty(id));
            }
            *slot = Some(v);
            Ok(())
        }
        match value {
            Value::Int(v) => {
                // Narrowing is exact: each id was read with its wire width above.
                let (b, w) = (v as u8, v as u16);
                match id {
                    0x01 => once(&mut self.payload_format_indicator, id, b),
                    0x17 => once(&mut self.request_problem_information, id, b),
                    0x19 => once(&mut self.request_response_information, id, b),
                    0x24 => once(&mut self.maximum_qos, id, b),
                    0x25 => once(&mut self.retain_available, id, b),
                    0x28 => once(&mut self.wildcard_subscription_available, id, b),
                    0x29 => once(&mut self.subscription_identifier_available, id, b),
                    0x2A => once(&mut self.shared_subscription_available, id, b),
                    0x13 => once(&mut self.server_keep_alive, id, w),
                    0x21 => once(&mut self.receive_maximum, id, w),
                    0x22 => once(&mut self.topic_alias_maximum, id, w),
                    0x23 => once(&mut self.topic_alias, id, w),
                    0x02 => once(&mut self.message_expiry_interval, id, v),
                    0x11 => once(&mut self.session_expiry_interval, id, v),
                    0x18 => once(&mut self.will_delay_interval, id, v),
                    0x27 => once(&mut self.maximum_packet_size, id, v),
                    _ => {
                        self.subscription_identifiers.push(v);
                        Ok(())
                    }
                }
            }
            Value::Bin(v) => match id {
                0x09 => once(&mut self.correlation_data, id, v),
                _ => once(&mut self.authentication_data, id, v),
            },
            Value::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Value::Str(v) => match id {
                0x03 => once(&mut self.content_type, id, v),
                0x08 => {
                    super::topic::validate_topic_name(&v)?;
                    once(&mut self.response_topic, id, v)
                }
                0x12 => once(&mut self.assigned_client_identifier, id, v),
                0x15 => once(&mut self.authentication_method, id, v),
                0x1A => once(&mut self.response_information, id, v),
                0x1C => once(&mut self.server_reference, id, v),
                _ => once(&mut self.reason_string, id, v),
            },
        }
    }

    /// Encoded body (without the length prefix).
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        let u8p = |w: &mut Writer, id: u8, v: Option<u8>| {
            if let Some(v) = v {
                w.u8(id);
                w.u8(v);
            }
        };
        let u16p = |w: &mut Writer, id: u8, v: Option<u16>| {
            if let Some(v) = v {
                w.u8(id);
                w.u16(v);
            }
        };
        let u32p = |w: &mut Writer, id: u8, v: Option<u32>| {
            if let Some(v) = v {
                w.u8(id);
                w.u32(v);
            }
        };
        let strp = |w: &mut Writer, id: u8, v: &Option<String>| {
            if let Some(v) = v {
                w.u8(id);
                w.string(v);
            }
        };
        let binp = |w: &mut Writer, id: u8, v: &Option<Vec<u8>>| {
            if let Some(v) = v {
                w.u8(id);
                w.binary(v);
            }
        };
        u8p(&mut w, 0x01, self.payload_format_indicator);
        u32p(&mut w, 0x02, self.message_expiry_interval);
        strp(&mut w, 0x03, &self.content_type);
        strp(&mut w, 0x08, &self.response_topic);
        binp(&mut w, 0x09, &self.correlation_data);
        for id in &self.subscription_identifiers {
            w.u8(0x0B);
            w.varint(*id);
        }
        u32p(&mut w, 0x11, self.session_expiry_interval);
        strp(&mut w, 0x12, &self.assigned_client_identifier);
        u16p(&mut w, 0x13, self.server_keep_alive);
        strp(&mut w, 0x15, &self.authentication_method);
        binp(&mut w, 0x16, &self.authentication_data);
        u8p(&mut w, 0x17, self.request_problem_information);
        u32p(&mut w, 0x18, self.will_delay_interval);
        u8p(&mut w, 0x19, self.request_response_information);
        strp(&mut w, 0x1A, &self.response_information);
        strp(&mut w, 0x1C, &self.server_reference);
        strp(&mut w, 0x1F, &self.reason_string);
        u16p(&mut w, 0x21, self.receive_maximum);
        u16p(&mut w, 0x22, self.topic_alias_maximum);
        u16p(&mut w, 0x23, self.topic_alias);
        u8p(&mut w, 0x24, self.maximum_qos);
        u8p(&mut w, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            w.u8(0x26);
            w.string(k);
            w.string(v);
        }
        u32p(&mut w, 0x27, self.maximum_packet_size);
        u8p(&mut w, 0x28, self.wildcard_subscription_available);
        u8p(&mut w, 0x29, self.subscription_identifier_available);
        u8p(&mut w, 0x2A, self.shared_subscription_available);
        w.into_inner()
    }
}
