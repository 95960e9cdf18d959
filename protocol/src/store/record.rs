//! What the log holds, and its bytes.
//!
//! A record on flash is `len: u16 LE | body | crc32 LE`, padded with `0xFF` to the write
//! size; the CRC covers `len` and `body`, so a torn write (a prefix of it programmed) or
//! a half-erased sector never reads as a record. A length of `0xFFFF` is erased flash: the
//! end of a sector's records.

use alloc::vec::Vec;

use crate::codec::{decode_publish, parse_fixed_header, Packet, PacketId, Properties, PropertyValues, ProtocolVersion, Publish, QoS, Reader};
use crate::types::OutgoingPublish;

/// One entry of the log. Outgoing messages are named by a store key (increasing, never
/// reused), incoming QoS 2 exchanges by their packet id.
#[derive(Debug, Clone)]
pub(crate) enum Record<'a> {
    /// The application handed over a QoS 1/2 publish (written before its token returns).
    Publish { key: u32, publish: &'a OutgoingPublish },
    /// It got packet id `pid` (written before the PUBLISH goes out, so a resumed session
    /// resends the same id with DUP).
    Sent { key: u32, pid: u16 },
    /// QoS 2: PUBREC came; only PUBREL/PUBCOMP is left.
    Released { key: u32 },
    /// PUBACK/PUBCOMP came, or the publish failed or was given up: forget it.
    Done { key: u32 },
    /// An incoming QoS 2 message was delivered and PUBREC is owed (exactly-once).
    Received { pid: u16 },
    /// PUBREL came for it.
    ReceivedDone { pid: u16 },
    /// The broker has no session: every incoming id is forgotten.
    ClearReceived,
    /// Sector with this sequence number is being erased: whatever it still holds is dead
    /// (a half-erased sector must not bring back records whose `Done` it lost).
    Erasing { seq: u32 },
    /// The session (and the packet ids in flight) lives on this broker now (0: `server`,
    /// then `servers`): where a power-up resumes it.
    Session { broker: u32 },
}

const PUBLISH: u8 = 1;
const SENT: u8 = 2;
const RELEASED: u8 = 3;
const DONE: u8 = 4;
const RECEIVED: u8 = 5;
const RECEIVED_DONE: u8 = 6;
const CLEAR_RECEIVED: u8 = 7;
const ERASING: u8 = 8;
const SESSION: u8 = 9;

/// Framing around a body: the length before, the CRC after.
pub(crate) const FRAMING: u32 = 2 + 4;

impl Record<'_> {
    /// The body bytes (kind first).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let (kind, n) = match self {
            Record::Publish { key, .. } => (PUBLISH, *key),
            Record::Sent { key, .. } => (SENT, *key),
            Record::Released { key } => (RELEASED, *key),
            Record::Done { key } => (DONE, *key),
            Record::Received { pid } => (RECEIVED, u32::from(*pid)),
            Record::ReceivedDone { pid } => (RECEIVED_DONE, u32::from(*pid)),
            Record::ClearReceived => (CLEAR_RECEIVED, 0),
            Record::Erasing { seq } => (ERASING, *seq),
            Record::Session { broker } => (SESSION, *broker),
        };
        out.push(kind);
        out.extend_from_slice(&n.to_le_bytes());
        match self {
            Record::Sent { pid, .. } => out.extend_from_slice(&pid.to_le_bytes()),
            // The MQTT 5 encoding of the PUBLISH, whatever the connection speaks: the codec
            // already writes and checks every field and property, so the store reuses it
            // rather than growing a second format (and its code) for the same data.
            Record::Publish { publish: p, .. } => {
                let packet_id = if p.qos == QoS::AtMostOnce { None } else { PacketId::new(1) };
                let packet = Packet::Publish(Publish {
                    dup: false,
                    qos: p.qos,
                    retain: p.retain,
                    topic: p.topic.clone(),
                    packet_id,
                    payload: p.payload.clone(),
                    properties: p.properties.clone(),
                });
                out.extend_from_slice(&packet.encode(ProtocolVersion::V5));
            }
            _ => {}
        }
        out
    }
}

/// What collection and replay need of a record without decoding a publish: its kind, the
/// key (or packet id, or sequence number) and, for `Sent`, the packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub kind: u8,
    pub n: u32,
    pub pid: u16,
}

impl Head {
    /// `None` for anything a CRC-valid record of this format cannot be.
    pub(crate) fn read(body: &[u8]) -> Option<Head> {
        let (&kind, rest) = body.split_first()?;
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
        let pid = match kind {
            SENT => u16::from_le_bytes(rest.get(4..6)?.try_into().ok()?),
            RECEIVED | RECEIVED_DONE => u16::try_from(n).ok()?,
            PUBLISH..=SESSION => 0,
            _ => return None,
        };
        Some(Head { kind, n, pid })
    }

    pub(crate) fn is(&self, kind: Kind) -> bool {
        self.kind == kind as u8
    }
}

/// Record kinds, as [`Head::is`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Publish = PUBLISH as isize,
    Sent = SENT as isize,
    Released = RELEASED as isize,
    Done = DONE as isize,
    Received = RECEIVED as isize,
    ReceivedDone = RECEIVED_DONE as isize,
    ClearReceived = CLEAR_RECEIVED as isize,
    Erasing = ERASING as isize,
    Session = SESSION as isize,
}

/// The publish in a `Publish` record's body.
pub(crate) fn publish_of(body: &[u8]) -> Option<OutgoingPublish> {
    let rest = body.get(5..)?;
    let (first, len, header) = parse_fixed_header(rest).ok()??;
    if first >> 4 != 3 {
        return None;
    }
    let mut r = Reader::new(rest.get(header..header + len as usize)?);
    let p = decode_publish(first, &mut r, ProtocolVersion::V5).ok()?;
    Some(OutgoingPublish { topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain, properties: strip(p.properties) })
}

/// Properties as the application gave them (decoding fills nothing else for a PUBLISH it
/// encoded, but say so rather than trust it).
fn strip(p: Properties) -> Properties {
    if p.is_empty() {
        return Properties::default();
    }
    let p = p.into_values();
    PropertyValues {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        ..Default::default()
    }
    .into()
}

/// CRC-32 (IEEE 802.3, as zlib). Bit by bit, on purpose: a lookup table would cost 1 KiB
/// (or 16 KiB sliced) of component code to speed up a few hundred bytes per publish, next
/// to a flash write that takes far longer.
pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for part in parts {
        for &b in *part {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
    }
    !crc
}

/// `body` framed and padded to `write_size`.
pub(crate) fn frame(body: &[u8], write_size: u32) -> Vec<u8> {
    let len = (body.len() as u16).to_le_bytes();
    let mut out = Vec::with_capacity(body.len() + FRAMING as usize + write_size as usize);
    out.extend_from_slice(&len);
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32(&[&len, body]).to_le_bytes());
    pad(&mut out, write_size);
    out
}

/// Pads with erased bytes to a multiple of `write_size`.
pub(crate) fn pad(out: &mut Vec<u8>, write_size: u32) {
    let w = write_size.max(1) as usize;
    out.resize(out.len().div_ceil(w) * w, 0xFF);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    }

    #[test]
    fn every_record_round_trips() {
        let publish = OutgoingPublish {
            topic: "a/b".to_string(),
            payload: alloc::vec![1, 2, 3],
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PropertyValues { message_expiry_interval: Some(60), content_type: Some("x".to_string()), ..Default::default() }.into(),
        };
        let body = Record::Publish { key: 7, publish: &publish }.encode();
        assert_eq!(Head::read(&body), Some(Head { kind: PUBLISH, n: 7, pid: 0 }));
        assert_eq!(publish_of(&body), Some(publish));
        for (r, head) in [
            (Record::Sent { key: 7, pid: 65535 }, (SENT, 7, 65535)),
            (Record::Released { key: 7 }, (RELEASED, 7, 0)),
            (Record::Done { key: u32::MAX }, (DONE, u32::MAX, 0)),
            (Record::Received { pid: 9 }, (RECEIVED, 9, 9)),
            (Record::ReceivedDone { pid: 9 }, (RECEIVED_DONE, 9, 9)),
            (Record::ClearReceived, (CLEAR_RECEIVED, 0, 0)),
            (Record::Erasing { seq: 3 }, (ERASING, 3, 0)),
            (Record::Session { broker: 2 }, (SESSION, 2, 0)),
        ] {
            assert_eq!(Head::read(&r.encode()), Some(Head { kind: head.0, n: head.1, pid: head.2 }));
        }
        assert_eq!(Head::read(&[99, 0, 0, 0, 0]), None);
        assert_eq!(Head::read(&[SENT, 1, 0, 0, 0, 0]), None);
        assert_eq!(Head::read(&[RECEIVED, 0, 0, 1, 0]), None, "a packet id over 16 bits");
    }
}
