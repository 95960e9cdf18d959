//! User-mode instructions per message, this client against rumqttc, counted by valgrind's
//! callgrind: a figure that does not move with a noisy machine the way CPU seconds do, for
//! comparing two builds when `mqtt-bench`'s timings are within the noise.
//!
//! ```sh
//! cargo run --release -p mqtt-bench -- instructions --qos 1 --count 20000
//! ```
//!
//! Each peer (the same `mqtt-bench peer` the benchmark runs: one publisher and one subscriber
//! in one process, window 100, TCP_NODELAY) runs under callgrind with `count` and 2 × `count`
//! messages against the benchmark's Mosquitto; the difference over `count` is the cost of a
//! message with start-up taken out (under valgrind that includes compiling the component:
//! valgrind's CPU lacks features the precompiled code was built for). Kernel time is not
//! counted. Everything runs ~50× slower under valgrind, so each `poll` finds fewer messages
//! than at full speed: costs per call weigh more than they do in the timed runs.
//!
//! Where the instructions go, per guest function too: build the component with names
//! (profile `wasm`: `strip = false`, and no wasm-opt in host/build.rs), run a peer with
//! `MQTT_HOST_PERFMAP=1` under `valgrind --tool=callgrind`, and map callgrind's JIT
//! addresses through `/tmp/perf-PID.map`.

use std::process::Command;

use anyhow::Context as _;

use crate::{broker, peer_args};

/// Prints, per client, the instructions one message costs.
pub fn measure(qos: u8, count: u64) -> anyhow::Result<()> {
    anyhow::ensure!(count > 0, "--count must be at least 1");
    let broker = broker::start(mosquitto_launcher::Session::Own)?;
    let exe = std::env::current_exe()?;
    println!("QoS {qos}, instructions per message (callgrind, marginal over {count} messages)");
    for client in ["ours", "rumqttc"] {
        let run = |n: u64| total(&exe, client, broker.port, qos, n);
        let (one, two) = (run(count)?, run(count * 2)?);
        println!("{client} {}", two.saturating_sub(one) / count);
    }
    Ok(())
}

/// Instructions of one whole peer run under callgrind.
fn total(exe: &std::path::Path, client: &str, port: u16, qos: u8, count: u64) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", dir.path().join("cg.out").display()))
        .arg("--smc-check=all-non-file")
        .arg(exe)
        .args(peer_args(client, port, qos, count))
        .output()
        .context("running valgrind (Debian: apt-get install valgrind)")?;
    let log = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "the {client} peer failed under valgrind:\n{log}");
    log.lines()
        .find_map(|l| l.split_once("Collected :").and_then(|(_, n)| n.trim().parse().ok()))
        .with_context(|| format!("no instruction count in valgrind's output:\n{log}"))
}
