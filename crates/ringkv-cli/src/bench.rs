//! `ringkv bench`: a closed-loop load generator over the real protocol.
//! Each of `--concurrency` workers sends one request at a time; latency is
//! measured per request from send to reply.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use ringkv_client::Client;
use ringkv_core::{KvStore, SplitMix64};

use crate::{ClientArgs, parse_duration};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Stop after this many operations in total.
    #[arg(long)]
    ops: Option<u64>,
    /// Stop after this long (default 10s unless --ops is given).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Requests in flight.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Size of the key space; keys are chosen uniformly.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fraction of operations that are GETs, from 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Give written values this time to live.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Take keys in order (0, 1, 2, ...) instead of at random: with --ops
    /// equal to --keys, writes every key exactly once.
    #[arg(long)]
    sequential: bool,
    /// Keys are PREFIX:NNNNNNNNNNNN.
    #[arg(long, default_value = "key")]
    key_prefix: String,
    /// Seed for key choice, so runs are repeatable.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

struct Worker {
    gets: Histogram<u64>,
    puts: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, from 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.concurrency == 0 || args.keys == 0 {
        bail!("--concurrency and --keys must be positive");
    }
    let duration = match (args.ops, args.duration) {
        (_, Some(d)) => Some(d),
        (Some(_), None) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let client = crate::commands::connect(&args.client).await?;
    client.ping().await?;

    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, issued, done, stop, value) =
            (client.clone(), issued.clone(), done.clone(), stop.clone(), value.clone());
        let plan = Plan {
            limit: args.ops,
            keys: args.keys,
            read_ratio: args.read_ratio,
            ttl: args.ttl,
            sequential: args.sequential,
            prefix: args.key_prefix.clone(),
            seed: args.seed.wrapping_mul(1_000_003).wrapping_add(w as u64),
        };
        workers.push(tokio::spawn(async move { worker(client, plan, value, issued, done, stop).await }));
    }

    let progress = {
        let (done, stop) = (done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = done.load(Ordering::Relaxed);
                eprint!("\r{:>6.1}s  {:>9} ops  {:>9} ops/s   ", started.elapsed().as_secs_f64(), now, now - last);
                let _ = std::io::stderr().flush();
                last = now;
            }
        })
    };
    if let Some(duration) = duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
        });
    }

    let mut gets = histogram();
    let mut puts = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let w = w.await?;
        gets.add(&w.gets)?;
        puts.add(&w.puts)?;
        errors += w.errors;
        first_error = first_error.or(w.first_error);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    eprintln!();
    report(&args, elapsed, &gets, &puts, errors, first_error.as_deref());
    Ok(ExitCode::SUCCESS)
}

/// What one worker does.
struct Plan {
    limit: Option<u64>,
    keys: u64,
    read_ratio: f64,
    ttl: Option<Duration>,
    sequential: bool,
    prefix: String,
    seed: u64,
}

async fn worker(
    client: Client,
    plan: Plan,
    value: Bytes,
    issued: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Worker {
    let Plan { limit, keys, read_ratio, ttl, sequential, prefix, seed } = plan;
    let mut rng = SplitMix64::new(seed);
    let mut w = Worker { gets: histogram(), puts: histogram(), errors: 0, first_error: None };
    while !stop.load(Ordering::Relaxed) {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if limit.is_some_and(|limit| n >= limit) {
            break;
        }
        let index = if sequential { n % keys } else { rng.below(keys) };
        let key = Bytes::from(format!("{prefix}:{index:012}"));
        let read = rng.chance(read_ratio);
        let start = Instant::now();
        let result = if read {
            client.get(key).await.map(|_| ())
        } else {
            match ttl {
                Some(ttl) => client.put_with_ttl(key, value.clone(), ttl).await,
                None => client.put(key, value.clone()).await,
            }
        };
        let micros = (start.elapsed().as_micros() as u64).clamp(1, 60_000_000);
        match result {
            Ok(()) => {
                let h = if read { &mut w.gets } else { &mut w.puts };
                h.record(micros).expect("clamped into bounds");
            }
            Err(e) => {
                w.errors += 1;
                w.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    w
}

fn report(
    args: &BenchArgs,
    elapsed: Duration,
    gets: &Histogram<u64>,
    puts: &Histogram<u64>,
    errors: u64,
    first_error: Option<&str>,
) {
    let secs = elapsed.as_secs_f64();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let total = gets.len() + puts.len();
    if args.json {
        let line = |name: &str, h: &Histogram<u64>| {
            format!(
                "\"{name}\":{{\"ops\":{},\"ops_per_sec\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3}}}",
                h.len(),
                h.len() as f64 / secs,
                ms(h, 0.5),
                ms(h, 0.99),
                ms(h, 0.999)
            )
        };
        println!(
            "{{\"elapsed_s\":{secs:.3},\"ops_per_sec\":{:.0},\"errors\":{errors},{},{}}}",
            total as f64 / secs,
            line("get", gets),
            line("put", puts)
        );
        return;
    }
    println!(
        "{} ops in {secs:.2}s: {:.0} ops/s, {errors} errors (concurrency {}, {} keys, {}-byte values)",
        total,
        total as f64 / secs,
        args.concurrency,
        args.keys,
        args.value_size
    );
    println!("{:<5} {:>10} {:>10} {:>9} {:>9} {:>9}", "op", "count", "ops/s", "p50 ms", "p99 ms", "p999 ms");
    for (name, h) in [("GET", gets), ("PUT", puts)] {
        if h.is_empty() {
            continue;
        }
        println!(
            "{name:<5} {:>10} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
            h.len(),
            h.len() as f64 / secs,
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 0.999)
        );
    }
    if let Some(e) = first_error {
        println!("first error: {e}");
    }
}
