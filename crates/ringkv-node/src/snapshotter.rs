//! Snapshots: a node writes one whenever enough log has accumulated since
//! the last, and drops the log segments it covers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::{Epoch, KvError};
use ringkv_storage::{Disk, SnapshotWriter, Wal, compact};
use tokio::sync::watch;

use crate::hints::{HintsMailbox, HintsMsg};
use crate::partition::{PartitionMailbox, PartitionMsg};
use crate::periodic::every;

/// Entries read from a partition per message while snapshotting; the
/// snapshot writer cuts them into records by size.
const SNAPSHOT_CHUNK: usize = 1024;

/// What a snapshot reads (every partition and the hint store, and the
/// truncate epoch last, so that a clear during the snapshot is recorded)
/// and writes (the log's rotation, the snapshot file, the compaction).
pub(crate) struct Snapshots {
    pub wal: Wal,
    pub disk: Arc<dyn Disk>,
    pub partitions: Vec<PartitionMailbox>,
    pub hints: HintsMailbox,
    pub epoch: Arc<Mutex<Epoch>>,
}

impl Snapshots {
    /// Takes a snapshot now and drops the log segments it covers.
    pub(crate) async fn take(&self) -> Result<(), KvError> {
        let storage = |e: ringkv_storage::StorageError| KvError::Storage(e.to_string());
        let covers = self.wal.rotate().await.map_err(storage)?;
        let writer = SnapshotWriter::start(self.disk.clone(), covers).map_err(storage)?;
        for (i, partition) in self.partitions.iter().enumerate() {
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
        for (target, hints) in self.hints.call(|reply| HintsMsg::All { reply }).await? {
            writer.add_hints(target.to_string(), hints).await.map_err(storage)?;
        }
        let epoch = *self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        let info = writer.finish(epoch).await.map_err(storage)?;
        let removed = compact(&*self.disk, covers).map_err(storage)?;
        tracing::info!(covers = info.covers, entries = info.entries, bytes = info.bytes, removed, "snapshot written");
        Ok(())
    }
}

/// Takes a snapshot whenever `after_bytes` of log have accumulated since
/// the last.
pub(crate) async fn snapshotter(snapshots: Snapshots, after_bytes: u64, shutdown: watch::Receiver<bool>) {
    let mut logged_at_last = 0u64;
    every(shutdown, Duration::from_secs(1), || {
        let logged = snapshots.wal.stats().appended_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let due = logged - logged_at_last >= after_bytes;
        if due {
            logged_at_last = logged;
        }
        let snapshots = &snapshots;
        async move {
            if due && let Err(e) = snapshots.take().await {
                tracing::error!(error = %e, "snapshot failed; the log keeps growing until one succeeds");
            }
        }
    })
    .await;
}
