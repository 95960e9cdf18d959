//! A connected client fed arbitrary broker bytes, time jumps and API calls: never a panic;
//! malformed input ends in a clean disconnect with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_protocol::codec::ConnAck;
use mqtt_protocol::{Action, Client, Config, Instant, LinkState, OutgoingPublish, Packet, Properties, ProtocolVersion, QoS};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else { return };
    let v5 = ctl & 1 == 1;
    let cfg = Config { client_id: "fuzz".into(), server: "b".into(), mqttv5: v5, clean: ctl & 2 == 0, max_packet_size: 2048, queue_len: 4, ..Config::default() };
    let Ok(mut c) = Client::new(cfg) else { return };
    let mut now = Instant::from_millis(1);
    c.handle_link(now, LinkState::Up);
    c.connect(now).ok();
    let drain = |c: &mut Client, now: Instant| {
        while c.poll_transmit().is_some() {}
        while let Some(a) = c.poll_action() {
            if let Action::OpenSocket { .. } = a {
                c.handle_socket_open(now);
            }
        }
        while c.poll_event().is_some() {}
    };
    drain(&mut c, now);
    let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
    c.handle_input(now, &Packet::ConnAck(ConnAck { session_present: ctl & 4 != 0, code: 0, properties: Properties::default() }).encode(version));
    drain(&mut c, now);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 6 {
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
            _ => c.handle_socket_error(now, mqtt_protocol::SocketError::Reset),
        }
        drain(&mut c, now);
        if let Some(t) = c.poll_timeout() {
            assert!(t.as_millis() < u64::MAX, "deadline overflow");
        }
    }
});
