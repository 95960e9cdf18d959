//! The scenario library as a regression suite: one test per file in `scenarios/`, each run
//! for seeds 1..=50 (override with `MQTT_SIM_TEST_SEEDS=N`). A failure prints the replay
//! command.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mqtt_host::ComponentFile;
use mqtt_sim::runner;
use mqtt_sim::scenario::Scenario;

fn component() -> &'static ComponentFile {
    static C: OnceLock<ComponentFile> = OnceLock::new();
    C.get_or_init(|| ComponentFile::embedded().expect("embedded component"))
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn seeds() -> u64 {
    std::env::var("MQTT_SIM_TEST_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50)
}

fn run_file(name: &str) {
    let path = scenarios_dir().join(format!("{name}.toml"));
    let sc = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    for seed in 1..=seeds() {
        let o = runner::run(&sc, name, seed, component());
        if !o.passed {
            let failed: Vec<String> = o.expectations.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect();
            failures.push(format!("seed {seed}: {}\n    replay: mqtt-sim run scenarios/{name}.toml --seed {seed}", failed.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{name} failed:\n  {}", failures.join("\n  "));
}

macro_rules! scenario {
    ($test:ident, $file:literal) => {
        #[test]
        fn $test() {
            run_file($file);
        }
    };
}

const LISTED: &[&str] = &[
    "ap-roaming-gap",
    "broker-refuses-code3-then-accepts",
    "broker-refuses-code5-then-accepts",
    "broker-restart-persistent",
    "broker-restart-sessions-lost",
    "broker-stops-answering-pings",
    "chaos-link-drops",
    "clean-init-discards-stale-session",
    "clean-session-loses-while-away",
    "dns-failure",
    "fleet-ap-reboot",
    "half-open-after-broker-crash",
    "incoming-burst-backpressure",
    "incoming-burst-overflows-queue",
    "last-will-on-power-cut",
    "last-will-suppressed-by-disconnect",
    "link-flapping",
    "lost-connack",
    "lost-puback-v311-republish-dup",
    "lost-puback-v5-resend-on-reconnect",
    "lost-suback",
    "many-qos1-through-outage",
    "power-cycle-mid-publish",
    "silent-link-edge-of-range",
    "slow-broker-late-acks",
    "slow-lossy-link",
    "subscribe-during-outage",
    "unclean-session-receives-while-away",
    "unsubscribe-during-outage",
    "v5-enhanced-auth-through-outages",
    "v5-enhanced-auth-wrong-secret-refused",
    "v5-message-expiry-bounds-backlog",
    "v5-qos2-exactly-once-through-outage",
    "v5-qos2-exactly-once-to-device",
    "v5-receive-maximum-burst",
    "v5-server-disconnect",
    "v5-session-expiry-bounds-backlog",
    "v5-topic-aliases-after-reconnect",
    "wifi-drop-long-will-fires",
    "wifi-drop-short-3s",
    "wifi-dropout",
];

scenario!(ap_roaming_gap, "ap-roaming-gap");
scenario!(broker_refuses_code3_then_accepts, "broker-refuses-code3-then-accepts");
scenario!(broker_refuses_code5_then_accepts, "broker-refuses-code5-then-accepts");
scenario!(broker_restart_persistent, "broker-restart-persistent");
scenario!(broker_restart_sessions_lost, "broker-restart-sessions-lost");
scenario!(broker_stops_answering_pings, "broker-stops-answering-pings");
scenario!(chaos_link_drops, "chaos-link-drops");
scenario!(clean_init_discards_stale_session, "clean-init-discards-stale-session");
scenario!(clean_session_loses_while_away, "clean-session-loses-while-away");
scenario!(dns_failure, "dns-failure");
scenario!(fleet_ap_reboot, "fleet-ap-reboot");
scenario!(half_open_after_broker_crash, "half-open-after-broker-crash");
scenario!(incoming_burst_backpressure, "incoming-burst-backpressure");
scenario!(incoming_burst_overflows_queue, "incoming-burst-overflows-queue");
scenario!(last_will_on_power_cut, "last-will-on-power-cut");
scenario!(last_will_suppressed_by_disconnect, "last-will-suppressed-by-disconnect");
scenario!(link_flapping, "link-flapping");
scenario!(lost_connack, "lost-connack");
scenario!(lost_puback_v311_republish_dup, "lost-puback-v311-republish-dup");
scenario!(lost_puback_v5_resend_on_reconnect, "lost-puback-v5-resend-on-reconnect");
scenario!(lost_suback, "lost-suback");
scenario!(many_qos1_through_outage, "many-qos1-through-outage");
scenario!(power_cycle_mid_publish, "power-cycle-mid-publish");
scenario!(silent_link_edge_of_range, "silent-link-edge-of-range");
scenario!(slow_broker_late_acks, "slow-broker-late-acks");
scenario!(slow_lossy_link, "slow-lossy-link");
scenario!(subscribe_during_outage, "subscribe-during-outage");
scenario!(unclean_session_receives_while_away, "unclean-session-receives-while-away");
scenario!(unsubscribe_during_outage, "unsubscribe-during-outage");
scenario!(v5_enhanced_auth_through_outages, "v5-enhanced-auth-through-outages");
scenario!(v5_enhanced_auth_wrong_secret_refused, "v5-enhanced-auth-wrong-secret-refused");
scenario!(v5_message_expiry_bounds_backlog, "v5-message-expiry-bounds-backlog");
scenario!(v5_qos2_exactly_once_through_outage, "v5-qos2-exactly-once-through-outage");
scenario!(v5_qos2_exactly_once_to_device, "v5-qos2-exactly-once-to-device");
scenario!(v5_receive_maximum_burst, "v5-receive-maximum-burst");
scenario!(v5_server_disconnect, "v5-server-disconnect");
scenario!(v5_session_expiry_bounds_backlog, "v5-session-expiry-bounds-backlog");
scenario!(v5_topic_aliases_after_reconnect, "v5-topic-aliases-after-reconnect");
scenario!(wifi_drop_long_will_fires, "wifi-drop-long-will-fires");
scenario!(wifi_drop_short_3s, "wifi-drop-short-3s");
scenario!(wifi_dropout, "wifi-dropout");

#[test]
fn every_scenario_file_has_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, LISTED, "add a scenario! line for each new file in scenarios/");
}

/// Devices sharing simulated hosts (`devices_per_host`, what makes large fleets affordable)
/// reach the same verdicts and counts as a host per device, and stay deterministic.
#[test]
fn a_fleet_on_shared_hosts_reaches_the_same_verdicts() {
    let path = scenarios_dir().join("fleet-ap-reboot.toml");
    let alone = Scenario::load(&path).unwrap();
    let mut shared = alone.clone();
    shared.devices_per_host = 4; // 10 devices: hosts of 4, 4 and 2
    for seed in 1..=3 {
        let a = runner::run(&alone, "alone", seed, component());
        let s = runner::run(&shared, "shared", seed, component());
        assert!(a.passed && s.passed, "seed {seed}: {:?} / {:?}", a.expectations, s.expectations);
        assert_eq!((s.qos1_published, s.qos1_delivered, s.qos1_lost, s.reconnects), (a.qos1_published, a.qos1_delivered, a.qos1_lost, a.reconnects), "seed {seed}");
        let again = runner::run(&shared, "shared", seed, component());
        assert_eq!(again.trace_hash, s.trace_hash, "seed {seed}: shared hosts must replay byte for byte");
    }
    let text = std::fs::read_to_string(&path).unwrap().replace("devices = 10", "devices = 10\ndevices_per_host = 11");
    let e = Scenario::parse(&text).unwrap_err();
    assert!(e.0.contains("devices_per_host = 11"), "{}", e.0);
}
