//! The scenario library as a regression suite: one test per file in `scenarios/` (found in
//! the directory at run time), each run for seeds 1..=50 (override with
//! `MQTT_SIM_TEST_SEEDS=N`). A failure prints the replay command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use libtest_mimic::{Arguments, Failed, Trial};

use mqtt_host::{ComponentFile, Watchdog};
use mqtt_sim::runner;
use mqtt_sim::scenario::Scenario;

fn component() -> &'static ComponentFile {
    static C: OnceLock<ComponentFile> = OnceLock::new();
    C.get_or_init(|| ComponentFile::embedded_with(Watchdog::Fuel).expect("embedded component"))
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// Seeds per scenario: 50, or `MQTT_SIM_TEST_SEEDS`. A value that would run nothing (0, or
/// not a number) is an error, not a green run that checked nothing.
fn seeds() -> u64 {
    match std::env::var("MQTT_SIM_TEST_SEEDS") {
        Err(_) => 50,
        Ok(s) => match s.trim().parse() {
            Ok(n) if n >= 1 => n,
            _ => panic!("MQTT_SIM_TEST_SEEDS={s:?}: must be a whole number of seeds, at least 1"),
        },
    }
}

/// Runs one scenario file for every seed; the error lists each failing seed with its
/// failed expectations and the replay command.
fn run_file(name: &str) -> Result<(), Failed> {
    let path = scenarios_dir().join(format!("{name}.toml"));
    let sc = Scenario::load(&path).map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for seed in 1..=seeds() {
        let o = runner::run(&sc, name, seed, component());
        if !o.passed {
            let failed: Vec<String> = o.expectations.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect();
            failures.push(format!("seed {seed}: {}\n    replay: mqtt-sim run scenarios/{name}.toml --seed {seed}", failed.join("; ")));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{name} failed:\n  {}", failures.join("\n  ")).into())
    }
}

/// Every `*.toml` in `scenarios/`, by file stem, sorted: the library is the directory, so a
/// new file is tested without being listed anywhere.
fn scenario_names() -> Vec<String> {
    let files = mqtt_sim::scenario::files(&[scenarios_dir()]).expect("scenarios/ is readable");
    files.iter().filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect()
}

/// libtest-mimic instead of `#[test]` functions: one test per scenario file, generated from
/// the directory (the standard harness cannot make tests at run time, and a hand-kept list
/// of files is one a new scenario can be forgotten from).
fn main() -> ExitCode {
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = scenario_names().into_iter().map(|name| Trial::test(format!("scenario::{name}"), move || run_file(&name))).collect();
    trials.push(Trial::test("every_scenario_file_is_in_the_readme_table", || {
        let readme = std::fs::read_to_string(scenarios_dir().join("README.md")).map_err(|e| e.to_string())?;
        let missing: Vec<String> = scenario_names().into_iter().filter(|n| !readme.contains(&format!("| `{n}.toml` |"))).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("add a row to the table in scenarios/README.md for: {}", missing.join(", ")).into())
        }
    }));
    // libtest-mimic turns a panic into a failed test, as libtest does.
    trials.push(Trial::test("a_fleet_on_shared_hosts_reaches_the_same_verdicts", || {
        a_fleet_on_shared_hosts_reaches_the_same_verdicts();
        Ok(())
    }));
    libtest_mimic::run(&args, trials).exit_code()
}

/// Devices sharing simulated hosts (`devices_per_host`, what makes large fleets affordable)
/// reach the same verdicts and counts as a host per device, and stay deterministic.
fn a_fleet_on_shared_hosts_reaches_the_same_verdicts() {
    let path = scenarios_dir().join("fleet-ap-reboot.toml");
    let alone = Scenario::load(&path).unwrap();
    let mut shared = alone.clone();
    shared.devices_per_host = 4; // 10 devices: hosts of 4, 4 and 2
    for seed in 1..=3 {
        let a = runner::run(&alone, "alone", seed, component());
        let s = runner::run(&shared, "shared", seed, component());
        assert!(a.passed && s.passed, "seed {seed}: {:?} / {:?}", a.expectations, s.expectations);
        assert_eq!(
            (s.qos1_published, s.qos1_delivered, s.qos1_lost, s.reconnects),
            (a.qos1_published, a.qos1_delivered, a.qos1_lost, a.reconnects),
            "seed {seed}"
        );
        let again = runner::run(&shared, "shared", seed, component());
        assert_eq!(again.trace_hash, s.trace_hash, "seed {seed}: shared hosts must replay byte for byte");
    }
    let text = std::fs::read_to_string(&path).unwrap().replace("devices = 10", "devices = 10\ndevices_per_host = 11");
    let e = Scenario::parse(&text).unwrap_err();
    assert!(e.0.contains("devices_per_host = 11"), "{}", e.0);
}
