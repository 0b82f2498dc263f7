//! Log throughput per fsync policy: 100-byte values appended by 64
//! concurrent writers (as partition actors do), each waiting for its append
//! to be durable per the policy, into a real file on this machine's disk.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringkv_core::{Entry, NodeTag, Timestamp, Version};
use ringkv_storage::{FsDisk, FsyncPolicy, Wal, WalConfig, WalRecord};

const WRITERS: usize = 64;
const PER_WRITER: usize = 50;

fn record(i: usize) -> Vec<u8> {
    let entry = Entry::value(Version::new(Timestamp::new(1, 0), NodeTag(1)), Bytes::from(vec![b'v'; 100]), None);
    WalRecord::Entry { partition: 0, key: Bytes::from(format!("key:{i:012}")), entry }.encode().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let mut group = c.benchmark_group("wal append");
    group.throughput(Throughput::Elements((WRITERS * PER_WRITER) as u64));
    group.sample_size(10);
    for policy in [FsyncPolicy::Always, FsyncPolicy::Everysec, FsyncPolicy::Never] {
        // Benchmarks write real files next to the build, not into tmpfs.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let wal = Wal::start(
            Arc::new(FsDisk::open(dir.path()).unwrap()),
            1,
            WalConfig { fsync: policy, segment_bytes: 1 << 30, queue_bytes: 64 << 20 },
        )
        .unwrap();
        group.bench_function(format!("{policy:?}").to_lowercase(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..WRITERS)
                        .map(|w| {
                            let wal = wal.clone();
                            tokio::spawn(async move {
                                for i in 0..PER_WRITER {
                                    wal.append(record(w * PER_WRITER + i)).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            });
        });
        rt.block_on(wal.close()).unwrap();
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
