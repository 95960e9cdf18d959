//! The one Mosquitto every client is measured against, on a free loopback port.

use mosquitto_launcher::{Mosquitto, Session};

/// No queue limit: Mosquitto's default (1000) silently drops QoS 1 messages for a subscriber
/// that falls behind, which would be charged to the client under test. The in-flight window
/// to each subscriber matches the publishers' (100); Nagle is off on the broker's side as
/// it is on every client's. In a file of its own, which the Python and Node hosts' bench
/// scripts start their Mosquitto with too.
const SETTINGS: &str = include_str!("../mosquitto.conf");

/// A broker in `session`: the main table's is in a session of its own, as a broker on another
/// machine or a system service is scheduled; a second table repeats QoS 1 with the broker in
/// the harness's session (see `Session` for what Linux's autogroup does with each).
pub fn start(session: Session) -> anyhow::Result<Mosquitto> {
    Ok(Mosquitto::start_in(session, SETTINGS)?)
}
