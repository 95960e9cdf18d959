//! The simulator: how fast it runs (one device for a day; fleets), and how fast the client
//! recovers inside it with its default configuration.

use std::time::Duration;

use mqtt_host::ComponentFile;
use mqtt_sim::runner;
use mqtt_sim::scenario::Scenario;
use serde_json::Value;

/// The day-long benchmark scenario (keepalive 60 s, QoS 1 every 5 s, hourly 60 s outages).
pub const DAY_LONG: &str = include_str!("../day-long-hourly-outages.toml");

pub struct Speed {
    pub single: Vec<DayRow>,
    pub fleets: Vec<FleetRow>,
}

pub struct DayRow {
    pub tick_ms: u64,
    pub sim_s: f64,
    /// Median simulated / wall time of the scenario.
    pub ratio: f64,
    /// Median simulated / wall time of turmoil alone: the same hosts and ticks, nothing
    /// running on them. The client's and the simulator's share is the difference.
    pub floor: f64,
}

pub struct FleetRow {
    pub devices: u32,
    pub per_host: u32,
    pub hours: f64,
    pub wall_s: f64,
    pub device_hours_per_min: f64,
    pub lost: u64,
    pub broker_dropped: u64,
}

/// A fleet to run: devices, simulated hours, devices per simulated host.
pub type Fleet = (u32, f64, u32);

pub fn speed(component: &ComponentFile, runs: usize, fleets: &[Fleet], day_s: f64) -> anyhow::Result<Speed> {
    let base = Scenario::parse(DAY_LONG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut single = Vec::new();
    for tick in [20, 50] {
        let mut sc = base.clone();
        sc.tick_ms = tick;
        sc.network.latency_ms = tick;
        sc.duration_s = day_s;
        sc.fault.retain(|f| f.window().0 < day_s);
        for w in &mut sc.workload {
            w.count = (day_s * 1000.0 / w.every_ms as f64) as u64;
        }
        let (mut ratios, mut floors) = (Vec::new(), Vec::new());
        let mut sim_s = 0.0;
        // Alternated, so a noisy neighbour slows both alike.
        for _ in 0..runs {
            let o = runner::run(&sc, "day-long", 1, component);
            anyhow::ensure!(o.passed, "the day-long scenario failed: {:?}", o.expectations);
            ratios.push(o.sim_seconds / o.wall_seconds);
            sim_s = o.sim_seconds;
            floors.push(turmoil_alone(sim_s, tick)?);
        }
        single.push(DayRow { tick_ms: tick, sim_s, ratio: crate::median(ratios), floor: crate::median(floors) });
    }
    let mut fleet_rows = Vec::new();
    for &(devices, hours, per_host) in fleets {
        let mut sc = base.clone();
        sc.devices = devices;
        sc.devices_per_host = per_host.clamp(1, devices);
        // The observer takes the whole fleet's traffic: a broker window and queue big enough
        // that it keeps up, so every message is checked end to end.
        sc.broker.receive_maximum = 1000;
        sc.broker.max_queued_messages = 1_000_000;
        sc.duration_s = hours * 3600.0;
        sc.drain_s = 60.0;
        sc.tick_ms = 50;
        sc.network.latency_ms = 50;
        // One 60 s outage for the whole fleet, early on.
        sc.fault.truncate(1);
        if let Some(mqtt_sim::scenario::Fault::LinkDown { at_s, .. }) = sc.fault.first_mut() {
            *at_s = (sc.duration_s / 2.0).min(*at_s);
        }
        for w in &mut sc.workload {
            w.topic = "fleet/{device}/temp".into();
            w.count = (sc.duration_s * 1000.0 / w.every_ms as f64) as u64;
        }
        let o = runner::run(&sc, "fleet", 1, component);
        anyhow::ensure!(o.passed, "the {devices}-device fleet failed: {:?}", o.expectations);
        let device_hours = f64::from(devices) * o.sim_seconds / 3600.0;
        fleet_rows.push(FleetRow {
            devices,
            per_host: sc.devices_per_host,
            hours: o.sim_seconds / 3600.0,
            wall_s: o.wall_seconds,
            device_hours_per_min: device_hours / (o.wall_seconds / 60.0),
            lost: o.qos1_lost,
            broker_dropped: o.broker_dropped,
        });
    }
    Ok(Speed { single, fleets: fleet_rows })
}

/// Simulated / wall time of turmoil stepping the day-long run's hosts (the broker's, which
/// the observer shares, and the device's) with nothing running on them: the floor no client
/// or broker model can go below.
fn turmoil_alone(sim_s: f64, tick_ms: u64) -> anyhow::Result<f64> {
    let mut sim = turmoil::Builder::new().simulation_duration(Duration::from_secs_f64(sim_s + 60.0)).tick_duration(Duration::from_millis(tick_ms)).build();
    for host in ["broker", "device"] {
        sim.host(host, || async {
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    let started = std::time::Instant::now();
    while sim.elapsed().as_secs_f64() < sim_s {
        sim.step().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(sim_s / started.elapsed().as_secs_f64())
}

/// Recovery of the default client in the simulator (5 ms one-way latency), over seeds.
pub struct Recovery {
    pub seeds: usize,
    /// Link back → first PUBACK, ms, one entry per link return per seed.
    pub link_to_puback_ms: Vec<u64>,
    /// Link silent (held, WiFi still up) → client reports down, ms.
    pub silent_to_down_ms: Vec<u64>,
    /// Silent link healed → first PUBACK, ms.
    pub silent_end_to_puback_ms: Vec<u64>,
}

const RECOVERY: &str = r#"
description = "recovery of the default client: two link drops and a silent link"
duration_s = 240
drain_s = 60
[device]
client_id = "recovery"
[[workload]]
topic = "recovery/seq"
qos = 1
every_ms = 200
count = 1200
[[fault]]
kind = "link_down"
at_s = 20
for_s = 10
[[fault]]
kind = "link_down"
at_s = 60
for_s = 40
[[fault]]
kind = "silent_link"
at_s = 140
for_s = 60
[expect]
no_qos1_loss = true
"#;

pub fn recovery(component: &ComponentFile, seeds: u64) -> anyhow::Result<Recovery> {
    let sc = Scenario::parse(RECOVERY).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut r = Recovery { seeds: seeds as usize, link_to_puback_ms: Vec::new(), silent_to_down_ms: Vec::new(), silent_end_to_puback_ms: Vec::new() };
    for seed in 1..=seeds {
        let o = runner::run(&sc, "recovery", seed, component);
        anyhow::ensure!(o.passed, "recovery scenario, seed {seed}: {:?}", o.expectations);
        let events: Vec<Value> = o.trace.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let t = |v: &Value| v["t_ms"].as_u64().unwrap_or(0);
        let first_after = |after: u64, what: &str| {
            events
                .iter()
                .filter(|v| v["who"] != "timeline" && v["who"] != "broker" && v["who"] != "observer" && v["what"] == what && t(v) >= after)
                .map(t)
                .next()
        };
        let steps: Vec<(u64, String)> = events.iter().filter(|v| v["what"] == "fault").map(|v| (t(v), v["step"].as_str().unwrap_or("").to_string())).collect();
        let link_downs: Vec<u64> = steps.iter().filter(|(_, s)| s == "Link(LinkState::Down)").map(|(at, _)| *at).collect();
        for (at, step) in &steps {
            match step.as_str() {
                "Link(LinkState::Up)" => r.link_to_puback_ms.extend(first_after(*at, "published").map(|p| p - at)),
                // A hold without a link drop at the same instant is the silent link.
                "Hold" if !link_downs.contains(at) => r.silent_to_down_ms.extend(first_after(*at, "down").map(|d| d - at)),
                "Release" if !steps.iter().any(|(t2, s2)| t2 == at && s2 == "Link(LinkState::Up)") => {
                    r.silent_end_to_puback_ms.extend(first_after(*at, "published").map(|p| p - at))
                }
                _ => {}
            }
        }
    }
    Ok(r)
}
