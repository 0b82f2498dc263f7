//! Memory per key and recovery time at 1M keys with 100-byte values.
//!
//! ```sh
//! cargo run --release -p ringkv-storage --example footprint [KEYS]
//! ```
//! Memory is the growth of this process's resident set while loading the
//! keys into 256 shards, divided by the key count. Recovery writes the same
//! keys to a log in a temporary directory (next to the build, on disk) and
//! times `recover` reading it back, once from the log alone and once from a
//! snapshot.

#![allow(clippy::disallowed_methods, reason = "a measuring tool run by hand, not node code")]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringkv_core::{Entry, NodeTag, Partitioner, Timestamp, Version};
use ringkv_storage::{
    FsDisk, FsyncPolicy, RecoveryConfig, Shard, SnapshotWriter, Wal, WalConfig, WalRecord, compact, recover,
};

const PARTITIONS: u16 = 256;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 =
        status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn main() {
    let keys: u64 = std::env::args().nth(1).map_or(1_000_000, |s| s.parse().expect("KEYS"));
    let partitioner = Partitioner::new(PARTITIONS);
    let value = Bytes::from(vec![b'v'; 100]);
    let entry = |i: u64| Entry::value(Version::new(Timestamp::new(1_000 + i, 0), NodeTag(1)), value.clone(), None);
    let key = |i: u64| Bytes::from(format!("key:{i:012}"));

    let before = rss_bytes();
    let mut shards: Vec<Shard> = (0..PARTITIONS).map(|_| Shard::new(1024)).collect();
    for i in 0..keys {
        let k = key(i);
        // Each value owns its bytes, as values arriving over the network do.
        let e = Entry { value: Some(Bytes::copy_from_slice(&value)), ..entry(i) };
        shards[partitioner.partition_of(&k).0 as usize].apply(&k, e, 0);
    }
    let grown = rss_bytes() - before;
    println!(
        "memory: {keys} keys (16-byte keys, 100-byte values) add {} MiB RSS = {} bytes/key",
        grown >> 20,
        grown / keys
    );
    drop(shards);

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let disk = Arc::new(FsDisk::open(dir.path()).unwrap());
    let config = RecoveryConfig { node_id: "footprint".into(), partitions: PARTITIONS, digest_leaves: 1024 };
    let fresh = recover(&*disk, &config, 0).unwrap();
    let wal = Wal::start(
        disk.clone(),
        fresh.next_segment,
        WalConfig { fsync: FsyncPolicy::Never, segment_bytes: 64 << 20, queue_bytes: 64 << 20 },
    )
    .unwrap();
    rt.block_on(async {
        let mut batch = Vec::new();
        for i in 0..keys {
            let k = key(i);
            let record = WalRecord::Entry { partition: partitioner.partition_of(&k).0, key: k, entry: entry(i) };
            batch.extend(record.encode().unwrap());
            if batch.len() > 1 << 20 {
                wal.append(std::mem::take(&mut batch)).await.unwrap();
            }
        }
        wal.append(batch).await.unwrap();
        wal.close().await.unwrap();
    });

    let started = Instant::now();
    let recovered = recover(&*disk, &config, 0).unwrap();
    let from_log = started.elapsed();
    let total: usize = recovered.shards.iter().map(|s| s.stats().entries).sum();
    assert_eq!(total as u64, keys);
    println!(
        "recovery from the log: {keys} keys in {:.2} s ({} segments)",
        from_log.as_secs_f64(),
        recovered.stats.segments
    );

    let covers = recovered.next_segment - 1;
    rt.block_on(async {
        let writer = SnapshotWriter::start(disk.clone(), covers).unwrap();
        for (p, shard) in recovered.shards.iter().enumerate() {
            let mut after: Option<Bytes> = None;
            loop {
                let chunk = shard.chunk_after(after.as_deref(), 1024);
                let Some((last, _)) = chunk.last() else { break };
                after = Some(last.clone());
                writer.add(p as u16, chunk).await.unwrap();
            }
        }
        writer.finish(recovered.epoch).await.unwrap();
    });
    compact(&*disk, covers).unwrap();
    drop(recovered);
    let started = Instant::now();
    let again = recover(&*disk, &config, 0).unwrap();
    let from_snapshot = started.elapsed();
    assert_eq!(again.shards.iter().map(|s| s.stats().entries).sum::<usize>() as u64, keys);
    println!("recovery from a snapshot: {keys} keys in {:.2} s", from_snapshot.as_secs_f64());
}
