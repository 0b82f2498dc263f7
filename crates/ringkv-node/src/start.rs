//! `Node::start`: recovery, the actors, the QUIC endpoint, membership, and
//! the subsystems' tasks. The one place that knows every subsystem.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ringkv_core::ring::NodeName;
use ringkv_core::{Clock, Epoch, Hlc, KvError, NodeTag, PartitionId, Partitioner};
use ringkv_net::tls::{Identity, Named, NodeCheck, Role, TlsPaths, TransportSettings};
use ringkv_net::wire::{MemberStatus, ReplicaRequest, Reply, Request, Response};
use ringkv_net::{Connector, Endpoint, Handler, Peer, ServeOptions, serve};
use ringkv_storage::{Disk, FsDisk, Hints, RecoveryConfig, Shard, Wal, WalConfig, recover};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::NodeError;
use crate::clock_check::{CHECK_EVERY_GOSSIP_INTERVALS, ClockCheck, TimeAsker, clock_check};
use crate::config::{NodeConfig, Persistence};
use crate::env::{Env, Network};
use crate::evictor::{Evictor, eviction_sender, evictor, leadership};
use crate::fault::{Faults, FaultyPeers, SkewedClock};
use crate::gossip::GossipKeys;
use crate::handoff::handoff;
use crate::hints::{HintsActor, HintsState};
use crate::mailbox::Mailbox;
use crate::member_file::MemberFile;
use crate::membership::{ClaimSource, Membership, MembershipConfig};
use crate::memory::{EVICTION_QUEUE, Memory};
use crate::metrics::Metrics;
use crate::node::{Inner, Node};
use crate::partition::{PartitionActor, PartitionArgs};
use crate::peers::{BatchStats, BatchingPeers, PeerTransport, QuicPeers};
use crate::progress::{Repair, Transfers};
use crate::proofs::{PROBE_TIMEOUT, Prover};
use crate::rebalance::{fence_follower, member_keeper, mover};
use crate::repair::repair_task;
use crate::snapshotter::snapshotter;
use crate::supervisor::Supervisor;
use crate::sweeper::{Sweeper, sweeper};
use crate::topology::{self, Gossiped, Topology};

/// Leaves per partition in the repair digest.
pub(crate) const DIGEST_LEAVES: usize = 1024;

/// A peer transport for a node that has no endpoint: it has no peers.
struct NoPeers;

impl PeerTransport for NoPeers {
    fn call(&self, addr: SocketAddr, _request: ReplicaRequest, _timeout: Duration) -> crate::peers::PeerFuture<'_> {
        Box::pin(async move { Err(KvError::Unavailable(format!("this node has no network endpoint to reach {addr}"))) })
    }
}

struct Recovered {
    shards: Vec<Shard>,
    hints: Hints,
    epoch: Epoch,
    wal: Option<Wal>,
    disk: Option<Arc<dyn Disk>>,
}

/// The data directory's disk: the environment's, or the configured
/// directory; none when nothing persists.
fn open_disk(config: &NodeConfig, env_disk: Option<Arc<dyn Disk>>) -> Result<Option<Arc<dyn Disk>>, NodeError> {
    if config.persistence == Persistence::None {
        return Ok(None);
    }
    match env_disk {
        Some(disk) => Ok(Some(disk)),
        None => match FsDisk::open(&config.data_dir) {
            Ok(disk) => Ok(Some(Arc::new(disk))),
            Err(e) => Err(NodeError::Config(format!("cannot open data directory {}: {e}", config.data_dir.display()))),
        },
    }
}

fn recover_state(
    config: &NodeConfig,
    disk: Option<Arc<dyn Disk>>,
    hlc: &Hlc,
    now_ms: u64,
) -> Result<Recovered, NodeError> {
    let Some(disk) = disk else {
        let shards = (0..config.partitions).map(|_| Shard::new(DIGEST_LEAVES)).collect();
        return Ok(Recovered { shards, hints: Hints::new(), epoch: Epoch::NONE, wal: None, disk: None });
    };
    let recovery =
        RecoveryConfig { node_id: config.node_id.clone(), partitions: config.partitions, digest_leaves: DIGEST_LEAVES };
    let started = tokio::time::Instant::now();
    let recovered = recover(&*disk, &recovery, now_ms)?;
    let entries: usize = recovered.shards.iter().map(|s| s.stats().entries).sum();
    tracing::info!(
        entries,
        hints = recovered.hints.values().map(|h| h.len()).sum::<usize>(),
        snapshot = ?recovered.stats.snapshot,
        segments = recovered.stats.segments,
        records = recovered.stats.records,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    // Never stamp a version older than one already acknowledged.
    let _ = hlc.observe(recovered.max_timestamp, u64::MAX);
    let wal_config =
        WalConfig { fsync: config.fsync, segment_bytes: config.wal_segment_bytes, queue_bytes: config.wal_queue_bytes };
    let wal = Wal::start(disk.clone(), recovered.next_segment, wal_config)?;
    Ok(Recovered {
        shards: recovered.shards,
        hints: recovered.hints,
        epoch: recovered.epoch,
        wal: Some(wal),
        disk: Some(disk),
    })
}

/// A standalone node's view: itself, always serving, N clamped to 1.
fn standalone_topology(config: &NodeConfig, addr: SocketAddr) -> Topology {
    let name = NodeName::from(config.node_id.as_str());
    let mut me = BTreeMap::new();
    me.insert(name.clone(), Gossiped::serving(addr));
    topology::build(
        &name,
        &config.cluster_id,
        me,
        config.partitions,
        config.replication,
        config.vnodes,
        config.dead_node_grace,
    )
}

impl Node {
    /// Starts a node with the system clock and the configured data
    /// directory. It serves the network if `config.tls` names certificates;
    /// otherwise it is embedded only. With `config.gossip` set it joins the
    /// cluster through `config.seeds`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Node::start_with(config, Env::default()).await
    }

    pub async fn start_with(config: NodeConfig, env: Env) -> Result<Node, NodeError> {
        config.validate()?;
        // Before anything else, so that a clustered node without a gossip
        // key stops at once and says how to make one.
        let gossip_keys = match (&config.gossip, config.tls.gossip_key_path()) {
            (Some(_), Some(path)) => Some(Arc::new(GossipKeys::load(&path)?)),
            _ => None,
        };
        // Also before touching the data directory: a node must serve under
        // the node id its certificate names.
        // Loaded once: the QUIC endpoint and the RESP port's TLS use it too.
        let identity = match tls_paths(&config) {
            Some(paths) => {
                let identity = Identity::load(&paths)?;
                check_identity(identity.named(&paths)?, &config.node_id, config.gossip.is_some(), &paths)?;
                Some(identity)
            }
            None => None,
        };
        let faults = Arc::new(Faults::default());
        let clock: Arc<dyn Clock> = match config.fault_injection {
            true => Arc::new(SkewedClock { inner: env.clock, faults: faults.clone() }),
            false => env.clock,
        };
        let hlc = Arc::new(Hlc::new(config.max_clock_drift.as_millis() as u64));
        let disk = open_disk(&config, env.disk)?;
        let member_file = match (&config.gossip, &disk) {
            (Some(_), Some(disk)) => Some(MemberFile::new(disk.clone())),
            _ => None,
        };
        let state = recover_state(&config, disk, &hlc, clock.now_ms())?;
        let membered = member_file.as_ref().and_then(MemberFile::read);
        let last_alive = membered.as_ref().map(|m| m.last_alive_ms);

        let supervisor = Supervisor::start().await?;
        let (evicted_tx, evicted_rx) = match config.gossip {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::channel(EVICTION_QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let memory = Arc::new(Memory::new(
            config.maxmemory as usize,
            config.maxmemory_policy,
            state.shards.len(),
            hlc.clone(),
            NodeTag::from_name(&config.node_id),
            evicted_tx,
        ));
        let mut partitions = Vec::with_capacity(state.shards.len());
        for (i, shard) in state.shards.into_iter().enumerate() {
            let args = PartitionArgs {
                id: PartitionId(i as u16),
                shard,
                wal: state.wal.clone(),
                clock: clock.clone(),
                memory: memory.clone(),
            };
            let name = format!("partition {i}");
            partitions.push(Mailbox::spawn(name, PartitionActor, args, config.mailbox_capacity, &supervisor).await?);
        }
        let hints_state = HintsState::new(state.hints, config.max_hint_bytes, state.wal.clone());
        let hints =
            Mailbox::spawn("the hint store".into(), HintsActor, hints_state, config.mailbox_capacity, &supervisor)
                .await?;

        let endpoint = bind_endpoint(&config, identity.as_ref(), &*env.network).await?;
        let local_addr = endpoint
            .as_ref()
            .map(|(e, _)| e.local_addr())
            .transpose()
            .map_err(|e| NodeError::Config(format!("cannot read the bound address: {e}")))?;
        let metrics = config.metrics_listen.is_some().then(Metrics::new);
        if let (Some(metrics), Some(wal)) = (&metrics, &state.wal) {
            wal.observe_fsync(metrics.fsync());
        }
        let batch_stats = Arc::new(BatchStats::new(metrics.clone()));
        // Peers answer with whatever they hold, however this node's own
        // limits were set.
        let connector = endpoint.as_ref().map(|(endpoint, check)| {
            let connector = Connector::new(endpoint.clone(), ringkv_net::wire::MAX_PEER_FRAME_BYTES);
            Arc::new(connector.with_node_check(check.clone()))
        });
        let mut quic_peers = None;
        let peers: Arc<dyn PeerTransport> = match (env.peers, &connector) {
            (Some(peers), _) => peers,
            (None, Some(connector)) => {
                let quic = Arc::new(QuicPeers::new(connector.clone()));
                quic_peers = Some(quic.clone());
                // A batch is one frame; keep its keys and values well inside.
                let batch_bytes = config.max_frame_bytes() / 2;
                Arc::new(BatchingPeers::new(quic, config.replica_batch_max, batch_bytes, batch_stats.clone()))
            }
            (None, None) => Arc::new(NoPeers),
        };
        let peers: Arc<dyn PeerTransport> = if config.fault_injection {
            tracing::warn!("fault injection is enabled: this node obeys requests to cut its links");
            Arc::new(FaultyPeers { inner: peers, faults: faults.clone() })
        } else {
            peers
        };

        let addr = local_addr.unwrap_or(config.listen);
        let claims = config.gossip.is_some().then(|| Arc::new(ClaimSource::default()));
        // A clustered node serves from before it joins, so that members
        // starting together can prove each other (`Request::Claim`); every
        // other request is refused as "starting" until the node is ready.
        let gate = Arc::new(Gate { node: OnceLock::new(), claims: claims.clone() });
        let (serve_stop, serve_stopped) = watch::channel(false);
        let mut serve_stop = EarlyStop(Some(serve_stop));
        let mut server_task = None;
        let mut node_check = None;
        if let Some((endpoint, check)) = endpoint {
            let options = ServeOptions {
                max_frame_bytes: config.max_frame_bytes(),
                max_connections: config.max_connections,
                read_timeout: config.request_read_timeout,
                node_check: check.clone(),
            };
            server_task = Some(tokio::spawn(serve(endpoint, gate.clone(), options, serve_stopped)));
            node_check = Some(check);
        }
        let (membership, topology) = match config.gossip {
            None => (None, watch::channel(Arc::new(standalone_topology(&config, addr))).1),
            Some(gossip) => {
                let (Some(connector), Some(check), Some(keys), Some(claims)) =
                    (&connector, &node_check, &gossip_keys, &claims)
                else {
                    return Err(NodeError::Config("a clustered node needs certificates to talk to its peers".into()));
                };
                let membership = Membership::start(MembershipConfig {
                    node_id: config.node_id.clone(),
                    cluster_id: config.cluster_id.clone(),
                    generation: clock.now_ms(),
                    gossip,
                    seeds: config.seeds.clone(),
                    addr,
                    partitions: config.partitions,
                    replication: config.replication,
                    vnodes: config.vnodes,
                    gossip_interval: config.gossip_interval,
                    phi_threshold: config.phi_threshold,
                    dead_node_grace: config.dead_node_grace,
                    join_timeout: config.join_timeout,
                    epoch: state.epoch,
                    status: if last_alive.is_some() { MemberStatus::Recovering } else { MemberStatus::Joining },
                    alive_before: last_alive,
                    last_fences: membered.as_ref().map(|m| m.fences.clone()).unwrap_or_default(),
                    last_peers: membered.and_then(|m| m.peers),
                    faults: faults.clone(),
                    network: env.network.clone(),
                    keys: keys.clone(),
                    prover: quic_prover(connector.clone(), check.clone(), faults.clone()),
                    claims: claims.clone(),
                })
                .await?;
                let topology = membership.topology();
                if let Some(quic) = &quic_peers {
                    quic.set_topology(topology.clone());
                }
                (Some(membership), topology)
            }
        };

        let gossip_addr = membership.as_ref().map(Membership::gossip_addr);
        let resp = match config.resp_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| NodeError::Resp { addr, source })?),
            None => None,
        };
        let resp_addr = resp.as_ref().and_then(|listener| listener.local_addr().ok());
        let resp_tls = match (config.resp_tls, &identity) {
            (false, _) => None,
            (true, Some(identity)) => {
                Some(tokio_rustls::TlsAcceptor::from(ringkv_net::tls::resp_server_config(identity)?))
            }
            (true, None) => {
                return Err(NodeError::Config(
                    "resp_tls needs the node's certificate: set certs_dir, or tls ca, cert and key".into(),
                ));
            }
        };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| NodeError::Metrics { addr, source })?),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok());
        let standing = membership.as_ref().map(Membership::standing);
        let (shutdown, _) = watch::channel(false);
        let node = Node {
            inner: Arc::new(Inner {
                tag: NodeTag::from_name(&config.node_id),
                limits: config.limits(),
                partitioner: Partitioner::new(config.partitions),
                clock,
                hlc,
                partitions,
                memory,
                hints,
                supervisor,
                peers,
                batch_stats,
                metrics,
                membership: tokio::sync::Mutex::new(None),
                gossip_keys,
                standing,
                claims,
                repair: Arc::new(Repair::new(config.repair_bytes_per_sec)),
                transfers: Transfers::new(config.transfer_bytes_per_sec),
                faults,
                member_file,
                left: watch::channel(false).0,
                topology,
                wal: state.wal,
                epoch: Arc::new(Mutex::new(state.epoch)),
                disk: state.disk,
                shutdown,
                stopped: tokio::sync::Mutex::new(false),
                tasks: Mutex::new(Vec::new()),
                joining: Mutex::new(None),
                local_addr,
                gossip_addr,
                resp_addr,
                metrics_addr,
                config,
            }),
        };

        let epochs = membership.as_ref().map(Membership::epochs);
        *node.inner.membership.lock().await = membership;
        if let Some(mut epochs) = epochs {
            // Learn the cluster's truncate epoch before serving anything.
            let gossiped = *epochs.borrow_and_update();
            node.apply_epoch(gossiped)
                .await
                .map_err(|e| NodeError::Join(format!("cannot apply the truncate epoch: {e}")))?;
            node.spawn(epoch_follower(node.clone(), epochs));
        }
        // Detached rather than one of the node's tasks: shutdown waits for
        // those, and this one runs the shutdown.
        let (failing, mut stopping) = (node.clone(), node.inner.shutdown.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                reason = failing.failed() => {
                    tracing::error!(%reason, "stopping the node");
                    failing.shutdown().await;
                }
                _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {}
            }
        });
        if let Some(wal) = &node.inner.wal {
            node.spawn(log_watch(node.clone(), wal.failure()));
        }
        let sweep = Sweeper {
            partitions: node.inner.partitions.clone(),
            repair: node.inner.repair.clone(),
            topology: node.inner.topology_watch(),
            standing: node.inner.standing.clone(),
            clock: node.inner.clock.clone(),
            interval: node.inner.config.sweep_interval,
            tombstone_grace: node.inner.config.tombstone_grace,
            budget: node.inner.config.sweep_budget,
        };
        node.spawn(sweeper(sweep, node.inner.shutdown.subscribe()));
        node.spawn(leadership(node.inner.memory.clone(), node.inner.topology_watch(), node.inner.shutdown.subscribe()));
        let evict = Evictor {
            memory: node.inner.memory.clone(),
            partitions: node.inner.partitions.clone(),
            interval: node.inner.config.sweep_interval,
            seed: node.inner.now_ms(),
        };
        node.spawn(evictor(evict, node.inner.shutdown.subscribe()));
        if let Some(evicted) = evicted_rx {
            node.spawn(eviction_sender(node.clone(), evicted));
        }
        node.spawn(handoff(node.clone()));
        node.spawn(repair_task(node.clone()));
        if let Some(snapshots) = node.inner.snapshots() {
            node.spawn(snapshotter(snapshots, node.inner.config.snapshot_after_bytes, node.inner.shutdown.subscribe()));
        }
        if let Some(server) = server_task {
            let _ = gate.node.set(node.clone());
            node.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(server);
            let stop = serve_stop.0.take().expect("taken once");
            let mut stopping = node.inner.shutdown.subscribe();
            node.spawn(async move {
                let _ = stopping.wait_for(|stop| *stop).await;
                let _ = stop.send(true);
            });
        }
        if node.inner.membership.lock().await.is_some() {
            // A returning member keeps its data: only a fence, which the
            // fence follower acts on, says the others moved on without it.
            if last_alive.is_some() {
                node.set_status(MemberStatus::Serving).await;
            } else {
                let dropped =
                    node.join_as_new().await.map_err(|e| NodeError::Join(format!("cannot discard old data: {e}")))?;
                if dropped > 0 {
                    tracing::warn!(dropped, "discarded entries from an earlier membership");
                }
            }
            node.spawn(member_keeper(node.clone()));
            node.spawn(mover(node.clone()));
            node.spawn(fence_follower(node.clone()));
            if let (Some(connector), Some(standing)) = (&connector, &node.inner.standing) {
                let config = &node.inner.config;
                let check = ClockCheck {
                    clock: node.inner.clock.clone(),
                    topology: node.inner.topology_watch(),
                    standing: standing.clone(),
                    ask: quic_time_asker(connector.clone(), node.inner.faults.clone()),
                    period: config.gossip_interval * CHECK_EVERY_GOSSIP_INTERVALS,
                    bound: config.max_clock_drift / 2,
                    timeout: config.replica_timeout,
                };
                node.spawn(clock_check(check, node.inner.shutdown.subscribe()));
            }
        }
        if let Some(listener) = resp {
            node.spawn(crate::resp::serve(node.clone(), listener, resp_tls));
        }
        if let Some(listener) = metrics_listener {
            node.spawn(crate::metrics::serve(node.clone(), listener));
        }
        tracing::info!(node = %node.inner.config.node_id, addr = ?local_addr, "node started");
        Ok(node)
    }
}

/// Serves a node's QUIC port from before the node is ready: only
/// `Request::Claim` until then.
struct Gate {
    node: OnceLock<Node>,
    claims: Option<Arc<ClaimSource>>,
}

impl Handler for Gate {
    async fn handle(&self, request: Request, peer: Peer) -> Response {
        if let Some(node) = self.node.get() {
            return node.handle(request, peer).await;
        }
        match (&request, &self.claims) {
            (Request::Claim, Some(claims)) => claims.claims().await.map(Reply::Claim),
            _ => Err(KvError::Unavailable("this node is starting".into())),
        }
    }
}

/// Stops serving if the node fails to start.
struct EarlyStop(Option<watch::Sender<bool>>);

impl Drop for EarlyStop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(true);
        }
    }
}

/// Proves a member over the node's own QUIC endpoint: asks the address
/// for its claims and checks that the certificate that answered (verified
/// against the cluster CA in the handshake) is a node certificate naming
/// exactly that node id, and that the node claims that address.
fn quic_prover(connector: Arc<Connector>, check: NodeCheck, faults: Arc<Faults>) -> Prover {
    Arc::new(move |name, addr| {
        let (connector, check, faults) = (connector.clone(), check.clone(), faults.clone());
        Box::pin(async move {
            // A cut link cuts proofs too, as a real partition would: a node
            // must not learn across it what gossip cannot tell it.
            if faults.blocks(addr) {
                return Err(format!("link to {addr} cut by fault injection"));
            }
            let (response, identity) =
                connector.call_identified(addr, &Request::Claim, PROBE_TIMEOUT).await.map_err(|e| e.to_string())?;
            match check.role(identity) {
                Role::Node(id) if *id == *name => {}
                role => return Err(format!("{addr} answered with {}, not that of {name}", role.describe())),
            }
            let claims = match response {
                Ok(Reply::Claim(claims)) => claims,
                Ok(_) => return Err(format!("{addr} answered a claim request with something else")),
                Err(e) => return Err(e.to_string()),
            };
            match claims.first() {
                Some(own) if *own.node_id == *name && own.addr == addr => Ok(claims),
                _ => Err(format!("{addr} claims another node id or address than {name} at {addr}")),
            }
        })
    })
}

/// Reads a member's wall clock over the node's own QUIC endpoint (not
/// across a link that fault injection cut, as replica calls are not).
fn quic_time_asker(connector: Arc<Connector>, faults: Arc<Faults>) -> TimeAsker {
    Arc::new(move |addr| {
        let (connector, faults) = (connector.clone(), faults.clone());
        Box::pin(async move {
            if faults.blocks(addr) {
                return Err(format!("link to {addr} cut by fault injection"));
            }
            match connector.call(addr, &Request::Time, PROBE_TIMEOUT).await.map_err(|e| e.to_string())? {
                Ok(Reply::Time { wall_ms }) => Ok(wall_ms),
                Ok(_) => Err(format!("{addr} answered a time request with something else")),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

async fn bind_endpoint(
    config: &NodeConfig,
    identity: Option<&Identity>,
    network: &dyn Network,
) -> Result<Option<(Endpoint, NodeCheck)>, NodeError> {
    let Some(identity) = identity else { return Ok(None) };
    let settings = TransportSettings { max_streams: config.max_streams_per_connection, ..TransportSettings::default() };
    let server = ringkv_net::tls::listener(identity, &settings)?;
    let client = ringkv_net::tls::client_config(identity, &settings)?;
    let seed = (config.seed != 0).then(|| {
        let mut bytes = [0u8; 32];
        let mut rng = ringkv_core::SplitMix64::new(config.seed);
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        bytes
    });
    let addr = config.listen;
    let bind_error = |e: std::io::Error| ringkv_net::NetError::Bind { addr, reason: e.to_string() };
    let (socket, runtime) = network.quic_socket(addr).await.map_err(bind_error)?;
    let endpoint = ringkv_net::from_socket(socket, runtime, Some(server), client, seed).map_err(bind_error)?;
    Ok(Some((endpoint, NodeCheck::new(identity)?)))
}

/// A node's identity is the node id its certificate names
/// (`ringkv://node/<id>`): it must be the configured one. A certificate
/// naming none (the shared `node.crt`) serves a standalone node only.
fn check_identity(named: Option<Named>, node_id: &str, clustered: bool, paths: &TlsPaths) -> Result<(), NodeError> {
    let dir = paths.cert.parent().map_or_else(|| "DIR".into(), |d| d.display().to_string());
    let issue = format!("make its own with `ringkv certs issue --name {node_id} --dir {dir}`");
    let reason = match named {
        Some(Named::Node(id)) if id == node_id => return Ok(()),
        None if !clustered => return Ok(()),
        Some(Named::Node(id)) => format!("it names node {id}; run that node as {id}, or {issue}"),
        Some(Named::Operator(name)) => format!("it is the operator certificate of {name}; {issue}"),
        None => format!("it names no node id, and a clustered node needs a certificate of its own; {issue}"),
    };
    Err(NodeError::Identity { path: paths.cert.clone(), node_id: node_id.into(), reason })
}

fn tls_paths(config: &NodeConfig) -> Option<TlsPaths> {
    let from_dir = config.tls.certs_dir.as_ref().map(|dir| TlsPaths::node_in(dir, &config.node_id));
    match (&config.tls.ca, &config.tls.cert, &config.tls.key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsPaths { ca: ca.clone(), cert: cert.clone(), key: key.clone() }),
        _ => from_dir,
    }
}

/// Applies truncate epochs that other nodes gossip.
async fn epoch_follower(node: Node, mut epochs: watch::Receiver<Epoch>) {
    let mut shutdown = node.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            changed = epochs.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let epoch = *epochs.borrow_and_update();
        if let Err(e) = node.apply_epoch(epoch).await {
            tracing::error!(error = %e, "cannot apply a gossiped truncate epoch");
        }
    }
}

/// Stops the node once its log fails: every write since is in memory only,
/// so serving on (answering reads, and repair, with state a restart would
/// not have) could bring back what those writes overwrote or deleted once
/// the others purge their tombstones. A restart recovers what is durable,
/// and hints and repair bring the rest.
async fn log_watch(node: Node, mut failure: tokio::sync::watch::Receiver<Option<String>>) {
    let mut stopping = node.inner.shutdown.subscribe();
    tokio::select! {
        Ok(reason) = failure.wait_for(Option::is_some) => {
            let reason = format!("the write-ahead log failed: {}", reason.as_deref().unwrap_or_default());
            node.inner.supervisor.fail(reason);
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_serves_only_under_the_id_its_certificate_names() {
        let paths = TlsPaths::node_in(std::path::Path::new("/certs"), "n3");
        let check = |named, clustered| check_identity(named, "n3", clustered, &paths).map_err(|e| e.to_string());
        assert!(check(Some(Named::Node("n3".into())), true).is_ok());
        assert!(check(Some(Named::Node("n3".into())), false).is_ok());
        assert!(check(None, false).is_ok(), "the shared node.crt serves a standalone node");
        let err = check(Some(Named::Node("n2".into())), true).unwrap_err();
        assert!(err.contains("cannot serve as node n3: it names node n2"), "{err}");
        assert!(err.contains("ringkv certs issue --name n3 --dir /certs"), "{err}");
        assert!(check(Some(Named::Node("n2".into())), false).is_err(), "standalone too");
        let err = check(None, true).unwrap_err();
        assert!(err.contains("names no node id"), "{err}");
        assert!(check(Some(Named::Operator("ops".into())), false).unwrap_err().contains("operator certificate"));
    }

    /// Answers `Request::Claim` with a claim for `claims_as` at its own
    /// address, whatever its certificate names.
    struct Claims {
        claims_as: &'static str,
        addr: SocketAddr,
    }

    impl Handler for Claims {
        async fn handle(&self, _request: Request, _peer: Peer) -> Response {
            Ok(Reply::Claim(vec![ringkv_net::wire::MemberClaim {
                node_id: self.claims_as.into(),
                generation: 1,
                addr: self.addr,
                partitions: 64,
                status: MemberStatus::Serving,
                epoch: Epoch::NONE,
                fences: Vec::new(),
                alive_before: 0,
                join: 0,
            }]))
        }
    }

    /// A server whose certificate (of the cluster CA) names `cert_of`.
    async fn server(
        dir: &std::path::Path,
        cert_of: &str,
        claims_as: &'static str,
    ) -> (SocketAddr, watch::Sender<bool>) {
        let identity = Identity::load(&TlsPaths::node_in(dir, cert_of)).unwrap();
        let settings = TransportSettings::default();
        let server = ringkv_net::tls::listener(&identity, &settings).unwrap();
        let client = ringkv_net::tls::client_config(&identity, &settings).unwrap();
        let endpoint = ringkv_net::bind("127.0.0.1:0".parse().unwrap(), Some(server), client, None).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let options = ServeOptions {
            max_frame_bytes: 1 << 20,
            max_connections: 16,
            read_timeout: Duration::from_secs(5),
            node_check: NodeCheck::new(&identity).unwrap(),
        };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(endpoint, Arc::new(Claims { claims_as, addr }), options, stopped));
        (addr, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_is_proven_only_by_a_node_certificate_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        ringkv_net::certs::init(dir.path(), &["n1".into(), "n2".into(), "n9".into()], &[]).unwrap();
        let identity = Identity::load(&TlsPaths::node_in(dir.path(), "n1")).unwrap();
        let settings = TransportSettings::default();
        let client = ringkv_net::tls::client_config(&identity, &settings).unwrap();
        let endpoint = ringkv_net::bind("127.0.0.1:0".parse().unwrap(), None, client, None).unwrap();
        let connector = Arc::new(Connector::new(endpoint, 1 << 20));
        let faults = Arc::new(Faults::default());
        let prover = quic_prover(connector, NodeCheck::new(&identity).unwrap(), faults.clone());

        // A valid certificate of the CA naming n9, claiming to be n2.
        let (addr, _stop) = server(dir.path(), "n9", "n2").await;
        let err = prover(NodeName::from("n2"), addr).await.unwrap_err();
        assert!(err.contains("the node certificate of n9"), "{err}");
        // Its certificate names n9, but it claims another id.
        let err = prover(NodeName::from("n9"), addr).await.unwrap_err();
        assert!(err.contains("claims another node id"), "{err}");

        // The real n2.
        let (addr, _stop) = server(dir.path(), "n2", "n2").await;
        let claims = prover(NodeName::from("n2"), addr).await.unwrap();
        assert_eq!((claims[0].node_id.as_str(), claims[0].addr), ("n2", addr));
        // Not across a link that fault injection cut.
        faults.set(vec![addr]);
        let err = prover(NodeName::from("n2"), addr).await.unwrap_err();
        assert!(err.contains("cut by fault injection"), "{err}");
    }
}
