//! The broker's state, the host-facing driving API, its timers and message routing. What it
//! does with each packet is in `packets.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mqtt_protocol::codec::{Connect, Decoder, Disconnect};
use mqtt_protocol::{Packet, PacketId, Properties, ProtocolVersion, QoS};

use crate::session::{Message, Session, Subscription};
use crate::{AckKind, BrokerConfig, ConnId, DropReason, Event, Knobs, Output, Stats};

/// What a connection accepts by default when no Maximum Packet Size is announced.
const DEFAULT_MAX_PACKET: u32 = 1 << 20;

/// The broker model. See the crate docs for how a host drives it.
#[derive(Debug)]
pub struct Broker {
    pub(crate) cfg: BrokerConfig,
    /// Misbehaviour on demand; a host may change them at any time.
    pub knobs: Knobs,
    pub(crate) sessions: BTreeMap<String, Session>,
    pub(crate) retained: BTreeMap<String, Message>,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    pub(crate) challenges: u64,
    out: VecDeque<Output>,
    /// Acknowledgements the knobs made late, in the order they were delayed.
    late: Vec<Late>,
    /// Acknowledgements the knobs hold until [`Broker::release_held`].
    held: Vec<Late>,
    /// Connections whose CONNACK is late: (when, which).
    pub(crate) late_connects: BTreeSet<(u64, ConnId)>,
    /// Keepalive deadlines: (when, which).
    keepalive: BTreeSet<(u64, ConnId)>,
    /// Wills waiting out their MQTT 5 Will Delay Interval.
    pub(crate) wills: Vec<PendingWill>,
    pub(crate) stats: Stats,
}

/// One network connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub decoder: Decoder,
    pub version: ProtocolVersion,
    pub phase: Phase,
    pub keepalive_ms: Option<u64>,
    /// Keepalive deadline, as entered in [`Broker::keepalive`].
    deadline: Option<u64>,
    /// MQTT 5 topic aliases the client set up on this connection.
    pub aliases: BTreeMap<u16, String>,
    /// From the client on this connection: QoS 1/2 packet ids the broker has not finished
    /// acknowledging (PUBACK, or PUBCOMP for QoS 2), with their payloads. Its size is what
    /// the client's Receive Maximum counts.
    pub unacked: BTreeMap<u16, Vec<u8>>,
    /// The will and its delay in ms, from CONNECT.
    pub will: Option<(Message, u64)>,
}

/// Where a connection stands with its CONNECT.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for CONNECT.
    New,
    /// Enhanced authentication: challenged, the answer expected.
    Challenged {
        connect: Box<Connect>,
        expected: Vec<u8>,
    },
    /// The CONNACK is late: the CONNECT is accepted when the time comes, and every packet
    /// after it waits until then.
    Late {
        connect: Box<Connect>,
        backlog: VecDeque<Packet>,
    },
    Open {
        client: String,
    },
}

#[derive(Debug)]
struct Late {
    at: u64,
    conn: ConnId,
    bytes: Vec<u8>,
    /// The packet id this acknowledgement settles on the connection, once it is sent.
    settles: Option<u16>,
}

#[derive(Debug)]
pub(crate) struct PendingWill {
    at: u64,
    pub(crate) client: String,
    message: Message,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The client sent DISCONNECT: no will.
    Clean,
    /// The client sent DISCONNECT with reason 0x04: the will goes out.
    CleanWithWill,
    /// The host says the connection went away: nothing to close.
    Lost,
    /// The broker closes it (a breach, a takeover, keepalive, a server DISCONNECT, a refusal).
    Closed,
}

impl Broker {
    pub fn new(cfg: BrokerConfig) -> Broker {
        Broker {
            cfg,
            knobs: Knobs::default(),
            sessions: BTreeMap::new(),
            retained: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            challenges: 0,
            out: VecDeque::new(),
            late: Vec::new(),
            held: Vec::new(),
            late_connects: BTreeSet::new(),
            keepalive: BTreeSet::new(),
            wills: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A session made before anything runs, as if a `mosquitto_sub -c` had subscribed
    /// earlier: it never expires, and queues for the client until it connects.
    pub fn preset_session(&mut self, client: &str, filters: impl IntoIterator<Item = (String, QoS)>, now: u64) {
        let mut s = Session::new(None, usize::from(self.cfg.receive_maximum));
        s.subscriptions.extend(filters.into_iter().map(|(f, qos)| (f, Subscription { qos, no_local: false, retain_as_published: false })));
        s.disconnected_at = Some(now);
        self.sessions.insert(client.to_string(), s);
    }

    /// The filters a client's session holds now.
    pub fn subscriptions(&self, client: &str) -> Vec<String> {
        self.sessions.get(client).map(|s| s.subscriptions.keys().cloned().collect()).unwrap_or_default()
    }

    /// Whether a client is connected now.
    pub fn is_connected(&self, client: &str) -> bool {
        self.sessions.get(client).is_some_and(|s| s.connection.is_some())
    }

    /// A network connection arrived.
    pub fn accept(&mut self, _now: u64) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let max = self.cfg.maximum_packet_size.unwrap_or(DEFAULT_MAX_PACKET);
        let conn = Conn {
            decoder: Decoder::new(ProtocolVersion::V5, max),
            version: ProtocolVersion::V5,
            phase: Phase::New,
            keepalive_ms: None,
            deadline: None,
            aliases: BTreeMap::new(),
            unacked: BTreeMap::new(),
            will: None,
        };
        self.conns.insert(id, conn);
        id
    }

    /// Bytes arrived on a connection.
    pub fn handle_input(&mut self, now: u64, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.decoder.feed(bytes);
        self.touch(conn, now);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else { return };
            match c.decoder.next_packet() {
                Ok(None) => return,
                Ok(Some(p)) => match &mut c.phase {
                    Phase::Late { backlog, .. } => backlog.push_back(p),
                    _ => self.packet(now, conn, p),
                },
                Err(e) => {
                    let v311 = c.version == ProtocolVersion::V311;
                    let client = self.client_of(conn);
                    match e {
                        // MQTT 3.1.1 cannot announce the limit, so the client broke no rule it
                        // could know; the broker drops the connection, as Mosquitto does.
                        mqtt_protocol::codec::DecodeError::PacketTooLarge { size, max } if v311 => self.event(Event::Oversize { client, size, max }),
                        mqtt_protocol::codec::DecodeError::PacketTooLarge { size, max } => self.violation(
                            &client,
                            format!("sent a packet of {size} bytes, larger than the Maximum Packet Size {max} the broker announced (MQTT-3.1.2-24)"),
                        ),
                        e => self.violation(&client, format!("sent a malformed packet: {e}")),
                    }
                    self.end(now, conn, Ending::Closed);
                    return;
                }
            }
        }
    }

    /// The connection went away under the broker (closed or reset by the peer or the network).
    pub fn handle_close(&mut self, now: u64, conn: ConnId) {
        self.end(now, conn, Ending::Lost);
    }

    /// The earliest instant [`Broker::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let late = self.late.iter().map(|l| l.at).min();
        let wills = self.wills.iter().map(|w| w.at).min();
        [late, wills, self.late_connects.first().map(|e| e.0), self.keepalive.first().map(|e| e.0)].into_iter().flatten().min()
    }

    /// Everything due by `now`: late acknowledgements, late CONNACKs, keepalive expiries and
    /// delayed wills, in that order.
    pub fn handle_timeout(&mut self, now: u64) {
        let (mut due, later): (Vec<Late>, Vec<Late>) = std::mem::take(&mut self.late).into_iter().partition(|l| l.at <= now);
        self.late = later;
        due.sort_by_key(|l| l.at);
        for l in due {
            self.release(l);
        }
        while let Some(&(at, conn)) = self.late_connects.first()
            && at <= now
        {
            self.late_connects.pop_first();
            self.accept_late_connect(now, conn);
        }
        while let Some(&(at, conn)) = self.keepalive.first()
            && at <= now
        {
            let client = self.client_of(conn);
            self.event(Event::KeepaliveExpired { client });
            self.end(now, conn, Ending::Closed);
        }
        let (due, later): (Vec<PendingWill>, Vec<PendingWill>) = std::mem::take(&mut self.wills).into_iter().partition(|w| w.at <= now);
        self.wills = later;
        // (A reconnect within the delay already cancelled its will: see `connect`.)
        for w in due {
            self.publish_will(now, w.client, w.message);
        }
    }

    /// What to do next, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A message from elsewhere (another publisher), routed like a client's.
    pub fn publish(&mut self, now: u64, message: Message) {
        self.route(now, message, None);
    }

    /// Sends the acknowledgements [`Knobs::hold`] kept back, in the order they were held.
    pub fn release_held(&mut self) {
        for l in std::mem::take(&mut self.held) {
            self.release(l);
        }
    }

    /// The client lost power with nothing kept: it cannot know which of its publishes'
    /// acknowledgements were lost, so reusing their packet ids is no longer its fault (the
    /// session itself, and what the broker owes the client, stay).
    pub fn client_forgot(&mut self, client: &str) {
        if let Some(s) = self.sessions.get_mut(client) {
            s.owed.clear();
        }
    }

    /// The broker crashed: every connection is gone (the host drops the sockets; no will
    /// fires) and the sessions survive only if `persist`.
    pub fn crash(&mut self, now: u64, persist: bool) {
        self.conns.clear();
        self.out.retain(|o| matches!(o, Output::Event(_)));
        self.late.clear();
        self.held.clear();
        self.late_connects.clear();
        self.keepalive.clear();
        self.wills.clear();
        if persist {
            for s in self.sessions.values_mut() {
                s.connection = None;
                s.disconnected_at = Some(now);
            }
            return;
        }
        for (client, s) in std::mem::take(&mut self.sessions) {
            for m in s.undelivered() {
                self.out.push_back(Output::Event(Event::Dropped { client: client.clone(), message: m.clone(), why: DropReason::Crashed }));
            }
        }
        self.retained.clear();
    }

    /// MQTT 5: the server tells every connected client to go away (3.1.1 connections are
    /// just closed). Their wills go out.
    pub fn server_disconnect(&mut self, now: u64, reason: u8) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if self.conns[&id].version == ProtocolVersion::V5 {
                self.send(id, Packet::Disconnect(Disconnect { reason, properties: Properties::default() }));
            }
            self.end(now, id, Ending::Closed);
        }
    }

    // ---- for packets.rs ----

    pub(crate) fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    pub(crate) fn violation(&mut self, client: &str, what: String) {
        self.stats.violations += 1;
        self.event(Event::Violation { client: client.to_string(), what });
    }

    /// The client id of an open connection ("" before CONNECT).
    pub(crate) fn client_of(&self, conn: ConnId) -> String {
        match self.conns.get(&conn).map(|c| &c.phase) {
            Some(Phase::Open { client }) => client.clone(),
            Some(Phase::Challenged { connect, .. } | Phase::Late { connect, .. }) => connect.client_id.clone(),
            _ => String::new(),
        }
    }

    pub(crate) fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        // Consecutive writes to one connection go out as one, as a socket buffer would.
        if let Some(Output::Transmit { conn: last, bytes: b }) = self.out.back_mut()
            && *last == conn
        {
            b.extend_from_slice(&bytes);
            return;
        }
        self.out.push_back(Output::Transmit { conn, bytes });
    }

    pub(crate) fn send(&mut self, conn: ConnId, p: Packet) {
        if let Some(c) = self.conns.get(&conn) {
            let bytes = p.encode(c.version);
            self.transmit(conn, bytes);
        }
    }

    /// Sends an acknowledgement, unless the knobs drop it (false), hold it or make it late.
    /// `settles` names the client's packet id it finishes acknowledging.
    pub(crate) fn acknowledge(&mut self, now: u64, conn: ConnId, kind: AckKind, p: Packet, settles: Option<u16>) -> bool {
        if self.knobs.take_drop(kind) {
            self.event(Event::AckDropped { packet: p.name() });
            return false;
        }
        let Some(c) = self.conns.get(&conn) else { return true };
        let late = Late { at: now, conn, bytes: p.encode(c.version), settles };
        if self.knobs.hold.contains(&kind) {
            self.held.push(late);
        } else if let Some(ms) = self.knobs.take_delay(kind) {
            self.event(Event::AckDelayed { packet: p.name(), ms });
            self.late.push(Late { at: now + ms, ..late });
        } else {
            self.release(late);
        }
        true
    }

    fn release(&mut self, l: Late) {
        let Some(c) = self.conns.get_mut(&l.conn) else { return };
        if let Some(id) = l.settles {
            c.unacked.remove(&id);
        }
        self.transmit(l.conn, l.bytes);
    }

    /// Restarts a connection's keepalive clock: 1.5 × keepalive without a packet ends it.
    pub(crate) fn touch(&mut self, conn: ConnId, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Some(ka) = c.keepalive_ms else { return };
        if let Some(old) = c.deadline.take() {
            self.keepalive.remove(&(old, conn));
        }
        let at = now + ka * 3 / 2;
        c.deadline = Some(at);
        self.keepalive.insert((at, conn));
    }

    /// The connection is over: closes it unless the host already lost it, ends the session
    /// if it does not outlive the connection, and sends the will unless the client said
    /// goodbye without one.
    pub(crate) fn end(&mut self, now: u64, conn: ConnId, how: Ending) {
        let Some(c) = self.conns.remove(&conn) else { return };
        if let Some(at) = c.deadline {
            self.keepalive.remove(&(at, conn));
        }
        if how != Ending::Lost {
            self.out.push_back(Output::Close { conn });
        }
        let Phase::Open { client } = c.phase else { return };
        if let Some(s) = self.sessions.get_mut(&client)
            && s.connection == Some(conn)
        {
            s.connection = None;
            s.disconnected_at = Some(now);
            if s.expiry_ms == Some(0) {
                self.end_session(&client);
            }
        }
        if how == Ending::Clean {
            return;
        }
        if let Some((message, delay)) = c.will {
            if delay == 0 {
                self.publish_will(now, client, message);
            } else {
                self.wills.push(PendingWill { at: now + delay, client, message });
            }
        }
    }

    /// Discards a session and what it still held for the client.
    pub(crate) fn end_session(&mut self, client: &str) {
        let Some(s) = self.sessions.remove(client) else { return };
        for m in s.undelivered() {
            self.out.push_back(Output::Event(Event::Dropped { client: client.to_string(), message: m.clone(), why: DropReason::SessionEnded }));
        }
    }

    fn publish_will(&mut self, now: u64, client: String, message: Message) {
        self.event(Event::WillPublished { client, topic: message.topic.clone() });
        self.route(now, message, None);
    }

    /// A message the broker accepted (from the client `from`, if a client sent it): to the
    /// retained store and every matching session.
    pub(crate) fn route(&mut self, now: u64, message: Message, from: Option<&str>) {
        if message.retain {
            if message.payload.is_empty() {
                self.retained.remove(&message.topic);
            } else {
                self.retained.insert(message.topic.clone(), message.clone());
            }
        }
        let targets: Vec<(String, (QoS, bool))> =
            self.sessions.iter().filter_map(|(client, s)| Some((client.clone(), s.granted(&message.topic, from == Some(client.as_str()))?))).collect();
        self.event(Event::Routed { message: message.clone(), to: targets.iter().map(|(c, _)| c.clone()).collect() });
        for (client, (granted, as_published)) in targets {
            // A live message goes out without the retain flag unless the subscription asked for
            // it as published (MQTT 5 3.3.1.3); retained ones sent on subscribe keep it.
            let m = Message { qos: message.qos.min(granted), retain: as_published && message.retain, ..message.clone() };
            self.deliver(now, &client, m);
        }
    }

    /// Hands a message to a session: QoS 0 goes out now or never, QoS 1/2 through its queue.
    pub(crate) fn deliver(&mut self, now: u64, client: &str, message: Message) {
        let max_queued = self.cfg.max_queued_messages;
        let Some(s) = self.sessions.get_mut(client) else { return };
        if message.qos == QoS::AtMostOnce {
            if let Some(conn) = s.connection {
                self.send(conn, message.packet(None, false, now));
            }
            return;
        }
        s.queue.push_back(message);
        if s.queue.len() > max_queued
            && let Some(old) = s.queue.pop_front()
        {
            self.event(Event::Dropped { client: client.to_string(), message: old, why: DropReason::QueueFull });
        }
        self.flush(now, client);
    }

    /// Sends queued QoS 1/2 messages while the session's window has room.
    pub(crate) fn flush(&mut self, now: u64, client: &str) {
        let Some(s) = self.sessions.get_mut(client) else { return };
        let Some(conn) = s.connection else { return };
        let mut out = Vec::new();
        let mut expired = Vec::new();
        while s.inflight.len() < s.window {
            let Some(m) = s.queue.pop_front() else { break };
            if m.expires_at.is_some_and(|t| t <= now) {
                expired.push(m);
                continue;
            }
            let id = s.next_packet_id();
            s.inflight.insert(id.get(), (m.clone(), false));
            out.push((id, m));
        }
        let inflight = s.inflight.len() as u64;
        match self.stats.max_inflight.get_mut(client) {
            Some(max) => *max = (*max).max(inflight),
            None => {
                self.stats.max_inflight.insert(client.to_string(), inflight);
            }
        }
        for m in expired {
            self.stats.expired += 1;
            self.event(Event::Dropped { client: client.to_string(), message: m, why: DropReason::Expired });
        }
        for (id, m) in out {
            self.send(conn, m.packet(Some(id), false, now));
        }
    }

    /// Resends what was in flight to a resumed session (DUP, or PUBREL once PUBREC came),
    /// then what queued while it was away.
    pub(crate) fn resume(&mut self, now: u64, conn: ConnId, client: &str) {
        let resend: Vec<(u16, Message, bool)> = self.sessions[client].inflight.iter().map(|(k, (m, rel))| (*k, m.clone(), *rel)).collect();
        for (id, m, released) in resend {
            let id = PacketId::new(id).expect("stored ids are non-zero");
            if released {
                self.send(conn, Packet::PubRel(mqtt_protocol::codec::PubResponse { packet_id: id, reason: 0, properties: Properties::default() }));
            } else {
                self.send(conn, m.packet(Some(id), true, now));
            }
        }
        self.flush(now, client);
    }

    /// Takes the CONNECT a late CONNACK held back, then the packets that waited behind it.
    fn accept_late_connect(&mut self, now: u64, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Phase::Late { connect, backlog } = std::mem::replace(&mut c.phase, Phase::New) else { return };
        self.connect(now, conn, *connect);
        for p in backlog {
            if !self.conns.contains_key(&conn) {
                return;
            }
            self.packet(now, conn, p);
        }
    }
}
