//! State shared by the simulation's hosts and the runner: what the device's WiFi reports,
//! the fault switches, and the record of everything that happened (the trace and the
//! typed facts the expectations are checked against).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use mqtt_host::LinkState;
use serde_json::{json, Value};

/// Simulated milliseconds since the start (0 outside a simulation).
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// The first 16 payload bytes carry the message's sequence number in decimal, so any
/// copy can be traced back to the publish that made it.
pub fn payload_with_seq(seq: u64, len: usize) -> Vec<u8> {
    let mut p = format!("{seq:016}").into_bytes();
    p.resize(len.max(16), b'.');
    p
}

pub fn seq_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..16)?).ok()?.parse().ok()
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub device: u32,
    pub seq: u64,
    pub topic: String,
    pub qos: u8,
    pub t_ms: u64,
    pub token: u64,
    pub boot: u32,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub seq: Option<u64>,
    pub t_ms: u64,
    pub payload: Vec<u8>,
    /// The sender marked it a redelivery (DUP).
    pub dup: bool,
    /// It came with the retain flag.
    pub retained: bool,
}

/// Facts for the expectations, in the order they happened.
#[derive(Debug, Default)]
pub struct Record {
    pub accepted: Vec<Accepted>,
    /// (device, boot, token) → time acknowledged.
    pub acked: BTreeMap<(u32, u32, u64), u64>,
    pub publish_failures: u64,
    /// Filters the broker refused in a SUBACK, as the application was told.
    pub subscribe_refusals: u64,
    /// (device, boot, token) of every publish that failed after it was accepted.
    pub failed: std::collections::BTreeSet<(u32, u32, u64)>,
    /// Publishes the application cancelled, by (device, boot, token).
    pub cancelled: std::collections::BTreeSet<(u32, u32, u64)>,
    /// Publishes whose cancel a power cut fell inside: the application never saw the call
    /// return, so either outcome is right (the cancel's record made it to flash or not), and
    /// one never delivered is not lost.
    pub cancel_cut: std::collections::BTreeSet<(u32, u32, u64)>,
    /// Publishes `disconnect` ended unacknowledged whose store keeps them (`PublishFailed`
    /// with `KEPT_IN_STORE`): not failed, the device's next boot sends them; without one,
    /// never delivered is not lost.
    pub kept: std::collections::BTreeSet<(u32, u32, u64)>,
    /// Tokens that completed (`Published` or `PublishFailed`) after a cancel that succeeded.
    pub completed_after_cancel: Vec<u64>,
    /// What the observer client received.
    pub observed: Vec<Delivery>,
    /// What the broker accepted on the observed topics (its own record, like Mosquitto's
    /// log), so a message missing at the observer is blamed on the right side.
    pub broker_received: Vec<Delivery>,
    /// Messages on observed topics the broker itself let go of: (seq, why).
    pub broker_dropped: Vec<(Option<u64>, String)>,
    /// What the device's application received.
    pub device_received: Vec<Delivery>,
    /// Injected messages: (seq, time, topic).
    pub injected: Vec<(u64, u64, String)>,
    /// (device, time).
    pub ups: Vec<(u32, u64)>,
    /// (device, time, reason).
    pub downs: Vec<(u32, u64, String)>,
    /// Times the link came back (WiFi up again after a drop).
    pub link_returns: Vec<u64>,
    /// Silent links and broker outages: (began, ended).
    pub heals: Vec<(u64, u64)>,
    pub power_cycles: Vec<u64>,
    /// Times a power cut fell inside a flash operation.
    pub power_cuts: Vec<u64>,
    /// Messages the client was handing to the application in the call a power cut fell
    /// inside (the application never saw them, and no copy may follow).
    pub handed_over_at_cut: Vec<u64>,
    /// Boots so far, per device (its first boot is number 0).
    pub boots: Vec<u32>,
    pub discards: u64,
    pub restarts: u64,
    /// The most [`mqtt_host::Device::replays_refused`] of any device: 0, or a restart
    /// failed something the application had been promised.
    pub replays_refused: u64,
    pub broker_max_inflight_to_device: u64,
    pub broker_expired: u64,
    pub disconnect_called_at: Option<u64>,
    pub host_errors: Vec<String>,
    /// Connections the devices tried to open (every `open`, whatever came of it).
    pub connect_attempts: u64,
    /// What the broker saw a client do against the spec (always a failed check).
    pub protocol_violations: Vec<String>,
    /// A device's application told `Up` while up, or `Down` while not (always a failed
    /// check): in one boot the two alternate, starting with `Up`.
    pub up_down_out_of_turn: Vec<String>,
}

#[derive(Debug)]
pub struct World {
    /// What the device's WiFi import reports.
    pub link: LinkState,
    pub dns_fail: bool,
    /// Per device: the application asks the client to disconnect.
    pub disconnect_now: Vec<bool>,
    /// Per device: its next call into the component traps (a `guest_trap` fault).
    pub trap_now: Vec<bool>,
    /// The observer is to be disconnected (an `observer_away` fault).
    pub observer_away: bool,
    /// The observers' wakeups, for telling them of `observer_away`.
    pub observer_wakes: Vec<std::sync::Arc<tokio::sync::Notify>>,
    /// Per device: subscribe (filter, qos) / unsubscribe (filter, None) requests.
    pub app_requests: Vec<Vec<(String, Option<u8>)>>,
    /// Topics whose unfinished publishes the application is to cancel, per device.
    pub app_cancels: Vec<Vec<String>>,
    /// Per device, per workload: the next index (survives power cycles).
    pub workload_next: Vec<Vec<u64>>,
    /// Per device: its application was told `Up` and no `Down` since, in this boot.
    pub told_up: Vec<bool>,
    pub rec: Record,
    /// How many brokers the scenario runs.
    pub brokers: usize,
    /// Per device: its flash, when the scenario gives it one (kept across power cycles).
    pub flash: Vec<Option<crate::flash::FlashCell>>,
    trace: Vec<String>,
}

impl World {
    pub fn new(devices: usize, workloads: usize) -> Self {
        let rec = Record { boots: vec![0; devices], ..Record::default() };
        World {
            link: LinkState::Up,
            dns_fail: false,
            disconnect_now: vec![false; devices],
            trap_now: vec![false; devices],
            observer_away: false,
            observer_wakes: Vec::new(),
            app_requests: vec![Vec::new(); devices],
            app_cancels: vec![Vec::new(); devices],
            workload_next: vec![vec![0; workloads]; devices],
            told_up: vec![false; devices],
            rec,
            brokers: 1,
            flash: (0..devices).map(|_| None).collect(),
            trace: Vec::new(),
        }
    }

    /// Append one event to the trace (JSON Lines, keys sorted, simulated time first).
    pub fn log(&mut self, t_ms: u64, who: &str, what: &str, detail: Value) {
        let mut v = json!({ "t_ms": t_ms, "who": who, "what": what });
        if let (Value::Object(m), Value::Object(d)) = (&mut v, detail) {
            m.extend(d);
        }
        self.trace.push(v.to_string());
    }

    pub fn trace(&self) -> &[String] {
        &self.trace
    }
}

#[derive(Clone, Debug)]
pub struct Shared(Arc<Mutex<World>>);

impl Shared {
    pub fn new(world: World) -> Self {
        Shared(Arc::new(Mutex::new(world)))
    }
    pub fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is a bug in the simulator itself; keep going with
        // what was recorded so the report shows how far it got.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// FNV-1a over the trace: a stable fingerprint of a run (written out here because its
/// value must never change between versions or platforms, which a std hasher does not
/// promise).
pub fn trace_hash(lines: &[String]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in lines {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
