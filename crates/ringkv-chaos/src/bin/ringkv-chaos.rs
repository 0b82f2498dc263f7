//! `ringkv-chaos`: runs the chaos suite against real `ringkv serve`
//! processes and checks the history. Exit code 0: no violations; 1:
//! violations (listed in the summary); 2: the harness itself failed.
//! Session-order violations of reads (`session_read`) are listed and
//! counted but fail the run only with `--strict-session-reads`: the README
//! does not promise them (yet). `--maxmemory SIZE` runs the cache profile
//! (every node bound to SIZE, allkeys-lru; see the crate documentation).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringkv_chaos::checker::{self, CheckOptions};
use ringkv_chaos::{Options, evictions, history, run};

#[derive(Parser, Debug)]
#[command(name = "ringkv-chaos", about = "Chaos suite for ringkv: faults from a seeded schedule, a checked history")]
struct Args {
    /// Seed of the fault schedule (and of the workload's choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Planned length of the fault phase ("120s", "2m").
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// Nodes at the start (at least 5).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Concurrent workload clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Output directory (history, summary, schedule, node logs and data);
    /// default target/chaos/seed-N, or target/chaos/cache-seed-N with
    /// --maxmemory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The ringkv binary; default: `ringkv` next to this executable.
    #[arg(long)]
    ringkv: Option<PathBuf>,
    /// How long after healing every key's replicas must be identical.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    convergence_bound: Duration,
    /// Largest resident set a node may reach, MiB.
    #[arg(long, default_value_t = 1024)]
    memory_bound_mib: u64,
    /// Do not schedule a `clear`.
    #[arg(long)]
    no_clear: bool,
    /// The cache profile: bound every node's memory to SIZE ("4mb",
    /// "512kb"; at least 1mb) under allkeys-lru, log and collect its
    /// evictions (evictions.jsonl), and accept an absent key only where an
    /// eviction of it was recorded.
    #[arg(long, value_name = "SIZE", value_parser = parse_maxmemory)]
    maxmemory: Option<u64>,
    /// Schedule only short random node faults within the duration (and the
    /// clear), not the items every full schedule has: a run that takes
    /// about its duration.
    #[arg(long)]
    random_faults_only: bool,
    /// Print only the schedule and exit.
    #[arg(long)]
    schedule_only: bool,
    /// Re-check a recorded history.jsonl instead of running (only the
    /// history rules: convergence and memory are not in the file), with the
    /// evictions.jsonl next to it if there is one.
    #[arg(long, value_name = "HISTORY")]
    recheck: Option<PathBuf>,
    /// Run every node on loopback in the harness's network namespace, for
    /// machines where it is not root: network faults are then made inside
    /// the nodes, and one-way faults become two-way.
    #[arg(long)]
    loopback: bool,
    /// With --recheck: the largest clock skew of the run, ms (in its
    /// schedule.txt), which widens the expiry and cross-client allowances.
    #[arg(long, default_value_t = 0)]
    skew_ms: u64,
    /// Let session-order violations of reads fail the run too.
    #[arg(long)]
    strict_session_reads: bool,
    /// Less progress output.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    ringkv_core::parse_duration(s)
}

fn parse_maxmemory(s: &str) -> Result<u64, String> {
    // The node refuses less than 1mb (and 0 is no bound: no profile).
    match ringkv_core::parse_size(s)? {
        bytes if bytes < 1 << 20 => Err(format!("--maxmemory {s} is below the nodes' minimum of 1mb")),
        bytes => Ok(bytes),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.recheck {
        let evictions_path = path.with_file_name("evictions.jsonl");
        let evicted = match evictions_path.exists() {
            true => evictions::read_jsonl(&evictions_path),
            false => Ok(Vec::new()),
        };
        return match history::read_jsonl(path).and_then(|h| Ok((h, evicted?))) {
            Ok((h, evicted)) => {
                if !evicted.is_empty() {
                    println!("{} evictions from {}", evicted.len(), evictions_path.display());
                }
                let violations =
                    checker::check_with_evictions(&h, &evicted, &CheckOptions::with_clock_skew(args.skew_ms));
                for v in &violations {
                    println!("{v}");
                }
                let session = violations.iter().filter(|v| !v.is_promised()).count();
                println!(
                    "{} operations, {} violations, {session} session_read (not promised)",
                    h.len(),
                    violations.len() - session
                );
                let failed = violations.iter().any(|v| args.strict_session_reads || v.is_promised());
                if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
            }
            Err(e) => {
                eprintln!("ringkv-chaos: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let ringkv = match args.ringkv.clone() {
        Some(p) => p,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("ringkv"),
            Err(e) => {
                eprintln!("ringkv-chaos: cannot find the ringkv binary: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let profile = if args.maxmemory.is_some() { "cache-" } else { "" };
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("target/chaos/{profile}seed-{}", args.seed)));
    let mut opts = Options::new(args.seed, args.duration, out, ringkv);
    opts.nodes = args.nodes;
    opts.clients = args.clients;
    opts.convergence_bound = args.convergence_bound;
    opts.memory_bound_bytes = args.memory_bound_mib << 20;
    opts.clear = !args.no_clear;
    opts.verbose = !args.quiet;
    opts.namespaces = !args.loopback;
    opts.maxmemory_bytes = args.maxmemory.unwrap_or(0);
    opts.random_faults_only = args.random_faults_only;
    if args.schedule_only {
        return match opts.schedule() {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkv-chaos: {e}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&opts) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = terminated() => Err(anyhow::anyhow!("terminated")),
        }
    });
    // Dropping the run (on interrupt) has killed every node by now.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(summary) => {
            println!("{summary}");
            let session_fails = args.strict_session_reads && summary.session_reads() > 0;
            if summary.passed() && !session_fails { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("ringkv-chaos: harness error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Resolves on SIGTERM, so that a harness stopped by `kill` drops its run
/// (killing every node and removing its namespaces) like one stopped by
/// Ctrl-C.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
