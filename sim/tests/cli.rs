//! The `mqtt-sim` binary as users run it: verdicts, exit codes, determinism across
//! processes, and the broken client being caught.

use std::path::Path;
use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mqtt-sim")).current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).args(args).output().expect("mqtt-sim runs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = sim(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn run_passes_and_reports_the_documented_json_fields() {
    let out = sim(&["run", "scenarios/wifi-dropout.toml", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "scenario",
        "seed",
        "passed",
        "qos1_published",
        "qos1_acked",
        "qos1_delivered",
        "qos1_lost",
        "duplicates",
        "reconnects",
        "sim_seconds",
        "wall_seconds",
        "trace_hash",
        "expectations",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["passed"], true);
    assert_eq!(v["qos1_lost"], 0);
}

#[test]
fn same_seed_gives_the_same_trace_across_processes_and_seeds_differ() {
    let a = json(&["run", "scenarios/chaos-link-drops.toml", "--seed", "7", "--json"]);
    let b = json(&["run", "scenarios/chaos-link-drops.toml", "--seed", "7", "--json"]);
    let c = json(&["run", "scenarios/chaos-link-drops.toml", "--seed", "8", "--json"]);
    assert_eq!(a["trace_hash"], b["trace_hash"]);
    assert_ne!(a["trace_hash"], c["trace_hash"]);
}

#[test]
fn trace_file_is_identical_byte_for_byte_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    for p in [&a, &b] {
        assert!(sim(&["run", "scenarios/slow-lossy-link.toml", "--seed", "3", "--trace", p.to_str().unwrap()]).status.success());
    }
    let (ta, tb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(!ta.is_empty());
    assert_eq!(ta, tb);
}

#[test]
fn broken_scenario_exits_2_naming_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "duration_s = 10\n\n[device]\nkeep_alive = 5\n").unwrap();
    let out = sim(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.contains("keep_alive"), "{err}");
    let out = sim(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_deliberately_broken_client_is_caught_with_a_replay_command() {
    let out = sim(&[
        "--client-fault",
        "drop-republish",
        "sweep",
        "scenarios/silent-link-edge-of-range.toml",
        "scenarios/broker-restart-persistent.toml",
        "--seeds",
        "1..3",
        "--jobs",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("replay: mqtt-sim --client-fault drop-republish run scenarios/"), "{text}");
    assert!(text.contains("no_qos1_loss"), "{text}");
}

#[test]
fn failing_expectation_exits_1_with_replay_command() {
    let out = sim(&["--client-fault", "drop-republish", "run", "scenarios/silent-link-edge-of-range.toml", "--seed", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replay: mqtt-sim --client-fault drop-republish run scenarios/silent-link-edge-of-range.toml --seed 2")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] no_qos1_loss"));
}

#[test]
fn component_command_writes_the_component_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("component.wasm");
    assert!(sim(&["component", "--out", out_path.to_str().unwrap()]).status.success());
    let bytes = std::fs::read(&out_path).unwrap();
    assert_eq!(bytes, mqtt_host::EMBEDDED_COMPONENT);
    // And the written file runs in the simulator.
    assert!(sim(&["--component", out_path.to_str().unwrap(), "run", "scenarios/wifi-drop-short-3s.toml"]).status.success());
}

#[test]
fn an_unknown_client_fault_is_bad_input_listing_the_known_ones() {
    let out = sim(&["--client-fault", "gremlins", "run", "scenarios/wifi-dropout.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gremlins") && err.contains("drop-republish"), "{err}");
}
