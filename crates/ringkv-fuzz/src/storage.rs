//! Log records, snapshot records and recovery of a whole data directory.

use std::sync::Arc;

use ringkv_storage::{Disk, MemDisk, RecoveryConfig, SnapRecord, WalRecord, recover};

use crate::Input;

/// The bytes a record frame adds before its payload (`frame.rs`).
const FRAME_HEADER: usize = 12;

/// A log record payload (format byte, then postcard; format 1 or 2), as
/// recovery decodes it after the frame's checksums passed. A record that
/// decodes encodes (as format 2) to a frame whose payload decodes to it.
pub fn wal_record(data: &[u8]) {
    let Ok(record) = WalRecord::decode(data) else { return };
    let frame = record.encode().expect("a decoded log record encodes");
    assert_eq!(WalRecord::decode(&frame[FRAME_HEADER..]).as_ref(), Ok(&record), "log record round trip");
}

/// A snapshot record payload, likewise.
pub fn snapshot_record(data: &[u8]) {
    let Ok(record) = SnapRecord::decode(data) else { return };
    let frame = record.encode().expect("a decoded snapshot record encodes");
    assert_eq!(SnapRecord::decode(&frame[FRAME_HEADER..]).as_ref(), Ok(&record), "snapshot record round trip");
}

/// The recovery configuration of the fuzzed node: few partitions, so that
/// partition numbers in records are often in range and often not.
pub fn recovery_config() -> RecoveryConfig {
    RecoveryConfig { node_id: "fuzz".into(), partitions: 4, digest_leaves: 16 }
}

/// The clock recovery reads: in the middle of the range of timestamps
/// seeds use, so that some recovered values are expired and some not.
pub const NOW_MS: u64 = 1_700_000_000_000;

/// Names of the files a fuzz input can create.
pub fn file_name(kind: u8, seq: u8) -> String {
    match kind % 4 {
        0 => format!("wal-{seq:020}.log"),
        1 => format!("snap-{seq:020}.snap"),
        2 => format!("snap-{seq:020}.tmp"),
        _ => "ringkv.meta".into(),
    }
}

/// A data directory, as files: `(kind: u8 | seq: u8 | len: u32 | bytes)*`,
/// at most eight (see [`file_name`]; a length past the end takes the
/// rest). Recovery of it ends, with a state or an error; a directory that
/// recovered once (torn tails truncated, leftovers removed) recovers again
/// to the same state.
pub fn recovery(data: &[u8]) {
    let disk = MemDisk::new();
    let mut input = Input::new(data);
    for _ in 0..8 {
        if input.is_empty() {
            break;
        }
        let (kind, seq) = (input.u8(), input.u8());
        let len = input.u32() as usize;
        let bytes = input.bytes(len);
        let name = file_name(kind, seq);
        let mut file = disk.create(&name).expect("create in memory");
        file.write_all(bytes).expect("write in memory");
        file.sync().expect("sync in memory");
    }
    let config = recovery_config();
    let Ok(first) = recover(&disk, &config, NOW_MS) else { return };
    assert_eq!(first.shards.len(), usize::from(config.partitions));
    assert!(first.max_timestamp >= first.epoch.0);
    let disk: Arc<dyn Disk> = Arc::new(disk);
    // The next segment must come after every log segment and snapshot left.
    // (It is not compared between the two recoveries: removing a partial
    // last segment legitimately frees its number.)
    for name in disk.list().expect("list in memory") {
        let seq = name.strip_prefix("wal-").or_else(|| name.strip_prefix("snap-")).and_then(|n| n.split('.').next());
        if let Some(seq) = seq.and_then(|n| n.parse::<u64>().ok()) {
            assert!(seq < first.next_segment, "next segment {} with {name} on disk", first.next_segment);
        }
    }
    let second = recover(&*disk, &config, NOW_MS).unwrap_or_else(|e| panic!("a recovered directory fails again: {e}"));
    let state = |r: &ringkv_storage::Recovered| {
        let shards: Vec<_> = r.shards.iter().map(|s| s.stats()).collect();
        (shards, r.hints.clone(), r.epoch, r.max_timestamp)
    };
    assert_eq!(state(&first), state(&second), "recovering twice gave another state");
}
