//! The one Mosquitto every client is measured against, on a free loopback port.

use mosquitto_launcher::Mosquitto;

/// No queue limit: Mosquitto's default (1000) silently drops QoS 1 messages for a subscriber
/// that falls behind, which would be charged to the client under test. The in-flight window
/// to each subscriber matches the publishers' (100); Nagle is off on the broker's side as
/// it is on every client's.
const SETTINGS: &str = "persistence false\nmax_queued_messages 0\nmax_inflight_messages 100\nset_tcp_nodelay true\n";

pub fn start() -> anyhow::Result<Mosquitto> {
    Ok(Mosquitto::start(SETTINGS)?)
}
