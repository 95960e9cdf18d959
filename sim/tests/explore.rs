//! Proof that `mqtt-sim explore` finds what breaks a client: for every deliberate client
//! fault (`mqtt_protocol::TestFault`), exploring against the faulty client finds a failing
//! scenario within a budget, and the shrunk file, read back from its text, fails with that
//! fault on the same expectation and passes with the shipped client. It also shows that the
//! search replays: the same seed finds the same run and shrinks it to the same file.
//!
//! One trial per fault (libtest-mimic), each on one thread; the figures (runs and wall
//! time to the find, faults and lines of the shrunk file) go to stderr.

use std::time::Instant;

use libtest_mimic::{Arguments, Failed, Trial};
use mqtt_host::{ComponentFile, Watchdog};
use mqtt_protocol::TestFault;
use mqtt_sim::explore::{self, Budget, Options};
use mqtt_sim::runner;
use mqtt_sim::scenario::Scenario;
use mqtt_sim::shard::Shard;

/// Runs to search before giving up on a fault, and runs one shrink may spend.
const FIND_BUDGET: u64 = 4000;
const SHRINK_BUDGET: usize = 60;

fn options(seed: u64) -> Options {
    Options { seed, budget: Budget::Runs(FIND_BUDGET), jobs: 1, shard: Shard::WHOLE, shrink_runs: SHRINK_BUDGET, first_only: true }
}

fn hunt(fault: &'static str) -> Result<(), Failed> {
    let faulty = ComponentFile::faulty().map_err(|e| e.to_string())?;
    let shipped = ComponentFile::embedded_with(Watchdog::Fuel).map_err(|e| e.to_string())?;
    let run = |sc: &Scenario, seed: u64| runner::run_with_fault(sc, "explore", seed, &faulty, Some(fault));
    let started = Instant::now();
    let summary = explore::explore(&options(1), &run, &explore::Watch::none());
    let Some(found) = summary.findings.first() else {
        return Err(format!("{fault}: nothing found in {} runs", summary.runs).into());
    };
    let text = found.file(&format!("mqtt-sim --client-fault {fault} explore --seed 1"));
    let file = Scenario::parse(&text).map_err(|e| format!("{fault}: the shrunk file does not parse: {}\n{text}", e.0))?;
    let with_fault = runner::run_with_fault(&file, "shrunk", found.seed, &faulty, Some(fault));
    if !with_fault.expectations.iter().any(|c| c.name == found.failed && !c.passed) {
        return Err(format!("{fault}: the shrunk file no longer fails {}:\n{text}", found.failed).into());
    }
    let correct = runner::run(&file, "shrunk", found.seed, &shipped);
    if !correct.passed {
        return Err(format!("{fault}: the shipped client fails the shrunk file too ({:?}):\n{text}", correct.expectations).into());
    }
    eprintln!(
        "{fault:<28} found by {:<38} at run {:>5} ({:>5.1} s); shrunk to {} faults, {:>2} lines; {:.1} s in all",
        found.failed,
        found.runs_before,
        found.wall_to_find.as_secs_f64(),
        explore::fault_count(&found.shrunk),
        text.lines().count(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The same seed, the same search: the same runs fail and shrink to the same file.
fn replays() -> Result<(), Failed> {
    let faulty = ComponentFile::faulty().map_err(|e| e.to_string())?;
    let fault = "no-retry-on-link-up";
    let run = |sc: &Scenario, seed: u64| runner::run_with_fault(sc, "explore", seed, &faulty, Some(fault));
    let files: Vec<String> =
        (0..2).map(|_| explore::explore(&options(3), &run, &explore::Watch::none()).findings.first().map(|f| f.file("explore")).unwrap_or_default()).collect();
    if files[0].is_empty() || files[0] != files[1] {
        return Err(format!("two searches with seed 3 differ:\n{}\n---\n{}", files[0], files[1]).into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = TestFault::ALL.iter().map(|(name, _)| Trial::test(format!("explore_finds_{name}"), move || hunt(name))).collect();
    trials.push(Trial::test("the_same_seed_shrinks_to_the_same_file", replays));
    libtest_mimic::run(&args, trials).exit();
}
