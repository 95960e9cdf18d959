//! `mqtt-bench`: every benchmark of the project in one run, written to `BENCHMARKS.md`.
//!
//! ```sh
//! cargo run --release -p mqtt-bench                  # the full run (about 12 minutes on 2 cores)
//! cargo run --release -p mqtt-bench -- --quick --out /tmp/b.md   # seconds; checks it still runs
//! ```
//!
//! Peers run one after another against the same Mosquitto, interleaved run by run, so a
//! noisy neighbour hits them alike; the table shows medians over `--runs` (15 by default),
//! and each ratio against rumqttc is the median of the ratios round by round (a run beside
//! rumqttc's run in the same round), which the machine's load drifting between rounds moves
//! less than a ratio of the two medians, with a 95 % confidence interval for it (`stats`).

mod broker;
mod codec_size;
mod compare;
mod instructions;
mod local;
mod peers;
mod simulated;
mod startup;
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use mosquitto_launcher::Session;
use peers::PeerRun;
use stats::median;

#[derive(Parser)]
#[command(name = "mqtt-bench", about = "Benchmarks of the MQTT client component, written to BENCHMARKS.md")]
struct Cli {
    #[command(subcommand)]
    peer: Option<PeerCommand>,
    /// A fast pass (small counts, one run, no paho, small fleets) that checks everything still runs.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Rounds of peer runs (medians and confidence intervals are reported); paho-mqtt, ten
    /// times slower than the others, runs in the first `PAHO_ROUNDS` of them only.
    #[arg(long)]
    runs: Option<usize>,
    /// Messages per peer run.
    #[arg(long)]
    count: Option<u64>,
    /// Include paho-mqtt (installed into target/bench-venv with pip) even with --quick.
    #[arg(long)]
    paho: bool,
    /// Leave paho-mqtt out.
    #[arg(long, conflicts_with = "paho")]
    no_paho: bool,
    /// Fleets as DEVICES:HOURS[:DEVICES_PER_HOST], e.g. 100:1,1000:1:10 (default per host: 10).
    #[arg(long)]
    fleets: Option<String>,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// One peer measurement (run by the harness in a child process, one JSON line out).
    #[command(hide = true)]
    Peer {
        #[arg(long)]
        client: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        qos: u8,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 100)]
        window: u16,
        /// Write each message's arrival time and latency here (see `peers::Arrivals`).
        #[arg(long)]
        latencies: Option<PathBuf>,
    },
    /// One start-up measurement (run by the harness in a child process, one JSON line out).
    #[command(hide = true)]
    Startup {
        #[arg(long)]
        client: String,
        #[arg(long)]
        port: u16,
    },
    /// User-mode instructions per message, this client against rumqttc, counted by
    /// valgrind's callgrind (needs valgrind; see bench/src/instructions.rs).
    Instructions {
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// Messages of the shorter of the two runs per client.
        #[arg(long, default_value_t = 20_000)]
        count: u64,
    },
    /// Instructions a message costs inside calls into the component, counted by callgrind
    /// in a simulated run that repeats to about 0.1 %: for comparing
    /// builds of the guest, e.g. `guest-instructions /tmp/before.wasm
    /// host/component/mqtt_client.wasm` (needs valgrind; see bench/src/instructions.rs).
    GuestInstructions {
        /// Component files (wasm) to measure, one after another; none: the embedded one.
        components: Vec<PathBuf>,
    },
    /// One simulated run of `guest-instructions`' load (run by it under valgrind).
    #[command(hide = true)]
    GuestLoad {
        #[arg(long)]
        component: Option<PathBuf>,
    },
    /// A few clients side by side, round by round, against the report's broker: the ratios
    /// of the full report (medians and 95 % intervals) without the rest of it, e.g.
    /// `compare ours ours-post rumqttc` or, before and after a change,
    /// `compare ours ours@/tmp/mqtt-bench-before` (see bench/src/compare.rs).
    Compare {
        /// Peers of `mqtt-bench peer` (ours, ours-post, ours-loop, ours-nagle, rumqttc,
        /// rumqttc-nagle), each `NAME` or `NAME@PATH` to run it from another build; the last
        /// is the baseline.
        #[arg(required = true, num_args = 2..)]
        clients: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "0,1")]
        qos: Vec<u8>,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Messages per run.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Publishes in flight (the full report's main table: 100; its lock-step table: 1).
        #[arg(long, default_value_t = WINDOW)]
        window: u16,
    },
    /// Only the power-cut store's figures (a section of the full report), as Markdown on
    /// stdout.
    Store {
        #[arg(long)]
        quick: bool,
    },
}

const WINDOW: u16 = 100;

/// Rounds of peer runs by default: with fewer than 6 a median has no 95 % interval, and 15
/// narrow it to about ±5 % on this machine (where one round's ratio moves by ±30 %).
const ROUNDS: usize = 15;

/// Rounds paho-mqtt takes part in: it is an order of magnitude slower than the Rust clients
/// (about 8 s a run), which more rounds would not change, and they would double the run.
const PAHO_ROUNDS: usize = 3;

/// Why fleets share simulated hosts.
const FLEET_SCALING: &str = "\nturmoil (0.7) links every pair of hosts and, at every step, walks all links for every host (`Topology::deliver_messages`): a step costs about hosts³. Fleets therefore put several devices on one simulated host (`devices_per_host`, a fleet behind one access point: every fault already hits the whole fleet, so no verdict changes meaning). The first two rows are the same fleet both ways, measured side by side.\n";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.peer {
        Some(PeerCommand::Peer { client, port, qos, count, window, latencies }) => peer(&client, port, qos, count, window, latencies.as_deref()),
        Some(PeerCommand::Startup { client, port }) => startup::child(&client, port).and_then(|r| {
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }),
        Some(PeerCommand::Store { quick }) => store_section(quick).map(|md| print!("{md}")),
        Some(PeerCommand::Instructions { qos, count }) => instructions::measure(qos, count),
        Some(PeerCommand::GuestInstructions { components }) => instructions::guest(&components),
        Some(PeerCommand::GuestLoad { component }) => instructions::guest_load(component.as_deref()),
        Some(PeerCommand::Compare { clients, qos, rounds, count, window }) => compare::run(&clients, &qos, rounds, count, window),
        None => harness(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What runs `client` as `mqtt-bench peer` against the broker on `port` with `window`
/// publishes in flight (the harness, `compare` and `instructions` each start peers this way).
fn peer_args(client: &str, port: u16, qos: u8, count: u64, window: u16) -> Vec<String> {
    let (port, qos, count, window) = (port.to_string(), qos.to_string(), count.to_string(), window.to_string());
    ["peer", "--client", client, "--port", &port, "--qos", &qos, "--count", &count, "--window", &window].map(String::from).to_vec()
}

/// The clients `peer` runs (its `match` below), by name.
const PEERS: [&str; 6] = ["ours", "ours-post", "ours-loop", "ours-nagle", "rumqttc", "rumqttc-nagle"];

fn peer(client: &str, port: u16, qos: u8, count: u64, window: u16, latencies: Option<&Path>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let run = rt.block_on(async {
        match client {
            "ours" => peers::ours(port, qos, count, window, true, peers::Api::Futures, latencies).await,
            "ours-post" => peers::ours(port, qos, count, window, true, peers::Api::Post, latencies).await,
            "ours-loop" => peers::ours(port, qos, count, window, true, peers::Api::EventLoop, latencies).await,
            "ours-nagle" => peers::ours(port, qos, count, window, false, peers::Api::Futures, latencies).await,
            "rumqttc" => peers::rumqttc(port, qos, count, window, true, latencies).await,
            "rumqttc-nagle" => peers::rumqttc(port, qos, count, window, false, latencies).await,
            other => anyhow::bail!("unknown peer {other:?} (one of {})", PEERS.join(", ")),
        }
    })?;
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

/// What the power-cut store costs (issue 16's figures).
fn store_section(quick: bool) -> anyhow::Result<String> {
    let s = local::store(quick)?;
    let g = s.geometry;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## The power-cut store\n\nLoopback broker, QoS 1 publishes of 100 B one at a time (publish, then the poll that handles the PUBACK); median of batches. The store syncs before `publish` returns its token and before the PUBLISH leaves; the RAM flash's sync costs nothing, the file's is an `fsync` on this machine's disk. Flash: {} KiB in {} KiB sectors, written {} bytes at a time.\n",
        g.capacity / 1024,
        g.sector_size / 1024,
        g.write_size
    );
    let _ = writeln!(md, "| what | figure |\n|---|---|");
    let _ = writeln!(md, "| publish → PUBACK handled, no store | {:.2} µs |", s.no_store_ns / 1000.0);
    let _ = writeln!(md, "| … with the store on RAM flash (the loopback platform) | {:.2} µs ({:.2}×) |", s.ram_ns / 1000.0, s.ram_ns / s.no_store_ns);
    let _ = writeln!(md, "| … with the store on a file with fsync (the board's `--store`) | {:.0} µs |", s.file_ns / 1000.0);
    let _ = writeln!(md, "| bytes written per 1,000 messages | {} ({:.0} per message) |", s.bytes_per_1000, s.bytes_per_1000 as f64 / 1000.0);
    let _ = writeln!(md, "| sectors erased per 1,000 messages | {} |", s.erases_per_1000);
    let _ = writeln!(md, "| syncs per 1,000 messages | {} |", s.syncs_per_1000);
    let _ = writeln!(
        md,
        "\nThree syncs per message: the publish's record before the token, its packet id before the PUBLISH, and the `Done` at PUBACK. About one erase per 4 KiB sector filled: collection copies only the few records still live. The store costs component code (about 15 KB of the code section below); a component built without it for hosts that have no flash would win that back."
    );
    Ok(md)
}

/// The median over the rounds of `f(run) / f(base's run in the same round)` and, in
/// brackets, a 95 % confidence interval for it (from 6 rounds; below that the lowest and
/// highest ratio), for the table; `None` when no round has a figure to divide by.
fn paired_ratio(runs: &[PeerRun], base: &[PeerRun], f: fn(&PeerRun) -> f64) -> Option<String> {
    let ratios: Vec<f64> = runs.iter().zip(base).filter(|(_, b)| f(b) > 0.0).map(|(r, b)| f(r) / f(b)).collect();
    let (lo, hi) = stats::median_interval(&ratios).unwrap_or_else(|| ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x))));
    match ratios.len() {
        0 => None,
        1 => Some(format!("{lo:.2}")),
        // On a shared machine the rounds' ratios spread wider than the clients differ: the
        // interval says whether the median is on its side of 1.0 by more than chance.
        _ => Some(format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios))),
    }
}

/// The order round `round` (from 1) runs `n` clients in: each round starts one further on,
/// so that no client always runs in the same place. In a fixed order the baseline always
/// ran last, straight after our own clients, and whatever that place costs (the broker's
/// state after three runs, the machine's drift within a round) went into every ratio.
pub(crate) fn round_order(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round - 1) % n)
}

/// The median of each figure over a peer's runs.
fn medians(runs: &[PeerRun]) -> PeerRun {
    let m = |f: fn(&PeerRun) -> f64| median(runs.iter().map(f).collect());
    PeerRun {
        client: runs[0].client.clone(),
        qos: runs[0].qos,
        sent: runs[0].sent,
        pub_rate: m(|r| r.pub_rate),
        received: m(|r| r.received as f64) as u64,
        sub_rate: m(|r| r.sub_rate),
        p50_us: m(|r| r.p50_us),
        p99_us: m(|r| r.p99_us),
        peak_rss_kib: m(|r| r.peak_rss_kib as f64) as u64,
        cpu_us_per_msg: m(|r| r.cpu_us_per_msg),
    }
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd).args(args).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    format!(
        "{} · {} cores ({}) · Linux {} · {}",
        shell("date", &["-u", "+%Y-%m-%d"]),
        shell("nproc", &[]),
        cpu,
        shell("uname", &["-r"]),
        shell("rustc", &["--version"])
    )
}

/// Why the main table's Mosquitto runs in a session of its own.
const BROKER_SESSION: &str = "Mosquitto runs in a session of its own (`setsid`), so Linux's autogroup (`sched_autogroup_enabled`, on in this kernel) schedules it beside the peer process, not among its threads, as a system service (a cgroup of its own) or a broker on another machine is scheduled. Where the broker is scheduled moves the QoS 1 comparison on this 2-core machine more than the rounds' spread: started as the harness's child, in the peers' session, it competes thread for thread with the client under test, which favours rumqttc; the section after this table repeats QoS 1 that way. Both clients meet the same broker either way.";

/// Runs of the peer processes against one broker.
struct Peers<'a> {
    exe: &'a Path,
    /// The Python with paho-mqtt installed, when paho is measured.
    paho: Option<&'a Path>,
    count: u64,
    window: u16,
    runs: usize,
}

impl Peers<'_> {
    /// Every client `runs` times (paho-mqtt at most `PAHO_ROUNDS`) at each of `qoses`,
    /// interleaved run by run, each round starting one client further on, so that a noisy
    /// neighbour hits them alike; one list of runs per (QoS, client), in that order.
    fn measure(&self, port: u16, clients: &[&str], qoses: &[u8]) -> anyhow::Result<Vec<Vec<PeerRun>>> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("paho_peer.py");
        let mut results = vec![Vec::new(); qoses.len() * clients.len()];
        for (q, &qos) in qoses.iter().enumerate() {
            for round in 0..self.runs {
                for i in round_order(round + 1, clients.len()) {
                    let client = clients[i];
                    if client == "paho" && round >= PAHO_ROUNDS {
                        continue;
                    }
                    eprintln!("peer {client}, QoS {qos}, {} messages …", self.count);
                    let cmd = match (client, self.paho) {
                        ("paho", Some(python)) => {
                            let mut c = Command::new(python);
                            c.arg(&script).args([port.to_string(), qos.to_string(), self.count.to_string(), self.window.to_string()]);
                            c
                        }
                        ("paho", None) => anyhow::bail!("paho-mqtt asked for but not installed"),
                        (name, _) => {
                            let mut c = Command::new(self.exe);
                            c.args(peer_args(name, port, qos, self.count, self.window));
                            c
                        }
                    };
                    let run = peers::run_child(cmd)?;
                    eprintln!("  {:.0} msg/s, {:.1} µs CPU a message, p99 {:.1} ms", run.pub_rate, run.cpu_us_per_msg, run.p99_us / 1000.0);
                    results[q * clients.len() + i].push(run);
                }
            }
        }
        Ok(results)
    }
}

/// The peers' table: medians, and each client's ratios against rumqttc's runs at its QoS.
fn peer_table(md: &mut String, results: &[Vec<PeerRun>]) {
    let rumqttc_runs = |qos: u8| results.iter().find(|runs| runs.first().is_some_and(|r| r.qos == qos && r.client == peers::RUMQTTC));
    let _ = writeln!(
        md,
        "| client | QoS | publisher msg/s | subscriber msg/s | received | p50 latency | p99 latency | peak RSS | CPU per message | publisher vs rumqttc | subscriber vs rumqttc | CPU vs rumqttc | p99 vs rumqttc | peak RSS vs rumqttc |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for runs in results.iter().filter(|runs| !runs.is_empty()) {
        let r = medians(runs);
        let base = rumqttc_runs(r.qos);
        let ratio = |f: fn(&PeerRun) -> f64| base.and_then(|b| paired_ratio(runs, b, f)).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {} / {} | {:.0} µs | {:.0} µs | {:.1} MiB | {:.1} µs | {} | {} | {} | {} | {} |",
            r.client,
            r.qos,
            r.pub_rate,
            r.sub_rate,
            r.received,
            r.sent,
            r.p50_us,
            r.p99_us,
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu_us_per_msg,
            ratio(|r| r.pub_rate),
            ratio(|r| r.sub_rate),
            ratio(|r| r.cpu_us_per_msg),
            ratio(|r| r.p99_us),
            ratio(|r| r.peak_rss_kib as f64)
        );
    }
}

fn harness(cli: &Cli) -> anyhow::Result<()> {
    let quick = cli.quick;
    let runs = cli.runs.unwrap_or(if quick { 1 } else { ROUNDS }).max(1);
    let count = cli.count.unwrap_or(if quick { 2_000 } else { 100_000 });
    let with_paho = (cli.paho || !quick) && !cli.no_paho;
    let fleets: Vec<simulated::Fleet> = match &cli.fleets {
        Some(s) => s
            .split(',')
            .map(|f| {
                let parts: Vec<&str> = f.split(':').map(str::trim).collect();
                match parts[..] {
                    [d, h] => Ok((d.parse()?, h.parse()?, 10)),
                    [d, h, k] => Ok((d.parse()?, h.parse()?, k.parse()?)),
                    _ => anyhow::bail!("--fleets {f:?}: expected DEVICES:HOURS[:DEVICES_PER_HOST]"),
                }
            })
            .collect::<anyhow::Result<_>>()?,
        None if quick => vec![(20, 0.05, 10)],
        // The first row is the comparison: the same fleet with a host per device, which
        // turmoil's per-step cost (about hosts³) makes slow; see FLEET_SCALING.
        None => vec![(100, 0.1, 1), (100, 0.1, 10), (100, 1.0, 10), (1000, 1.0, 10)],
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n\nWritten by `cargo run --release -p mqtt-bench{}` on: {}.\n", if quick { " -- --quick" } else { "" }, machine());
    let _ = writeln!(
        md,
        "The machine is shared and noisy: compare figures within one table (measured side by side in one run), not across runs. Medians of {runs} round(s) (paho-mqtt: of the first {}).\n",
        runs.min(PAHO_ROUNDS)
    );

    // 1. Peers against one Mosquitto, in a session of its own.
    let broker = broker::start(Session::Own)?;
    let mosquitto_version = mosquitto_launcher::Mosquitto::version();
    let exe = std::env::current_exe()?;
    let target = exe.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let paho = if with_paho { Some(peers::paho_python(&target)) } else { None };
    let mut notes = Vec::new();
    let mut clients: Vec<&str> = vec!["ours", "ours-post", "ours-loop", "rumqttc", "ours-nagle", "rumqttc-nagle"];
    if matches!(paho, Some(Ok(_))) {
        clients.push("paho");
    }
    if let Some(Err(e)) = &paho {
        notes.push(format!("paho-mqtt not measured: {e}"));
    }
    let peers = Peers { exe: &exe, paho: paho.as_ref().and_then(|p| p.as_ref().ok()).map(PathBuf::as_path), count, window: WINDOW, runs };
    let results = peers.measure(broker.port, &clients, &[0, 1])?;
    let _ = writeln!(md, "## Throughput and latency against a local Mosquitto\n");
    let _ = writeln!(md, "{} messages of {} bytes, one publisher and one subscriber per client (each client in its own process), in-flight window {WINDOW} and as many publishes waiting in each client (rumqttc's request channel holds that many; every publisher keeps at most twice the window outstanding), {}. Rates: publisher from the first publish to the last completion (QoS 1: PUBACK), subscriber from its first message to its last. Latency: publish call to arrival. Ratios are against rumqttc with TCP_NODELAY (this client sets it by default; paho-mqtt leaves Nagle on, its only setting): the median of the ratios round by round, each run against rumqttc's in the same round, and in brackets a 95 % confidence interval for that median (the order statistics the sign test gives, which assume nothing about how the ratios spread; with fewer than 6 rounds, the lowest and highest ratio instead); rumqttc's own default, Nagle on, is a row of its own, beside this client with Nagle on (`TokioPlatform::with_nagle`). CPU per message: user + system time of the whole peer process (publisher and subscriber) per message sent. p99 and peak RSS against rumqttc: the same paired ratios of the p99 latency and the process's peak RSS (as for CPU, below 1.00 is better). `this client` holds a `publish(..).await` future per publish (in a `FuturesUnordered`); `this client (post)` hands each to `post` and counts completions off the event stream in another task, as the rumqttc publisher counts PUBACKs off its event loop; `this client (event loop)` posts too, but makes each client with `Client::new` and runs it in the task that takes its events (the subscriber's receiver, the publisher's completion counter): rumqttc's `AsyncClient` and `EventLoop`, task for task. The first two run each client in a task of its own (`Client::spawn`).\n", count, peers::PAYLOAD, mosquitto_version);
    let _ = writeln!(md, "{BROKER_SESSION}\n");
    peer_table(&mut md, &results);
    for n in &notes {
        let _ = writeln!(md, "\n{n}");
    }

    eprintln!("start-up …");
    let startup_runs = if quick { 3 } else { 15 };
    let rows = startup::measure(&exe, broker.port, startup_runs)?;
    let _ = writeln!(md, "\n### Start-up\n\nA fresh process (this benchmark's binary, which carries both clients) that connects, publishes one QoS 1 message, waits for the PUBACK and disconnects; median of {startup_runs}, the clients alternating. The embedded component comes precompiled (`host/build.rs`), so loading it is a check and a copy, not a compile.\n");
    let _ = writeln!(md, "| client | spawn to exit | in process: start to PUBACK | peak RSS |\n|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(md, "| {} | {:.1} ms | {:.1} ms | {:.1} MiB |", r.client, r.wall_ms, r.to_puback_ms, r.peak_rss_kib as f64 / 1024.0);
    }
    drop(broker);

    // 1b. QoS 1 again, with the broker among the peers (see BROKER_SESSION).
    let broker = broker::start(Session::Parent)?;
    let shared = peers.measure(broker.port, &["ours", "ours-post", "ours-loop", "rumqttc"], &[1])?;
    drop(broker);
    let _ = writeln!(md, "\n### QoS 1 with Mosquitto in the harness's session\n\nThe same runs as above, QoS 1 only, with Mosquitto started as the harness's own child: in the peers' session and scheduling group, where it competes thread for thread with the client being measured (see above). Kept beside the main table so that neither placement's figures are hidden; measured after it, in the same run.\n");
    peer_table(&mut md, &shared);

    // 1c. One publish in flight: every turn of every client handles a packet or two.
    let broker = broker::start(Session::Own)?;
    let lockstep = Peers { window: 1, count: (count / 5).max(1), paho: None, ..peers };
    let one = lockstep.measure(broker.port, &["ours", "ours-loop", "rumqttc"], &[1])?;
    drop(broker);
    let _ = writeln!(md, "\n### QoS 1, one publish in flight\n\n{} messages, in-flight window 1 (and one publish waiting, as rumqttc's request channel of 1 holds it), Mosquitto in a session of its own: a device that publishes a reading and waits for its PUBACK, as `mqtt_as` is used. Nothing batches here, so each message pays every fixed cost of a turn: a wake-up, a `poll` into the component and its imports (`recv`, `send`), the events' way out; the table above, at a window of 100, spreads them over many messages. It also bears on the main table's QoS 1 p99: a run's slowest 1 % falls in stretches of a few ms where the pipeline slows to under half its rate (`peer --latencies FILE` writes each message's arrival and latency), the 200 publishes outstanding then waiting 200 ÷ that rate, and in those stretches the clients and the broker hand packets on a few at a time, so these fixed costs set the pace there too.\n", lockstep.count);
    peer_table(&mut md, &one);

    // 2. The boundary.
    eprintln!("boundary …");
    let b = local::boundary(quick)?;
    let _ = writeln!(md, "\n## Cost of the host/component boundary\n\nIn-memory loopback platform, no sockets; median of batches.\n");
    let _ = writeln!(md, "| what | figure |\n|---|---|");
    let _ = writeln!(md, "| load the embedded component, precompiled at build time (Engine + InstancePre) | {:.2} ms |", b.load_ms);
    let _ = writeln!(md, "| … compiling it instead (`ComponentFile::from_bytes`, what a component file costs) | {:.0} ms |", b.compile_ms);
    let _ = writeln!(md, "| instantiate + create a client | {:.0} µs |", b.instantiate_us);
    let _ = writeln!(md, "| idle `poll` (target < 1 µs) | {:.2} µs |", b.idle_poll_ns / 1000.0);
    let _ = writeln!(md, "| QoS 0 publish, 100 B → bytes on the wire (a `poll` per 256 publishes sends them) | {:.2} µs |", b.qos0_to_wire_ns / 1000.0);
    let _ = writeln!(md, "| QoS 1 publish, 100 B → PUBACK handled | {:.2} µs |", b.qos1_to_puback_ns / 1000.0);
    let _ = writeln!(
        md,
        "| … the same under `Watchdog::Fuel`, as the simulator runs the component (every other figure here: `Watchdog::Clock`) | {:.2} µs |",
        b.qos1_to_puback_fuel_ns / 1000.0
    );

    eprintln!("store …");
    md.push_str(&store_section(quick)?);

    // 3. Size and memory.
    eprintln!("size and memory …");
    let s = local::size_and_memory(quick)?;
    let kib = |n: usize| format!("{n} B ({:.1} KiB)", n as f64 / 1024.0);
    let _ = writeln!(md, "\n## Component size and memory\n\n| what | figure | target |\n|---|---|---|");
    let _ = writeln!(md, "| component (as shipped) | {} | |", kib(s.component));
    let _ = writeln!(md, "| core module inside it (rustc `opt-level = \"z\"`, then `wasm-opt -Oz` in the build) | {} | |", kib(s.core_module));
    let _ = writeln!(md, "| its code (the code section) | {} | < 64 KiB |", kib(s.code));
    let _ = writeln!(md, "| core module as rustc makes it, before `wasm-opt` | {} | |", kib(s.rustc_core_module));
    let _ = writeln!(md, "| its code | {} | |", kib(s.rustc_code));
    let _ = writeln!(md, "| linear memory after connecting | {} ({} pages) | |", kib(s.memory_start), s.memory_start / 65536);
    let _ = writeln!(
        md,
        "| linear memory, most during {} QoS 1 publishes with 100 in flight | {} ({} pages) | < 256 KiB |",
        if quick { 1_000 } else { 10_000 },
        kib(s.memory_peak),
        s.memory_peak / 65536
    );

    eprintln!("codec size …");
    let _ = writeln!(md, "\n### The codec decision\n\nThe same job (decode a stream of every MQTT packet type, 3.1.1 and 5.0, and encode each again; `bench/codec-size/`) built for wasm32 with the component's size settings, on each codec. Each probe is checked to round-trip a sample stream before its size counts. The component itself carries less of our codec: it decodes only what a broker sends.\n");
    let _ = writeln!(md, "| codec | probe module | ratio |\n|---|---|---|");
    let sizes = codec_size::measure()?;
    for c in &sizes {
        let _ = writeln!(md, "| {} | {} | {:.2}× |", c.codec, kib(c.bytes), c.bytes as f64 / sizes[0].bytes as f64);
    }

    // 4. Simulator speed.
    eprintln!("simulator speed …");
    // As `mqtt-sim` runs it: under fuel, so that a run repeats exactly.
    let component = mqtt_host::ComponentFile::embedded_with(mqtt_host::Watchdog::Fuel)?;
    let sp = simulated::speed(&component, if quick { 1 } else { 3 }, &fleets, if quick { 3600.0 } else { 86_400.0 })?;
    let _ = writeln!(md, "\n## Simulator speed\n\nOne device, keepalive 60 s, a QoS 1 reading every 5 s, a 60 s outage every hour (`bench/day-long-hourly-outages.toml`); target ≥ 10,000× real time.\n");
    let _ = writeln!(md, "| variant | simulated | simulated / wall | turmoil alone: the same hosts and ticks, nothing running |\n|---|---|---|---|");
    for d in &sp.single {
        let _ = writeln!(md, "| tick and latency {} ms | {:.1} h | {:.0}× | {:.0}× |", d.tick_ms, d.sim_s / 3600.0, d.ratio, d.floor);
    }
    let _ = writeln!(md, "\n| fleet | devices per simulated host | simulated | wall | device-hours per wall minute | QoS 1 lost | dropped by the broker |\n|---|---|---|---|---|---|---|");
    for f in &sp.fleets {
        let _ = writeln!(
            md,
            "| {} devices | {} | {:.2} h | {:.1} s | {:.0} | {} | {} |",
            f.devices, f.per_host, f.hours, f.wall_s, f.device_hours_per_min, f.lost, f.broker_dropped
        );
    }
    let _ = writeln!(md, "{}", FLEET_SCALING);

    // 5. Recovery.
    eprintln!("recovery …");
    let seeds = if quick { 2 } else { 20 };
    let r = simulated::recovery(&component, seeds)?;
    let span = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        if v.is_empty() {
            "–".to_string()
        } else {
            format!("median {} ms, max {} ms (n = {})", v[v.len() / 2], v[v.len() - 1], v.len())
        }
    };
    let _ = writeln!(md, "\n## Recovery\n\nIn the simulator, default client config (keepalive 60 s, response time 10 s), 5 ms one-way latency, QoS 1 every 200 ms; seeds 1..={}. Target: resume within 2 round trips plus backoff (≤ 1 s) after the link returns.\n", r.seeds);
    let _ = writeln!(md, "| what | figure |\n|---|---|");
    let _ = writeln!(md, "| link restored → first PUBACK | {} |", span(&r.link_to_puback_ms));
    let _ = writeln!(md, "| link silent (WiFi still up) → client reports down | {} |", span(&r.silent_to_down_ms));
    let _ = writeln!(md, "| silent link healed → first PUBACK | {} |", span(&r.silent_end_to_puback_ms));
    let _ = writeln!(md, "\nOn real network namespaces (veth, Mosquitto, keepalive 10 s, response time 2 s) the rig prints the same figures per fault: `cargo test --release -p mqtt-board --test netns_outages -- --nocapture` (needs root); its latest figures are in the README.");

    std::fs::write(&cli.out, &md)?;
    println!("{md}");
    eprintln!("wrote {}", cli.out.display());
    Ok(())
}
