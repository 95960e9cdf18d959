//! Behaviour of the connection manager and session, one test per behaviour, driven with
//! explicit timestamps against a scripted broker.

mod harness;

use harness::*;
use mqtt_protocol::codec::{Disconnect, PubResponse, Publish};
use mqtt_protocol::{Action, ApiError, DownReason, Event, LinkState, Packet, Properties, PropertyValues, QoS, SubscribeFilter, SubscribeProperties};

fn sub(filter: &str) -> SubscribeFilter {
    SubscribeFilter { filter: filter.into(), qos: QoS::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 }
}

#[test]
fn connect_sends_connect_and_reports_up_on_connack() {
    let mut h = Harness::new(config(false));
    h.client.connect(h.now).unwrap();
    h.pump();
    assert!(matches!(h.actions[0], Action::OpenSocket { ref host, port: 1883, tls: None } if host == "broker"));
    let sent = h.take_sent();
    let Packet::Connect(c) = &sent[0] else { panic!("expected CONNECT, got {sent:?}") };
    assert_eq!(c.client_id, "dev-1");
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    h.connack(false);
    assert_eq!(h.take_events(), vec![Event::Up { session_present: false }]);
    assert!(h.client.is_connected());
}

#[test]
fn first_connect_refused_reports_connect_failed_and_stays_idle() {
    let mut h = Harness::new(config(false));
    h.client.connect(h.now).unwrap();
    h.pump();
    h.connack_with(false, 5, Properties::default());
    let events = h.take_events();
    assert!(matches!(&events[..], [Event::ConnectFailed(why)] if why.contains("not authorized")), "{events:?}");
    assert_eq!(h.client.poll_timeout(), None, "no retry after a failed first connect");
    h.take_sent();
    // The application may try again.
    h.client.connect(h.now).unwrap();
    h.pump();
    assert!(matches!(h.take_sent()[..], [Packet::Connect(_)]));
}

#[test]
fn first_connect_times_out_without_connack() {
    let mut h = Harness::new(config(false));
    h.client.connect(h.now).unwrap();
    h.pump();
    h.advance(2_000);
    assert!(matches!(&h.take_events()[..], [Event::ConnectFailed(_)]));
}

#[test]
fn later_refusals_are_retried_with_backoff_not_reported_as_connect_failed() {
    let mut h = Harness::up(config(false));
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Reset);
    h.pump();
    h.advance(1_000);
    h.connack_with(false, 3, Properties::default());
    let events = h.take_events();
    assert!(!events.iter().any(|e| matches!(e, Event::ConnectFailed(_))), "{events:?}");
    h.take_sent();
    h.advance(1_000);
    assert!(h.take_sent().iter().any(|p| matches!(p, Packet::Connect(_))), "retried after backoff");
}

#[test]
fn qos1_publish_completes_on_puback() {
    let mut h = Harness::up(config(false));
    let t = h.client.publish(h.now, qos1("a/b", b"hi"), None).unwrap();
    h.pump();
    let sent = h.take_sent();
    let p = Harness::publishes(&sent)[0].clone();
    assert_eq!((p.qos, p.dup, p.topic.as_str()), (QoS::AtLeastOnce, false, "a/b"));
    h.puback(p.packet_id.unwrap());
    assert_eq!(h.take_events(), vec![Event::Published(t)]);
    assert_eq!(h.client.stats().inflight, 0);
}

#[test]
fn qos1_republishes_with_dup_after_response_time() {
    let mut h = Harness::up(config(false));
    h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    let first = Harness::publishes(&h.take_sent())[0].clone();
    h.advance(1_999);
    assert!(h.take_sent().is_empty(), "nothing before response_time");
    h.advance(1);
    let again = h.take_sent();
    let again = Harness::publishes(&again)[0].clone();
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id, "same packet id");
    assert_eq!((&again.topic, &again.payload), (&first.topic, &first.payload));
    assert_eq!(h.client.stats().republishes, 1);
}

/// Connected under MQTT 5 to a broker that allows 4 topic aliases; its CONNACK properties
/// come back for a reconnect.
fn up_with_topic_aliases() -> (Harness, Properties) {
    let mut h = Harness::new(config(true));
    h.client.connect(h.now).unwrap();
    h.pump();
    let alias_max: Properties = PropertyValues { topic_alias_maximum: Some(4), ..Default::default() }.into();
    h.connack_with(false, 0, alias_max.clone());
    h.take_sent();
    (h, alias_max)
}

/// A PUBLISH borrows its topic and payload from the entry in flight; the entry must have them
/// back for every resend, whether the topic went out in full or as an alias (MQTT 5).
#[test]
fn resends_carry_the_topic_and_payload_whether_or_not_an_alias_stood_for_the_topic() {
    let (mut h, _) = up_with_topic_aliases();
    h.client.publish(h.now, qos1("long/topic", b"first"), None).unwrap();
    h.client.publish(h.now, qos1("long/topic", b"second"), None).unwrap();
    h.pump();
    let sent = h.take_sent();
    let ps = Harness::publishes(&sent);
    assert_eq!((ps[0].topic.as_str(), ps[0].properties.topic_alias), ("long/topic", Some(1)));
    assert_eq!((ps[1].topic.as_str(), ps[1].properties.topic_alias), ("", Some(1)), "the second goes by alias");
    // Resumed on a new connection (no aliases yet): both resent, each with its topic.
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.connack_with(true, 0, Properties::default());
    let sent = h.take_sent();
    let resent: Vec<_> = Harness::publishes(&sent).iter().map(|p| (p.topic.clone(), p.payload.clone(), p.dup)).collect();
    assert_eq!(resent, vec![("long/topic".to_string(), b"first".to_vec(), true), ("long/topic".to_string(), b"second".to_vec(), true)]);
}

#[test]
fn max_repubs_without_ack_forces_a_reconnect() {
    let mut cfg = config(false);
    cfg.max_repubs = 2;
    let mut h = Harness::up(cfg);
    h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    h.advance(2_000);
    h.advance(2_000);
    assert_eq!(h.client.stats().republishes, 2);
    h.advance(2_000);
    assert!(h.take_events().contains(&Event::Down(DownReason::MaxRepubs)));
    assert!(h.actions.contains(&Action::CloseSocket));
}

#[test]
fn v5_never_resends_on_a_live_connection_but_resends_after_resume() {
    let mut h = Harness::up(config(true));
    h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    let first = Harness::publishes(&h.take_sent())[0].clone();
    h.advance(9_999);
    assert!(Harness::publishes(&h.take_sent()).is_empty(), "MQTT 5 forbids resending on the same connection");
    h.advance(1);
    assert!(h.take_events().contains(&Event::Down(DownReason::Timeout)));
    h.advance(1_000);
    h.connack(true);
    let resent = h.take_sent();
    let resent = Harness::publishes(&resent);
    assert_eq!(resent.len(), 1);
    assert!(resent[0].dup);
    assert_eq!(resent[0].packet_id, first.packet_id);
}

#[test]
fn resumed_session_resends_unacked_in_original_order_with_original_ids_and_dup() {
    let mut h = Harness::up(config(false));
    for i in 0..5u8 {
        h.client.publish(h.now, qos1("t", &[i]), None).unwrap();
    }
    h.pump();
    let first: Vec<Publish> = Harness::publishes(&h.take_sent()).into_iter().cloned().collect();
    h.puback(first[1].packet_id.unwrap());
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.connack(true);
    let resent = h.take_sent();
    let resent = Harness::publishes(&resent);
    let want: Vec<_> = first.iter().filter(|p| p.payload != [1]).map(|p| (p.packet_id, p.payload.clone())).collect();
    let got: Vec<_> = resent.iter().map(|p| (p.packet_id, p.payload.clone())).collect();
    assert_eq!(got, want);
    assert!(resent.iter().all(|p| p.dup));
}

#[test]
fn clean_reconnect_republishes_unacked_as_new_messages_in_order() {
    let mut h = Harness::up(config(false));
    for i in 0..3u8 {
        h.client.publish(h.now, qos1("t", &[i]), None).unwrap();
    }
    h.pump();
    h.take_sent();
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.connack(false);
    let sent = h.take_sent();
    let resent = Harness::publishes(&sent);
    assert_eq!(resent.iter().map(|p| p.payload[0]).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(resent.iter().all(|p| !p.dup), "new messages, not duplicates");
}

#[test]
fn clean_init_true_clean_false_purges_the_old_session_then_connects_unclean() {
    let mut cfg = config(false);
    cfg.clean_init = true;
    cfg.clean = false;
    let mut h = Harness::new(cfg);
    h.client.connect(h.now).unwrap();
    h.pump();
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    assert!(c.clean_start, "power-up discards the stale session");
    h.connack(false);
    let sent = h.take_sent();
    assert!(matches!(sent[0], Packet::Disconnect(_)), "{sent:?}");
    let Packet::Connect(c) = &sent[1] else { panic!("{sent:?}") };
    assert!(!c.clean_start, "then a persistent session");
    assert!(h.take_events().is_empty(), "not up before the persistent session is");
    h.connack(false);
    assert_eq!(h.take_events(), vec![Event::Up { session_present: false }]);
    // Later outages keep the session.
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    assert!(!c.clean_start);
}

#[test]
fn both_flags_false_resume_the_session_from_power_up() {
    let mut cfg = config(false);
    cfg.clean_init = false;
    cfg.clean = false;
    let mut h = Harness::new(cfg);
    h.client.connect(h.now).unwrap();
    h.pump();
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    assert!(!c.clean_start);
}

#[test]
fn v5_clean_start_on_first_connect_with_session_expiry_keeps_later_sessions() {
    let mut cfg = config(true);
    cfg.clean_init = true;
    cfg.clean = false;
    cfg.session_expiry_secs = 3600;
    let mut h = Harness::new(cfg);
    h.client.connect(h.now).unwrap();
    h.pump();
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    assert!(c.clean_start);
    assert_eq!(c.properties.session_expiry_interval, Some(3600));
    h.connack(false);
    assert_eq!(h.take_events(), vec![Event::Up { session_present: false }], "one connection suffices in v5");
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    assert!(!c.clean_start);
}

#[test]
fn pings_after_a_quarter_keepalive_of_silence() {
    let mut h = Harness::up(config(false));
    h.advance(14_999);
    assert!(h.take_sent().is_empty());
    h.advance(1);
    assert_eq!(h.take_sent(), vec![Packet::PingReq]);
    h.broker_sends(Packet::PingResp);
    assert!(h.client.is_connected());
}

#[test]
fn ping_interval_overrides_when_shorter() {
    let mut cfg = config(false);
    cfg.ping_interval_secs = 5;
    let mut h = Harness::up(cfg);
    h.advance(5_000);
    assert_eq!(h.take_sent(), vec![Packet::PingReq]);
}

#[test]
fn broker_declared_dead_after_response_time_without_pingresp() {
    let mut h = Harness::up(config(false));
    h.advance(15_000);
    h.take_sent();
    h.advance(1_999);
    assert!(h.client.is_connected());
    h.advance(1);
    assert!(h.take_events().contains(&Event::Down(DownReason::Timeout)));
}

#[test]
fn broker_up_reports_the_ping_answer() {
    let mut h = Harness::up(config(false));
    h.client.broker_up(h.now);
    h.pump();
    assert_eq!(h.take_sent(), vec![Packet::PingReq]);
    h.broker_sends(Packet::PingResp);
    assert_eq!(h.take_events(), vec![Event::BrokerUp(true)]);
    h.client.broker_up(h.now);
    h.pump();
    h.advance(2_000);
    assert!(h.take_events().contains(&Event::BrokerUp(false)));
}

#[test]
fn link_loss_reports_down_and_link_return_reconnects_at_once() {
    let mut h = Harness::up(config(false));
    h.link(LinkState::Down);
    let events = h.take_events();
    assert!(events.contains(&Event::Down(DownReason::LinkLost)), "{events:?}");
    assert!(h.actions.contains(&Action::CloseSocket));
    h.actions.clear();
    h.advance(60_000);
    assert!(h.actions.is_empty(), "nothing to do while the link is down (host-managed link)");
    h.link(LinkState::Up);
    assert!(matches!(h.actions[0], Action::OpenSocket { .. }), "no backoff wait when the link returns");
}

#[test]
fn wifi_join_requested_when_credentials_are_configured() {
    let mut cfg = config(false);
    cfg.ssid = Some("home".into());
    cfg.wifi_pw = Some("pw".into());
    let mut h = Harness::up(cfg);
    h.link(LinkState::Down);
    assert!(h.actions.contains(&Action::JoinWifi { ssid: "home".into(), password: "pw".into() }));
}

#[test]
fn reconnect_backoff_grows_and_stays_within_bounds() {
    let mut h = Harness::up(config(false));
    let mut waits = Vec::new();
    for _ in 0..8 {
        h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Refused);
        h.pump();
        let start = h.now;
        let t = h.client.poll_timeout().unwrap();
        waits.push(t.saturating_since(start));
        h.now = t;
        h.client.handle_timeout(t);
        h.pump();
    }
    // backoff_min 100, max 1000: each wait in [d/2, d] with d doubling up to the cap.
    for (i, w) in waits.iter().enumerate() {
        let d = (100u64 << i).min(1000);
        assert!(*w >= d / 2 && *w <= d, "attempt {i}: waited {w}, bound {d}");
    }
}

/// A 3.1.1 broker drops the connection at once on a publish over its size limit (it cannot
/// announce the limit). Each reconnect resends the publish, so the connections come up and
/// die before the broker acknowledges anything: they cost a backoff step each, as a refused
/// attempt does, rather than a reconnect every `backoff_min_ms` for as long as it waits. The
/// first acknowledgement, or a connection that lasts the response time, starts it over.
#[test]
fn connections_the_broker_ends_before_acknowledging_anything_back_off() {
    let mut cfg = config(false);
    cfg.backoff_max_ms = 5_000;
    let mut h = Harness::up(cfg);
    let poison = h.client.publish(h.now, qos1("t", b"too big for this broker"), None).unwrap();
    h.pump();
    let mut waits = Vec::new();
    for _ in 0..10 {
        assert_eq!(Harness::publishes(&h.take_sent()).len(), 1, "the publish went out on this connection");
        h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Reset);
        h.pump();
        let lost = h.now;
        h.opened_at.clear();
        // The next attempt (the socket opens at once, then CONNECT).
        while h.opened_at.is_empty() {
            let t = h.client.poll_timeout().unwrap();
            h.advance(t.saturating_since(h.now));
        }
        waits.push(h.opened_at[0].saturating_since(lost));
        h.connack(true);
    }
    // d = 100·2^i up to 5 s, each wait in [d/2, d]: the same steps as refused attempts.
    for (i, w) in waits.iter().enumerate() {
        let d = (100u64 << i).min(5_000);
        assert!(*w >= d / 2 && *w <= d, "connection {i}: waited {w} ms, bound {d}: {waits:?}");
    }
    // The broker resets the connection; how long the client backs off before the next.
    let reset = |h: &mut Harness| {
        h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Reset);
        h.pump();
        h.client.poll_timeout().unwrap().saturating_since(h.now)
    };
    // A connection that lasts the response time (2 s here) proved itself, acknowledged or
    // not: the loss after it is a first one again.
    h.advance(2_000);
    let mut wait = reset(&mut h);
    assert!((50..=100).contains(&wait), "waited {wait} ms after a connection that lasted");
    // ... and ones that lasted less did not: the second in a row waits a step longer.
    for bound in [100, 200] {
        h.opened_at.clear();
        h.advance(wait);
        assert_eq!(h.opened_at.len(), 1, "reconnected when the backoff ended");
        h.connack(true);
        h.advance(1_000);
        wait = reset(&mut h);
        assert!((bound / 2..=bound).contains(&wait), "waited {wait} ms after a connection that lasted 1 s, bound {bound}");
    }
    h.advance(wait);
    h.connack(true);
    // The broker takes a publish on this connection: the next loss is a first one again.
    let id = Harness::publishes(&h.take_sent())[0].packet_id.unwrap();
    h.puback(id);
    assert!(h.take_events().contains(&Event::Published(poison)));
    let wait = reset(&mut h);
    assert!((50..=100).contains(&wait), "waited {wait} ms after a connection the broker acknowledged on");
}

/// The gaps between the client's connection attempts over `ms`.
fn attempt_gaps(h: &mut Harness, ms: u64) -> Vec<u64> {
    h.opened_at.clear();
    h.advance(ms);
    h.opened_at.windows(2).map(|w| w[1].saturating_since(w[0])).collect()
}

#[test]
fn a_silent_path_is_probed_every_800_ms_and_the_client_is_up_within_that_of_it_healing() {
    let mut h = Harness::up(config(false));
    h.reset_into(Network::Silent);
    // Each open that nothing answers is replaced by a fresh one (a fresh SYN) after 800 ms,
    // not after the response time (2 s here) and a growing backoff.
    let gaps = attempt_gaps(&mut h, 10_000);
    assert!(gaps.len() >= 10 && gaps.iter().all(|g| *g == 800), "{gaps:?}");
    h.network = Network::Opens;
    let healed = h.now;
    h.take_sent();
    h.advance(800);
    let connect_at = *h.opened_at.last().unwrap();
    assert!(connect_at.saturating_since(healed) <= 800);
    assert!(h.take_sent().iter().any(|p| matches!(p, Packet::Connect(_))));
    h.connack(true);
    assert!(h.client.is_connected());
}

#[test]
fn nothing_listening_is_retried_within_800_ms_not_after_the_grown_backoff() {
    let mut cfg = config(false);
    cfg.backoff_max_ms = 5_000;
    let mut h = Harness::up(cfg);
    h.reset_into(Network::Refuses);
    let gaps = attempt_gaps(&mut h, 20_000);
    // Jittered within [d/2, d] as the backoff is, but d stops at 800 ms.
    assert!(gaps.len() >= 24 && gaps.iter().all(|g| *g <= 800), "{gaps:?}");
    assert!(gaps.iter().skip(4).all(|g| *g >= 400), "{gaps:?}");
}

#[test]
fn a_refusal_by_the_broker_itself_keeps_the_full_backoff() {
    let mut cfg = config(false);
    cfg.backoff_max_ms = 5_000;
    let mut h = Harness::up(cfg);
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Reset);
    let mut waits = Vec::new();
    for _ in 0..8 {
        h.pump();
        let start = h.now;
        let t = h.client.poll_timeout().unwrap();
        h.now = t;
        h.client.handle_timeout(t);
        h.pump();
        waits.push(t.saturating_since(start));
        // The socket opened: this is CONNACK 3 (server unavailable), an MQTT answer.
        h.connack_with(false, 3, Properties::default());
    }
    // d = 100·2^i up to 5 s: from the seventh on, [2.5 s, 5 s], past the probe's 800 ms.
    assert!(waits.iter().skip(6).all(|w| *w >= 2_500), "{waits:?}");
}

#[test]
fn fast_probes_stop_after_32_in_a_row_and_attempts_wait_the_response_time_again() {
    let mut h = Harness::up(config(false));
    h.reset_into(Network::Silent);
    let gaps = attempt_gaps(&mut h, 60_000);
    let fast = gaps.iter().take_while(|g| **g == 800).count();
    assert_eq!(fast, 32, "{gaps:?}");
    // Then the response time (2 s) plus the backoff (at most 1 s here).
    assert!(gaps[fast..].iter().all(|g| (2_000..=3_000).contains(g)), "{gaps:?}");
}

#[test]
fn a_slow_path_gets_four_times_its_last_open_before_a_probe_replaces_it() {
    let mut cfg = config(false);
    cfg.response_time_ms = 10_000;
    let mut h = Harness::new(cfg);
    h.network = Network::Silent;
    h.client.connect(h.now).unwrap();
    h.pump();
    // This path takes 500 ms to open (a slow TLS handshake, say).
    h.advance(500);
    h.network = Network::Opens;
    h.socket_open = true;
    h.client.handle_socket_open(h.now);
    h.pump();
    h.connack(false);
    h.reset_into(Network::Silent);
    let gaps = attempt_gaps(&mut h, 10_000);
    assert!(gaps.len() >= 4 && gaps.iter().all(|g| *g == 2_000), "{gaps:?}");
}

#[test]
fn incoming_qos1_is_acked_and_delivered() {
    let mut h = Harness::up(config(false));
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "in".into(),
        packet_id: Some(pid(7)),
        payload: b"m".to_vec(),
        properties: Properties::default(),
    };
    h.broker_sends(Packet::Publish(p));
    assert_eq!(h.take_sent(), vec![Packet::PubAck(PubResponse { packet_id: pid(7), reason: 0, properties: Properties::default() })]);
    let events = h.take_events();
    assert!(matches!(&events[..], [Event::Message(m)] if m.topic == "in" && m.retained && m.payload == b"m"));
}

#[test]
fn incoming_qos2_is_delivered_exactly_once_despite_redelivery() {
    let mut h = Harness::up(config(false));
    let p = Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "in".into(),
        packet_id: Some(pid(9)),
        payload: b"m".to_vec(),
        properties: Properties::default(),
    };
    h.broker_sends(Packet::Publish(p.clone()));
    h.broker_sends(Packet::Publish(Publish { dup: true, ..p.clone() }));
    let msgs = h.take_events().into_iter().filter(|e| matches!(e, Event::Message(_))).count();
    assert_eq!(msgs, 1);
    let recs = h.take_sent().into_iter().filter(|p| matches!(p, Packet::PubRec(_))).count();
    assert_eq!(recs, 2, "every copy is answered");
    h.broker_sends(Packet::PubRel(PubResponse { packet_id: pid(9), reason: 0, properties: Properties::default() }));
    assert!(matches!(h.take_sent()[..], [Packet::PubComp(_)]));
    // After release the id is free: the same id is a new message.
    h.broker_sends(Packet::Publish(p));
    assert_eq!(h.take_events().len(), 1);
}

#[test]
fn qos2_publish_completes_on_pubcomp_after_pubrel() {
    let mut h = Harness::up(config(false));
    let mut p = qos1("t", b"x");
    p.qos = QoS::ExactlyOnce;
    let t = h.client.publish(h.now, p, None).unwrap();
    h.pump();
    let id = Harness::publishes(&h.take_sent())[0].packet_id.unwrap();
    h.broker_sends(Packet::PubRec(PubResponse { packet_id: id, reason: 0, properties: Properties::default() }));
    assert!(matches!(h.take_sent()[..], [Packet::PubRel(_)]));
    assert!(h.take_events().is_empty());
    h.broker_sends(Packet::PubComp(PubResponse { packet_id: id, reason: 0, properties: Properties::default() }));
    assert_eq!(h.take_events(), vec![Event::Published(t)]);
}

#[test]
fn default_config_holds_input_back_instead_of_discarding() {
    let mut cfg = config(false);
    assert!(cfg.backpressure, "no acknowledged message may be lost with the defaults");
    cfg.queue_len = 2;
    let mut h = Harness::up(cfg);
    let bytes: Vec<u8> = (0..5u8).flat_map(|i| qos0_in(i, h.version)).collect();
    h.client.handle_input(h.now, &bytes);
    assert!(!h.client.wants_input(), "two messages wait: the client asks for no more input");
    let mut payloads = Vec::new();
    for _ in 0..10 {
        while let Some(e) = h.client.poll_event() {
            if let Event::Message(m) = e {
                payloads.push(m.payload[0]);
            }
        }
        h.client.handle_timeout(h.now);
    }
    assert_eq!(payloads, vec![0, 1, 2, 3, 4], "every message, in order");
    assert_eq!(h.client.stats().discards, 0);
}

/// mqtt_as's policy, opted into: past `queue_len` (2) the oldest waiting message goes.
fn discard_oldest_config() -> mqtt_protocol::Config {
    let mut cfg = config(false);
    cfg.queue_len = 2;
    cfg.backpressure = false;
    cfg
}

#[test]
fn full_queue_discards_the_oldest_message_and_counts_it_when_backpressure_is_off() {
    let mut h = Harness::up(discard_oldest_config());
    for i in 0..3u8 {
        h.client.handle_input(h.now, &qos0_in(i, h.version));
    }
    let mut payloads = Vec::new();
    let mut discarded = None;
    while let Some(e) = h.client.poll_event() {
        match e {
            Event::Message(m) => payloads.push(m.payload[0]),
            Event::Discarded(n) => discarded = Some(n),
            _ => {}
        }
    }
    assert_eq!(payloads, vec![1, 2]);
    assert_eq!(discarded, Some(1));
    assert_eq!(h.client.stats().discards, 1);
}

#[test]
fn oversize_packet_is_refused_before_it_is_buffered() {
    let mut cfg = config(true);
    cfg.max_packet_size = 1024;
    let mut h = Harness::up(cfg);
    // A header announcing 100 MB: refused on the header alone.
    h.client.handle_input(h.now, &[0x30, 0x80, 0x80, 0x80, 0x30]);
    h.pump();
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::Down(DownReason::ProtocolError(why)) if why.contains("maximum packet size"))), "{events:?}");
    let sent = h.take_sent();
    assert!(matches!(&sent[..], [Packet::Disconnect(Disconnect { reason: 0x95, .. })]), "{sent:?}");
}

#[test]
fn malformed_input_ends_in_a_clean_disconnect_with_a_reason() {
    let mut h = Harness::up(config(false));
    // PUBLISH with a wildcard in its topic.
    let bad = [0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'];
    h.client.handle_input(h.now, &bad);
    h.pump();
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::Down(DownReason::ProtocolError(why)) if why.contains("wildcard"))), "{events:?}");
    assert_eq!(h.client.stats().protocol_errors, 1);
    assert!(h.actions.contains(&Action::CloseSocket));
}

#[test]
fn disconnect_sends_disconnect_and_fails_what_is_unfinished() {
    let mut h = Harness::up(config(false));
    let t = h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    h.take_sent();
    h.client.disconnect(h.now);
    h.pump();
    assert!(matches!(h.take_sent()[..], [Packet::Disconnect(_)]));
    let events = h.take_events();
    assert!(events.contains(&Event::Down(DownReason::Requested)));
    assert!(events.contains(&Event::PublishFailed { token: t, reason: 0 }));
    assert_eq!(h.client.publish(h.now, qos1("t", b"x"), None), Err(ApiError::Closed));
}

#[test]
fn disconnect_fails_unanswered_subscribe_and_unsubscribe_with_0x80_per_filter() {
    let mut h = Harness::up(config(false));
    let sent = h.client.subscribe(h.now, vec![sub("a"), sub("b")], SubscribeProperties::default()).unwrap();
    h.pump();
    h.take_sent();
    let unsent = h.client.unsubscribe(h.now, vec!["c".into()]);
    h.link(LinkState::Down);
    let unsent = unsent.unwrap();
    let queued = h.client.subscribe(h.now, vec![sub("d")], SubscribeProperties::default()).unwrap();
    h.take_events();
    h.client.disconnect(h.now);
    h.pump();
    let events = h.take_events();
    assert!(events.contains(&Event::Subscribed { token: sent, codes: vec![0x80, 0x80] }), "{events:?}");
    assert!(events.contains(&Event::Unsubscribed { token: unsent, codes: vec![0x80] }), "{events:?}");
    assert!(events.contains(&Event::Subscribed { token: queued, codes: vec![0x80] }), "{events:?}");
}

#[test]
fn unsent_publish_fails_at_its_deadline() {
    let mut h = Harness::up(config(false));
    h.link(LinkState::Down);
    let deadline = h.now + 5_000;
    let t = h.client.publish(h.now, qos1("t", b"x"), Some(deadline)).unwrap();
    h.take_events();
    h.advance(5_000);
    assert_eq!(h.take_events(), vec![Event::PublishFailed { token: t, reason: 0 }]);
    h.link(LinkState::Up);
    h.connack(false);
    assert!(Harness::publishes(&h.take_sent()).is_empty());
}

#[test]
fn cancelled_inflight_publish_keeps_its_packet_id_until_acknowledged() {
    let mut cfg = config(false);
    cfg.max_inflight = 1;
    let mut h = Harness::up(cfg);
    let t = h.client.publish(h.now, qos1("t", b"a"), None).unwrap();
    h.pump();
    let id = Harness::publishes(&h.take_sent())[0].packet_id.unwrap();
    assert!(h.client.cancel(t));
    h.client.publish(h.now, qos1("t", b"b"), None).unwrap();
    h.pump();
    assert!(h.take_sent().is_empty(), "window still held by the cancelled message");
    h.puback(id);
    assert!(h.take_events().iter().all(|e| *e != Event::Published(t)), "a cancelled token is not reported");
    let next = Harness::publishes(&h.take_sent())[0].packet_id.unwrap();
    assert_ne!(next, id);
}

/// The window counts publishes only: a subscribe waiting for its SUBACK takes no slot, in
/// this connection or a resumed one, its SUBACK frees none, and the window, once full, opens
/// again with an acknowledgement. (The client counts the subscribes in flight rather than
/// walking the window: a count that missed one of those steps fails here.)
#[test]
fn a_subscribe_in_flight_takes_no_publish_slot() {
    let mut cfg = config(false);
    cfg.max_inflight = 2;
    let mut h = Harness::up(cfg);
    h.client.subscribe(h.now, vec![sub("d")], SubscribeProperties::default()).unwrap();
    h.pump();
    let Packet::Subscribe(s) = &h.take_sent()[0] else { panic!("no SUBSCRIBE") };
    let subscribe = s.packet_id;
    for payload in [b"a", b"b", b"c"] {
        h.client.publish(h.now, qos1("t", payload), None).unwrap();
    }
    h.pump();
    let payloads = |sent: &[Packet]| Harness::publishes(sent).iter().map(|p| p.payload.clone()).collect::<Vec<_>>();
    let sent = h.take_sent();
    assert_eq!(payloads(&sent), [b"a", b"b"], "two slots, the subscribe in none");
    let b = Harness::publishes(&sent)[1].packet_id.unwrap();
    h.puback(Harness::publishes(&sent)[0].packet_id.unwrap());
    let sent = h.take_sent();
    assert_eq!(payloads(&sent), [b"c"]);
    // Through a resumed session the subscribe is still in no slot, and once answered it
    // gives none back: two publishes in flight, whatever else came and went.
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.take_sent();
    h.connack(true);
    let resent = h.take_sent();
    assert_eq!((payloads(&resent), resent.iter().filter(|p| matches!(p, Packet::Subscribe(_))).count()), (vec![b"b".to_vec(), b"c".to_vec()], 1));
    h.suback(subscribe, vec![1]);
    h.client.publish(h.now, qos1("t", b"d"), None).unwrap();
    h.pump();
    assert!(payloads(&h.take_sent()).is_empty(), "b and c fill the window");
    h.puback(b);
    assert_eq!(payloads(&h.take_sent()), [b"d"]);
}

#[test]
fn inflight_window_honours_the_brokers_receive_maximum() {
    let mut h = Harness::new(config(true));
    h.client.connect(h.now).unwrap();
    h.pump();
    h.connack_with(false, 0, PropertyValues { receive_maximum: Some(2), ..Default::default() }.into());
    h.take_sent();
    for i in 0..5u8 {
        h.client.publish(h.now, qos1("t", &[i]), None).unwrap();
    }
    h.pump();
    let sent = h.take_sent();
    let first = Harness::publishes(&sent);
    assert_eq!(first.len(), 2);
    h.puback(first[0].packet_id.unwrap());
    assert_eq!(Harness::publishes(&h.take_sent()).len(), 1);
}

#[test]
fn topic_aliases_are_used_and_reestablished_after_reconnect() {
    let (mut h, alias_max) = up_with_topic_aliases();
    let mut p = qos1("long/topic", b"1");
    p.qos = QoS::AtMostOnce;
    h.client.publish(h.now, p.clone(), None).unwrap();
    h.client.publish(h.now, p.clone(), None).unwrap();
    h.pump();
    let sent = h.take_sent();
    let ps = Harness::publishes(&sent);
    assert_eq!((ps[0].topic.as_str(), ps[0].properties.topic_alias), ("long/topic", Some(1)));
    assert_eq!((ps[1].topic.as_str(), ps[1].properties.topic_alias), ("", Some(1)));
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.connack_with(false, 0, alias_max);
    h.take_sent();
    h.client.publish(h.now, p, None).unwrap();
    h.pump();
    let sent = h.take_sent();
    assert_eq!(Harness::publishes(&sent)[0].topic, "long/topic", "aliases are per connection");
}

#[test]
fn incoming_topic_alias_is_resolved_and_unknown_alias_is_a_protocol_error() {
    let mut h = Harness::up(config(true));
    let mut p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "x/y".into(),
        packet_id: None,
        payload: vec![1],
        properties: PropertyValues { topic_alias: Some(3), ..Default::default() }.into(),
    };
    h.broker_sends(Packet::Publish(p.clone()));
    p.topic = String::new();
    h.broker_sends(Packet::Publish(p.clone()));
    let topics: Vec<String> = h.take_events().into_iter().filter_map(|e| if let Event::Message(m) = e { Some(m.topic) } else { None }).collect();
    assert_eq!(topics, vec!["x/y", "x/y"]);
    p.properties.topic_alias = Some(4);
    h.broker_sends(Packet::Publish(p));
    assert!(h.take_events().iter().any(|e| matches!(e, Event::Down(DownReason::ProtocolError(_)))));
}

#[test]
fn server_disconnect_reason_is_reported_and_reconnect_follows() {
    let mut h = Harness::up(config(true));
    h.broker_sends(Packet::Disconnect(Disconnect {
        reason: 0x8B,
        properties: PropertyValues { reason_string: Some("shutting down".into()), ..Default::default() }.into(),
    }));
    let events = h.take_events();
    assert!(events.contains(&Event::Down(DownReason::ServerDisconnect(0x8B))), "{events:?}");
    h.advance(1_000);
    assert!(h.take_sent().iter().any(|p| matches!(p, Packet::Connect(_))));
}

#[test]
fn assigned_client_id_and_server_keepalive_are_honoured() {
    let mut cfg = config(true);
    cfg.client_id = String::new();
    let mut h = Harness::new(cfg);
    h.client.connect(h.now).unwrap();
    h.pump();
    let props = PropertyValues { assigned_client_identifier: Some("srv-42".into()), server_keep_alive: Some(20), ..Default::default() }.into();
    h.connack_with(false, 0, props);
    h.take_sent();
    h.advance(5_000);
    assert_eq!(h.take_sent(), vec![Packet::PingReq], "ping at server keepalive / 4");
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    assert_eq!(c.client_id, "srv-42");
}

#[test]
fn subscribe_issued_during_an_outage_is_sent_on_reconnect() {
    let mut h = Harness::up(config(false));
    h.link(LinkState::Down);
    let t = h.client.subscribe(h.now, vec![sub("a/#")], Default::default()).unwrap();
    h.link(LinkState::Up);
    h.take_sent();
    h.connack(false);
    let sent = h.take_sent();
    let Packet::Subscribe(s) = &sent[0] else { panic!("{sent:?}") };
    h.suback(s.packet_id, vec![1]);
    assert!(h.take_events().contains(&Event::Subscribed { token: t, codes: vec![1] }));
}

#[test]
fn subscriptions_are_renewed_after_a_clean_reconnect() {
    let mut h = Harness::up(config(false));
    h.client.subscribe(h.now, vec![sub("a/#")], Default::default()).unwrap();
    h.pump();
    let Packet::Subscribe(s) = &h.take_sent()[0] else { panic!() };
    h.suback(s.packet_id, vec![1]);
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.take_sent();
    h.connack(false);
    let sent = h.take_sent();
    assert!(matches!(&sent[..], [Packet::Subscribe(s)] if s.filters[0].filter == "a/#"), "{sent:?}");
    let Packet::Subscribe(s) = &sent[0] else { unreachable!() };
    h.take_events();
    h.suback(s.packet_id, vec![1]);
    assert!(h.take_events().is_empty(), "the renewal is internal: no event");
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.take_sent();
    h.connack(true);
    assert!(h.take_sent().is_empty(), "a resumed session keeps its subscriptions");
}

#[test]
fn unacknowledged_subscribe_is_resent_after_response_time() {
    let mut h = Harness::up(config(false));
    h.client.subscribe(h.now, vec![sub("a")], Default::default()).unwrap();
    h.pump();
    h.take_sent();
    h.advance(2_000);
    assert!(matches!(h.take_sent()[..], [Packet::Subscribe(_)]));
}

#[test]
fn will_is_sent_in_connect_with_v5_delay() {
    let mut cfg = config(true);
    cfg.will = Some(mqtt_protocol::Will {
        topic: "dev/status".into(),
        payload: b"dead".to_vec(),
        qos: QoS::AtLeastOnce,
        retain: true,
        delay_secs: Some(30),
        properties: Properties::default(),
    });
    let mut h = Harness::new(cfg);
    h.client.connect(h.now).unwrap();
    h.pump();
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    let w = c.will.as_ref().unwrap();
    assert_eq!((w.topic.as_str(), w.qos, w.retain), ("dev/status", QoS::AtLeastOnce, true));
    assert_eq!(w.properties.will_delay_interval, Some(30));
}

#[test]
fn publish_refuses_wildcards_and_the_queue_bound() {
    let mut cfg = config(false);
    cfg.max_queued = 16;
    let mut h = Harness::new(cfg);
    assert!(matches!(h.client.publish(h.now, qos1("a/+", b""), None), Err(ApiError::Invalid(_))));
    for _ in 0..16 {
        h.client.publish(h.now, qos1("a", b""), None).unwrap();
    }
    assert_eq!(h.client.publish(h.now, qos1("a", b""), None), Err(ApiError::QueueFull));
}

#[test]
fn v5_puback_with_error_reason_fails_the_token() {
    let mut h = Harness::up(config(true));
    let t = h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    let id = Harness::publishes(&h.take_sent())[0].packet_id.unwrap();
    h.broker_sends(Packet::PubAck(PubResponse { packet_id: id, reason: 0x87, properties: Properties::default() }));
    assert_eq!(h.take_events(), vec![Event::PublishFailed { token: t, reason: 0x87 }]);
}

#[test]
fn packet_before_connack_is_a_protocol_error() {
    let mut h = Harness::new(config(false));
    h.client.connect(h.now).unwrap();
    h.pump();
    h.broker_sends(Packet::PingResp);
    assert!(matches!(&h.take_events()[..], [Event::ConnectFailed(why)] if why.contains("before CONNACK")));
}

// ---------------------------------------------------------------------------------------
// MQTT 5 SUBSCRIBE properties

fn with_id(id: u32) -> SubscribeProperties {
    SubscribeProperties { subscription_id: Some(id), user_properties: vec![("k".into(), "v".into())] }
}

#[test]
fn v5_subscription_identifier_and_user_properties_are_sent_and_renewed_with_the_filters() {
    let mut h = Harness::up(config(true));
    h.client.subscribe(h.now, vec![sub("a/#"), sub("b")], with_id(7)).unwrap();
    h.client.subscribe(h.now, vec![sub("c")], SubscribeProperties::default()).unwrap();
    h.pump();
    let sent = h.take_sent();
    let [Packet::Subscribe(s1), Packet::Subscribe(s2)] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!(s1.properties.subscription_identifiers, vec![7]);
    assert_eq!(s1.properties.user_properties, vec![("k".to_string(), "v".to_string())]);
    assert!(s2.properties.subscription_identifiers.is_empty());
    let (id1, id2) = (s1.packet_id, s2.packet_id);
    h.suback(id1, vec![1, 1]);
    h.suback(id2, vec![1]);
    h.link(LinkState::Down);
    h.link(LinkState::Up);
    h.take_sent();
    h.connack(false);
    let sent = h.take_sent();
    let renewed: Vec<(Vec<&str>, Vec<u32>)> = sent
        .iter()
        .filter_map(|p| match p {
            Packet::Subscribe(s) => Some((s.filters.iter().map(|f| f.filter.as_str()).collect(), s.properties.subscription_identifiers.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(renewed, vec![(vec!["a/#", "b"], vec![7]), (vec!["c"], vec![])], "one SUBSCRIBE per original request, ids kept");
}

#[test]
fn subscription_identifier_fails_with_0xa1_when_the_broker_has_none() {
    let mut h = Harness::new(config(true));
    h.client.connect(h.now).unwrap();
    h.pump();
    h.connack_with(false, 0, PropertyValues { subscription_identifier_available: Some(0), ..Default::default() }.into());
    h.take_sent();
    h.take_events();
    let t = h.client.subscribe(h.now, vec![sub("a"), sub("b")], with_id(3)).unwrap();
    h.pump();
    assert!(h.take_sent().is_empty(), "nothing sent the broker would have to refuse");
    assert_eq!(h.take_events(), vec![Event::Subscribed { token: t, codes: vec![0xA1, 0xA1] }]);
    // Without an identifier it goes out as usual.
    h.client.subscribe(h.now, vec![sub("a")], SubscribeProperties::default()).unwrap();
    h.pump();
    assert!(matches!(h.take_sent()[..], [Packet::Subscribe(_)]));
}

#[test]
fn subscription_identifier_out_of_range_is_refused_at_once() {
    let mut h = Harness::up(config(true));
    for id in [0, 268_435_456] {
        let e = h.client.subscribe(h.now, vec![sub("a")], with_id(id)).unwrap_err();
        assert!(matches!(&e, ApiError::Invalid(why) if why.contains("subscription_id")), "{e:?}");
    }
}

#[test]
fn incoming_message_reports_its_subscription_identifiers() {
    let mut h = Harness::up(config(true));
    let props = PropertyValues { subscription_identifiers: vec![7, 9], ..Default::default() }.into();
    let p = Publish { dup: false, qos: QoS::AtMostOnce, retain: false, topic: "a/x".into(), packet_id: None, payload: b"m".to_vec(), properties: props };
    h.broker_sends(Packet::Publish(p));
    let events = h.take_events();
    let [Event::Message(m)] = &events[..] else { panic!("{events:?}") };
    assert_eq!(m.properties.as_ref().unwrap().subscription_identifiers, vec![7, 9]);
}

// ---------------------------------------------------------------------------------------
// MQTT 5 enhanced authentication (spec 4.12)

fn auth_config() -> mqtt_protocol::Config {
    let mut cfg = config(true);
    cfg.auth_method = Some("SCRAM-SHA-1".into());
    cfg.auth_data = Some(b"client-first".to_vec());
    cfg
}

fn auth(reason: u8, method: &str, data: &[u8]) -> Packet {
    let properties = PropertyValues { authentication_method: Some(method.into()), authentication_data: Some(data.to_vec()), ..Default::default() }.into();
    Packet::Auth(Disconnect { reason, properties })
}

#[test]
fn enhanced_auth_sends_method_and_data_in_connect_and_answers_challenges() {
    let mut h = Harness::new(auth_config());
    h.client.connect(h.now).unwrap();
    h.pump();
    let Packet::Connect(c) = &h.take_sent()[0] else { panic!() };
    assert_eq!(c.properties.authentication_method.as_deref(), Some("SCRAM-SHA-1"));
    assert_eq!(c.properties.authentication_data.as_deref(), Some(&b"client-first"[..]));
    h.broker_sends(auth(0x18, "SCRAM-SHA-1", b"server-first"));
    assert_eq!(h.take_events(), vec![Event::Auth { reason: 0x18, data: b"server-first".to_vec() }]);
    h.client.authenticate(h.now, b"client-final".to_vec()).unwrap();
    h.pump();
    assert_eq!(h.take_sent(), vec![auth(0x18, "SCRAM-SHA-1", b"client-final")]);
    let fin =
        PropertyValues { authentication_method: Some("SCRAM-SHA-1".into()), authentication_data: Some(b"server-final".to_vec()), ..Default::default() }.into();
    h.connack_with(false, 0, fin);
    assert_eq!(h.take_events(), vec![Event::Auth { reason: 0, data: b"server-final".to_vec() }, Event::Up { session_present: false }]);
}

#[test]
fn unanswered_auth_challenge_times_out_the_connection_attempt() {
    let mut h = Harness::new(auth_config());
    h.client.connect(h.now).unwrap();
    h.pump();
    h.advance(1_500);
    h.broker_sends(auth(0x18, "SCRAM-SHA-1", b"server-first"));
    h.take_events();
    // The application gets a response time, the broker one more: 4 s from the challenge.
    h.advance(3_999);
    assert!(h.take_events().is_empty());
    h.advance(1);
    assert!(matches!(&h.take_events()[..], [Event::ConnectFailed(_)]));
}

#[test]
fn auth_naming_another_method_or_unasked_for_is_a_protocol_error() {
    let mut h = Harness::new(auth_config());
    h.client.connect(h.now).unwrap();
    h.pump();
    h.take_sent();
    h.broker_sends(auth(0x18, "PLAIN", b""));
    assert!(matches!(&h.take_sent()[..], [Packet::Disconnect(Disconnect { reason: 0x82, .. })]));
    assert!(matches!(&h.take_events()[..], [Event::ConnectFailed(why)] if why.contains("authentication method")));

    let mut h = Harness::up(config(true));
    h.broker_sends(auth(0x18, "SCRAM-SHA-1", b""));
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::Down(DownReason::ProtocolError(why)) if why.contains("no authentication method"))), "{events:?}");
}

#[test]
fn reauthentication_sends_auth_0x19_and_reports_the_brokers_answers() {
    let mut h = Harness::new(auth_config());
    h.client.connect(h.now).unwrap();
    h.pump();
    h.connack(false);
    h.take_sent();
    h.take_events();
    h.client.authenticate(h.now, b"again".to_vec()).unwrap();
    h.pump();
    assert_eq!(h.take_sent(), vec![auth(0x19, "SCRAM-SHA-1", b"again")]);
    h.broker_sends(auth(0x18, "SCRAM-SHA-1", b"challenge"));
    h.client.authenticate(h.now, b"answer".to_vec()).unwrap();
    h.pump();
    assert_eq!(h.take_sent(), vec![auth(0x18, "SCRAM-SHA-1", b"answer")]);
    h.broker_sends(auth(0x00, "SCRAM-SHA-1", b"ok"));
    assert_eq!(h.take_events(), vec![Event::Auth { reason: 0x18, data: b"challenge".to_vec() }, Event::Auth { reason: 0, data: b"ok".to_vec() }]);
    assert!(h.client.is_connected());
}

#[test]
fn authenticate_is_refused_without_a_method_or_an_exchange() {
    let mut h = Harness::up(config(true));
    assert!(matches!(h.client.authenticate(h.now, vec![]), Err(ApiError::Invalid(why)) if why.contains("auth_method")));
    let mut h = Harness::new(auth_config());
    assert!(matches!(h.client.authenticate(h.now, vec![]), Err(ApiError::Invalid(_))), "not connecting");
    let mut cfg = auth_config();
    cfg.mqttv5 = false;
    assert_eq!(mqtt_protocol::Client::new(cfg).err().map(|e| e.key), Some("auth_method"));
}

// ---------------------------------------------------------------------------------------
// Backpressure instead of discard-oldest

fn backpressure_config(v5: bool) -> mqtt_protocol::Config {
    let mut cfg = config(v5);
    cfg.queue_len = 2;
    cfg.backpressure = true;
    cfg
}

/// An incoming QoS 0 message with payload `[i]` on topic `in`, encoded for `version`.
fn qos0_in(i: u8, version: mqtt_protocol::ProtocolVersion) -> Vec<u8> {
    let p =
        Publish { dup: false, qos: QoS::AtMostOnce, retain: false, topic: "in".into(), packet_id: None, payload: vec![i], properties: Properties::default() };
    Packet::Publish(p).encode(version)
}

fn qos1_in(i: u8) -> Vec<u8> {
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "in".into(),
        packet_id: Some(pid(100 + u16::from(i))),
        payload: vec![i],
        properties: Properties::default(),
    };
    Packet::Publish(p).encode(mqtt_protocol::ProtocolVersion::V311)
}

#[test]
fn backpressure_holds_input_back_instead_of_discarding_and_acks_only_what_the_application_took() {
    let mut h = Harness::up(backpressure_config(false));
    let burst: Vec<u8> = (0..5).flat_map(qos1_in).collect();
    h.client.handle_input(h.now, &burst);
    assert!(!h.client.wants_input(), "queue full: the host should stop reading");
    let acks = |h: &mut Harness| {
        let mut n = 0;
        while let Some(b) = h.client.poll_transmit() {
            n += b.len() / 4; // PUBACK is 4 bytes
        }
        n
    };
    assert_eq!(acks(&mut h), 0, "nothing is acknowledged before the application takes it");
    let mut got = Vec::new();
    for _ in 0..10 {
        while let Some(e) = h.client.poll_event() {
            if let Event::Message(m) = e {
                got.push(m.payload[0]);
            }
        }
        assert!(h.client.wants_input());
        let Some(t) = h.client.poll_timeout() else { break };
        if t > h.now {
            break;
        }
        h.client.handle_timeout(h.now);
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4], "everything, in order");
    assert_eq!(acks(&mut h), 5);
    assert_eq!(h.client.stats().discards, 0);
}

// ---------------------------------------------------------------------------------------
// Acknowledged when the application takes a message, not when it arrives: until then it
// lives only in this instance, and the broker must still hold it for the session.

/// What the client sent since the last look, decoded, without the harness's pump (which
/// would take the events: these tests are the application that has not).
fn sent_now(h: &mut Harness) -> Vec<Packet> {
    let mut d = mqtt_protocol::codec::Decoder::new(h.version, u32::MAX);
    while let Some(bytes) = h.client.poll_transmit() {
        d.feed(&bytes);
    }
    std::iter::from_fn(|| d.next_packet().unwrap()).collect()
}

fn qos2_in(id: u16, dup: bool) -> Vec<u8> {
    let p = Publish {
        dup,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "in".into(),
        packet_id: Some(pid(id)),
        payload: b"m".to_vec(),
        properties: Properties::default(),
    };
    Packet::Publish(p).encode(mqtt_protocol::ProtocolVersion::V311)
}

fn response(id: u16) -> PubResponse {
    PubResponse { packet_id: pid(id), reason: 0, properties: Properties::default() }
}

#[test]
fn an_incoming_qos1_message_is_acknowledged_when_the_application_takes_it() {
    let mut h = Harness::up(config(false));
    h.client.handle_input(h.now, &[qos1_in(0), qos1_in(1)].concat());
    assert_eq!(sent_now(&mut h), vec![], "not acknowledged while only the client holds it");
    assert!(matches!(h.client.poll_event(), Some(Event::Message(m)) if m.payload == [0]));
    assert_eq!(sent_now(&mut h), vec![Packet::PubAck(response(100))]);
    // A host that hands over events in batches: only the messages it took are acknowledged.
    let mut out = Vec::new();
    assert_eq!(h.client.poll_events(0, |e| out.push(e)), 0);
    assert_eq!(sent_now(&mut h), vec![]);
    assert_eq!(h.client.poll_events(5, |e| out.push(e)), 1);
    assert_eq!(sent_now(&mut h), vec![Packet::PubAck(response(101))]);
}

#[test]
fn an_incoming_qos2_message_is_answered_when_taken_and_its_resend_meanwhile_is_not_queued_again() {
    let mut h = Harness::up(config(false));
    h.client.handle_input(h.now, &qos2_in(9, false));
    h.client.handle_input(h.now, &qos2_in(9, true));
    assert_eq!(sent_now(&mut h), vec![], "neither copy answered while the message waits");
    assert!(matches!(h.client.poll_event(), Some(Event::Message(_))));
    assert_eq!(h.client.poll_event(), None, "the resend is the same message");
    assert_eq!(sent_now(&mut h), vec![Packet::PubRec(response(9))]);
    // A resend of a message the application has is answered at once, and not delivered.
    h.client.handle_input(h.now, &qos2_in(9, true));
    assert_eq!(sent_now(&mut h), vec![Packet::PubRec(response(9))]);
    assert_eq!(h.client.poll_event(), None);
}

#[test]
fn a_message_discarded_by_the_full_queue_is_acknowledged_as_the_application_chose() {
    let mut h = Harness::up(discard_oldest_config());
    h.client.handle_input(h.now, &[qos1_in(0), qos1_in(1), qos1_in(2)].concat());
    assert_eq!(sent_now(&mut h), vec![Packet::PubAck(response(100))], "the oldest, dropped");
    let mut out = Vec::new();
    assert_eq!(h.client.poll_events(10, |e| out.push(e)), 2);
    assert_eq!(sent_now(&mut h), vec![Packet::PubAck(response(101)), Packet::PubAck(response(102))], "in the order they arrived");
}

/// Up again after the connection failed with `qos1_in(0)` and `qos2_in(9)` queued and not
/// taken, the broker answering with `session_present`; the harness's pump never runs, so the
/// messages stay queued.
fn reconnected_with_messages_queued(session_present: bool) -> Harness {
    let mut cfg = config(false);
    (cfg.clean_init, cfg.clean) = (false, false);
    let mut h = Harness::up(cfg);
    h.client.handle_input(h.now, &[qos1_in(0), qos2_in(9, false)].concat());
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Reset);
    let mut opened = false;
    for _ in 0..100 {
        while let Some(a) = h.client.poll_action() {
            opened |= matches!(a, Action::OpenSocket { .. });
        }
        if opened {
            break;
        }
        h.now = h.client.poll_timeout().expect("a reconnect is due");
        h.client.handle_timeout(h.now);
    }
    assert!(opened);
    h.client.handle_socket_open(h.now);
    assert!(matches!(sent_now(&mut h)[..], [Packet::Connect(_)]));
    let connack = mqtt_protocol::codec::ConnAck { session_present, code: 0, properties: Properties::default() };
    h.client.handle_input(h.now, &Packet::ConnAck(connack).encode(h.version));
    h
}

#[test]
fn a_queued_message_is_acknowledged_only_on_the_connection_or_session_it_came_with() {
    // The session resumed: the broker resends the QoS 1 message (a PUBACK for its id now
    // could acknowledge a later one), and the QoS 2 exchange goes on.
    let mut h = reconnected_with_messages_queued(true);
    let mut out = Vec::new();
    assert_eq!(h.client.poll_events(10, |e| out.push(e)), 2);
    assert_eq!(sent_now(&mut h), vec![Packet::PubRec(response(9))]);
    // A new session: neither id means anything to the broker any more.
    let mut h = reconnected_with_messages_queued(false);
    assert_eq!(h.client.poll_events(10, |e| out.push(e)), 2);
    assert_eq!(sent_now(&mut h), vec![]);
    assert_eq!(out.iter().filter(|e| matches!(e, Event::Message(_))).count(), 4, "the application has them all the same");
}

#[test]
fn backpressure_suspends_response_deadlines_but_keeps_pinging() {
    let mut h = Harness::up(backpressure_config(true));
    h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    h.take_sent();
    let burst: Vec<u8> = (0..3).flat_map(|i| qos0_in(i, mqtt_protocol::ProtocolVersion::V5)).collect();
    h.client.handle_input(h.now, &burst);
    // The application does not take its messages for 100 s: the PUBACK and PINGRESPs may be
    // sitting unread, so nothing times out, but the broker keeps hearing our pings.
    let mut pings = 0;
    for _ in 0..100 {
        h.now = h.now + 1_000;
        h.client.handle_timeout(h.now);
        while let Some(b) = h.client.poll_transmit() {
            pings += usize::from(b == [0xC0, 0x00]);
        }
        assert!(h.client.is_connected());
    }
    assert!(pings >= 6, "a ping every 15 s of our silence: {pings}");
    // Room again: the held message is decoded, and deadlines count from the resumption.
    while h.client.poll_event().is_some() {}
    h.client.handle_timeout(h.now);
    while h.client.poll_event().is_some() {}
    h.now = h.now + 1_999;
    h.client.handle_timeout(h.now);
    assert!(h.client.is_connected(), "a response time from the resumption, not from the ping");
    h.now = h.now + 1;
    h.client.handle_timeout(h.now);
    assert!(!h.client.is_connected(), "then a broker that stays silent is dead");
}

#[test]
fn events_other_than_messages_can_be_taken_while_messages_stay_queued() {
    let mut h = Harness::up(backpressure_config(false));
    let t = h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    let mut d = mqtt_protocol::codec::Decoder::new(mqtt_protocol::ProtocolVersion::V311, u32::MAX);
    d.feed(&h.client.poll_transmit().unwrap());
    let Some(Packet::Publish(p)) = d.next_packet().unwrap() else { panic!() };
    let puback = Packet::PubAck(PubResponse { packet_id: p.packet_id.unwrap(), reason: 0, properties: Properties::default() });
    // A message, the acknowledgement, another message: the queue (2) is then full.
    h.client.handle_input(h.now, &[qos1_in(0), puback.encode(h.version), qos1_in(1)].concat());
    assert_eq!(h.client.poll_event_except_messages(), Some(Event::Published(t)));
    assert_eq!(h.client.poll_event_except_messages(), None, "only messages left");
    assert!(!h.client.wants_input(), "both messages still held: the queue is full");
    let payloads: Vec<u8> =
        std::iter::from_fn(|| h.client.poll_event()).filter_map(|e| if let Event::Message(m) = e { Some(m.payload[0]) } else { None }).collect();
    assert_eq!(payloads, vec![0, 1]);
}

fn opened(h: &Harness) -> Vec<(String, u16)> {
    h.actions.iter().filter_map(|a| if let Action::OpenSocket { host, port, .. } = a { Some((host.clone(), *port)) } else { None }).collect()
}

fn failover_config() -> mqtt_protocol::Config {
    let mut cfg = config(false);
    cfg.servers = vec!["backup:1884".into()];
    cfg
}

#[test]
fn first_connect_fails_over_to_the_next_broker_before_reporting() {
    let mut h = Harness::new(failover_config());
    h.client.connect(h.now).unwrap();
    h.pump();
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Refused);
    h.pump();
    assert_eq!(opened(&h), [("broker".to_string(), 1883), ("backup".to_string(), 1884)]);
    assert!(!h.take_events().iter().any(|e| matches!(e, Event::ConnectFailed(_))), "a broker was left to try");
    h.take_sent();
    h.connack(false);
    assert_eq!(h.take_events(), vec![Event::Up { session_present: false }]);
    assert_eq!(h.client.stats().broker, 1);
}

#[test]
fn first_connect_reports_failure_once_every_broker_refused() {
    let mut h = Harness::new(failover_config());
    h.client.connect(h.now).unwrap();
    h.pump();
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Refused);
    h.pump();
    h.take_sent();
    h.connack_with(false, 3, Properties::default());
    let failed: Vec<_> = h.take_events().into_iter().filter(|e| matches!(e, Event::ConnectFailed(_))).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(opened(&h).len(), 2);
}

#[test]
fn a_lost_connection_retries_its_broker_then_fails_over_with_a_clean_start_and_resends_as_new() {
    let mut cfg = failover_config();
    cfg.clean_init = false;
    cfg.clean = false;
    let mut h = Harness::up(cfg);
    h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
    h.pump();
    assert_eq!(Harness::publishes(&h.take_sent()).len(), 1);
    h.actions.clear();
    // The broker goes away: the first retry is to the same broker, which refuses.
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Reset);
    h.pump();
    h.advance(1_000);
    assert_eq!(opened(&h), [("broker".to_string(), 1883)]);
    let sent = h.take_sent();
    assert!(matches!(&sent[..], [Packet::Connect(c)] if !c.clean_start), "the same broker resumes the session: {sent:?}");
    h.client.handle_socket_error(h.now, mqtt_protocol::SocketError::Refused);
    h.pump();
    h.advance(2_000);
    assert_eq!(opened(&h)[1], ("backup".to_string(), 1884));
    let sent = h.take_sent();
    assert!(matches!(&sent[..], [Packet::Connect(c)] if c.clean_start), "a new broker gets a clean start: {sent:?}");
    h.connack(false);
    let again = h.take_sent();
    let p = Harness::publishes(&again);
    assert_eq!(p.len(), 1, "the unacknowledged publish goes to the new broker");
    assert!(!p[0].dup, "as a new message");
    assert_eq!(h.client.stats().broker, 1);
}

/// A socket that takes nothing must not make the client buffer QoS 0 without bound: past
/// `MAX_UNSENT` bytes waiting, QoS 0 publishes wait in the queue (whose bound the
/// application hears as `QueueFull`), and they go out, in order, once the socket takes
/// what waited.
/// QoS 0 completes as it is sent, so its answers pile up in a client whose host publishes
/// and never polls: they count against `max_queued`, and the host is told `QueueFull`
/// instead of the client's memory growing until the instance dies.
#[test]
fn answers_not_taken_count_against_max_queued() {
    let mut cfg = config(false);
    cfg.max_queued = 50;
    let mut h = Harness::up(cfg);
    let qos0 = mqtt_protocol::OutgoingPublish { qos: QoS::AtMostOnce, ..qos1("t", &b"x"[..]) };
    let mut out = Vec::new();
    for _ in 0..50 {
        h.client.publish(h.now, qos0.clone(), None).unwrap();
        h.client.transmit_into(&mut out);
        out.clear();
    }
    assert_eq!(h.client.publish(h.now, qos0.clone(), None), Err(ApiError::QueueFull));
    // Taking one answer makes room for one publish.
    assert!(matches!(h.client.poll_event(), Some(Event::Published(_))));
    assert!(h.client.publish(h.now, qos0.clone(), None).is_ok());
    assert_eq!(h.client.publish(h.now, qos0, None), Err(ApiError::QueueFull));
}

/// Status events that no poll has handed over yet (the link, up) take no place in the
/// queue: an application that publishes straight after connecting, before its first poll,
/// has all of `max_queued`. Before, the link and up events took two of its three places.
#[test]
fn status_events_not_taken_leave_max_queued_whole() {
    let mut cfg = config(false);
    cfg.max_inflight = 2;
    cfg.max_queued = 3;
    let mut client = mqtt_protocol::Client::new(cfg).unwrap();
    let now = mqtt_protocol::Instant::from_millis(1_000);
    client.handle_link(now, LinkState::Up);
    client.connect(now).unwrap();
    assert!(matches!(client.poll_action(), Some(Action::OpenSocket { .. })));
    client.handle_socket_open(now);
    client.transmit_into(&mut Vec::new());
    let connack = Packet::ConnAck(mqtt_protocol::codec::ConnAck { session_present: false, code: 0, properties: Properties::default() });
    client.handle_input(now, &connack.encode(mqtt_protocol::ProtocolVersion::V311));
    assert!(client.is_connected());
    for i in 0..3u8 {
        client.publish(now, qos1("t", &[i]), None).unwrap();
    }
    assert_eq!(client.publish(now, qos1("t", b"x"), None), Err(ApiError::QueueFull));
    let mut events = Vec::new();
    client.poll_events(u32::MAX, |e| events.push(e));
    assert!(matches!(events[..], [Event::Link(LinkState::Up), Event::Up { .. }]), "{events:?}");
}

#[test]
fn qos0_waits_in_the_queue_while_the_socket_is_behind() {
    let mut cfg = config(false);
    cfg.max_queued = 50;
    let mut h = Harness::up(cfg);
    let qos0 = |i: u32| mqtt_protocol::OutgoingPublish { qos: QoS::AtMostOnce, ..qos1("t", &[i as u8; 1000][..]) };
    let published = |h: &mut Harness| std::iter::from_fn(|| h.client.poll_event()).filter(|e| matches!(e, Event::Published(_))).count();
    // The driver took the bytes but its socket had no room: it still holds them all.
    let mut held = Vec::new();
    let mut accepted = 0u32;
    let mut out_first = 0;
    let mut refused = None;
    while refused.is_none() && accepted < 1_000 {
        match h.client.publish(h.now, qos0(accepted), None) {
            Ok(_) => accepted += 1,
            Err(e) => refused = Some(e),
        }
        h.client.transmit_into(&mut held);
        h.client.handle_unsent(h.now, held.len());
        // The host polls, taking the answers.
        out_first += published(&mut h);
    }
    assert_eq!(refused, Some(ApiError::QueueFull), "{accepted} accepted, {} bytes held", held.len());
    assert!(held.len() <= mqtt_protocol::MAX_UNSENT + 1100, "{} bytes held", held.len());
    assert_eq!(out_first + 50, accepted as usize, "the rest wait in the queue");

    // The socket takes everything: the queue drains, in order.
    let mut d = mqtt_protocol::codec::Decoder::new(mqtt_protocol::ProtocolVersion::V311, u32::MAX);
    let mut order = Vec::new();
    loop {
        d.feed(&held);
        held.clear();
        while let Some(p) = d.next_packet().unwrap() {
            if let Packet::Publish(p) = p {
                order.push(p.payload[0]);
            }
        }
        if !h.client.handle_unsent(h.now, 0) {
            break;
        }
        h.client.transmit_into(&mut held);
    }
    assert_eq!(order, (0..accepted).map(|i| i as u8).collect::<Vec<_>>());
    assert_eq!(published(&mut h), 50);
}

/// The QoS 0 bound holds back QoS 0 publishes only: a subscribe made while the socket is
/// behind goes out at once, not after the socket catches up (nor never, when no QoS 0
/// publish waits to make the client look again).
#[test]
fn a_socket_behind_holds_back_qos0_but_not_a_subscribe() {
    let mut h = Harness::up(config(false));
    let mut held = Vec::new();
    let mut i = 0u8;
    while held.len() < mqtt_protocol::MAX_UNSENT {
        let p = mqtt_protocol::OutgoingPublish { qos: QoS::AtMostOnce, ..qos1("t", &[i; 1000][..]) };
        h.client.publish(h.now, p, None).unwrap();
        h.client.transmit_into(&mut held);
        h.client.handle_unsent(h.now, held.len());
        i = i.wrapping_add(1);
    }
    assert_eq!(h.client.stats().queued, 0, "every QoS 0 publish went to the driver");
    let before = held.len();
    h.client.subscribe(h.now, vec![sub("s")], SubscribeProperties::default()).unwrap();
    h.client.transmit_into(&mut held);
    let mut d = mqtt_protocol::codec::Decoder::new(mqtt_protocol::ProtocolVersion::V311, u32::MAX);
    d.feed(&held[before..]);
    assert!(matches!(d.next_packet().unwrap(), Some(Packet::Subscribe(_))), "the SUBSCRIBE went out");
}

/// Packet ids go round 1..=65535 and skip those still in flight, also after the first lap
/// (`alloc_pid` walks the window once per lap, not once per publish).
#[test]
fn packet_ids_go_round_and_skip_the_ones_still_in_flight() {
    let mut h = Harness::up(config(false));
    for i in 0..3u8 {
        h.client.publish(h.now, qos1("t", &[i]), None).unwrap();
    }
    h.pump();
    let first: Vec<u16> = Harness::publishes(&h.take_sent()).iter().map(|p| p.packet_id.unwrap().get()).collect();
    assert_eq!(first, [1, 2, 3]);
    h.puback(pid(2));
    let mut seen = Vec::new();
    for _ in 0..70_000u32 {
        h.client.publish(h.now, qos1("t", b"x"), None).unwrap();
        h.pump();
        let id = Harness::publishes(&h.take_sent())[0].packet_id.unwrap();
        h.puback(id);
        h.take_events();
        seen.push(id.get());
    }
    assert!(!seen.contains(&1) && !seen.contains(&3), "an id in flight was given again");
    // The first lap from 4 to 65535, then 2 (acknowledged), then round again from 4.
    let second_lap = 70_000 - (65_535 - 3) - 1;
    let lap: Vec<u16> = (4..=65535).chain([2]).chain((4..).take(second_lap)).collect();
    assert_eq!(seen, lap);
    assert_eq!(h.client.stats().inflight, 2);
}
