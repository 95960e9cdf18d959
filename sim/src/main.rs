//! `mqtt-sim`: replay outage scenarios against the real client component.
//!
//! Exit codes: 0 every expectation held, 1 one failed (named, with the replay command),
//! 2 bad input (the file, line and key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mqtt_host::{ComponentFile, Watchdog};
use mqtt_sim::report;
use mqtt_sim::runner::{self, Outcome};
use mqtt_sim::scenario::Scenario;
use mqtt_sim::shard::{RunLine, Shard};

// Everything the commands print goes through these, not `println!`, which panics when stdout
// is gone (`mqtt-sim run … | head -1` closes it). A reader that stopped reading ends the
// output, not the run: its reports (`--junit`, `--json`, explore's files) are still written.
// Any other failure to write (a full disk) is an error, exit status 2.
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}
macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(args)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(2);
    }
}

#[derive(Parser)]
#[command(
    name = "mqtt-sim",
    version,
    about = "Deterministic outage simulator for the MQTT client component",
    after_help = "Exit status: 0 when every run passed (and, for `faults`, every fault was caught); 1 when a run failed or a fault went uncaught; 2 on bad input (a broken scenario file, a bad flag or range) or an error writing a report."
)]
struct Cli {
    /// Load this component instead of the one built into mqtt-sim.
    #[arg(long, global = true)]
    component: Option<PathBuf>,
    /// Run a deliberately broken client (a test-only build; see `mqtt-sim faults`) to see the
    /// suite catch it, e.g. `--client-fault drop-republish`.
    #[arg(long, global = true, value_name = "FAULT")]
    client_fault: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario with one seed and print the timeline and the verdict.
    Run {
        file: PathBuf,
        /// Seed (default: the scenario's first).
        #[arg(long)]
        seed: Option<u64>,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
        /// Write every event, with simulated timestamps, as JSON Lines.
        #[arg(long, value_name = "FILE.jsonl")]
        trace: Option<PathBuf>,
        /// Write an HTML page drawing the timeline.
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
    },
    /// Run scenarios (files or directories) over a range of seeds.
    Sweep {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Seed range, inclusive: `1..500` or `7..7`.
        #[arg(long, default_value = "1..50")]
        seeds: String,
        /// Parallel workers (default: the machine's cores).
        #[arg(long, value_parser = at_least_one())]
        jobs: Option<usize>,
        /// Run only shard I of N (1-based), for splitting a sweep across machines. Unset: taken
        /// from the environment when an engine names it (MQTT_SIM_SHARD=I/N; Slurm arrays'
        /// SLURM_ARRAY_TASK_ID/COUNT; a Kubernetes Indexed Job's JOB_COMPLETION_INDEX with
        /// MQTT_SIM_SHARDS=N); otherwise the whole sweep. `mqtt-sim merge` puts shards back
        /// together.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Also write a JUnit XML report: a test suite per scenario, a test case per seed,
        /// each failure with its failed expectations and the replay command.
        #[arg(long, value_name = "FILE.xml")]
        junit: Option<PathBuf>,
        /// Also write one JSON object per run (JSON Lines): the verdict, the counts, the
        /// expectations and the trace hash.
        #[arg(long, value_name = "FILE.jsonl")]
        json: Option<PathBuf>,
    },
    /// Put the `sweep --json` outputs of a sharded sweep back together: one table, one
    /// verdict, and a missing, repeated or foreign shard reported (exit 2).
    Merge {
        #[arg(required = true, value_name = "FILE.jsonl")]
        files: Vec<PathBuf>,
        /// Also write the merged runs as one JUnit XML report.
        #[arg(long, value_name = "FILE.xml")]
        junit: Option<PathBuf>,
    },
    /// Validate scenario files without running them.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run scenarios against every deliberate client fault and report which scenario
    /// catches which, and which fault nothing catches.
    Faults {
        /// Scenario files or directories.
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "1..2")]
        seeds: String,
        #[arg(long, value_parser = at_least_one())]
        jobs: Option<usize>,
        /// Also write the table as Markdown.
        #[arg(long, value_name = "FILE.md")]
        markdown: Option<PathBuf>,
    },
    /// Search for a scenario that breaks the client: draw scenarios from the seed (configs,
    /// traffic and overlapping faults of every kind), run each with the expectations a
    /// correct client meets in it, and shrink every new kind of failure to a minimal
    /// scenario file. Exit status: 0 nothing found, 1 found (files in --out), 2 bad input.
    Explore {
        /// How many scenarios to run (default 1000 unless --time is given).
        #[arg(long, conflicts_with = "time", value_parser = clap::value_parser!(u64).range(1..))]
        runs: Option<u64>,
        /// How long to search, e.g. `10m` or `1h 30m`.
        #[arg(long, value_parser = search_time)]
        time: Option<std::time::Duration>,
        /// Exploration seed: the same seed draws the same scenarios and shrinks to the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_parser = at_least_one())]
        jobs: Option<usize>,
        /// Run only every N-th scenario, starting at the I-th (1-based), to split a search
        /// across machines.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Where the shrunk scenario files go.
        #[arg(long, default_value = "explore-found")]
        out: PathBuf,
        /// Most runs one shrink may spend.
        #[arg(long, default_value_t = 400)]
        shrink_runs: usize,
        /// Stop at the first failure.
        #[arg(long)]
        first: bool,
    },
    /// Write the component this binary runs, for embedding in other hosts.
    Component {
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `explore` runs thousands of scenarios whose devices warn as designed (torn flash,
    // refused connections): only errors, unless RUST_LOG asks for more.
    let quiet = if matches!(cli.command, Command::Explore { .. }) { "error" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| quiet.into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What runs: a component, and the deliberate fault its clients show (if any).
struct Target {
    component: ComponentFile,
    fault: Option<String>,
}

impl Target {
    fn new(path: &Option<PathBuf>, fault: Option<String>) -> anyhow::Result<Target> {
        if let Some(f) = &fault {
            anyhow::ensure!(
                mqtt_protocol::TestFault::from_name(f).is_some(),
                "--client-fault {f:?}: not a known fault; one of {}",
                mqtt_protocol::TestFault::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            );
        }
        let component = match (path, &fault) {
            // Fuel, not the clock: a runaway call then traps at the same point on every run.
            (Some(p), _) => ComponentFile::from_file_with(p, Watchdog::Fuel)?,
            (None, Some(_)) => ComponentFile::faulty()?,
            (None, None) => ComponentFile::embedded_with(Watchdog::Fuel)?,
        };
        Ok(Target { component, fault })
    }

    fn run(&self, sc: &Scenario, name: &str, seed: u64) -> Outcome {
        runner::run_with_fault(sc, name, seed, &self.component, self.fault.as_deref())
    }

    /// [`Target::run`] with a progress bar on a terminal, shown once the run has taken a
    /// second (a short run does not flash one): simulated seconds out of the scenario's.
    fn run_showing_progress(&self, sc: &Scenario, name: &str, seed: u64) -> Outcome {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_length(sc.total_ms() / 1000);
        let style = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s simulated, {elapsed} elapsed, eta {eta}");
        bar.set_style(style.unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        // Wall-clock time only decides when the bar appears; the run never sees it.
        let show_at = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut shown = false;
        let mut watch = |elapsed_ms: u64| {
            if !shown && std::time::Instant::now() >= show_at {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                shown = true;
            }
            bar.set_position(elapsed_ms / 1000);
        };
        let o = runner::run_watched(sc, name, seed, &self.component, self.fault.as_deref(), &mut watch);
        bar.finish_and_clear();
        o
    }

    /// The flag a replay command needs.
    fn flag(&self) -> String {
        self.fault.as_ref().map(|f| format!(" --client-fault {f}")).unwrap_or_default()
    }
}

/// Runs `work` on a pool of `jobs` threads (rayon); `each` sees every result as it comes,
/// and the results come back in the order of `work`.
fn parallel<W: Sync, R: Send>(work: &[W], jobs: Option<usize>, run: impl Fn(&W) -> R + Sync + Send, each: impl Fn(&R) + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build().expect("starting the worker threads");
    pool.install(|| {
        work.par_iter()
            .map(|w| {
                let r = run(w);
                each(&r);
                r
            })
            .collect()
    })
}

fn name_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { file, seed, json, trace, report: html } => {
            let sc = Scenario::load(&file)?;
            let target = Target::new(&cli.component, cli.client_fault.clone())?;
            let seed = seed.unwrap_or(sc.seeds[0]);
            let o = target.run_showing_progress(&sc, &name_of(&file), seed);
            if let Some(path) = trace {
                std::fs::write(&path, o.trace.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = html {
                std::fs::write(&path, report::html(&o)).with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                outln!("{}", serde_json::to_string(&o)?);
            } else {
                outln!("{} (seed {seed}){}", name_of(&file), if sc.description.is_empty() { String::new() } else { format!(": {}", sc.description.trim()) });
                out!("{}", report::summary(&o));
                outln!("{}", if o.passed { "PASSED" } else { "FAILED" });
            }
            if !o.passed {
                eprintln!("replay: mqtt-sim{} run {} --seed {seed}", target.flag(), file.display());
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files } => {
            let mut bad = false;
            for f in files {
                match Scenario::load(&f) {
                    Ok(_) => outln!("ok: {}", f.display()),
                    Err(e) => {
                        eprintln!("error: {e}");
                        bad = true;
                    }
                }
            }
            Ok(if bad { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Command::Component { out } => {
            let comp = Target::new(&cli.component, cli.client_fault.clone())?.component;
            std::fs::write(&out, comp.bytes()).with_context(|| format!("writing {}", out.display()))?;
            outln!("wrote {} ({} bytes)", out.display(), comp.bytes().len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep { paths, seeds, jobs, shard, junit, json } => {
            let target = Target::new(&cli.component, cli.client_fault.clone())?;
            sweep(&target, paths, &seeds, jobs, shard.as_deref(), Reports { junit, json })
        }
        Command::Faults { paths, seeds, jobs, markdown } => faults(&cli.component, paths, &seeds, jobs, markdown),
        Command::Merge { files, junit } => merge(&files, junit.as_deref()),
        Command::Explore { runs, time, seed, jobs, shard, out, shrink_runs, first } => {
            let budget = match (runs, time) {
                (_, Some(t)) => mqtt_sim::explore::Budget::Time(t),
                (n, None) => mqtt_sim::explore::Budget::Runs(n.unwrap_or(1000)),
            };
            let shard = match shard {
                Some(s) => Shard::parse(&s).map_err(anyhow::Error::msg)?,
                None => Shard::WHOLE,
            };
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let opts = mqtt_sim::explore::Options { seed, budget, jobs, shard, shrink_runs, first_only: first };
            let target = Target::new(&cli.component, cli.client_fault.clone())?;
            explore(&target, &cli.component, &opts, &out)
        }
    }
}

/// A count of workers, 1 or more (0 would run nothing, for ever).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// `explore --time`: a duration in humantime's words, longer than 0 (a search of no time
/// runs nothing and would report that nothing failed).
fn search_time(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("a search needs some time: give more than 0 (e.g. 10m)".into()),
        r => r.map_err(|e| e.to_string()),
    }
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s.split_once("..").with_context(|| format!("--seeds {s:?}: expected A..B"))?;
    let b = b.trim_start_matches('=');
    let (a, b): (u64, u64) =
        (a.parse().with_context(|| format!("--seeds: {a:?} is not a number"))?, b.parse().with_context(|| format!("--seeds: {b:?} is not a number"))?);
    anyhow::ensure!(a <= b, "--seeds {s}: the range is empty");
    Ok((a, b))
}

/// Most runs one sweep (or one shard of one) holds. Each run's outcome is kept for the table
/// and the reports, so a mistyped range is refused up front rather than aborting on an
/// allocation; at the simulator's pace a million runs are days of CPU.
const MAX_RUNS: usize = 1_000_000;

/// How many runs `per_seed` runs for each seed of `a..=b` make, split over `shards`: each
/// shard's share within [`MAX_RUNS`].
fn sweep_size(seeds: &str, (a, b): (u64, u64), per_seed: usize, shards: usize) -> anyhow::Result<usize> {
    let total = usize::try_from(b - a).ok().and_then(|n| n.checked_add(1)).and_then(|n| n.checked_mul(per_seed));
    match total {
        Some(total) if total.div_ceil(shards.max(1)) <= MAX_RUNS => Ok(total),
        _ => anyhow::bail!(
            "--seeds {seeds} makes {} runs ({per_seed} per seed), more than one sweep holds ({MAX_RUNS}{}); narrow the range{}",
            (u128::from(b - a) + 1) * per_seed as u128,
            if shards > 1 { " per shard" } else { "" },
            if shards > 1 { " or use more shards" } else { "" }
        ),
    }
}

fn scenario_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    mqtt_sim::scenario::files(paths).map_err(anyhow::Error::msg)
}

/// Files a sweep writes besides its table.
struct Reports {
    junit: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn sweep(target: &Target, paths: Vec<PathBuf>, seeds: &str, jobs: Option<usize>, shard: Option<&str>, reports: Reports) -> anyhow::Result<ExitCode> {
    let flag = target.flag();
    let (a, b) = parse_range(seeds)?;
    let shard = match shard {
        Some(s) => Shard::parse(s).map_err(anyhow::Error::msg)?,
        None => match Shard::from_env(|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)? {
            Some((s, from)) => {
                eprintln!("shard {}/{} (from {from})", s.index, s.count);
                s
            }
            None => Shard::WHOLE,
        },
    };
    let files = scenario_files(&paths)?;
    let mut scenarios = Vec::new();
    for f in &files {
        scenarios.push((f.clone(), Scenario::load(f)?));
    }
    // Every (scenario, seed) pair in a fixed order, scenario by scenario; a shard takes
    // every N-th, counted without listing the others.
    let sweep_runs = sweep_size(seeds, (a, b), scenarios.len(), shard.count)?;
    let per_scenario = (b - a) as usize + 1;
    let work: Vec<(usize, u64)> = shard.picks(sweep_runs).map(|k| (k / per_scenario, a + (k % per_scenario) as u64)).collect();
    let bar = indicatif::ProgressBar::new(work.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {elapsed} elapsed, eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut results = parallel(
        &work,
        jobs,
        |&(i, seed)| {
            let (path, sc) = &scenarios[i];
            let mut o = target.run(sc, &name_of(path), seed);
            // Every outcome is kept to the end, and nothing here reads a trace (its hash is
            // in the outcome). Kept too, each held ~40 KB for a 60 s scenario until the end:
            // tens of GB for a million-run sweep.
            o.trace = Vec::new();
            (path.clone(), o)
        },
        |(path, o)| {
            if !o.passed {
                bar.println(format!("FAIL {} seed {}: mqtt-sim{flag} run {} --seed {}", o.scenario, o.seed, path.display(), o.seed));
            }
            bar.inc(1);
        },
    )
    .into_iter()
    .map(|(_, o)| o)
    .collect::<Vec<_>>();
    bar.finish_and_clear();
    results.sort_by(|x, y| (x.scenario.as_str(), x.seed).cmp(&(y.scenario.as_str(), y.seed)));
    let failed_total = print_table(&results);
    outln!("{} runs, {} failed, {:.1} s wall", results.len(), failed_total, started.elapsed().as_secs_f64());
    let replay = |o: &Outcome| {
        let path = scenarios.iter().find(|(p, _)| name_of(p) == o.scenario).map(|(p, _)| p.display().to_string()).unwrap_or_default();
        format!("mqtt-sim{flag} run {path} --seed {}", o.seed)
    };
    for o in results.iter().filter(|o| !o.passed) {
        let failed: Vec<&str> = o.expectations.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
        outln!("  replay: {}   # {}", replay(o), failed.join(", "));
    }
    if let Some(path) = &reports.junit {
        let runs: Vec<mqtt_sim::junit::Run<'_>> = results.iter().map(|o| mqtt_sim::junit::Run { outcome: o, replay: replay(o) }).collect();
        std::fs::write(path, mqtt_sim::junit::report(&runs)).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &reports.json {
        let mut lines = String::new();
        for o in &results {
            let line = RunLine { outcome: o.clone(), shard: format!("{}/{}", shard.index, shard.count), sweep_runs, replay: replay(o) };
            lines.push_str(&serde_json::to_string(&line)?);
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if failed_total > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The sweep table, a row per scenario (by name); returns how many runs failed.
fn print_table(results: &[Outcome]) -> usize {
    outln!("{:<44} {:>6} {:>6} {:>9} {:>6} {:>6} {:>10}", "scenario", "runs", "failed", "published", "lost", "dups", "sim s");
    let names: std::collections::BTreeSet<&str> = results.iter().map(|o| o.scenario.as_str()).collect();
    let mut failed_total = 0;
    for name in names {
        let rs: Vec<&Outcome> = results.iter().filter(|o| o.scenario == name).collect();
        let failed = rs.iter().filter(|o| !o.passed).count();
        failed_total += failed;
        outln!(
            "{:<44} {:>6} {:>6} {:>9} {:>6} {:>6} {:>10.0}",
            name,
            rs.len(),
            failed,
            rs.iter().map(|o| o.qos1_published).sum::<u64>(),
            rs.iter().map(|o| o.qos1_lost).sum::<u64>(),
            rs.iter().map(|o| o.duplicates).sum::<u64>(),
            rs.iter().map(|o| o.sim_seconds).sum::<f64>()
        );
    }
    failed_total
}

/// `mqtt-sim merge`: the shards of a sweep as one.
fn merge(files: &[PathBuf], junit: Option<&Path>) -> anyhow::Result<ExitCode> {
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| Ok((f.display().to_string(), std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)))
        .collect::<anyhow::Result<_>>()?;
    let merged = mqtt_sim::shard::merge(&texts);
    let results: Vec<Outcome> = merged.runs.iter().map(|r| r.outcome.clone()).collect();
    let failed = print_table(&results);
    outln!("{} runs, {} failed, from {} files", results.len(), failed, files.len());
    for r in merged.runs.iter().filter(|r| !r.outcome.passed) {
        let names: Vec<&str> = r.outcome.expectations.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
        outln!("  replay: {}   # {}", r.replay, names.join(", "));
    }
    if let Some(path) = junit {
        let runs: Vec<mqtt_sim::junit::Run<'_>> = merged.runs.iter().map(|r| mqtt_sim::junit::Run { outcome: &r.outcome, replay: r.replay.clone() }).collect();
        std::fs::write(path, mqtt_sim::junit::report(&runs)).with_context(|| format!("writing {}", path.display()))?;
    }
    for p in &merged.problems {
        eprintln!("error: {p}");
    }
    Ok(if !merged.problems.is_empty() {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `mqtt-sim explore`: the search, its progress bar, the files and the summary table.
fn explore(target: &Target, component: &Option<PathBuf>, opts: &mqtt_sim::explore::Options, out: &Path) -> anyhow::Result<ExitCode> {
    use mqtt_sim::explore::{self, Budget};
    // Made before the search, not at its first finding: a search can run for hours, and an
    // `--out` that cannot be a directory would lose what it found.
    std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    let bar = match opts.budget {
        Budget::Runs(n) => indicatif::ProgressBar::new(n),
        Budget::Time(t) => indicatif::ProgressBar::new(t.as_secs()),
    };
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {elapsed} {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let run = |sc: &Scenario, seed: u64| target.run(sc, "explore", seed);
    let how = format!(
        "mqtt-sim{} explore --seed {}{}",
        target.flag(),
        opts.seed,
        if opts.shard == Shard::WHOLE { String::new() } else { format!(" --shard {}/{}", opts.shard.index, opts.shard.count) }
    );
    // With a deliberate fault, the shipped client must pass what was found.
    let shipped = match &target.fault {
        Some(_) => Some(Target::new(component, None)?),
        None => None,
    };
    // Each finding is written as soon as it is shrunk; what went wrong writing is kept for
    // the exit status.
    let written = std::sync::Mutex::new(Vec::<(String, anyhow::Result<String>, String)>::new());
    let progress = |p: &explore::Progress| {
        let rate = p.runs as f64 / p.elapsed.as_secs_f64().max(1e-3);
        let doing = p.shrinking.as_ref().map(|f| format!(", shrinking a failure of {f}")).unwrap_or_default();
        bar.set_message(format!("{} runs, {} failed, {rate:.1} runs/s{doing}", p.runs, p.failed));
        bar.set_position(match opts.budget {
            Budget::Runs(_) => p.runs,
            Budget::Time(_) => p.elapsed.as_secs(),
        });
    };
    let found = |f: &explore::Finding| {
        let path = out.join(explore::file_name(f, opts.seed));
        let text = f.file(&how);
        let result =
            std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, &text)).with_context(|| format!("writing {}", path.display())).map(|()| {
                format!(
                    "{:<44} {:>7} {:>11} {:>7} {:>6} {:>7}  {}",
                    f.failed,
                    f.run,
                    f.seed,
                    explore::fault_count(&f.shrunk),
                    text.lines().count(),
                    f.shrink_runs,
                    path.display()
                )
            });
        if let Ok(line) = &result {
            bar.println(format!("found: {line}"));
        }
        written.lock().unwrap_or_else(|e| e.into_inner()).push((path.display().to_string(), result, text));
    };
    let summary = explore::explore(opts, &run, &explore::Watch { progress: &progress, found: &found });
    bar.finish_and_clear();
    outln!("{:<44} {:>7} {:>11} {:>7} {:>6} {:>7}  file", "fails", "run", "seed", "faults", "lines", "shrink");
    let mut unwritten = 0;
    for (path, result, text) in written.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let line = match result {
            Ok(line) => line,
            // Still a finding (the disk filled, say): its file goes to stdout instead.
            Err(e) => {
                unwritten += 1;
                outln!("{e:#}; the file would have been:\n{text}");
                continue;
            }
        };
        outln!("{line}");
        if let Some(shipped) = &shipped {
            let sc = Scenario::load(Path::new(&path))?;
            let seed = sc.seeds[0];
            let o = shipped.run(&sc, "explore", seed);
            outln!("    with the shipped client: {}", if o.passed { "passes" } else { "FAILS too (a finding for the shipped client)" });
        }
    }
    let secs = summary.wall.as_secs_f64();
    outln!(
        "{} runs ({} failed) in {secs:.0} s, {:.1} runs/s; {} kinds of failure found",
        summary.runs,
        summary.failed_runs,
        summary.runs as f64 / secs.max(1e-3),
        summary.findings.len()
    );
    outln!("{:<20} {:>8} {:>8}", "fault kind", "runs", "failed");
    for (kind, (n, failed)) in &summary.by_kind {
        outln!("{kind:<20} {n:>8} {failed:>8}");
    }
    anyhow::ensure!(unwritten == 0, "{unwritten} finding(s) could not be written to {} (their files are printed above)", out.display());
    Ok(if summary.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Every scenario against every deliberate client fault: which expectations catch what.
fn faults(path: &Option<PathBuf>, paths: Vec<PathBuf>, seeds: &str, jobs: Option<usize>, markdown: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (a, b) = parse_range(seeds)?;
    let files = scenario_files(&paths)?;
    let scenarios: Vec<(String, Scenario)> = files.iter().map(|f| Ok((name_of(f), Scenario::load(f)?))).collect::<anyhow::Result<_>>()?;
    let targets: Vec<Target> =
        mqtt_protocol::TestFault::ALL.iter().map(|(name, _)| Target::new(path, Some((*name).to_string()))).collect::<anyhow::Result<_>>()?;
    sweep_size(seeds, (a, b), targets.len() * scenarios.len(), 1)?;
    let work: Vec<(usize, usize, u64)> =
        (0..targets.len()).flat_map(|t| (0..scenarios.len()).flat_map(move |s| (a..=b).map(move |seed| (t, s, seed)))).collect();
    let bar = indicatif::ProgressBar::new(work.len() as u64);
    let results = parallel(
        &work,
        jobs,
        |&(t, s, seed)| {
            let (name, sc) = &scenarios[s];
            let o = targets[t].run(sc, name, seed);
            let failed: Vec<String> = o.expectations.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect();
            (t, s, failed)
        },
        |_| bar.inc(1),
    );
    bar.finish_and_clear();
    let mut md = String::from("| client fault | caught by (scenario: failed expectations) |\n|---|---|\n");
    let mut uncaught = Vec::new();
    for (t, (fault, _)) in mqtt_protocol::TestFault::ALL.iter().enumerate() {
        let mut by: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = std::collections::BTreeMap::new();
        for (_, s, failed) in results.iter().filter(|(rt, _, f)| *rt == t && !f.is_empty()) {
            by.entry(scenarios[*s].0.as_str()).or_default().extend(failed.iter().map(String::as_str));
        }
        let cell = if by.is_empty() {
            uncaught.push(*fault);
            "**nothing catches it**".to_string()
        } else {
            by.iter().map(|(sc, e)| format!("`{sc}`: {}", e.iter().copied().collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join("; ")
        };
        md.push_str(&format!("| `{fault}` | {cell} |\n"));
    }
    out!("{md}");
    outln!(
        "{} faults, {} caught, uncaught: {}",
        targets.len(),
        targets.len() - uncaught.len(),
        if uncaught.is_empty() { "none".to_string() } else { uncaught.join(", ") }
    );
    if let Some(p) = markdown {
        std::fs::write(&p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
