//! A connected client fed arbitrary broker bytes, time jumps and API calls: never a panic;
//! malformed input ends in a clean disconnect with a reason. The control byte also picks
//! backpressure, enhanced authentication (MQTT 5), an application that leaves its
//! messages queued, and a second broker to fail over to with the session kept across
//! restarts (`clean_init = false`), resumed on it as a host does after a watchdog restart.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_protocol::codec::ConnAck;
use mqtt_protocol::{
    Action, Client, Config, Instant, LinkState, OutgoingPublish, Packet, Properties, ProtocolVersion, QoS, SubscribeFilter, SubscribeProperties,
};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else { return };
    let v5 = ctl & 1 == 1;
    let cfg = Config {
        client_id: "fuzz".into(),
        server: "b".into(),
        mqttv5: v5,
        clean: ctl & 2 == 0,
        max_packet_size: 2048,
        queue_len: 4,
        backpressure: ctl & 8 != 0,
        auth_method: (v5 && ctl & 16 != 0).then(|| "M".into()),
        servers: if ctl & 64 != 0 { vec!["b2".into()] } else { Vec::new() },
        clean_init: ctl & 64 == 0,
        ..Config::default()
    };
    // A slow application: messages stay queued (only other events are taken).
    let slow = ctl & 32 != 0;
    let Ok(mut c) = Client::new(cfg) else { return };
    // As the component does: what a fresh instance would need, reported before bytes leave.
    c.report_sent_ids();
    if ctl & 128 != 0 {
        // Where a failed instance had moved the session (out of range without a second
        // broker: refused).
        c.resume_session(1).ok();
    }
    let mut now = Instant::from_millis(1);
    c.handle_link(now, LinkState::Up);
    c.connect(now).ok();
    let drain = |c: &mut Client, now: Instant| {
        c.take_session_broker();
        c.take_sent_ids();
        while c.poll_transmit().is_some() {}
        while let Some(a) = c.poll_action() {
            if let Action::OpenSocket { .. } = a {
                c.handle_socket_open(now);
            }
        }
        if slow {
            while c.poll_event_except_messages().is_some() {}
        } else {
            while c.poll_event().is_some() {}
        }
    };
    drain(&mut c, now);
    let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
    c.handle_input(now, &Packet::ConnAck(ConnAck { session_present: ctl & 4 != 0, code: 0, properties: Properties::default() }).encode(version));
    drain(&mut c, now);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 9 {
            0 | 1 => {
                let n = usize::from(op / 6).min(rest.len());
                let (bytes, tail) = rest.split_at(n);
                rest = tail;
                c.handle_input(now, bytes);
            }
            2 => {
                now = now + u64::from(op) * 97;
                c.handle_timeout(now);
            }
            3 => {
                let p = OutgoingPublish { topic: "t".into(), payload: vec![op], qos: QoS::AtLeastOnce, retain: false, properties: Properties::default() };
                c.publish(now, p, None).ok();
            }
            4 => c.handle_link(now, if op & 8 == 0 { LinkState::Down } else { LinkState::Up }),
            5 => {
                let f = SubscribeFilter { filter: "a/#".into(), qos: QoS::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 };
                let p = SubscribeProperties { subscription_id: Some(u32::from(op)), user_properties: Vec::new() };
                c.subscribe(now, vec![f], p).ok();
            }
            6 => {
                c.authenticate(now, vec![op]).ok();
            }
            7 => {
                // The slow application takes one message, alone or as a batch host does
                // (acknowledged as it is handed over).
                if op & 16 == 0 {
                    c.poll_event();
                } else {
                    c.poll_events(1, drop);
                }
            }
            _ => c.handle_socket_error(now, mqtt_protocol::SocketError::Reset),
        }
        drain(&mut c, now);
        if let Some(t) = c.poll_timeout() {
            assert!(t.as_millis() < u64::MAX, "deadline overflow");
        }
    }
});
