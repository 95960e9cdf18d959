//! Simulator speed: simulated seconds per wall second for a day-long single-device scenario
//! (keepalive 60 s, a QoS 1 reading every 5 s, a 60 s outage every hour), at two network
//! time resolutions, measured side by side in one run (median of `RUNS`).
//!
//! Run: `cargo bench -p mqtt-sim --bench speed` (`SPEED_RUNS=N` to change the count,
//! `SPEED_FLEETS=100,1000` for the fleet sizes).

use std::path::Path;

use mqtt_host::ComponentFile;
use mqtt_sim::runner;
use mqtt_sim::scenario::Scenario;

fn main() {
    let runs: usize = std::env::var("SPEED_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/day-long-hourly-outages.toml");
    let base = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let component = ComponentFile::embedded().expect("component");
    println!("{:<28} {:>10} {:>10} {:>12} {:>8}", "variant", "sim s", "wall s", "sim/wall", "lost");
    for (label, tick, latency) in [("tick 20 ms, latency 20 ms", 20, 20), ("tick 50 ms, latency 50 ms", 50, 50)] {
        let mut sc = base.clone();
        sc.tick_ms = tick;
        sc.network.latency_ms = latency;
        let mut ratios = Vec::new();
        let mut last = None;
        for _ in 0..runs {
            let o = runner::run(&sc, "day-long", 1, &component);
            ratios.push(o.sim_seconds / o.wall_seconds);
            last = Some(o);
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        let o = last.expect("at least one run");
        assert!(o.passed, "the benchmark scenario must still pass: {:?}", o.expectations);
        println!("{:<28} {:>10.0} {:>10.2} {:>11.0}x {:>8}", label, o.sim_seconds, o.sim_seconds / ratios[runs / 2], ratios[runs / 2], o.qos1_lost);
    }

    // A fleet: N devices behind one access point for one simulated hour (one 60 s outage).
    println!("\n{:<28} {:>10} {:>10} {:>22} {:>8}", "fleet, 1 simulated hour", "devices", "wall s", "device-hours/wall min", "lost");
    // SPEED_FLEETS=100,1000 for more sizes (1,000 devices takes many minutes on 2 cores).
    let fleets: Vec<u32> = std::env::var("SPEED_FLEETS").unwrap_or_else(|_| "100".into()).split(',').filter_map(|s| s.trim().parse().ok()).collect();
    for devices in fleets {
        let mut sc = base.clone();
        sc.devices = devices;
        sc.duration_s = 3600.0;
        sc.drain_s = 60.0;
        sc.tick_ms = 50;
        sc.network.latency_ms = 50;
        sc.fault.truncate(1);
        for w in &mut sc.workload {
            w.topic = "fleet/{device}/temp".into();
            w.count = 720;
        }
        let o = runner::run(&sc, "fleet", 1, &component);
        assert!(o.passed, "the fleet scenario must still pass: {:?}", o.expectations);
        let per_min = f64::from(devices) * (o.sim_seconds / 3600.0) / (o.wall_seconds / 60.0);
        println!("{:<28} {:>10} {:>10.1} {:>22.0} {:>8}", "", devices, o.wall_seconds, per_min, o.qos1_lost);
    }
}
