//! The real component, driven through the host with the in-memory platform.

use mqtt_host::loopback::Loopback;
use mqtt_host::{default_config, ClientError, ComponentFile, Device, DeviceError, DownReason, Event, Publish, Qos, SocketError, Subscription};

fn device(lo: &Loopback) -> Device {
    let component = ComponentFile::embedded().expect("embedded component loads");
    Device::new(&component, Box::new(lo.clone()), default_config("broker", "dev-1"), "dev-1").expect("device")
}

fn qos1(payload: &[u8]) -> Publish {
    Publish { topic: "t".into(), payload: payload.into(), qos: Qos::AtLeastOnce, retain: false, properties: None, deadline_ms: None }
}

fn poll_until(d: &mut Device, lo: &Loopback, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut all = Vec::new();
    for _ in 0..200 {
        let events = d.poll().expect("poll");
        let hit = events.iter().any(&mut done);
        all.extend(events);
        if hit {
            return all;
        }
        lo.advance(100);
    }
    panic!("condition not reached; events: {all:?}");
}

#[test]
fn component_connects_and_completes_a_qos1_publish_on_puback() {
    let lo = Loopback::new();
    let mut d = device(&lo);
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(false)));
    let t = d.publish(qos1(b"hello")).unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Published(x) if *x == t));
    assert_eq!(lo.with(|s| s.received.clone()), vec![("t".to_string(), b"hello".to_vec(), false)]);
    assert_eq!(d.unacked(), 0);
    let stats = d.stats().unwrap().unwrap();
    assert_eq!(stats.connects, 1);
    assert!(stats.bytes_out > 0 && stats.bytes_in > 0);
}

#[test]
fn component_republishes_with_dup_when_the_puback_is_lost() {
    let lo = Loopback::new();
    let mut d = device(&lo);
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    lo.drop_acks(1);
    let t = d.publish(qos1(b"x")).unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Published(x) if *x == t));
    let received = lo.with(|s| s.received.clone());
    assert_eq!(received.len(), 2);
    assert!(!received[0].2 && received[1].2, "second copy has DUP set: {received:?}");
    assert_eq!(lo.with(|s| s.violations.clone()), Vec::<String>::new(), "the broker model found no breach of the spec");
}

#[test]
fn exhausted_fuel_restarts_the_instance_and_replays_what_was_accepted() {
    let lo = Loopback::new();
    let mut d = device(&lo);
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    lo.drop_acks(1);
    let t = d.publish(qos1(b"precious")).unwrap();
    d.poll().unwrap();
    assert_eq!(d.unacked(), 1);
    d.starve_next_call(1_000);
    let events = d.poll().expect("the watchdog recovers instead of failing");
    assert_eq!(d.restarts(), 1);
    assert!(events.iter().any(|e| matches!(e, Event::Error(m) if m.contains("restarted"))), "{events:?}");
    // The connection the application was told of went with the old instance: it hears so
    // before the fresh instance's `Up` (which this poll may already bring).
    let down = events.iter().position(|e| matches!(e, Event::Down(DownReason::Socket(SocketError::Closed))));
    let up = events.iter().position(|e| matches!(e, Event::Up(_)));
    assert!(down.is_some_and(|d| up.is_none_or(|u| d < u)), "a Down, before any Up: {events:?}");
    // The recovering poll polls the fresh instance too, which may complete it at once.
    if !events.iter().any(|e| matches!(e, Event::Published(x) if *x == t)) {
        poll_until(&mut d, &lo, |e| matches!(e, Event::Published(x) if *x == t));
    }
    assert_eq!(lo.with(|s| s.connects), 2, "the fresh instance connected again");
    let copies = lo.with(|s| s.received.iter().filter(|r| r.1 == b"precious").count());
    assert!(copies >= 2, "the accepted publish was handed to the fresh instance");
    assert_eq!(lo.with(|s| s.violations.clone()), Vec::<String>::new(), "the broker model found no breach of the spec");
}

/// `Up` and `Down` alternate across restarts: an instance that never reported a connection
/// is replaced without a `Down`, one that did says `Down` once, and the fresh one's `Up`
/// follows.
#[test]
fn a_restart_says_down_only_for_a_connection_the_application_was_told_of() {
    let lo = Loopback::new();
    let mut d = device(&lo);
    d.connect().unwrap();
    let mut events = Vec::new();
    for _ in 0..2 {
        // The first time before the CONNACK, with nothing reported up.
        d.starve_next_call(1_000);
        let recovering = d.poll().expect("the watchdog recovers");
        let up_already = recovering.iter().any(|e| matches!(e, Event::Up(_)));
        events.extend(recovering);
        if !up_already {
            events.extend(poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_))));
        }
    }
    assert_eq!(d.restarts(), 2);
    let changes: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Up(_) => Some("up"),
            Event::Down(DownReason::Socket(SocketError::Closed)) => Some("down"),
            Event::Down(other) => panic!("unexpected down reason {other:?}"),
            _ => None,
        })
        .collect();
    assert_eq!(changes, ["up", "down", "up"], "{events:?}");
}

/// The room a restart gives the fresh instance for the subscriptions it makes again is not
/// the application's to fill: once they are answered the application still gets
/// `max_queued` places, no more, so a second restart can hand everything back again. Before,
/// the application could fill the extra place, and the second restart refused a publish.
#[test]
fn a_second_restart_with_a_full_queue_hands_everything_back_too() {
    let (lo, mut d) = connected_with_a_small_queue();
    let s = d.subscribe(vec![sub("a")]).unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Subscribed((x, _)) if *x == s));
    d.starve_next_call(1_000);
    if !d.poll().expect("the watchdog recovers").iter().any(|e| matches!(e, Event::Up(_))) {
        poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    }
    // The subscription made again is answered (the application hears nothing of it).
    for _ in 0..3 {
        d.poll().unwrap();
    }
    fill_the_queue_trap_and_complete(&lo, &mut d, |d| {
        assert!(matches!(d.subscribe(vec![sub("b")]), Err(DeviceError::Client(ClientError::QueueFull))), "a subscription takes a place too");
    });
    assert_eq!(d.restarts(), 2);
}

/// A restart's fresh instance that cannot connect is retried by the host, which stands in
/// for the application (whose connect succeeded long before): an `Error`, not
/// `ConnectFailed`. Once the application calls `connect` itself, the attempt is its own, and
/// so is hearing that it failed (and trying again when it chooses). Before, its failure was
/// reported as the host's, and retried for it.
#[test]
fn after_a_restart_the_applications_own_connect_hears_that_it_failed() {
    let lo = Loopback::new();
    let mut d = device(&lo);
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    lo.with(|s| s.refuse = true);
    d.starve_next_call(1_000);
    d.poll().expect("the watchdog recovers");
    assert_eq!(d.restarts(), 1);
    poll_until(&mut d, &lo, |e| matches!(e, Event::Error(m) if m.contains("reconnect after restart failed")));
    // Before the host's retry: the application tries itself, as a first connect's would.
    d.connect().unwrap();
    let events = poll_until(&mut d, &lo, |e| matches!(e, Event::ConnectFailed(_) | Event::Error(_)));
    assert!(events.iter().any(|e| matches!(e, Event::ConnectFailed(_))), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Error(m) if m.contains("after restart"))), "{events:?}");
}

#[test]
fn a_restarted_instance_is_given_back_each_live_subscription_request() {
    let lo = Loopback::new();
    let mut d = device(&lo);
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    for request in [vec![sub("a"), sub("b")], vec![sub("c")], vec![sub("b")]] {
        let t = d.subscribe(request).unwrap();
        poll_until(&mut d, &lo, |e| matches!(e, Event::Subscribed((x, _)) if *x == t));
    }
    let t = d.unsubscribe(vec!["c".into()]).unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Unsubscribed((x, _)) if *x == t));
    lo.with(|s| s.subscribes.clear());
    d.starve_next_call(1_000);
    d.poll().expect("the watchdog recovers");
    assert_eq!(d.restarts(), 1);
    let again = lo.with(|s| s.subscribes.clone());
    assert_eq!(again, vec![vec!["a".to_string()], vec!["b".to_string()]], "b's newer request replaces it in the older one; c is gone");
}

/// A device connected to a loopback broker, with 2 publishes in flight and 3 queued at most.
fn connected_with_a_small_queue() -> (Loopback, Device) {
    let lo = Loopback::new();
    let component = ComponentFile::embedded().unwrap();
    let mut config = default_config("broker", "dev-1");
    config.max_inflight = 2;
    config.max_queued = 3;
    let mut d = Device::new(&component, Box::new(lo.clone()), config, "dev-1").unwrap();
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    (lo, d)
}

/// With acknowledgements held, fills the queue of a device from
/// [`connected_with_a_small_queue`] (3 publishes, the fourth refused), runs `full`, makes the
/// component trap, then lets the acknowledgements go: each publish completes once, in order,
/// and none is failed or refused on the way.
fn fill_the_queue_trap_and_complete(lo: &Loopback, d: &mut Device, full: impl FnOnce(&mut Device)) {
    lo.hold_acks(true);
    let tokens: Vec<u64> = (0..3u8).map(|i| d.publish(qos1(&[b'0' + i])).unwrap()).collect();
    assert!(matches!(d.publish(qos1(b"x")), Err(DeviceError::Client(ClientError::QueueFull))), "max_queued is 3, restarts or not");
    d.poll().unwrap();
    full(d);
    d.starve_next_call(1_000);
    let mut events = d.poll().expect("the watchdog recovers");
    lo.hold_acks(false);
    lo.release_acks();
    let mut done = Vec::new();
    for _ in 0..50 {
        done.extend(events.iter().filter_map(completes).filter(|t| tokens.contains(t)));
        assert!(!events.iter().any(|e| matches!(e, Event::PublishFailed(_)) || matches!(e, Event::Error(m) if m.contains("refused"))), "{events:?}");
        if done.len() == tokens.len() {
            break;
        }
        lo.advance(100);
        events = d.poll().unwrap();
    }
    assert_eq!(done, tokens, "each accepted publish completes once, in order");
}

/// A batch larger than the queue, after `disconnect`: every publish of it is refused as the
/// client refuses the first, `Closed`. Before, those past `max_queued` (which the host does not
/// offer) were answered `QueueFull`, though the queue was empty.
#[test]
fn a_batch_after_disconnect_is_refused_closed_every_publish_of_it() {
    let (_lo, mut d) = connected_with_a_small_queue();
    d.disconnect().unwrap();
    d.poll().unwrap();
    let results = d.try_publish_many((0..5u8).map(|i| qos1(&[i])).collect());
    assert_eq!(results.len(), 5);
    for (i, r) in results.into_iter().enumerate() {
        let e = r.expect_err("closed");
        assert!(matches!(e.0, DeviceError::Client(ClientError::Closed)), "publish {i}: {:?}", e.0);
        assert_eq!(e.1.payload, [i as u8], "the refused publish comes back whole");
    }
    assert_eq!(d.unacked(), 0);
}

/// Publishes handed over in one call are taken in order; one the client refuses takes
/// nothing and comes back whole, and once the queue is full no later one is taken.
#[test]
fn publishes_handed_over_together_are_taken_in_order_until_the_queue_is_full() {
    let (lo, mut d) = connected_with_a_small_queue();
    let mut bad = qos1(b"2");
    bad.topic = "a/+".into();
    let batch = vec![qos1(b"1"), bad, qos1(b"3"), qos1(b"4"), qos1(b"5"), qos1(b"6")];
    let results = d.try_publish_many(batch);
    assert_eq!(results.len(), 6);
    let mut taken = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match (i, r) {
            (0 | 2 | 3, Ok(t)) => taken.push(t),
            (1, Err(e)) => assert!(matches!(e.0, DeviceError::Client(ClientError::Invalid(_))) && e.1.topic == "a/+", "{i}: {:?}", e.0),
            (4 | 5, Err(e)) => {
                assert!(matches!(e.0, DeviceError::Client(ClientError::QueueFull)), "{i}: {:?}", e.0);
                assert_eq!(e.1.payload, [b'1' + i as u8], "the refused publish comes back whole");
            }
            (i, r) => panic!("publish {i}: {r:?}"),
        }
    }
    assert_eq!(d.unacked(), 3);
    let mut done = Vec::new();
    for _ in 0..50 {
        done.extend(d.poll().unwrap().iter().filter_map(completes));
        if taken.iter().all(|t| done.contains(t)) {
            break;
        }
        lo.advance(100);
    }
    assert_eq!(done, taken, "each taken publish completes once, in order");
    let payloads: Vec<Vec<u8>> = lo.with(|s| s.received.iter().map(|r| r.1.clone()).collect());
    assert_eq!(payloads, vec![b"1".to_vec(), b"3".to_vec(), b"4".to_vec()]);
}

fn sub(f: &str) -> mqtt_host::Subscription {
    mqtt_host::Subscription { filter: f.into(), qos: Qos::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 }
}

/// The token an event completes, if any.
fn completes(e: &Event) -> Option<u64> {
    match e {
        Event::Published(t) | Event::PublishFailed((t, _)) | Event::Subscribed((t, _)) | Event::Unsubscribed((t, _)) => Some(*t),
        _ => None,
    }
}

/// The watchdog's replay, whatever call the instance dies in: with a publish, a subscribe
/// and an unsubscribe in flight (answered by the broker, answers not yet read), the next
/// export call runs out of fuel and traps. Every token completes exactly once, and the
/// broker ends with the subscriptions the application asked for.
#[test]
fn a_trap_inside_any_export_call_completes_every_token_exactly_once() {
    for call in ["publish", "publish-many", "subscribe", "unsubscribe", "cancel", "authenticate", "disconnect", "poll"] {
        let lo = Loopback::new();
        let mut d = device(&lo);
        d.connect().unwrap();
        poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
        let t = d.subscribe(vec![sub("a"), sub("b")]).unwrap();
        poll_until(&mut d, &lo, |e| matches!(e, Event::Subscribed((x, _)) if *x == t));

        lo.drop_acks(1);
        let mut tokens = vec![d.publish(qos1(b"in flight")).unwrap(), d.subscribe(vec![sub("c")]).unwrap(), d.unsubscribe(vec!["a".into()]).unwrap()];
        let to_cancel = d.publish(qos1(b"cancel me")).unwrap();
        let mut want = vec!["b", "c"];
        // Too little for any of these calls (a cancel that only writes needs about 1,000).
        d.starve_next_call(100);
        let mut done: Vec<u64> = Vec::new();
        match call {
            "publish" => tokens.push(d.publish(qos1(b"during")).unwrap()),
            // Not recorded before the call (they are lent to it): handed over again after it.
            "publish-many" => {
                let many = d.try_publish_many(vec![qos1(b"during 1"), qos1(b"during 2"), qos1(b"during 3")]);
                tokens.extend(many.into_iter().map(|r| r.map_err(|e| e.0).unwrap()));
            }
            "subscribe" => {
                tokens.push(d.subscribe(vec![sub("d")]).unwrap());
                want.push("d");
            }
            "unsubscribe" => {
                tokens.push(d.unsubscribe(vec!["b".into()]).unwrap());
                want.retain(|f| *f != "b");
            }
            "cancel" => assert!(d.cancel(to_cancel).unwrap(), "{call}: cancelled"),
            // Refused under MQTT 3.1.1 by a healthy instance; here it never gets that far.
            "authenticate" => drop(d.authenticate(b"secret")),
            "disconnect" => d.disconnect().unwrap(),
            // The recovering poll also polls the fresh instance: it may complete some.
            "poll" => done.extend(d.poll().unwrap().iter().filter_map(completes)),
            _ => unreachable!(),
        }
        assert_eq!(d.restarts(), 1, "{call}: the starved call trapped and the instance was replaced");
        if call != "cancel" {
            tokens.push(to_cancel);
        }

        for _ in 0..100 {
            done.extend(d.poll().unwrap().iter().filter_map(completes));
            if tokens.iter().all(|t| done.contains(t)) {
                break;
            }
            lo.advance(100);
        }
        for _ in 0..30 {
            done.extend(d.poll().unwrap().iter().filter_map(completes));
            lo.advance(100);
        }
        for t in &tokens {
            assert_eq!(done.iter().filter(|x| *x == t).count(), 1, "{call}: token {t} completes exactly once (completed: {done:?})");
        }
        assert_eq!(done.len(), tokens.len(), "{call}: no completion for a token nobody holds: {done:?}");
        if call != "disconnect" {
            let mut now: Vec<String> = lo.with(|s| s.subscriptions());
            now.sort();
            assert_eq!(now, want, "{call}: the broker ends with what the application asked for");
        }
    }
}

/// With a store, a restart must not send what the store gives back a second time: each
/// QoS 1 and QoS 2 publish in flight at the trap keeps its packet id (the fresh instance
/// resends it with DUP into the resumed session), and no second copy goes out under a new
/// id, which at QoS 2 the broker would deliver twice. Every token completes once.
#[test]
fn a_restart_on_a_store_resends_what_it_kept_under_the_same_packet_ids_only() {
    restart_on_a_store(AcksAfterRestart::Later);
}

/// The same, with a broker that answers within the fresh instance's `connect`: on a fast
/// platform the connection comes up, the resumed session resends, and the acknowledgements
/// close the store's records, all inside that one call. What the store gave back must be
/// told apart before that (the Python host, whose loopback socket connects at once, sent
/// such publishes a second time under new packet ids when the host asked after `connect`).
#[test]
fn a_restart_on_a_store_whose_records_close_inside_connect_sends_them_once() {
    restart_on_a_store(AcksAfterRestart::Immediately);
}

#[derive(PartialEq)]
enum AcksAfterRestart {
    /// Held until the fresh instance has been polled.
    Later,
    /// Answered as soon as the fresh instance resends (inside its `connect`).
    Immediately,
}

/// Every instance's poll fails at once (as each would meet the same fault): the device
/// replaces the instance `MAX_RESTARTS_IN_A_ROW` times, then stops, closes the connection and
/// says why on every later call, rather than restart for ever as fast as the host polls (as
/// the Python and Node hosts do). A single failure between polls that go through never
/// stops it: the count starts again at each.
#[test]
fn a_component_that_fails_at_every_poll_stops_the_device_instead_of_restarting_for_ever() {
    let lo = Loopback::new();
    let mut d = device(&lo);
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    for _ in 0..10 {
        d.starve_next_call(100);
        let events = d.poll().expect("one failure at a time is restarted");
        if !events.iter().any(|e| matches!(e, Event::Up(_))) {
            poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
        }
    }
    assert_eq!(d.restarts(), 10);
    d.starve_polls(true);
    let stopped = (0..10).find_map(|_| d.poll().err()).expect("the device gives up");
    let why = stopped.to_string();
    assert!(matches!(stopped, DeviceError::GaveUp(_)), "{why}");
    assert!(why.contains("failed 4 times in a row, the last in `poll`"), "{why}");
    assert_eq!(d.restarts(), 10 + u64::from(mqtt_host::MAX_RESTARTS_IN_A_ROW));
    assert_eq!(lo.with(|s| s.open_connections()), 0, "the failed instance's connection was closed");
    d.starve_polls(false);
    assert!(matches!(d.poll(), Err(DeviceError::GaveUp(_))), "stopped for good");
    assert!(matches!(d.publish(qos1(b"late")), Err(DeviceError::GaveUp(_))));
}

/// mqtt_as's usual session, purged at power-up (`clean_init`) and kept from then on (`clean`
/// false): once the client was up, a restart resumes it rather than purging it again, which
/// dropped what the broker held for the client
/// (`scenarios/guest-trap-in-a-session-kept-after-power-up.toml` has the losses).
#[test]
fn a_restart_resumes_a_session_kept_after_power_up() {
    let lo = Loopback::new();
    let (mut d, first) = up_on_a_session(&lo, true, false);
    assert!(first.iter().any(|e| matches!(e, Event::Up(false))), "power-up: the session was purged: {first:?}");
    d.starve_next_call(100);
    let after = poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    assert_eq!(d.restarts(), 1);
    assert!(after.iter().any(|e| matches!(e, Event::Up(true))), "the fresh instance resumed the session: {after:?}");
}

/// A device on `lo` with `clean_init` and `clean` off (what a restart resumes), connected.
fn up_on_a_session_that_outlives_connections(lo: &Loopback) -> Device {
    up_on_a_session(lo, false, false).0
}

/// A device on `lo` with these session flags, connected, and the events up to its `Up`.
fn up_on_a_session(lo: &Loopback, clean_init: bool, clean: bool) -> (Device, Vec<Event>) {
    let mut cfg = default_config("broker", "dev-1");
    cfg.clean_init = clean_init;
    cfg.clean = clean;
    let component = ComponentFile::embedded().expect("embedded component loads");
    let mut d = Device::new(&component, Box::new(lo.clone()), cfg, "dev-1").expect("device");
    d.connect().unwrap();
    let events = poll_until(&mut d, lo, |e| matches!(e, Event::Up(_)));
    (d, events)
}

fn restart_on_a_store(acks: AcksAfterRestart) {
    use std::sync::{Arc, Mutex};
    let flash = Arc::new(Mutex::new(mqtt_host::MemFlash::new(mqtt_host::file_flash::DEFAULT_GEOMETRY)));
    let lo = Loopback::new().with_flash(flash);
    let mut d = up_on_a_session_that_outlives_connections(&lo);
    lo.hold_acks(true);
    let payloads: [(&[u8], Qos); 3] = [(b"one", Qos::AtLeastOnce), (b"two", Qos::ExactlyOnce), (b"three", Qos::AtLeastOnce)];
    let tokens: Vec<u64> = payloads.iter().map(|(p, qos)| d.publish(Publish { qos: *qos, ..qos1(p) }).unwrap()).collect();
    // QoS 0 is not stored, and completes when it is sent.
    let t0 = d.publish(Publish { qos: Qos::AtMostOnce, ..qos1(b"zero") }).unwrap();
    let mut done: Vec<u64> = d.poll().unwrap().iter().filter_map(completes).collect();
    assert_eq!(lo.with(|s| s.received.len()), 4, "all four went out before the trap");

    if acks == AcksAfterRestart::Immediately {
        // What the failed instance sent stays unanswered; its resends get answers at once.
        lo.hold_acks(false);
    }
    d.starve_next_call(100);
    done.extend(d.poll().expect("the watchdog recovers").iter().filter_map(completes));
    assert_eq!(d.restarts(), 1);
    lo.hold_acks(false);
    lo.release_acks();
    for _ in 0..50 {
        done.extend(d.poll().unwrap().iter().filter_map(completes));
        lo.advance(100);
    }
    for t in tokens.iter().chain([&t0]) {
        assert_eq!(done.iter().filter(|x| *x == t).count(), 1, "token {t} completes exactly once (completed: {done:?})");
    }
    let received = lo.with(|s| s.received.clone());
    for (p, _) in payloads {
        let firsts = received.iter().filter(|r| r.1 == p && !r.2).count();
        assert_eq!(firsts, 1, "{:?} went out once under a new packet id, then only as DUP resends: {received:?}", String::from_utf8_lossy(p));
    }
    assert_eq!(d.unacked(), 0);
    assert_eq!(lo.with(|s| s.violations.clone()), Vec::<String>::new(), "the broker model found no breach of the spec");
}

#[test]
fn bad_config_is_a_clear_error_not_a_trap() {
    let component = ComponentFile::embedded().unwrap();
    let cases: Vec<(mqtt_host::Config, &str)> = vec![
        (mqtt_host::Config { clean: false, ..default_config("broker", "") }, "client_id"),
        (mqtt_host::Config { port: Some(0), ..default_config("broker", "x") }, "port"),
        (mqtt_host::Config { keepalive_secs: 1, ..default_config("broker", "x") }, "keepalive_secs"),
        (mqtt_host::Config { keepalive_secs: 5, ..default_config("broker", "x") }, "out of range"),
        (mqtt_host::Config { queue_len: 0, ..default_config("broker", "x") }, "queue_len"),
        (default_config("", "x"), "server"),
    ];
    for (config, want) in cases {
        let err = Device::new(&component, Box::new(Loopback::new()), config, "bad").err().expect("refused");
        match &err {
            DeviceError::Client(ClientError::Invalid(why)) => assert!(why.contains(want), "{why:?} should name {want}"),
            other => panic!("expected a config error naming {want}, got {other}"),
        }
    }
}

#[test]
fn component_imports_only_the_platform_interfaces() {
    let component = ComponentFile::embedded().unwrap();
    let imports = component.import_names();
    assert!(!imports.is_empty());
    for name in &imports {
        assert!(name.starts_with("mqtt-as:client/"), "unexpected import {name}");
        assert!(!name.contains("wasi"), "WASI import {name}");
    }
    // socket, clock, wifi, storage, packet-ids, log.
    assert_eq!(imports.len(), 6, "{imports:?}");
}

/// The loopback clock is manual: in the async tests it follows tokio's time, 10 ms a step,
/// until the returned task is aborted.
fn follow_tokio_time(lo: &Loopback) -> tokio::task::JoinHandle<()> {
    let clock = lo.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            clock.advance(10);
        }
    })
}

/// `Client::new`'s event loop runs the client only while polled, in the polling task: it
/// may be made outside a runtime; a poll dropped while it waits (here every one that would
/// wait) loses nothing; `post` completions and messages come from `poll`; and once every
/// handle is gone, the client disconnects and `poll` says `None` for good.
#[test]
fn an_event_loop_runs_the_client_while_polled_and_ends_with_its_handles() {
    let lo = Loopback::new();
    let (client, mut event_loop) = mqtt_host::Client::new(device(&lo));
    // Paused: tokio's clock moves only when every task waits, so the virtual time the exchange
    // takes says whether the loop ever waited with events in hand.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let ticker = follow_tokio_time(&lo);
        let handle = client.clone();
        let start = tokio::time::Instant::now();
        let app = tokio::spawn(async move {
            handle.connect().await.unwrap();
            let subs = vec![mqtt_host::Subscription::new("echo/#", Qos::AtLeastOnce)];
            assert_eq!(handle.subscribe(subs).await.unwrap(), vec![1]);
            let mut tokens = Vec::new();
            for i in 0..20u8 {
                tokens.push(handle.post(Publish::new("echo/1", vec![i], Qos::AtLeastOnce)).await.unwrap());
            }
            tokens
        });
        let (mut messages, mut published, mut dropped, mut turns) = (Vec::new(), Vec::new(), 0, 0);
        while messages.len() < 20 || published.len() < 20 {
            // Every other poll is awaited (and must not wait while it holds events), the
            // rest dropped if they would wait.
            turns += 1;
            let polled = if turns % 2 == 0 { Some(event_loop.poll().await) } else { polled_once(event_loop.poll()).await };
            match polled {
                Some(Some(mqtt_host::ClientEvent::Message(m))) => messages.push(m.payload[0]),
                Some(Some(mqtt_host::ClientEvent::Published(t))) => published.push(t),
                Some(Some(_)) => {}
                Some(None) => panic!("the client stopped"),
                None => {
                    dropped += 1;
                    tokio::task::yield_now().await;
                }
            }
        }
        assert!(dropped > 0, "polls were dropped while they waited");
        assert_eq!(start.elapsed(), std::time::Duration::ZERO, "no poll waited while it held events");
        assert_eq!(messages, (0..20).collect::<Vec<u8>>(), "every message, in order");
        assert_eq!(published, app.await.unwrap(), "every post completed, in order");
        drop(client);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async { while event_loop.poll().await.is_some() {} }).await;
        assert!(ended.is_ok(), "with every handle gone the loop ends");
        assert!(event_loop.poll().await.is_none(), "and stays ended");
        assert!(!lo.with(|s| s.broker.is_connected("dev-1")), "the client left the broker");
        ticker.abort();
    });
}

/// Polls `f` once, and drops it if it would wait (`None`).
async fn polled_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// An application keeps many publishes in flight as futures (`FuturesUnordered`, `join_all`),
/// which move them when they are pushed and completed: the future must hold little more
/// than its borrowed arguments and the answer's receiver. Building the publish across an
/// await made it 504 bytes (issue 14).
#[test]
fn a_publish_future_is_small() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let client = mqtt_host::Client::spawn(device(&lo));
        let payload = [0u8; 100];
        let publish = client.publish("t", &payload, Qos::AtLeastOnce, false);
        assert!(std::mem::size_of_val(&publish) <= 96, "a publish future is {} bytes", std::mem::size_of_val(&publish));
        let enqueue = client.enqueue(qos1(&payload));
        let publish_size = std::mem::size_of::<Publish>();
        assert!(
            std::mem::size_of_val(&enqueue) <= publish_size + 96,
            "an enqueue future is {} bytes, its publish {publish_size}",
            std::mem::size_of_val(&enqueue)
        );
        let post = client.post(qos1(&payload));
        assert!(std::mem::size_of_val(&post) <= publish_size + 96, "a post future is {} bytes, its publish {publish_size}", std::mem::size_of_val(&post));
    });
}

#[test]
fn async_client_publish_returns_when_acknowledged() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = echoing_client(&lo).await;
        client.publish("echo/1", b"ping", Qos::AtLeastOnce, false).await.unwrap();
        loop {
            match client.next_event().await.unwrap() {
                mqtt_host::ClientEvent::Message(m) => {
                    assert_eq!(m.payload, b"ping");
                    break;
                }
                _ => continue,
            }
        }
        assert!(client.broker_up().await);
        client.disconnect().await;
        ticker.abort();
    });
}

/// Size is deterministic (not a timing), so it is guarded here; the benchmark prints it.
/// A tripwire for unnoticed growth, not the goal (issue 6 asks for 64 KiB of code; the
/// benchmark reports the code section). History, measured: 101,761 bytes before MQTT 5
/// enhanced authentication, SUBSCRIBE properties and backpressure; 107,132 with them;
/// 100,549 once the texts stopped using `core::fmt`; 79,811 with `Properties::default` out
/// of line and the build's `wasm-opt -Oz`; 82,635 before the power-cut store, 99,585 with
/// it (issue 16); 102,276 with broker failover, probing and the clock watchdog's build;
/// 102,393 with short reads ending the read loop and the request timer's bound; 102,325 with
/// the clock and link passed to `poll` and `publish` (+15) and std's `VecDeque::remove`
/// replaced by `take_at` (-83); 101,947 with the MQTT 5 properties out of line, messages
/// unboxed in events and packets encoded straight into the output (-378, issue 14);
/// 102,063 with packet ids counted down between walks over the window (+116); 102,050 with
/// no encoding to test a publish for properties (-13); 102,133 with a publish's topic and
/// payload lent to its packet instead of copied (+83); 103,149 with `publish` taking a list
/// (+1,016: lifting a list of records and lowering a list of results; 11 % fewer
/// instructions per message, so the tripwire moved from 100 to 101 KiB, issue 14). A
/// `publish` without the MQTT 5 properties, whose arguments fit in registers, was measured
/// and left out: 0.2 µs less per publish in memory, for 1.2 KB. 103,319 with topic names
/// scanned a word at a time (+157) and the small-block lists on one byte budget (+13); 103,376
/// with the window's publishes counted instead of walked (+57); 106,191 with the packet ids
/// reported to the host and publishes resumed under them after a restart (+2,815: a
/// watchdog restart without a store lost a QoS 2 message to an id the broker still held,
/// found by `explore`; the tripwire moved from 101 to 104 KiB for it); 106,108 with due timers
/// run without asking `poll_timeout` first (-83); 106,484 with the broker the session lives
/// on reported to the host and resumed there after a restart (+376: after a failover, a
/// watchdog restart resumed the first broker's stale session and lost a QoS 2 message to an
/// id it still held, found by `explore`); 106,911 with the store recording that broker for
/// a power-up (+427, the same loss after a power cut); 106,118 with the store's errors
/// reported out of line rather than inlined in each kind of record's code (-793); 106,122 with
/// a cancel synced before it returns (+4, found by `explore`); 106,180 with the store's keys
/// and sector numbers compared as serial numbers, so that their wrap at `u32::MAX` loses
/// nothing (+58); 106,245 with an MQTT 5 session expiry refused under 3.1.1, where it was
/// silently ignored (+65); 106,286 with the store's geometry rules in a function a host
/// can call too, to check a store file's header (+41); 106,384 with connections the broker
/// ends before acknowledging anything counted as failed attempts, so a publish a 3.1.1
/// broker drops the client for no longer makes it reconnect every 200 ms (+98); 106,381 with
/// the rule for a publish that fits `max_packet_size` a function a host can call too (-3);
/// 106,467 with a connection that lasted the response time counted as proven, acknowledged
/// or not (+86: a busy subscriber's traffic keeps pings from being due, so it may never
/// see an acknowledgement); 106,444 with `disconnect` leaving the store's records of the
/// publishes it ends open (-23: the calls that closed them went, and a program that
/// disconnected lost what it had been told was durable); 106,503 with a QoS 2 id kept from
/// before a connection forgotten when the broker sends a new message past our Receive
/// Maximum (+59: after a power cut inside the write that recorded a lost session, the
/// stale ids made the client drop every connection the broker resumed, found by `explore`;
/// the tripwire moved from 104 to 105 KiB for it); 107,005 with incoming messages
/// acknowledged when a poll hands them over, not when they arrive (+502: a trap lost the
/// acknowledged messages an application had not taken yet); 107,001 with the timers'
/// deadlines computed in one pass (-4; an idle poll 11 % fewer instructions, issue 14);
/// 107,124 with a PUBLISH's topic scanned for NUL once, by the topic-name rule, instead of
/// twice (+123; 763 fewer instructions an incoming message in the simulator, issue 14);
/// 107,227 with only answers, not status events, counted against `max_queued` until a poll
/// takes them (+103: an application publishing right after `connect` had a place or two
/// fewer than `max_queued`); 107,272 with the waiting messages counted by the event queue
/// beside its answers, not by hand in three places (+45). The budget leaves 248 bytes: a
/// guest change that adds code should still win bytes back where it can.
#[test]
fn component_stays_under_105_kib() {
    let size = mqtt_host::EMBEDDED_COMPONENT.len();
    assert!(size < 105 * 1024, "component is {size} bytes; the budget is 107520");
}

/// Issue 6's target is under 64 KiB of code (the code section of the shipped core module):
/// 62,055 bytes when this test was written, 64,915 before the power-cut store, 79,903 with
/// it (issue 16: the log, its recovery and collection cost 14,988 bytes; BENCHMARKS.md
/// says what would win them back), 81,623 with broker failover, 81,806 with the decoder's
/// read offset, 82,158 with probing for a broker that does not answer (issue 16 §6: the
/// tripwire moved from 80 to 82 KiB for it), 82,200 with refused SUBACK filters reported as
/// they came, 82,253 with QoS 0 bounded by the socket and packets encoded once, 82,542 with
/// short reads ending the read loop and the request timer's bound, 81,931 with the MQTT 5
/// properties out of line, 82,048 with packet ids counted down, 82,035, 82,117 with topics
/// and payloads lent to packets, 82,982 with publishes handed over in lists (issue 14), 83,210
/// with the window's publishes counted instead of walked, 85,126 with packet ids kept by the
/// host across a restart (the tripwire moved from 82 to 84 KiB for it), 85,044 with due
/// timers run without asking `poll_timeout` first, 85,239 with the session's broker resumed
/// after a restart, 85,666 with it in the store too, 84,872 with the store's errors reported
/// out of line, 84,876 with a cancel synced before it returns, 84,934 with the store's
/// serial numbers wrapping, 84,980 with a session expiry refused under 3.1.1, 85,018 with
/// the store's geometry rules in a function of their own, 85,116 with connections the broker
/// ends at once backing off, 85,113 with the publish size rule a function, 85,199 with a
/// connection that lasted counted as proven, 85,176 with `disconnect` keeping the store's
/// records, 85,233 with stale QoS 2 ids forgotten past the Receive Maximum, 85,728 with
/// incoming messages acknowledged when handed over, 85,724 with the timers' deadlines
/// computed in one pass, 85,846 with a topic scanned for NUL once, 85,948 with only answers
/// counted against `max_queued`, 85,993 with the waiting messages counted by the event
/// queue. This tripwire guards against growth past that.
#[test]
fn shipped_code_stays_under_84_kib() {
    let core = std::fs::read(mqtt_host::CORE_MODULE_PATH).expect("the build leaves the core module");
    let code = wasmparser::Parser::new(0)
        .parse_all(&core)
        .find_map(|p| match p.expect("the shipped core module parses") {
            wasmparser::Payload::CodeSectionStart { range, .. } => Some(range.len()),
            _ => None,
        })
        .expect("a code section");
    assert!(code < 84 * 1024, "the code section is {code} bytes; the tripwire is 86016 (the target, 65536)");
}

/// Memory, like size, is deterministic; the target is under 256 KiB of linear memory with
/// 100 QoS 1 publishes in flight. The benchmark prints the figures.
#[test]
fn linear_memory_stays_under_256_kib_through_10k_qos1_publishes_with_100_in_flight() {
    let component = ComponentFile::embedded().unwrap();
    let (start, peak) = mqtt_host::loopback::memory_under_load(&component, 10_000, 100, 100).unwrap();
    assert!(start > 0, "the limiter saw no memory");
    assert!(peak < 256 * 1024, "linear memory reached {peak} bytes (started at {start})");
}

/// An async client on `lo`, connected, with the window and queue given, and the task that
/// moves `lo`'s clock with tokio's.
/// A client spawned on `lo`, connected and subscribed at QoS 1 to `echo/#` (the loopback
/// sends back what is published there), with the task that moves the loopback's clock.
async fn echoing_client(lo: &Loopback) -> (mqtt_host::Client, tokio::task::JoinHandle<()>) {
    let ticker = follow_tokio_time(lo);
    let client = mqtt_host::Client::spawn(device(lo));
    client.connect().await.unwrap();
    let subs =
        vec![mqtt_host::Subscription { filter: "echo/#".into(), qos: Qos::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 }];
    assert_eq!(client.subscribe(subs).await.unwrap(), vec![1]);
    (client, ticker)
}

async fn connected_client(lo: &Loopback, max_inflight: u16, max_queued: u32) -> (mqtt_host::Client, tokio::task::JoinHandle<()>) {
    let component = ComponentFile::embedded().unwrap();
    let mut cfg = default_config("broker", "dev-1");
    (cfg.max_inflight, cfg.max_queued) = (max_inflight, max_queued);
    let d = Device::new(&component, Box::new(lo.clone()), cfg, "dev-1").unwrap();
    let ticker = follow_tokio_time(lo);
    let client = mqtt_host::Client::spawn(d);
    client.connect().await.unwrap();
    (client, ticker)
}

/// A full queue (`max_queued` requests the broker has not acknowledged) makes the async
/// client's publishers wait, in order, and not fail: the device refuses with `QueueFull`,
/// and the driver offers the publish again as acknowledgements make room.
#[test]
fn a_full_queue_makes_publishers_wait_instead_of_failing() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = connected_client(&lo, 2, 3).await;
        let subs = vec![mqtt_host::Subscription { filter: "t".into(), qos: Qos::AtMostOnce, no_local: false, retain_as_published: false, retain_handling: 0 }];
        client.subscribe(subs).await.unwrap();
        lo.hold_acks(true);
        let publishers: Vec<_> = (0..6u8)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.publish("t", &[i], Qos::AtLeastOnce, false).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(publishers.iter().all(|p| !p.is_finished()), "a publisher returned while the broker held every acknowledgement");
        let stats = client.stats().await.unwrap();
        assert_eq!((stats.inflight, stats.queued), (2, 1), "the client holds max_queued, the rest wait");
        lo.hold_acks(false);
        lo.release_acks();
        for p in publishers {
            let done = tokio::time::timeout(std::time::Duration::from_secs(5), p).await;
            done.expect("every publisher completes once there is room").unwrap().unwrap();
        }
        let mut arrived = Vec::new();
        while arrived.len() < 6 {
            if let Some(mqtt_host::ClientEvent::Message(m)) = client.next_event().await {
                arrived.push(m.payload[0]);
            }
        }
        assert_eq!(arrived, (0..6u8).collect::<Vec<_>>(), "in the order they were made");
        client.disconnect().await;
        ticker.abort();
    });
}

/// With the in-flight window full the driver stops listening for `post`s and publishes
/// (the acknowledgement that opens the window wakes it, and it takes them then), so what it
/// must hear at once wakes it by itself: a question is answered, an `enqueue` gets its
/// token and dropping the last handle ends the client, all without tokio's (paused) clock
/// moving, where a driver that missed them would sleep until its next timer.
#[test]
fn with_the_window_full_requests_still_get_a_turn_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = connected_client(&lo, 2, 8).await;
        lo.hold_acks(true);
        for i in 0..4u8 {
            client.post(qos1(&[i])).await.unwrap();
        }
        // Let the driver take them and send two: the window is full.
        while client.stats().await.unwrap().inflight < 2 {}
        let start = tokio::time::Instant::now();
        client.enqueue(qos1(b"enqueued")).await.unwrap();
        let stats = client.stats().await.unwrap();
        assert_eq!((stats.inflight, stats.queued), (2, 3));
        // More publishes than the driver takes in a turn wait in the channel, ahead of
        // the next question (each sent by its future's first poll; the futures are dropped,
        // the publishes stay).
        for i in 0..100u8 {
            assert!(polled_once(client.publish("t", [i], Qos::AtLeastOnce, false)).await.is_none());
        }
        let stats = client.stats().await.unwrap();
        assert_eq!((stats.inflight, stats.queued), (2, 6), "the window full, max_queued held, the rest waiting");
        assert_eq!(start.elapsed(), std::time::Duration::ZERO, "answered without waiting for a timer");
        let mut events = client.take_events();
        drop(client);
        while events.next().await.is_some() {}
        assert_eq!(start.elapsed(), std::time::Duration::ZERO, "the last handle dropped ended the client at once");
        ticker.abort();
    });
}

/// `enqueue` keeps many publishes in flight without a future each: tokens come back at once
/// and each completes once on the event stream, also when a clone of the client (another
/// task's handle) made it.
#[test]
fn enqueued_publishes_complete_as_events_and_clones_share_the_connection() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        lo.hold_acks(true);
        let d = device(&lo);
        let ticker = follow_tokio_time(&lo);
        let mut client = mqtt_host::Client::spawn(d);
        client.connect().await.unwrap();
        let other = client.clone();
        let sender = tokio::spawn(async move {
            let mut tokens = Vec::new();
            for i in 0..50u8 {
                tokens.push(other.enqueue(qos1(&[i])).await.unwrap());
            }
            tokens
        });
        // Every token came back while no PUBACK had: 50 in flight at once (window 16, the
        // rest queued), no future held for any of them.
        let mut tokens = sender.await.unwrap();
        assert_eq!(tokens.len(), 50);
        lo.hold_acks(false);
        lo.release_acks();
        let mut done = Vec::new();
        while done.len() < tokens.len() {
            match tokio::time::timeout(std::time::Duration::from_secs(30), client.next_event()).await.expect("completions arrive") {
                Some(mqtt_host::ClientEvent::Published(t)) => done.push(t),
                Some(mqtt_host::ClientEvent::PublishFailed { token, reason }) => panic!("{token} failed: {reason:#04x}"),
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
        done.sort();
        tokens.sort();
        assert_eq!(done, tokens, "each token completes exactly once");
        assert_eq!(lo.with(|s| s.received.len()), 50, "all 50 reached the broker");
        client.disconnect().await;
        ticker.abort();
    });
}

/// `disconnect` with publishes still unacknowledged and a store: they are kept, not failed
/// (an event for an `enqueue`, an error saying so for a `publish(..).await`), and the next
/// client on that store sends them. Before, the disconnect closed their records: a program
/// that disconnected on its way out lost what it had been told was durable.
#[test]
fn disconnect_keeps_the_unacknowledged_publishes_a_store_holds_for_the_next_client() {
    use std::sync::{Arc, Mutex};
    let flash = Arc::new(Mutex::new(mqtt_host::MemFlash::new(mqtt_host::file_flash::DEFAULT_GEOMETRY)));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new().with_flash(flash.clone());
        lo.hold_acks(true);
        let ticker = follow_tokio_time(&lo);
        let mut client = mqtt_host::Client::spawn(device(&lo));
        client.connect().await.unwrap();
        let enqueued = client.enqueue(qos1(b"enqueued")).await.unwrap();
        let other = client.clone();
        let awaited = tokio::spawn(async move { other.publish("t", b"awaited".to_vec(), Qos::AtLeastOnce, false).await });
        while lo.with(|s| s.received.len()) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        client.disconnect().await;
        assert!(matches!(awaited.await.unwrap(), Err(mqtt_host::ClientCallError::KeptInStore)));
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(30), client.next_event()).await.expect("the enqueued publish completes") {
                Some(mqtt_host::ClientEvent::PublishKept(t)) => break assert_eq!(t, enqueued),
                Some(e @ (mqtt_host::ClientEvent::Published(_) | mqtt_host::ClientEvent::PublishFailed { .. })) => panic!("{e:?}"),
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
        ticker.abort();
    });
    // The next client on the flash, to a broker that never saw them: both go out, as new.
    let lo = Loopback::new().with_flash(flash);
    let mut d = device(&lo);
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    for _ in 0..10 {
        d.poll().unwrap();
        lo.advance(100);
    }
    let mut sent: Vec<Vec<u8>> = lo.with(|s| s.received.iter().map(|r| r.1.clone()).collect());
    sent.sort();
    assert_eq!(sent, [b"awaited".to_vec(), b"enqueued".to_vec()]);
}

/// An application subscribed to its own topic that dropped its event stream: the messages
/// no one can take are not counted as waiting for the application, so the client keeps
/// reading the socket (with `backpressure`, the default) and its own publishes complete.
/// Before, once `queue_len` (64) such messages waited (and the client's own queue behind
/// them had filled) it stopped reading for good: publish 127 here never got its PUBACK.
#[test]
fn a_dropped_event_stream_does_not_stop_the_client_reading() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = echoing_client(&lo).await;
        drop(client.take_events());
        for i in 0..200u32 {
            let sent = client.publish("echo/1", i.to_be_bytes().to_vec(), Qos::AtLeastOnce, false);
            tokio::time::timeout(std::time::Duration::from_secs(30), sent).await.unwrap_or_else(|_| panic!("publish {i} never completed")).unwrap();
        }
        client.disconnect().await;
        ticker.abort();
    });
}

/// Spawns `call` on a clone of `client`, gives it 300 ms and asserts that it still waits
/// (`why` says what it would mean if it did not); the handle answers once it is let go.
async fn still_waiting<F>(client: &mqtt_host::Client, call: impl FnOnce(mqtt_host::Client) -> F, why: &str) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = tokio::spawn(call(client.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!handle.is_finished(), "{why}");
    handle
}

/// Completions of `post` and `enqueue` waiting unread are bounded. A stream taken with
/// `take_events` holds the publishers back while `max_queued` completions wait on it, until
/// it is down to half of them, and one dropped stops holding them back. While the handle
/// keeps the stream nothing waits (the handle cannot read while its `post` waits); what it
/// left unread counts once the stream is taken. Before, a reader that lagged held any
/// number of completions, ~200 bytes each.
#[test]
fn a_taken_event_stream_that_lags_holds_post_and_enqueue_back() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = connected_client(&lo, 2, 3).await;
        let wait = std::time::Duration::from_secs(5);
        let settled = async |client: &mqtt_host::Client| loop {
            let s = client.stats().await.unwrap();
            if (s.inflight, s.queued) == (0, 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        // The stream on its handle: twice max_queued go, none read.
        for i in 0..6u8 {
            tokio::time::timeout(wait, client.post(qos1(&[i]))).await.expect("a place at completion").unwrap();
        }
        settled(&client).await;
        // Taken with the six unread: they count, so a post waits until the reader is down
        // to half of max_queued.
        let mut events = client.take_events();
        let behind_the_six = still_waiting(
            &client,
            |c| async move { c.post(qos1(b"behind")).await },
            "a post returned while six completions from before the take waited unread",
        )
        .await;
        let mut early = 0;
        while early < 7 {
            match tokio::time::timeout(wait, events.next()).await.expect("the six completions, then the seventh's") {
                Some(mqtt_host::ClientEvent::Published(_)) => early += 1,
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
        tokio::time::timeout(wait, behind_the_six).await.expect("the reader caught up").unwrap().unwrap();
        // Taken: three go, their completions stay unread, a fourth waits.
        for i in 0..3u8 {
            tokio::time::timeout(wait, client.post(qos1(&[i]))).await.expect("max_queued places").unwrap();
        }
        settled(&client).await;
        let fourth = still_waiting(&client, |c| async move { c.post(qos1(&[3])).await }, "a post returned while max_queued completions waited unread").await;
        // Woken once the reader is down to half of them.
        for _ in 0..2 {
            assert!(matches!(events.next().await, Some(mqtt_host::ClientEvent::Published(_))));
        }
        tokio::time::timeout(wait, fourth).await.expect("the reader caught up").unwrap().unwrap();
        tokio::time::timeout(wait, client.post(qos1(&[4]))).await.expect("two unread: room for one more").unwrap();
        settled(&client).await;
        let enqueued =
            still_waiting(&client, |c| async move { c.enqueue(qos1(b"enqueued")).await }, "an enqueue returned while max_queued completions waited unread")
                .await;
        // Dropped: what it held no longer holds the publishers back, nor what completes after.
        drop(events);
        tokio::time::timeout(wait, enqueued).await.expect("a dropped stream holds nothing back").unwrap().unwrap();
        for i in 0..10u8 {
            tokio::time::timeout(wait, client.post(qos1(&[i]))).await.expect("no stream, nothing held").unwrap();
        }
        client.disconnect().await;
        ticker.abort();
    });
}

/// The same, for a stream dropped while it held `queue_len` messages unread: with
/// `backpressure` (the default) the client had stopped reading the socket for them, and
/// dropping the stream lets it read again. Before, they stayed counted as waiting for the
/// application, and the client never read its socket again.
#[test]
fn dropping_a_stream_that_held_messages_lets_the_client_read_again() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = echoing_client(&lo).await;
        let events = client.take_events();
        let publishing = tokio::spawn({
            let c = client.clone();
            async move {
                for i in 0..200u32 {
                    c.publish("echo/1", i.to_be_bytes().to_vec(), Qos::AtLeastOnce, false).await.unwrap();
                }
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!publishing.is_finished(), "the client kept reading with queue_len messages unread");
        drop(events);
        tokio::time::timeout(std::time::Duration::from_secs(30), publishing).await.expect("the client reads again").unwrap();
        client.disconnect().await;
        ticker.abort();
    });
}

/// `post` returns at once while fewer than `max_queued` of its publishes are outstanding,
/// then waits for one to complete; a publish the client will not take comes back as
/// `Refused` with why, under its own token, and takes no room for good. Tokens of `post`
/// and `enqueue` never clash on the one event stream.
#[test]
fn post_waits_at_max_queued_and_reports_a_refused_publish_as_an_event() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = connected_client(&lo, 2, 3).await;
        lo.hold_acks(true);
        // An enqueue first: its token comes from the count `post`'s do (the device's
        // would be 1, as the first post's).
        let first = client.enqueue(qos1(b"enqueued")).await.unwrap();
        let bad = client.post(Publish::new("no/#/wildcards", "x", Qos::AtLeastOnce)).await.unwrap();
        let wait = std::time::Duration::from_secs(5);
        let why = loop {
            match tokio::time::timeout(wait, client.next_event()).await.expect("the refusal arrives") {
                Some(mqtt_host::ClientEvent::Refused { token, why }) if token == bad => break why,
                Some(mqtt_host::ClientEvent::Refused { token, why }) => panic!("refused {token}: {why}"),
                Some(_) => {}
                None => panic!("client stopped"),
            }
        };
        assert!(why.contains("wildcard"), "{why}");
        // The refused one gave its room back: three more go at once, the fourth waits.
        let mut tokens = Vec::new();
        for i in 0..3u8 {
            let t = tokio::time::timeout(wait, client.post(qos1(&[i]))).await.expect("room for max_queued");
            tokens.push(t.unwrap());
        }
        let fourth = still_waiting(&client, |c| async move { c.post(qos1(&[3])).await }, "a fourth post returned while max_queued (3) were outstanding").await;
        lo.hold_acks(false);
        lo.release_acks();
        tokens.push(tokio::time::timeout(wait, fourth).await.expect("room once a PUBACK came").unwrap().unwrap());
        tokens.push(first);
        tokens.sort();
        let mut done = Vec::new();
        while done.len() < 5 {
            match tokio::time::timeout(wait, client.next_event()).await.expect("completions arrive") {
                Some(mqtt_host::ClientEvent::Published(t)) => done.push(t),
                Some(mqtt_host::ClientEvent::Up { .. } | mqtt_host::ClientEvent::Link(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        done.sort();
        let mut distinct = tokens.clone();
        distinct.push(bad);
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "no token given twice: {tokens:?}, refused {bad}");
        assert_eq!(done, tokens, "each completes once, under the token post or enqueue returned");
        assert!(!tokens.contains(&bad));
        client.disconnect().await;
        ticker.abort();
    });
}

/// A request the client refuses changes nothing, so the deadline the last poll returned
/// stands. Otherwise a driver that offers a waiting publish again on every wake while the
/// queue is full is told to poll at once, and spins. An accepted request waits for the
/// next poll, so then the answer is now.
#[test]
fn a_refused_request_leaves_the_deadline_where_the_last_poll_put_it() {
    let lo = Loopback::new();
    let component = ComponentFile::embedded().unwrap();
    let mut cfg = default_config("broker", "dev-1");
    (cfg.max_inflight, cfg.max_queued) = (2, 3);
    let mut d = Device::new(&component, Box::new(lo.clone()), cfg, "dev-1").unwrap();
    d.connect().unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Up(_)));
    lo.hold_acks(true);
    for i in 0..3 {
        d.publish(qos1(&[i])).unwrap();
    }
    d.poll().unwrap();
    let now = lo.with(|s| s.now_ms);
    let deadline = d.next_deadline().unwrap();
    assert!(deadline.is_some_and(|t| t > now), "a timer ahead, not now: {deadline:?} at {now}");
    for _ in 0..3 {
        assert!(matches!(d.publish(qos1(b"no room")), Err(DeviceError::Client(ClientError::QueueFull))));
        assert_eq!(d.next_deadline().unwrap(), deadline, "refused: nothing to send");
    }
    lo.release_acks();
    d.poll().unwrap();
    d.publish(qos1(b"room")).unwrap();
    assert_eq!(d.next_deadline().unwrap(), Some(lo.with(|s| s.now_ms)), "accepted: it goes out on the next poll");
}

/// `cancel` takes back a publish made with `post` or `enqueue` wherever it is: one still in
/// the driver's line (the client's room full), one the client holds unsent, one in flight. Each
/// reports `PublishFailed` with reason 0 at once and nothing after; only the one in flight
/// reached the broker, and a `post` permit comes back for each. A completed or unknown
/// token is not cancelled.
#[test]
fn cancel_takes_back_a_publish_wherever_it_waits_and_reports_it_once() {
    use mqtt_host::ClientEvent;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lo = Loopback::new();
        let (mut client, ticker) = connected_client(&lo, 2, 3).await;
        let wait = std::time::Duration::from_secs(5);
        let done = client.enqueue(qos1(b"done")).await.unwrap();
        loop {
            match tokio::time::timeout(wait, client.next_event()).await.expect("the first completes") {
                Some(ClientEvent::Published(t)) if t == done => break,
                Some(ClientEvent::Up { .. } | ClientEvent::Link(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        lo.hold_acks(true);
        // Two in flight (window 2) and one the client holds unsent fill its room
        // (`max_queued` 3); a post then still has a permit (`enqueue` took none), so it
        // returns its token, but waits in the driver's line.
        let in_flight = client.post(qos1(b"in flight")).await.unwrap();
        let kept = client.post(qos1(b"kept")).await.unwrap();
        let unsent = client.enqueue(qos1(b"unsent")).await.unwrap();
        let in_line = client.post(qos1(b"in line")).await.unwrap();
        let stats = client.stats().await.unwrap();
        assert_eq!((stats.inflight, stats.queued), (2, 1), "the post waits outside the client");

        assert!(client.cancel(in_line).await.unwrap(), "in the driver's line: taken back");
        assert!(client.cancel(unsent).await.unwrap(), "held by the client: taken back");
        assert!(client.cancel(in_flight).await.unwrap(), "in flight: no longer waited for");
        assert!(!client.cancel(in_flight).await.unwrap(), "cancelled once only");
        assert!(!client.cancel(done).await.unwrap(), "completed: nothing to cancel");
        assert!(!client.cancel(9_999).await.unwrap(), "not a token of this client");
        let stats = client.stats().await.unwrap();
        assert_eq!((stats.inflight, stats.queued), (2, 0), "in flight on the wire still: the cancelled one and the kept one");

        lo.hold_acks(false);
        lo.release_acks();
        // The kept one completes; the cancelled ones were reported once each, before it.
        let mut failed = Vec::new();
        loop {
            match tokio::time::timeout(wait, client.next_event()).await.expect("events arrive") {
                Some(ClientEvent::PublishFailed { token, reason: 0 }) => failed.push(token),
                Some(ClientEvent::Published(t)) if t == kept => break,
                other => panic!("{other:?}"),
            }
        }
        failed.sort();
        let mut expected = vec![unsent, in_line, in_flight];
        expected.sort();
        assert_eq!(failed, expected);
        // Nothing more for any of them: a question answered means the driver is past the
        // poll that handled the held acknowledgements.
        client.stats().await.unwrap();
        while let Ok(Some(e)) = tokio::time::timeout(std::time::Duration::from_millis(200), client.next_event()).await {
            assert!(!matches!(e, ClientEvent::Published(_) | ClientEvent::PublishFailed { .. }), "{e:?}");
        }
        let sent: Vec<Vec<u8>> = lo.with(|s| s.received.iter().map(|(_, p, _)| p.clone()).collect());
        assert_eq!(sent, [b"done".to_vec(), b"in flight".to_vec(), b"kept".to_vec()], "the cancelled unsent ones never left");
        // Every permit is back: three posts go at once.
        for i in 0..3u8 {
            tokio::time::timeout(wait, client.post(qos1(&[i]))).await.expect("room for max_queued").unwrap();
        }
        client.disconnect().await;
        ticker.abort();
    });
}

/// An incoming QoS 1 message is acknowledged when a poll hands it over, not when it arrives:
/// a host that takes fewer messages than are waiting (`poll_taking`, as the async `Client`
/// does when its channel is full) leaves them inside the instance, and a trap must not lose
/// them. Unacknowledged, the broker resends them to the session the fresh instance resumes.
/// (Session 45 found the gap: all three were lost, acknowledged on arrival.)
#[test]
fn a_trap_loses_no_incoming_qos1_message_the_host_had_not_taken() {
    let lo = Loopback::new();
    let mut d = up_on_a_session_that_outlives_connections(&lo);
    let sub = Subscription { filter: "t".into(), qos: Qos::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 };
    d.subscribe(vec![sub]).unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Subscribed(_)));
    // Its own publishes come back to it through the subscription; the host takes none yet.
    for p in [b"one".as_slice(), b"two", b"three"] {
        d.publish(qos1(p)).unwrap();
    }
    let mut received = Vec::new();
    for _ in 0..10 {
        d.poll_taking(0).unwrap();
        lo.advance(100);
    }
    d.starve_next_call(100);
    for _ in 0..100 {
        for e in d.poll().expect("the watchdog recovers") {
            if let Event::Message(m) = e {
                received.push(m.payload);
            }
        }
        lo.advance(100);
    }
    assert_eq!(d.restarts(), 1);
    for p in [b"one".as_slice(), b"two", b"three"] {
        assert!(received.iter().any(|r| r == p), "{:?} was acknowledged and never delivered: {received:?}", String::from_utf8_lossy(p));
    }
}

/// A restart with the queue full and a subscription answered: the fresh instance takes back
/// every publish the failed one held, and the subscription besides (which counts against
/// `max_queued` there until answered, and did not in the failed instance). Before the host
/// gave it that room, and connected only after the replay, every publish here was refused
/// (`QueueFull`) and reported failed: accepted, then lost to a restart.
#[test]
fn a_restart_with_a_full_queue_and_a_subscription_hands_everything_back() {
    let (lo, mut d) = connected_with_a_small_queue();
    let s = d.subscribe(vec![sub("a")]).unwrap();
    poll_until(&mut d, &lo, |e| matches!(e, Event::Subscribed((x, _)) if *x == s));
    fill_the_queue_trap_and_complete(&lo, &mut d, |_| lo.with(|s| s.subscribes.clear()));
    assert_eq!(d.restarts(), 1);
    assert_eq!(lo.with(|s| s.subscribes.clone()), vec![vec!["a".to_string()]], "the subscription is made again");
    let payloads: std::collections::BTreeSet<Vec<u8>> = lo.with(|s| s.received.iter().map(|r| r.1.clone()).collect());
    assert_eq!(payloads, [b"0", b"1", b"2"].map(|p| p.to_vec()).into(), "the broker has all three");
    assert_eq!(lo.with(|s| s.violations.clone()), Vec::<String>::new(), "the broker model found no breach of the spec");
}
