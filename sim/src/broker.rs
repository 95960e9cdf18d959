//! An MQTT 3.1.1 / 5.0 broker model over turmoil TCP, written against the same codec as the
//! client. It behaves like Mosquitto where the spec leaves a choice: QoS 1 duplicates are
//! forwarded, offline sessions queue QoS 1/2 messages up to `max_queued_messages`
//! (dropping the oldest), wills fire on keepalive × 1.5 expiry or a drop without
//! DISCONNECT.
//!
//! Its state lives outside the host's tasks so a restart can keep it (persistent sessions)
//! or lose it. A crash ends the broker's tasks, not its host: the observer shares the host
//! (one host fewer for turmoil to step: it costs about 0.8 µs per host per tick whatever
//! runs there) and must live through the crash, as a subscriber on another machine would.
//! The observer is a separate client (see [`crate::observer`]); its session is
//! made here before the simulation starts, as if a `mosquitto_sub -c` had subscribed
//! earlier, so nothing published at t = 0 races its SUBSCRIBE. The broker also keeps its own
//! record of what it accepted on the observed topics and of what it let go of (queue
//! overflow, expiry, a restart without persistence, no subscriber): Mosquitto's `$SYS`
//! counters, so a message missing at the observer is blamed on the right side.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mqtt_protocol::codec::{topic::topic_matches, ConnAck, Decoder, Disconnect, PubResponse, Publish, SubAck};
use mqtt_protocol::{Packet, PacketId, Properties, ProtocolVersion, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

use crate::scenario::{AckKind, BrokerSpec, Inject};
use crate::world::{now_ms, payload_with_seq, seq_of, Delivery, Shared};

pub const PORT: u16 = 1883;

/// The observer client's id.
pub const OBSERVER_ID: &str = "observer";

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    /// Absolute expiry (simulated ms), MQTT 5.
    expires_at: Option<u64>,
}

#[derive(Debug)]
struct Session {
    clean: bool,
    v5: bool,
    expiry_ms: Option<u64>,
    subscriptions: BTreeMap<String, QoS>,
    /// Sent and not yet acknowledged, by packet id, in send order.
    inflight: BTreeMap<u16, (Msg, bool)>,
    queue: VecDeque<Msg>,
    next_pid: u16,
    incoming_qos2: BTreeSet<u16>,
    /// Packet ids of the client's QoS 1/2 publishes whose PUBACK/PUBREC we dropped: the
    /// client cannot have seen the acknowledgement, so the next PUBLISH with such an id is a
    /// resend and must carry DUP (MQTT-3.3.1-1).
    owed_resend: BTreeSet<u16>,
    connection: Option<u64>,
    disconnected_at: Option<u64>,
    window: usize,
}

impl Session {
    /// A fresh session: nothing subscribed, queued or in flight, not connected.
    fn new(clean: bool, v5: bool, expiry_ms: Option<u64>, window: usize) -> Session {
        Session {
            clean,
            v5,
            expiry_ms,
            subscriptions: BTreeMap::new(),
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            next_pid: 0,
            incoming_qos2: BTreeSet::new(),
            owed_resend: BTreeSet::new(),
            connection: None,
            disconnected_at: None,
            window,
        }
    }
}

struct Conn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    version: ProtocolVersion,
    client_id: String,
    /// MQTT 5 topic aliases the client set up on this connection.
    aliases: BTreeMap<u16, String>,
}

/// Where a CONNECT stands with enhanced authentication.
enum AuthStep {
    NotRequired,
    /// Challenge sent; the answer expected.
    Challenged(Vec<u8>),
    Refused,
}

/// The simulator's stand-in for a challenge–response mechanism (SCRAM, Kerberos …): the
/// answer is the challenge XORed with the shared secret. It models the exchange (a round
/// trip the application answers, on every reconnect), not the cryptography.
pub fn auth_answer(challenge: &[u8], secret: &[u8]) -> Vec<u8> {
    challenge.iter().zip(secret.iter().cycle()).map(|(c, s)| c ^ s).collect()
}

/// Knobs the timeline turns.
#[derive(Debug, Default)]
pub struct Knobs {
    pub drop: BTreeMap<AckKind, u32>,
    /// The next N of a kind are sent this many ms late (count, ms).
    pub delay: BTreeMap<AckKind, (u32, u64)>,
    pub refuse_code: Option<u8>,
    pub stop_pings: bool,
}

pub struct BrokerState {
    spec: BrokerSpec,
    sessions: BTreeMap<String, Session>,
    retained: BTreeMap<String, Msg>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    pub knobs: Knobs,
    observe: Vec<String>,
    device_ids: Vec<String>,
    inject: Vec<Inject>,
    inject_next: Vec<u64>,
    /// Every task the broker's software runs, so a crash can end them all at once.
    tasks: Vec<AbortHandle>,
}

impl BrokerState {
    /// Registers one of the broker's tasks (finished ones are forgotten here, which keeps
    /// the list as long as the live connections).
    fn track<T>(&mut self, task: JoinHandle<T>) -> JoinHandle<T> {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task.abort_handle());
        task
    }
}

/// What the timeline asks of the broker's software.
#[derive(Debug, Clone, Copy)]
enum Power {
    Crash,
    Restart,
}

#[derive(Clone)]
pub struct Broker {
    state: Arc<Mutex<BrokerState>>,
    /// Orders from the timeline (which runs outside the simulated hosts) to the broker's
    /// software, kept in the order given: a crash and a restart at the same instant must
    /// both happen.
    orders: mpsc::UnboundedSender<Power>,
    /// Read by [`Broker::run`] alone; the lock only lets `Broker` stay `Clone`.
    orders_in: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Power>>>,
    world: Shared,
}

impl Broker {
    pub fn new(spec: BrokerSpec, observe: Vec<String>, device_ids: Vec<String>, inject: Vec<Inject>, world: Shared) -> Self {
        let n = inject.len();
        let observer_session = Session {
            subscriptions: observe.iter().map(|f| (f.clone(), QoS::ExactlyOnce)).collect(),
            disconnected_at: Some(0),
            ..Session::new(false, true, None, usize::from(spec.receive_maximum))
        };
        let state = BrokerState {
            spec,
            sessions: BTreeMap::new(),
            retained: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            knobs: Knobs::default(),
            observe,
            device_ids,
            inject,
            inject_next: vec![0; n],
            tasks: Vec::new(),
        };
        let (orders, orders_in) = mpsc::unbounded_channel();
        let broker = Broker { state: Arc::new(Mutex::new(state)), orders, orders_in: Arc::new(tokio::sync::Mutex::new(orders_in)), world };
        broker.lock().sessions.insert(OBSERVER_ID.to_string(), observer_session);
        broker
    }

    pub fn lock(&self) -> MutexGuard<'_, BrokerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The broker crashed: its connections are gone; sessions survive only if `persist`.
    /// Its tasks end now (an aborted task is never polled again, so no connection notices
    /// and, say, publishes a will); their sockets close when the host's runtime drops them,
    /// at its next tick.
    pub fn crash(&self, persist: bool) {
        let mut s = self.lock();
        s.tasks.drain(..).for_each(|t| t.abort());
        // The receiver lives as long as the broker: sending cannot fail.
        let _ = self.orders.send(Power::Crash);
        s.conns.clear();
        let now = now_ms();
        if persist {
            for sess in s.sessions.values_mut() {
                sess.connection = None;
                sess.disconnected_at = Some(now);
            }
        } else {
            if let Some(obs) = s.sessions.get(OBSERVER_ID) {
                let lost: Vec<Option<u64>> =
                    obs.inflight.values().map(|(m, _)| &m.payload).chain(obs.queue.iter().map(|m| &m.payload)).map(|p| seq_of(p)).collect();
                let mut w = self.world.lock();
                w.rec.broker_dropped.extend(lost.into_iter().map(|seq| (seq, "broker restarted without persistence".to_string())));
            }
            s.sessions.clear();
            s.retained.clear();
        }
    }

    /// MQTT 5: tell every connected client to go away.
    pub fn server_disconnect(&self, reason: u8) {
        let mut s = self.lock();
        let ids: Vec<u64> = s.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = s.conns.get(&id)
                && c.version == ProtocolVersion::V5
            {
                let _ = c.tx.send(Packet::Disconnect(Disconnect { reason, properties: Properties::default() }).encode(c.version));
            }
            // Closing the writer channel ends the connection task after it flushed.
            s.conns.remove(&id);
        }
    }

    /// The broker starts again after a crash (its sessions as [`Broker::crash`] left them).
    pub fn restart(&self) {
        let _ = self.orders.send(Power::Restart);
    }

    /// The broker's software: serves until the timeline crashes it, waits to be restarted,
    /// serves again.
    pub async fn run(self) -> turmoil::Result {
        let mut orders = self.orders_in.lock().await;
        loop {
            let order = tokio::select! {
                // Biased: with an order waiting, the listener must not accept once more.
                biased;
                order = orders.recv() => order,
                served = self.clone().serve() => return served,
            };
            // Leaving the select dropped the listener: the port is free for the restart.
            match order {
                Some(Power::Restart) => {}
                Some(Power::Crash) => loop {
                    match orders.recv().await {
                        Some(Power::Restart) => break,
                        Some(Power::Crash) => {}
                        None => return Ok(()),
                    }
                },
                // `self` holds a sender, so the channel never closes while this runs.
                None => return Ok(()),
            }
        }
    }

    /// Accept connections and run the injector.
    async fn serve(self) -> turmoil::Result {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
        let injector = self.clone();
        self.spawn(async move { injector.inject_loop().await });
        loop {
            let (stream, _) = listener.accept().await?;
            let me = self.clone();
            self.spawn(async move { me.connection(stream).await });
        }
    }

    /// Spawns one of the broker's tasks, so that a crash ends it.
    fn spawn<T: Send + 'static>(&self, task: impl std::future::Future<Output = T> + Send + 'static) -> JoinHandle<T> {
        let handle = tokio::spawn(task);
        self.lock().track(handle)
    }

    async fn inject_loop(self) {
        loop {
            let now = now_ms();
            let mut next_wake = u64::MAX;
            {
                let mut s = self.lock();
                for i in 0..s.inject.len() {
                    let spec = s.inject[i].clone();
                    loop {
                        let k = s.inject_next[i];
                        if k >= spec.count {
                            break;
                        }
                        let at = (spec.start_s * 1000.0) as u64 + k * spec.every_ms;
                        if at > now {
                            next_wake = next_wake.min(at);
                            break;
                        }
                        s.inject_next[i] += 1;
                        let seq = 1_000_000 + (i as u64) * 100_000 + k;
                        let msg = Msg {
                            topic: spec.topic.clone(),
                            payload: payload_with_seq(seq, 16),
                            qos: QoS::from_u8(spec.qos).unwrap_or(QoS::AtLeastOnce),
                            retain: spec.retain,
                            expires_at: spec.message_expiry_s.map(|e| now + u64::from(e) * 1000),
                        };
                        self.world.lock().rec.injected.push((seq, now, spec.topic.clone()));
                        s.route(&msg, &self.world);
                    }
                }
            }
            if next_wake == u64::MAX {
                return;
            }
            tokio::time::sleep(Duration::from_millis(next_wake - now)).await;
        }
    }

    async fn connection(self, stream: turmoil::net::TcpStream) {
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = self.spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
            // The broker dropped the connection (DISCONNECT sent, or kicked): close it.
            let _ = wr.shutdown().await;
        });
        let mut decoder = Decoder::new(ProtocolVersion::V5, 1 << 20);
        let mut buf = vec![0u8; 16 * 1024];
        let mut conn_id: Option<u64> = None;
        let mut keepalive_ms: Option<u64> = None;
        let mut clean_exit = false;
        let mut will: Option<(Msg, u64)> = None;
        // Enhanced authentication: the CONNECT waiting for the answer to our challenge, and
        // the answer expected.
        let mut pending_auth: Option<(mqtt_protocol::codec::Connect, Vec<u8>)> = None;
        'conn: loop {
            // Keepalive enforcement: 1.5 × keepalive without a packet ends the connection.
            let read = match keepalive_ms {
                Some(ka) => match tokio::time::timeout(Duration::from_millis(ka * 3 / 2), rd.read(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.world.lock().log(now_ms(), "broker", "keepalive_expired", json!({}));
                        break;
                    }
                },
                None => rd.read(&mut buf).await,
            };
            let n = match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if conn_id.is_some_and(|id| !self.lock().conns.contains_key(&id)) {
                break; // kicked while we waited
            }
            decoder.feed(&buf[..n]);
            loop {
                let packet = match decoder.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        let mut w = self.world.lock();
                        w.log(now_ms(), "broker", "malformed", json!({ "error": e.to_string() }));
                        w.rec.protocol_violations.push(format!("malformed packet from a client: {e}"));
                        break 'conn;
                    }
                };
                let accepted = match (conn_id, packet) {
                    (None, Packet::Connect(c)) if pending_auth.is_none() => {
                        decoder.set_version(c.protocol);
                        match self.lock().auth_challenge(&c, &tx, &self.world) {
                            AuthStep::NotRequired => Some(c),
                            AuthStep::Challenged(expected) => {
                                pending_auth = Some((c, expected));
                                None
                            }
                            AuthStep::Refused => break 'conn,
                        }
                    }
                    (None, Packet::Auth(a)) if pending_auth.is_some() => {
                        let (c, expected) = pending_auth.take().expect("checked by the guard");
                        if !self.lock().auth_verify(&c, &a, &expected, &tx, &self.world) {
                            break 'conn;
                        }
                        Some(c)
                    }
                    (None, _) => break 'conn,
                    (Some(_), Packet::Disconnect(d)) => {
                        // MQTT 5 reason 0x04: disconnect with will message.
                        clean_exit = d.reason != 0x04;
                        break 'conn;
                    }
                    (Some(id), p) => {
                        if !self.lock().packet(id, p, &self.world) {
                            break 'conn;
                        }
                        None
                    }
                };
                if let Some(c) = accepted {
                    // A slow broker: CONNACK (and everything after it) comes late.
                    let late = delay_knob(&mut self.lock().knobs, AckKind::Connack);
                    if let Some(ms) = late {
                        self.world.lock().log(now_ms(), "broker", "delayed", json!({ "packet": "CONNACK", "ms": ms }));
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    match self.lock().connect(&c, tx.clone(), &self.world) {
                        Some((id, ka)) => {
                            conn_id = Some(id);
                            keepalive_ms = (ka > 0).then_some(u64::from(ka) * 1000);
                            will = c.will.as_ref().map(|w| {
                                let msg = Msg { topic: w.topic.clone(), payload: w.payload.clone(), qos: w.qos, retain: w.retain, expires_at: None };
                                (msg, u64::from(w.properties.will_delay_interval.unwrap_or(0)) * 1000)
                            });
                        }
                        None => break 'conn,
                    }
                }
            }
        }
        let (client_id, session_gone) = match conn_id {
            Some(id) => self.lock().disconnected(id),
            None => (String::new(), false),
        };
        if !clean_exit && let Some((msg, delay)) = will {
            let me = self.clone();
            self.spawn(async move { me.fire_will(client_id, msg, delay, session_gone).await });
        }
        if conn_id.is_none() {
            // Refused: the CONNACK with the reason (or nothing) goes out before the close, as
            // a real broker's does. Nothing else holds a sender for a refused connection.
            drop(tx);
            let _ = tokio::time::timeout(Duration::from_millis(100), writer).await;
        } else {
            writer.abort();
        }
    }

    async fn fire_will(self, client_id: String, msg: Msg, delay_ms: u64, _session_gone: bool) {
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            // A reconnect within the delay cancels the will (MQTT 5 3.1.3.2.2).
            if self.lock().sessions.get(&client_id).is_some_and(|s| s.connection.is_some()) {
                return;
            }
        }
        self.world.lock().log(now_ms(), "broker", "will", json!({ "topic": msg.topic, "client": client_id }));
        self.lock().route(&msg, &self.world);
    }
}

fn delay_knob(knobs: &mut Knobs, kind: AckKind) -> Option<u64> {
    match knobs.delay.get_mut(&kind) {
        Some((n, ms)) if *n > 0 => {
            *n -= 1;
            Some(*ms)
        }
        _ => None,
    }
}

fn drop_knob(knobs: &mut Knobs, kind: AckKind) -> bool {
    match knobs.drop.get_mut(&kind) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

impl BrokerState {
    /// Send an acknowledgement, unless the timeline says to drop it or send it late (the
    /// late one alone: later packets overtake it, as a broker slow to persist would do).
    /// False when it was dropped.
    fn acknowledge(&mut self, conn: u64, kind: AckKind, p: Packet, world: &Shared) -> bool {
        let now = now_ms();
        if drop_knob(&mut self.knobs, kind) {
            world.lock().log(now, "broker", "dropped", json!({ "packet": p.name() }));
            return false;
        }
        let Some(c) = self.conns.get(&conn) else { return true };
        let bytes = p.encode(c.version);
        match delay_knob(&mut self.knobs, kind) {
            Some(ms) => {
                world.lock().log(now, "broker", "delayed", json!({ "packet": p.name(), "ms": ms }));
                let tx = c.tx.clone();
                self.track(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = tx.send(bytes);
                }));
            }
            None => {
                let _ = c.tx.send(bytes);
            }
        }
        true
    }

    fn send(&self, conn: u64, p: Packet) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(p.encode(c.version));
        }
    }

    /// Enhanced authentication (MQTT 5 4.12), when the scenario's broker demands it: a
    /// CONNECT naming another method is refused, else challenged.
    fn auth_challenge(&mut self, c: &mqtt_protocol::codec::Connect, tx: &mpsc::UnboundedSender<Vec<u8>>, world: &Shared) -> AuthStep {
        let (Some(method), Some(secret)) = (&self.spec.auth_method, &self.spec.auth_secret) else { return AuthStep::NotRequired };
        if c.client_id == OBSERVER_ID {
            // The observer is the test's instrument, not the system under test.
            return AuthStep::NotRequired;
        }
        let now = now_ms();
        if c.properties.authentication_method.as_ref() != Some(method) {
            // 0x8C Bad authentication method (MQTT 5); 5 Not authorized (3.1.1).
            let code = if c.protocol == ProtocolVersion::V5 { 0x8C } else { 5 };
            let _ = tx.send(Packet::ConnAck(ConnAck { session_present: false, code, properties: Properties::default() }).encode(c.protocol));
            world.lock().log(now, "broker", "refused", json!({ "code": code, "why": "authentication method" }));
            return AuthStep::Refused;
        }
        self.next_conn += 1;
        let challenge = format!("{}:{}", c.client_id, self.next_conn).into_bytes();
        let expected = auth_answer(&challenge, secret.as_bytes());
        let properties = Properties { authentication_method: Some(method.clone()), authentication_data: Some(challenge), ..Properties::default() };
        let _ = tx.send(Packet::Auth(Disconnect { reason: 0x18, properties }).encode(c.protocol));
        world.lock().log(now, "broker", "auth_challenge", json!({ "client": c.client_id }));
        AuthStep::Challenged(expected)
    }

    /// The client's AUTH answering our challenge: right, or refused with 0x87.
    fn auth_verify(&mut self, c: &mqtt_protocol::codec::Connect, a: &Disconnect, expected: &[u8], tx: &mpsc::UnboundedSender<Vec<u8>>, world: &Shared) -> bool {
        let ok =
            a.reason == 0x18 && a.properties.authentication_method == self.spec.auth_method && a.properties.authentication_data.as_deref() == Some(expected);
        let now = now_ms();
        if ok {
            world.lock().log(now, "broker", "authenticated", json!({ "client": c.client_id }));
        } else {
            let _ = tx.send(Packet::ConnAck(ConnAck { session_present: false, code: 0x87, properties: Properties::default() }).encode(c.protocol));
            world.lock().log(now, "broker", "refused", json!({ "code": 0x87, "why": "wrong authentication answer" }));
        }
        ok
    }

    /// CONNECT: returns the connection id and the keepalive, or refuses.
    fn connect(&mut self, c: &mqtt_protocol::codec::Connect, tx: mpsc::UnboundedSender<Vec<u8>>, world: &Shared) -> Option<(u64, u16)> {
        let v5 = c.protocol == ProtocolVersion::V5;
        let now = now_ms();
        if let Some(code) = self.knobs.refuse_code {
            let _ = tx.send(Packet::ConnAck(ConnAck { session_present: false, code, properties: Properties::default() }).encode(c.protocol));
            world.lock().log(now, "broker", "refused", json!({ "code": code }));
            return None;
        }
        self.next_conn += 1;
        let id = self.next_conn;
        let client_id = if c.client_id.is_empty() { format!("auto-{id}") } else { c.client_id.clone() };
        // Take over: a second connection with the same id closes the first.
        if let Some(old) = self.sessions.get(&client_id).and_then(|s| s.connection) {
            self.conns.remove(&old);
        }
        let expired = self.sessions.get(&client_id).is_some_and(|s| match (s.expiry_ms, s.disconnected_at) {
            (Some(e), Some(at)) => now.saturating_sub(at) > e,
            _ => false,
        });
        if c.clean_start || expired {
            self.sessions.remove(&client_id);
        }
        let present = self.sessions.contains_key(&client_id);
        let window = if v5 { usize::from(c.properties.receive_maximum.unwrap_or(u16::MAX)) } else { usize::MAX };
        let expiry_ms = if v5 {
            Some(u64::from(c.properties.session_expiry_interval.unwrap_or(0)) * 1000)
        } else if c.clean_start {
            Some(0)
        } else {
            None
        };
        let sess = self.sessions.entry(client_id.clone()).or_insert_with(|| Session::new(c.clean_start, v5, expiry_ms, window));
        sess.connection = Some(id);
        sess.disconnected_at = None;
        sess.clean = c.clean_start;
        sess.v5 = v5;
        sess.expiry_ms = expiry_ms;
        sess.window = window.min(usize::from(self.spec.receive_maximum));
        self.conns.insert(id, Conn { tx, version: c.protocol, client_id: client_id.clone(), aliases: BTreeMap::new() });
        let mut properties = Properties::default();
        if v5 {
            properties.receive_maximum = Some(self.spec.receive_maximum);
            if self.spec.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(self.spec.topic_alias_maximum);
            }
            if c.client_id.is_empty() {
                properties.assigned_client_identifier = Some(client_id.clone());
            }
            if self.spec.auth_method.is_some() {
                // The exchange's last word, as SCRAM's server signature would be.
                properties.authentication_method = self.spec.auth_method.clone();
                properties.authentication_data = Some(b"welcome".to_vec());
            }
        }
        world.lock().log(now, "broker", "connect", json!({ "client": client_id, "clean": c.clean_start, "session_present": present }));
        self.acknowledge(id, AckKind::Connack, Packet::ConnAck(ConnAck { session_present: present, code: 0, properties }), world);
        // Resume: resend what was in flight (DUP), then the queue.
        let resend: Vec<(u16, Msg, bool)> = self.sessions[&client_id].inflight.iter().map(|(k, (m, rel))| (*k, m.clone(), *rel)).collect();
        for (pid, msg, released) in resend {
            let pid = PacketId::new(pid).expect("stored ids are non-zero");
            if released {
                self.send(id, Packet::PubRel(PubResponse { packet_id: pid, reason: 0, properties: Properties::default() }));
            } else {
                self.send(id, publish_packet(&msg, Some(pid), true));
            }
        }
        self.flush_queue(&client_id, world);
        Some((id, c.keep_alive))
    }

    fn disconnected(&mut self, id: u64) -> (String, bool) {
        let Some(conn) = self.conns.remove(&id) else {
            // Kicked or crashed: find the session that pointed here.
            let cid = self.sessions.iter().find(|(_, s)| s.connection == Some(id)).map(|(k, _)| k.clone());
            if let Some(cid) = &cid
                && let Some(s) = self.sessions.get_mut(cid)
            {
                s.connection = None;
                s.disconnected_at = Some(now_ms());
            }
            return (cid.unwrap_or_default(), false);
        };
        let mut gone = false;
        if let Some(s) = self.sessions.get_mut(&conn.client_id)
            && s.connection == Some(id)
        {
            s.connection = None;
            s.disconnected_at = Some(now_ms());
            if s.expiry_ms == Some(0) {
                self.sessions.remove(&conn.client_id);
                gone = true;
            }
        }
        (conn.client_id, gone)
    }

    /// Handle one packet on an established connection; false closes it.
    fn packet(&mut self, id: u64, p: Packet, world: &Shared) -> bool {
        let Some(client_id) = self.conns.get(&id).map(|c| c.client_id.clone()) else { return false };
        let now = now_ms();
        match p {
            Packet::Publish(p) => {
                let mut topic = p.topic.clone();
                if let (Some(alias), Some(conn)) = (p.properties.topic_alias, self.conns.get_mut(&id)) {
                    if topic.is_empty() {
                        match conn.aliases.get(&alias) {
                            Some(t) => topic = t.clone(),
                            None => return false,
                        }
                    } else {
                        conn.aliases.insert(alias, topic.clone());
                    }
                }
                let msg = Msg {
                    topic,
                    payload: p.payload.clone(),
                    qos: p.qos,
                    retain: p.retain,
                    expires_at: p.properties.message_expiry_interval.map(|e| now + u64::from(e) * 1000),
                };
                let topic_ok = !msg.topic.is_empty();
                if let (Some(pid), Some(s)) = (p.packet_id, self.sessions.get_mut(&client_id))
                    && s.owed_resend.remove(&pid.get())
                    && !p.dup
                {
                    world
                        .lock()
                        .rec
                        .protocol_violations
                        .push(format!("{client_id} resent PUBLISH {} without DUP after its acknowledgement was lost (MQTT-3.3.1-1)", pid.get()));
                }
                let owe = |s: &mut Self, pid: PacketId| {
                    if let Some(sess) = s.sessions.get_mut(&client_id) {
                        sess.owed_resend.insert(pid.get());
                    }
                };
                match (p.qos, p.packet_id) {
                    (QoS::AtMostOnce, _) => {
                        if topic_ok {
                            self.route(&msg, world);
                        }
                    }
                    (QoS::AtLeastOnce, Some(pid)) => {
                        // Forwarded every time, DUP or not, as Mosquitto does.
                        self.route(&msg, world);
                        if !self.acknowledge(
                            id,
                            AckKind::Puback,
                            Packet::PubAck(PubResponse { packet_id: pid, reason: 0, properties: Properties::default() }),
                            world,
                        ) {
                            owe(self, pid);
                        }
                    }
                    (QoS::ExactlyOnce, Some(pid)) => {
                        let fresh = self.sessions.get_mut(&client_id).is_some_and(|s| s.incoming_qos2.insert(pid.get()));
                        if fresh {
                            self.route(&msg, world);
                        }
                        if !self.acknowledge(
                            id,
                            AckKind::Pubrec,
                            Packet::PubRec(PubResponse { packet_id: pid, reason: 0, properties: Properties::default() }),
                            world,
                        ) {
                            owe(self, pid);
                        }
                    }
                    _ => return false,
                }
            }
            Packet::PubRel(r) => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.incoming_qos2.remove(&r.packet_id.get());
                }
                self.acknowledge(
                    id,
                    AckKind::Pubcomp,
                    Packet::PubComp(PubResponse { packet_id: r.packet_id, reason: 0, properties: Properties::default() }),
                    world,
                );
            }
            Packet::PubAck(a) | Packet::PubComp(a) => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.inflight.remove(&a.packet_id.get());
                }
                self.flush_queue(&client_id, world);
            }
            Packet::PubRec(a) => {
                if let Some(s) = self.sessions.get_mut(&client_id)
                    && let Some(entry) = s.inflight.get_mut(&a.packet_id.get())
                {
                    entry.1 = true;
                }
                self.send(id, Packet::PubRel(PubResponse { packet_id: a.packet_id, reason: 0, properties: Properties::default() }));
            }
            Packet::Subscribe(sub) => {
                let mut codes = Vec::new();
                let mut retained = Vec::new();
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    for f in &sub.filters {
                        s.subscriptions.insert(f.filter.clone(), f.qos);
                        codes.push(f.qos as u8);
                        if f.retain_handling != 2 {
                            retained.extend(self.retained.values().filter(|m| topic_matches(&f.filter, &m.topic)).cloned());
                        }
                    }
                }
                world.lock().log(
                    now,
                    "broker",
                    "subscribe",
                    json!({ "client": client_id, "filters": sub.filters.iter().map(|f| f.filter.clone()).collect::<Vec<_>>() }),
                );
                self.acknowledge(id, AckKind::Suback, Packet::SubAck(SubAck { packet_id: sub.packet_id, codes, properties: Properties::default() }), world);
                for m in retained {
                    self.deliver(&client_id, m, world);
                }
            }
            Packet::Unsubscribe(u) => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    for f in &u.filters {
                        s.subscriptions.remove(f);
                    }
                }
                let v5 = self.conns.get(&id).is_some_and(|c| c.version == ProtocolVersion::V5);
                let codes = if v5 { vec![0; u.filters.len()] } else { Vec::new() };
                self.acknowledge(id, AckKind::Unsuback, Packet::UnsubAck(SubAck { packet_id: u.packet_id, codes, properties: Properties::default() }), world);
            }
            Packet::PingReq => {
                if !self.knobs.stop_pings {
                    self.acknowledge(id, AckKind::Pingresp, Packet::PingResp, world);
                }
            }
            _ => return false,
        }
        true
    }

    /// A message accepted by the broker: to the retained store and the subscribers.
    fn route(&mut self, msg: &Msg, world: &Shared) {
        let now = now_ms();
        if self.observe.iter().any(|f| topic_matches(f, &msg.topic)) {
            let mut w = world.lock();
            let seq = seq_of(&msg.payload);
            w.rec.broker_received.push(Delivery { topic: msg.topic.clone(), seq, t_ms: now, payload: msg.payload.clone(), dup: false });
            let subscribed = self.sessions.get(OBSERVER_ID).is_some_and(|s| s.subscriptions.keys().any(|f| topic_matches(f, &msg.topic)));
            if !subscribed && msg.qos != QoS::AtMostOnce {
                w.rec.broker_dropped.push((seq, "no observer session (lost in a restart) when it arrived".into()));
            }
        }
        if msg.retain {
            if msg.payload.is_empty() {
                self.retained.remove(&msg.topic);
            } else {
                self.retained.insert(msg.topic.clone(), msg.clone());
            }
        }
        let targets: Vec<(String, QoS)> = self
            .sessions
            .iter()
            .filter_map(|(cid, s)| {
                let q = s.subscriptions.iter().filter(|(f, _)| topic_matches(f, &msg.topic)).map(|(_, q)| *q).max()?;
                Some((cid.clone(), q))
            })
            .collect();
        for (cid, q) in targets {
            let m = Msg { qos: msg.qos.min(q), retain: false, ..msg.clone() };
            self.deliver(&cid, m, world);
        }
    }

    fn deliver(&mut self, client_id: &str, msg: Msg, world: &Shared) {
        let max_queued = self.spec.max_queued_messages;
        let Some(s) = self.sessions.get_mut(client_id) else { return };
        if msg.qos == QoS::AtMostOnce {
            if let Some(conn) = s.connection {
                self.send(conn, publish_packet(&msg, None, false));
            }
            return;
        }
        s.queue.push_back(msg);
        if s.queue.len() > max_queued
            && let Some(old) = s.queue.pop_front()
            && client_id == OBSERVER_ID
        {
            world.lock().rec.broker_dropped.push((seq_of(&old.payload), "the observer's queue overflowed (max_queued_messages)".into()));
        }
        self.flush_queue(client_id, world);
    }

    /// Send queued QoS 1/2 messages while the client's window allows.
    fn flush_queue(&mut self, client_id: &str, world: &Shared) {
        let now = now_ms();
        let device = self.device_ids.iter().any(|d| d == client_id);
        let Some(s) = self.sessions.get_mut(client_id) else { return };
        let Some(conn) = s.connection else { return };
        let mut out = Vec::new();
        let mut expired = 0;
        let mut expired_for_observer = Vec::new();
        while s.inflight.len() < s.window {
            let Some(mut msg) = s.queue.pop_front() else { break };
            if msg.expires_at.is_some_and(|t| t <= now) {
                expired += 1;
                if client_id == OBSERVER_ID {
                    expired_for_observer.push(seq_of(&msg.payload));
                }
                continue;
            }
            let mut pid;
            loop {
                s.next_pid = s.next_pid.wrapping_add(1).max(1);
                pid = s.next_pid;
                if !s.inflight.contains_key(&pid) {
                    break;
                }
            }
            msg.retain = false;
            s.inflight.insert(pid, (msg.clone(), false));
            out.push((pid, msg));
        }
        let inflight = s.inflight.len() as u64;
        for (pid, msg) in out {
            let remaining = msg.expires_at.map(|t| ((t - now) / 1000).max(1) as u32);
            let mut p = publish_packet(&msg, PacketId::new(pid), false);
            if let Packet::Publish(pp) = &mut p {
                pp.properties.message_expiry_interval = remaining;
            }
            self.send(conn, p);
        }
        if device || expired > 0 {
            let mut w = world.lock();
            w.rec.broker_dropped.extend(expired_for_observer.into_iter().map(|seq| (seq, "expired (message expiry) before the observer got it".to_string())));
            if device {
                w.rec.broker_max_inflight_to_device = w.rec.broker_max_inflight_to_device.max(inflight);
            }
            w.rec.broker_expired += expired;
        }
    }
}

fn publish_packet(msg: &Msg, pid: Option<PacketId>, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup: dup && pid.is_some(),
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: pid,
        payload: msg.payload.clone(),
        properties: Properties::default(),
    })
}
