//! The broker model on its own: a test plays the client with hand-made packets and checks
//! what the broker answers, what it lets through and what it reports as a breach.

use mqtt_broker_model::{AckKind, Broker, BrokerConfig, ConnId, DropReason, Event, Output};
use mqtt_protocol::codec::{Connect, Decoder, LastWill, PubResponse, Publish, Subscribe};
use mqtt_protocol::{Packet, PacketId, Properties, PropertyValues, ProtocolVersion, QoS, SubscribeFilter};

/// One client connection to the model, speaking `version`.
struct Client {
    conn: ConnId,
    version: ProtocolVersion,
    decoder: Decoder,
}

/// Everything the broker said, sorted by kind.
#[derive(Default, Debug)]
struct Heard {
    packets: Vec<(ConnId, Packet)>,
    closed: Vec<ConnId>,
    events: Vec<Event>,
}

impl Heard {
    fn violations(&self) -> Vec<&str> {
        self.events.iter().filter_map(|e| if let Event::Violation { what, .. } = e { Some(what.as_str()) } else { None }).collect()
    }
    fn to(&self, c: &Client) -> Vec<&Packet> {
        self.packets.iter().filter(|(id, _)| *id == c.conn).map(|(_, p)| p).collect()
    }
}

fn drain(b: &mut Broker, clients: &mut [&mut Client]) -> Heard {
    let mut heard = Heard::default();
    while let Some(o) = b.poll_output() {
        match o {
            Output::Transmit { conn, bytes } => {
                let c = clients.iter_mut().find(|c| c.conn == conn).expect("bytes for a known connection");
                c.decoder.feed(&bytes);
                while let Some(p) = c.decoder.next_packet().expect("the broker sends valid MQTT") {
                    heard.packets.push((conn, p));
                }
            }
            Output::Close { conn } => heard.closed.push(conn),
            Output::Event(e) => heard.events.push(e),
        }
    }
    heard
}

fn connect_packet(id: &str, version: ProtocolVersion, clean: bool) -> Connect {
    let mut properties = Properties::default();
    if version == ProtocolVersion::V5 && !clean {
        properties.session_expiry_interval = Some(3_600);
    }
    Connect { protocol: version, clean_start: clean, keep_alive: 10, client_id: id.into(), will: None, username: None, password: None, properties }
}

fn open(b: &mut Broker, now: u64, connect: Connect) -> (Client, Heard) {
    let version = connect.protocol;
    let mut c = Client { conn: b.accept(now), version, decoder: Decoder::new(version, u32::MAX) };
    b.handle_input(now, c.conn, &Packet::Connect(connect).encode(version));
    let heard = drain(b, &mut [&mut c]);
    (c, heard)
}

fn send(b: &mut Broker, now: u64, c: &mut Client, p: Packet) -> Heard {
    b.handle_input(now, c.conn, &p.encode(c.version));
    drain(b, &mut [c])
}

fn publish(id: u16, payload: &[u8], qos: QoS, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: "t".into(),
        packet_id: PacketId::new(id),
        payload: payload.to_vec(),
        properties: Properties::default(),
    })
}

fn v5_config() -> BrokerConfig {
    BrokerConfig { receive_maximum: 2, topic_alias_maximum: 3, maximum_packet_size: Some(256), ..BrokerConfig::default() }
}

#[test]
fn more_unacknowledged_publishes_than_the_announced_receive_maximum_is_a_violation() {
    let mut b = Broker::new(v5_config());
    let (mut c, heard) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V5, true));
    let Some(Packet::ConnAck(ack)) = heard.to(&c).first().copied() else { panic!("no CONNACK: {heard:?}") };
    assert_eq!(ack.properties.receive_maximum, Some(2));
    b.knobs.hold.insert(AckKind::Puback);
    assert!(send(&mut b, 1, &mut c, publish(1, b"a", QoS::AtLeastOnce, false)).violations().is_empty());
    assert!(send(&mut b, 2, &mut c, publish(2, b"b", QoS::AtLeastOnce, false)).violations().is_empty());
    let heard = send(&mut b, 3, &mut c, publish(3, b"c", QoS::AtLeastOnce, false));
    assert!(heard.violations().iter().any(|v| v.contains("Receive Maximum 2")), "{heard:?}");
    assert_eq!(heard.closed, vec![c.conn], "the breach ends the connection");
}

#[test]
fn released_acknowledgements_make_room_under_the_receive_maximum() {
    let mut b = Broker::new(v5_config());
    let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V5, true));
    b.knobs.hold.insert(AckKind::Puback);
    send(&mut b, 1, &mut c, publish(1, b"a", QoS::AtLeastOnce, false));
    send(&mut b, 1, &mut c, publish(2, b"b", QoS::AtLeastOnce, false));
    b.release_held();
    let acks = drain(&mut b, &mut [&mut c]);
    assert_eq!(acks.to(&c).iter().filter(|p| matches!(p, Packet::PubAck(_))).count(), 2);
    let heard = send(&mut b, 2, &mut c, publish(3, b"c", QoS::AtLeastOnce, false));
    assert!(heard.violations().is_empty(), "{heard:?}");
}

#[test]
fn a_topic_alias_beyond_the_announced_maximum_is_a_violation() {
    let mut b = Broker::new(v5_config());
    let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V5, true));
    let mut p = publish(0, b"x", QoS::AtMostOnce, false);
    if let Packet::Publish(pp) = &mut p {
        pp.properties.topic_alias = Some(4);
    }
    let heard = send(&mut b, 1, &mut c, p);
    assert!(heard.violations().iter().any(|v| v.contains("topic alias 4")), "{heard:?}");
}

#[test]
fn an_alias_never_set_on_this_connection_is_a_violation() {
    let mut b = Broker::new(v5_config());
    let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V5, true));
    let mut p = publish(0, b"x", QoS::AtMostOnce, false);
    if let Packet::Publish(pp) = &mut p {
        pp.topic.clear();
        pp.properties.topic_alias = Some(1);
    }
    let heard = send(&mut b, 1, &mut c, p);
    assert!(heard.violations().iter().any(|v| v.contains("never set")), "{heard:?}");
}

#[test]
fn a_packet_larger_than_the_announced_maximum_is_a_violation() {
    let mut b = Broker::new(v5_config());
    let (mut c, heard) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V5, true));
    let Some(Packet::ConnAck(ack)) = heard.to(&c).first().copied() else { panic!("no CONNACK") };
    assert_eq!(ack.properties.maximum_packet_size, Some(256));
    let heard = send(&mut b, 1, &mut c, publish(0, &[b'x'; 300], QoS::AtMostOnce, false));
    assert!(heard.violations().iter().any(|v| v.contains("Maximum Packet Size 256")), "{heard:?}");
}

/// MQTT 3.1.1 has no Maximum Packet Size to announce: a client over the broker's limit
/// broke no rule it could know. The broker drops it, as Mosquitto does, and says why.
#[test]
fn a_3_1_1_packet_over_the_limit_ends_the_connection_without_a_violation() {
    let mut b = Broker::new(v5_config());
    let (mut c, heard) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V311, false));
    assert!(matches!(heard.to(&c).first(), Some(Packet::ConnAck(_))), "{heard:?}");
    let heard = send(&mut b, 1, &mut c, publish(1, &[b'x'; 300], QoS::AtLeastOnce, false));
    assert!(heard.violations().is_empty(), "{heard:?}");
    assert!(heard.events.iter().any(|e| matches!(e, Event::Oversize { client, max: 256, .. } if client == "dev")), "{heard:?}");
    assert_eq!(heard.closed, vec![c.conn]);
}

#[test]
fn a_packet_id_reused_while_its_message_is_unacknowledged_is_a_violation() {
    let mut b = Broker::new(v5_config());
    let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V5, true));
    b.knobs.hold.insert(AckKind::Puback);
    send(&mut b, 1, &mut c, publish(1, b"first", QoS::AtLeastOnce, false));
    let heard = send(&mut b, 2, &mut c, publish(1, b"second", QoS::AtLeastOnce, false));
    assert!(heard.violations().iter().any(|v| v.contains("reused packet id 1")), "{heard:?}");
}

#[test]
fn after_a_lost_puback_the_resend_must_carry_dup_and_the_same_id() {
    for (resend, breach) in [
        (publish(1, b"m", QoS::AtLeastOnce, true), None),
        (publish(1, b"m", QoS::AtLeastOnce, false), Some("without DUP")),
        (publish(7, b"m", QoS::AtLeastOnce, true), Some("new packet id 7")),
    ] {
        let mut b = Broker::new(BrokerConfig::default());
        let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V311, false));
        b.knobs.drop.insert(AckKind::Puback, 1);
        send(&mut b, 1, &mut c, publish(1, b"m", QoS::AtLeastOnce, false));
        b.handle_close(2, c.conn);
        let (mut c, heard) = open(&mut b, 3, connect_packet("dev", ProtocolVersion::V311, false));
        assert!(matches!(heard.to(&c)[0], Packet::ConnAck(a) if a.session_present));
        let heard = send(&mut b, 4, &mut c, resend);
        match breach {
            None => assert!(heard.violations().is_empty(), "{heard:?}"),
            Some(want) => assert!(heard.violations().iter().any(|v| v.contains(want)), "wanted {want:?}: {heard:?}"),
        }
    }
}

#[test]
fn anything_before_connect_is_a_violation() {
    let mut b = Broker::new(BrokerConfig::default());
    let mut c = Client { conn: b.accept(0), version: ProtocolVersion::V311, decoder: Decoder::new(ProtocolVersion::V311, u32::MAX) };
    let heard = send(&mut b, 0, &mut c, Packet::PingReq);
    assert!(heard.violations().iter().any(|v| v.contains("PINGREQ before its CONNECT")), "{heard:?}");
    assert_eq!(heard.closed, vec![c.conn]);
}

#[test]
fn silence_past_one_and_a_half_keepalives_ends_the_connection_and_sends_the_will() {
    let mut b = Broker::new(BrokerConfig::default());
    let (mut watcher, _) = open(&mut b, 0, connect_packet("watcher", ProtocolVersion::V311, true));
    let sub = Subscribe { packet_id: PacketId::new(1).unwrap(), filters: vec![filter("will/#")], properties: Properties::default() };
    send(&mut b, 0, &mut watcher, Packet::Subscribe(sub));
    let mut connect = connect_packet("dev", ProtocolVersion::V311, true);
    connect.will =
        Some(LastWill { topic: "will/dev".into(), payload: b"gone".to_vec(), qos: QoS::AtMostOnce, retain: false, properties: Properties::default() });
    let (mut dev, _) = open(&mut b, 0, connect);
    // The watcher keeps talking; the device falls silent. Keepalive 10 s: the deadline is 15 s.
    send(&mut b, 10_000, &mut watcher, Packet::PingReq);
    assert_eq!(b.poll_timeout(), Some(15_000));
    b.handle_timeout(15_000);
    let heard = drain(&mut b, &mut [&mut watcher, &mut dev]);
    assert!(heard.events.iter().any(|e| matches!(e, Event::KeepaliveExpired { client } if client == "dev")), "{heard:?}");
    assert_eq!(heard.closed, vec![dev.conn]);
    assert!(heard.to(&watcher).iter().any(|p| matches!(p, Packet::Publish(p) if p.topic == "will/dev")), "{heard:?}");
}

#[test]
fn a_reconnect_within_the_will_delay_cancels_the_will() {
    let mut b = Broker::new(BrokerConfig::default());
    let mut connect = connect_packet("dev", ProtocolVersion::V5, false);
    let will_props = PropertyValues { will_delay_interval: Some(5), ..Default::default() }.into();
    connect.will = Some(LastWill { topic: "will/dev".into(), payload: b"gone".to_vec(), qos: QoS::AtMostOnce, retain: false, properties: will_props });
    let (dev, _) = open(&mut b, 0, connect.clone());
    b.handle_close(1_000, dev.conn);
    assert_eq!(b.poll_timeout(), Some(6_000), "the will waits out its delay");
    let (_dev, _) = open(&mut b, 2_000, connect);
    b.handle_timeout(6_000);
    let heard = drain(&mut b, &mut []);
    assert!(!heard.events.iter().any(|e| matches!(e, Event::WillPublished { .. })), "{heard:?}");
}

#[test]
fn a_late_connack_holds_back_every_packet_behind_it() {
    let mut b = Broker::new(BrokerConfig::default());
    b.knobs.delay.insert(AckKind::Connack, (1, 500));
    let (mut c, heard) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V311, true));
    assert!(heard.to(&c).is_empty());
    let heard = send(&mut b, 10, &mut c, Packet::PingReq);
    assert!(heard.to(&c).is_empty(), "the PINGREQ waits behind the CONNECT: {heard:?}");
    assert_eq!(b.poll_timeout(), Some(500));
    b.handle_timeout(500);
    let heard = drain(&mut b, &mut [&mut c]);
    let kinds: Vec<&str> = heard.to(&c).iter().map(|p| p.name()).collect();
    assert_eq!(kinds, ["CONNACK", "PINGRESP"]);
}

#[test]
fn a_persistent_session_resumes_with_dup_and_a_crash_without_persistence_drops_what_it_held() {
    for persist in [true, false] {
        let mut b = Broker::new(BrokerConfig::default());
        let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V311, false));
        let sub = Subscribe { packet_id: PacketId::new(1).unwrap(), filters: vec![filter("t")], properties: Properties::default() };
        send(&mut b, 0, &mut c, Packet::Subscribe(sub));
        b.publish(1, mqtt_broker_model::Message { topic: "t".into(), payload: b"m".to_vec(), qos: QoS::AtLeastOnce, retain: false, expires_at: None });
        let first = drain(&mut b, &mut [&mut c]);
        assert!(matches!(first.to(&c)[0], Packet::Publish(p) if !p.dup));
        b.crash(2, persist);
        let crashed = drain(&mut b, &mut []);
        let (c, heard) = open(&mut b, 3, connect_packet("dev", ProtocolVersion::V311, false));
        if persist {
            assert!(matches!(heard.to(&c)[1], Packet::Publish(p) if p.dup && p.payload == b"m"), "{heard:?}");
        } else {
            assert!(crashed.events.iter().any(|e| matches!(e, Event::Dropped { why: DropReason::Crashed, .. })), "{crashed:?}");
            assert!(matches!(heard.to(&c)[0], Packet::ConnAck(a) if !a.session_present));
            assert_eq!(heard.to(&c).len(), 1);
        }
    }
}

#[test]
fn an_offline_queue_is_bounded_and_drops_the_oldest() {
    let mut b = Broker::new(BrokerConfig { max_queued_messages: 3, ..BrokerConfig::default() });
    b.preset_session("sleeper", [("t".to_string(), QoS::AtLeastOnce)], 0);
    for i in 0..5u8 {
        b.publish(1, mqtt_broker_model::Message { topic: "t".into(), payload: vec![i], qos: QoS::AtLeastOnce, retain: false, expires_at: None });
    }
    let heard = drain(&mut b, &mut []);
    let dropped: Vec<Vec<u8>> = heard
        .events
        .iter()
        .filter_map(|e| if let Event::Dropped { message, why: DropReason::QueueFull, .. } = e { Some(message.payload.clone()) } else { None })
        .collect();
    assert_eq!(dropped, vec![vec![0], vec![1]]);
    let (c, heard) = open(&mut b, 2, connect_packet("sleeper", ProtocolVersion::V311, false));
    let got: Vec<&[u8]> = heard.to(&c).iter().filter_map(|p| if let Packet::Publish(p) = p { Some(p.payload.as_slice()) } else { None }).collect();
    assert_eq!(got, [[2u8], [3], [4]]);
}

#[test]
fn qos2_from_a_client_is_routed_once_however_often_it_is_resent() {
    let mut b = Broker::new(BrokerConfig::default());
    let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V311, false));
    b.knobs.drop.insert(AckKind::Pubrec, 1);
    let first = send(&mut b, 1, &mut c, publish(1, b"once", QoS::ExactlyOnce, false));
    let again = send(&mut b, 2, &mut c, publish(1, b"once", QoS::ExactlyOnce, true));
    let routed = first.events.iter().chain(&again.events).filter(|e| matches!(e, Event::Routed { .. })).count();
    assert_eq!(routed, 1);
    assert!(matches!(again.to(&c)[0], Packet::PubRec(_)));
    let done = send(&mut b, 3, &mut c, Packet::PubRel(PubResponse { packet_id: PacketId::new(1).unwrap(), reason: 0, properties: Properties::default() }));
    assert!(matches!(done.to(&c)[0], Packet::PubComp(_)));
    assert!(done.violations().is_empty() && again.violations().is_empty());
}

fn filter(f: &str) -> SubscribeFilter {
    SubscribeFilter { filter: f.into(), qos: QoS::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 }
}

#[test]
fn retain_handling_and_retain_as_published_follow_the_subscription_options() {
    let mut b = Broker::new(BrokerConfig::default());
    b.publish(0, mqtt_broker_model::Message { topic: "cfg".into(), payload: b"old".to_vec(), qos: QoS::AtMostOnce, retain: true, expires_at: None });
    let (mut c, _) = open(&mut b, 0, connect_packet("dev", ProtocolVersion::V5, true));
    let subscribe = |b: &mut Broker, c: &mut Client, id: u16, handling: u8, as_published: bool| {
        let f = SubscribeFilter { retain_handling: handling, retain_as_published: as_published, ..filter("cfg") };
        let heard = send(b, 1, c, Packet::Subscribe(Subscribe { packet_id: PacketId::new(id).unwrap(), filters: vec![f], properties: Properties::default() }));
        heard.to(c).iter().filter_map(|p| if let Packet::Publish(p) = p { Some((p.payload.clone(), p.retain)) } else { None }).collect::<Vec<_>>()
    };
    assert_eq!(subscribe(&mut b, &mut c, 1, 2, false), vec![], "2: never");
    assert_eq!(subscribe(&mut b, &mut c, 2, 1, false), vec![], "1: not for a subscription that exists");
    assert_eq!(subscribe(&mut b, &mut c, 3, 0, false), vec![(b"old".to_vec(), true)], "0: always, flagged retained");
    let live = |b: &mut Broker, c: &mut Client| {
        b.publish(2, mqtt_broker_model::Message { topic: "cfg".into(), payload: b"new".to_vec(), qos: QoS::AtMostOnce, retain: true, expires_at: None });
        let heard = drain(b, &mut [c]);
        heard.to(c).iter().find_map(|p| if let Packet::Publish(p) = p { Some(p.retain) } else { None }).unwrap()
    };
    assert!(!live(&mut b, &mut c), "a live message loses the flag");
    subscribe(&mut b, &mut c, 4, 2, true);
    assert!(live(&mut b, &mut c), "Retain As Published keeps it");
}

#[test]
fn access_control_refuses_denied_publishes_and_subscriptions_with_each_versions_code() {
    let mut b = Broker::new(BrokerConfig { deny: vec!["t".into()], ..BrokerConfig::default() });
    let (mut v5, _) = open(&mut b, 0, connect_packet("v5", ProtocolVersion::V5, true));
    let (mut v3, _) = open(&mut b, 0, connect_packet("v3", ProtocolVersion::V311, true));
    let sub = |id: u16| {
        Packet::Subscribe(Subscribe { packet_id: PacketId::new(id).unwrap(), filters: vec![filter("t"), filter("u")], properties: Properties::default() })
    };
    let codes = |heard: &Heard, c: &Client| heard.to(c).iter().find_map(|p| if let Packet::SubAck(a) = p { Some(a.codes.clone()) } else { None }).unwrap();
    assert_eq!(codes(&send(&mut b, 1, &mut v5, sub(1)), &v5), vec![0x87, 1], "MQTT 5: Not authorized, the other filter granted");
    assert_eq!(codes(&send(&mut b, 1, &mut v3, sub(1)), &v3), vec![0x80, 1], "3.1.1: Failure");
    // A denied publish goes nowhere and says why; MQTT 5 tells the publisher, 3.1.1 cannot.
    for (c, reason) in [(&mut v5, 0x87), (&mut v3, 0)] {
        let heard = send(&mut b, 2, c, publish(7, b"x", QoS::AtLeastOnce, false));
        assert!(heard.to(c).iter().any(|p| matches!(p, Packet::PubAck(a) if a.reason == reason)), "{heard:?}");
        assert!(heard.events.iter().any(|e| matches!(e, Event::Dropped { why: DropReason::Denied, .. })), "{heard:?}");
        assert!(!heard.events.iter().any(|e| matches!(e, Event::Routed { .. })), "{heard:?}");
    }
}
