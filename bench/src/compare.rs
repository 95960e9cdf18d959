//! `mqtt-bench compare`: a few clients side by side, round by round, against the benchmark's
//! own broker, without the rest of the report. For checking a change before a full run:
//!
//! ```sh
//! cp target/release/mqtt-bench /tmp/mqtt-bench-before      # the build before the change
//! cargo build --release -p mqtt-bench
//! target/release/mqtt-bench compare ours ours@/tmp/mqtt-bench-before --qos 0 --rounds 12
//! target/release/mqtt-bench compare ours ours-post ours-loop rumqttc --qos 0,1
//! target/release/mqtt-bench compare ours ours-loop rumqttc --qos 1 --window 1 --count 20000
//! ```
//!
//! `--window 1` is the report's lock-step table (one publish in flight): there every message
//! pays a turn's fixed costs, which a window of 100 spreads thin.
//!
//! Every round runs each client once, each round starting one client further on in the
//! order given (so that the machine's drift, and whatever running straight after another
//! client costs, hits them alike); each figure's ratio is the median of the rounds' ratios
//! against the last client (the baseline), with its 95 % interval (`stats`), as in the full
//! report. The broker is the report's (`broker.rs`): a Mosquitto with its defaults instead
//! (20 in flight, Nagle on its side, 1,000 queued) moves the clients' figures and even their
//! ratios, so a comparison against one started by hand does not carry over to BENCHMARKS.md.
//!
//! Peak RSS is mostly pages of the binary's code, and how many the kernel maps depends on how
//! the file was written: a build copied with `cp` peaks ~10 % above the file the linker wrote
//! (measured 2026-12-05). Compare RSS between clients run from one file, not across builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::peers::{self, PeerRun};
use crate::{broker, medians, paired_ratio, peer_args, round_order, PEERS};

/// One client to run: a peer name of `mqtt-bench peer`, from this build or another one.
struct Contender {
    name: String,
    exe: PathBuf,
    /// How the table names it: the name, and the build when it is not this one.
    label: String,
}

impl Contender {
    /// `name` or `name@/path/to/mqtt-bench`.
    fn parse(spec: &str, this_exe: &Path) -> anyhow::Result<Contender> {
        let (name, exe) = match spec.split_once('@') {
            Some((name, path)) => {
                let exe = PathBuf::from(path);
                anyhow::ensure!(exe.is_file(), "{spec}: no mqtt-bench build at {path}");
                (name, exe)
            }
            None => (spec, this_exe.to_path_buf()),
        };
        anyhow::ensure!(PEERS.contains(&name), "{spec}: unknown client {name:?} (one of {})", PEERS.join(", "));
        Ok(Contender { name: name.into(), exe, label: spec.into() })
    }
}

/// Runs `rounds` rounds of every client at every QoS in `qoses` and prints a table per QoS.
pub fn run(specs: &[String], qoses: &[u8], rounds: usize, count: u64, window: u16) -> anyhow::Result<()> {
    anyhow::ensure!(specs.len() >= 2, "name at least two clients to compare (the last is the baseline)");
    anyhow::ensure!(rounds > 0 && count > 0 && window > 0, "--rounds, --count and --window must be at least 1");
    anyhow::ensure!(qoses.iter().all(|&q| q <= 2), "--qos takes 0, 1 and 2");
    let this_exe = std::env::current_exe()?;
    let clients = specs.iter().map(|s| Contender::parse(s, &this_exe)).collect::<anyhow::Result<Vec<_>>>()?;
    let broker = broker::start(mosquitto_launcher::Session::Own)?;
    for &qos in qoses {
        let mut runs: Vec<Vec<PeerRun>> = vec![Vec::new(); clients.len()];
        for round in 1..=rounds {
            eprint!("QoS {qos}, round {round}/{rounds}:");
            for c in round_order(round, clients.len()) {
                let client = &clients[c];
                let mut cmd = Command::new(&client.exe);
                cmd.args(peer_args(&client.name, broker.port, qos, count, window));
                let run = peers::run_child(cmd)?;
                eprint!(" {} {:.0}/s {:.1} µs", client.label, run.pub_rate, run.cpu_us_per_msg);
                runs[c].push(run);
            }
            eprintln!();
        }
        print!("{}", table(qos, window, &clients, &runs));
    }
    Ok(())
}

/// The medians of each client's figures, and its ratios against the last client.
fn table(qos: u8, window: u16, clients: &[Contender], runs: &[Vec<PeerRun>]) -> String {
    let base = runs.last().map(Vec::as_slice).unwrap_or_default();
    let base_label = clients.last().map_or("", |c| c.label.as_str());
    let mut out = format!(
        "\nQoS {qos}, window {window}, {} rounds; ratios against {base_label}: the median of the rounds' ratios (a 95 % interval for it; below 6 rounds, their range)\n",
        base.len()
    );
    out += "| client | publisher msg/s | CPU µs a message | p99 ms | peak RSS MiB | rate | CPU | p99 | RSS |\n|---|---|---|---|---|---|---|---|---|\n";
    for (client, runs) in clients.iter().zip(runs) {
        let m = medians(runs);
        let ratio = |f: fn(&PeerRun) -> f64| paired_ratio(runs, base, f).unwrap_or_else(|| "–".into());
        out += &format!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |\n",
            client.label,
            m.pub_rate,
            m.cpu_us_per_msg,
            m.p99_us / 1000.0,
            m.peak_rss_kib as f64 / 1024.0,
            ratio(|r| r.pub_rate),
            ratio(|r| r.cpu_us_per_msg),
            ratio(|r| r.p99_us),
            ratio(|r| r.peak_rss_kib as f64),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `round_order` is `main.rs`'s, shared with the full report; tested where it matters most.
    #[test]
    fn every_client_runs_once_a_round_and_in_every_place_over_as_many_rounds() {
        let n = 4;
        let orders: Vec<Vec<usize>> = (1..=n).map(|r| round_order(r, n).collect()).collect();
        assert_eq!(orders[0], [0, 1, 2, 3], "the first round runs them as given");
        for order in &orders {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3], "{order:?}");
        }
        for place in 0..n {
            let mut at_place: Vec<usize> = orders.iter().map(|o| o[place]).collect();
            at_place.sort();
            assert_eq!(at_place, [0, 1, 2, 3], "place {place}");
        }
    }

    #[test]
    fn a_client_is_a_peer_name_with_an_optional_build() {
        let here = std::env::current_exe().unwrap();
        let c = Contender::parse("ours-post", &here).unwrap();
        assert_eq!((c.name.as_str(), c.exe.as_path(), c.label.as_str()), ("ours-post", here.as_path(), "ours-post"));
        let other = format!("ours@{}", here.display());
        let c = Contender::parse(&other, &here).unwrap();
        assert_eq!((c.name.as_str(), c.label.as_str()), ("ours", other.as_str()));
        let unknown = Contender::parse("mosquitto_pub", &here).err().unwrap().to_string();
        assert!(unknown.contains("unknown client"), "{unknown}");
        let missing = Contender::parse("ours@/nonexistent/mqtt-bench", &here).err().unwrap().to_string();
        assert!(missing.contains("no mqtt-bench build"), "{missing}");
    }
}
