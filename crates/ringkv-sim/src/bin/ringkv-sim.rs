//! `ringkv-sim`: runs seeds of the deterministic simulation and checks each
//! run's history; a failing seed prints the command that replays it, and
//! `--minimize` cuts its schedule down to the episodes the failure needs.
//!
//! Exit codes: 0 every seed passed; 2 a single seed could not be run (nor,
//! with `--minimize`, its first run); 1 any other failure.
//!
//! One seed runs in this process. Several seeds (or `--twice`) run each in
//! a child process of its own, `--jobs` at a time: a run's course depends
//! on everything the process did before it (the standard library's
//! hash-map keys are drawn once per thread; ractor numbers actors
//! process-wide), so only a fresh process makes a seed's run the same as
//! its replay.

use std::collections::{BTreeSet, VecDeque};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ringkv_core::parse_duration;
use ringkv_sim::{SimOptions, Storage, run, schedule};

#[derive(Parser)]
#[command(about = "Run ringkv clusters in simulation, one seed after another")]
struct Args {
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds, from --seed on.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Simulated time the clients run under faults, per seed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Run each seed twice, in two processes, and fail if the histories
    /// differ.
    #[arg(long)]
    twice: bool,
    /// The most wall time one seed's process may take before it is killed
    /// and reported as stalled (batches and minimization only).
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    seed_timeout: Duration,
    /// Seeds run at once (each in its own process).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Write the history of a single seed to this file, one JSON line per
    /// operation (the chaos suite's format), to follow a key through a
    /// failure.
    #[arg(long, conflicts_with_all = ["seeds", "twice"])]
    history: Option<std::path::PathBuf>,
    /// Print the faults of a single seed as they were applied, passing or
    /// not.
    #[arg(long, conflicts_with_all = ["seeds", "twice"])]
    faults: bool,
    /// Leave these episodes (numbered as `--minimize` prints them) out of
    /// the seed's schedule: a minimized failure's replay.
    #[arg(long, value_delimiter = ',')]
    without: Vec<usize>,
    /// Cut a failing seed's schedule down, an episode at a time, to the
    /// episodes without any one of which it passes; print them and the
    /// command that replays the rest. Each try is a run in a child process.
    #[arg(long, conflicts_with_all = ["seeds", "twice", "history"])]
    minimize: bool,
    /// The nodes' storage: memory, always (a log synced before each
    /// acknowledgement) or everysec; drawn from each seed if not given.
    #[arg(long)]
    storage: Option<Storage>,
}

impl Args {
    fn opts(&self, seed: u64) -> SimOptions {
        SimOptions {
            seed,
            duration: self.duration,
            nodes: self.nodes,
            clients: self.clients,
            without: self.without.iter().copied().collect(),
            storage: self.storage,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RUST_LOG"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(SimTime)
        .init();
    let args = Args::parse();
    if args.minimize {
        return minimize(&args);
    }
    if args.seeds == 1 && !args.twice {
        return one(&args);
    }
    many(&args)
}

/// Log lines carry simulated time, the only time a run's events have.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>9.3}s", t.as_secs_f64()),
            None => write!(w, "{:>10}", "-"),
        }
    }
}

/// Runs `--seed` here and prints its report.
fn one(args: &Args) -> ExitCode {
    let opts = args.opts(args.seed);
    let report = match run(&opts) {
        Ok(report) => report,
        Err(e) => {
            println!("seed {}: FAILED to run: {e:#}\n  replay: {}", opts.seed, opts.replay_command());
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.history {
        let lines: String = report.history.iter().map(|r| r.to_json() + "\n").collect();
        if let Err(e) = std::fs::write(path, lines) {
            println!("seed {}: cannot write the history to {}: {e}", opts.seed, path.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "seed {}: history {:016x}, {} operations ({} acknowledged), {} faults, storage {}, {:.0} s simulated, \
         members live after {:.1} s, formed after {:.1} s, replicas identical {} after settling",
        report.seed,
        report.history_hash,
        report.operations,
        report.succeeded,
        report.faults.len(),
        report.storage,
        report.simulated.as_secs_f64(),
        report.members_after.map_or(f64::NAN, |t| t.as_secs_f64()),
        report.formed_after.map_or(f64::NAN, |t| t.as_secs_f64()),
        report.converged_after.map_or("NOT within the bound".to_string(), |t| format!("{:.1} s", t.as_secs_f64())),
    );
    let promised = report.violations.iter().filter(|v| v.is_promised()).count();
    let unpromised = report.violations.len() - promised;
    if unpromised > 0 {
        println!("  {unpromised} session-order reads (counted, not promised; see the chaos suite's checker)");
    }
    if promised == 0 {
        if args.faults {
            println!("  the faults:");
            report.faults.iter().for_each(|fault| println!("    {fault}"));
        }
        return ExitCode::SUCCESS;
    }
    let kinds: BTreeSet<&str> = report.violations.iter().filter(|v| v.is_promised()).map(|v| v.kind()).collect();
    println!("  {promised} violations ({}); the faults:", kinds.into_iter().collect::<Vec<_>>().join(", "));
    report.faults.iter().for_each(|fault| println!("    {fault}"));
    for violation in report.violations.iter().filter(|v| v.is_promised()).take(20) {
        println!("  {violation}");
    }
    println!("  replay: {}", opts.replay_command());
    ExitCode::FAILURE
}

/// What a child process printed about its seed.
struct Child {
    ok: bool,
    /// The run finished and its history broke a promise.
    violated: bool,
    hash: Option<String>,
    /// The kinds of promise it broke, as its report names them.
    kinds: BTreeSet<String>,
    output: String,
}

/// Runs one seed in a child process, for at most `limit` of wall time: a
/// run whose simulated time stops (a task that never lets its host idle,
/// like the log writer that seed 1189 found spinning) would otherwise hold
/// its job for ever. Such a run is killed and reported as failed.
fn child(opts: &SimOptions, limit: Duration) -> Child {
    let exe = std::env::current_exe().expect("the running binary's path");
    let spawned = Command::new(exe)
        .args(opts.args())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let process = match spawned {
        Ok(process) => process,
        Err(e) => {
            return Child {
                ok: false,
                violated: false,
                hash: None,
                kinds: BTreeSet::new(),
                output: format!("seed {}: cannot start a child process: {e}\n", opts.seed),
            };
        }
    };
    let pid = process.id();
    let (done, waited) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done.send(process.wait_with_output());
    });
    let output = match waited.recv_timeout(limit) {
        Ok(output) => output,
        Err(_) => {
            // The waiter reaps the child only once it has exited, so the pid
            // is still the child's.
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            let _ = waiter.join();
            return Child {
                ok: false,
                violated: false,
                hash: None,
                kinds: BTreeSet::new(),
                output: format!(
                    "seed {}: STALLED: no result within {} s of wall time (its simulated time stopped, or the \
                     machine is far slower than --seed-timeout allows)\n  replay: {}\n",
                    opts.seed,
                    limit.as_secs(),
                    opts.replay_command()
                ),
            };
        }
    };
    match output {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let hash = text.split("history ").nth(1).and_then(|rest| rest.split(',').next()).map(str::to_string);
            let ok = output.status.success() && hash.is_some();
            let violated = output.status.code() == Some(1) && hash.is_some();
            let kinds = text
                .lines()
                .find_map(|line| line.trim_start().split_once(" violations (")?.1.split_once(')'))
                .map(|(kinds, _)| kinds.split(", ").map(str::to_string).collect())
                .unwrap_or_default();
            let output = match ok {
                true => text,
                false => format!("{text}{}", String::from_utf8_lossy(&output.stderr)),
            };
            Child { ok, violated, hash, kinds, output }
        }
        Err(e) => Child {
            ok: false,
            violated: false,
            hash: None,
            kinds: BTreeSet::new(),
            output: format!("seed {}: cannot read its child process: {e}\n", opts.seed),
        },
    }
}

/// Runs `--seed`, and if its history breaks a promise, leaves episodes of
/// its schedule out while it still does (see [`schedule::minimize`]).
fn minimize(args: &Args) -> ExitCode {
    let started = Instant::now();
    let opts = args.opts(args.seed);
    let whole = child(&opts, args.seed_timeout);
    if !whole.violated {
        print!("{}", whole.output);
        println!(
            "seed {}: nothing to minimize: the run {}",
            opts.seed,
            if whole.ok { "passes" } else { "failed to run" }
        );
        return if whole.ok { ExitCode::SUCCESS } else { ExitCode::from(2) };
    }
    let schedule = opts.schedule();
    println!("seed {}: fails with {} episodes; leaving them out one at a time", opts.seed, schedule.episodes().len());
    let mut runs = 0;
    let dropped = schedule::minimize(&schedule.episodes(), |trial| {
        let mut without = opts.without.clone();
        without.extend(trial);
        let tried = SimOptions { without, ..opts.clone() };
        let run = child(&tried, args.seed_timeout);
        runs += 1;
        let left = tried.schedule().episodes().len();
        // A different broken promise is a different bug: a schedule cut down
        // to it would replay that one instead (seed 1808's leave alone once
        // tripped the simulator's own convergence check, not its lost write).
        let same = run.violated && !run.kinds.is_disjoint(&whole.kinds);
        let verdict = match (same, run.violated, run.ok) {
            (true, _, _) => "still fails",
            (false, true, _) => "fails differently (counted as passing)",
            (false, false, true) => "passes",
            (false, false, false) => "failed to run (counted as passing)",
        };
        println!("  without {:?} ({left} episodes left): {verdict}", trial.iter().collect::<Vec<_>>());
        same
    });
    let mut without: BTreeSet<usize> = opts.without.clone();
    without.extend(dropped);
    let minimal = SimOptions { without, ..opts };
    println!(
        "seed {}: {} of {} episodes are needed to fail ({runs} runs, {:.1} s wall time):",
        minimal.seed,
        minimal.schedule().episodes().len(),
        schedule.episodes().len(),
        started.elapsed().as_secs_f64()
    );
    minimal.schedule().faults.iter().for_each(|planned| println!("    {planned}"));
    println!("  replay: {}", minimal.replay_command());
    ExitCode::FAILURE
}

fn many(args: &Args) -> ExitCode {
    let started = Instant::now();
    let seeds: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new((args.seed..args.seed + args.seeds).collect()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            let (seeds, failed) = (seeds.clone(), failed.clone());
            scope.spawn(move || {
                loop {
                    let Some(seed) = seeds.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { return };
                    let first = child(&args.opts(seed), args.seed_timeout);
                    let mut problem = (!first.ok).then(|| first.output.clone());
                    if problem.is_none() && args.twice {
                        let second = child(&args.opts(seed), args.seed_timeout);
                        if !second.ok {
                            problem = Some(second.output);
                        } else if second.hash != first.hash {
                            problem = Some(format!(
                                "seed {seed}: not deterministic: history {} then {}\n",
                                first.hash.as_deref().unwrap_or("?"),
                                second.hash.as_deref().unwrap_or("?")
                            ));
                        }
                    }
                    match problem {
                        None => print!("{}", first.output),
                        Some(problem) => {
                            print!("{problem}");
                            failed.lock().unwrap_or_else(|e| e.into_inner()).push(seed);
                        }
                    }
                }
            });
        }
    });
    let mut failed = failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    failed.sort_unstable();
    println!(
        "{} seeds of {} s simulated{}: {} failed{}, {:.1} s wall time",
        args.seeds,
        args.duration.as_secs(),
        if args.twice { ", each run twice" } else { "" },
        failed.len(),
        if failed.is_empty() { String::new() } else { format!(" ({failed:?})") },
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
