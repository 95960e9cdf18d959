//! Splitting a sweep across machines: which shard this process runs, from `--shard I/N` or
//! from the environment of the engine that started it, and putting the shards' outputs back
//! together (`mqtt-sim merge`).
//!
//! A sweep's work is every (scenario, seed) pair in a fixed order; shard I of N takes every
//! N-th pair starting with the I-th, so N shards cover the sweep exactly once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::runner::Outcome;

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// `I/N`, 1 <= I <= N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("shard {s:?}: expected I/N, e.g. 2/8"))?;
        let index: usize = i.trim().parse().map_err(|_| format!("shard {s:?}: I is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| format!("shard {s:?}: N is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard {s:?}: need 1 <= I <= N"));
        }
        Ok(Shard { index, count })
    }

    /// The shard named by the environment, and where it came from, checked in this order:
    /// - `MQTT_SIM_SHARD=I/N` (set it from a GitHub Actions matrix, or anywhere);
    /// - Slurm job arrays: `SLURM_ARRAY_TASK_ID` from `SLURM_ARRAY_TASK_MIN` (default 0),
    ///   `SLURM_ARRAY_TASK_COUNT` tasks;
    /// - Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` (0-based), with the number of
    ///   completions in `MQTT_SIM_SHARDS` (Kubernetes does not put it in the environment).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<(Shard, &'static str)>, String> {
        if let Some(s) = var("MQTT_SIM_SHARD") {
            return Ok(Some((Shard::parse(&s)?, "MQTT_SIM_SHARD")));
        }
        let number = |name: &str, value: String| value.trim().parse::<usize>().map_err(|_| format!("{name}={value:?} is not a number"));
        if let Some(id) = var("SLURM_ARRAY_TASK_ID") {
            let id = number("SLURM_ARRAY_TASK_ID", id)?;
            let min = var("SLURM_ARRAY_TASK_MIN").map(|v| number("SLURM_ARRAY_TASK_MIN", v)).transpose()?.unwrap_or(0);
            let count = number("SLURM_ARRAY_TASK_COUNT", var("SLURM_ARRAY_TASK_COUNT").ok_or("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT")?)?;
            let index = id.checked_sub(min).ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")? + 1;
            return Ok(Some((Shard::parse(&format!("{index}/{count}"))?, "SLURM_ARRAY_TASK_ID")));
        }
        if let Some(k) = var("JOB_COMPLETION_INDEX") {
            let k = number("JOB_COMPLETION_INDEX", k)?;
            let count = var("MQTT_SIM_SHARDS").ok_or("JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) needs MQTT_SIM_SHARDS, the job's completions")?;
            let count = number("MQTT_SIM_SHARDS", count)?;
            return Ok(Some((Shard::parse(&format!("{}/{count}", k + 1))?, "JOB_COMPLETION_INDEX")));
        }
        Ok(None)
    }

    /// Whether the `k`-th pair of the sweep's work is this shard's.
    pub fn takes(self, k: usize) -> bool {
        k % self.count == self.index - 1
    }

    /// This shard's pairs among the first `total`, in order: those [`Shard::takes`], found
    /// without visiting the others.
    pub fn picks(self, total: usize) -> impl Iterator<Item = usize> {
        (self.index - 1..total).step_by(self.count)
    }
}

/// One line of `sweep --json`: a run, the shard that ran it and the size of the whole sweep,
/// so `merge` can tell a missing shard from a small one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunLine {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// `I/N`.
    pub shard: String,
    /// Runs in the whole sweep, every shard together.
    pub sweep_runs: usize,
    /// The command that replays this run.
    pub replay: String,
}

/// The shards' runs put back together, and what does not add up.
#[derive(Debug, Default)]
pub struct Merged {
    pub runs: Vec<RunLine>,
    pub problems: Vec<String>,
}

/// Merges `sweep --json` outputs: (name, text) per file.
pub fn merge(files: &[(String, String)]) -> Merged {
    let mut m = Merged::default();
    let mut seen: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut shards: BTreeSet<usize> = BTreeSet::new();
    let mut counts: BTreeSet<usize> = BTreeSet::new();
    let mut totals: BTreeSet<usize> = BTreeSet::new();
    for (name, text) in files {
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let run: RunLine = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(e) => {
                    m.problems.push(format!("{name}: line {}: not a run of `sweep --json`: {e}", n + 1));
                    continue;
                }
            };
            match Shard::parse(&run.shard) {
                Ok(s) => {
                    shards.insert(s.index);
                    counts.insert(s.count);
                }
                Err(e) => m.problems.push(format!("{name}: line {}: {e}", n + 1)),
            }
            totals.insert(run.sweep_runs);
            let key = (run.outcome.scenario.clone(), run.outcome.seed);
            if let Some(first) = seen.insert(key.clone(), name.clone()) {
                m.problems.push(format!("{} seed {} ran twice (in {first} and {name}): a shard was merged twice or two shards overlap", key.0, key.1));
                continue;
            }
            m.runs.push(run);
        }
    }
    if counts.len() > 1 || totals.len() > 1 {
        m.problems.push(format!("the files come from different sweeps (shard counts {counts:?}, sweep sizes {totals:?})"));
    } else if let (Some(&count), Some(&total)) = (counts.first(), totals.first()) {
        let missing: Vec<usize> = (1..=count).filter(|i| !shards.contains(i)).collect();
        if m.runs.len() != total {
            let which = if missing.is_empty() { String::new() } else { format!(": shards {missing:?} of {count} are missing") };
            m.problems.push(format!("{} of the sweep's {total} runs are here{which}", m.runs.len()));
        }
    }
    m.runs.sort_by(|a, b| (a.outcome.scenario.as_str(), a.outcome.seed).cmp(&(b.outcome.scenario.as_str(), b.outcome.seed)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_picks_exactly_the_pairs_it_takes() {
        for count in 1..=5 {
            for index in 1..=count {
                let shard = Shard { index, count };
                for total in [0, 1, 4, 5, 17] {
                    let taken: Vec<usize> = (0..total).filter(|k| shard.takes(*k)).collect();
                    assert_eq!(shard.picks(total).collect::<Vec<_>>(), taken, "{index}/{count} of {total}");
                }
            }
        }
    }
}
