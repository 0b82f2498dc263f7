//! The write-ahead log: one per node, shared by all partitions, so that one
//! fsync commits the writes of every partition that arrived meanwhile (group
//! commit).
//!
//! Appends are handed to a writer thread through a queue bounded in bytes;
//! a caller that finds the queue full waits, which backs pressure up into the
//! partition actors and from there, as `Busy`, to clients. Each append
//! returns a [`Durable`] that resolves according to the fsync policy:
//! `always` after the fsync that covers it, `everysec` and `never` after the
//! write(2) into the page cache (so a process crash loses nothing; a power
//! loss loses up to a second, or whatever the OS had not flushed).
//!
//! The writer runs on a thread of its own rather than as a task of the
//! node's runtime because write(2) and fsync block ([`WriterHost`]); the
//! rest of the node never waits on it except through `Durable`.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::{Entry, Epoch};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::disk::{Disk, DiskFile};
use crate::{StorageError, frame, legacy};

/// Redis AOF semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Always,
    Everysec,
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<FsyncPolicy, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::Everysec),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!("unknown fsync policy '{other}' (use always, everysec or never)")),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Everysec => "everysec",
            FsyncPolicy::Never => "never",
        })
    }
}

const SEGMENT_MAGIC: &[u8; 8] = b"RKVWAL\0\0";
pub(crate) const SEGMENT_FORMAT: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: usize = 20;
/// Leading byte of every record payload, so that the record encoding can
/// evolve independently of the segment header. 2: versions carry a touch;
/// format 1 is still read (`legacy.rs`).
const RECORD_FORMAT: u8 = 2;

pub(crate) fn segment_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

pub(crate) fn segment_header(seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[12..].copy_from_slice(&seq.to_le_bytes());
    h
}

/// Checks a segment header; returns the format version on a magic match.
pub(crate) fn check_segment_header(h: &[u8; SEGMENT_HEADER_LEN]) -> Result<(u32, u64), &'static str> {
    if &h[..8] != SEGMENT_MAGIC {
        return Err("not a ringkv write-ahead log segment (bad magic)");
    }
    let format = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(h[12..].try_into().expect("8 bytes"));
    Ok((format, seq))
}

/// One logged change. Replaying records is merging them, so their order
/// does not affect the recovered state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    Entry {
        partition: u16,
        key: Bytes,
        entry: Entry,
    },
    Truncate {
        epoch: Epoch,
    },
    /// An entry held for another node that was down.
    Hint {
        target: String,
        partition: u16,
        key: Bytes,
        entry: Entry,
    },
    /// Hints handed to their owner: a hint for the key at or below this
    /// version is gone.
    HintDelivered {
        target: String,
        partition: u16,
        key: Bytes,
        version: ringkv_core::Version,
    },
    /// Every entry of the partition was dropped (it moved to other nodes).
    DropPartition {
        partition: u16,
    },
}

impl WalRecord {
    /// The framed bytes to append.
    pub fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let mut payload = vec![RECORD_FORMAT];
        payload = postcard::to_extend(self, payload)
            .map_err(|e| StorageError::Encode { what: "log record", reason: e.to_string() })?;
        let mut out = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::encode("log record", &payload, &mut out)?;
        Ok(out)
    }

    pub fn decode(payload: &[u8]) -> Result<WalRecord, String> {
        match payload.split_first() {
            Some((&RECORD_FORMAT, body)) => postcard::from_bytes(body).map_err(|e| format!("undecodable record: {e}")),
            Some((&legacy::FORMAT, body)) => legacy::decode::<legacy::WalRecord>(body).map(WalRecord::from),
            Some((other, _)) => Err(format!("record format {other}, this build reads {RECORD_FORMAT}")),
            None => Err("empty record".into()),
        }
    }
}

impl From<legacy::WalRecord> for WalRecord {
    fn from(record: legacy::WalRecord) -> WalRecord {
        match record {
            legacy::WalRecord::Entry { partition, key, entry } => {
                WalRecord::Entry { partition, key, entry: entry.into() }
            }
            legacy::WalRecord::Truncate { epoch } => WalRecord::Truncate { epoch },
            legacy::WalRecord::Hint { target, partition, key, entry } => {
                WalRecord::Hint { target, partition, key, entry: entry.into() }
            }
            legacy::WalRecord::HintDelivered { target, partition, key, version } => {
                WalRecord::HintDelivered { target, partition, key, version: version.into() }
            }
            legacy::WalRecord::DropPartition { partition } => WalRecord::DropPartition { partition },
        }
    }
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub fsync: FsyncPolicy,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Bytes that may wait in the queue before appenders wait.
    pub queue_bytes: usize,
}

/// Counters the node reads to decide when to snapshot and to report status.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Bytes appended since this process opened the log.
    pub appended_bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub segment: AtomicU64,
    /// Where each fsync's duration goes, once the node exports metrics.
    fsync_seconds: OnceLock<metrics::Histogram>,
}

/// Resolves when an append is as durable as the policy promises.
pub type Durable = oneshot::Receiver<Result<(), StorageError>>;

enum Command {
    Append { frames: Vec<u8>, done: oneshot::Sender<Result<(), StorageError>>, _permit: OwnedSemaphorePermit },
    Rotate { done: oneshot::Sender<Result<u64, StorageError>> },
    Close { done: oneshot::Sender<Result<(), StorageError>> },
}

/// Handle to the log. Cheap to clone; the writer stops when the last
/// handle is dropped or [`Wal::close`] is called, syncing first.
#[derive(Clone)]
pub struct Wal {
    /// Unbounded in messages, bounded in bytes by `budget`.
    tx: mpsc::UnboundedSender<Command>,
    budget: Arc<Semaphore>,
    queue_bytes: usize,
    stats: Arc<WalStats>,
    failed: watch::Receiver<Option<String>>,
}

impl Wal {
    /// Starts a new segment numbered `first_segment` and the writer.
    pub fn start(disk: Arc<dyn Disk>, first_segment: u64, config: WalConfig) -> Result<Wal, StorageError> {
        let stats = Arc::new(WalStats::default());
        let mut writer = Writer {
            file: open_segment(&*disk, first_segment)?,
            disk,
            seq: first_segment,
            len: SEGMENT_HEADER_LEN as u64,
            config: config.clone(),
            last_sync: Instant::now(),
            // The new segment's header is unsynced until the first sync.
            dirty: true,
            failed: watch::channel(None).0,
            stats: stats.clone(),
        };
        let failed = writer.failed.subscribe();
        stats.segment.store(first_segment, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let host = writer.disk.writer_host();
        host.spawn("ringkv-wal", async move { writer.run(rx).await })
            .map_err(|e| StorageError::WriterStopped(format!("cannot start the log writer: {e}")))?;
        let queue_bytes = config.queue_bytes.max(1);
        Ok(Wal { tx, budget: Arc::new(Semaphore::new(queue_bytes)), queue_bytes, stats, failed })
    }

    /// Why the log refuses writes, once it does (after an I/O error): the
    /// node's memory then holds writes its disk may not, so it must stop
    /// and recover rather than serve on.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failed.clone()
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// Records each later fsync's duration, in seconds, in `histogram`.
    pub fn observe_fsync(&self, histogram: metrics::Histogram) {
        let _ = self.stats.fsync_seconds.set(histogram);
    }

    /// Queues framed records (from [`WalRecord::encode`], possibly several
    /// concatenated). Waits only while the queue is full.
    pub async fn submit(&self, frames: Vec<u8>) -> Durable {
        let (done, durable) = oneshot::channel();
        let want = frames.len().clamp(1, self.queue_bytes) as u32;
        let permit = self.budget.clone().acquire_many_owned(want).await.expect("the log's semaphore is never closed");
        // If the writer is gone, `done` is dropped with the command and the
        // receiver reports that.
        let _ = self.tx.send(Command::Append { frames, done, _permit: permit });
        durable
    }

    /// Submits and waits for durability.
    pub async fn append(&self, frames: Vec<u8>) -> Result<(), StorageError> {
        settle(self.submit(frames).await).await
    }

    /// Closes the current segment and starts the next. Returns the number of
    /// the closed segment: every record appended before this call is in it or
    /// an earlier one.
    pub async fn rotate(&self) -> Result<u64, StorageError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Command::Rotate { done }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Flushes, syncs and stops the writer.
    pub async fn close(&self) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Command::Close { done }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Waits on a [`Durable`], mapping a vanished writer to an error.
pub async fn settle(durable: Durable) -> Result<(), StorageError> {
    durable.await.map_err(|_| stopped())?
}

fn stopped() -> StorageError {
    StorageError::WriterStopped("the log writer exited".into())
}

fn open_segment(disk: &dyn Disk, seq: u64) -> Result<Box<dyn DiskFile>, StorageError> {
    let name = segment_name(seq);
    let mut file = disk.create(&name).map_err(|e| StorageError::io(disk.path(&name), e))?;
    file.write_all(&segment_header(seq)).map_err(|e| StorageError::io(disk.path(&name), e))?;
    Ok(file)
}

struct Writer {
    disk: Arc<dyn Disk>,
    file: Box<dyn DiskFile>,
    seq: u64,
    len: u64,
    config: WalConfig,
    last_sync: Instant,
    dirty: bool,
    /// After an I/O error the log refuses all further appends: a log with a
    /// hole in it would recover to a state no client ever saw acknowledged.
    failed: watch::Sender<Option<String>>,
    stats: Arc<WalStats>,
}

const MAX_BATCH_BYTES: usize = 8 << 20;

impl Writer {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            // Once failed, the log only answers with its failure: waiting for
            // a sync that can never be due again would spin, and as a task
            // would starve the runtime it shares (simulator seed 1189).
            let first = if self.dirty && self.config.fsync == FsyncPolicy::Everysec && self.failure().is_none() {
                let wait = Duration::from_secs(1).saturating_sub(self.last_sync.elapsed());
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(cmd)) => Some(cmd),
                    Ok(None) => break,
                    Err(_) => None,
                }
            } else {
                match rx.recv().await {
                    Some(cmd) => Some(cmd),
                    None => break,
                }
            };
            let Some(first) = first else {
                self.sync_if_due();
                continue;
            };
            let mut batch = Vec::new();
            let mut waiters = Vec::new();
            let mut control = None;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append { frames, done, _permit } => {
                        batch.extend_from_slice(&frames);
                        waiters.push(done);
                    }
                    other => {
                        control = Some(other);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            let result = self.write_batch(&batch);
            for done in waiters {
                let _ = done.send(result.clone().map_err(StorageError::WriterStopped));
            }
            match control {
                Some(Command::Rotate { done }) => {
                    let _ = done.send(self.rotate());
                }
                Some(Command::Close { done }) => {
                    let _ = done.send(self.sync().map_err(StorageError::WriterStopped));
                    return;
                }
                _ => {}
            }
        }
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "final log sync failed");
        }
    }

    fn write_batch(&mut self, batch: &[u8]) -> Result<(), String> {
        if let Some(reason) = self.failure() {
            return Err(reason);
        }
        if batch.is_empty() {
            return Ok(());
        }
        if self.len >= self.config.segment_bytes
            && let Err(e) = self.rotate()
        {
            return Err(self.fail(e.to_string()));
        }
        if let Err(e) = self.file.write_all(batch) {
            return Err(
                self.fail(format!("write to {} failed: {e}", self.disk.path(&segment_name(self.seq)).display()))
            );
        }
        self.len += batch.len() as u64;
        self.dirty = true;
        self.stats.appended_bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match self.config.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Everysec => {
                self.sync_if_due();
                self.failure().map_or(Ok(()), Err)
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    fn sync_if_due(&mut self) {
        if self.dirty && self.last_sync.elapsed() >= Duration::from_secs(1) {
            let _ = self.sync();
        }
    }

    fn sync(&mut self) -> Result<(), String> {
        if let Some(reason) = self.failure() {
            return Err(reason);
        }
        if !self.dirty {
            return Ok(());
        }
        let started = Instant::now();
        if let Err(e) = self.file.sync() {
            return Err(
                self.fail(format!("fsync of {} failed: {e}", self.disk.path(&segment_name(self.seq)).display()))
            );
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        if let Some(histogram) = self.stats.fsync_seconds.get() {
            histogram.record(self.last_sync - started);
        }
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    fn fail(&mut self, reason: String) -> String {
        tracing::error!(%reason, "write-ahead log failed; refusing further writes");
        self.failed.send_replace(Some(reason.clone()));
        reason
    }

    fn rotate(&mut self) -> Result<u64, StorageError> {
        self.sync().map_err(StorageError::WriterStopped)?;
        let closed = self.seq;
        self.file = open_segment(&*self.disk, closed + 1)?;
        self.seq = closed + 1;
        self.len = SEGMENT_HEADER_LEN as u64;
        // The header is not synced on its own: a crash before the first sync
        // leaves a short last segment, which recovery discards. Every segment
        // is synced before the next one is created, so only the last can be
        // short.
        self.dirty = true;
        self.stats.segment.store(self.seq, Ordering::Relaxed);
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemDisk, WriterHost};
    use ringkv_core::{NodeTag, Timestamp};

    #[test]
    #[allow(clippy::disallowed_methods, reason = "the runtime under watch runs on a thread the test can give up on")]
    fn after_a_failed_everysec_sync_the_writer_waits_instead_of_spinning() {
        let (done, finished) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            // Paused, the clock moves only while every task waits, as the
            // simulator's does.
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let disk = MemDisk::new().with_writer_host(WriterHost::Task);
                let config = WalConfig { fsync: FsyncPolicy::Everysec, segment_bytes: 1 << 20, queue_bytes: 1 << 20 };
                let wal = Wal::start(Arc::new(disk.clone()), 1, config).unwrap();
                wal.append(vec![7; 64]).await.unwrap();
                disk.fail(Some(std::io::ErrorKind::Other));
                let mut failure = wal.failure();
                failure.wait_for(Option::is_some).await.unwrap();
                // The writer is a task of this runtime: were it to spin,
                // the clock would never move on and this sleep never end.
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(wal.append(vec![7; 64]).await.is_err(), "a failed log refuses appends");
                wal.close().await.unwrap_err();
            });
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(20)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(worker.join().expect_err("the worker ended without reporting"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the log writer spun after its failed sync and starved its runtime")
            }
        }
    }

    /// Format-1 bytes as the previous build wrote them: a version was
    /// (timestamp, node) and nothing more.
    #[test]
    fn format_one_records_decode_as_untouched_versions() {
        #[derive(serde::Serialize)]
        enum Old {
            Entry { partition: u16, key: Bytes, entry: (u64, u64, Option<Bytes>, Option<u64>) },
        }
        let old = Old::Entry { partition: 3, key: Bytes::from("k"), entry: (7, 9, Some(Bytes::from("v")), Some(11)) };
        let mut payload = vec![legacy::FORMAT];
        payload.extend(postcard::to_allocvec(&old).unwrap());
        let version = ringkv_core::Version::new(Timestamp(7), NodeTag(9));
        let entry = ringkv_core::Entry::value(version, Bytes::from("v"), Some(11));
        assert_eq!(WalRecord::decode(&payload), Ok(WalRecord::Entry { partition: 3, key: Bytes::from("k"), entry }));
    }
}
