//! Membership: chitchat gossip in, [`Topology`] out.
//!
//! Each node gossips four small keys: its QUIC address, its partition count,
//! its status (joining, serving, leaving) and its truncate epoch. A task
//! turns chitchat's view into a `Topology` on every change (and on a tick,
//! because the dead-node grace period expires without any gossip event) and
//! publishes it through a watch channel when it differs from the last one.
//!
//! chitchat leaves two things to us. A peer of another cluster is rejected
//! with a `BadCluster` reply that chitchat only logs; our transport wrapper
//! watches for it so that a node started with the wrong cluster id fails
//! with a clear error. And a restarted node appears under a new generation
//! while its old one may still look live for a few seconds; members are
//! deduplicated by node id, newest generation first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::{
    ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, ChitchatMessage, FailureDetectorConfig,
    ProtocolVersion, spawn_chitchat,
};
use ringkv_core::ring::NodeName;
use ringkv_core::{Epoch, Timestamp};
use ringkv_net::wire::MemberStatus;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::NodeError;
use crate::fault::Faults;
use crate::topology::{self, Gossiped, Topology};

const KEY_ADDR: &str = "addr";
const KEY_PARTITIONS: &str = "partitions";
const KEY_STATUS: &str = "status";
const KEY_EPOCH: &str = "epoch";

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
    pub faults: Arc<Faults>,
}

pub(crate) struct Membership {
    handle: ChitchatHandle,
    gossip_addr: SocketAddr,
    topology: watch::Receiver<Arc<Topology>>,
    epochs: watch::Receiver<Epoch>,
    task: JoinHandle<()>,
}

/// Wraps chitchat's UDP socket to notice `BadCluster` rejections, and to
/// drop the datagrams fault injection says to.
struct GuardedTransport {
    socket: Mutex<Option<UdpSocket>>,
    rejected_by: Arc<Mutex<Option<SocketAddr>>>,
    faults: Arc<Faults>,
}

struct GuardedSocket {
    inner: UdpSocket,
    rejected_by: Arc<Mutex<Option<SocketAddr>>>,
    faults: Arc<Faults>,
}

#[async_trait]
impl Transport for GuardedTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        // The socket was bound before chitchat started, so that a port of 0
        // could be resolved into the address we advertise.
        let inner = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        let inner = inner.ok_or_else(|| anyhow::anyhow!("the gossip socket was already opened"))?;
        Ok(Box::new(GuardedSocket { inner, rejected_by: self.rejected_by.clone(), faults: self.faults.clone() }))
    }
}

#[async_trait]
impl Socket for GuardedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        if self.faults.blocks(to) {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let outcome = self.inner.recv().await?;
            if self.faults.blocks(outcome.from_addr) {
                continue;
            }
            if matches!(outcome.envelope.message, ChitchatMessage::BadCluster) {
                *self.rejected_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome.from_addr);
            }
            return Ok(outcome);
        }
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
        let socket = UdpSocket::open(config.gossip)
            .await
            .map_err(|e| NodeError::Config(format!("cannot bind gossip address {}: {e:#}", config.gossip)))?;
        let gossip_addr = socket.local_addr().map_err(|e| NodeError::Config(e.to_string()))?;
        let rejected_by = Arc::new(Mutex::new(None));
        let transport = GuardedTransport {
            socket: Mutex::new(Some(socket)),
            rejected_by: rejected_by.clone(),
            faults: config.faults.clone(),
        };
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
        ];
        let handle = spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .map_err(|e| NodeError::Config(format!("cannot start gossip: {e:#}")))?;

        let own_seed = |s: &String| s.parse::<SocketAddr>().is_ok_and(|a| a == gossip_addr);
        let has_seeds = config.seeds.iter().any(|s| !own_seed(s));
        let deadline = Instant::now() + config.join_timeout;
        loop {
            if let Some(peer) = *rejected_by.lock().unwrap_or_else(|e| e.into_inner()) {
                let _ = handle.initiate_shutdown();
                return Err(NodeError::Join(format!(
                    "{peer} rejected this node's gossip because it belongs to another cluster; this node's \
                     cluster_id is '{}'",
                    config.cluster_id
                )));
            }
            let seen = read_gossip(&handle.chitchat()).await;
            if let Some((name, theirs)) = seen
                .iter()
                .filter(|(n, _)| ***n != *config.node_id)
                .find_map(|(n, s)| s.partitions.filter(|p| *p != config.partitions).map(|p| (n, p)))
            {
                let _ = handle.initiate_shutdown();
                return Err(NodeError::Join(format!(
                    "node {name} has {theirs} partitions and this node {}: a cluster's partition count is fixed \
                     when it is created",
                    config.partitions
                )));
            }
            let others = seen.iter().filter(|(n, s)| ***n != *config.node_id && s.live).count();
            if !has_seeds || others > 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(seeds = ?config.seeds, "no seed answered within the join timeout; starting alone");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if has_seeds {
            // One more round so that the deltas of every member have arrived.
            tokio::time::sleep(config.gossip_interval * 2).await;
        }

        let first = Arc::new(compute(&config, &read_gossip(&handle.chitchat()).await, &mut HashMap::new()));
        let (topology_tx, topology) = watch::channel(first);
        let (epoch_tx, epochs) = watch::channel(Epoch::NONE);
        let task = tokio::spawn(maintain(handle.chitchat(), config, topology_tx, epoch_tx));
        Ok(Membership { handle, gossip_addr, topology, epochs, task })
    }

    pub(crate) fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    pub(crate) fn topology(&self) -> watch::Receiver<Arc<Topology>> {
        self.topology.clone()
    }

    /// The largest truncate epoch any member gossips.
    pub(crate) fn epochs(&self) -> watch::Receiver<Epoch> {
        self.epochs.clone()
    }

    /// Start times (generations, wall-clock ms) of the other live members
    /// that serve.
    pub(crate) async fn serving_since(&self) -> Vec<u64> {
        let chitchat = self.handle.chitchat();
        let seen = read_gossip(&chitchat).await;
        let me = chitchat.lock().await.self_chitchat_id().node_id.clone();
        seen.iter().filter(|(n, s)| ***n != *me && s.live && s.status.serves()).map(|(_, s)| s.generation).collect()
    }

    pub(crate) async fn set_status(&self, status: MemberStatus) {
        self.handle.chitchat().lock().await.self_node_state().set(KEY_STATUS, status.as_str());
    }

    pub(crate) async fn set_epoch(&self, epoch: Epoch) {
        self.handle.chitchat().lock().await.self_node_state().set(KEY_EPOCH, epoch.0.0);
    }

    pub(crate) async fn shutdown(self) {
        self.task.abort();
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "gossip did not stop cleanly");
        }
    }
}

fn compute(
    config: &MembershipConfig,
    seen: &BTreeMap<NodeName, Seen>,
    dead_since: &mut HashMap<NodeName, Instant>,
) -> Topology {
    let now = Instant::now();
    let mut gossiped = BTreeMap::new();
    for (name, s) in seen {
        let is_self = **name == *config.node_id;
        if !is_self && s.partitions != Some(config.partitions) {
            // Logged by the maintenance loop; such a node never joins our ring.
            continue;
        }
        let Some(addr) = s.addr else { continue };
        let live = is_self || s.live;
        let dead_for = if live {
            dead_since.remove(name);
            None
        } else {
            Some(now - *dead_since.entry(name.clone()).or_insert(now))
        };
        gossiped.insert(name.clone(), Gossiped { addr, status: s.status, live, dead_for, epoch: s.epoch });
    }
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
) {
    let mut changes = chitchat.lock().await.live_nodes_watcher();
    let mut tick = tokio::time::interval(config.gossip_interval);
    let mut dead_since = HashMap::new();
    let mut warned: HashSet<NodeName> = HashSet::new();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let seen = read_gossip(&chitchat).await;
        for (name, s) in &seen {
            if let Some(p) = s.partitions.filter(|p| *p != config.partitions)
                && warned.insert(name.clone())
            {
                tracing::error!(node = %name, partitions = p, ours = config.partitions, "ignoring a node with another partition count");
            }
        }
        let max_epoch = seen.values().map(|s| s.epoch).max().unwrap_or(Epoch::NONE);
        epoch_tx.send_if_modified(|current| {
            let raised = max_epoch > *current;
            *current = current.merge(max_epoch);
            raised
        });
        let next = compute(&config, &seen, &mut dead_since);
        if !topology_tx.borrow().same_as(&next) {
            let members: Vec<String> = next
                .members
                .iter()
                .map(|(n, m)| format!("{n}:{}{}", m.status.as_str(), if m.live { "" } else { ":down" }))
                .collect();
            tracing::info!(?members, ring = next.table.members().len(), "membership changed");
            topology_tx.send_replace(Arc::new(next));
        }
    }
}

async fn read_gossip(chitchat: &Arc<tokio::sync::Mutex<chitchat::Chitchat>>) -> BTreeMap<NodeName, Seen> {
    let guard = chitchat.lock().await;
    let live: HashSet<&ChitchatId> = guard.live_nodes().collect();
    let mut seen: BTreeMap<NodeName, Seen> = BTreeMap::new();
    for (id, state) in guard.node_states() {
        let entry = Seen {
            generation: id.generation_id,
            addr: state.get(KEY_ADDR).and_then(|a| a.parse().ok()),
            partitions: state.get(KEY_PARTITIONS).and_then(|p| p.parse().ok()),
            status: state.get(KEY_STATUS).and_then(MemberStatus::parse).unwrap_or(MemberStatus::Joining),
            epoch: Epoch(Timestamp(state.get(KEY_EPOCH).and_then(|e| e.parse().ok()).unwrap_or(0))),
            live: live.contains(id),
        };
        let name = NodeName::from(&*id.node_id);
        match seen.get(&name) {
            Some(existing) if existing.generation >= entry.generation => {}
            _ => {
                seen.insert(name, entry);
            }
        }
    }
    seen
}
