//! `Node::start`: recovery, the partition actors, background work, and the
//! QUIC server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::{Clock, Epoch, Hlc, KvError, Limits, NodeTag, PartitionId, Partitioner, Version};
use ringkv_net::tls::{Identity, TlsPaths, TransportSettings};
use ringkv_net::{ServeOptions, bind, serve};
use ringkv_storage::{
    Disk, FsDisk, RecoveryConfig, Shard, ShardStats, SnapshotWriter, Wal, WalConfig, compact, recover,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{NodeConfig, Persistence};
use crate::partition::{Mailbox, PartitionArgs, PartitionMsg};
use crate::{NodeError, SystemClock};

/// Leaves per partition in the repair digest.
pub(crate) const DIGEST_LEAVES: usize = 1024;
const SNAPSHOT_CHUNK: usize = 1024;

/// What a node takes from its environment instead of reaching for globals,
/// so that tests and a simulator can substitute each part.
pub struct Env {
    pub clock: Arc<dyn Clock>,
    /// The data directory's disk; `None` opens `config.data_dir`.
    pub disk: Option<Arc<dyn Disk>>,
}

impl Default for Env {
    fn default() -> Env {
        Env { clock: Arc::new(SystemClock), disk: None }
    }
}

/// A running node. Cheap to clone; all clones are the same node. It
/// implements [`ringkv_core::KvStore`], so it can be used embedded in a
/// process exactly like the remote client.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: NodeConfig,
    pub(crate) tag: NodeTag,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hlc: Hlc,
    pub(crate) partitioner: Partitioner,
    pub(crate) limits: Limits,
    pub(crate) partitions: Vec<Mailbox>,
    pub(crate) wal: Option<Wal>,
    pub(crate) epoch: Mutex<Epoch>,
    disk: Option<Arc<dyn Disk>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    local_addr: Option<SocketAddr>,
}

impl Node {
    /// Starts a node with the system clock and the configured data
    /// directory. It serves the network if `config.tls` names certificates;
    /// otherwise it is embedded only.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Node::start_with(config, Env::default()).await
    }

    pub async fn start_with(config: NodeConfig, env: Env) -> Result<Node, NodeError> {
        config.validate()?;
        let clock = env.clock;
        let partitioner = Partitioner::new(config.partitions);
        let hlc = Hlc::new(config.max_clock_drift.as_millis() as u64);

        let (shards, epoch, wal, disk) = match config.persistence {
            Persistence::None => {
                let shards = (0..config.partitions).map(|_| Shard::new(DIGEST_LEAVES)).collect();
                (shards, Epoch::NONE, None, None)
            }
            Persistence::Wal => {
                let disk: Arc<dyn Disk> = match env.disk {
                    Some(disk) => disk,
                    None => Arc::new(FsDisk::open(&config.data_dir).map_err(|e| {
                        NodeError::Config(format!("cannot open data directory {}: {e}", config.data_dir.display()))
                    })?),
                };
                let recovery = RecoveryConfig {
                    node_id: config.node_id.clone(),
                    partitions: config.partitions,
                    digest_leaves: DIGEST_LEAVES,
                    max_record_bytes: config.max_frame_bytes(),
                };
                let started = std::time::Instant::now();
                let recovered = recover(&*disk, &recovery, clock.now_ms())?;
                let entries: usize = recovered.shards.iter().map(|s| s.stats().entries).sum();
                tracing::info!(
                    entries,
                    snapshot = ?recovered.stats.snapshot,
                    segments = recovered.stats.segments,
                    records = recovered.stats.records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "recovered"
                );
                // Never stamp a version older than one already acknowledged.
                let _ = hlc.observe(recovered.max_timestamp, u64::MAX);
                let wal_config = WalConfig {
                    fsync: config.fsync,
                    segment_bytes: config.wal_segment_bytes,
                    queue_bytes: config.wal_queue_bytes,
                };
                let wal = Wal::start(disk.clone(), recovered.next_segment, wal_config)?;
                (recovered.shards, recovered.epoch, Some(wal), Some(disk))
            }
        };

        let mut partitions = Vec::with_capacity(shards.len());
        for (i, shard) in shards.into_iter().enumerate() {
            let args = PartitionArgs { id: PartitionId(i as u16), shard, wal: wal.clone(), clock: clock.clone() };
            partitions.push(Mailbox::spawn(args, config.mailbox_capacity).await?);
        }

        let (shutdown, _) = watch::channel(false);
        let endpoint = match tls_paths(&config) {
            Some(paths) => {
                let identity = Identity::load(&paths)?;
                let settings = TransportSettings {
                    max_streams: config.max_streams_per_connection,
                    ..TransportSettings::default()
                };
                let server = ringkv_net::tls::server_config(&identity, &settings)?;
                let client = ringkv_net::tls::client_config(&identity, &settings)?;
                Some(bind(config.listen, Some(server), client, None)?)
            }
            None => None,
        };
        let local_addr = endpoint.as_ref().and_then(|e| e.local_addr().ok());

        let node = Node {
            inner: Arc::new(Inner {
                tag: NodeTag::from_name(&config.node_id),
                limits: config.limits(),
                clock,
                hlc,
                partitioner,
                partitions,
                wal,
                epoch: Mutex::new(epoch),
                disk,
                shutdown,
                tasks: Mutex::new(Vec::new()),
                local_addr,
                config,
            }),
        };
        node.spawn(sweeper(node.clone()));
        if node.inner.wal.is_some() {
            node.spawn(snapshotter(node.clone()));
        }
        if let Some(endpoint) = endpoint {
            let options = ServeOptions {
                max_frame_bytes: node.inner.config.max_frame_bytes(),
                max_connections: node.inner.config.max_connections,
                read_timeout: node.inner.config.request_read_timeout,
            };
            let server = serve(endpoint, Arc::new(node.clone()), options, node.inner.shutdown.subscribe());
            node.spawn(server);
        }
        tracing::info!(node = %node.inner.config.node_id, addr = ?local_addr, "node started");
        Ok(node)
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
    }

    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// The QUIC address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Takes a snapshot now and drops the log segments it covers.
    pub async fn snapshot(&self) -> Result<(), KvError> {
        let (Some(wal), Some(disk)) = (&self.inner.wal, &self.inner.disk) else {
            return Err(KvError::Storage("persistence is off; there is nothing to snapshot".into()));
        };
        let storage = |e: ringkv_storage::StorageError| KvError::Storage(e.to_string());
        let covers = wal.rotate().await.map_err(storage)?;
        let writer = SnapshotWriter::start(disk.clone(), covers).map_err(storage)?;
        for (i, partition) in self.inner.partitions.iter().enumerate() {
            let mut after: Option<Bytes> = None;
            loop {
                let cursor = after.clone();
                let chunk =
                    partition.call(|reply| PartitionMsg::Chunk { after: cursor, limit: SNAPSHOT_CHUNK, reply }).await?;
                let Some((last, _)) = chunk.last() else { break };
                after = Some(last.clone());
                writer.add(i as u16, chunk).await.map_err(storage)?;
            }
        }
        let epoch = *self.inner.epoch.lock().unwrap_or_else(|e| e.into_inner());
        let info = writer.finish(epoch).await.map_err(storage)?;
        let removed = compact(&**disk, covers).map_err(storage)?;
        tracing::info!(covers = info.covers, entries = info.entries, bytes = info.bytes, removed, "snapshot written");
        Ok(())
    }

    /// Totals over all partitions.
    pub async fn stats(&self) -> Result<ShardStats, KvError> {
        let mut total = ShardStats::default();
        for partition in &self.inner.partitions {
            let s = partition.call(|reply| PartitionMsg::Stats { reply }).await?;
            total.entries += s.entries;
            total.values += s.values;
            total.value_bytes += s.value_bytes;
            total.key_bytes += s.key_bytes;
        }
        Ok(total)
    }

    /// Stops serving, flushes the log and stops the actors.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(wal) = &self.inner.wal
            && let Err(e) = wal.close().await
        {
            tracing::error!(error = %e, "closing the log failed");
        }
        for partition in &self.inner.partitions {
            partition.stop();
        }
        tracing::info!(node = %self.inner.config.node_id, "node stopped");
    }
}

impl Inner {
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn stamp(&self, now_ms: u64) -> Version {
        Version { ts: self.hlc.now(now_ms), node: self.tag }
    }

    pub(crate) fn epoch(&self) -> Epoch {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn raise_epoch(&self, epoch: Epoch) {
        let mut current = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        *current = current.merge(epoch);
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

fn tls_paths(config: &NodeConfig) -> Option<TlsPaths> {
    let from_dir = config.tls.certs_dir.as_ref().map(|dir| TlsPaths::node_in(dir, &config.node_id));
    match (&config.tls.ca, &config.tls.cert, &config.tls.key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsPaths { ca: ca.clone(), cert: cert.clone(), key: key.clone() }),
        _ => from_dir,
    }
}

/// Active expiry: every partition gets a bounded sweep per interval, and
/// partitions with work left get another right away, so a burst of expiries
/// is reclaimed quickly without any one sweep holding an actor for long.
async fn sweeper(node: Node) {
    let inner = &node.inner;
    let mut shutdown = inner.shutdown.subscribe();
    let mut tick = tokio::time::interval(inner.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let grace = inner.config.tombstone_grace.as_millis() as u64;
        for partition in &inner.partitions {
            for _ in 0..16 {
                if inner.stopping() {
                    return;
                }
                let purge_before_ms = inner.now_ms().saturating_sub(grace);
                let budget = inner.config.sweep_budget;
                match partition.call(|reply| PartitionMsg::Sweep { purge_before_ms, budget, reply }).await {
                    Ok(sweep) if sweep.more => tokio::task::yield_now().await,
                    _ => break,
                }
            }
        }
    }
}

/// Takes a snapshot whenever enough log has accumulated since the last.
async fn snapshotter(node: Node) {
    let inner = &node.inner;
    let Some(wal) = &inner.wal else { return };
    let mut shutdown = inner.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut logged_at_last = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let logged = wal.stats().appended_bytes.load(std::sync::atomic::Ordering::Relaxed);
        if logged - logged_at_last < inner.config.snapshot_after_bytes {
            continue;
        }
        logged_at_last = logged;
        if let Err(e) = node.snapshot().await {
            tracing::error!(error = %e, "snapshot failed; the log keeps growing until one succeeds");
        }
    }
}
