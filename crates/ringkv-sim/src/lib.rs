//! Deterministic simulation: a whole ringkv cluster in one process.
//!
//! Each node is a turmoil host running the real `Node` (actors,
//! coordinator, repair, rebalancing, hints, chitchat, QUIC with TLS) on the
//! host's own tokio runtime, whose clock turmoil drives; the nodes' QUIC
//! and gossip sockets are turmoil's (see `net.rs`), and so is every
//! datagram's fate: latency, loss, partitions. One more host runs the chaos
//! suite's clients, and the same checker judges their history. The fault
//! schedule (`schedule.rs`) comes from the seed, as does turmoil's own
//! randomness, so a seed names one run.
//!
//! Each node's disk is a `MemDisk` that outlives its host: a crash is a
//! power loss (what was not synced is gone) and the restarted node recovers
//! from what was; the log and snapshot writers run as tasks of the host, so
//! turmoil schedules them too. Which storage a run uses ([`Storage`]) comes
//! from the seed, unless it is given. Every random byte the process draws
//! comes from the seed (`entropy.rs`); [`run`] still reports the history's
//! hash, because determinism is checked, not assumed: two runs of a seed
//! are compared.

pub mod entropy;
mod net;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use ringkv_chaos::checker::{CheckOptions, Violation, check};
use ringkv_chaos::history::{CONTROLLER, OpKind, Outcome, Phase, Record};
use ringkv_chaos::observe::{Convergence, final_reads, wait_converged};
use ringkv_chaos::workload::{RunClock, WorkloadConfig, run_client};
use ringkv_client::{Client, ClientConfig};
use ringkv_core::{Clock, KvError, KvStore as _, SplitMix64};
use ringkv_net::tls::{Identity, TlsPaths, TransportSettings, client_config};
use ringkv_node::{Env, Node, NodeConfig, Persistence};
use ringkv_storage::{Disk, FsyncPolicy, MemDisk, WriterHost};
use tokio::sync::{Notify, oneshot, watch};

use crate::net::{Envelopes, SimNetwork};
use crate::schedule::{Fault, Schedule};

/// The wall clock's reading when a run starts: fixed, so that a seed's run
/// does not depend on the day it runs.
const EPOCH_MS: u64 = 1_800_000_000_000;
const QUIC_PORT: u16 = 7400;
/// N: every key's replicas.
const REPLICATION: usize = 3;
const GOSSIP_PORT: u16 = 7946;
/// Simulated time after the clients stop, with every fault healed, for
/// hints, repair and rejoins to finish before the final reads.
const SETTLE: Duration = Duration::from_secs(30);
/// How long after the settling time every key's replicas may take to
/// become identical, as in the chaos suite; past it each key that still
/// differs is a violation.
pub const CONVERGENCE_BOUND: Duration = Duration::from_secs(120);

/// turmoil's step: the resolution of simulated time.
const TICK: Duration = Duration::from_millis(1);
/// The most a datagram takes on a healthy link (drawn per datagram, from
/// 1 ms up).
const MAX_LATENCY: Duration = Duration::from_millis(10);
/// How long every node must have served before a crash. With storage in
/// memory a crash is the loss of a disk; a second one before the first
/// node has pulled its partitions back could lose the only copies of
/// acknowledged writes, which no replicated store promises to survive. Two
/// repair intervals: the rejoined node has pulled, and repair has run over
/// what it missed meanwhile. Runs with disks keep the same rule, so that a
/// seed's schedule is the same whatever its storage.
const CRASH_AFTER_HEALTHY: Duration = Duration::from_secs(10);

/// How long a node whose process exited stays down before it is started
/// again.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How the fault log marks the restarts after such an exit, which the
/// schedule did not plan.
pub const BY_SUPERVISOR: &str = "(by its supervisor)";

/// Keeps the set of crashed nodes as the schedule changes it.
fn track(crashed: &mut BTreeSet<usize>, fault: &Fault) {
    match fault {
        Fault::Crash(i) => {
            crashed.insert(*i);
        }
        Fault::Restart(i) => {
            crashed.remove(i);
        }
        _ => {}
    }
}

fn healthy_for(healthy: &Mutex<Option<Duration>>, now: Duration, stretch: Duration) -> bool {
    healthy.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|since| now >= since + stretch)
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Simulated time the clients run, under the fault schedule.
    pub duration: Duration,
    pub nodes: usize,
    pub clients: usize,
    /// Episodes of the seed's schedule left out ([`Schedule::without`]):
    /// how a minimized failure is replayed.
    pub without: BTreeSet<usize>,
    /// The nodes' storage; `None` draws it from the seed.
    pub storage: Option<Storage>,
}

/// Where the nodes of a run keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In memory only: a crashed node comes back empty and rejoins as new.
    Memory,
    /// A log on a simulated disk, synced before each write is acknowledged.
    Always,
    /// A log synced once a second: a crash (a power loss) takes the last
    /// second of a node's writes, which its replicas still hold.
    Everysec,
}

impl Storage {
    /// The seed's draw: from a stream of its own, so that the fault schedule
    /// does not depend on it.
    pub fn drawn(seed: u64) -> Storage {
        match SplitMix64::new(seed ^ STORAGE_SALT).below(3) {
            0 => Storage::Memory,
            1 => Storage::Always,
            _ => Storage::Everysec,
        }
    }

    fn fsync(self) -> Option<FsyncPolicy> {
        match self {
            Storage::Memory => None,
            Storage::Always => Some(FsyncPolicy::Always),
            Storage::Everysec => Some(FsyncPolicy::Everysec),
        }
    }
}

const STORAGE_SALT: u64 = 0x5354_4f52_4147_4521;

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Storage::Memory => "memory",
            Storage::Always => "always",
            Storage::Everysec => "everysec",
        })
    }
}

impl std::str::FromStr for Storage {
    type Err = String;
    fn from_str(s: &str) -> Result<Storage, String> {
        match s {
            "memory" => Ok(Storage::Memory),
            "always" => Ok(Storage::Always),
            "everysec" => Ok(Storage::Everysec),
            other => Err(format!("unknown storage {other:?}: expected memory, always or everysec")),
        }
    }
}

impl SimOptions {
    /// The command that runs this seed again, with logs.
    pub fn replay_command(&self) -> String {
        format!(
            "RUST_LOG=info cargo run --release -p ringkv-sim -- {} --history seed-{}.jsonl",
            self.args().join(" "),
            self.seed
        )
    }

    /// The command-line arguments that run this seed (a child process of
    /// `ringkv-sim`, or a replay).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--seed={}", self.seed),
            format!("--duration={}", ringkv_core::format_duration(self.duration)),
            format!("--nodes={}", self.nodes),
            format!("--clients={}", self.clients),
            format!("--storage={}", self.storage()),
        ];
        if !self.without.is_empty() {
            let episodes: Vec<String> = self.without.iter().map(usize::to_string).collect();
            args.push(format!("--without={}", episodes.join(",")));
        }
        args
    }

    /// The run's storage: as given, or the seed's draw.
    pub fn storage(&self) -> Storage {
        self.storage.unwrap_or_else(|| Storage::drawn(self.seed))
    }

    /// The seed's fault schedule, less the episodes left out.
    pub fn schedule(&self) -> Schedule {
        Schedule::generate(self.seed, self.nodes, self.duration).without(&self.without)
    }
}

/// What one run saw.
#[derive(Debug)]
pub struct SimReport {
    pub seed: u64,
    pub storage: Storage,
    pub operations: usize,
    /// Operations that completed with an answer (the others failed or
    /// timed out, which the checker allows).
    pub succeeded: usize,
    /// xxh3 of the history's JSON lines, in order: equal for two runs of a
    /// seed if the simulation is deterministic.
    pub history_hash: u64,
    pub faults: Vec<String>,
    /// What the checker found: those [`Violation::is_promised`] fail the
    /// run, the others (session order of reads) are reported.
    pub violations: Vec<Violation>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Simulated time from the start until every node listed every node
    /// as serving and live: membership and placement converged, every
    /// join's partitions pulled.
    pub formed_after: Option<Duration>,
    /// Simulated time from the start until every node listed every node
    /// as live, whatever its status: membership converged (gossip), before
    /// placement did.
    pub members_after: Option<Duration>,
    /// Simulated time from the end of the settling time until a pass over
    /// every key found its replicas identical; `None` if
    /// [`CONVERGENCE_BOUND`] passed first (each key that differed is then a
    /// violation).
    pub converged_after: Option<Duration>,
    /// Every operation the clients ran, in the order the hash covers.
    pub history: Vec<Record>,
}

/// A node's wall clock: the run's fixed epoch, plus simulated time, plus
/// the skew the schedule gives it.
struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
        (EPOCH_MS + elapsed).saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn node_config(opts: &SimOptions, i: usize, certs: &std::path::Path) -> NodeConfig {
    let name = node_name(i);
    let ip = turmoil::lookup(name.as_str());
    NodeConfig {
        node_id: name,
        cluster_id: format!("sim-{}", opts.seed),
        listen: SocketAddr::new(ip, QUIC_PORT),
        gossip: Some(SocketAddr::new(ip, GOSSIP_PORT)),
        seeds: vec![SocketAddr::new(turmoil::lookup(node_name(0).as_str()), GOSSIP_PORT).to_string()],
        persistence: match opts.storage() {
            Storage::Memory => Persistence::None,
            Storage::Always | Storage::Everysec => Persistence::Wal,
        },
        fsync: opts.storage().fsync().unwrap_or(FsyncPolicy::Always),
        // Small, so that logs rotate and snapshots replace them in a run.
        wal_segment_bytes: 256 << 10,
        snapshot_after_bytes: 4 << 20,
        partitions: 32,
        vnodes: 16,
        replication: REPLICATION,
        write_quorum: 2,
        read_quorum: 2,
        gossip_interval: Duration::from_millis(500),
        phi_threshold: 10.0,
        // The clock check stops a node at half of this.
        max_clock_drift: Duration::from_millis(2 * schedule::FAR_CLOCK_BOUND_MS),
        // The chaos suite's graces (ringkv-chaos `node_config`): short, so
        // that faults outlast them.
        dead_node_grace: Duration::from_secs(8),
        tombstone_grace: Duration::from_secs(12),
        replica_timeout: Duration::from_secs(2),
        repair_interval: Duration::from_secs(5),
        seed: opts.seed.wrapping_mul(31).wrapping_add(i as u64 + 1),
        tls: ringkv_node::TlsConfig { certs_dir: Some(certs.to_path_buf()), ..Default::default() },
        ..NodeConfig::default()
    }
}

/// Runs one seed.
pub fn run(opts: &SimOptions) -> anyhow::Result<SimReport> {
    entropy::seed(opts.seed);
    let certs = tempfile::tempdir().context("certificate directory")?;
    // The members, and a spare that may join later.
    let names: Vec<String> = (0..=opts.nodes).map(node_name).collect();
    // Ed25519: TLS handshakes of the same size in every run.
    let algorithm = ringkv_net::certs::KeyAlgorithm::Ed25519;
    ringkv_net::certs::init_with(certs.path(), &names, &[], algorithm).context("create certificates")?;
    ringkv_net::certs::issue_operator_cert_with(certs.path(), "sim", algorithm)
        .context("create the operator certificate")?;
    let schedule = opts.schedule();

    let mut sim = turmoil::Builder::new()
        .rng_seed(opts.seed)
        .simulation_duration(opts.duration + SETTLE + CONVERGENCE_BOUND + Duration::from_secs(300))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(MAX_LATENCY)
        .udp_capacity(4096)
        .tick_duration(TICK)
        .build();

    let envelopes = Envelopes::default();
    let world = World {
        names,
        skews: (0..=opts.nodes).map(|_| Arc::new(AtomicI64::new(0))).collect(),
        drifts: Mutex::default(),
        links_faulty: AtomicBool::new(false),
        paused: Mutex::default(),
        joins: (0..=opts.nodes).map(|i| watch::channel(i < opts.nodes).0).collect(),
        leaves: (0..=opts.nodes).map(|_| Arc::new(Notify::new())).collect(),
        members: Arc::new(Mutex::new((0..opts.nodes).collect())),
        clear_due: Arc::new(Notify::new()),
        disks: (0..=opts.nodes).map(|_| MemDisk::new().with_writer_host(WriterHost::Task)).collect(),
    };
    for (i, name) in world.names.iter().enumerate() {
        let (opts, certs, envelopes) = (opts.clone(), certs.path().to_path_buf(), envelopes.clone());
        let (skew, join, leave) = (world.skews[i].clone(), world.joins[i].subscribe(), world.leaves[i].clone());
        let disk = world.disks[i].clone();
        sim.host(name.as_str(), move || {
            let config = node_config(&opts, i, &certs);
            let env = Env {
                clock: Arc::new(SimClock { skew_ms: skew.clone() }),
                network: Arc::new(SimNetwork { envelopes: envelopes.clone() }),
                disk: Some(Arc::new(disk.clone()) as Arc<dyn Disk>),
                ..Env::default()
            };
            node_host(config, env, disk.clone(), join.clone(), leave.clone())
        });
    }

    let history: Arc<Mutex<Option<Observed>>> = Arc::default();
    let out = history.clone();
    // Set by the client host once every node serves; the schedule's times
    // count from then.
    let formed: Arc<Mutex<Option<Duration>>> = Arc::default();
    let formed_at = formed.clone();
    // Since when every node has served, as the client host last saw; a
    // crash waits for a stretch of it (see `apply_when_due`).
    let healthy: Arc<Mutex<Option<Duration>>> = Arc::default();
    let healthy_seen = healthy.clone();
    let clears = world.clear_due.clone();
    let members = world.members.clone();
    // When every node first listed every node as live, for as long as
    // that held until the cluster formed.
    let members_known: Arc<Mutex<Option<Duration>>> = Arc::default();
    let members_seen = members_known.clone();
    let client_opts = opts.clone();
    let client_certs = certs.path().to_path_buf();
    sim.client("client", async move {
        let records =
            workload(&client_opts, &client_certs, &formed_at, &healthy_seen, &members_seen, clears, members).await?;
        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(records);
        Ok(())
    });

    let mut faults = Vec::new();
    let mut pending = schedule.faults.iter().peekable();
    // Nodes the schedule crashed, and since when nodes whose process
    // exited on its own (its disk failed) have been down.
    let mut crashed: BTreeSet<usize> = BTreeSet::new();
    let mut exited: BTreeMap<usize, Duration> = BTreeMap::new();
    // Time the schedule has been held back, waiting for a healthy cluster
    // before a crash.
    let mut held = Duration::ZERO;
    loop {
        let start = *formed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(start) = start {
            let now = sim.elapsed();
            if now >= start + opts.duration && pending.peek().is_some() {
                // The clients stop now: what the hold pushed past the end
                // is dropped, and everything heals for the final reads.
                let members = world.members();
                let down: Vec<usize> =
                    members.into_iter().filter(|i| !sim.is_host_running(world.names[*i].as_str())).collect();
                let failing = (0..=opts.nodes).filter(|i| world.disks[*i].failing().is_some());
                let mut ending: Vec<Fault> = failing.map(Fault::DiskHeal).collect();
                ending.extend(world.paused().iter().copied().map(Fault::Resume));
                ending.extend(down.into_iter().map(Fault::Restart));
                ending.push(Fault::Heal);
                ending.extend((0..=opts.nodes).map(|i| Fault::Skew(i, 0)));
                for fault in ending {
                    faults.push(format!("{:>7.1}s {fault} (end of the run)", (now - start).as_secs_f64()));
                    track(&mut crashed, &fault);
                    world.apply(&mut sim, &fault);
                }
                pending.by_ref().for_each(drop);
            }
            while let Some(planned) = pending.peek() {
                if start + held + planned.at > now {
                    break;
                }
                if matches!(planned.fault, Fault::Crash(_)) && !healthy_for(&healthy, now, CRASH_AFTER_HEALTHY) {
                    held += TICK;
                    break;
                }
                faults.push(format!("{:>7.1}s {}", (now - start).as_secs_f64(), planned.fault));
                track(&mut crashed, &planned.fault);
                world.apply(&mut sim, &planned.fault);
                pending.next();
            }
            // As a process supervisor would, a while after the exit.
            for i in world.members() {
                let name = world.names[i].as_str();
                if crashed.contains(&i) || sim.is_host_running(name) {
                    exited.remove(&i);
                    continue;
                }
                if now >= *exited.entry(i).or_insert(now) + RESTART_DELAY {
                    let restart = Fault::Restart(i);
                    faults.push(format!("{:>7.1}s {restart} {BY_SUPERVISOR}", (now - start).as_secs_f64()));
                    world.apply(&mut sim, &restart);
                    exited.remove(&i);
                }
            }
        }
        world.drift(|| {
            // Every member serving in every member's eyes, as the client
            // host last saw (a member that rejoins is out of the ring).
            let serving = healthy.lock().unwrap_or_else(|e| e.into_inner()).is_some();
            !crashed.is_empty() || !exited.is_empty() || !serving
        });
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(anyhow::anyhow!("seed {}: the simulation failed: {e}", opts.seed)),
        }
    }
    let simulated = sim.elapsed();
    let formed_after = *formed.lock().unwrap_or_else(|e| e.into_inner());
    let members_after = *members_known.lock().unwrap_or_else(|e| e.into_inner());
    let Some((history, convergence)) = history.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        anyhow::bail!("seed {}: the simulation ended before the final reads", opts.seed);
    };
    let max_skew = schedule.max_skew_ms();
    let converged_after = convergence.converged_after;
    let mut violations = check(&history, &CheckOptions::with_clock_skew(max_skew));
    violations.extend(convergence.diverged.into_iter().map(|(key, replicas)| Violation::NotConverged {
        key,
        bound_ms: CONVERGENCE_BOUND.as_millis() as u64,
        replicas,
    }));
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for record in &history {
        hasher.update(record.to_json().as_bytes());
        hasher.update(b"\n");
    }
    Ok(SimReport {
        seed: opts.seed,
        storage: opts.storage(),
        operations: history.len(),
        succeeded: history.iter().filter(|r| r.outcome == Outcome::Ok).count(),
        history_hash: hasher.digest(),
        faults,
        violations,
        simulated,
        formed_after,
        members_after,
        converged_after,
        history,
    })
}

/// What the driver reaches in the simulated world, besides turmoil's
/// network: each host's clock skew, the signals that start the spare and
/// take a member out, who the members are, and the clear signal.
struct World {
    names: Vec<String>,
    skews: Vec<Arc<AtomicI64>>,
    /// The clocks that drift (`Fault::Drift`), by node.
    drifts: Mutex<BTreeMap<usize, Drifting>>,
    /// Some link is cut, lossy or held.
    links_faulty: AtomicBool,
    /// The nodes paused (`Fault::Pause`) and not yet resumed.
    paused: Mutex<BTreeSet<usize>>,
    /// True for the first members; the spare's host waits for its own,
    /// which stays true, so a restart after a crash does not wait again.
    joins: Vec<watch::Sender<bool>>,
    leaves: Vec<Arc<Notify>>,
    /// Indices of the nodes that are members (joined and not left), shared
    /// with the client host, which watches their health.
    members: Arc<Mutex<Vec<usize>>>,
    clear_due: Arc<Notify>,
    /// Each node's disk, across its restarts (unused with storage in
    /// memory).
    disks: Vec<MemDisk>,
}

/// A clock that drifts: `rate` ms per simulated second, from `from` ms off.
struct Drifting {
    rate: i64,
    from: i64,
    gained_us: i64,
}

impl World {
    fn drifts(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Drifting>> {
        self.drifts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn paused(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the drifting clocks on by a step, if the cluster is otherwise
    /// whole: every link works, no node is down or out of the ring
    /// (`down`, asked only while a clock drifts: this runs every step), is
    /// paused or has a failing disk, and every other clock is right. Otherwise the
    /// clock check may not hear the majority it needs, and a clock it
    /// cannot judge would only test the checker's allowance.
    fn drift(&self, down: impl FnOnce() -> bool) {
        let mut drifts = self.drifts();
        if drifts.is_empty() {
            return;
        }
        let whole = !down()
            && self.paused().is_empty()
            && !self.links_faulty.load(Ordering::Relaxed)
            && self.disks.iter().all(|d| d.failing().is_none())
            && (0..self.skews.len()).all(|i| drifts.contains_key(&i) || self.skews[i].load(Ordering::Relaxed) == 0);
        if !whole {
            return;
        }
        for (i, drifting) in drifts.iter_mut() {
            drifting.gained_us += drifting.rate * TICK.as_millis() as i64;
            self.skews[*i].store(drifting.from + drifting.gained_us / 1_000, Ordering::Relaxed);
        }
    }

    fn members(&self) -> Vec<usize> {
        self.members.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn apply(&self, sim: &mut turmoil::Sim<'_>, fault: &Fault) {
        let names = &self.names;
        let name = |i: &usize| names[*i].as_str();
        match fault {
            Fault::Crash(i) => {
                // Stopped or not, the process is gone.
                self.paused().remove(i);
                sim.crash(name(i));
                // A power loss: what the node had not synced is gone.
                self.disks[*i].crash();
                // A drifting clock ends with it: a node restarted with its
                // clock already far off serves by it until its first check
                // has heard a majority (README), which the checker would
                // rightly flag.
                if self.drifts().remove(i).is_some() {
                    self.skews[*i].store(0, Ordering::Relaxed);
                }
            }
            Fault::Restart(i) => {
                self.paused().remove(i);
                sim.bounce(name(i));
            }
            Fault::Partition(a, b) => {
                self.links_faulty.store(true, Ordering::Relaxed);
                for x in a {
                    for y in b {
                        sim.partition(name(x), name(y));
                    }
                }
            }
            Fault::OneWay(from, to) => {
                self.links_faulty.store(true, Ordering::Relaxed);
                sim.partition_oneway(name(from), name(to));
            }
            Fault::Degrade(i, permille, ms) => {
                self.links_faulty.store(true, Ordering::Relaxed);
                for other in names.iter().filter(|n| n.as_str() != name(i)) {
                    sim.set_link_fail_rate(name(i), other.as_str(), *permille as f64 / 1000.0);
                    sim.set_link_max_message_latency(name(i), other.as_str(), Duration::from_millis(*ms));
                }
            }
            Fault::Hold(i) => {
                self.links_faulty.store(true, Ordering::Relaxed);
                for other in names.iter().filter(|n| n.as_str() != name(i)) {
                    sim.hold(name(i), other.as_str());
                }
            }
            Fault::Pause(i) => {
                sim.pause(name(i));
                self.paused().insert(*i);
            }
            Fault::Resume(i) => {
                sim.resume(name(i));
                self.paused().remove(i);
            }
            Fault::Heal => {
                self.links_faulty.store(false, Ordering::Relaxed);
                for x in names {
                    for y in names {
                        if x != y {
                            // Both ways, and what was held is delivered.
                            sim.release(x.as_str(), y.as_str());
                            sim.set_link_fail_rate(x.as_str(), y.as_str(), 0.0);
                            sim.set_link_max_message_latency(x.as_str(), y.as_str(), MAX_LATENCY);
                        }
                    }
                }
            }
            Fault::Skew(i, ms) => {
                self.drifts().remove(i);
                self.skews[*i].store(*ms, Ordering::Relaxed);
            }
            Fault::Drift(i, rate) => {
                let from = self.skews[*i].load(Ordering::Relaxed);
                self.drifts().insert(*i, Drifting { rate: *rate, from, gained_us: 0 });
            }
            Fault::Join(i) => {
                self.joins[*i].send_replace(true);
                self.members.lock().unwrap_or_else(|e| e.into_inner()).push(*i);
            }
            Fault::Leave(i) => {
                self.leaves[*i].notify_one();
                self.members.lock().unwrap_or_else(|e| e.into_inner()).retain(|x| x != i);
            }
            Fault::Clear => self.clear_due.notify_one(),
            Fault::DiskFail(i, error) => self.disks[*i].fail(Some(error.kind())),
            Fault::DiskHeal(i) => self.disks[*i].fail(None),
        }
    }
}

/// How long a leaving member may take to hand its partitions off before
/// it stops anyway, as an operator would stop it.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// One node's host: it waits until it is a member (the spare until it
/// joins), runs the node until the node fails or is told to leave, and
/// after a leave stops for good.
async fn node_host(
    config: NodeConfig,
    env: Env,
    disk: MemDisk,
    mut join: watch::Receiver<bool>,
    leave: Arc<Notify>,
) -> turmoil::Result {
    join.wait_for(|joined| *joined).await?;
    let refused = disk.refused();
    let node = match Node::start_with(config, env).await {
        Ok(node) => node,
        // The disk fails the node's start as it would a process's: it
        // exits, and the driver restarts it a while later.
        Err(e) if disk.refused() != refused => {
            tracing::warn!(error = %e, "the node cannot start on its failing disk");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    tokio::select! {
        reason = node.failed() => {
            if disk.refused() == refused {
                return Err(format!("node failed: {reason}").into());
            }
            // The process exits, and the driver restarts it (`exited`).
            tracing::warn!(%reason, "the node stopped on its disk's failure");
            node.shutdown().await;
            Ok(())
        }
        () = leave.notified() => {
            // Refused while no other member serves: asked again, as the
            // refusal says, until LEAVE_TIMEOUT in all.
            let asked = async {
                loop {
                    match node.leave().await {
                        Err(KvError::Unavailable(reason)) => {
                            tracing::warn!(%reason, "the leave is refused; asking again in a second");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        other => return other,
                    }
                }
            };
            match tokio::time::timeout(LEAVE_TIMEOUT, asked).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot leave the ring; stopping anyway"),
                Err(_) => tracing::warn!("the leave did not finish within {LEAVE_TIMEOUT:?}; stopping anyway"),
            }
            node.shutdown().await;
            Ok(())
        }
    }
}

/// What the client host saw: every operation, and how the replicas
/// converged after the run.
type Observed = (Vec<Record>, Convergence);

/// The client host: the chaos suite's clients for the run's duration,
/// then (all faults healed) a settling time, the wait for every key's
/// replicas to become identical, and a read of every key written at
/// consistency ALL.
async fn workload(
    opts: &SimOptions,
    certs: &std::path::Path,
    formed: &Mutex<Option<Duration>>,
    healthy: &Arc<Mutex<Option<Duration>>>,
    members_known: &Mutex<Option<Duration>>,
    clear_due: Arc<Notify>,
    members: Arc<Mutex<Vec<usize>>>,
) -> anyhow::Result<Observed> {
    let addrs: Vec<SocketAddr> = (0..opts.nodes).map(quic_addr).collect();
    let tls = TlsPaths::client_in(certs);
    let clock = RunClock::starting_at(EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64);
    let mut seeds = SplitMix64::new(opts.seed);
    let endpoint = Endpoints { addrs, tls };
    let operator = endpoint.client_as(&TlsPaths::operator_in(certs), seeds.next_u64()).await?;
    let known = wait_formed(&operator, &endpoint.addrs).await?;
    *formed.lock().unwrap_or_else(|e| e.into_inner()) = Some(turmoil::sim_elapsed().unwrap_or_default());
    *members_known.lock().unwrap_or_else(|e| e.into_inner()) = Some(known);
    let (stop_clearing, clearing_stopped) = oneshot::channel();
    let clearer = tokio::spawn(run_clears(operator.clone(), clear_due, clearing_stopped, clock));
    let watcher = tokio::spawn(watch_health(operator, members.clone(), healthy.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in 0..opts.clients as u32 {
        let client = endpoint.client(seeds.next_u64()).await?;
        tasks.push(tokio::spawn(run_client(id, opts.seed, client, WorkloadConfig::default(), clock, stop.clone())));
    }
    tokio::time::sleep(opts.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await?);
    }
    // A clear under way finishes (within its timeout) before this is seen.
    let _ = stop_clearing.send(());
    history.extend(clearer.await?);
    watcher.abort();
    tokio::time::sleep(SETTLE).await;
    let mut keys: Vec<String> =
        history.iter().filter(|r| r.op.is_mutation() && r.op != OpKind::Clear).filter_map(|r| r.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let reader = endpoint.client(seeds.next_u64()).await?;
    // The members' status answers carry the truncate epoch.
    let now: Vec<SocketAddr> =
        members.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|i| quic_addr(*i)).collect();
    // Leaves can shrink the cluster below the replication factor; every
    // member then holds every key.
    let replicas = REPLICATION.min(now.len());
    let convergence = wait_converged(&reader, &now, &keys, replicas, CONVERGENCE_BOUND, || {
        EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
    })
    .await;
    let reader = reader.with_consistency(ringkv_core::Consistency::All);
    history.extend(final_reads(&reader, &keys, clock, Duration::from_secs(120)).await);
    Ok((history, convergence))
}

/// How long an operator's clear may take, as in the chaos suite.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a clear each time the driver says one is due, until `stop`.
async fn run_clears(
    operator: Client,
    due: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
    clock: RunClock,
) -> Vec<Record> {
    let operator = operator.with_timeout(CLEAR_TIMEOUT);
    let mut records = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return records,
            () = due.notified() => {
                let mut record = Record::invoke(CONTROLLER, Phase::Run, OpKind::Clear, None, clock.ms());
                let result = operator.clear().await;
                record.finish(clock.ms(), &result);
                records.push(record);
            }
        }
    }
}

/// Makes the client host's clients, each on a socket of its own.
struct Endpoints {
    addrs: Vec<SocketAddr>,
    tls: TlsPaths,
}

impl Endpoints {
    async fn client(&self, seed: u64) -> anyhow::Result<Client> {
        self.client_as(&self.tls, seed).await
    }

    async fn client_as(&self, tls: &TlsPaths, seed: u64) -> anyhow::Result<Client> {
        let mut bytes = [0u8; 32];
        let mut rng = SplitMix64::new(seed);
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let (socket, runtime) = net::quic_socket("0.0.0.0:0".parse().expect("valid")).await?;
        let client_tls = client_config(&Identity::load(tls)?, &TransportSettings::default())?;
        let endpoint = ringkv_net::from_socket(socket, runtime, None, client_tls, Some(bytes))?;
        let mut config = ClientConfig::new(self.addrs.clone(), tls.clone());
        config.timeout = Duration::from_secs(5);
        let clock = Arc::new(SimClock { skew_ms: Arc::new(AtomicI64::new(0)) });
        Ok(Client::with_endpoint(config, endpoint).with_clock(clock))
    }
}

fn quic_addr(i: usize) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(node_name(i).as_str()), QUIC_PORT)
}

/// Keeps `healthy` at the simulated time since which every member has
/// listed every member as serving and live (`None` while some does not).
async fn watch_health(operator: Client, members: Arc<Mutex<Vec<usize>>>, healthy: Arc<Mutex<Option<Duration>>>) {
    let operator = operator.with_timeout(Duration::from_secs(1));
    loop {
        let addrs: Vec<SocketAddr> =
            members.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|i| quic_addr(*i)).collect();
        let mut all = true;
        for addr in &addrs {
            all &= serving(&operator, *addr).await == addrs.len();
        }
        let now = turmoil::sim_elapsed().unwrap_or_default();
        {
            let mut since = healthy.lock().unwrap_or_else(|e| e.into_inner());
            *since = if all { Some(since.unwrap_or(now)) } else { None };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many members `addr` lists as live, and how many of those as serving.
async fn listed(operator: &Client, addr: SocketAddr) -> (usize, usize) {
    match operator.members_of(addr).await {
        Ok(members) => {
            let live = members.members.iter().filter(|m| m.live);
            let serving = live.clone().filter(|m| m.status == ringkv_net::wire::MemberStatus::Serving).count();
            (live.count(), serving)
        }
        Err(_) => (0, 0),
    }
}

/// How many members `addr` lists as serving and live.
async fn serving(operator: &Client, addr: SocketAddr) -> usize {
    listed(operator, addr).await.1
}

/// How long a cluster may take to form before the run counts as failed.
const FORMATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Waits until every node lists every node as serving and live, and
/// returns the simulated time since which every node has listed every
/// node as live (gossip's part of forming, before the joins finish).
async fn wait_formed(operator: &Client, addrs: &[SocketAddr]) -> anyhow::Result<Duration> {
    let deadline = tokio::time::Instant::now() + FORMATION_TIMEOUT;
    let mut known = None;
    loop {
        let (mut all_live, mut formed) = (true, true);
        for addr in addrs {
            let (live, serving) = listed(operator, *addr).await;
            all_live &= live == addrs.len();
            formed &= serving == addrs.len();
        }
        let now = turmoil::sim_elapsed().unwrap_or_default();
        known = if all_live { Some(known.unwrap_or(now)) } else { None };
        if formed {
            return Ok(known.unwrap_or(now));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not form within {FORMATION_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
