//! The ringkv chaos suite.
//!
//! A real cluster of `ringkv serve` processes (five nodes, N=3, W=2, R=2)
//! runs while several clients write, overwrite, delete, write with a TTL,
//! change and remove TTLs, and read (get, exists, ttl), and a seeded
//! schedule applies faults: SIGKILL and restart, SIGSTOP/SIGCONT, a
//! network partition of one node from the others (both ways or one way),
//! two nodes split off together, a node's clock skewed, one node added and
//! one removed (and one `clear`), some of them outlasting the grace periods
//! and some overlapping a second fault on another node. Each node runs in a
//! network namespace of its own, so partitions drop packets in the kernel
//! ([`net`]). Every client
//! operation is recorded with its invocation and completion time and its
//! outcome. Once the faults are over and every link is healed the suite waits
//! for every key's replicas to become identical, reads every key at
//! consistency `all`, and checks the history.
//!
//! Why it is built this way:
//!
//! - **Real processes, real signals.** The guarantees in the README are about
//!   processes that die, stop and come back with their data directory; an
//!   in-process simulation would test something else. Every process is
//!   behind a drop guard, ports are chosen by the OS at first start and reused
//!   on restart, and everything lives under the run's output directory.
//! - **Sans-I/O where it matters.** The schedule ([`schedule`]) is a pure
//!   function of the seed, so a failing seed replays the same faults; the
//!   checker ([`checker`]) is a pure function of the history, so each kind of
//!   violation is unit-tested on hand-made histories, and a recorded
//!   history can be re-checked.
//! - **Mostly one writer per key, unique values.** Most keys' mutations are
//!   then sequential, a few shared keys have every client as a writer, and
//!   every value read names the operation that wrote it, so the checker
//!   needs no search over orders: the final state must be the effect of a
//!   mutation that no acknowledged mutation certainly followed (strictly
//!   for one client's writes, beyond the clock-skew allowance for different
//!   clients'), and every read is judged against the same order.
//! - **Honest about uncertainty.** A request that failed or timed out may
//!   or may not have been applied; the checker accepts either, and nothing
//!   more.
//! - **Conditions, not sleeps.** Apart from the faults' own durations, the
//!   harness waits for conditions (ready line, every node serving, replicas
//!   identical) with deadlines; missing one is reported, not ignored.
//!
//! **The cache profile** ([`Options::maxmemory_bytes`], `--maxmemory`,
//! `just chaos-cache`) runs the same schedule and workload, with values of
//! 4 KiB and up ([`WorkloadConfig::cache`]), with every node bound to that
//! much memory under `allkeys-lru` ([`cache_config`]), small
//! enough that the workload's keys overflow it within seconds and are
//! evicted all run long. The nodes then log every eviction, the harness
//! collects them from the node logs into `evictions.jsonl`
//! ([`evictions`]), and the checker accepts an acknowledged write's key as
//! absent only where a node recorded evicting that key late enough (see
//! *Evictions* in [`checker`]), so eviction cannot hide a lost write.

pub mod checker;
pub mod cluster;
pub mod evictions;
pub mod faults;
pub mod history;
pub mod net;
pub mod observe;
pub mod process;
pub mod schedule;
pub mod summary;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use ringkv_client::{Client, ClientConfig};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::MemoryStatus;
use tokio::time::Instant;

use crate::checker::{CheckOptions, Violation, memory_violations};
use crate::cluster::Cluster;
use crate::history::{OpKind, Phase, Record};
use crate::schedule::{Schedule, ScheduleParams};
use crate::summary::{EvictionSummary, Summary};
use crate::workload::{RunClock, WorkloadConfig};

/// Replication settings of the cluster under test.
pub const REPLICATION: usize = 3;

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Planned length of the fault phase.
    pub duration: Duration,
    pub nodes: usize,
    pub clients: usize,
    /// History, summary, schedule, node logs and data go here.
    pub out: PathBuf,
    /// The `ringkv` binary.
    pub ringkv: PathBuf,
    /// How long after healing every key's replicas must be identical.
    pub convergence_bound: Duration,
    /// Largest resident set any node may reach.
    pub memory_bound_bytes: u64,
    /// Whether to schedule one `clear`.
    pub clear: bool,
    /// Client per-attempt timeout. Longer than half of `dead_node_grace`,
    /// the longest pause after which a coordinator still stamps what it
    /// received before it (see [`checker`] for why the model needs that).
    pub client_timeout: Duration,
    /// Run each node in a network namespace of its own and make network
    /// faults by dropping packets in the kernel (needs root); otherwise all
    /// nodes share loopback and network faults are made inside the nodes.
    pub namespaces: bool,
    /// Print progress to stderr.
    pub verbose: bool,
    /// The cache profile: every node's `maxmemory`, in bytes, under
    /// `allkeys-lru` ([`cache_config`]); 0 runs without a memory bound.
    pub maxmemory_bytes: u64,
    /// Schedule only short random node faults within the duration, not the
    /// items every full schedule has (each fault kind, a long pause and
    /// partition, an overlap, an added and a removed node): a run that
    /// takes about its duration, for a quick CI check.
    pub random_faults_only: bool,
}

impl Options {
    pub fn new(seed: u64, duration: Duration, out: PathBuf, ringkv: PathBuf) -> Options {
        Options {
            seed,
            duration,
            nodes: 5,
            clients: 4,
            out,
            ringkv,
            convergence_bound: Duration::from_secs(120),
            memory_bound_bytes: 1 << 30,
            clear: true,
            client_timeout: Duration::from_secs(12),
            namespaces: true,
            verbose: true,
            maxmemory_bytes: 0,
            random_faults_only: false,
        }
    }

    pub fn schedule(&self) -> Result<Schedule, String> {
        schedule::generate(&ScheduleParams {
            seed: self.seed,
            duration_ms: self.duration.as_millis() as u64,
            nodes: self.nodes,
            clear: self.clear,
            every_kind: !self.random_faults_only,
        })
    }

    /// The configuration every node of the run shares.
    pub fn node_config(&self) -> String {
        let mut config = node_config(self.seed);
        if self.maxmemory_bytes > 0 {
            config.push_str(&cache_config(self.maxmemory_bytes));
        }
        config
    }

    /// The clients' workload: the cache profile's writes faster and larger.
    pub fn workload(&self) -> WorkloadConfig {
        if self.maxmemory_bytes > 0 { WorkloadConfig::cache() } else { WorkloadConfig::default() }
    }

    /// The nodes' log filter: `RINGKV_CHAOS_LOG`, or `info`; in the cache
    /// profile always with the evictions, which the checker needs.
    pub fn rust_log(&self) -> String {
        let base = std::env::var("RINGKV_CHAOS_LOG").unwrap_or_else(|_| "info".into());
        if self.maxmemory_bytes > 0 { format!("{base},{}", evictions::LOG_DIRECTIVE) } else { base }
    }
}

/// The eviction policy of the cache profile.
pub const CACHE_POLICY: ringkv_core::EvictionPolicy = ringkv_core::EvictionPolicy::AllkeysLru;

/// The node configuration lines of the cache profile: a memory bound of
/// `maxmemory_bytes` per node, with the least recently used keys evicted.
/// With the workload's values (up to 64 KiB, about 8 KiB on average) and
/// its stream of new keys, a few MiB per node fill up within seconds: a
/// 120 s run then evicts thousands of keys while the faults go on.
pub fn cache_config(maxmemory_bytes: u64) -> String {
    format!(
        "# The cache profile: every node evicts the least recently used keys past this.\n\
         maxmemory = \"{}\"\nmaxmemory_policy = \"{}\"\n",
        ringkv_core::format_size(maxmemory_bytes),
        CACHE_POLICY.as_str()
    )
}

/// The node configuration every node of the run shares.
pub fn node_config(seed: u64) -> String {
    format!(
        r#"cluster_id = "chaos-{seed}"
persistence = "wal"
# Every acknowledged write is on disk before a kill -9.
fsync = "always"
# Values reach 64 KiB: snapshots, and recovery from them after a kill, happen
# many times per run.
snapshot_after_bytes = 4194304
replication = {REPLICATION}
write_quorum = 2
read_quorum = 2
gossip_interval = "500ms"
phi_threshold = 10.0
# Short, so that the schedule's long faults outlast both graces: the others drop
# the faulty node from the ring and purge tombstones without it, and it must come
# back as a new member without resurrecting anything. The ordinary faults may
# outlast the dead-node grace too.
dead_node_grace = "8s"
tombstone_grace = "12s"
replica_timeout = "2s"
repair_interval = "5s"
fault_injection = true
"#
    )
}

macro_rules! progress {
    ($opts:expr, $($arg:tt)*) => {
        if $opts.verbose {
            eprintln!("[chaos] {}", format!($($arg)*));
        }
    };
}

/// Runs the suite. `Err` means the harness itself failed (a node could not
/// be started at all, the output directory is unwritable); what the cluster
/// got wrong is in the summary's violations.
pub async fn run(opts: &Options) -> anyhow::Result<Summary> {
    let wall = Instant::now();
    let schedule = opts.schedule().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let out = opts.out.canonicalize()?;
    std::fs::write(out.join("schedule.txt"), schedule.to_string())?;
    progress!(opts, "{schedule}");
    anyhow::ensure!(opts.ringkv.exists(), "no ringkv binary at {}", opts.ringkv.display());

    let mut cluster =
        Cluster::start(&opts.ringkv, &out, opts.nodes, &opts.node_config(), opts.namespaces, &opts.rust_log()).await?;
    let tls = TlsPaths::client_in(&cluster.certs);
    // Fault injection needs the operator certificate; the workload does not.
    let mut ctl_config = ClientConfig::new(cluster.addrs(), TlsPaths::operator_in(&cluster.certs));
    ctl_config.timeout = Duration::from_secs(3);
    let ctl = Client::new(ctl_config).context("controller client")?;
    if let Err(problem) = faults::wait_healthy(&cluster, &ctl, faults::HEALTHY_TIMEOUT).await {
        anyhow::bail!("the cluster did not come up: {problem}");
    }
    progress!(opts, "{} nodes serving; starting {} clients", opts.nodes, opts.clients);

    let clock = RunClock::new();
    let stop_memory = Arc::new(AtomicBool::new(false));
    let memory =
        tokio::spawn(observe::sample_memory(cluster.pids.clone(), Duration::from_secs(2), stop_memory.clone()));
    let stop_clients = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..opts.clients as u32 {
        let mut config = ClientConfig::new(cluster.addrs(), tls.clone());
        config.timeout = opts.client_timeout;
        let client = Client::new(config).context("workload client")?;
        clients.push(tokio::spawn(workload::run_client(
            id,
            opts.seed,
            client,
            opts.workload(),
            clock,
            stop_clients.clone(),
        )));
    }

    let mut history: Vec<Record> = Vec::new();
    let mut violations: Vec<Violation> = Vec::new();
    let mut applied = Vec::new();
    for fault in &schedule.faults {
        tokio::time::sleep(Duration::from_millis(fault.gap_ms)).await;
        progress!(opts, "{:>6.1}s  {fault}", clock.ms() as f64 / 1000.0);
        let a = faults::apply(fault, &mut cluster, &ctl, &clock, &mut history, &mut violations).await?;
        progress!(
            opts,
            "{:>6.1}s  #{} over, healthy: {}{}",
            clock.ms() as f64 / 1000.0,
            fault.index,
            a.healthy_ms.is_some(),
            if a.note.is_empty() { String::new() } else { format!(" ({})", a.note) }
        );
        applied.push(a);
    }
    // A last healthy stretch of workload, then stop the clients; each
    // finishes the operation it is in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        history.extend(c.await.context("client task")?);
    }
    progress!(opts, "{:>6.1}s  workload stopped after {} operations", clock.ms() as f64 / 1000.0, history.len());

    // Heal (nothing should be cut any more; make sure) and wait.
    for problem in faults::heal_all(&cluster, &ctl).await {
        violations.push(Violation::Unhealthy { what: format!("final heal: {problem}") });
    }
    if let Err(problem) = faults::wait_healthy(&cluster, &ctl, faults::HEALTHY_TIMEOUT).await {
        violations.push(Violation::Unhealthy { what: format!("not healthy after the run: {problem}") });
    }
    let mut keys: Vec<String> =
        history.iter().filter(|r| r.op.is_mutation() && r.op != OpKind::Clear).filter_map(|r| r.key.clone()).collect();
    keys.sort();
    keys.dedup();
    progress!(opts, "{:>6.1}s  waiting for {} keys' replicas to converge", clock.ms() as f64 / 1000.0, keys.len());
    let reader = ctl.with_timeout(Duration::from_secs(5));
    let convergence = observe::wait_converged(
        &reader,
        &cluster.addrs(),
        &keys,
        REPLICATION,
        opts.convergence_bound,
        history::now_wall_ms,
    )
    .await;
    progress!(
        opts,
        "{:>6.1}s  convergence: {:?} after {} passes (last pass {:?})",
        clock.ms() as f64 / 1000.0,
        convergence.converged_after,
        convergence.passes,
        convergence.last_pass
    );
    for (key, replicas) in &convergence.diverged {
        violations.push(Violation::NotConverged {
            key: key.clone(),
            bound_ms: opts.convergence_bound.as_millis() as u64,
            replicas: replicas.clone(),
        });
    }
    let all = reader.with_consistency(ringkv_core::Consistency::All);
    history.extend(observe::final_reads(&all, &keys, clock, Duration::from_secs(120)).await);
    progress!(opts, "{:>6.1}s  final reads done", clock.ms() as f64 / 1000.0);

    stop_memory.store(true, Ordering::Relaxed);
    let max_rss = memory.await.context("memory sampler")?;
    // What the memory bound did, as every node still serving tells it.
    let mut memory_status: std::collections::BTreeMap<String, MemoryStatus> = Default::default();
    if opts.maxmemory_bytes > 0 {
        for id in cluster.running_ids() {
            match reader.status_of(cluster.nodes[&id].addr).await {
                Ok(status) => {
                    memory_status.insert(id, status.memory);
                }
                Err(e) => violations.push(Violation::Unhealthy { what: format!("status of {id} after the run: {e}") }),
            }
        }
    }
    for (id, status) in cluster.crashed() {
        violations.push(Violation::Unhealthy { what: format!("node {id} exited by itself with {status}") });
    }
    cluster.shutdown();

    // Only now is every node's log complete.
    let logged = evictions::collect(&cluster.log_dir, &clock)?;
    evictions::write_jsonl(&out.join("evictions.jsonl"), &logged.evictions)?;
    violations.extend(eviction_records_complete(&logged, &memory_status));
    let evictions = logged.evictions;

    history.sort_by_key(|r| (r.invoke_ms, r.complete_ms, r.client));
    let history_path = out.join("history.jsonl");
    history::write_jsonl(&history_path, &history)?;
    let mut found =
        checker::check_with_evictions(&history, &evictions, &CheckOptions::with_clock_skew(schedule.max_skew_ms()));
    found.extend(violations);
    found.extend(memory_violations(&max_rss, opts.memory_bound_bytes));
    let eviction_summary = (opts.maxmemory_bytes > 0).then(|| {
        EvictionSummary::new(opts.maxmemory_bytes, CACHE_POLICY.as_str(), &evictions, &history, memory_status)
    });

    let summary = Summary {
        seed: opts.seed,
        fault_phase_ms: opts.duration.as_millis() as u64,
        nodes: opts.nodes,
        clients: opts.clients,
        keys: keys.len(),
        ops: summary::count(&history, Phase::Run),
        final_reads: summary::count(&history, Phase::Final).get(OpKind::Get.as_str()).copied().unwrap_or_default(),
        faults: applied,
        convergence_bound_ms: opts.convergence_bound.as_millis() as u64,
        convergence_ms: convergence.converged_after.map(|d| d.as_millis() as u64),
        convergence_passes: convergence.passes,
        memory_bound_bytes: opts.memory_bound_bytes,
        max_rss_bytes: max_rss,
        evictions: eviction_summary,
        violations: found,
        history: history_path,
        out_dir: out.clone(),
        wall_ms: wall.elapsed().as_millis() as u64,
    };
    std::fs::write(out.join("summary.txt"), format!("{summary}\n"))?;
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    std::fs::write(out.join("violations.json"), serde_json::to_string_pretty(&summary.violations)?)?;
    Ok(summary)
}

/// Whether the eviction records are complete: a node counts its evictions
/// from its last start, and must have logged at least that many since.
/// Fewer would mean lost log lines, and every eviction missing from the
/// record would show up as a lost write.
fn eviction_records_complete(
    logged: &evictions::Logged,
    status: &std::collections::BTreeMap<String, MemoryStatus>,
) -> Vec<Violation> {
    let since_start = logged.since_last_start();
    status
        .iter()
        .filter_map(|(node, memory)| {
            let logged = since_start.get(node).copied().unwrap_or_default();
            (logged < memory.evictions).then(|| Violation::Unhealthy {
                what: format!(
                    "node {node} reports {} evictions since its last start, but its log has {logged}: the eviction \
                     record is incomplete",
                    memory.evictions
                ),
            })
        })
        .collect()
}
