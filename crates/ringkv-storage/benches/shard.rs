//! Shard operations at 1M keys with 100-byte values.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ringkv_core::{Entry, NodeTag, Timestamp, Version};
use ringkv_storage::Shard;

const KEYS: u64 = 1_000_000;

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"key:000000000000";
    let digits = format!("{i:012}");
    k[4..].copy_from_slice(digits.as_bytes());
    k
}

fn entry(ts: u64) -> Entry {
    Entry::value(Version::new(Timestamp::new(ts, 0), NodeTag(1)), Bytes::from(vec![b'v'; 100]), None)
}

fn populated() -> Shard {
    let mut shard = Shard::new(1024);
    for i in 0..KEYS {
        shard.apply(&key(i), entry(1), 0);
    }
    shard
}

fn bench(c: &mut Criterion) {
    let mut shard = populated();
    let mut rng = ringkv_core::SplitMix64::new(7);
    c.bench_function("shard get (1M keys, hit)", |b| {
        b.iter(|| black_box(shard.get(&key(rng.below(KEYS)), 0)));
    });
    c.bench_function("shard get (1M keys, miss)", |b| {
        b.iter(|| black_box(shard.get(b"absent-key-00000", 0)));
    });
    let mut ts = 2;
    c.bench_function("shard put overwrite (1M keys)", |b| {
        b.iter_batched(
            || {
                ts += 1;
                (key(rng.below(KEYS)), entry(ts))
            },
            |(k, e)| black_box(shard.apply(&k, e, 0)),
            BatchSize::SmallInput,
        );
    });
    // The node's layout: the same 1M keys spread over 256 partitions.
    let partitioner = ringkv_core::Partitioner::new(256);
    let mut shards: Vec<Shard> = (0..256).map(|_| Shard::new(1024)).collect();
    for i in 0..KEYS {
        let k = key(i);
        shards[partitioner.partition_of(&k).0 as usize].apply(&k, entry(1), 0);
    }
    c.bench_function("256 shards get (1M keys, hit)", |b| {
        b.iter(|| {
            let k = key(rng.below(KEYS));
            black_box(shards[partitioner.partition_of(&k).0 as usize].get(&k, 0))
        });
    });
    drop(shards);
    let mut next = KEYS;
    c.bench_function("shard put insert (1M+ keys)", |b| {
        b.iter_batched(
            || {
                next += 1;
                (key(next), entry(1))
            },
            |(k, e)| black_box(shard.apply(&k, e, 0)),
            BatchSize::SmallInput,
        );
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
