//! An in-memory [`Platform`] with the project's broker model behind it, for tests and
//! benchmarks of code that embeds the component (no sockets, no threads, a manual clock).
//!
//! The broker is [`mqtt_broker_model::Broker`], the one the simulator serves: it answers
//! the way a real one would (sessions, QoS 1/2 flows, retained messages, keepalive), checks
//! the client against the spec ([`LoopbackState::violations`]) and has knobs to drop, hold or
//! delay acknowledgements ([`LoopbackState::broker`]`.knobs`). The test owns the clock:
//! broker deadlines fall due at the first socket call after [`Loopback::advance`] passes them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mqtt_broker_model::{AckKind, Broker, BrokerConfig, ConnId, Event, Output};
use mqtt_protocol::store::{Flash, FlashError, Geometry};

use crate::platform::{Clock, Platform, Socket, Wifi};
use crate::{LinkState, SocketError, SocketState, TlsParams};

/// What the test sees and steers; shared with the platform through [`Loopback::with`].
pub struct LoopbackState {
    pub now_ms: u64,
    pub link_up: bool,
    /// Refuse socket opens (connection refused).
    pub refuse: bool,
    /// The broker: its knobs, sessions and stats.
    pub broker: Broker,
    /// Every PUBLISH the broker received (topic, payload, dup), duplicates included.
    pub received: Vec<(String, Vec<u8>, bool)>,
    pub connects: u32,
    /// The filters of every SUBSCRIBE the broker received, in order.
    pub subscribes: Vec<Vec<String>>,
    /// What the broker saw the client do against the spec (each a failed check).
    pub violations: Vec<String>,
    /// The client id of the last connection.
    client: Option<String>,
    conns: BTreeMap<u32, Conn>,
    next_handle: u32,
}

struct Conn {
    id: ConnId,
    inbox: Vec<u8>,
    closed: bool,
}

#[derive(Clone)]
pub struct Loopback {
    state: Arc<Mutex<LoopbackState>>,
    /// Flash for the power-cut store, when a test or benchmark gives it one.
    flash: Option<SharedFlash>,
}

/// Flash that several owners share: the platform hands it to the component while a test
/// reads its cells and wear counters through its own handle, or boots a second client on
/// it (a power cut). Made from `Arc<Mutex<F>>` for any flash `F` (a `MemFlash`, a
/// [`crate::FileFlash`]).
#[derive(Clone)]
pub struct SharedFlash(pub Arc<Mutex<dyn Flash + Send>>);

impl SharedFlash {
    fn with<T>(&self, f: impl FnOnce(&mut dyn Flash) -> T) -> T {
        f(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Flash for SharedFlash {
    fn geometry(&self) -> Geometry {
        self.with(|f| f.geometry())
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        self.with(|f| f.read(offset, len))
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        self.with(|f| f.write(offset, data))
    }
    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        self.with(|f| f.erase(sector))
    }
    fn sync(&mut self) -> Result<(), FlashError> {
        self.with(|f| f.sync())
    }
}

impl Default for Loopback {
    fn default() -> Self {
        Self::new()
    }
}

impl Loopback {
    /// Link up, clock at 1 ms, and a broker that takes any number of messages in flight.
    pub fn new() -> Self {
        let broker = Broker::new(BrokerConfig { receive_maximum: u16::MAX, ..BrokerConfig::default() });
        let state = LoopbackState {
            now_ms: 1,
            link_up: true,
            refuse: false,
            broker,
            received: Vec::new(),
            connects: 0,
            subscribes: Vec::new(),
            violations: Vec::new(),
            client: None,
            conns: BTreeMap::new(),
            next_handle: 0,
        };
        Loopback { state: Arc::new(Mutex::new(state)), flash: None }
    }

    /// This platform with `flash` for the power-cut store; the caller keeps its own handle
    /// (to read the counters, or to boot another client on the same cells).
    pub fn with_flash<F: Flash + Send + 'static>(mut self, flash: Arc<Mutex<F>>) -> Self {
        self.flash = Some(SharedFlash(flash));
        self
    }

    /// Look at or change the shared state (clock, link, knobs, what the broker saw).
    pub fn with<T>(&self, f: impl FnOnce(&mut LoopbackState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    pub fn advance(&self, ms: u64) {
        self.with(|s| s.now_ms += ms);
    }

    /// The broker drops its next `n` PUBACKs and its next `n` PUBRECs.
    pub fn drop_acks(&self, n: u32) {
        self.with(|s| {
            s.broker.knobs.drop.insert(AckKind::Puback, n);
            s.broker.knobs.drop.insert(AckKind::Pubrec, n);
        });
    }

    /// The broker keeps PUBACK/PUBREC back (a slow broker: the client's in-flight window
    /// fills) until [`Loopback::release_acks`], or answers at once again.
    pub fn hold_acks(&self, hold: bool) {
        self.with(|s| {
            for kind in [AckKind::Puback, AckKind::Pubrec] {
                if hold {
                    s.broker.knobs.hold.insert(kind);
                } else {
                    s.broker.knobs.hold.remove(&kind);
                }
            }
        });
    }

    /// Deliver the acknowledgements held back by [`Loopback::hold_acks`].
    pub fn release_acks(&self) {
        self.with(|s| {
            s.broker.release_held();
            s.pump();
        });
    }

    /// Close the broker side of the connection, as a broker restart would.
    pub fn kill_connection(&self) {
        self.with(|s| {
            let now = s.now_ms;
            let open: Vec<ConnId> = s.conns.values().filter(|c| !c.closed).map(|c| c.id).collect();
            for id in open {
                s.broker.handle_close(now, id);
            }
            s.conns.values_mut().for_each(|c| c.closed = true);
            s.pump();
        });
    }
}

impl LoopbackState {
    /// The filters the client's session holds now (a clean session starts with none).
    pub fn subscriptions(&self) -> Vec<String> {
        self.client.as_deref().map(|c| self.broker.subscriptions(c)).unwrap_or_default()
    }

    /// Connections the client opened and has not closed.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Lets the broker's deadlines that have passed fall due, then carries out what it asks.
    fn tick(&mut self) {
        if self.broker.poll_timeout().is_some_and(|t| t <= self.now_ms) {
            self.broker.handle_timeout(self.now_ms);
        }
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(o) = self.broker.poll_output() {
            match o {
                Output::Transmit { conn, bytes } => {
                    if let Some(c) = self.conns.values_mut().find(|c| c.id == conn) {
                        c.inbox.extend(bytes);
                    }
                }
                Output::Close { conn } => {
                    if let Some(c) = self.conns.values_mut().find(|c| c.id == conn) {
                        c.closed = true;
                    }
                }
                Output::Event(e) => match e {
                    Event::Connected { client, .. } => {
                        self.connects += 1;
                        self.client = Some(client);
                    }
                    Event::Received { topic, payload, dup, .. } => self.received.push((topic, payload, dup)),
                    Event::Subscribed { filters, .. } => self.subscribes.push(filters),
                    Event::Violation { client, what } => self.violations.push(format!("{client} {what}")),
                    _ => {}
                },
            }
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
            let id = s.broker.accept(s.now_ms);
            s.conns.insert(handle, Conn { id, inbox: Vec::new(), closed: false });
            Ok(handle)
        })
    }

    fn status(&mut self, handle: u32) -> Result<SocketState, SocketError> {
        self.with(|s| {
            s.tick();
            match s.conns.get(&handle) {
                Some(c) if !c.closed => Ok(SocketState::Open),
                Some(_) => Err(SocketError::Closed),
                None => Err(SocketError::BadHandle),
            }
        })
    }

    fn send(&mut self, handle: u32, data: &[u8]) -> Result<u32, SocketError> {
        self.with(|s| {
            s.tick();
            let id = match s.conns.get(&handle) {
                Some(c) if !c.closed => c.id,
                _ => return Err(SocketError::Closed),
            };
            if !s.link_up {
                // Held in the air: accepted by the OS, never arrives.
                return Ok(data.len() as u32);
            }
            s.broker.handle_input(s.now_ms, id, data);
            s.pump();
            Ok(data.len() as u32)
        })
    }

    fn recv(&mut self, handle: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        self.with(|s| {
            s.tick();
            let link_up = s.link_up;
            let Some(c) = s.conns.get_mut(&handle) else { return Err(SocketError::BadHandle) };
            if c.inbox.is_empty() && c.closed {
                return Err(SocketError::Closed);
            }
            if !link_up {
                return Ok(Vec::new());
            }
            let n = c.inbox.len().min(max as usize);
            Ok(c.inbox.drain(..n).collect())
        })
    }

    fn close(&mut self, handle: u32) {
        self.with(|s| {
            if let Some(c) = s.conns.remove(&handle) {
                s.broker.handle_close(s.now_ms, c.id);
                s.pump();
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

impl Platform for Loopback {
    fn storage(&mut self) -> Option<&mut dyn Flash> {
        self.flash.as_mut().map(|f| f as &mut dyn Flash)
    }
}

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
    lo.hold_acks(true);
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
