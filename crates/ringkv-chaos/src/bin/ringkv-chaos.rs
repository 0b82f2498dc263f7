//! `ringkv-chaos`: runs the chaos suite against real `ringkv serve`
//! processes and checks the history. Exit code 0: no violations; 1:
//! violations (listed in the summary); 2: the harness itself failed.
//! Session-order violations of reads (`session_read`) are listed and
//! counted but fail the run only with `--strict-session-reads`: the README
//! does not promise them (yet).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringkv_chaos::checker::{self, CheckOptions};
use ringkv_chaos::{Options, history, run};

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
    /// default target/chaos/seed-N.
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
    /// Print only the schedule and exit.
    #[arg(long)]
    schedule_only: bool,
    /// Re-check a recorded history.jsonl instead of running (only the
    /// history rules: convergence and memory are not in the file).
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

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.recheck {
        return match history::read_jsonl(path) {
            Ok(h) => {
                let violations = checker::check(&h, &CheckOptions::with_clock_skew(args.skew_ms));
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
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("target/chaos/seed-{}", args.seed)));
    let mut opts = Options::new(args.seed, args.duration, out, ringkv);
    opts.nodes = args.nodes;
    opts.clients = args.clients;
    opts.convergence_bound = args.convergence_bound;
    opts.memory_bound_bytes = args.memory_bound_mib << 20;
    opts.clear = !args.no_clear;
    opts.verbose = !args.quiet;
    opts.namespaces = !args.loopback;
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
