//! `ringkv-sim`: runs seeds of the deterministic simulation and checks each
//! run's history; a failing seed prints the command that replays it.

use std::process::ExitCode;
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
    /// Run each seed twice and fail if the two histories differ.
    #[arg(long)]
    twice: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RUST_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let started = Instant::now();
    let mut failed = 0;
    for seed in args.seed..args.seed + args.seeds {
        let opts = SimOptions { seed, duration: args.duration, nodes: args.nodes, clients: args.clients };
        let report = match run(&opts) {
            Ok(report) => report,
            Err(e) => {
                failed += 1;
                println!("seed {seed}: FAILED to run: {e:#}\n  replay: {}", opts.replay_command());
                continue;
            }
        };
        let mut problems: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
        if args.twice {
            match run(&opts) {
                Ok(again) if again.history_hash == report.history_hash => {}
                Ok(again) => problems.push(format!(
                    "not deterministic: history {:016x} then {:016x}",
                    report.history_hash, again.history_hash
                )),
                Err(e) => problems.push(format!("the second run failed: {e:#}")),
            }
        }
        println!(
            "seed {seed}: {} operations ({} acknowledged), {} faults, {:.0} s simulated, history {:016x}{}",
            report.operations,
            report.succeeded,
            report.faults.len(),
            report.simulated.as_secs_f64(),
            report.history_hash,
            if problems.is_empty() { String::new() } else { format!(", {} PROBLEMS", problems.len()) }
        );
        if !problems.is_empty() {
            failed += 1;
            for fault in &report.faults {
                println!("    {fault}");
            }
            for problem in problems.iter().take(20) {
                println!("  {problem}");
            }
            println!("  replay: {}", opts.replay_command());
        }
    }
    println!("{} seeds, {failed} failed, {:.1} s wall time", args.seeds, started.elapsed().as_secs_f64());
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
