//! `mqtt-sim explore`: search for an outage that breaks the client, and shrink what breaks
//! it to a minimal scenario file.
//!
//! Run `k` of exploration `seed` is a scenario drawn from `(seed, k)` ([`generate`]) with
//! the expectations a correct client meets in it ([`expect`]); a failing run is shrunk
//! ([`shrink`]) and written as a file ([`render`]) that `mqtt-sim run` replays as it is.
//! Runs go in batches; a batch's failures are handled in run order, so the same seed finds
//! the same scenarios and writes the same files whatever the number of workers.

pub mod expect;
pub mod generate;
pub mod render;
pub mod shrink;

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::runner::Outcome;
use crate::scenario::Scenario;
use crate::shard::Shard;

pub use shrink::Run;

/// How long to search.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Runs(u64),
    Time(Duration),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub budget: Budget,
    /// Runs in parallel (the batch size is a multiple of it).
    pub jobs: usize,
    pub shard: Shard,
    /// Most runs one shrink may spend.
    pub shrink_runs: usize,
    /// Stop at the first failure instead of searching on for other kinds.
    pub first_only: bool,
}

/// A failure found and shrunk.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The run that found it, and the seed the scenario runs with.
    pub run: u64,
    pub seed: u64,
    /// The expectation it fails (the first that failed in the run), and why.
    pub failed: String,
    pub detail: String,
    /// Runs done and wall time spent when it was found.
    pub runs_before: u64,
    pub wall_to_find: Duration,
    pub original: Scenario,
    pub shrunk: Scenario,
    pub shrink_steps: usize,
    pub shrink_runs: usize,
}

impl Finding {
    /// The shrunk scenario as a file: how it was found and what fails, then the scenario
    /// with only the expectation it breaks.
    pub fn file(&self, how: &str) -> String {
        let mut sc = self.shrunk.clone();
        sc.expect = shrink::only(&sc.expect, &self.failed);
        sc.description = format!("found by mqtt-sim explore: {}", self.failed);
        let body = render::to_toml(&sc);
        let lines = |s: &Scenario| render::to_toml(s).lines().count();
        format!(
            "# Found by `{how}`, run {} (scenario seed {}).\n# Fails {}: {}\n# Shrunk in {} steps ({} runs) from {} faults and {} lines to {} faults and {} lines.\n\n{body}",
            self.run,
            self.seed,
            self.failed,
            self.detail,
            self.shrink_steps,
            self.shrink_runs,
            fault_count(&self.original),
            lines(&self.original),
            fault_count(&self.shrunk),
            body.lines().count(),
        )
    }
}

/// Faults in a scenario, chaos counting as one.
pub fn fault_count(sc: &Scenario) -> usize {
    sc.fault.len() + usize::from(sc.chaos.is_some())
}

/// What an exploration did.
#[derive(Debug, Default)]
pub struct Summary {
    pub runs: u64,
    pub failed_runs: u64,
    pub wall: Duration,
    pub findings: Vec<Finding>,
    /// Scenarios drawn per fault kind, and how many of those runs failed.
    pub by_kind: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

/// Progress, as runs finish.
pub struct Progress {
    pub runs: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Set while a failure is being shrunk.
    pub shrinking: Option<String>,
}

/// Scenario `k` of the exploration, with its expectations, and its seed.
pub fn scenario(seed: u64, k: u64) -> (Scenario, u64) {
    let (sc, run_seed) = generate::scenario(seed, k);
    // Written out and read back: what runs is exactly what a file would say.
    let text = render::to_toml(&sc);
    let sc = Scenario::parse(&text).unwrap_or_else(|e| panic!("explore drew an invalid scenario (seed {seed}, run {k}): {}\n{text}", e.0));
    (shrink::with_expectations(sc), run_seed)
}

/// What the caller sees while a search goes on: progress as runs finish, and each finding
/// as soon as it is shrunk (a long search keeps what it found even if stopped).
pub struct Watch<'a> {
    pub progress: &'a (dyn Fn(&Progress) + Sync),
    pub found: &'a (dyn Fn(&Finding) + Sync),
}

impl Watch<'_> {
    /// Sees nothing.
    pub fn none() -> Watch<'static> {
        fn ignore<T>(_: &T) {}
        Watch { progress: &ignore::<Progress>, found: &ignore::<Finding> }
    }
}

/// Searches until the budget is spent (or, with `first_only`, the first failure).
pub fn explore(opts: &Options, run: &Run<'_>, watch: &Watch<'_>) -> Summary {
    let progress = watch.progress;
    let started = Instant::now();
    let mut summary = Summary::default();
    let batch = (opts.jobs.max(1) * 4) as u64;
    let mut next = 0u64;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.jobs.max(1)).build().expect("starting the worker threads");
    pool.install(|| loop {
        let left = match opts.budget {
            Budget::Runs(n) => n.saturating_sub(summary.runs),
            Budget::Time(t) if started.elapsed() < t => u64::MAX,
            Budget::Time(_) => 0,
        };
        if left == 0 {
            break;
        }
        let mut ks = Vec::new();
        while (ks.len() as u64) < batch.min(left) {
            if opts.shard.takes(next as usize) {
                ks.push(next);
            }
            next += 1;
        }
        let results: Vec<(u64, Scenario, u64, Outcome)> = ks
            .par_iter()
            .map(|&k| {
                let (sc, seed) = scenario(opts.seed, k);
                let o = run(&sc, seed);
                (k, sc, seed, o)
            })
            .collect();
        for (k, sc, seed, o) in results {
            summary.runs += 1;
            let kinds: std::collections::BTreeSet<&'static str> = sc.fault.iter().map(crate::scenario::Fault::name).collect();
            for kind in kinds {
                let e = summary.by_kind.entry(kind).or_default();
                e.0 += 1;
                e.1 += u64::from(!o.passed);
            }
            if o.passed {
                continue;
            }
            summary.failed_runs += 1;
            let Some(check) = o.expectations.iter().find(|c| !c.passed) else { continue };
            if summary.findings.iter().any(|f| f.failed == check.name) {
                continue;
            }
            let (failed, detail) = (check.name.clone(), check.detail.clone());
            let (runs_before, wall_to_find) = (summary.runs, started.elapsed());
            progress(&Progress { runs: summary.runs, failed: summary.failed_runs, elapsed: started.elapsed(), shrinking: Some(failed.clone()) });
            let shrunk = shrink::shrink(sc.clone(), o, seed, &failed, run, opts.shrink_runs, opts.jobs.max(1));
            let detail = shrunk.outcome.expectations.iter().find(|c| c.name == failed).map_or(detail, |c| c.detail.clone());
            summary.findings.push(Finding {
                run: k,
                seed,
                failed,
                detail,
                runs_before,
                wall_to_find,
                original: sc,
                shrunk: shrunk.scenario,
                shrink_steps: shrunk.steps,
                shrink_runs: shrunk.runs,
            });
            (watch.found)(summary.findings.last().expect("just pushed"));
            if opts.first_only {
                break;
            }
        }
        progress(&Progress { runs: summary.runs, failed: summary.failed_runs, elapsed: started.elapsed(), shrinking: None });
        if opts.first_only && !summary.findings.is_empty() {
            break;
        }
    });
    summary.wall = started.elapsed();
    summary
}

/// A file name for a finding: what failed, the exploration seed and the run.
pub fn file_name(f: &Finding, explore_seed: u64) -> String {
    let what: String = f.failed.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("{what}-seed{explore_seed}-run{}.toml", f.run)
}
