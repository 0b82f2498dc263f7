//! Recovery against real files (and the simulated disk where a test needs a
//! restart after a failed write): torn tails, corruption, foreign data
//! directories.

#![allow(clippy::disallowed_methods, reason = "tests damage real files on purpose")]

use std::sync::Arc;

use bytes::Bytes;
use ringkv_core::{Entry, NodeTag, Partitioner, Timestamp, Version};
use ringkv_storage::{FsDisk, FsyncPolicy, MemDisk, RecoveryConfig, StorageError, Wal, WalConfig, WalRecord, recover};

const P: u16 = 8;

fn config() -> RecoveryConfig {
    RecoveryConfig { node_id: "n1".into(), partitions: P, digest_leaves: 16 }
}

fn record(i: u32) -> Vec<u8> {
    let key = Bytes::from(format!("key-{i}"));
    let entry = Entry::value(
        Version::new(Timestamp::new(1_000 + u64::from(i), 0), NodeTag(1)),
        Bytes::from(vec![7u8; 100]),
        None,
    );
    WalRecord::Entry { partition: Partitioner::new(P).partition_of(&key).0, key, entry }.encode().unwrap()
}

/// Writes `n` records into a fresh data directory and returns it with the
/// segment's path.
fn write_log(n: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let disk = FsDisk::open(dir.path()).unwrap();
    let recovered = recover(&disk, &config(), 0).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let wal = Wal::start(
        Arc::new(disk),
        recovered.next_segment,
        WalConfig { fsync: FsyncPolicy::Always, segment_bytes: 1 << 30, queue_bytes: 1 << 20 },
    )
    .unwrap();
    rt.block_on(async {
        for i in 0..n {
            wal.append(record(i)).await.unwrap();
        }
        wal.close().await.unwrap();
    });
    let segment = dir.path().join("wal-00000000000000000001.log");
    assert!(segment.exists());
    (dir, segment)
}

fn live_keys(recovered: &ringkv_storage::Recovered) -> usize {
    recovered.shards.iter().map(|s| s.live_keys(0).count()).sum()
}

#[test]
fn clean_log_recovers_everything() {
    let (dir, _) = write_log(100);
    let recovered = recover(&FsDisk::open(dir.path()).unwrap(), &config(), 0).unwrap();
    assert_eq!(live_keys(&recovered), 100);
    assert_eq!(recovered.stats.records, 100);
    assert_eq!(recovered.stats.torn, None);
    assert_eq!(recovered.next_segment, 2);
    assert_eq!(recovered.max_timestamp, Timestamp::new(1_099, 0));
}

#[test]
fn truncated_last_record_is_dropped_and_the_file_repaired() {
    let (dir, segment) = write_log(100);
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 10).unwrap();
    let recovered = recover(&FsDisk::open(dir.path()).unwrap(), &config(), 0).unwrap();
    assert_eq!(live_keys(&recovered), 99);
    let (file, offset, _) = recovered.stats.torn.clone().expect("torn tail reported");
    assert_eq!(file, "wal-00000000000000000001.log");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), offset, "tail cut at the last whole record");
    // A second recovery finds a clean log.
    let again = recover(&FsDisk::open(dir.path()).unwrap(), &config(), 0).unwrap();
    assert_eq!(again.stats.torn, None);
    assert_eq!(live_keys(&again), 99);
}

#[test]
fn flipped_byte_in_the_middle_is_an_error_naming_file_and_offset() {
    let (dir, segment) = write_log(100);
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let err = recover(&FsDisk::open(dir.path()).unwrap(), &config(), 0).err().expect("corruption must stop recovery");
    match &err {
        StorageError::Corrupt { path, offset, .. } => {
            assert_eq!(path, &segment);
            assert!(*offset <= middle as u64 && middle as u64 - *offset < 200, "offset {offset} near {middle}");
        }
        other => panic!("unexpected error {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("wal-00000000000000000001.log") && message.contains("offset"), "{message}");
}

#[test]
fn a_data_directory_of_another_node_or_partition_count_is_refused() {
    let (dir, _) = write_log(1);
    let disk = FsDisk::open(dir.path()).unwrap();
    let other_node = RecoveryConfig { node_id: "n2".into(), ..config() };
    assert!(matches!(recover(&disk, &other_node, 0), Err(StorageError::Mismatch { what: "node", .. })));
    let other_p = RecoveryConfig { partitions: 16, ..config() };
    let err = recover(&disk, &other_p, 0).err().unwrap();
    assert!(err.to_string().contains("partition count"), "{err}");
}

/// A node that stops on a failed write restarts with its unsynced log still
/// in the page cache. Recovery must make what it read durable, or a crash
/// after the restart tears a segment that is no longer the last and the node
/// can never start again (simulator seed 621).
#[test]
fn what_a_restart_after_a_failed_write_recovers_survives_a_later_crash() {
    let disk = MemDisk::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let start = |first, fsync| {
        let config = WalConfig { fsync, segment_bytes: 1 << 30, queue_bytes: 1 << 20 };
        Wal::start(Arc::new(disk.clone()), first, config).unwrap()
    };
    let recovered = recover(&disk, &config(), 0).unwrap();
    let wal = start(recovered.next_segment, FsyncPolicy::Never);
    rt.block_on(async {
        for i in 0..10 {
            wal.append(record(i)).await.unwrap();
        }
        disk.fail(Some(std::io::ErrorKind::Other));
        assert!(wal.append(record(10)).await.is_err(), "the write on the failing disk must fail");
        assert!(wal.close().await.is_err());
    });
    disk.fail(None);

    let recovered = recover(&disk, &config(), 0).unwrap();
    assert_eq!(live_keys(&recovered), 10, "the page cache still holds the ten writes");
    assert_eq!(recovered.next_segment, 2);
    let wal = start(2, FsyncPolicy::Always);
    rt.block_on(async {
        for i in 20..25 {
            wal.append(record(i)).await.unwrap();
        }
        wal.close().await.unwrap();
    });

    disk.crash();
    let recovered = recover(&disk, &config(), 0).expect("the node starts after the crash");
    assert_eq!(live_keys(&recovered), 15);
    assert_eq!(recovered.stats.segments, 2);
}
