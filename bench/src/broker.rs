//! The one Mosquitto every client is measured against, on a free loopback port.

use mosquitto_launcher::{Mosquitto, Session};

/// No queue limit: Mosquitto's default (1000) silently drops QoS 1 messages for a subscriber
/// that falls behind, which would be charged to the client under test. The in-flight window
/// to each subscriber matches the publishers' (100); Nagle is off on the broker's side as
/// it is on every client's.
const SETTINGS: &str = "persistence false\nmax_queued_messages 0\nmax_inflight_messages 100\nset_tcp_nodelay true\n";

/// A broker in `session`: the main table's is in a session of its own, as a broker on another
/// machine or a system service is scheduled; a second table repeats QoS 1 with the broker in
/// the harness's session (see `Session` for what Linux's autogroup does with each).
pub fn start(session: Session) -> anyhow::Result<Mosquitto> {
    Ok(Mosquitto::start_in(session, SETTINGS)?)
}
