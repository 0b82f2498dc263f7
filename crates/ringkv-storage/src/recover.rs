//! Start-up: check the data directory belongs to this node, load the newest
//! snapshot, replay the log segments after it, and clean up what an
//! interrupted compaction left behind.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;

use ringkv_core::{Entry, Epoch, Partitioner, Timestamp, Version};

use crate::StorageError;
use crate::disk::Disk;
use crate::frame::{FrameReader, MAX_RECORD_BYTES, Next};
use crate::shard::Shard;
use crate::snapshot::{self, SnapRecord, parse_snapshot_name, snapshot_name};
use crate::wal::{self, WalRecord, parse_segment_name, segment_name};

const META: &str = "ringkv.meta";
const META_FORMAT: u32 = 1;

#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    pub node_id: String,
    pub partitions: u16,
    pub digest_leaves: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryStats {
    pub snapshot: Option<u64>,
    pub snapshot_entries: u64,
    pub segments: usize,
    pub records: u64,
    /// Where a torn tail was cut off, and why.
    pub torn: Option<(String, u64, &'static str)>,
    pub max_timestamp: Timestamp,
}

/// Hints held for other nodes: per target node, the newest entry per
/// (partition, key).
pub type Hints = BTreeMap<String, BTreeMap<(u16, Bytes), Entry>>;

/// Adds a hint unless an equal or newer one is held.
pub fn merge_hint(hints: &mut Hints, target: &str, partition: u16, key: Bytes, entry: Entry) -> bool {
    let held = hints.entry(target.to_string()).or_default();
    match held.get(&(partition, key.clone())) {
        Some(existing) if !entry.supersedes(existing) => false,
        _ => {
            held.insert((partition, key), entry);
            true
        }
    }
}

/// Removes a delivered hint unless a newer one arrived since.
pub fn remove_hint(hints: &mut Hints, target: &str, partition: u16, key: &Bytes, version: Version) -> Option<Entry> {
    let held = hints.get_mut(target)?;
    let k = (partition, key.clone());
    if held.get(&k).is_some_and(|e| e.version <= version) {
        let removed = held.remove(&k);
        if held.is_empty() {
            hints.remove(target);
        }
        return removed;
    }
    None
}

pub struct Recovered {
    pub shards: Vec<Shard>,
    pub hints: Hints,
    pub epoch: Epoch,
    /// The newest timestamp in the recovered data. The node's clock must
    /// start past it, or a write stamped right after a restart could lose
    /// against one acknowledged before it.
    pub max_timestamp: Timestamp,
    /// The number the next log segment must take.
    pub next_segment: u64,
    pub stats: RecoveryStats,
}

/// Recovers the node's state from `disk`. `now_ms` only decides which
/// recovered values are already expired (they are kept as dead markers).
pub fn recover(disk: &dyn Disk, config: &RecoveryConfig, now_ms: u64) -> Result<Recovered, StorageError> {
    check_meta(disk, config)?;
    let names = disk.list().map_err(|e| StorageError::io(disk.path(""), e))?;
    for tmp in names.iter().filter(|n| n.ends_with(".tmp")) {
        let _ = disk.remove(tmp);
    }
    let mut state = Rebuilt {
        shards: (0..config.partitions).map(|_| Shard::new(config.digest_leaves)).collect(),
        hints: Hints::new(),
        stats: RecoveryStats::default(),
    };
    let mut epoch = Epoch::NONE;

    let mut snapshots: Vec<u64> = names.iter().filter_map(|n| parse_snapshot_name(n)).collect();
    snapshots.sort_unstable();
    let covers = snapshots.last().copied().unwrap_or(0);
    if let Some(&covers) = snapshots.last() {
        let (entries, snap_epoch) = load_snapshot(disk, covers, config, &mut state, now_ms)?;
        epoch = epoch.merge(snap_epoch);
        state.stats.snapshot = Some(covers);
        state.stats.snapshot_entries = entries;
    }

    let mut segments: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    segments.sort_unstable();
    let (compacted, live): (Vec<u64>, Vec<u64>) = segments.into_iter().partition(|s| *s <= covers);
    let mut next_segment = live.last().copied().unwrap_or(covers) + 1;
    for (i, seq) in live.iter().enumerate() {
        if i > 0 && *seq != live[i - 1] + 1 {
            return Err(StorageError::Corrupt {
                kind: "write-ahead log",
                path: disk.path(&segment_name(live[i - 1] + 1)),
                offset: 0,
                reason: format!("segment is missing between {} and {seq}", live[i - 1]),
            });
        }
        let last = i + 1 == live.len();
        match replay_segment(disk, *seq, last, config, &mut state, now_ms)? {
            Some(seg_epoch) => epoch = epoch.merge(seg_epoch),
            // The last segment was created but never got a whole header; its
            // number is free again, and reusing it keeps the sequence
            // contiguous.
            None => next_segment = *seq,
        }
        state.stats.segments += 1;
    }
    let Rebuilt { mut shards, mut hints, stats } = state;
    for shard in &mut shards {
        shard.truncate(epoch);
    }
    for held in hints.values_mut() {
        held.retain(|_, e| !epoch.covers(e.version));
    }
    hints.retain(|_, held| !held.is_empty());
    // Only now that the state is rebuilt is it safe to drop leftovers of a
    // compaction that was interrupted after its snapshot became durable.
    for seq in compacted {
        let _ = disk.remove(&segment_name(seq));
    }
    for old in snapshots.iter().rev().skip(1) {
        let _ = disk.remove(&snapshot_name(*old));
    }
    let max_timestamp = stats.max_timestamp.max(epoch.0);
    Ok(Recovered { shards, hints, epoch, max_timestamp, next_segment, stats })
}

/// What recovery rebuilds as it reads the files.
struct Rebuilt {
    shards: Vec<Shard>,
    hints: Hints,
    stats: RecoveryStats,
}

/// Deletes what a durable snapshot covering `covers` made redundant.
pub fn compact(disk: &dyn Disk, covers: u64) -> Result<usize, StorageError> {
    let names = disk.list().map_err(|e| StorageError::io(disk.path(""), e))?;
    let mut removed = 0;
    for name in names {
        let stale = parse_segment_name(&name).is_some_and(|s| s <= covers)
            || parse_snapshot_name(&name).is_some_and(|s| s < covers);
        if stale {
            disk.remove(&name).map_err(|e| StorageError::io(disk.path(&name), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn check_meta(disk: &dyn Disk, config: &RecoveryConfig) -> Result<(), StorageError> {
    let path = disk.path(META);
    if !disk.exists(META) {
        let text = format!(
            "# ringkv data directory; written once, checked at every start\nformat = {META_FORMAT}\nnode_id = \"{}\"\npartitions = {}\n",
            config.node_id, config.partitions
        );
        let tmp = format!("{META}.tmp");
        let mut file = disk.create(&tmp).map_err(|e| StorageError::io(disk.path(&tmp), e))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync()).map_err(|e| StorageError::io(disk.path(&tmp), e))?;
        return disk.rename(&tmp, META).map_err(|e| StorageError::io(path, e));
    }
    let mut text = String::new();
    disk.open_read(META)
        .and_then(|mut r| r.read_to_string(&mut text))
        .map_err(|e| StorageError::io(path.clone(), e))?;
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .ok_or_else(|| StorageError::Corrupt {
                kind: "meta file",
                path: path.clone(),
                offset: 0,
                reason: format!("no {name} field"),
            })
    };
    let format: u32 = field("format")?.parse().unwrap_or(0);
    if format != META_FORMAT {
        return Err(StorageError::UnsupportedFormat { path, found: format, supported: META_FORMAT });
    }
    let dir = disk.path("");
    let node_id = field("node_id")?;
    if node_id != config.node_id {
        return Err(StorageError::Mismatch { dir, what: "node", found: node_id, configured: config.node_id.clone() });
    }
    let partitions = field("partitions")?;
    if partitions != config.partitions.to_string() {
        return Err(StorageError::Mismatch {
            dir,
            what: "a cluster with partition count",
            found: partitions,
            configured: config.partitions.to_string(),
        });
    }
    Ok(())
}

fn load_snapshot(
    disk: &dyn Disk,
    covers: u64,
    config: &RecoveryConfig,
    state: &mut Rebuilt,
    now_ms: u64,
) -> Result<(u64, Epoch), StorageError> {
    let Rebuilt { shards, hints, stats } = state;
    let name = snapshot_name(covers);
    let path = disk.path(&name);
    let corrupt =
        |offset: u64, reason: String| StorageError::Corrupt { kind: "snapshot", path: path.clone(), offset, reason };
    let io = |e| StorageError::io(path.clone(), e);
    let len = disk.len(&name).map_err(io)?;
    let mut reader = disk.open_read(&name).map_err(io)?;
    let mut head = [0u8; snapshot::HEADER_LEN];
    if len < head.len() as u64 {
        return Err(corrupt(0, "file is shorter than its header".into()));
    }
    reader.read_exact(&mut head).map_err(io)?;
    let format = snapshot::check_header(&head).map_err(|r| corrupt(0, r.into()))?;
    if format != snapshot::FORMAT {
        return Err(StorageError::UnsupportedFormat { path: path.clone(), found: format, supported: snapshot::FORMAT });
    }
    let mut frames = FrameReader::new(reader, head.len() as u64, len, MAX_RECORD_BYTES);
    let mut loaded = 0u64;
    loop {
        let offset = frames.offset();
        // A snapshot becomes visible only by an atomic rename after fsync, so
        // unlike the log it never has a legitimate torn tail.
        let payload = match frames.next().map_err(io)? {
            Next::Record(p) => p,
            Next::End => return Err(corrupt(offset, "snapshot ends without its end record".into())),
            Next::Torn { reason } => return Err(corrupt(offset, reason.into())),
            Next::Corrupt { reason } => return Err(corrupt(offset, reason)),
        };
        match SnapRecord::decode(&payload).map_err(|r| corrupt(offset, r))? {
            SnapRecord::Chunk { partition, entries } => {
                let shard = shards.get_mut(partition as usize).ok_or_else(|| {
                    corrupt(offset, format!("partition {partition} out of range for {} partitions", config.partitions))
                })?;
                for (key, entry) in entries {
                    stats.max_timestamp = stats.max_timestamp.max(entry.version.newest_ts());
                    shard.apply(&key, entry, now_ms);
                    loaded += 1;
                }
            }
            SnapRecord::Hints { target, entries } => {
                for (partition, key, entry) in entries {
                    merge_hint(hints, &target, partition, key, entry);
                }
            }
            SnapRecord::End { entries, epoch } => {
                if entries != loaded {
                    return Err(corrupt(
                        offset,
                        format!("end record counts {entries} entries, the file holds {loaded}"),
                    ));
                }
                return Ok((loaded, epoch));
            }
        }
    }
}

fn replay_segment(
    disk: &dyn Disk,
    seq: u64,
    last: bool,
    config: &RecoveryConfig,
    state: &mut Rebuilt,
    now_ms: u64,
) -> Result<Option<Epoch>, StorageError> {
    let Rebuilt { shards, hints, stats } = state;
    let name = segment_name(seq);
    let path = disk.path(&name);
    let io = |e| StorageError::io(path.clone(), e);
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        kind: "write-ahead log",
        path: path.clone(),
        offset,
        reason,
    };
    let len = disk.len(&name).map_err(io)?;
    let mut head = [0u8; wal::SEGMENT_HEADER_LEN];
    if len < head.len() as u64 {
        if last {
            tracing::warn!(file = %path.display(), "log segment ends inside its header (crash while creating it); removing it");
            stats.torn = Some((name.clone(), 0, "partial segment header"));
            disk.remove(&name).map_err(io)?;
            return Ok(None);
        }
        return Err(corrupt(0, "segment is shorter than its header".into()));
    }
    let mut reader = disk.open_read(&name).map_err(io)?;
    reader.read_exact(&mut head).map_err(io)?;
    let (format, header_seq) = wal::check_segment_header(&head).map_err(|r| corrupt(0, r.into()))?;
    if format != wal::SEGMENT_FORMAT {
        return Err(StorageError::UnsupportedFormat {
            path: path.clone(),
            found: format,
            supported: wal::SEGMENT_FORMAT,
        });
    }
    if header_seq != seq {
        return Err(corrupt(12, format!("header says segment {header_seq}, the file name says {seq}")));
    }
    let partitioner = Partitioner::new(config.partitions);
    let mut frames = FrameReader::new(reader, head.len() as u64, len, MAX_RECORD_BYTES);
    let mut epoch = Epoch::NONE;
    loop {
        let offset = frames.offset();
        let payload = match frames.next().map_err(io)? {
            Next::Record(p) => p,
            Next::End => {
                // A node that stopped on a failed write restarts with its
                // files still in the page cache, so what was just read may
                // never have reached the disk. It is made durable before the
                // node builds on it: otherwise a later crash could tear a
                // segment that is no longer the last, and the node could not
                // start again (simulator seed 621). A torn tail's truncation
                // below syncs the same way.
                disk.sync_file(&name).map_err(io)?;
                return Ok(Some(epoch));
            }
            Next::Torn { reason } if last => {
                tracing::warn!(file = %path.display(), offset, reason, "truncating torn tail of the write-ahead log");
                disk.truncate(&name, offset).map_err(io)?;
                stats.torn = Some((name.clone(), offset, reason));
                return Ok(Some(epoch));
            }
            Next::Torn { reason } => {
                return Err(corrupt(offset, format!("{reason} in a segment that is not the last")));
            }
            Next::Corrupt { reason } => return Err(corrupt(offset, reason)),
        };
        stats.records += 1;
        match WalRecord::decode(&payload).map_err(|r| corrupt(offset, r))? {
            WalRecord::Entry { partition, key, entry } => {
                if partitioner.partition_of(&key).0 != partition {
                    return Err(corrupt(
                        offset,
                        format!("key logged under partition {partition} does not belong there"),
                    ));
                }
                stats.max_timestamp = stats.max_timestamp.max(entry.version.newest_ts());
                shards[partition as usize].apply(&key, entry, now_ms);
            }
            WalRecord::Truncate { epoch: e } => {
                epoch = epoch.merge(e);
                for shard in shards.iter_mut() {
                    shard.truncate(e);
                }
            }
            WalRecord::Hint { target, partition, key, entry } => {
                stats.max_timestamp = stats.max_timestamp.max(entry.version.newest_ts());
                merge_hint(hints, &target, partition, key, entry);
            }
            WalRecord::HintDelivered { target, partition, key, version } => {
                remove_hint(hints, &target, partition, &key, version);
            }
            WalRecord::DropPartition { partition } => {
                let shard = shards
                    .get_mut(partition as usize)
                    .ok_or_else(|| corrupt(offset, format!("dropped partition {partition} does not exist")))?;
                shard.drop_all();
            }
        }
    }
}
