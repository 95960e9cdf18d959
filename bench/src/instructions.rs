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
//! `guest-instructions` counts only what calls into the component cost, in a simulated run
//! that repeats to about 0.1 %: for comparing two builds of the guest.
//!
//! ```sh
//! cargo run --release -p mqtt-bench -- guest-instructions /tmp/before.wasm host/component/mqtt_client.wasm
//! ```
//!
//! Where the instructions go, per guest function too: build the component with names
//! (profile `wasm`: `strip = false`, and no wasm-opt in host/build.rs), run a peer with
//! `MQTT_HOST_PERFMAP=1` under `valgrind --tool=callgrind`, and map callgrind's JIT
//! addresses through `/tmp/perf-PID.map`.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

use crate::{broker, peer_args, WINDOW};

/// The load `guest` measures under: a device publishing and receiving at QoS 0 and 1.
const GUEST_LOAD: &str = include_str!("../guest-load.toml");

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

/// Prints, per component file (the embedded component when none is named), the
/// instructions a message costs inside calls into the component: the guest's code, its
/// imports and wasmtime's crossings both ways, everything inside wasmtime's typed call (the
/// one way into an instance, see [`GUEST_CALLS`]), counted by callgrind while the simulator runs `guest-load.toml`.
///
/// Unlike `measure`, whose figure moves by a fifth between runs of one build (how many
/// messages each poll finds depends on the machine's timing), this repeats to about 0.1 %:
/// the simulated run is the same run every time, so two builds of the guest compare closely
/// (three runs of one build gave 28,135 to 28,176 counted from the device's wrapper, and
/// 27,567 and 27,602 from the typed call; what varies is where the clock
/// watchdog's epoch ticks land). `mqtt-sim component` writes a build's component out, and
/// `host/component/` holds the committed one. What it leaves out is what differs between
/// hosts: the sockets, tokio, the application. The component runs under the clock watchdog,
/// compiled at load (a named file) or precompiled (the embedded one), as a host runs it in
/// real time: the simulator's own fuel would count its instrumentation too.
pub fn guest(components: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let sc = guest_scenario()?;
    let messages = sc.workload.iter().map(|w| w.count).chain(sc.inject.iter().map(|i| i.count)).sum::<u64>();
    let exe = std::env::current_exe()?;
    println!("instructions a message inside calls into the component (callgrind; {messages} simulated messages: {})", sc.description);
    let files: Vec<Option<&Path>> = if components.is_empty() { vec![None] } else { components.iter().map(|p| Some(p.as_path())).collect() };
    for file in files {
        let instructions = callgrind("the simulated run", |cmd| {
            cmd.arg(format!("--toggle-collect={GUEST_CALLS}")).arg(&exe).arg("guest-load");
            if let Some(path) = file {
                cmd.arg("--component").arg(path);
            }
        })?;
        // Nothing collected means the pattern matched no function: a rename, not a free guest.
        anyhow::ensure!(instructions > 0, "callgrind collected nothing inside {GUEST_CALLS}: was the device's call path renamed?");
        let name = file.map_or_else(|| "embedded".to_string(), |p| p.display().to_string());
        println!("{name} {}", instructions / messages);
    }
    Ok(())
}

/// The function `guest` counts inside (callgrind's `--toggle-collect` pattern): every call
/// into the component, its arguments lowered and its results lifted, is a typed call. The
/// device's own wrappers around it are inlined in some callers, so a pattern naming them
/// misses those calls (and after they moved crates, it matched nothing at all).
const GUEST_CALLS: &str = "wasmtime::runtime::component::func::typed::TypedFunc<*>::call";

/// `guest`'s child: one simulated run of the load, under callgrind.
pub fn guest_load(component: Option<&Path>) -> anyhow::Result<()> {
    let component = match component {
        Some(path) => mqtt_host::ComponentFile::from_file(path)?,
        None => mqtt_host::ComponentFile::embedded()?,
    };
    let outcome = mqtt_sim::runner::run(&guest_scenario()?, "guest-load", 1, &component);
    anyhow::ensure!(outcome.passed, "the guest load failed: {:?}", outcome.expectations);
    // Every message went all the way, or the count per message would be over fewer.
    let o = &outcome;
    anyhow::ensure!(
        o.broker_dropped == 0 && o.discards == 0 && o.reconnects == 0 && o.watchdog_restarts == 0,
        "the guest load did not run clean: {} dropped by the broker, {} discarded, {} reconnects, {} restarts",
        o.broker_dropped,
        o.discards,
        o.reconnects,
        o.watchdog_restarts
    );
    Ok(())
}

fn guest_scenario() -> anyhow::Result<mqtt_sim::scenario::Scenario> {
    mqtt_sim::scenario::Scenario::parse(GUEST_LOAD).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Instructions of one whole peer run under callgrind.
fn total(exe: &std::path::Path, client: &str, port: u16, qos: u8, count: u64) -> anyhow::Result<u64> {
    callgrind(&format!("the {client} peer"), |cmd| {
        cmd.arg(exe).args(peer_args(client, port, qos, count, WINDOW));
    })
}

/// Runs what `args` adds (the options that choose what to count, then the program) under
/// valgrind's callgrind, and returns the instructions it collected; `what` names the run
/// in an error. Code that wasmtime writes to memory at run time is checked for changes
/// (`--smc-check`), so no stale translation of it runs.
fn callgrind(what: &str, args: impl FnOnce(&mut Command)) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind").arg(format!("--callgrind-out-file={}", dir.path().join("cg.out").display())).arg("--smc-check=all-non-file");
    args(&mut cmd);
    let out = cmd.output().context("running valgrind (Debian: apt-get install valgrind)")?;
    let log = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "{what} failed under valgrind:\n{log}");
    log.lines()
        .find_map(|l| l.split_once("Collected :").and_then(|(_, n)| n.trim().parse().ok()))
        .with_context(|| format!("no instruction count in valgrind's output:\n{log}"))
}

#[cfg(test)]
mod tests {
    /// CI has no valgrind: the run `guest-instructions` counts is checked here instead, with
    /// the embedded component (every message delivered, nothing dropped or lost).
    #[test]
    fn the_guest_load_runs_clean() {
        super::guest_load(None).unwrap();
    }
}
