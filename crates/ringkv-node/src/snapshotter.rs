//! Snapshots: a node writes one whenever enough log has accumulated since
//! the last, and drops the log segments it covers.

use std::time::Duration;

use bytes::Bytes;
use ringkv_core::KvError;
use ringkv_storage::{SnapshotWriter, compact};

use crate::hints::HintsMsg;
use crate::node::{Node, every};
use crate::partition::PartitionMsg;

/// Entries read from a partition per message while snapshotting; the
/// snapshot writer cuts them into records by size.
const SNAPSHOT_CHUNK: usize = 1024;

impl Node {
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
        for (target, hints) in self.inner.hints.call(|reply| HintsMsg::All { reply }).await? {
            writer.add_hints(target.to_string(), hints).await.map_err(storage)?;
        }
        let info = writer.finish(self.inner.epoch()).await.map_err(storage)?;
        let removed = compact(&**disk, covers).map_err(storage)?;
        tracing::info!(covers = info.covers, entries = info.entries, bytes = info.bytes, removed, "snapshot written");
        Ok(())
    }
}

/// Takes a snapshot whenever enough log has accumulated since the last.
pub(crate) async fn snapshotter(node: Node) {
    let Some(wal) = node.inner.wal.clone() else { return };
    let mut logged_at_last = 0u64;
    every(node.inner.shutdown.subscribe(), Duration::from_secs(1), || {
        let logged = wal.stats().appended_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let due = logged - logged_at_last >= node.inner.config.snapshot_after_bytes;
        if due {
            logged_at_last = logged;
        }
        let node = node.clone();
        async move {
            if due && let Err(e) = node.snapshot().await {
                tracing::error!(error = %e, "snapshot failed; the log keeps growing until one succeeds");
            }
        }
    })
    .await;
}
