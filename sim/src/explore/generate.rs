//! Scenarios drawn from a seed: a device config within the valid ranges, its traffic both
//! ways, and a fault timeline drawn from every fault kind the simulator has. What must
//! hold is not drawn: [`super::expect::derive`] reads it off what was generated.
//!
//! The draws lean towards what finds bugs (short runs, small windows and queues, outages
//! that overlap the traffic) while every value stays one a user could configure.

use mqtt_host::settings::WillSetting;
use mqtt_protocol::SplitMix64;

use crate::scenario::{AckKind, Chaos, CutDuring, Fault, Inject, Scenario, StoreSpec, SubSpec, Workload};

/// Topics the generator uses: the device publishes on `sensor/{device}/dataN`, the broker
/// injects on `sensor/all/…`, and the device subscribes to each injected topic by name.
pub const STALE_TOPIC: &str = "sensor/all/stale";
pub const RETAINED_TOPIC: &str = "sensor/all/retained";
/// What the broker's access control denies, when the draw has one: the device's
/// `sensor/{device}/denied` publishes and a subscription to this filter.
pub const DENIED_FILTER: &str = "sensor/+/denied";

/// Seeded draws, named for what they draw.
pub struct Dice(SplitMix64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(SplitMix64::new(seed))
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.0.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.0.below(from.len() as u64) as usize]
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.0.below(hi - lo + 1)
    }
    /// Seconds in `lo..=hi`, to a tenth.
    fn secs(&mut self, lo: f64, hi: f64) -> f64 {
        let tenths = self.range((lo * 10.0) as u64, (hi * 10.0) as u64);
        tenths as f64 / 10.0
    }
    pub fn draw(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// Scenario `index` of the exploration seeded `seed`, and the seed it runs with.
pub fn scenario(seed: u64, index: u64) -> (Scenario, u64) {
    let mut dice = Dice::new(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0xE8B1_0AE5);
    let run_seed = dice.draw() % 1_000_000_000;
    (draw(&mut dice, run_seed), run_seed)
}

fn draw(d: &mut Dice, run_seed: u64) -> Scenario {
    let mut sc = Scenario::parse("duration_s = 60\n").expect("the minimal scenario parses");
    sc.description = "drawn by mqtt-sim explore".into();
    sc.seeds = vec![run_seed];
    sc.duration_s = d.range(20, 120) as f64;
    // The simulator's step. A run costs per step, whatever happens in it: turmoil's fixed
    // cost of stepping a host is most of a run's time (perf). Timers still fire at their
    // millisecond inside a step, and the latencies drawn below still decide on which step a
    // packet lands. Drawing 10 and 20 ms instead of 5, 5, 10 and 20 made a run 66 ms instead
    // of 98 (the explore test's 15,000-odd runs), and every fault it hunts was found at the
    // same run or sooner.
    sc.tick_ms = d.pick(&[10, 10, 20, 20]);
    sc.network.latency_ms = d.pick(&[1, 5, 5, 20, 50]);
    sc.network.jitter_ms = if d.chance(25) { d.range(1, 20) } else { 0 };
    if d.chance(8) {
        sc.devices = d.range(2, 4) as u32;
    }
    let v5 = d.chance(50);
    device(d, &mut sc, v5);
    broker(d, &mut sc, v5);
    traffic(d, &mut sc, v5);
    faults(d, &mut sc, v5);
    // Drawn last, so that adding it left every earlier draw as it was.
    if d.chance(8) {
        access_control(d, &mut sc);
    }
    if !sc.workload.is_empty() && d.chance(8) {
        cancel(d, &mut sc);
    }
    if v5 && !sc.workload.is_empty() && d.chance(8) {
        observer_away(d, &mut sc);
    }
    if v5 && sc.device.clean_init == Some(true) && sc.device.clean == Some(false) && d.chance(40) {
        // The broker assigns the id (MQTT 5); the client keeps it for its reconnects, which
        // resume the session (with `clean`, an empty id changes nothing a run can see).
        sc.device.client_id = Some(String::new());
    }
    // Drawn last as well (a `disconnect` once everything is over, drawn above, stays alone).
    if sc.device.store.is_some() && !sc.fault.iter().any(|f| matches!(f, Fault::Disconnect { .. })) && d.chance(20) {
        disconnect_midway(d, &mut sc);
    }
    // Room to drain: enough for the slowest recovery the expectations allow for.
    let needed = super::expect::drain_deadline(&sc) - sc.duration_s;
    sc.drain_s = (needed + 10.0).ceil().max(10.0);
    sc
}

fn device(d: &mut Dice, sc: &mut Scenario, v5: bool) {
    let dev = &mut sc.device;
    dev.client_id = Some("sensor-1".into());
    dev.mqttv5 = Some(v5);
    let keepalive = d.pick(&[0, 5, 10, 10, 20, 30, 60]);
    dev.keepalive_secs = Some(keepalive);
    // The client insists on noticing a dead broker before the keepalive runs out.
    let response: Vec<u32> = [1000, 2000, 2000, 5000, 10_000].into_iter().filter(|r| keepalive == 0 || *r < u32::from(keepalive) * 1000).collect();
    dev.response_time_ms = Some(d.pick(&response));
    dev.clean_init = Some(d.chance(50));
    dev.clean = Some(d.chance(40));
    if !v5 {
        dev.max_repubs = Some(d.pick(&[0, 1, 2, 4]));
    }
    if v5 {
        dev.session_expiry_secs = Some(d.pick(&[0, 30, 3600, 3600]));
        dev.receive_maximum = Some(d.pick(&[1, 4, 16, 64]));
    }
    let inflight = d.pick(&[1, 2, 4, 16, 32]);
    dev.max_inflight = Some(inflight);
    dev.max_queued = Some(d.pick(&[16, 64, 1024]).max(u32::from(inflight)));
    dev.queue_len = Some(d.pick(&[2, 8, 64]));
    if d.chance(25) {
        dev.backpressure = Some(false);
    }
    if d.chance(30) {
        dev.app_take_every_ms = Some(d.pick(&[50, 500, 2500]));
    }
    let min = d.pick(&[100, 250, 1000]);
    dev.backoff_min_ms = Some(min);
    dev.backoff_max_ms = Some(min.max(d.pick(&[1000, 2000, 5000, 10_000])));
    if d.chance(10) {
        dev.resubscribe = Some(false);
    }
    if d.chance(30) {
        dev.will = Some(WillSetting {
            topic: "sensor/{device}/status".into(),
            payload: "offline".into(),
            qos: d.range(0, 2) as u8,
            retain: d.chance(30),
            delay_s: (v5 && d.chance(50)).then(|| d.pick(&[5, 20, 60])),
        });
    }
    if v5 && d.chance(10) {
        dev.auth_method = Some(Some("XOR-1".into()));
        dev.auth_secret = Some("s3cret".into());
    }
    if d.chance(20) {
        // A store is there to survive power cuts into a session that resumes.
        if d.chance(50) {
            dev.clean_init = Some(false);
            dev.clean = Some(false);
        }
        dev.store = Some(StoreSpec { capacity_kib: d.pick(&[12, 16, 64]), sector_kib: 4, write_bytes: d.pick(&[1, 4, 8]) });
    }
}

fn broker(d: &mut Dice, sc: &mut Scenario, v5: bool) {
    let b = &mut sc.broker;
    if d.chance(15) {
        b.persist_sessions = false;
    }
    if v5 {
        b.receive_maximum = d.pick(&[2, 5, 20, 20]);
        if d.chance(40) {
            b.topic_alias_maximum = d.pick(&[2, 10]);
        }
        if d.chance(15) {
            // Shorter than the client's, so that a client ignoring it is told off.
            b.server_keep_alive = Some(d.pick(&[3, 5, 8]));
        }
        if sc.device.auth_method.is_some() {
            b.auth_method = sc.device.auth_method.clone().flatten();
            b.auth_secret.clone_from(&sc.device.auth_secret);
        }
    }
    if d.chance(10) {
        b.max_queued_messages = d.pick(&[10, 100]);
    }
    if sc.devices == 1 && d.chance(10) {
        // A second broker to fail over to; the first one dies for good (see `faults`).
        sc.brokers = 2;
        sc.device.servers = Some(vec!["broker-2".into()]);
    }
}

fn traffic(d: &mut Dice, sc: &mut Scenario, v5: bool) {
    let span = sc.duration_s;
    for k in 0..d.pick(&[0, 1, 1, 1, 2]) {
        let every_ms = d.pick(&[10, 50, 200, 500, 1000]);
        let start_s = d.secs(0.0, span / 3.0);
        let room = ((span - start_s) * 1000.0 / every_ms as f64) as u64;
        sc.workload.push(Workload {
            topic: format!("sensor/{{device}}/data{k}"),
            qos: d.pick(&[0, 1, 1, 1, 2, 2]),
            start_s,
            every_ms,
            count: d.range(1, room.clamp(1, 400)),
            payload_bytes: d.pick(&[16, 32, 200]),
            retain: d.chance(5),
            message_expiry_s: (v5 && d.chance(10)).then(|| d.pick(&[2, 10, 60])),
            deadline_ms: d.chance(10).then(|| d.pick(&[500, 2000, 5000])),
        });
    }
    for k in 0..d.pick(&[0, 0, 1, 1, 2]) {
        let topic = format!("sensor/all/cmd{k}");
        let every_ms = d.pick(&[1, 20, 200, 1000]);
        let start_s = d.secs(1.0, span * 0.8);
        let room = ((span - start_s) * 1000.0 / every_ms as f64) as u64;
        let retain = d.chance(15);
        let qos = d.pick(&[0, 1, 1, 2, 2]);
        sc.inject.push(Inject {
            topic: topic.clone(),
            qos,
            start_s,
            every_ms,
            count: d.range(1, room.clamp(1, 300)),
            retain,
            message_expiry_s: (v5 && d.chance(10)).then(|| d.pick(&[2, 30])),
        });
        // Mostly the stream's own QoS, so that QoS 2 end to end comes up often.
        let sub_qos = if d.chance(60) { qos } else { d.pick(&[0, 1, 2]) };
        let mut sub = SubSpec { filter: topic, qos: sub_qos, no_local: false, retain_as_published: false, retain_handling: 0 };
        if v5 && retain && d.chance(50) {
            sub.retain_as_published = true;
        }
        sc.device.subscribe.push(sub);
    }
    if v5 && !sc.workload.is_empty() && sc.devices == 1 && d.chance(15) {
        // The device's own messages, which No Local keeps from coming back.
        sc.device.subscribe.push(SubSpec { filter: "sensor/0/data0".into(), qos: 1, no_local: true, retain_as_published: false, retain_handling: 0 });
    }
    if v5 && d.chance(10) {
        // A retained message from before the device subscribed, which Retain Handling 2 skips.
        sc.inject.push(Inject { topic: RETAINED_TOPIC.into(), qos: 1, start_s: 0.0, every_ms: 1, count: 1, retain: true, message_expiry_s: None });
        sc.device.subscribe.push(SubSpec { filter: RETAINED_TOPIC.into(), qos: 1, no_local: false, retain_as_published: false, retain_handling: 2 });
    }
}

/// The broker denies a topic: the device publishes to it (MQTT 5 answers 0x87), subscribes
/// to it (the SUBACK refuses it), or both.
fn access_control(d: &mut Dice, sc: &mut Scenario) {
    sc.broker.deny = vec![DENIED_FILTER.into()];
    let (publishes, subscribes) = match d.range(0, 2) {
        0 => (true, false),
        1 => (false, true),
        _ => (true, true),
    };
    if publishes {
        let start_s = d.secs(0.0, sc.duration_s / 3.0);
        sc.workload.push(Workload {
            topic: "sensor/{device}/denied".into(),
            qos: d.pick(&[0, 1, 2]),
            start_s,
            every_ms: d.pick(&[200, 1000]),
            count: d.range(1, 20),
            payload_bytes: 16,
            retain: false,
            message_expiry_s: None,
            deadline_ms: None,
        });
    }
    if subscribes {
        sc.device.subscribe.push(SubSpec {
            filter: DENIED_FILTER.into(),
            qos: d.pick(&[0, 1, 2]),
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        });
    }
}

/// The application cancels what it published on one topic, in the middle of an outage when
/// there is one (where publishes wait unsent), else at any time.
fn cancel(d: &mut Dice, sc: &mut Scenario) {
    let topic = sc.workload[d.range(0, sc.workload.len() as u64 - 1) as usize].topic.clone();
    let outage = sc.fault.iter().find_map(|f| if let Fault::LinkDown { at_s, for_s } = f { Some(at_s + for_s / 2.0) } else { None });
    let at_s = match outage {
        Some(mid) if d.chance(70) => (mid * 10.0).round() / 10.0,
        _ => d.secs(1.0, sc.duration_s * 0.8),
    };
    sc.fault.push(Fault::Cancel { at_s, topic });
}

/// The other subscriber goes away for a while, and the device's readings carry a Message
/// Expiry shorter than that (MQTT 5): the broker must drop the stale ones it queued.
fn observer_away(d: &mut Dice, sc: &mut Scenario) {
    let w = d.range(0, sc.workload.len() as u64 - 1) as usize;
    sc.workload[w].message_expiry_s = Some(d.pick(&[1, 2, 5]));
    let at_s = d.secs(1.0, sc.duration_s * 0.6);
    sc.fault.push(Fault::ObserverAway { at_s, for_s: d.pick(&[5.0, 10.0, 20.0]) });
}

/// Fault kinds the generator draws, with their weights.
const KINDS: &[(&str, u64)] = &[
    ("link_down", 10),
    ("link_flap", 4),
    ("silent_link", 5),
    ("latency", 3),
    ("broker_restart", 5),
    ("broker_down", 4),
    ("drop_acks", 6),
    ("delay_acks", 4),
    ("refuse", 3),
    ("stop_pings", 3),
    ("half_open", 3),
    ("power_cycle", 5),
    ("power_cut", 5),
    ("guest_trap", 2),
    ("dns_failure", 3),
    ("server_disconnect", 3),
    ("roam", 3),
    ("subscribe", 2),
    ("unsubscribe", 1),
];

fn faults(d: &mut Dice, sc: &mut Scenario, v5: bool) {
    let span = sc.duration_s;
    let mut n: u32 = d.pick(&[0, 1, 1, 2, 2, 3, 4, 5]);
    if sc.device.store.is_some() && d.chance(50) {
        let at_s = d.secs(1.0, span * 0.8);
        sc.fault.push(Fault::PowerCut { at_s, off_s: d.pick(&[1.0, 5.0]), during: CutDuring::Any, within_s: 2.0 });
        n = n.saturating_sub(1);
    }
    let total: u64 = KINDS.iter().map(|k| k.1).sum();
    for _ in 0..n {
        let mut roll = d.range(0, total - 1);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                if roll < *w {
                    true
                } else {
                    roll -= w;
                    false
                }
            })
            .map_or("link_down", |k| k.0);
        let at_s = d.secs(1.0, span * 0.8);
        let for_s = d.pick(&[0.5, 2.0, 5.0, 10.0, 20.0, 40.0]);
        let fault = match kind {
            "link_down" => Fault::LinkDown { at_s, for_s },
            "link_flap" => Fault::LinkFlap { at_s, count: d.range(2, 5) as u32, down_s: d.pick(&[0.5, 1.0, 3.0]), up_s: d.pick(&[0.5, 2.0, 5.0]) },
            "silent_link" => Fault::SilentLink { at_s, for_s },
            "latency" => Fault::Latency { at_s, for_s, latency_ms: d.pick(&[100, 300, 1000]), jitter_ms: d.pick(&[0, 50]) },
            "broker_restart" => Fault::BrokerRestart { at_s, down_s: d.pick(&[0.5, 2.0, 5.0]), persist: d.chance(70), broker: 1 },
            "broker_down" => Fault::BrokerDown { at_s, for_s, broker: 1 },
            "drop_acks" => Fault::DropAcks { at_s, packet: ack(d), count: d.range(1, 3) as u32 },
            "delay_acks" => Fault::DelayAcks { at_s, packet: ack(d), count: d.range(1, 3) as u32, ms: d.pick(&[500, 3000, 15_000]) },
            "refuse" => Fault::Refuse { at_s, for_s, code: if v5 { d.pick(&[0x87, 0x88, 0x89]) } else { d.pick(&[3, 5]) } },
            "stop_pings" => Fault::StopPings { at_s, for_s },
            "half_open" => Fault::HalfOpen { at_s, for_s },
            "power_cycle" => Fault::PowerCycle { at_s, off_s: d.pick(&[1.0, 5.0, 20.0, 40.0]) },
            "power_cut" if sc.device.store.is_some() => Fault::PowerCut {
                at_s,
                off_s: d.pick(&[1.0, 5.0]),
                during: d.pick(&[CutDuring::Any, CutDuring::Write, CutDuring::Erase, CutDuring::Sync]),
                within_s: 2.0,
            },
            "power_cut" => Fault::PowerCycle { at_s, off_s: 3.0 },
            "guest_trap" => Fault::GuestTrap { at_s },
            "dns_failure" => Fault::DnsFailure { at_s, for_s },
            "server_disconnect" if v5 => Fault::ServerDisconnect { at_s, reason: d.pick(&[0x8B, 0x89, 0x98]) },
            "server_disconnect" => Fault::StopPings { at_s, for_s },
            "roam" => Fault::Roam { at_s, gap_ms: d.pick(&[50, 300, 2000]) },
            "subscribe" => Fault::Subscribe { at_s, filter: "sensor/all/late".into(), qos: d.range(0, 2) as u8 },
            _ => match sc.device.subscribe.first() {
                Some(s) => Fault::Unsubscribe { at_s, filter: s.filter.clone() },
                None => Fault::LinkDown { at_s, for_s },
            },
        };
        sc.fault.push(fault);
    }
    if let Some(&Fault::Subscribe { at_s, .. }) = sc.fault.iter().find(|f| matches!(f, Fault::Subscribe { .. })) {
        // Something to receive on the topic subscribed late.
        sc.inject.push(Inject {
            topic: "sensor/all/late".into(),
            qos: 1,
            start_s: at_s + 1.0,
            every_ms: 500,
            count: 20,
            retain: false,
            message_expiry_s: None,
        });
    }
    if let Some(&Fault::PowerCycle { at_s, off_s }) = sc.fault.iter().find(|f| matches!(f, Fault::PowerCycle { off_s, .. } if *off_s >= 20.0))
        && d.chance(50)
    {
        // Sent while the device is off: a clean first connection must not get them.
        sc.inject.push(Inject {
            topic: STALE_TOPIC.into(),
            qos: 1,
            start_s: at_s + 2.0,
            every_ms: 500,
            count: ((off_s - 4.0) * 2.0) as u64,
            retain: false,
            message_expiry_s: None,
        });
        sc.device.subscribe.push(SubSpec { filter: STALE_TOPIC.into(), qos: 1, no_local: false, retain_as_published: false, retain_handling: 0 });
    }
    if sc.brokers > 1 {
        // The first broker dies for good: the device must move to the second.
        sc.fault.push(Fault::BrokerDown { at_s: d.secs(2.0, span * 0.5), for_s: 100_000.0, broker: 1 });
    }
    if d.chance(8) {
        let store = sc.device.store.is_some();
        sc.chaos = Some(Chaos {
            link_drops: d.range(1, 4) as u32,
            max_down_s: d.pick(&[5.0, 30.0]),
            broker_restarts: d.range(0, 1) as u32,
            power_cuts: if store { d.range(0, 2) as u32 } else { 0 },
        });
    }
    if d.chance(8) {
        // The application disconnects once everything else is over (the will must not fire).
        let at_s = super::expect::quiet_after(sc);
        sc.duration_s = sc.duration_s.max(at_s + 5.0);
        sc.fault.push(Fault::Disconnect { at_s });
    }
    // Inject streams past the end are pointless: pull them in.
    for i in &mut sc.inject {
        i.start_s = i.start_s.min(sc.duration_s - 1.0);
    }
}

/// The application disconnects midway (and publishes nothing more), and the device is
/// power-cycled later: with a store, `disconnect` keeps what is unacknowledged for the next
/// boot, which sends it.
fn disconnect_midway(d: &mut Dice, sc: &mut Scenario) {
    let at_s = d.secs(1.0, sc.duration_s * 0.6);
    let boot_at = at_s + d.pick(&[1.0, 5.0, 20.0]);
    sc.fault.push(Fault::Disconnect { at_s });
    sc.fault.push(Fault::PowerCycle { at_s: boot_at, off_s: d.pick(&[1.0, 5.0]) });
    sc.duration_s = sc.duration_s.max(boot_at + 15.0);
}

fn ack(d: &mut Dice) -> AckKind {
    d.pick(&[AckKind::Connack, AckKind::Puback, AckKind::Puback, AckKind::Pubrec, AckKind::Pubcomp, AckKind::Suback, AckKind::Pingresp])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every generated scenario is valid: written out, it reads back as itself.
    #[test]
    fn every_draw_is_a_valid_scenario_file() {
        for i in 0..3000 {
            let (sc, _) = scenario(7, i);
            let text = super::super::render::to_toml(&sc);
            let back = Scenario::parse(&text).unwrap_or_else(|e| panic!("draw {i}: {}\n{text}", e.0));
            assert_eq!(super::super::render::to_value(&back), super::super::render::to_value(&sc), "draw {i}:\n{text}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_scenarios() {
        for i in 0..50 {
            let a = super::super::render::to_toml(&scenario(3, i).0);
            let b = super::super::render::to_toml(&scenario(3, i).0);
            assert_eq!(a, b);
        }
        assert_ne!(super::super::render::to_toml(&scenario(3, 0).0), super::super::render::to_toml(&scenario(4, 0).0));
    }
}
