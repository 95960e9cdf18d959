//! Proof that the scenario library can fail: every deliberate client fault of the test-only
//! build (`mqtt_protocol::TestFault`) must be caught by at least one scenario, except the
//! ones listed in `KNOWN_UNCAUGHT` (reported in scenarios/README.md as behaviours no scenario
//! pins). A fault that becomes caught, or one that stops being caught, fails this test so the
//! list and the README stay true. Whether a fault is caught is all this needs, so each
//! fault's search stops at the first scenario that catches it (under half the time of
//! running them all), trying the cheapest scenarios first; `mqtt-sim faults` prints the
//! whole matrix.

use std::collections::BTreeMap;
use std::path::Path;

use mqtt_host::ComponentFile;
use mqtt_protocol::TestFault;
use mqtt_sim::runner;
use mqtt_sim::scenario::Scenario;

/// Faults no scenario catches yet (none today; scenarios/README.md lists the behaviours
/// that have no fault modelled at all).
const KNOWN_UNCAUGHT: &[&str] = &[];

/// What a run costs, roughly: turmoil's fixed cost per host per step is most of it.
fn steps(sc: &Scenario) -> u64 {
    let device_hosts = sc.devices.div_ceil(sc.devices_per_host.max(1));
    sc.total_ms() / sc.tick_ms * u64::from(device_hosts + sc.brokers)
}

#[test]
fn every_client_fault_is_caught_by_some_scenario() {
    let component = ComponentFile::faulty().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = mqtt_sim::scenario::files(&[dir]).unwrap();
    let mut scenarios: Vec<(String, Scenario)> =
        files.iter().map(|f| (f.file_stem().unwrap().to_string_lossy().into_owned(), Scenario::load(f).unwrap())).collect();
    scenarios.sort_by_key(|(name, sc)| (steps(sc), name.clone()));
    // The correct client in the test-faults build passes everything (the build itself is
    // sound). A thread per scenario, as per fault below: the runs are independent.
    std::thread::scope(|scope| {
        let runs: Vec<_> = scenarios.iter().map(|(name, sc)| (name, scope.spawn(|| runner::run(sc, name, 1, &component)))).collect();
        for (name, run) in runs {
            let o = run.join().unwrap();
            assert!(o.passed, "{name} fails with no fault selected: {:?}", o.expectations);
        }
    });
    let mut caught: BTreeMap<&str, Option<String>> = BTreeMap::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = TestFault::ALL
            .iter()
            .map(|(fault, _)| {
                let (component, scenarios) = (&component, &scenarios);
                scope.spawn(move || {
                    let by = scenarios
                        .iter()
                        .find(|(name, sc)| (1..=2).any(|seed| !runner::run_with_fault(sc, name, seed, component, Some(fault)).passed))
                        .map(|(name, _)| name.clone());
                    (*fault, by)
                })
            })
            .collect();
        for h in handles {
            let (fault, by) = h.join().unwrap();
            caught.insert(fault, by);
        }
    });
    let mut wrong = Vec::new();
    for (fault, by) in &caught {
        eprintln!("{fault}: {}", by.as_deref().map_or("NOT CAUGHT".to_string(), |name| format!("caught by {name}")));
        let expected_uncaught = KNOWN_UNCAUGHT.contains(fault);
        if by.is_none() != expected_uncaught {
            wrong.push(format!("{fault}: caught by {by:?}, listed as uncaught: {expected_uncaught}"));
        }
    }
    assert!(wrong.is_empty(), "the fault matrix changed (update KNOWN_UNCAUGHT and scenarios/README.md):\n{}", wrong.join("\n"));
}
