//! An in-memory [`Platform`] with a small scripted broker behind it, for tests and
//! benchmarks of code that embeds the component (no sockets, no threads, a manual clock).
//!
//! The broker answers CONNECT, QoS 0/1/2 PUBLISH, SUBSCRIBE, UNSUBSCRIBE and PINGREQ the
//! way a real one would, echoes publishes to matching subscriptions of the same client, and
//! has knobs to drop acknowledgements. It is a harness, not a broker: the simulator's
//! broker model and the Mosquitto tests are where broker behaviour is checked.

use std::sync::{Arc, Mutex};

use mqtt_protocol::codec::{topic, ConnAck, Decoder, PubResponse, Publish, SubAck};
use mqtt_protocol::{Packet, Properties, ProtocolVersion, QoS};

use crate::platform::{Clock, Platform, Socket, Wifi};
use crate::{LinkState, SocketError, SocketState, TlsParams};

/// What the test sees and steers; shared with the platform through [`Loopback::handle`].
#[derive(Default)]
pub struct LoopbackState {
    pub now_ms: u64,
    pub link_up: bool,
    /// Refuse socket opens (connection refused).
    pub refuse: bool,
    /// Drop this many of the next PUBACK/PUBREC the broker would send.
    pub drop_acks: u32,
    /// Keep PUBACK/PUBREC back until [`Loopback::release_acks`] (a slow broker: the client's
    /// in-flight window fills).
    pub hold_acks: bool,
    held: Vec<u8>,
    /// Every PUBLISH the broker received (topic, payload, dup).
    pub received: Vec<(String, Vec<u8>, bool)>,
    pub connects: u32,
    /// The filters of every SUBSCRIBE the broker received, in order.
    pub subscribes: Vec<Vec<String>>,
    /// The filters subscribed now (a clean session starts with none).
    pub subscriptions: Vec<String>,
    conn: Option<Conn>,
    next_handle: u32,
}

struct Conn {
    handle: u32,
    decoder: Decoder,
    version: ProtocolVersion,
    inbox: Vec<u8>,
    closed: bool,
}

#[derive(Clone, Default)]
pub struct Loopback {
    state: Arc<Mutex<LoopbackState>>,
}

impl Loopback {
    pub fn new() -> Self {
        let l = Loopback::default();
        l.with(|s| {
            s.link_up = true;
            s.now_ms = 1;
        });
        l
    }

    /// Look at or change the shared state (clock, link, knobs, what the broker saw).
    pub fn with<T>(&self, f: impl FnOnce(&mut LoopbackState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    pub fn advance(&self, ms: u64) {
        self.with(|s| s.now_ms += ms);
    }

    /// Deliver the acknowledgements held back by `hold_acks`.
    pub fn release_acks(&self) {
        self.with(|s| {
            let held = std::mem::take(&mut s.held);
            if let Some(c) = s.conn.as_mut() {
                c.inbox.extend(held);
            }
        });
    }

    /// Close the broker side of the connection, as a broker restart would.
    pub fn kill_connection(&self) {
        self.with(|s| {
            if let Some(c) = s.conn.as_mut() {
                c.closed = true;
            }
        });
    }
}

impl LoopbackState {
    fn respond(&mut self, packet: Packet) {
        let Some(conn) = self.conn.as_mut() else { return };
        let version = conn.version;
        let reply = |conn: &mut Conn, p: Packet| conn.inbox.extend(p.encode(version));
        match packet {
            Packet::Connect(c) => {
                conn.version = c.protocol;
                conn.decoder.set_version(c.protocol);
                self.connects += 1;
                if c.clean_start {
                    self.subscriptions.clear();
                }
                let ack = ConnAck { session_present: false, code: 0, properties: Properties::default() };
                let bytes = Packet::ConnAck(ack).encode(c.protocol);
                conn.inbox.extend(bytes);
            }
            Packet::Publish(p) => {
                self.received.push((p.topic.clone(), p.payload.clone(), p.dup));
                let echo = self.subscriptions.iter().any(|f| topic::topic_matches(f, &p.topic));
                let Some(conn) = self.conn.as_mut() else { return };
                if let Some(id) = p.packet_id {
                    let r = PubResponse { packet_id: id, reason: 0, properties: Properties::default() };
                    let ack = if p.qos == QoS::ExactlyOnce { Packet::PubRec(r) } else { Packet::PubAck(r) };
                    if self.drop_acks > 0 {
                        self.drop_acks -= 1;
                    } else if self.hold_acks {
                        self.held.extend(ack.encode(version));
                    } else {
                        reply(conn, ack);
                    }
                }
                if echo {
                    let out = Publish { dup: false, qos: QoS::AtMostOnce, retain: false, packet_id: None, properties: Properties::default(), ..p };
                    reply(conn, Packet::Publish(out));
                }
            }
            Packet::PubRel(r) => reply(conn, Packet::PubComp(r)),
            Packet::Subscribe(s) => {
                let codes = s.filters.iter().map(|f| f.qos as u8).collect();
                reply(conn, Packet::SubAck(SubAck { packet_id: s.packet_id, codes, properties: Properties::default() }));
                self.subscribes.push(s.filters.iter().map(|f| f.filter.clone()).collect());
                for f in s.filters {
                    if !self.subscriptions.contains(&f.filter) {
                        self.subscriptions.push(f.filter);
                    }
                }
            }
            Packet::Unsubscribe(u) => {
                let codes = if version == ProtocolVersion::V5 { vec![0; u.filters.len()] } else { vec![] };
                reply(conn, Packet::UnsubAck(SubAck { packet_id: u.packet_id, codes, properties: Properties::default() }));
                self.subscriptions.retain(|f| !u.filters.contains(f));
            }
            Packet::PingReq => reply(conn, Packet::PingResp),
            Packet::Disconnect(_) => conn.closed = true,
            _ => {}
        }
    }
}

impl Socket for Loopback {
    fn open(&mut self, _host: &str, _port: u16, _tls: Option<TlsParams>) -> Result<u32, SocketError> {
        self.with(|s| {
            if !s.link_up {
                return Err(SocketError::Unreachable);
            }
            if s.refuse {
                return Err(SocketError::Refused);
            }
            s.next_handle += 1;
            let handle = s.next_handle;
            s.conn =
                Some(Conn { handle, decoder: Decoder::new(ProtocolVersion::V311, u32::MAX), version: ProtocolVersion::V311, inbox: Vec::new(), closed: false });
            Ok(handle)
        })
    }

    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        self.with(|s| match &s.conn {
            Some(c) if c.handle == handle && !c.closed => Ok(SocketState::Open),
            Some(c) if c.handle == handle => Err(SocketError::Closed),
            _ => Err(SocketError::BadHandle),
        })
    }

    fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        self.with(|s| {
            let conn = match s.conn.as_mut() {
                Some(c) if c.handle == handle && !c.closed => c,
                _ => return Err(SocketError::Closed),
            };
            if !s.link_up {
                // Held in the air: accepted by the OS, never arrives.
                return Ok(data.len() as u32);
            }
            conn.decoder.feed(data);
            let mut packets = Vec::new();
            while let Ok(Some(p)) = conn.decoder.next_packet() {
                packets.push(p);
            }
            for p in packets {
                s.respond(p);
            }
            Ok(data.len() as u32)
        })
    }

    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        self.with(|s| match s.conn.as_mut() {
            Some(c) if c.handle == handle => {
                if c.inbox.is_empty() && c.closed {
                    return Err(SocketError::Closed);
                }
                if !s.link_up {
                    return Ok(Vec::new());
                }
                let n = c.inbox.len().min(max as usize);
                Ok(c.inbox.drain(..n).collect())
            }
            _ => Err(SocketError::BadHandle),
        })
    }

    fn close(&mut self, handle: u32) {
        self.with(|s| {
            if s.conn.as_ref().is_some_and(|c| c.handle == handle) {
                s.conn = None;
            }
        })
    }
}

impl Clock for Loopback {
    fn now_ms(&mut self) -> u64 {
        self.with(|s| s.now_ms)
    }
}

impl Wifi for Loopback {
    fn state(&mut self) -> LinkState {
        if self.with(|s| s.link_up) {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }
    fn connect(&mut self, _ssid: &str, _password: &str) -> Result<(), String> {
        Err("the loopback platform has no WiFi to join".into())
    }
    fn disconnect(&mut self) {}
}

impl Platform for Loopback {}

/// Linear memory of a client connected to the loopback broker, in bytes: after connecting,
/// and the most it reached while `total` QoS 1 publishes of `payload` bytes went through with
/// `window` of them in flight at a time (the broker holds its PUBACKs until a window is full).
/// Deterministic: the same component gives the same figures. Used by a test that guards the
/// budget and by the benchmark that reports it.
pub fn memory_under_load(component: &crate::ComponentFile, total: usize, window: u16, payload: usize) -> Result<(usize, usize), String> {
    use crate::{default_config, Device, Event, Publish, Qos};
    let lo = Loopback::new();
    let mut config = default_config("broker", "memory");
    config.max_inflight = window;
    config.max_queued = u32::from(window).max(config.max_queued);
    let mut d = Device::new(component, Box::new(lo.clone()), config, "memory").map_err(|e| e.to_string())?;
    d.connect().map_err(|e| e.to_string())?;
    let mut up = false;
    for _ in 0..10 {
        up |= d.poll().map_err(|e| e.to_string())?.iter().any(|e| matches!(e, Event::Up(_)));
    }
    if !up {
        return Err("the client did not connect to the loopback broker".into());
    }
    let start = d.memory_bytes();
    let mut peak = start;
    lo.with(|s| s.hold_acks = true);
    let mut sent = 0;
    while sent < total {
        let n = usize::from(window).min(total - sent);
        for i in 0..n {
            let body = format!("{:0width$}", sent + i, width = payload);
            d.publish(Publish {
                topic: "memory/t".into(),
                payload: body.into_bytes(),
                qos: Qos::AtLeastOnce,
                retain: false,
                properties: None,
                deadline_ms: None,
            })
            .map_err(|e| e.to_string())?;
        }
        d.poll().map_err(|e| e.to_string())?;
        peak = peak.max(d.memory_bytes());
        lo.release_acks();
        let acked = d.poll().map_err(|e| e.to_string())?.iter().filter(|e| matches!(e, Event::Published(_))).count();
        if acked != n {
            return Err(format!("{acked} of {n} publishes acknowledged in one round"));
        }
        peak = peak.max(d.memory_bytes());
        sent += n;
    }
    Ok((start, peak))
}
