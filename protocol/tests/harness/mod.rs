//! A quinn-proto style harness: the client under test, a scripted broker on the other end
//! of an in-memory "socket", and an explicit clock that jumps to the next deadline.

#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use mqtt_protocol::codec::{ConnAck, Decoder, PubResponse, Publish, SubAck};
use mqtt_protocol::store::{Flash, FlashError, Geometry, MemFlash};
use mqtt_protocol::{Action, Client, Config, Event, Instant, LinkState, OutgoingPublish, Packet, PacketId, Properties, ProtocolVersion, QoS};

pub fn config(v5: bool) -> Config {
    Config {
        client_id: "dev-1".into(),
        server: "broker".into(),
        keepalive_secs: 60,
        response_time_ms: 2_000,
        mqttv5: v5,
        backoff_min_ms: 100,
        backoff_max_ms: 1_000,
        ..Config::default()
    }
}

pub fn qos1(topic: &str, payload: &[u8]) -> OutgoingPublish {
    OutgoingPublish { topic: topic.into(), payload: payload.into(), qos: QoS::AtLeastOnce, retain: false, properties: Properties::default() }
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// Flash that outlives each client or store opened on it, as a chip outlives a power cut.
#[derive(Clone)]
pub struct Shared(pub Rc<RefCell<MemFlash>>);

impl Shared {
    pub fn new(geometry: Geometry) -> Shared {
        Shared(Rc::new(RefCell::new(MemFlash::new(geometry))))
    }
}

impl Flash for Shared {
    fn geometry(&self) -> Geometry {
        self.0.borrow().geometry()
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        self.0.borrow_mut().read(offset, len)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        self.0.borrow_mut().write(offset, data)
    }
    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        self.0.borrow_mut().erase(sector)
    }
    fn sync(&mut self) -> Result<(), FlashError> {
        Ok(())
    }
}

/// Flash that keeps only what was synced when the power goes, as the flash contract allows:
/// the chip as [`Volatile::power_cut`] leaves it is the one the last `sync` made durable.
#[derive(Clone)]
pub struct Volatile {
    live: Shared,
    durable: Rc<RefCell<MemFlash>>,
}

impl Volatile {
    pub fn new(geometry: Geometry) -> Volatile {
        Volatile { live: Shared::new(geometry), durable: Rc::new(RefCell::new(MemFlash::new(geometry))) }
    }

    /// The power fails: everything written since the last sync is gone.
    pub fn power_cut(&self) -> Volatile {
        let chip = self.durable.borrow().clone();
        Volatile { live: Shared(Rc::new(RefCell::new(chip.clone()))), durable: Rc::new(RefCell::new(chip)) }
    }
}

impl Flash for Volatile {
    fn geometry(&self) -> Geometry {
        self.live.geometry()
    }
    fn read(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, FlashError> {
        self.live.read(offset, len)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        self.live.write(offset, data)
    }
    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        self.live.erase(sector)
    }
    fn sync(&mut self) -> Result<(), FlashError> {
        *self.durable.borrow_mut() = self.live.0.borrow().clone();
        Ok(())
    }
}

/// What the in-memory network does with a socket the client opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// It opens at once.
    Opens,
    /// Nothing comes back (a lossy path swallows the SYN): it never opens.
    Silent,
    /// Nothing listens: refused at once.
    Refuses,
}

pub struct Harness {
    pub client: Client,
    pub now: Instant,
    pub version: ProtocolVersion,
    /// Packets the client sent, decoded by the broker side, not yet inspected.
    pub sent: Vec<Packet>,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    pub socket_open: bool,
    pub network: Network,
    /// When each `OpenSocket` was asked for.
    pub opened_at: Vec<Instant>,
    broker_decoder: Decoder,
}

impl Harness {
    pub fn new(cfg: Config) -> Self {
        Harness::with_client(Client::new(cfg).expect("valid config"))
    }

    /// Around a client built elsewhere (with a store attached, say).
    pub fn with_client(mut client: Client) -> Self {
        let version = if client.config().mqttv5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        let now = Instant::from_millis(1_000);
        client.handle_link(now, LinkState::Up);
        let mut h = Harness {
            client,
            now,
            version,
            sent: Vec::new(),
            actions: Vec::new(),
            events: Vec::new(),
            socket_open: false,
            network: Network::Opens,
            opened_at: Vec::new(),
            broker_decoder: Decoder::new(version, u32::MAX),
        };
        h.pump();
        h.events.clear();
        h
    }

    /// Collect everything the client wants to do; sockets open at once unless `network`
    /// says otherwise.
    pub fn pump(&mut self) {
        loop {
            let mut progress = false;
            while let Some(bytes) = self.client.poll_transmit() {
                progress = true;
                assert!(self.socket_open, "client transmitted with no socket open");
                self.broker_decoder.feed(&bytes);
                while let Some(p) = self.broker_decoder.next_packet().expect("client sent valid MQTT") {
                    self.sent.push(p);
                }
            }
            while let Some(a) = self.client.poll_action() {
                progress = true;
                match &a {
                    Action::OpenSocket { .. } => {
                        self.opened_at.push(self.now);
                        match self.network {
                            Network::Opens => {
                                self.socket_open = true;
                                self.broker_decoder = Decoder::new(self.version, u32::MAX);
                                self.client.handle_socket_open(self.now);
                            }
                            Network::Silent => {}
                            Network::Refuses => self.client.handle_socket_error(self.now, mqtt_protocol::SocketError::Refused),
                        }
                    }
                    Action::CloseSocket => self.socket_open = false,
                    _ => {}
                }
                self.actions.push(a);
            }
            while let Some(e) = self.client.poll_event() {
                progress = true;
                self.events.push(e);
            }
            if !progress {
                break;
            }
        }
    }

    /// The hosts of the sockets the client asked to open, in order.
    pub fn opened_hosts(&self) -> Vec<String> {
        self.actions.iter().filter_map(|a| if let Action::OpenSocket { host, .. } = a { Some(host.clone()) } else { None }).collect()
    }

    /// The connection to the broker in use is lost and the retry to it refused, so the
    /// attempt after goes to the next broker (`config`'s backoff times).
    pub fn lose_and_fail_over(&mut self) {
        self.client.handle_socket_error(self.now, mqtt_protocol::SocketError::Reset);
        self.pump();
        self.advance(1_000);
        self.client.handle_socket_error(self.now, mqtt_protocol::SocketError::Refused);
        self.pump();
        self.advance(2_000);
    }

    pub fn broker_sends(&mut self, p: Packet) {
        let bytes = p.encode(self.version);
        self.client.handle_input(self.now, &bytes);
        self.pump();
    }

    pub fn connack(&mut self, session_present: bool) {
        self.connack_with(session_present, 0, Properties::default());
    }

    pub fn connack_with(&mut self, session_present: bool, code: u8, properties: Properties) {
        self.broker_sends(Packet::ConnAck(ConnAck { session_present, code, properties }));
    }

    /// Connect and accept with `session_present = false`; clears the record.
    pub fn up(cfg: Config) -> Self {
        let mut h = Harness::new(cfg);
        h.client.connect(h.now).unwrap();
        h.pump();
        h.connack(false);
        h.take_sent();
        h.events.clear();
        h.actions.clear();
        h
    }

    pub fn take_sent(&mut self) -> Vec<Packet> {
        std::mem::take(&mut self.sent)
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        // Visit every deadline on the way, bounded so a livelock fails fast.
        for _ in 0..10_000 {
            match self.client.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = target;
        self.client.handle_timeout(self.now);
        self.pump();
    }

    /// The connection is reset, and from now on new sockets meet `network`.
    pub fn reset_into(&mut self, network: Network) {
        self.network = network;
        self.client.handle_socket_error(self.now, mqtt_protocol::SocketError::Reset);
        self.pump();
    }

    pub fn link(&mut self, state: LinkState) {
        self.client.handle_link(self.now, state);
        self.pump();
    }

    pub fn puback(&mut self, id: PacketId) {
        self.broker_sends(Packet::PubAck(PubResponse { packet_id: id, reason: 0, properties: Properties::default() }));
    }

    pub fn suback(&mut self, id: PacketId, codes: Vec<u8>) {
        self.broker_sends(Packet::SubAck(SubAck { packet_id: id, codes, properties: Properties::default() }));
    }

    pub fn publishes(packets: &[Packet]) -> Vec<&Publish> {
        packets.iter().filter_map(|p| if let Packet::Publish(p) = p { Some(p) } else { None }).collect()
    }
}
