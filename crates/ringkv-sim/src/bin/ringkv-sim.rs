//! `ringkv-sim`: runs seeds of the deterministic simulation and checks each
//! run's history; a failing seed prints the command that replays it.
//!
//! One seed runs in this process. Several seeds (or `--twice`) run each in
//! a child process of its own, `--jobs` at a time: a run's course depends
//! on everything the process did before it (the standard library's
//! hash-map keys are drawn once per thread; ractor numbers actors
//! process-wide), so only a fresh process makes a seed's run the same as
//! its replay.

use std::collections::VecDeque;
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ringkv_core::parse_duration;
use ringkv_sim::{SimOptions, run};

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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RUST_LOG"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(SimTime)
        .init();
    let args = Args::parse();
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
    let opts = SimOptions { seed: args.seed, duration: args.duration, nodes: args.nodes, clients: args.clients };
    let report = match run(&opts) {
        Ok(report) => report,
        Err(e) => {
            println!("seed {}: FAILED to run: {e:#}\n  replay: {}", opts.seed, opts.replay_command());
            return ExitCode::FAILURE;
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
        "seed {}: history {:016x}, {} operations ({} acknowledged), {} faults, {:.0} s simulated, \
         members live after {:.1} s, formed after {:.1} s",
        report.seed,
        report.history_hash,
        report.operations,
        report.succeeded,
        report.faults.len(),
        report.simulated.as_secs_f64(),
        report.members_after.map_or(f64::NAN, |t| t.as_secs_f64()),
        report.formed_after.map_or(f64::NAN, |t| t.as_secs_f64()),
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
    println!("  {promised} violations; the faults:");
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
    hash: Option<String>,
    output: String,
}

fn child(args: &Args, seed: u64) -> Child {
    let exe = std::env::current_exe().expect("the running binary's path");
    let output = Command::new(exe)
        .args(["--seed", &seed.to_string(), "--duration", &format!("{}ms", args.duration.as_millis())])
        .args(["--nodes", &args.nodes.to_string(), "--clients", &args.clients.to_string()])
        .env_remove("RUST_LOG")
        .output();
    match output {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let hash = text.split("history ").nth(1).and_then(|rest| rest.split(',').next()).map(str::to_string);
            match output.status.success() && hash.is_some() {
                true => Child { ok: true, hash, output: text },
                false => {
                    Child { ok: false, hash, output: format!("{text}{}", String::from_utf8_lossy(&output.stderr)) }
                }
            }
        }
        Err(e) => Child { ok: false, hash: None, output: format!("seed {seed}: cannot start a child process: {e}\n") },
    }
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
                    let first = child(args, seed);
                    let mut problem = (!first.ok).then(|| first.output.clone());
                    if problem.is_none() && args.twice {
                        let second = child(args, seed);
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
