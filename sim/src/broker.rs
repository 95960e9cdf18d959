//! The broker host: the project's one broker model ([`mqtt_broker_model`]) served over
//! turmoil TCP, with the simulation's record of what it did.
//!
//! The model is sans IO; this file gives it sockets, a clock and a timer, and turns its
//! events into the trace and the facts the expectations check. Its state lives outside the
//! host's tasks so a restart can keep it (persistent sessions) or lose it. A crash ends the
//! broker's tasks, not its host: the observer shares the host (one host fewer for turmoil
//! to step: it costs about 0.8 µs per host per tick whatever runs there) and must live
//! through the crash, as a subscriber on another machine would. The observer is a separate
//! client (see [`crate::observer`]); its session is made here before the simulation starts,
//! as if a `mosquitto_sub -c` had subscribed earlier, so nothing published at t = 0 races
//! its SUBSCRIBE. The wrapper also keeps the broker's own record of what it accepted on the
//! observed topics and of what it let go of (queue overflow, expiry, a restart without
//! persistence, no subscriber): Mosquitto's `$SYS` counters, so a message missing at the
//! observer is blamed on the right side.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mqtt_broker_model::{Auth, BrokerConfig, ConnId, DropReason, Event, Knobs, Message, Output};
use mqtt_protocol::codec::topic::topic_matches;
use mqtt_protocol::QoS;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinHandle};

use crate::scenario::{BrokerSpec, Inject};
use crate::world::{now_ms, payload_with_seq, seq_of, Delivery, Shared};

pub const PORT: u16 = 1883;

/// The observer client's id.
pub const OBSERVER_ID: &str = "observer";

/// The model and what serves it.
struct Inner {
    model: mqtt_broker_model::Broker,
    /// Where each open connection's bytes go (to its writer task).
    writers: BTreeMap<ConnId, mpsc::UnboundedSender<Vec<u8>>>,
    /// The instant the timer task sleeps until, if it sleeps.
    armed: Option<u64>,
    observe: Vec<String>,
    device_ids: Vec<String>,
    inject: Vec<Inject>,
    inject_next: Vec<u64>,
    /// Every task the broker's software runs, so a crash can end them all at once.
    tasks: Vec<AbortHandle>,
}

/// What the timeline asks of the broker's software.
#[derive(Debug, Clone, Copy)]
enum Power {
    Crash,
    Restart,
}

/// The broker's own record of a message that reached it.
fn arrived(message: Message, seq: Option<u64>, now: u64) -> Delivery {
    Delivery { topic: message.topic, seq, t_ms: now, payload: message.payload, dup: false, retained: message.retain }
}

#[derive(Clone)]
pub struct Broker {
    inner: Arc<Mutex<Inner>>,
    /// Wakes the timer task when the model has an earlier deadline than it sleeps to.
    wake: Arc<Notify>,
    /// Orders from the timeline (which runs outside the simulated hosts) to the broker's
    /// software, kept in the order given: a crash and a restart at the same instant must
    /// both happen.
    orders: mpsc::UnboundedSender<Power>,
    /// Read by [`Broker::run`] alone; the lock only lets `Broker` stay `Clone`.
    orders_in: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Power>>>,
    world: Shared,
}

/// The model's settings from the scenario's `[broker]` table.
fn config(spec: &BrokerSpec) -> BrokerConfig {
    let auth = spec.auth_method.clone().zip(spec.auth_secret.clone()).map(|(method, secret)| Auth {
        method,
        secret: secret.into_bytes(),
        // The observer is the test's instrument, not the system under test.
        exempt: [OBSERVER_ID.to_string()].into(),
    });
    BrokerConfig {
        receive_maximum: spec.receive_maximum,
        topic_alias_maximum: spec.topic_alias_maximum,
        maximum_packet_size: spec.maximum_packet_size,
        server_keep_alive: spec.server_keep_alive,
        max_queued_messages: spec.max_queued_messages,
        auth,
        deny: spec.deny.clone(),
    }
}

impl Broker {
    pub fn new(spec: BrokerSpec, observe: Vec<String>, device_ids: Vec<String>, inject: Vec<Inject>, world: Shared) -> Self {
        let mut model = mqtt_broker_model::Broker::new(config(&spec));
        model.preset_session(OBSERVER_ID, observe.iter().map(|f| (f.clone(), QoS::ExactlyOnce)), 0);
        let n = inject.len();
        let inner = Inner { model, writers: BTreeMap::new(), armed: None, observe, device_ids, inject, inject_next: vec![0; n], tasks: Vec::new() };
        let (orders, orders_in) = mpsc::unbounded_channel();
        Broker { inner: Arc::new(Mutex::new(inner)), wake: Arc::new(Notify::new()), orders, orders_in: Arc::new(tokio::sync::Mutex::new(orders_in)), world }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the model and carries out what it asks.
    fn drive<T>(&self, f: impl FnOnce(&mut mqtt_broker_model::Broker) -> T) -> T {
        let mut s = self.lock();
        let r = f(&mut s.model);
        s.pump(&self.world);
        if let Some(t) = s.model.poll_timeout()
            && s.armed.is_none_or(|a| t < a)
        {
            self.wake.notify_one();
        }
        r
    }

    /// Turn the fault knobs.
    pub fn knobs<T>(&self, f: impl FnOnce(&mut Knobs) -> T) -> T {
        f(&mut self.lock().model.knobs)
    }

    /// A device lost power without a store: see [`mqtt_broker_model::Broker::client_forgot`].
    pub fn devices_forgot(&self) {
        let mut s = self.lock();
        for id in s.device_ids.clone() {
            s.model.client_forgot(&id);
        }
    }

    /// The broker crashed: its connections are gone; sessions survive only if `persist`.
    /// Its tasks end now (an aborted task is never polled again, so no connection notices
    /// and, say, publishes a will); their sockets close when the host's runtime drops them,
    /// at its next tick.
    pub fn crash(&self, persist: bool) {
        let mut s = self.lock();
        s.tasks.drain(..).for_each(|t| t.abort());
        s.writers.clear();
        s.armed = None;
        // The receiver lives as long as the broker: sending cannot fail.
        let _ = self.orders.send(Power::Crash);
        s.model.crash(now_ms(), persist);
        s.pump(&self.world);
    }

    /// MQTT 5: tell every connected client to go away.
    pub fn server_disconnect(&self, reason: u8) {
        self.drive(|m| m.server_disconnect(now_ms(), reason));
    }

    /// The broker starts again after a crash (its sessions as [`Broker::crash`] left them).
    pub fn restart(&self) {
        let _ = self.orders.send(Power::Restart);
    }

    /// Copies the model's running totals into the record (at the end of a run).
    pub fn record_totals(&self) {
        let s = self.lock();
        let stats = s.model.stats();
        let inflight = s.device_ids.iter().filter_map(|d| stats.max_inflight.get(d)).copied().max().unwrap_or(0);
        let mut w = self.world.lock();
        // Several brokers add up (each calls this once).
        w.rec.broker_max_inflight_to_device = w.rec.broker_max_inflight_to_device.max(inflight);
        w.rec.broker_expired += stats.expired;
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

    /// Accept connections, keep the model's time and run the injector.
    async fn serve(self) -> turmoil::Result {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
        let (timer, injector) = (self.clone(), self.clone());
        self.spawn(async move { timer.timer_loop().await });
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
        let mut s = self.lock();
        s.tasks.retain(|t| !t.is_finished());
        s.tasks.push(handle.abort_handle());
        handle
    }

    /// Sleeps until the model's next deadline (or an earlier one appears) and hands it the time.
    async fn timer_loop(self) {
        loop {
            let next = {
                let mut s = self.lock();
                s.armed = s.model.poll_timeout();
                s.armed
            };
            match next {
                Some(t) => {
                    let now = now_ms();
                    if t > now {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(t - now)) => {}
                            _ = self.wake.notified() => {}
                        }
                    }
                }
                None => self.wake.notified().await,
            }
            let mut s = self.lock();
            s.armed = None;
            let now = now_ms();
            if s.model.poll_timeout().is_some_and(|t| t <= now) {
                s.model.handle_timeout(now);
                s.pump(&self.world);
            }
        }
    }

    async fn inject_loop(self) {
        loop {
            let now = now_ms();
            let mut next_wake = u64::MAX;
            let mut due = Vec::new();
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
                        due.push(Message {
                            topic: spec.topic.clone(),
                            payload: payload_with_seq(seq, 16),
                            qos: QoS::from_u8(spec.qos).unwrap_or(QoS::AtLeastOnce),
                            retain: spec.retain,
                            expires_at: spec.message_expiry_s.map(|e| now + u64::from(e) * 1000),
                        });
                        self.world.lock().rec.injected.push((seq, now, spec.topic.clone()));
                    }
                }
            }
            self.drive(|m| due.into_iter().for_each(|msg| m.publish(now, msg)));
            if next_wake == u64::MAX {
                return;
            }
            tokio::time::sleep(Duration::from_millis(next_wake - now)).await;
        }
    }

    async fn connection(self, stream: turmoil::net::TcpStream) {
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
            // The broker is done with the connection (DISCONNECT sent, refused, kicked):
            // what it wrote is flushed; close it.
            let _ = wr.shutdown().await;
        });
        let conn = {
            let mut s = self.lock();
            let conn = s.model.accept(now_ms());
            s.writers.insert(conn, tx);
            conn
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !self.lock().writers.contains_key(&conn) {
                // The broker closed it; what the client still sends goes nowhere.
                return;
            }
            self.drive(|m| m.handle_input(now_ms(), conn, &buf[..n]));
        }
        self.drive(|m| m.handle_close(now_ms(), conn));
        self.lock().writers.remove(&conn);
    }
}

impl Inner {
    /// Carries out what the model asks: bytes to the writers, closes, and the record.
    fn pump(&mut self, world: &Shared) {
        while let Some(o) = self.model.poll_output() {
            match o {
                Output::Transmit { conn, bytes } => {
                    if let Some(tx) = self.writers.get(&conn) {
                        let _ = tx.send(bytes);
                    }
                }
                // Dropping the sender lets the writer flush and close.
                Output::Close { conn } => {
                    self.writers.remove(&conn);
                }
                Output::Event(e) => self.record(e, world),
            }
        }
    }

    /// The trace line and the facts for one of the model's events.
    fn record(&self, e: Event, world: &Shared) {
        let now = now_ms();
        let mut w = world.lock();
        match e {
            Event::Connected { client, clean, session_present } => {
                w.log(now, "broker", "connect", json!({ "client": client, "clean": clean, "session_present": session_present }))
            }
            Event::Refused { client, code, why } => w.log(now, "broker", "refused", json!({ "client": client, "code": code, "why": why })),
            Event::AuthChallenged { client } => w.log(now, "broker", "auth_challenge", json!({ "client": client })),
            Event::Authenticated { client } => w.log(now, "broker", "authenticated", json!({ "client": client })),
            Event::Subscribed { client, filters } => w.log(now, "broker", "subscribe", json!({ "client": client, "filters": filters })),
            Event::Unsubscribed { client, filters } => w.log(now, "broker", "unsubscribe", json!({ "client": client, "filters": filters })),
            Event::AckDropped { packet } => w.log(now, "broker", "dropped", json!({ "packet": packet })),
            Event::AckDelayed { packet, ms } => w.log(now, "broker", "delayed", json!({ "packet": packet, "ms": ms })),
            Event::KeepaliveExpired { client } => w.log(now, "broker", "keepalive_expired", json!({ "client": client })),
            Event::WillPublished { client, topic } => w.log(now, "broker", "will", json!({ "topic": topic, "client": client })),
            Event::Oversize { client, size, max } => w.log(now, "broker", "oversize", json!({ "client": client, "size": size, "max": max })),
            Event::Violation { client, what } => {
                w.log(now, "broker", "violation", json!({ "client": client, "what": what }));
                w.rec.protocol_violations.push(format!("{client} {what}"));
            }
            Event::Routed { message, to } => {
                if self.observe.iter().any(|f| topic_matches(f, &message.topic)) {
                    let seq = seq_of(&message.payload);
                    if !to.iter().any(|c| c == OBSERVER_ID) && message.qos != QoS::AtMostOnce {
                        w.rec.broker_dropped.push((seq, "no observer session (lost in a restart) when it arrived".into()));
                    }
                    w.rec.broker_received.push(arrived(message, seq, now));
                }
            }
            Event::Dropped { client, message, why } => {
                if why == DropReason::Denied {
                    // It reached the broker, which let go of it on purpose.
                    let seq = seq_of(&message.payload);
                    w.rec.broker_dropped.push((seq, why.describe().to_string()));
                    w.rec.broker_received.push(arrived(message, seq, now));
                } else if client == OBSERVER_ID {
                    w.rec.broker_dropped.push((seq_of(&message.payload), format!("observer: {}", why.describe())));
                }
            }
            Event::Received { .. } => {}
        }
    }
}
