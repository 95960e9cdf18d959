//! A packet log for any platform: [`PacketLog`] wraps a [`Platform`] and writes a line for
//! every MQTT packet the component sends or receives, as mosquitto_pub/sub's `-d` does.
//!
//! It decodes the plaintext the component hands the socket and gets back from it (TLS sits
//! below, in the platform), with the protocol core's own codec, so it shows what went over
//! the connection, not what the client meant to send. The component stays as it is: logging
//! in the guest would cost code in a module kept under 64 KiB.

use std::collections::BTreeMap;
use std::sync::Arc;

use mqtt_protocol::codec::Decoder;
use mqtt_protocol::{Packet, ProtocolVersion};
use tokio::sync::Notify;

use crate::{Clock, LinkState, Platform, Socket, SocketError, SocketState, TlsParams, Wifi};

/// Per connection: the client's packets and the broker's, each a stream of its own.
struct Streams {
    sent: Decoder,
    received: Decoder,
}

/// `inner` with every MQTT packet written to `out` (a line each, the time first).
pub struct PacketLog<P> {
    inner: P,
    client_id: String,
    streams: BTreeMap<u32, Streams>,
    out: Box<dyn FnMut(&str) + Send>,
}

impl<P: Platform> PacketLog<P> {
    /// Logs to stderr, naming the client as mosquitto does.
    pub fn new(inner: P, client_id: &str) -> Self {
        Self::with_output(inner, client_id, Box::new(|line| eprintln!("{line}")))
    }

    pub fn with_output(inner: P, client_id: &str, out: Box<dyn FnMut(&str) + Send>) -> Self {
        PacketLog { inner, client_id: client_id.to_string(), streams: BTreeMap::new(), out }
    }

    fn log(&mut self, handle: u32, sending: bool, bytes: &[u8]) {
        let Some(s) = self.streams.get_mut(&handle) else { return };
        let decoder = if sending { &mut s.sent } else { &mut s.received };
        decoder.feed(bytes);
        let mut lines = Vec::new();
        let mut version = None;
        loop {
            match decoder.next_packet() {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        version = Some(c.protocol);
                    }
                    lines.push(describe(&p));
                }
                Ok(None) => break,
                Err(e) => {
                    lines.push(format!("undecodable bytes: {e}"));
                    decoder.clear();
                    break;
                }
            }
        }
        if let Some(v) = version {
            // Both directions speak the version the client's CONNECT chose.
            s.sent.set_version(v);
            s.received.set_version(v);
        }
        let when = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        for l in lines {
            let line = if sending { format!("{when} Client {} sending {l}", self.client_id) } else { format!("{when} Client {} received {l}", self.client_id) };
            (self.out)(&line);
        }
    }
}

/// mosquitto's way of naming a packet: the type and its telling fields.
fn describe(p: &Packet) -> String {
    match p {
        Packet::Connect(c) => {
            format!("CONNECT (c{}, k{}, id {:?}{})", u8::from(c.clean_start), c.keep_alive, c.client_id, if c.will.is_some() { ", will" } else { "" })
        }
        Packet::ConnAck(a) => format!("CONNACK ({}{})", a.code, if a.session_present { ", session present" } else { "" }),
        Packet::Publish(p) => format!(
            "PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos as u8,
            u8::from(p.retain),
            p.packet_id.map_or(0, |i| i.get()),
            p.topic,
            p.payload.len()
        ),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => format!("{} (m{}, rc{})", p.name(), r.packet_id.get(), r.reason),
        Packet::Subscribe(s) => {
            let filters: Vec<String> = s.filters.iter().map(|f| format!("{} (QoS {})", f.filter, f.qos as u8)).collect();
            format!("SUBSCRIBE (m{}, {})", s.packet_id.get(), filters.join(", "))
        }
        Packet::SubAck(a) | Packet::UnsubAck(a) => format!("{} (m{}, {:?})", p.name(), a.packet_id.get(), a.codes),
        Packet::Unsubscribe(u) => format!("UNSUBSCRIBE (m{}, {})", u.packet_id.get(), u.filters.join(", ")),
        Packet::Disconnect(d) | Packet::Auth(d) => format!("{} (rc{})", p.name(), d.reason),
        Packet::PingReq | Packet::PingResp => p.name().to_string(),
    }
}

impl<P: Platform> Socket for PacketLog<P> {
    fn open(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<u32, SocketError> {
        let handle = self.inner.open(host, port, tls)?;
        // Decoding CONNECT, SUBSCRIBE … needs the codec's broker side; the size limit is the
        // protocol's own.
        let max = mqtt_protocol::codec::MAX_REMAINING_LENGTH + 5;
        self.streams.insert(handle, Streams { sent: Decoder::new(ProtocolVersion::V5, max), received: Decoder::new(ProtocolVersion::V311, max) });
        Ok(handle)
    }
    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        self.inner.status(handle)
    }
    fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        let n = self.inner.send(handle, data)?;
        self.log(handle, true, &data[..n as usize]);
        Ok(n)
    }
    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        let bytes = self.inner.recv(handle, max)?;
        self.log(handle, false, &bytes);
        Ok(bytes)
    }
    fn close(&mut self, handle: u32) {
        self.streams.remove(&handle);
        self.inner.close(handle);
    }
    fn flush(&mut self) {
        self.inner.flush();
    }
}

impl<P: Platform> Clock for PacketLog<P> {
    fn now_ms(&mut self) -> u64 {
        self.inner.now_ms()
    }
    fn wall_ms(&mut self) -> Option<u64> {
        self.inner.wall_ms()
    }
}

impl<P: Platform> Wifi for PacketLog<P> {
    fn state(&mut self) -> LinkState {
        self.inner.state()
    }
    fn connect(&mut self, ssid: &str, password: &str) -> Result<(), String> {
        self.inner.connect(ssid, password)
    }
    fn disconnect(&mut self) {
        self.inner.disconnect()
    }
    fn rssi(&mut self) -> Option<i32> {
        self.inner.rssi()
    }
}

impl<P: Platform> Platform for PacketLog<P> {
    fn wakeup(&self) -> Option<Arc<Notify>> {
        self.inner.wakeup()
    }
    fn storage(&mut self) -> Option<&mut dyn mqtt_protocol::store::Flash> {
        self.inner.storage()
    }
    fn take_failure(&mut self) -> Option<String> {
        self.inner.take_failure()
    }
}
