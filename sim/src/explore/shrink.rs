//! Shrinking a failing scenario: smaller and smaller files that still fail the same way.
//!
//! It works on the scenario as TOML, as a person would edit the file: drop chaos, drop a
//! fault, a stream or a subscription, unset a config key, halve a number (a duration, a
//! gap, a count, an instant). Each candidate that still parses gets its expectations
//! derived afresh and runs with the same seed; the first, in that order, that still fails
//! the same expectation is kept, and the search starts over from it until no candidate
//! fails or the run budget is spent. Candidates run a batch at a time in parallel, and the
//! first failing one *in order* wins, so the result never depends on which thread was faster.

use rayon::prelude::*;

use crate::runner::Outcome;
use crate::scenario::{Expect, Scenario};

use super::expect::derive;
use super::render::to_value;

/// The outcome of shrinking.
pub struct Shrunk {
    pub scenario: Scenario,
    /// The run of the shrunk scenario (expectations derived from it).
    pub outcome: Outcome,
    /// Candidates accepted, and runs spent.
    pub steps: usize,
    pub runs: usize,
}

/// Runs a scenario with a seed (the client under test).
pub type Run<'a> = dyn Fn(&Scenario, u64) -> Outcome + Sync + 'a;

/// `sc` with its expectations derived from it.
pub fn with_expectations(mut sc: Scenario) -> Scenario {
    sc.expect = Expect::default();
    sc.expect = derive(&sc);
    sc
}

/// Whether `o` failed `target` (a check's name, e.g. `no_qos1_loss` or
/// `device_receives sensor/all/cmd0`).
pub fn fails(o: &Outcome, target: &str) -> bool {
    o.expectations.iter().any(|c| c.name == target && !c.passed)
}

/// Shrinks `start` (which fails `target` with `seed`), spending at most `budget` runs,
/// `batch` candidates at a time.
pub fn shrink(start: Scenario, first: Outcome, seed: u64, target: &str, run: &Run<'_>, budget: usize, batch: usize) -> Shrunk {
    let mut best = Shrunk { scenario: start, outcome: first, steps: 0, runs: 0 };
    'search: while best.runs < budget {
        let candidates = candidates(&best.scenario);
        for chunk in candidates.chunks(batch.max(1)) {
            let room = budget - best.runs;
            let chunk = &chunk[..chunk.len().min(room)];
            let tried: Vec<Option<Outcome>> = chunk
                .par_iter()
                .map(|sc| {
                    let o = run(sc, seed);
                    fails(&o, target).then_some(o)
                })
                .collect();
            // Runs past the one kept count as not done: the budget runs out at the same
            // candidate however many ran side by side.
            let kept = tried.into_iter().enumerate().find_map(|(i, o)| o.map(|o| (i, o)));
            best.runs += kept.as_ref().map_or(chunk.len(), |(i, _)| i + 1);
            if let Some((i, o)) = kept {
                best.scenario = chunk[i].clone();
                best.outcome = o;
                best.steps += 1;
                continue 'search;
            }
            if best.runs >= budget {
                break 'search;
            }
        }
        break;
    }
    best
}

/// Every one-edit-smaller scenario, most shrinking first; each parses and carries the
/// expectations derived from it.
pub fn candidates(sc: &Scenario) -> Vec<Scenario> {
    let mut base = to_value(sc);
    let Some(table) = base.as_table_mut() else { return Vec::new() };
    table.remove("expect");
    let mut out: Vec<toml::Value> = Vec::new();
    let edit = |out: &mut Vec<toml::Value>, f: &dyn Fn(&mut toml::Table) -> bool| {
        let mut v = base.clone();
        if let Some(t) = v.as_table_mut()
            && f(t)
        {
            out.push(v);
        }
    };
    edit(&mut out, &|t| t.remove("chaos").is_some());
    // A shorter run first: every later candidate then runs faster.
    for key in ["duration_s", "drain_s"] {
        edit(&mut out, &|t| t.get_mut(key).is_some_and(halve));
    }
    for list in ["fault", "inject", "workload"] {
        for i in (0..array_len(&base, &[list])).rev() {
            edit(&mut out, &|t| remove_at(t, &[list], i));
        }
    }
    for i in (0..array_len(&base, &["device", "subscribe"])).rev() {
        edit(&mut out, &|t| remove_at(t, &["device", "subscribe"], i));
    }
    for key in ["devices", "brokers"] {
        edit(&mut out, &|t| t.remove(key).is_some_and(|v| v.as_integer() != Some(1)));
    }
    for section in ["device", "broker", "network"] {
        let keys: Vec<String> = base.get(section).and_then(toml::Value::as_table).map(|t| t.keys().cloned().collect()).unwrap_or_default();
        for key in keys.iter().filter(|k| *k != "client_id" && *k != "subscribe") {
            edit(&mut out, &|t| t.get_mut(section).and_then(toml::Value::as_table_mut).is_some_and(|s| s.remove(key).is_some()));
        }
    }
    // Smaller numbers in the timeline and the traffic.
    for list in ["fault", "inject", "workload"] {
        for i in 0..array_len(&base, &[list]) {
            let keys: Vec<String> = base[list][i].as_table().map(|t| t.keys().cloned().collect()).unwrap_or_default();
            for key in keys.iter().filter(|k| *k != "kind" && *k != "broker") {
                edit(&mut out, &|t| {
                    t.get_mut(list).and_then(|l| l.get_mut(i)).and_then(|e| e.get_mut(key.as_str())).is_some_and(|v| halve(v) || unset_flag(v))
                });
            }
        }
    }
    if let Some(chaos) = base.get("chaos").and_then(toml::Value::as_table) {
        for key in chaos.keys().cloned().collect::<Vec<_>>() {
            edit(&mut out, &|t| t.get_mut("chaos").and_then(|c| c.get_mut(key.as_str())).is_some_and(halve));
        }
    }
    out.into_iter()
        .filter_map(|v| toml::to_string(&v).ok())
        .filter_map(|text| Scenario::parse(&text).ok())
        .filter(super::expect::coherent)
        .map(with_expectations)
        .collect()
}

fn array_len(v: &toml::Value, path: &[&str]) -> usize {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(toml::Value::as_array).map_or(0, Vec::len)
}

fn remove_at(t: &mut toml::Table, path: &[&str], i: usize) -> bool {
    let mut v: Option<&mut toml::Value> = t.get_mut(path[0]);
    for k in &path[1..] {
        v = v.and_then(|v| v.get_mut(*k));
    }
    match v.and_then(toml::Value::as_array_mut) {
        Some(a) if i < a.len() => {
            a.remove(i);
            true
        }
        _ => false,
    }
}

/// Halves a number (a count stays at least 1; a time to a tenth of a second).
fn halve(v: &mut toml::Value) -> bool {
    match v {
        toml::Value::Integer(n) if *n > 1 => {
            *n /= 2;
            true
        }
        toml::Value::Float(x) if *x >= 0.2 => {
            *x = (*x * 5.0).floor() / 10.0;
            true
        }
        _ => false,
    }
}

fn unset_flag(v: &mut toml::Value) -> bool {
    if v.as_bool() == Some(true) {
        *v = toml::Value::Boolean(false);
        return true;
    }
    false
}

/// Only the expectation `target` names (and the time that goes with a will), as the shrunk
/// file states it. Checks every run makes (`no_protocol_violations`, `hosts_ran`) need no key.
pub fn only(expect: &Expect, target: &str) -> Expect {
    let key = target.split(' ').next().unwrap_or(target);
    let all = toml::Value::try_from(expect).unwrap_or_else(|_| toml::Value::Table(toml::Table::new()));
    let mut kept = toml::Table::new();
    if let Some(t) = all.as_table() {
        for (k, v) in t {
            let topic_list = target.split_once(' ').map(|(_, topic)| topic);
            match (k.as_str(), topic_list) {
                (k2, Some(topic)) if k2 == key => {
                    kept.insert(k.clone(), toml::Value::Array(vec![toml::Value::String(topic.into())]));
                }
                (k2, None) if k2 == key => {
                    kept.insert(k.clone(), v.clone());
                }
                ("will_by_s", _) if key == "will_delivered" => {
                    kept.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
    }
    kept.try_into().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<T: serde::Serialize>(t: &T) -> toml::Value {
        toml::Value::try_from(t).unwrap()
    }

    fn library(name: &str) -> Scenario {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"));
        Scenario::load(&path).unwrap()
    }

    #[test]
    fn every_candidate_is_one_edit_smaller_and_valid() {
        let sc = library("link-flapping");
        let cands = candidates(&sc);
        assert!(!cands.is_empty());
        // The first candidates drop whole items: a shorter run, then fewer faults.
        assert!(cands.iter().any(|c| c.fault.len() < sc.fault.len()));
        assert!(cands.iter().any(|c| c.duration_s < sc.duration_s));
        for c in &cands {
            // Each carries expectations derived from itself.
            assert_eq!(value(&c.expect), value(&derive(c)));
        }
    }

    #[test]
    fn only_keeps_the_failed_expectation() {
        let e = Expect {
            no_qos1_loss: Some(true),
            will_delivered: Some(true),
            will_by_s: Some(30.0),
            device_receives: vec!["a".into(), "b".into()],
            ..Expect::default()
        };
        let w = only(&e, "will_delivered");
        assert_eq!((w.will_delivered, w.will_by_s, w.no_qos1_loss), (Some(true), Some(30.0), None));
        let r = only(&e, "device_receives b");
        assert_eq!(r.device_receives, vec!["b".to_string()]);
        assert_eq!(r.no_qos1_loss, None);
        // A check every run makes needs no key.
        assert_eq!(value(&only(&e, "no_protocol_violations")), value(&Expect::default()));
    }
}
