//! Membership: chitchat gossip in, [`Topology`] out.
//!
//! Each node gossips a few small keys: its QUIC address, its partition
//! count, its status (joining, serving, leaving), its truncate epoch, the
//! join it is in and the members it fences. A task turns chitchat's view
//! into a `Topology` on every change (and on a tick, because the dead-node
//! grace period expires without any gossip event) and publishes it through
//! a watch channel when it differs from the last one.
//!
//! A member that the others removed from the ring (dead for longer than
//! `dead_node_grace`, as seen by a majority) may come back without
//! restarting: it was paused, or cut off. Meanwhile the others purged
//! tombstones without it, so its data can resurrect deleted keys. Each node
//! therefore *fences* the members it removed: it gossips their names under
//! `fenced`, keeps them out of its rings and refuses their replica
//! requests, until they come back as `joining` (or `left`). Every node
//! adopts, as its own, the fence any live member gossips, including nodes
//! that never saw the member die: otherwise one of them could pull from it
//! or place it before it hears the fence. A fenced member
//! that sees its own name in a live member's list discards its data and
//! joins anew. A joining member is fenced the same way once it drops out of
//! the next ring (the purge horizon stops waiting for it then), under its
//! name and the id of its join (`name@join`): what that join pulled may
//! miss deletes, so the fence holds until it begins a new join. Until it
//! has heard from a majority of its ring after a gap in its own execution
//! longer than half the grace period (a pause, a starved process, or a
//! restart after being down that long), a node does not act on its data at
//! all ([`Standing`]), so it cannot serve or repair stale data before it
//! learns it was fenced.
//!
//! chitchat leaves three things to us. It authenticates nothing, so every
//! datagram is sealed with the cluster's gossip key (`crate::gossip`). A
//! peer of another cluster is rejected with a `BadCluster` reply that
//! chitchat only logs; our socket watches for it so that a node started
//! with the wrong cluster id fails with a clear error. And a restarted node appears under a new generation
//! while its old one may still look live for a few seconds; members are
//! deduplicated by node id, newest generation first.
//!
//! Gossip itself is believed for liveness only: a member's state is
//! believed, and the member placed, once it is proven over mutual TLS by a
//! certificate naming its node id (`crate::proofs`). Until then it is
//! listed as unproven and ignored; a restarted member's last proven run
//! stands for it meanwhile, down.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat};
use ringkv_core::ring::NodeName;
use ringkv_core::{Epoch, KvError, Timestamp};
use ringkv_net::wire::{MemberClaim, MemberStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::NodeError;
use crate::env::{GossipTransport, Network};
use crate::fault::Faults;
use crate::gossip::{GossipKeys, SealedTransport, SocketShared};
use crate::proofs::{MAX_PROBES, PROBE_TIMEOUT, Proofs, Prover};
use crate::topology::{self, DeadClocks, Gossiped, Missing, Topology};

const KEY_ADDR: &str = "addr";
const KEY_PARTITIONS: &str = "partitions";
const KEY_STATUS: &str = "status";
const KEY_EPOCH: &str = "epoch";
const KEY_FENCED: &str = "fenced";
/// When the member was last alive before this start (from its member file).
const KEY_ALIVE_BEFORE: &str = "alive_before";
/// Which join the member is in: a fence on a joining member names the join.
const KEY_JOIN: &str = "join";

/// Fenced members a node remembers; beyond this the longest-fenced is
/// forgotten, which keeps the gossiped list within one datagram.
const MAX_FENCED: usize = 32;
/// Gossip intervals of contact after a gap before a node trusts that it has
/// heard every member's fences.
const RECHECK_INTERVALS: u32 = 6;
/// Gossip intervals into that contact at which the members' heartbeats are
/// noted, to see which still advance by the end of it: past the burst of
/// datagrams that queued up while this node was not running.
const BASELINE_INTERVALS: u32 = 2;

/// Contact with a live majority after a gap (see [`Standing`]).
#[derive(Debug)]
struct Contact {
    since: Instant,
    /// Each member's gossip heartbeat, noted `BASELINE_INTERVALS` in.
    baseline: Option<BTreeMap<NodeName, u64>>,
}

impl Contact {
    /// One membership pass of a suspect node, with `topology` and the
    /// members' gossip heartbeats `beats` as it sees them now: whether
    /// gossip now confirms that it is still a member.
    ///
    /// A majority, not any one member: a member that drops this node is one
    /// of a live majority, and every member it reaches adopts its fence, so
    /// any majority this node hears holds the fence if there is one; a
    /// single member heard may be one cut off from the fencers since before
    /// the fence. And a majority heard now, not one the failure detector
    /// still calls live because it takes seconds to notice the dead: only
    /// members whose heartbeat advances count (a node resumed alone once
    /// counted two members killed during its pause, `tests/fencing.rs`).
    fn confirms(
        contact: &mut Option<Contact>,
        topology: &Topology,
        beats: &BTreeMap<NodeName, u64>,
        now: Instant,
        interval: Duration,
    ) -> bool {
        if !topology.live_majority() {
            *contact = None;
            return false;
        }
        let c = contact.get_or_insert(Contact { since: now, baseline: None });
        let into = now - c.since;
        match &c.baseline {
            None if into >= interval * BASELINE_INTERVALS => c.baseline = Some(beats.clone()),
            Some(before) if into >= interval * RECHECK_INTERVALS => {
                let advanced =
                    |name: &NodeName| beats.get(name).zip(before.get(name)).is_some_and(|(now, then)| now > then);
                if topology.majority_where(|name| topology.is_self(name) || advanced(name)) {
                    *contact = None;
                    return true;
                }
            }
            _ => {}
        }
        false
    }
}

pub(crate) struct MembershipConfig {
    pub node_id: String,
    pub cluster_id: String,
    pub generation: u64,
    pub gossip: SocketAddr,
    pub seeds: Vec<String>,
    pub addr: SocketAddr,
    pub partitions: u16,
    pub replication: usize,
    pub vnodes: u32,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    pub dead_node_grace: Duration,
    pub join_timeout: Duration,
    pub epoch: Epoch,
    /// What to gossip until the node decides otherwise: `Recovering` for a
    /// member restarting with its data, `Joining` for a new one.
    pub status: MemberStatus,
    /// Wall-clock ms the member was last alive before this start, if it is
    /// returning with its data.
    pub alive_before: Option<u64>,
    /// The other members of the ring it last held a place in, if its member
    /// file says (`member_file::Membered::peers`).
    pub last_peers: Option<Vec<NodeName>>,
    /// The fences its member file kept (`Topology::fences`): a member this
    /// node fenced stays fenced across its restart, or the node would take
    /// it back, stale, if it returned without rejoining.
    pub last_fences: Vec<String>,
    pub faults: Arc<Faults>,
    pub network: Arc<dyn Network>,
    /// The keyring every gossip datagram is sealed and opened with.
    pub keys: Arc<GossipKeys>,
    /// Proves gossiped members over mutual TLS.
    pub prover: Prover,
    /// What this node answers to `Request::Claim`.
    pub claims: Arc<ClaimSource>,
}

/// What this node says of itself and vouches for (`Request::Claim`): its
/// own gossiped state, read from chitchat, and the claims it has proven.
#[derive(Default)]
pub(crate) struct ClaimSource {
    chitchat: OnceLock<Arc<tokio::sync::Mutex<chitchat::Chitchat>>>,
    proven: Mutex<Vec<MemberClaim>>,
}

impl ClaimSource {
    pub(crate) async fn claims(&self) -> Result<Vec<MemberClaim>, KvError> {
        let chitchat =
            self.chitchat.get().ok_or_else(|| KvError::Unavailable("this node has not started gossip yet".into()))?;
        let own = {
            let guard = chitchat.lock().await;
            let id = guard.self_chitchat_id().clone();
            let state = guard.node_state(&id).ok_or_else(|| KvError::Internal("no own gossip state".into()))?;
            let seen = parse_state(&id, state, true);
            claim_of(&NodeName::from(&*id.node_id), &seen)
                .ok_or_else(|| KvError::Internal("own gossip state lacks an address".into()))?
        };
        let mut claims = vec![own];
        claims.extend(self.proven.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        Ok(claims)
    }
}

pub(crate) struct Membership {
    handle: ChitchatHandle,
    /// Reloads the gossip keyring file.
    keyring_watch: JoinHandle<()>,
    gossip_addr: SocketAddr,
    topology: watch::Receiver<Arc<Topology>>,
    epochs: watch::Receiver<Epoch>,
    standing: Arc<Standing>,
    task: JoinHandle<()>,
}

/// Whether this node may act on its data now: serve requests, repair,
/// hand hints off. Not while a member fences it, nor after a gap in its
/// own execution or a long time down (see the module docs) until gossip
/// from a majority has confirmed that no member fences it, nor while its
/// clock is off from the majority's (`clock_check.rs`).
pub(crate) struct Standing {
    /// Longer gaps mean the others may have removed this node.
    limit: Duration,
    last_tick: Mutex<Instant>,
    suspect: AtomicBool,
    fenced: watch::Sender<bool>,
    /// The offset of the majority's clocks from this node's, while beyond
    /// the clock check's bound.
    clock_off: Mutex<Option<i64>>,
}

impl Standing {
    /// `suspect`: the node starts with data it last held longer ago than
    /// half the grace period, the same doubt as a long pause.
    fn new(dead_node_grace: Duration, suspect: bool) -> Standing {
        Standing {
            limit: dead_node_grace / 2,
            last_tick: Mutex::new(Instant::now()),
            suspect: AtomicBool::new(suspect),
            fenced: watch::channel(false).0,
            clock_off: Mutex::new(None),
        }
    }

    pub(crate) fn check(&self) -> Result<(), KvError> {
        if *self.fenced.borrow() {
            return Err(KvError::Unavailable(
                "this node was removed from the ring while it was paused or cut off; it is discarding its data and \
                 rejoining"
                    .into(),
            ));
        }
        let idle = self.last_tick.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if self.suspect.load(Ordering::Relaxed) || idle > self.limit {
            return Err(KvError::Unavailable(
                "this node was down, paused or starved for longer than half of dead_node_grace; it serves again \
                 once gossip from a majority confirms it is still a member"
                    .into(),
            ));
        }
        if let Some(offset_ms) = self.clock_off() {
            let side = if offset_ms > 0 { "behind" } else { "ahead of" };
            return Err(KvError::Unavailable(format!(
                "this node's clock runs {} ms {side} the majority's, more than half of max_clock_drift; it serves \
                 nothing until its clock agrees again",
                offset_ms.unsigned_abs()
            )));
        }
        Ok(())
    }

    /// The majority's clocks minus this node's, while that is beyond the
    /// clock check's bound.
    pub(crate) fn clock_off(&self) -> Option<i64> {
        *self.clock_off.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the clock check's verdict: `Some` offset while off.
    pub(crate) fn set_clock_off(&self, offset_ms: Option<i64>) {
        let mut off = self.clock_off.lock().unwrap_or_else(|e| e.into_inner());
        match (off.is_some(), offset_ms) {
            (false, Some(offset_ms)) => tracing::error!(
                offset_ms,
                "this node's wall clock is off from the majority's by more than half of max_clock_drift; it serves \
                 nothing until its clock agrees again"
            ),
            (true, None) => tracing::warn!("this node's wall clock agrees with the majority's again; serving"),
            _ => {}
        }
        *off = offset_ms;
    }

    /// Turns true when a live member fences this node.
    pub(crate) fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.subscribe()
    }
}

/// One member as gossip describes it, deduplicated by node id.
#[derive(Debug, Clone)]
struct Seen {
    generation: u64,
    addr: Option<SocketAddr>,
    partitions: Option<u16>,
    status: MemberStatus,
    epoch: Epoch,
    live: bool,
    /// The members it fences, as gossiped: `name` for a member fenced out
    /// of the current ring, `name@join` for one fenced while joining.
    fences: Vec<String>,
    alive_before: u64,
    join: u64,
    /// Its gossip heartbeat as this node last heard it: advancing while it
    /// runs, standing still once it is gone however live it still looks.
    heartbeat: u64,
}

/// A member this node fenced.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fence {
    since: Instant,
    /// The join it was in, if it was fenced while joining: only a new join
    /// lifts the fence, since the one it was in pulled data that may miss
    /// deletes whose tombstones were purged without it.
    join: Option<u64>,
    /// The join it gossiped when it was fenced, if it was heard: one it
    /// began since, seen under any status, discarded its data and pulled
    /// afresh, and lifts the fence. What lifts the fence of a member a
    /// restarted node remembers it fenced, if the member rejoined meanwhile.
    seen_join: Option<u64>,
}

impl Fence {
    /// As gossiped: `name` for a place in the current ring, `name@join` for
    /// a join.
    fn gossiped(name: &NodeName, fence: &Fence) -> String {
        match fence.join {
            Some(join) => format!("{name}@{join}"),
            None => name.to_string(),
        }
    }

    /// As the member file keeps it: as gossiped, and `#seen_join` if known.
    fn kept(name: &NodeName, fence: &Fence) -> String {
        let gossiped = Fence::gossiped(name, fence);
        match fence.seen_join {
            Some(seen) => format!("{gossiped}#{seen}"),
            None => gossiped,
        }
    }

    /// A fence the member file kept ([`Fence::kept`]); `None` if malformed.
    fn restore(kept: &str, now: Instant) -> Option<(NodeName, Fence)> {
        let (gossiped, seen_join) = match kept.split_once('#') {
            Some((gossiped, seen)) => (gossiped, Some(seen.parse().ok()?)),
            None => (kept, None),
        };
        let (name, join) = match gossiped.split_once('@') {
            Some((name, join)) => (name, Some(join.parse().ok()?)),
            None => (gossiped, None),
        };
        (!name.is_empty()).then(|| (NodeName::from(name), Fence { since: now, join, seen_join }))
    }
}

impl Membership {
    /// Starts gossip and waits, at most `join_timeout`, to hear from the
    /// cluster. Fails if a seed says we belong to another cluster or a member
    /// has another partition count.
    pub(crate) async fn start(config: MembershipConfig) -> Result<Membership, NodeError> {
        if config.addr.ip().is_unspecified() || config.gossip.ip().is_unspecified() {
            return Err(NodeError::Config(
                "a clustered node must listen and gossip on a specific address (not 0.0.0.0 or ::), since it \
                 advertises both to its peers"
                    .into(),
            ));
        }
        let rejected_by = Arc::new(Mutex::new(None));
        let shared = SocketShared {
            keys: config.keys.clone(),
            cluster_id: config.cluster_id.clone(),
            rejected_by: rejected_by.clone(),
            faults: config.faults.clone(),
            tap: None,
        };
        let bind_error = |e: String| NodeError::Config(format!("cannot bind gossip address {}: {e}", config.gossip));
        let transport: Box<dyn GossipTransport> =
            match config.network.gossip_transport(config.gossip).await.map_err(|e| bind_error(e.to_string()))? {
                Some(transport) => transport,
                None => {
                    Box::new(SealedTransport::bind(config.gossip, shared).await.map_err(|e| bind_error(e.to_string()))?)
                }
            };
        let gossip_addr = transport.local_addr().map_err(|e| NodeError::Config(e.to_string()))?;
        let keyring_watch = tokio::spawn(crate::gossip::watch_keyring(config.keys.clone()));
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(config.node_id.clone(), config.generation, gossip_addr),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: gossip_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                sampling_window_size: 1_000,
                max_interval: Duration::from_secs(10),
                initial_interval: config.gossip_interval,
                // chitchat forgets a dead node after this; the ring keeps it
                // for `dead_node_grace`, and needs its address until then.
                dead_node_grace_period: config.dead_node_grace * 2 + Duration::from_secs(60),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3_600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let initial = vec![
            (KEY_ADDR.to_string(), config.addr.to_string()),
            (KEY_PARTITIONS.to_string(), config.partitions.to_string()),
            (KEY_STATUS.to_string(), config.status.as_str().to_string()),
            (KEY_EPOCH.to_string(), config.epoch.0.0.to_string()),
            (KEY_ALIVE_BEFORE.to_string(), config.alive_before.unwrap_or(0).to_string()),
        ];
        let handle = match spawn_chitchat(chitchat_config, initial, &*transport).await {
            Ok(handle) => handle,
            Err(e) => {
                keyring_watch.abort();
                return Err(NodeError::Config(format!("cannot start gossip: {e:#}")));
            }
        };
        let _ = config.claims.chitchat.set(handle.chitchat());
        let me = NodeName::from(config.node_id.as_str());

        let own_seed = |s: &String| s.parse::<SocketAddr>().is_ok_and(|a| a == gossip_addr);
        let has_seeds = config.seeds.iter().any(|s| !own_seed(s));
        // A member returning with data whose only seed is itself (the
        // others' seed) still listens: the others gossip to it, and until
        // it has heard them its ring is itself alone, in which it would
        // acknowledge writes by itself and then drop them as partitions
        // that moved elsewhere (simulator seed 3421).
        let listens = has_seeds || config.alive_before.is_some();
        let mut deadline = Instant::now() + config.join_timeout;
        let heard = loop {
            if let Some(peer) = *rejected_by.lock().unwrap_or_else(|e| e.into_inner()) {
                keyring_watch.abort();
                let _ = handle.initiate_shutdown();
                return Err(NodeError::Join(format!(
                    "{peer} rejected this node's gossip because it belongs to another cluster; this node's \
                     cluster_id is '{}'",
                    config.cluster_id
                )));
            }
            // Gossip, not yet proven: enough to know someone answered.
            let seen = newest(&read_gossip(&handle.chitchat()).await);
            let others = seen.iter().filter(|(n, s)| **n != me && s.live).count();
            if !listens || others > 0 {
                break others > 0;
            }
            if Instant::now() >= deadline {
                match wait_for_others(
                    config.alive_before.is_some(),
                    &config.seeds,
                    has_seeds,
                    config.last_peers.as_deref(),
                ) {
                    None => {
                        tracing::warn!(seeds = ?config.seeds, "no other member was heard within the join timeout; starting alone");
                        break false;
                    }
                    Some(why) => tracing::warn!(seeds = ?config.seeds, "{why}"),
                }
                deadline = Instant::now() + config.join_timeout;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if heard {
            // One more round so that the deltas of every member have arrived.
            tokio::time::sleep(config.gossip_interval * 2).await;
        }

        // Prove every live member before the first ring, so that a node
        // starts from the ring the others use.
        let proofs = Arc::new(Mutex::new(Proofs::default()));
        let raw = read_gossip(&handle.chitchat()).await;
        let probes: Vec<_> = newest(&raw)
            .iter()
            .filter(|(n, s)| **n != me && s.live)
            .filter_map(|(n, s)| claim_of(n, s).map(|c| (n.clone(), c)))
            // All at once, whatever MAX_PROBES: the first ring waits for them.
            .inspect(|(n, _)| lock(&proofs).start(n))
            .map(|(name, gossiped)| {
                let prover = config.prover.clone();
                async move {
                    let result = probe(&prover, &name, gossiped.addr).await;
                    (name, gossiped, result)
                }
            })
            .collect();
        for (name, gossiped, result) in futures_util::future::join_all(probes).await {
            lock(&proofs).record(&name, &gossiped, result, &config.node_id, Instant::now());
        }
        publish_proven(&config.claims, &proofs);
        let seen = believe(&me, config.generation, &raw, &lock(&proofs));
        if let Some((name, theirs)) = seen
            .iter()
            .filter(|(n, _)| **n != me)
            .find_map(|(n, s)| s.partitions.filter(|p| *p != config.partitions).map(|p| (n, p)))
        {
            keyring_watch.abort();
            let _ = handle.initiate_shutdown();
            return Err(NodeError::Join(format!(
                "node {name} has {theirs} partitions and this node {}: a cluster's partition count is fixed when it \
                 is created",
                config.partitions
            )));
        }
        let restored: BTreeMap<NodeName, Fence> =
            config.last_fences.iter().filter_map(|kept| Fence::restore(kept, Instant::now())).collect();
        let mut first = compute(&config, &seen, &mut DeadClocks::default(), &restored);
        first.unproven = unproven(&me, &raw, &seen);
        first.fences = kept(&restored);
        let mut missing = Missing::new(&me, config.last_peers.as_deref().unwrap_or_default());
        missing.overdue(&first, |n| restored.contains_key(n), Instant::now(), config.dead_node_grace);
        first.missing = missing.names();
        if !first.missing.is_empty() {
            tracing::warn!(
                missing = ?first.missing,
                "members of this node's last ring are not heard from yet; it purges no tombstone until each is \
                 proven, or fenced after dead_node_grace"
            );
        }
        let first = Arc::new(first);
        let (topology_tx, topology) = watch::channel(first);
        // What gossip already shows, so that a starting node applies the
        // cluster's epoch before it serves.
        let (epoch_tx, epochs) = watch::channel(max_epoch(&seen));
        let away_ms = config.alive_before.map(|last| config.generation.saturating_sub(last));
        let suspect = away_ms.is_some_and(|away| away > (config.dead_node_grace / 2).as_millis() as u64);
        if suspect {
            tracing::warn!(
                away_ms,
                "this node was down for longer than half of dead_node_grace; it serves nothing until gossip confirms \
                 it is still a member"
            );
        }
        let standing = Arc::new(Standing::new(config.dead_node_grace, suspect));
        let task = tokio::spawn(maintain(
            handle.chitchat(),
            config,
            topology_tx,
            epoch_tx,
            standing.clone(),
            proofs.clone(),
            Remembered { missing, fenced: restored },
        ));
        Ok(Membership { handle, keyring_watch, gossip_addr, topology, epochs, standing, task })
    }

    pub(crate) fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    pub(crate) fn topology(&self) -> watch::Receiver<Arc<Topology>> {
        self.topology.clone()
    }

    pub(crate) fn standing(&self) -> Arc<Standing> {
        self.standing.clone()
    }

    /// The largest truncate epoch any member gossips.
    pub(crate) fn epochs(&self) -> watch::Receiver<Epoch> {
        self.epochs.clone()
    }

    pub(crate) async fn set_status(&self, status: MemberStatus) {
        self.handle.chitchat().lock().await.self_node_state().set(KEY_STATUS, status.as_str());
    }

    /// Gossips that this node begins join `join`, which must differ from
    /// every earlier join of this node id.
    pub(crate) async fn begin_join(&self, join: u64) {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        state.set(KEY_JOIN, join);
        state.set(KEY_STATUS, MemberStatus::Joining.as_str());
    }

    pub(crate) async fn set_epoch(&self, epoch: Epoch) {
        self.handle.chitchat().lock().await.self_node_state().set(KEY_EPOCH, epoch.0.0);
    }

    pub(crate) async fn shutdown(self) {
        self.task.abort();
        self.keyring_watch.abort();
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "gossip did not stop cleanly");
        }
    }
}

fn max_epoch(seen: &BTreeMap<NodeName, Seen>) -> Epoch {
    seen.values().map(|s| s.epoch).max().unwrap_or(Epoch::NONE)
}

fn compute(
    config: &MembershipConfig,
    seen: &BTreeMap<NodeName, Seen>,
    clocks: &mut DeadClocks,
    fenced: &BTreeMap<NodeName, Fence>,
) -> Topology {
    let mut gossiped = BTreeMap::new();
    for (name, s) in seen {
        let is_self = **name == *config.node_id;
        if !is_self && s.partitions != Some(config.partitions) {
            // Logged by the maintenance loop; such a node never joins our ring.
            continue;
        }
        let Some(addr) = s.addr else { continue };
        let live = is_self || s.live;
        let fenced = !is_self && fenced.contains_key(name);
        let g = Gossiped { addr, status: s.status, join: s.join, live, dead_for: None, epoch: s.epoch, fenced };
        gossiped.insert(name.clone(), g);
    }
    clocks.stamp(&mut gossiped, Instant::now());
    topology::build(
        &NodeName::from(config.node_id.as_str()),
        &config.cluster_id,
        gossiped,
        config.partitions,
        config.replication,
        config.vnodes,
        config.dead_node_grace,
    )
}

async fn maintain(
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    config: MembershipConfig,
    topology_tx: watch::Sender<Arc<Topology>>,
    epoch_tx: watch::Sender<Epoch>,
    standing: Arc<Standing>,
    proofs: Arc<Mutex<Proofs>>,
    remembered: Remembered,
) {
    let Remembered { mut missing, mut fenced } = remembered;
    let mut changes = chitchat.lock().await.live_nodes_watcher();
    // `Proofs::due` keeps at most MAX_PROBES probes running, each of which
    // sends one answer: the channel never makes a probe wait.
    let (probe_tx, mut probed) = tokio::sync::mpsc::channel(MAX_PROBES);
    let mut tick = tokio::time::interval(config.gossip_interval);
    let mut clocks = DeadClocks::default();
    let mut warned: HashSet<NodeName> = HashSet::new();
    // Fences restored from the member file are gossiped on the first pass,
    // after it lifted those of members that rejoined meanwhile.
    let mut restored = !fenced.is_empty();
    let mut kept_now = kept(&fenced);
    let mut contact: Option<Contact> = None;
    let me = NodeName::from(config.node_id.as_str());
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
            Some((name, gossiped, result)) = probed.recv() => {
                if lock(&proofs).record(&name, &gossiped, result, &config.node_id, Instant::now()) {
                    publish_proven(&config.claims, &proofs);
                }
            }
        }
        let now = Instant::now();
        let gap = now - std::mem::replace(&mut *standing.last_tick.lock().unwrap_or_else(|e| e.into_inner()), now);
        if gap > standing.limit {
            tracing::warn!(
                gap_ms = gap.as_millis() as u64,
                "this node did not run for longer than half of dead_node_grace (paused or starved); it serves \
                 nothing until gossip confirms it is still a member"
            );
            standing.suspect.store(true, Ordering::Relaxed);
            contact = None;
            clocks.forget();
            missing.forget();
        }
        let raw = read_gossip(&chitchat).await;
        // Ask, off this loop, every member whose newest gossip differs from
        // what it has proven.
        for (name, s) in newest(&raw).into_iter().filter(|(n, _)| *n != me) {
            let Some(gossiped) = claim_of(&name, &s) else { continue };
            {
                let mut proofs = lock(&proofs);
                if !proofs.due(&name, &gossiped, now) {
                    continue;
                }
                proofs.start(&name);
            }
            let (prover, tx) = (config.prover.clone(), probe_tx.clone());
            tokio::spawn(async move {
                let result = probe(&prover, &name, gossiped.addr).await;
                let _ = tx.send((name, gossiped, result)).await;
            });
        }
        let seen = believe(&me, config.generation, &raw, &lock(&proofs));
        let unproven_now = unproven(&me, &raw, &seen);
        for (name, s) in &seen {
            if let Some(p) = s.partitions.filter(|p| *p != config.partitions)
                && warned.insert(name.clone())
            {
                tracing::error!(node = %name, partitions = p, ours = config.partitions, "ignoring a node with another partition count");
            }
        }
        let max_epoch = max_epoch(&seen);
        epoch_tx.send_if_modified(|current| {
            let raised = max_epoch > *current;
            *current = current.merge(max_epoch);
            raised
        });
        let fenced_by = seen.get(&me).and_then(|own| fencer(&me, own, &seen)).map(|(by, _)| by);
        standing.fenced.send_if_modified(|current| {
            let changed = *current != fenced_by.is_some();
            if changed && let Some(by) = fenced_by {
                tracing::warn!(%by, "a member removed this node from the ring while it was out");
            }
            *current = fenced_by.is_some();
            changed
        });
        let mut next = compute(&config, &seen, &mut clocks, &fenced);
        let mut fences_changed = update_fences(&me, &mut fenced, &seen, &next, now) || std::mem::take(&mut restored);
        for name in missing.overdue(&next, |n| fenced.contains_key(n), now, config.dead_node_grace) {
            tracing::warn!(
                node = %name,
                "a member of this node's last ring has not been proven since this node started, for longer than \
                 dead_node_grace; fencing it"
            );
            fenced.insert(name, Fence { since: now, join: None, seen_join: None });
            fences_changed = true;
        }
        if fences_changed {
            let list: Vec<String> = fenced.iter().map(|(name, fence)| Fence::gossiped(name, fence)).collect();
            tracing::info!(fenced = ?list, "fenced members changed");
            chitchat.lock().await.self_node_state().set(KEY_FENCED, list.join(","));
            next = compute(&config, &seen, &mut clocks, &fenced);
            kept_now = kept(&fenced);
        }
        next.unproven = unproven_now;
        next.missing = missing.names();
        next.fences = kept_now.clone();
        if standing.suspect.load(Ordering::Relaxed)
            && Contact::confirms(&mut contact, &next, &heartbeats(&raw), now, config.gossip_interval)
        {
            tracing::info!("gossip confirms this node's membership; serving again");
            standing.suspect.store(false, Ordering::Relaxed);
        }
        if !topology_tx.borrow().same_as(&next) {
            let members: Vec<String> = next
                .members
                .iter()
                .map(|(n, m)| format!("{n}:{}{}", m.status.as_str(), if m.live { "" } else { ":down" }))
                .collect();
            let unproven: Vec<&str> = next.unproven.iter().map(|n| &**n).collect();
            tracing::info!(?members, ?unproven, ring = next.table.members().len(), "membership changed");
            topology_tx.send_replace(Arc::new(next));
        }
    }
}

/// Fences the members the ring rules removed for being dead too long
/// (from the current ring, or from the next one while joining) and those a
/// live member fences, and lifts the fence of members that left or began a
/// new join. Returns whether the set changed.
fn update_fences(
    me: &NodeName,
    fenced: &mut BTreeMap<NodeName, Fence>,
    seen: &BTreeMap<NodeName, Seen>,
    topology: &Topology,
    now: Instant,
) -> bool {
    let mut changed = false;
    fenced.retain(|name, fence| {
        let back = seen.get(name).is_some_and(|s| match s.status {
            MemberStatus::Left => true,
            MemberStatus::Joining => fence.join != Some(s.join),
            // A joiner fenced in one join that began another while this
            // node did not hear it (cut off), and maybe finished it: that
            // join discarded and pulled afresh. It ignores the old join's
            // fence, so nothing else would lift it (simulator seed 4162:
            // the fencer refused its replica requests for good). Join 0 is
            // a restart with data from the fenced join, which lifts nothing.
            _ => match fence.join {
                Some(join) => s.join != 0 && s.join != join,
                // Likewise a member fenced from its ring place that began
                // and finished a new join unheard: by a node that restarted
                // since, remembering the fence (`Fence::seen_join`).
                None => fence.seen_join.is_some_and(|seen| s.join != 0 && s.join != seen),
            },
        });
        changed |= back;
        !back
    });
    for (name, state) in seen {
        if name == me || fenced.contains_key(name) {
            continue;
        }
        if let Some((_, join)) = fencer(name, state, seen) {
            fenced.insert(name.clone(), Fence { since: now, join, seen_join: Some(state.join) });
            changed = true;
        }
    }
    for (name, member) in &topology.members {
        if member.live || fenced.contains_key(name) {
            continue;
        }
        let join = match member.status {
            status if status.in_current_ring() && !member.in_ring => None,
            // A join that has not begun (join 0: a node just started) has
            // pulled nothing, and its fence would only delay it.
            MemberStatus::Joining if !member.in_next => match seen.get(name).map(|s| s.join) {
                Some(join) if join != 0 => Some(join),
                _ => continue,
            },
            _ => continue,
        };
        let seen_join = seen.get(name).map(|s| s.join);
        fenced.insert(name.clone(), Fence { since: now, join, seen_join });
        changed = true;
    }
    while fenced.len() > MAX_FENCED {
        let oldest = fenced.iter().min_by_key(|(_, fence)| fence.since).map(|(n, _)| n.clone());
        if let Some(oldest) = oldest {
            fenced.remove(&oldest);
        }
    }
    changed
}

/// What the member file remembered of the last ring, as the maintenance
/// loop starts with it.
struct Remembered {
    /// Its members not proven yet.
    missing: Missing,
    /// The members fenced then, and not yet seen to rejoin.
    fenced: BTreeMap<NodeName, Fence>,
}

/// The fences as the member file keeps them.
fn kept(fenced: &BTreeMap<NodeName, Fence>) -> Vec<String> {
    fenced.iter().map(|(name, fence)| Fence::kept(name, fence)).collect()
}

/// Every node state gossip holds, each generation of a node id apart.
async fn read_gossip(chitchat: &Arc<tokio::sync::Mutex<chitchat::Chitchat>>) -> Vec<(NodeName, Seen)> {
    let guard = chitchat.lock().await;
    let live: HashSet<&ChitchatId> = guard.live_nodes().collect();
    guard
        .node_states()
        .iter()
        .map(|(id, state)| (NodeName::from(&*id.node_id), parse_state(id, state, live.contains(id))))
        .collect()
}

/// Each node id's gossip heartbeat, of its newest generation.
fn heartbeats(raw: &[(NodeName, Seen)]) -> BTreeMap<NodeName, u64> {
    newest(raw).into_iter().map(|(name, s)| (name, s.heartbeat)).collect()
}

fn parse_state(id: &ChitchatId, state: &chitchat::NodeState, live: bool) -> Seen {
    Seen {
        generation: id.generation_id,
        addr: state.get(KEY_ADDR).and_then(|a| a.parse().ok()),
        partitions: state.get(KEY_PARTITIONS).and_then(|p| p.parse().ok()),
        status: state.get(KEY_STATUS).and_then(MemberStatus::parse).unwrap_or(MemberStatus::Joining),
        epoch: Epoch(Timestamp(state.get(KEY_EPOCH).and_then(|e| e.parse().ok()).unwrap_or(0))),
        live,
        alive_before: state.get(KEY_ALIVE_BEFORE).and_then(|t| t.parse().ok()).unwrap_or(0),
        join: state.get(KEY_JOIN).and_then(|t| t.parse().ok()).unwrap_or(0),
        heartbeat: u64::from(state.heartbeat()),
        fences: state
            .get(KEY_FENCED)
            .map(|list| list.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

/// Why a member that heard nobody within the join timeout keeps waiting,
/// or `None` if it may start alone: a new member (nothing to lose), one
/// told to run alone (no seeds at all), and one whose last ring held only
/// itself (or, from a v1 member file, is not known to have held others).
/// A member returning with data cannot know, alone, whether the cluster was
/// cleared or moved on without it; and one whose only seed is itself (the
/// others' seed) but whose ring held others would, alone, acknowledge
/// writes that the others never see, and lose them when it learns it was
/// fenced or its partitions moved (simulator seeds 3421 and 660).
fn wait_for_others(
    returning: bool,
    seeds: &[String],
    has_seeds: bool,
    last_peers: Option<&[NodeName]>,
) -> Option<String> {
    if !returning {
        return None;
    }
    if has_seeds {
        return Some(
            "no seed answered within the join timeout; this member holds data that only the cluster can say is \
             still current (it may have been cleared), so it waits for a seed (start it without --seeds to run it \
             alone)"
                .into(),
        );
    }
    let peers = last_peers.filter(|peers| !peers.is_empty() && !seeds.is_empty())?;
    let peers: Vec<&str> = peers.iter().map(|n| &**n).collect();
    Some(format!(
        "no other member was heard within the join timeout; this member holds data and last served in a ring with \
         {}, so it waits for one of them rather than acknowledge writes alone (start it without --seeds to run it \
         alone)",
        peers.join(", ")
    ))
}

/// A live member that fences `name` (whose state is `state`) as it is now,
/// and the join that fence names. Every node adopts such a fence as its
/// own, not only the nodes that saw the member die: the fenced member
/// discards its data once it hears the fence, and until then a node that
/// never lost sight of it would still place it, pull from it and serve its
/// data, resurrecting what the fencers purged meanwhile (simulator seed
/// 413: a rejoining node pulled a deleted key back from a member the others
/// had fenced). Adopted, not merely heeded: a node that only heeded the
/// fence would take the member back into its ring, stale, as soon as the
/// fencer went down (seed 39).
fn fencer<'a>(
    name: &NodeName,
    state: &Seen,
    seen: &'a BTreeMap<NodeName, Seen>,
) -> Option<(&'a NodeName, Option<u64>)> {
    seen.iter().filter(|(n, s)| *n != name && s.live).find_map(|(n, s)| {
        let entry = s.fences.iter().find(|entry| fences_this(entry, name, state))?;
        Some((n, entry.split_once('@').and_then(|(_, join)| join.parse().ok())))
    })
}

/// Whether a gossiped fence entry applies to member `me` as it is now: a
/// fence of its place in the current ring while it holds one, or a fence
/// of the join it is in. Fences of an earlier membership or join are stale.
fn fences_this(entry: &str, me: &NodeName, own: &Seen) -> bool {
    match entry.split_once('@') {
        Some((name, join)) => name == &**me && join.parse() == Ok(own.join),
        None => entry == &**me && own.status.in_current_ring(),
    }
}

/// The newest gossiped generation of each node id, as gossip says it.
fn newest(raw: &[(NodeName, Seen)]) -> BTreeMap<NodeName, Seen> {
    let mut seen: BTreeMap<NodeName, Seen> = BTreeMap::new();
    for (name, entry) in raw {
        match seen.get(name) {
            Some(existing) if existing.generation >= entry.generation => {}
            _ => {
                seen.insert(name.clone(), entry.clone());
            }
        }
    }
    seen
}

/// What this node believes: its own state as it gossips it, and for every
/// other node id the claim proven for it (`crate::proofs`), live as gossip
/// says of that generation, or down if gossip holds only newer ones. A node
/// id gossip holds no state of under the proven generation or a newer one
/// is not believed at all.
fn believe(me: &NodeName, generation: u64, raw: &[(NodeName, Seen)], proofs: &Proofs) -> BTreeMap<NodeName, Seen> {
    let mut seen = BTreeMap::new();
    for (name, entry) in raw {
        if name == me {
            if entry.generation == generation {
                seen.insert(name.clone(), entry.clone());
            }
            continue;
        }
        if let Some(claim) = proofs.believed(name).filter(|c| c.generation == entry.generation) {
            seen.insert(name.clone(), from_claim(claim, entry, entry.live));
        }
    }
    // A member gossip shows only under a newer generation than the one
    // proven restarted (or someone holding the gossip key claims its id),
    // and the new run is not proven yet: its last proven run stands for
    // it, down. Dropped instead, it would leave the ring for that moment,
    // and a ring without it needs fewer answers: one node alone
    // acknowledged a quorum write that later went with it (simulator seed
    // 434).
    for (name, entry) in raw {
        if let Some(claim) = proofs.believed(name).filter(|c| c.generation < entry.generation)
            && !seen.contains_key(name)
        {
            seen.insert(name.clone(), from_claim(claim, entry, false));
        }
    }
    seen
}

/// Node ids whose newest gossiped run is not believed.
fn unproven(me: &NodeName, raw: &[(NodeName, Seen)], believed: &BTreeMap<NodeName, Seen>) -> Vec<NodeName> {
    newest(raw)
        .into_iter()
        .filter(|(n, entry)| n != me && believed.get(n).is_none_or(|b| b.generation != entry.generation))
        .map(|(n, _)| n)
        .collect()
}

/// What gossip says of a node, as the node would claim it.
fn claim_of(name: &NodeName, s: &Seen) -> Option<MemberClaim> {
    Some(MemberClaim {
        node_id: name.to_string(),
        generation: s.generation,
        addr: s.addr?,
        partitions: s.partitions?,
        status: s.status,
        epoch: s.epoch,
        fences: s.fences.clone(),
        alive_before: s.alive_before,
        join: s.join,
    })
}

/// The claim, with what only gossip knows (`live` aside) from `gossip`.
fn from_claim(claim: &MemberClaim, gossip: &Seen, live: bool) -> Seen {
    Seen {
        generation: claim.generation,
        addr: Some(claim.addr),
        partitions: Some(claim.partitions),
        status: claim.status,
        epoch: claim.epoch,
        live,
        fences: claim.fences.clone(),
        alive_before: claim.alive_before,
        join: claim.join,
        heartbeat: gossip.heartbeat,
    }
}

async fn probe(prover: &Prover, name: &NodeName, addr: SocketAddr) -> Result<Vec<MemberClaim>, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, prover(name.clone(), addr)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer from {addr} within {PROBE_TIMEOUT:?}")),
    }
}

/// Makes this node vouch for what it has proven.
fn publish_proven(claims: &ClaimSource, proofs: &Mutex<Proofs>) {
    let all: Vec<MemberClaim> = lock(proofs).all().cloned().collect();
    *claims.proven.lock().unwrap_or_else(|e| e.into_inner()) = all;
}

fn lock(proofs: &Mutex<Proofs>) -> std::sync::MutexGuard<'_, Proofs> {
    proofs.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Gossiped;

    fn seen(status: MemberStatus, join: u64, live: bool) -> Seen {
        Seen {
            generation: 1,
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            partitions: Some(16),
            status,
            epoch: Epoch::NONE,
            live,
            fences: Vec::new(),
            alive_before: 0,
            join,
            heartbeat: 0,
        }
    }

    /// `a` and `b` serve; `d` is in its join 7. What `a` makes of it with
    /// `d` dead for `dead_for`.
    fn view(d: &Seen, dead_for: Duration, fenced: &BTreeMap<NodeName, Fence>) -> Topology {
        let mut gossiped = BTreeMap::new();
        for (name, port) in [("a", 1), ("b", 2)] {
            gossiped.insert(NodeName::from(name), Gossiped::serving(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        let g = Gossiped {
            addr: SocketAddr::from(([127, 0, 0, 1], 4)),
            status: d.status,
            join: d.join,
            live: d.live,
            dead_for: (!d.live).then_some(dead_for),
            epoch: Epoch::NONE,
            fenced: fenced.contains_key("d"),
        };
        gossiped.insert(NodeName::from("d"), g);
        topology::build(&"a".into(), "x", gossiped, 16, 3, 8, Duration::from_secs(10))
    }

    /// `a`'s fences and gossip once `d`, with `status` in join `join`, has
    /// been dead past the grace and fenced.
    fn fenced_dead_d(status: MemberStatus, join: u64) -> (BTreeMap<NodeName, Fence>, BTreeMap<NodeName, Seen>) {
        let mut fenced = BTreeMap::new();
        let mut all = BTreeMap::new();
        all.insert(NodeName::from("d"), seen(status, join, false));
        let past = view(&all["d"], Duration::from_secs(11), &fenced);
        assert!(update_fences(&"a".into(), &mut fenced, &all, &past, Instant::now()));
        (fenced, all)
    }

    #[test]
    fn a_suspect_node_is_confirmed_only_by_a_majority_whose_heartbeats_advance() {
        use MemberStatus::Serving;
        let interval = Duration::from_millis(500);
        let topo = topology::sketch("n1", &[("n1", Serving, true), ("n2", Serving, true), ("n3", Serving, true)]);
        let beats = |n2: u64, n3: u64| -> BTreeMap<NodeName, u64> {
            [("n1", 100), ("n2", n2), ("n3", n3)].into_iter().map(|(n, b)| (NodeName::from(n), b)).collect()
        };
        let start = Instant::now();
        let at = |intervals: u32| start + interval * intervals;
        // Two members the failure detector still calls live, whose
        // heartbeats stand still: they died while this node was paused.
        let mut contact = None;
        for i in 0..=12 {
            assert!(!Contact::confirms(&mut contact, &topo, &beats(7, 9), at(i), interval), "interval {i}");
        }
        // One of them advancing makes, with this node, a majority of three,
        // but only once the sixth interval of contact has passed.
        let mut contact = None;
        for i in 0..6 {
            assert!(!Contact::confirms(&mut contact, &topo, &beats(7 + u64::from(i), 9), at(i), interval));
        }
        assert!(Contact::confirms(&mut contact, &topo, &beats(13, 9), at(6), interval));
        // Losing the live majority starts the count again.
        let mut contact = None;
        let down = topology::sketch("n1", &[("n1", Serving, true), ("n2", Serving, false), ("n3", Serving, false)]);
        assert!(!Contact::confirms(&mut contact, &topo, &beats(7, 9), at(0), interval));
        assert!(!Contact::confirms(&mut contact, &down, &beats(8, 9), at(3), interval));
        assert!(contact.is_none());
    }

    #[test]
    fn a_restarted_member_not_yet_proven_stays_believed_as_its_last_run_down() {
        let me = NodeName::from("a");
        let b = NodeName::from("b");
        let first = seen(MemberStatus::Serving, 0, true);
        let mut proofs = Proofs::default();
        let claim = claim_of(&b, &first).unwrap();
        proofs.record(&b, &claim, Ok(vec![claim.clone()]), "a", Instant::now());
        let believed = believe(&me, 9, &[(b.clone(), first.clone())], &proofs);
        assert!(believed[&b].live);
        assert!(unproven(&me, &[(b.clone(), first)], &believed).is_empty());

        // b restarts: gossip shows its new run, which is not proven yet.
        let restarted =
            Seen { generation: 2, status: MemberStatus::Recovering, ..seen(MemberStatus::Serving, 0, true) };
        let raw = [(b.clone(), restarted)];
        let believed = believe(&me, 9, &raw, &proofs);
        let stands_in = &believed[&b];
        assert_eq!((stands_in.generation, stands_in.status, stands_in.live), (1, MemberStatus::Serving, false));
        assert_eq!(unproven(&me, &raw, &believed), std::slice::from_ref(&b));

        // A newer run claimed beside the proven one, still gossiped live (a
        // stranger with the gossip key claiming b's id): the proven run is
        // believed as gossip says of it.
        let both = [(b.clone(), seen(MemberStatus::Serving, 0, true)), raw[0].clone()];
        assert!(believe(&me, 9, &both, &proofs)[&b].live);
    }

    #[test]
    fn a_joiner_cut_off_past_the_grace_is_fenced_until_it_begins_a_new_join() {
        let now = Instant::now();
        let mut fenced = BTreeMap::new();
        let mut all = BTreeMap::new();
        let d = seen(MemberStatus::Joining, 7, false);
        all.insert(NodeName::from("d"), d.clone());

        let within = view(&d, Duration::from_secs(9), &fenced);
        assert!(!update_fences(&"a".into(), &mut fenced, &all, &within, now), "within the grace nothing is fenced");

        let past = view(&d, Duration::from_secs(11), &fenced);
        assert!(update_fences(&"a".into(), &mut fenced, &all, &past, now));
        assert_eq!(fenced["d"].join, Some(7));

        // Back, still in the same join (or done with it and serving): the
        // fence holds.
        for status in [MemberStatus::Joining, MemberStatus::Serving] {
            all.insert(NodeName::from("d"), seen(status, 7, true));
            let back = view(&all["d"], Duration::ZERO, &fenced);
            assert!(!update_fences(&"a".into(), &mut fenced, &all, &back, now));
            assert!(fenced.contains_key("d"));
        }

        all.insert(NodeName::from("d"), seen(MemberStatus::Joining, 8, true));
        let anew = view(&all["d"], Duration::ZERO, &fenced);
        assert!(update_fences(&"a".into(), &mut fenced, &all, &anew, now), "a new join lifts the fence");
        assert!(fenced.is_empty());
    }

    #[test]
    fn a_joiner_seen_next_serving_after_a_new_join_is_lifted() {
        let now = Instant::now();
        let (mut fenced, mut all) = fenced_dead_d(MemberStatus::Joining, 7);
        assert_eq!(fenced["d"].join, Some(7));

        // Restarted with what join 7 pulled: the fence holds.
        all.insert(NodeName::from("d"), seen(MemberStatus::Recovering, 0, true));
        let back = view(&all["d"], Duration::ZERO, &fenced);
        assert!(!update_fences(&"a".into(), &mut fenced, &all, &back, now));

        // Join 8 began and finished while this node was cut off.
        all.insert(NodeName::from("d"), seen(MemberStatus::Serving, 8, true));
        let done = view(&all["d"], Duration::ZERO, &fenced);
        assert!(
            update_fences(&"a".into(), &mut fenced, &all, &done, now),
            "the join it finished unseen lifts the fence"
        );
        assert!(fenced.is_empty());
    }

    #[test]
    fn a_member_fenced_out_of_the_current_ring_is_lifted_by_any_join() {
        let now = Instant::now();
        let (mut fenced, mut all) = fenced_dead_d(MemberStatus::Serving, 7);
        assert_eq!(fenced["d"].join, None);

        all.insert(NodeName::from("d"), seen(MemberStatus::Recovering, 7, true));
        let back = view(&all["d"], Duration::ZERO, &fenced);
        assert!(!update_fences(&"a".into(), &mut fenced, &all, &back, now), "restarting with its data lifts nothing");

        all.insert(NodeName::from("d"), seen(MemberStatus::Joining, 7, true));
        let anew = view(&all["d"], Duration::ZERO, &fenced);
        assert!(update_fences(&"a".into(), &mut fenced, &all, &anew, now));
        assert!(fenced.is_empty());
    }

    #[test]
    fn a_fence_kept_in_the_member_file_holds_after_a_restart_until_the_member_joins_anew() {
        let now = Instant::now();
        let (fenced, mut all) = fenced_dead_d(MemberStatus::Serving, 7);
        let kept = kept(&fenced);
        assert_eq!(kept, ["d#7"]);
        let joiner = Fence { since: now, join: Some(12), seen_join: None };
        assert_eq!(Fence::kept(&"e".into(), &joiner), "e@12");
        assert_eq!(Fence::restore("e@12", now), Some(("e".into(), joiner)));
        assert_eq!(Fence::restore("e@x", now), None, "malformed");

        // Restarted: the fence is restored before d is heard.
        let mut fenced: BTreeMap<NodeName, Fence> = kept.iter().filter_map(|k| Fence::restore(k, now)).collect();
        assert_eq!(fenced["d"], Fence { since: now, join: None, seen_join: Some(7) });
        // d resumes, still in the membership it was fenced in, or restarted
        // with its data since: the fence holds, and keeps it out of the ring.
        for join in [7, 0] {
            all.insert(NodeName::from("d"), seen(MemberStatus::Serving, join, true));
            let back = view(&all["d"], Duration::ZERO, &fenced);
            assert!(!update_fences(&"a".into(), &mut fenced, &all, &back, now));
            assert!(!back.table.members().iter().any(|n| **n == *"d"), "a fenced member is placed nowhere");
        }
        // d joined anew while this node was down, and serves again.
        all.insert(NodeName::from("d"), seen(MemberStatus::Serving, 9, true));
        let rejoined = view(&all["d"], Duration::ZERO, &fenced);
        assert!(update_fences(&"a".into(), &mut fenced, &all, &rejoined, now), "the join it made since lifts it");
        assert!(fenced.is_empty());
    }

    #[test]
    fn a_node_heeds_only_the_fences_of_what_it_is_now() {
        let me = NodeName::from("d");
        let joining = seen(MemberStatus::Joining, 7, true);
        let serving = seen(MemberStatus::Serving, 7, true);
        assert!(fences_this("d@7", &me, &joining));
        assert!(fences_this("d@7", &me, &serving), "a fenced join that went on to serve is still fenced");
        assert!(!fences_this("d@6", &me, &joining), "a fence of an earlier join is stale");
        assert!(fences_this("d", &me, &serving));
        assert!(!fences_this("d", &me, &joining), "a fence of its old place is stale once it joins anew");
        assert!(!fences_this("dd", &me, &serving) && !fences_this("dd@7", &me, &joining));
    }

    #[test]
    fn a_member_that_heard_nobody_starts_alone_only_if_it_risks_nothing() {
        let own = vec!["10.0.0.1:7946".to_string()];
        let peers = [NodeName::from("n2"), NodeName::from("n3")];
        assert_eq!(wait_for_others(false, &own, false, None), None, "a new member");
        assert_eq!(wait_for_others(true, &[], false, Some(&peers)), None, "told to run alone");
        assert_eq!(wait_for_others(true, &own, false, Some(&[])), None, "its ring was itself");
        assert_eq!(wait_for_others(true, &own, false, None), None, "a v1 member file");
        let waits = wait_for_others(true, &own, false, Some(&peers)).expect("seed 660: waits for n2 or n3");
        assert!(waits.contains("n2, n3"), "{waits}");
        let other = vec!["10.0.0.2:7946".to_string()];
        assert!(wait_for_others(true, &other, true, Some(&[])).is_some(), "returning with data, seeds elsewhere");
    }

    /// Simulator seeds 413 and 39: `b` fenced `d`, `a` never lost sight of
    /// `d`. `a` must fence `d` too, and keep the fence once `b` is down,
    /// until `d` joins anew.
    #[test]
    fn a_fence_of_any_live_member_is_adopted_until_the_member_joins_anew() {
        let (a, b, d) = (NodeName::from("a"), NodeName::from("b"), NodeName::from("d"));
        let now = Instant::now();
        let mut all = BTreeMap::new();
        all.insert(a.clone(), seen(MemberStatus::Serving, 0, true));
        all.insert(d.clone(), seen(MemberStatus::Serving, 1, true));
        let fencing = Seen { fences: vec!["d".into()], ..seen(MemberStatus::Serving, 1, true) };
        all.insert(b.clone(), Seen { live: false, ..fencing.clone() });
        assert_eq!(fencer(&d, &all[&d], &all), None, "only a live member's fence counts");
        all.insert(b.clone(), fencing);
        assert_eq!(fencer(&d, &all[&d], &all), Some((&b, None)));
        assert_eq!(fencer(&b, &all[&b], &all), None);

        let mut fenced = BTreeMap::new();
        let live_d = view(&all[&d], Duration::ZERO, &fenced);
        assert!(update_fences(&a, &mut fenced, &all, &live_d, now));
        assert_eq!(fenced[&d].join, None, "adopted as b holds it");
        assert_eq!(fenced.len(), 1, "a node never fences itself");

        all.get_mut(&b).unwrap().live = false;
        let without_b = view(&all[&d], Duration::ZERO, &fenced);
        assert!(!update_fences(&a, &mut fenced, &all, &without_b, now), "the fence outlives its source");
        assert!(without_b.members[&d].fenced && !without_b.table.members().contains(&d));

        all.insert(d.clone(), seen(MemberStatus::Joining, 2, true));
        let anew = view(&all[&d], Duration::ZERO, &fenced);
        assert!(update_fences(&a, &mut fenced, &all, &anew, now), "a new join lifts the adopted fence");
        assert!(fenced.is_empty());
        assert_eq!(fencer(&d, &all[&d], &all), None, "a new join is past the fence of its old place");
    }
}
