//! The node's shared state (`Node`, `Inner`) and its public API. Starting a
//! node is `start.rs`; each subsystem (coordinator in `ops.rs`, repair,
//! rebalancing, hint handoff, the sweeper, the evictor, the snapshotter)
//! lives in its own module and reaches the state through `Node`, and this
//! module imports none of them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_core::{Clock, Epoch, Hlc, KvError, Limits, NodeTag, Partitioner, Version};
use ringkv_storage::{Disk, ShardStats, Wal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::fault::Faults;
use crate::gossip::GossipKeys;
use crate::hints::HintsMailbox;
use crate::member_file::MemberFile;
use crate::membership::{ClaimSource, Membership, Standing};
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::partition::{PartitionMailbox, PartitionMsg};
use crate::peers::{BatchStats, PeerTransport};
use crate::progress::{Repair, Transfers};
use crate::snapshotter::Snapshots;
use crate::supervisor::Supervisor;
use crate::topology::Topology;

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
    pub(crate) hlc: Arc<Hlc>,
    pub(crate) partitioner: Partitioner,
    pub(crate) limits: Limits,
    pub(crate) partitions: Vec<PartitionMailbox>,
    pub(crate) memory: Arc<Memory>,
    pub(crate) hints: HintsMailbox,
    pub(crate) supervisor: Supervisor,
    pub(crate) peers: Arc<dyn PeerTransport>,
    pub(crate) batch_stats: Arc<BatchStats>,
    /// Present when `metrics_listen` is set; nothing is counted otherwise.
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) membership: tokio::sync::Mutex<Option<Membership>>,
    /// A clustered node's gossip keyring and counters (see `gossip.rs`).
    pub(crate) gossip_keys: Option<Arc<GossipKeys>>,
    /// A clustered node's standing (see `membership.rs`).
    pub(crate) standing: Option<Arc<Standing>>,
    /// What a clustered node answers to `Request::Claim`.
    pub(crate) claims: Option<Arc<ClaimSource>>,
    pub(crate) repair: Arc<Repair>,
    pub(crate) transfers: Transfers,
    pub(crate) faults: Arc<Faults>,
    /// Present for a clustered node that persists its data.
    pub(crate) member_file: Option<MemberFile>,
    /// Set once a leaving node has handed everything off.
    pub(crate) left: watch::Sender<bool>,
    pub(crate) topology: watch::Receiver<Arc<Topology>>,
    pub(crate) wal: Option<Wal>,
    pub(crate) epoch: Arc<Mutex<Epoch>>,
    pub(crate) disk: Option<Arc<dyn Disk>>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Held for the whole of a shutdown, so that a second caller returns
    /// only once the first has finished.
    pub(crate) stopped: tokio::sync::Mutex<bool>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The join in progress, which a new join stops before it discards
    /// what this one pulled.
    pub(crate) joining: Mutex<Option<JoinHandle<()>>>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) gossip_addr: Option<SocketAddr>,
    pub(crate) resp_addr: Option<SocketAddr>,
    pub(crate) metrics_addr: Option<SocketAddr>,
}

impl Node {
    /// Takes a snapshot now and drops the log segments it covers.
    pub async fn snapshot(&self) -> Result<(), KvError> {
        let Some(snapshots) = self.inner.snapshots() else {
            return Err(KvError::Storage("persistence is off; there is nothing to snapshot".into()));
        };
        snapshots.take().await
    }

    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
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

    /// The gossip address actually bound, for a clustered node.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.inner.gossip_addr
    }

    /// Where Redis clients reach this node, if it serves them.
    pub fn resp_addr(&self) -> Option<SocketAddr> {
        self.inner.resp_addr
    }

    /// Where `GET /metrics` is served, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner.metrics_addr
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

    /// Resolves with the reason once one of the node's actors has failed.
    /// The node then shuts itself down (see `supervisor.rs`); a process
    /// running it should exit with an error so that it is restarted and
    /// recovers.
    pub async fn failed(&self) -> String {
        let mut failures = self.inner.supervisor.failures();
        let reason = failures.wait_for(Option::is_some).await.map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // The supervisor is gone only after a shutdown; nothing failed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops serving, leaves gossip, flushes the log and stops the actors.
    /// Calling it again waits for the first call to finish.
    pub async fn shutdown(&self) {
        let mut stopped = self.inner.stopped.lock().await;
        if *stopped {
            return;
        }
        *stopped = true;
        let _ = self.inner.shutdown.send(true);
        if let Some(membership) = self.inner.membership.lock().await.take() {
            membership.shutdown().await;
        }
        let mut tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        tasks.extend(self.inner.joining.lock().unwrap_or_else(|e| e.into_inner()).take());
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
        self.inner.hints.stop();
        self.inner.supervisor.stop();
        tracing::info!(node = %self.inner.config.node_id, "node stopped");
    }
}

impl Inner {
    /// What snapshots need, if persistence is on.
    pub(crate) fn snapshots(&self) -> Option<Snapshots> {
        let (wal, disk) = (self.wal.clone()?, self.disk.clone()?);
        Some(Snapshots {
            wal,
            disk,
            partitions: self.partitions.clone(),
            hints: self.hints.clone(),
            epoch: self.epoch.clone(),
        })
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn stamp(&self, now_ms: u64) -> Version {
        Version::new(self.hlc.now(now_ms), self.tag)
    }

    pub(crate) fn epoch(&self) -> Epoch {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns whether the epoch went up.
    pub(crate) fn raise_epoch(&self, epoch: Epoch) -> bool {
        let mut current = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        let raised = epoch > *current;
        *current = current.merge(epoch);
        raised
    }

    pub(crate) fn topology(&self) -> Arc<Topology> {
        self.topology.borrow().clone()
    }

    /// Whether this node may act on its data now (see `Standing`).
    pub(crate) fn standing(&self) -> Result<(), KvError> {
        self.standing.as_ref().map_or(Ok(()), |standing| standing.check())
    }

    pub(crate) fn topology_watch(&self) -> watch::Receiver<Arc<Topology>> {
        self.topology.clone()
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}
