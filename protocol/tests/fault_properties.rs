//! Random fault sequences against a model broker: an accepted QoS 1 message is never lost,
//! and a packet id is never reused while the broker still holds it in flight.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::*;
use mqtt_broker_model::{AckKind, Broker, BrokerConfig, ConnId, Event as BrokerEvent, Output};
use mqtt_protocol::{Event, LinkState, Packet, SocketError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish,
    /// The broker silently drops its next N acknowledgements.
    DropAcks(u8),
    LinkDown,
    LinkUp,
    Reset,
    Advance(u16),
    /// The broker restarts and loses its sessions.
    BrokerLosesSessions,
    /// The connection dies with the client's next N publishes still in transit: they never
    /// reach the broker (what a WiFi drop does to unacknowledged TCP data).
    LoseInTransit(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Publish),
        1 => (1u8..4).prop_map(Op::DropAcks),
        1 => Just(Op::LinkDown),
        2 => Just(Op::LinkUp),
        1 => Just(Op::Reset),
        3 => (1u16..5000).prop_map(Op::Advance),
        1 => Just(Op::BrokerLosesSessions),
        1 => (1u8..4).prop_map(Op::LoseInTransit),
    ]
}

/// The project's broker model behind the harness's in-memory socket, with what the
/// property needs around it: publishes lost in transit, and what reached the broker.
struct Model {
    broker: Broker,
    /// The broker's side of the client's current connection.
    conn: Option<ConnId>,
    delivered: BTreeSet<Vec<u8>>,
    /// The connection dies with this many more publishes still in transit.
    lose: u8,
    violations: Vec<String>,
}

impl Model {
    fn new() -> Model {
        Model { broker: Broker::new(BrokerConfig::default()), conn: None, delivered: BTreeSet::new(), lose: 0, violations: Vec::new() }
    }

    /// Carries what the client sent to the broker and the broker's answers back, until
    /// neither has anything more to say.
    fn serve(&mut self, h: &mut Harness) {
        let now = h.now.as_millis();
        if self.broker.poll_timeout().is_some_and(|t| t <= now) {
            self.broker.handle_timeout(now);
        }
        for _ in 0..100 {
            let answered = self.answer(h);
            let sent = h.take_sent();
            if sent.is_empty() && !answered {
                return;
            }
            for p in sent {
                if matches!(p, Packet::Connect(_)) {
                    // A CONNECT opens a new connection: the harness's socket was reopened.
                    if let Some(old) = self.conn.take() {
                        self.broker.handle_close(now, old);
                    }
                    self.conn = Some(self.broker.accept(now));
                }
                if matches!(p, Packet::Publish(_)) && self.lose > 0 {
                    self.lose -= 1;
                    if self.lose == 0 {
                        self.connection_lost(h, SocketError::Reset);
                    }
                    continue;
                }
                if let Some(conn) = self.conn {
                    self.broker.handle_input(now, conn, &p.encode(h.version));
                }
            }
        }
    }

    /// The broker's output to the client; true if there was any.
    fn answer(&mut self, h: &mut Harness) -> bool {
        let mut any = false;
        while let Some(o) = self.broker.poll_output() {
            any = true;
            match o {
                Output::Transmit { conn, bytes } if Some(conn) == self.conn => {
                    h.client.handle_input(h.now, &bytes);
                    h.pump();
                }
                Output::Close { conn } if Some(conn) == self.conn => self.connection_lost(h, SocketError::Closed),
                Output::Event(BrokerEvent::Routed { message, .. }) => {
                    self.delivered.insert(message.payload);
                }
                Output::Event(BrokerEvent::Violation { what, .. }) => self.violations.push(what),
                _ => {}
            }
        }
        any
    }

    fn connection_lost(&mut self, h: &mut Harness, why: SocketError) {
        if let Some(conn) = self.conn.take() {
            self.broker.handle_close(h.now.as_millis(), conn);
        }
        h.client.handle_socket_error(h.now, why);
        h.pump();
    }
}

fn run(ops: Vec<Op>, v5: bool) -> Result<(), TestCaseError> {
    run_client(ops, v5, None)
}

fn run_client(ops: Vec<Op>, v5: bool, fault: Option<mqtt_protocol::TestFault>) -> Result<(), TestCaseError> {
    let mut cfg = config(v5);
    cfg.test_fault = fault;
    cfg.clean = false;
    cfg.clean_init = false;
    cfg.max_inflight = 4;
    // An MQTT 5 session must outlive the connection for the resume paths to run.
    if v5 {
        cfg.session_expiry_secs = 3_600;
    }
    let mut h = Harness::new(cfg);
    let mut broker = Model::new();
    h.client.connect(h.now).unwrap();
    h.pump();
    broker.serve(&mut h);
    let mut accepted: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut completed: BTreeSet<u64> = BTreeSet::new();
    let mut n = 0u32;
    let step = |h: &mut Harness, broker: &mut Model, completed: &mut BTreeSet<u64>| {
        broker.serve(h);
        for e in h.take_events() {
            if let Event::Published(t) = e {
                completed.insert(t);
            }
        }
    };
    for op in ops {
        match op {
            Op::Publish => {
                n += 1;
                let payload = n.to_be_bytes().to_vec();
                if let Ok(t) = h.client.publish(h.now, qos1("t", &payload), None) {
                    accepted.insert(t, payload);
                }
                h.pump();
            }
            Op::DropAcks(k) => {
                broker.broker.knobs.drop.insert(AckKind::Puback, u32::from(k));
            }
            Op::LoseInTransit(k) => broker.lose = k,
            Op::LinkDown => h.link(LinkState::Down),
            Op::LinkUp => h.link(LinkState::Up),
            Op::Reset => broker.connection_lost(&mut h, SocketError::Reset),
            Op::Advance(ms) => h.advance(u64::from(ms)),
            Op::BrokerLosesSessions => {
                broker.broker.crash(h.now.as_millis(), false);
                broker.conn = None;
                h.client.handle_socket_error(h.now, SocketError::Closed);
                h.pump();
            }
        }
        step(&mut h, &mut broker, &mut completed);
    }
    // Heal everything and let the client drain.
    broker.broker.knobs.drop.clear();
    if broker.lose > 0 {
        broker.lose = 0;
        broker.connection_lost(&mut h, SocketError::Reset);
    }
    h.link(LinkState::Up);
    for _ in 0..400 {
        step(&mut h, &mut broker, &mut completed);
        if accepted.keys().all(|t| completed.contains(t)) {
            break;
        }
        h.advance(1_000);
    }
    prop_assert!(broker.violations.is_empty(), "{:?}", broker.violations);
    for (t, payload) in &accepted {
        prop_assert!(completed.contains(t), "token {t} never completed");
        prop_assert!(broker.delivered.contains(payload), "payload {payload:?} never reached the broker");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn v311_random_faults_never_lose_an_accepted_qos1_message(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, false)?;
    }

    #[test]
    fn v5_random_faults_never_lose_an_accepted_qos1_message(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, true)?;
    }
}

/// The property can fail: a client that forgets a publish it should resend is caught.
#[test]
fn the_property_catches_a_client_that_drops_a_republish() {
    for v5 in [false, true] {
        let ops = vec![Op::LoseInTransit(1), Op::Publish, Op::Advance(30_000), Op::Reset, Op::Advance(30_000)];
        assert!(run(ops.clone(), v5).is_ok(), "the correct client passes (v5: {v5})");
        let caught = run_client(ops, v5, Some(mqtt_protocol::TestFault::DropRepublish));
        assert!(caught.is_err(), "the faulty client was not caught (v5: {v5})");
    }
}

/// The broker model's own checks fail the property too: after a lost PUBACK and a lost
/// connection, a resend without DUP, or under a new packet id.
#[test]
fn the_broker_model_catches_resends_that_break_the_spec() {
    use mqtt_protocol::TestFault;
    for v5 in [false, true] {
        let ops = vec![Op::DropAcks(1), Op::Publish, Op::Reset, Op::Advance(30_000)];
        assert!(run(ops.clone(), v5).is_ok(), "the correct client passes (v5: {v5})");
        for fault in [TestFault::ResendWithoutDup, TestFault::ResendNewPacketId] {
            let caught = run_client(ops.clone(), v5, Some(fault));
            assert!(caught.is_err(), "{fault:?} was not caught (v5: {v5})");
        }
    }
}
