//! The packet ids a host keeps across a restart of the client without a store (a watchdog
//! replacing a failed instance): what the client reports, and a fresh client resending
//! under them (see `Client::report_sent_ids` and `Client::resume_publish`).

mod harness;

use harness::*;
use mqtt_protocol::codec::PubResponse;
use mqtt_protocol::{ApiError, Client, Event, OutgoingPublish, Packet, Properties, QoS, SentId};

fn qos2(topic: &str, payload: &[u8]) -> OutgoingPublish {
    OutgoingPublish { topic: topic.into(), payload: payload.into(), qos: QoS::ExactlyOnce, retain: false, properties: Properties::default() }
}

/// A client whose session the broker keeps, reporting its ids, before `connect`.
fn fresh() -> Harness {
    let mut cfg = config(false);
    cfg.clean_init = false;
    cfg.clean = false;
    let mut client = Client::new(cfg).unwrap();
    assert!(client.report_sent_ids(), "no store, clean_init false: the ids are reported");
    Harness::with_client(client)
}

fn connect(h: &mut Harness, session_present: bool) {
    h.client.connect(h.now).unwrap();
    h.pump();
    h.take_sent();
    h.connack(session_present);
}

/// The first life: a QoS 2 publish answered with PUBREC, a QoS 1 one unanswered; what it
/// reported of them, and the publishes.
fn first_life() -> (Vec<SentId>, OutgoingPublish, OutgoingPublish) {
    let mut h = fresh();
    connect(&mut h, false);
    let (a, b) = (qos2("t/a", b"two"), qos1("t/b", b"one"));
    let ta = h.client.publish(h.now, a.clone(), None).unwrap();
    let tb = h.client.publish(h.now, b.clone(), None).unwrap();
    h.pump();
    let sent = h.take_sent();
    let ids: Vec<_> = Harness::publishes(&sent).iter().map(|p| p.packet_id.unwrap()).collect();
    let reported = h.client.take_sent_ids();
    assert_eq!(reported, vec![SentId { token: ta, packet_id: ids[0].get(), released: false }, SentId { token: tb, packet_id: ids[1].get(), released: false }]);
    h.broker_sends(Packet::PubRec(PubResponse { packet_id: ids[0], reason: 0, properties: Properties::default() }));
    assert_eq!(h.client.take_sent_ids(), vec![SentId { token: ta, packet_id: ids[0].get(), released: true }]);
    assert!(h.client.take_sent_ids().is_empty(), "each change reported once");
    // The instance fails here: what the host holds is the last word on each.
    let last = vec![SentId { token: ta, packet_id: ids[0].get(), released: true }, reported[1]];
    (last, a, b)
}

#[test]
fn a_fresh_client_resends_what_was_in_flight_under_its_packet_ids() {
    let (ids, a, b) = first_life();
    let mut h = fresh();
    let ra = h.client.resume_publish(h.now, a, ids[0]).unwrap();
    let rb = h.client.resume_publish(h.now, b, ids[1]).unwrap();
    h.client.publish(h.now, qos1("t/c", b"new"), None).unwrap();
    connect(&mut h, true);
    let sent = h.take_sent();
    assert!(matches!(&sent[0], Packet::PubRel(r) if r.packet_id.get() == ids[0].packet_id), "the released QoS 2 publish: PUBREL under its id, {sent:?}");
    let publishes = Harness::publishes(&sent);
    assert_eq!((publishes[0].topic.as_str(), publishes[0].packet_id.unwrap().get(), publishes[0].dup), ("t/b", ids[1].packet_id, true));
    let new_id = publishes[1].packet_id.unwrap().get();
    assert_eq!(publishes[1].topic, "t/c");
    assert!(new_id != ids[0].packet_id && new_id != ids[1].packet_id, "a new publish takes an id nobody holds");
    h.broker_sends(Packet::PubComp(PubResponse { packet_id: pid(ids[0].packet_id), reason: 0, properties: Properties::default() }));
    h.puback(pid(ids[1].packet_id));
    let events = h.take_events();
    assert!(events.contains(&Event::Published(ra)) && events.contains(&Event::Published(rb)), "{events:?}");
}

#[test]
fn a_broker_without_the_session_gets_them_as_new() {
    let (ids, a, b) = first_life();
    let mut h = fresh();
    let ra = h.client.resume_publish(h.now, a, ids[0]).unwrap();
    h.client.resume_publish(h.now, b, ids[1]).unwrap();
    connect(&mut h, false);
    let sent = h.take_sent();
    assert!(!sent.iter().any(|p| matches!(p, Packet::PubRel(_))), "nothing to release in a new session");
    let publishes = Harness::publishes(&sent);
    assert_eq!(publishes.len(), 1, "{sent:?}");
    assert_eq!((publishes[0].topic.as_str(), publishes[0].dup), ("t/b", false));
    assert!(h.take_events().contains(&Event::Published(ra)), "the broker had taken the released one at PUBREC");
}

#[test]
fn resuming_is_refused_after_connect_under_an_id_in_use_or_at_qos_0() {
    let (ids, a, b) = first_life();
    let mut h = fresh();
    h.client.resume_publish(h.now, a.clone(), ids[0]).unwrap();
    assert!(matches!(h.client.resume_publish(h.now, b.clone(), ids[0]), Err(ApiError::Invalid(_))), "the id is taken");
    let qos0 = OutgoingPublish { qos: QoS::AtMostOnce, ..b.clone() };
    assert!(matches!(h.client.resume_publish(h.now, qos0, ids[1]), Err(ApiError::Invalid(_))));
    connect(&mut h, true);
    assert!(matches!(h.client.resume_publish(h.now, b, ids[1]), Err(ApiError::Invalid(_))), "only before connect");
}

#[test]
fn nothing_is_reported_where_a_fresh_client_would_not_resume_the_session() {
    let mut clean = Client::new(config(false)).unwrap();
    assert!(!clean.report_sent_ids(), "clean_init and clean: every connection is clean");
    let mut h = Harness::with_client(clean);
    connect(&mut h, false);
    h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    assert!(h.client.take_sent_ids().is_empty());
}

/// [`fresh`] with a second broker to fail over to.
fn fresh_with_backup() -> Harness {
    let mut cfg = config(false);
    cfg.clean_init = false;
    cfg.clean = false;
    cfg.servers = vec!["backup".into()];
    let mut client = Client::new(cfg).unwrap();
    client.report_sent_ids();
    Harness::with_client(client)
}

/// Found by `mqtt-sim explore --seed 73`: a client failed over to its second broker, its
/// first came back, and the watchdog replaced the client. The fresh instance resumed the
/// first broker's stale session, where the ids it then used still meant the messages from
/// before the failover (at QoS 2, a new message under such an id is taken for a resend and
/// never delivered). Told where the session lives, it resumes that one.
#[test]
fn a_fresh_client_resumes_the_session_where_the_failed_one_had_moved_it() {
    let mut h = fresh_with_backup();
    h.client.connect(h.now).unwrap();
    h.pump();
    h.take_sent();
    h.connack(false);
    assert_eq!(h.client.take_session_broker(), None, "on the first broker: nothing new for the host");
    // The first broker goes away for good: retried, then the backup.
    h.lose_and_fail_over();
    h.take_sent();
    h.connack(false);
    assert_eq!(h.client.take_session_broker(), Some(1), "the session moved to the backup");
    assert_eq!(h.client.take_session_broker(), None, "said once");

    let mut h = fresh_with_backup();
    h.client.resume_session(1).unwrap();
    h.client.connect(h.now).unwrap();
    h.pump();
    assert_eq!(h.opened_hosts(), ["backup"]);
    let sent = h.take_sent();
    assert!(matches!(&sent[..], [Packet::Connect(c)] if !c.clean_start), "the session is resumed there: {sent:?}");
    h.connack(true);
    assert_eq!(h.client.take_session_broker(), None, "where the host said it is");
}

#[test]
fn a_session_is_resumed_only_before_connect_and_on_a_broker_in_the_config() {
    let mut h = fresh_with_backup();
    assert!(matches!(h.client.resume_session(2), Err(ApiError::Invalid(_))), "two brokers: 0 and 1");
    h.client.connect(h.now).unwrap();
    assert!(matches!(h.client.resume_session(1), Err(ApiError::Invalid(_))), "only before connect");
}

#[test]
fn a_fresh_client_whose_session_moved_fails_back_with_a_clean_start() {
    let mut h = fresh_with_backup();
    h.client.resume_session(1).unwrap();
    h.client.connect(h.now).unwrap();
    h.pump();
    h.take_sent();
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Refused);
    h.pump();
    assert_eq!(h.opened_hosts(), ["backup", "broker"]);
    let sent = h.take_sent();
    assert!(matches!(&sent[..], [Packet::Connect(c)] if c.clean_start), "not where the session lives: {sent:?}");
    h.connack(false);
    assert_eq!(h.client.take_session_broker(), Some(0), "and the host hears it moved back");
}

/// mqtt_as's usual session: purged at power-up (`clean_init`), kept from then on (`clean`
/// false). A fresh instance of a client that was up resumes it (its host gives it
/// `clean_init = clean`), so the failed one must say its ids and where the session lives.
#[test]
fn ids_are_reported_for_a_session_kept_after_the_first_connection() {
    // MQTT 5: under 3.1.1 the first connection only purges, and the client reconnects.
    let mut cfg = config(true);
    cfg.clean_init = true;
    cfg.clean = false;
    let mut client = Client::new(cfg).unwrap();
    assert!(client.report_sent_ids(), "clean false: the session outlives the first connection");
    let mut h = Harness::with_client(client);
    connect(&mut h, false);
    h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    assert_eq!(h.client.take_sent_ids().len(), 1);
}
