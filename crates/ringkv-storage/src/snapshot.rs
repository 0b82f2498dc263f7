//! Snapshots compact the log.
//!
//! Taking one never stops writes: the log is rotated first, so every record
//! in the closed segments was applied to memory before the snapshot starts
//! reading; then the shards are read in chunks while they keep serving. A
//! write that lands during the snapshot is in the new segment and may also
//! be in the snapshot, which is harmless because replay is a merge. Once the
//! snapshot is durable under its final name, the closed segments go.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_core::{Entry, Epoch};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::disk::Disk;
use crate::{StorageError, frame, legacy};

const MAGIC: &[u8; 8] = b"RKVSNAP\0";
pub(crate) const FORMAT: u32 = 1;
pub(crate) const HEADER_LEN: usize = 20;
/// 2: versions carry a touch; format 1 is still read (`legacy.rs`).
const RECORD_FORMAT: u8 = 2;
/// Encoded bytes of entries per record. The callers hand over chunks
/// counted in entries, whose size depends on the values; cutting them here
/// keeps every record far below [`frame::MAX_RECORD_BYTES`] and recovery's
/// memory per record small. A single larger entry goes alone.
const RECORD_TARGET_BYTES: usize = 1 << 20;

pub(crate) fn snapshot_name(covers: u64) -> String {
    format!("snap-{covers:020}.snap")
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snap-")?.strip_suffix(".snap")?.parse().ok()
}

pub(crate) fn header(covers: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..].copy_from_slice(&covers.to_le_bytes());
    h
}

pub(crate) fn check_header(h: &[u8; HEADER_LEN]) -> Result<u32, &'static str> {
    if &h[..8] != MAGIC {
        return Err("not a ringkv snapshot (bad magic)");
    }
    Ok(u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")))
}

/// One record of a snapshot file. Public for the fuzz targets and tests
/// that decode snapshot records from untrusted bytes; only
/// [`SnapshotWriter`] writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapRecord {
    Chunk { partition: u16, entries: Vec<(Bytes, Entry)> },
    End { entries: u64, epoch: Epoch },
    Hints { target: String, entries: Vec<(u16, Bytes, Entry)> },
}

impl From<legacy::SnapRecord> for SnapRecord {
    fn from(record: legacy::SnapRecord) -> SnapRecord {
        match record {
            legacy::SnapRecord::Chunk { partition, entries } => {
                SnapRecord::Chunk { partition, entries: entries.into_iter().map(|(k, e)| (k, e.into())).collect() }
            }
            legacy::SnapRecord::End { entries, epoch } => SnapRecord::End { entries, epoch },
            legacy::SnapRecord::Hints { target, entries } => {
                SnapRecord::Hints { target, entries: entries.into_iter().map(|(p, k, e)| (p, k, e.into())).collect() }
            }
        }
    }
}

impl SnapRecord {
    /// Decodes a record payload (format 2, or format 1 converted).
    pub fn decode(payload: &[u8]) -> Result<SnapRecord, String> {
        match payload.split_first() {
            Some((&RECORD_FORMAT, body)) => postcard::from_bytes(body).map_err(|e| format!("undecodable record: {e}")),
            Some((&legacy::FORMAT, body)) => legacy::decode::<legacy::SnapRecord>(body).map(SnapRecord::from),
            Some((other, _)) => Err(format!("record format {other}, this build reads {RECORD_FORMAT}")),
            None => Err("empty record".into()),
        }
    }

    /// The framed bytes of this record, as a snapshot file holds them.
    pub fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let payload = postcard::to_extend(self, vec![RECORD_FORMAT])
            .map_err(|e| StorageError::Encode { what: "snapshot record", reason: e.to_string() })?;
        let mut out = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::encode("snapshot record", &payload, &mut out)?;
        Ok(out)
    }
}

enum Msg {
    Chunk(u16, Vec<(Bytes, Entry)>),
    Hints(String, Vec<(u16, Bytes, Entry)>),
    Finish(Epoch, oneshot::Sender<Result<SnapshotInfo, StorageError>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub covers: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// Writes one snapshot where its disk's [`crate::WriterHost`] puts it (on
/// a thread of its own, for a file system), fed chunk by chunk.
/// Dropping it unfinished removes the partial file.
pub struct SnapshotWriter {
    tx: mpsc::Sender<Msg>,
}

impl SnapshotWriter {
    /// `covers` is the last log segment whose records the snapshot includes
    /// (the value [`crate::Wal::rotate`] returned).
    pub fn start(disk: Arc<dyn Disk>, covers: u64) -> Result<SnapshotWriter, StorageError> {
        let tmp = format!("snap-{covers:020}.tmp");
        let mut file = disk.create(&tmp).map_err(|e| StorageError::io(disk.path(&tmp), e))?;
        file.write_all(&header(covers)).map_err(|e| StorageError::io(disk.path(&tmp), e))?;
        let (tx, mut rx) = mpsc::channel::<Msg>(4);
        let host = disk.writer_host();
        let spawned = host.spawn("ringkv-snapshot", async move {
            let io = |e| StorageError::io(disk.path(&tmp), e);
            let mut entries = 0u64;
            let mut bytes = HEADER_LEN as u64;
            while let Some(msg) = rx.recv().await {
                let records: Vec<SnapRecord> = match msg {
                    Msg::Chunk(partition, chunk) => {
                        entries += chunk.len() as u64;
                        let cut = ringkv_core::batches(chunk, RECORD_TARGET_BYTES);
                        cut.into_iter().map(|entries| SnapRecord::Chunk { partition, entries }).collect()
                    }
                    Msg::Hints(target, hints) => ringkv_core::batches(hints, RECORD_TARGET_BYTES)
                        .into_iter()
                        .map(|entries| SnapRecord::Hints { target: target.clone(), entries })
                        .collect(),
                    Msg::Finish(epoch, done) => {
                        let result = SnapRecord::End { entries, epoch }
                            .encode()
                            .and_then(|buf| {
                                bytes += buf.len() as u64;
                                file.write_all(&buf).map_err(io)
                            })
                            .and_then(|()| file.sync().map_err(io))
                            .and_then(|()| {
                                let name = snapshot_name(covers);
                                disk.rename(&tmp, &name).map_err(|e| StorageError::io(disk.path(&name), e))
                            })
                            .map(|()| SnapshotInfo { covers, entries, bytes });
                        let _ = done.send(result);
                        return;
                    }
                };
                let written = records.iter().try_fold(0, |n, record| {
                    record.encode().and_then(|buf| file.write_all(&buf).map_err(io).map(|()| n + buf.len()))
                });
                match written {
                    Ok(n) => bytes += n as u64,
                    Err(e) => {
                        tracing::error!(error = %e, "snapshot write failed");
                        break;
                    }
                }
            }
            let _ = disk.remove(&tmp);
        });
        spawned.map_err(|e| StorageError::WriterStopped(format!("cannot start the snapshot writer: {e}")))?;
        Ok(SnapshotWriter { tx })
    }

    pub async fn add(&self, partition: u16, entries: Vec<(Bytes, Entry)>) -> Result<(), StorageError> {
        self.tx.send(Msg::Chunk(partition, entries)).await.map_err(|_| snapshot_failed())
    }

    /// Hints held for `target`, so that they survive the log compaction.
    pub async fn add_hints(&self, target: String, hints: Vec<(u16, Bytes, Entry)>) -> Result<(), StorageError> {
        self.tx.send(Msg::Hints(target, hints)).await.map_err(|_| snapshot_failed())
    }

    /// Makes the snapshot durable under its final name.
    pub async fn finish(self, epoch: Epoch) -> Result<SnapshotInfo, StorageError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Msg::Finish(epoch, done)).await.map_err(|_| snapshot_failed())?;
        rx.await.map_err(|_| snapshot_failed())?
    }
}

fn snapshot_failed() -> StorageError {
    StorageError::WriterStopped("the snapshot writer stopped; see the log for the error".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::frame::{FrameReader, Next};
    use ringkv_core::{NodeTag, Timestamp, Version};

    fn entry(i: u64, len: usize) -> Entry {
        Entry::value(Version::new(Timestamp::new(1_000 + i, 0), NodeTag(1)), Bytes::from(vec![7u8; len]), None)
    }

    #[test]
    fn records_are_cut_by_encoded_size_however_many_entries_a_chunk_holds() {
        let disk = Arc::new(MemDisk::new());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let info = rt.block_on(async {
            let writer = SnapshotWriter::start(disk.clone(), 1).unwrap();
            // 4 MiB of 10 KiB values in one chunk, and one value larger than
            // a record's target, which must go alone.
            let chunk = (0..400u64).map(|i| (Bytes::from(format!("k{i}")), entry(i, 10 << 10))).collect();
            writer.add(0, chunk).await.unwrap();
            writer.add(0, vec![(Bytes::from("huge"), entry(0, 3 << 20))]).await.unwrap();
            let hints = (0..400u64).map(|i| (0, Bytes::from(format!("h{i}")), entry(i, 10 << 10))).collect();
            writer.add_hints("n2".into(), hints).await.unwrap();
            writer.finish(Epoch::NONE).await.unwrap()
        });
        assert_eq!(info.entries, 401);
        let file = disk.with_file(&snapshot_name(1), |bytes| bytes.clone()).unwrap();
        let records = std::io::Cursor::new(&file[HEADER_LEN..]);
        let mut frames = FrameReader::new(records, HEADER_LEN as u64, file.len() as u64, frame::MAX_RECORD_BYTES);
        let mut sizes = Vec::new();
        loop {
            match frames.next().unwrap() {
                Next::Record(payload) => sizes.push(payload.len()),
                Next::End => break,
                other => panic!("unreadable snapshot after {} records: {other:?}", sizes.len()),
            }
        }
        assert!(sizes.len() >= 10, "4 MiB of chunks and 4 MiB of hints in {} records", sizes.len());
        let over: Vec<usize> = sizes.iter().copied().filter(|n| *n > RECORD_TARGET_BYTES + 64).collect();
        assert_eq!(over.len(), 1, "only the huge entry's record is over the target: {sizes:?}");
        assert!(over[0] < (3 << 20) + 64, "the huge entry went alone");
    }
}
