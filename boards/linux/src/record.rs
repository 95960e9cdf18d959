//! `mqtt-board record`: watch an interface's link and write what it did as a scenario file,
//! so an outage seen on a real board can be replayed in the simulator (`mqtt-sim run`).
//!
//! The link is read from sysfs every [`SAMPLE_EVERY`] rather than through a netlink socket:
//! it needs no extra crate or unsafe code, and 20 ms is finer than anything the client's
//! reconnect logic (or the simulator's default 5 ms tick over seconds-long outages) can tell
//! apart. What the link state cannot show (a link that is up but silent, a broker restart) is
//! not in the recording; add those faults to the file by hand.

use serde::Serialize;
use std::time::Duration;

use mqtt_host::LinkState;

use crate::LinkMonitor;

pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// The link going down or coming back, `at_ms` after the recording started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub at_ms: u64,
    pub up: bool,
}

/// What was observed on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub iface: String,
    /// Link state when the recording started.
    pub initially_up: bool,
    pub transitions: Vec<Transition>,
    pub length_ms: u64,
}

impl Recording {
    /// The outages as (start, length) in ms: each down to the next up, or to the end.
    pub fn outages(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut down_since = (!self.initially_up).then_some(0);
        for t in &self.transitions {
            match (t.up, down_since) {
                (false, None) => down_since = Some(t.at_ms),
                (true, Some(s)) => {
                    out.push((s, t.at_ms - s));
                    down_since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = down_since {
            out.push((s, self.length_ms.saturating_sub(s)));
        }
        out
    }
}

/// Samples the link until `stop` resolves or `limit` passes, printing each transition.
pub async fn record(iface: &str, limit: Option<Duration>, stop: impl std::future::Future<Output = ()>) -> Recording {
    let monitor = LinkMonitor::new(Some(iface.to_string()));
    if let Some(why) = monitor.missing() {
        eprintln!("warning: --iface {iface}: {why}");
    }
    let up = |m: &LinkMonitor| m.state() == LinkState::Up;
    let start = tokio::time::Instant::now();
    let mut rec = Recording { iface: iface.to_string(), initially_up: up(&monitor), transitions: Vec::new(), length_ms: 0 };
    let mut last = rec.initially_up;
    eprintln!("recording link state of {iface} (initially {})", if last { "up" } else { "down" });
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let at_ms = start.elapsed().as_millis() as u64;
        if limit.is_some_and(|l| start.elapsed() >= l) {
            break;
        }
        let now = up(&monitor);
        if now != last {
            eprintln!("{:>9.2} s  link {}", at_ms as f64 / 1000.0, if now { "up" } else { "down" });
            rec.transitions.push(Transition { at_ms, up: now });
            last = now;
        }
    }
    rec.length_ms = start.elapsed().as_millis() as u64;
    rec
}

/// How the replay's device behaves: the settings the board ran with.
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    pub publish_every_ms: u64,
    pub keepalive_s: u16,
    pub response_time_ms: u32,
    pub clean: bool,
}

/// The part of the scenario schema (`scenarios/README.md`) a recording fills, serialised with
/// serde. The simulator's own scenario types are not used: the board does not link the
/// simulator (the test below parses the result with it); the `[device]` table is the one
/// settings schema both share.
#[derive(Serialize)]
struct RecordedScenario {
    description: String,
    seeds: Vec<u64>,
    duration_s: f64,
    drain_s: f64,
    device: mqtt_host::Settings,
    workload: Vec<RecordedWorkload>,
    fault: Vec<RecordedOutage>,
    expect: RecordedExpect,
}

#[derive(Serialize)]
struct RecordedWorkload {
    topic: String,
    qos: u8,
    every_ms: u64,
    count: u64,
}

#[derive(Serialize)]
struct RecordedOutage {
    kind: &'static str,
    at_s: f64,
    for_s: f64,
}

#[derive(Serialize)]
struct RecordedExpect {
    no_qos1_loss: bool,
    in_order: bool,
}

/// The recording as a scenario file: a QoS 1 stream across the whole recording, one
/// `link_down` per outage, and the QoS 1 expectations.
pub fn scenario_toml(rec: &Recording, s: &ReplaySettings) -> String {
    let secs = |ms: u64| (ms as f64 / 1000.0 * 1000.0).round() / 1000.0;
    let duration_ms = rec.length_ms.max(1000);
    let every = s.publish_every_ms.max(1);
    let device = mqtt_host::Settings {
        client_id: Some(format!("recorded-{}", rec.iface)),
        keepalive_secs: Some(s.keepalive_s),
        response_time_ms: Some(s.response_time_ms),
        clean_init: Some(true),
        clean: Some(s.clean),
        ..mqtt_host::Settings::default()
    };
    let scenario = RecordedScenario {
        description: format!("link outages recorded on {}", rec.iface),
        seeds: vec![1, 2, 3, 4, 5],
        duration_s: secs(duration_ms),
        drain_s: 120.0,
        device,
        workload: vec![RecordedWorkload { topic: "recorded/seq".into(), qos: 1, every_ms: every, count: (duration_ms / every).max(1) }],
        // A link that went down in the recording's last millisecond has no outage to replay
        // (and the simulator refuses a fault that lasts no time).
        fault: rec
            .outages()
            .into_iter()
            .filter(|(_, len)| *len > 0)
            .map(|(at, len)| RecordedOutage { kind: "link_down", at_s: secs(at), for_s: secs(len) })
            .collect(),
        expect: RecordedExpect { no_qos1_loss: true, in_order: true },
    };
    let header = format!(
        "# Recorded by `mqtt-board record --iface {}`: the link transitions the board observed,\n# replayed under a QoS 1 stream. A link that stayed up but went silent, or a broker\n# restart, is not visible in link state: add those faults by hand.\n",
        rec.iface
    );
    header + &toml::to_string(&scenario).expect("a recorded scenario serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(initially_up: bool, transitions: &[(u64, bool)], length_ms: u64) -> Recording {
        Recording { iface: "wlan0".into(), initially_up, transitions: transitions.iter().map(|&(at_ms, up)| Transition { at_ms, up }).collect(), length_ms }
    }

    #[test]
    fn outages_run_from_down_to_up_or_to_the_end() {
        assert_eq!(rec(true, &[(5000, false), (10_000, true), (20_000, false)], 25_000).outages(), vec![(5000, 5000), (20_000, 5000)]);
        assert_eq!(rec(false, &[(3000, true)], 9000).outages(), vec![(0, 3000)]);
        assert!(rec(true, &[], 9000).outages().is_empty());
    }

    #[test]
    fn the_written_scenario_is_one_the_simulator_accepts() {
        let r = rec(true, &[(5020, false), (10_040, true)], 30_000);
        let text = scenario_toml(&r, &ReplaySettings { publish_every_ms: 100, keepalive_s: 10, response_time_ms: 2000, clean: false });
        let sc = mqtt_sim::scenario::Scenario::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(sc.workload[0].count, 300);
        match &sc.fault[..] {
            [mqtt_sim::scenario::Fault::LinkDown { at_s, for_s }] => assert_eq!((*at_s, *for_s), (5.02, 5.02)),
            other => panic!("{other:?}"),
        }
        assert_eq!(sc.expect.no_qos1_loss, Some(true));
        assert_eq!((sc.device.keepalive_secs, sc.device.clean), (Some(10), Some(false)));
        assert!(text.starts_with("# Recorded by `mqtt-board record --iface wlan0`"), "{text}");
        // Down as the recording ended: nothing to replay, and still a file the simulator takes.
        let r = rec(true, &[(5020, false), (10_040, true), (30_000, false)], 30_000);
        let text = scenario_toml(&r, &ReplaySettings { publish_every_ms: 100, keepalive_s: 10, response_time_ms: 2000, clean: false });
        let sc = mqtt_sim::scenario::Scenario::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(sc.fault.len(), 1, "{text}");
    }
}
