//! Random fault sequences against a model broker: an accepted QoS 1 message is never lost,
//! and a packet id is never reused while the broker still holds it in flight.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::*;
use mqtt_protocol::codec::{ConnAck, PubResponse};
use mqtt_protocol::{Event, LinkState, Packet, Properties, SocketError};
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

/// What the broker holds for the client's session.
#[derive(Default)]
struct BrokerModel {
    session: Option<BTreeMap<u16, Vec<u8>>>,
    delivered: BTreeSet<Vec<u8>>,
    drop_acks: u8,
    lose: u8,
    violations: Vec<String>,
}

impl BrokerModel {
    /// Answer what the client sent.
    fn serve(&mut self, h: &mut Harness) {
        for _ in 0..100 {
            let sent = h.take_sent();
            if sent.is_empty() {
                return;
            }
            for p in sent {
                match p {
                    Packet::Connect(c) => {
                        let present = !c.clean_start && self.session.is_some();
                        if c.clean_start || self.session.is_none() {
                            self.session = Some(BTreeMap::new());
                        }
                        h.broker_sends(Packet::ConnAck(ConnAck { session_present: present, code: 0, properties: Properties::default() }));
                    }
                    Packet::Publish(_) if self.lose > 0 => {
                        self.lose -= 1;
                        if self.lose == 0 {
                            h.client.handle_socket_error(h.now, SocketError::Reset);
                            h.pump();
                        }
                    }
                    Packet::Publish(p) => {
                        let id = p.packet_id.unwrap().get();
                        let inflight = self.session.get_or_insert_with(BTreeMap::new);
                        match inflight.get(&id) {
                            Some(prev) if *prev != p.payload => {
                                self.violations.push(format!("packet id {id} reused for {:?} while {:?} in flight", p.payload, prev));
                            }
                            Some(_) if !p.dup => self.violations.push(format!("resend of id {id} without DUP")),
                            _ => {}
                        }
                        inflight.insert(id, p.payload.clone());
                        self.delivered.insert(p.payload);
                        if self.drop_acks > 0 {
                            self.drop_acks -= 1;
                        } else {
                            inflight.remove(&id);
                            h.broker_sends(Packet::PubAck(PubResponse { packet_id: p.packet_id.unwrap(), reason: 0, properties: Properties::default() }));
                        }
                    }
                    Packet::PingReq => h.broker_sends(Packet::PingResp),
                    _ => {}
                }
            }
        }
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
    let mut h = Harness::new(cfg);
    let mut broker = BrokerModel::default();
    h.client.connect(h.now).unwrap();
    h.pump();
    broker.serve(&mut h);
    let mut accepted: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut completed: BTreeSet<u64> = BTreeSet::new();
    let mut n = 0u32;
    let step = |h: &mut Harness, broker: &mut BrokerModel, completed: &mut BTreeSet<u64>| {
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
            Op::DropAcks(k) => broker.drop_acks = k,
            Op::LoseInTransit(k) => broker.lose = k,
            Op::LinkDown => h.link(LinkState::Down),
            Op::LinkUp => h.link(LinkState::Up),
            Op::Reset => {
                h.client.handle_socket_error(h.now, SocketError::Reset);
                h.pump();
            }
            Op::Advance(ms) => h.advance(u64::from(ms)),
            Op::BrokerLosesSessions => {
                broker.session = None;
                h.client.handle_socket_error(h.now, SocketError::Closed);
                h.pump();
            }
        }
        step(&mut h, &mut broker, &mut completed);
    }
    // Heal everything and let the client drain.
    broker.drop_acks = 0;
    if broker.lose > 0 {
        broker.lose = 0;
        h.client.handle_socket_error(h.now, SocketError::Reset);
        h.pump();
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
