//! Model-based test of the storage engine: random sequences of operations,
//! clock jumps, sweeps, snapshots, clean restarts and crashes (unsynced bytes
//! thrown away) run against both the engine and a `BTreeMap`, and every key
//! must read the same from both after every step.
//!
//! The engine here is assembled from the crate's parts the same way the node
//! assembles it (stamp with the HLC, apply to the shard, append to the log and
//! wait for durability), with `fsync = always`, which promises that nothing
//! acknowledged is lost by a crash.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use ringkv_core::{Clock, Entry, Epoch, Hlc, ManualClock, NodeTag, Partitioner, Version};
use ringkv_storage::{
    FsyncPolicy, Horizon, MemDisk, RecoveryConfig, Shard, SnapshotWriter, Wal, WalConfig, WalRecord, compact, recover,
};

const KEYS: u8 = 6;
const PARTITIONS: u16 = 3;
const GRACE_MS: u64 = 5_000;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    PutTtl(u8, u8, u64),
    Delete(u8),
    Expire(u8, u64),
    Persist(u8),
    Clear,
    DropPartition(u16),
    Advance(u64),
    Sweep(usize),
    Snapshot,
    Restart,
    Crash,
}

#[derive(Debug, Clone, Default)]
struct Model {
    now: u64,
    data: BTreeMap<u8, (u8, Option<u64>)>,
}

impl Model {
    fn live(&self, k: u8) -> Option<(u8, Option<u64>)> {
        self.data.get(&k).copied().filter(|(_, exp)| exp.is_none_or(|e| e > self.now))
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model { now: 1_000_000, data: BTreeMap::new() }).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        let key = 0..KEYS;
        let ttl = 1u64..3_000;
        prop_oneof![
            6 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            4 => (key.clone(), any::<u8>(), ttl.clone()).prop_map(|(k, v, t)| Op::PutTtl(k, v, t)),
            3 => key.clone().prop_map(Op::Delete),
            2 => (key.clone(), ttl).prop_map(|(k, t)| Op::Expire(k, t)),
            2 => key.prop_map(Op::Persist),
            1 => Just(Op::Clear),
            1 => (0..PARTITIONS).prop_map(Op::DropPartition),
            4 => prop_oneof![0u64..10, 500u64..4_000, 6_000u64..8_000].prop_map(Op::Advance),
            2 => (1usize..5).prop_map(Op::Sweep),
            1 => Just(Op::Snapshot),
            1 => Just(Op::Restart),
            2 => Just(Op::Crash),
        ]
        .boxed()
    }

    fn apply(mut m: Model, op: &Op) -> Model {
        match *op {
            Op::Put(k, v) => {
                m.data.insert(k, (v, None));
            }
            Op::PutTtl(k, v, t) => {
                m.data.insert(k, (v, Some(m.now + t)));
            }
            Op::Delete(k) => {
                m.data.remove(&k);
            }
            Op::Expire(k, t) => {
                if let Some((v, _)) = m.live(k) {
                    m.data.insert(k, (v, Some(m.now + t)));
                }
            }
            Op::Persist(k) => {
                if let Some((v, Some(_))) = m.live(k) {
                    m.data.insert(k, (v, None));
                }
            }
            Op::Clear => m.data.clear(),
            Op::DropPartition(p) => {
                let partitioner = Partitioner::new(PARTITIONS);
                m.data.retain(|k, _| partitioner.partition_of(&[*k]).0 != p);
            }
            Op::Advance(ms) => m.now += ms,
            Op::Sweep(_) | Op::Snapshot | Op::Restart | Op::Crash => {}
        }
        m.data.retain(|_, (_, exp)| exp.is_none_or(|e| e > m.now));
        m
    }
}

struct Engine {
    rt: tokio::runtime::Runtime,
    disk: MemDisk,
    clock: Arc<ManualClock>,
    hlc: Hlc,
    shards: Vec<Shard>,
    wal: Wal,
    partitioner: Partitioner,
}

fn recovery_config() -> RecoveryConfig {
    RecoveryConfig { node_id: "model".into(), partitions: PARTITIONS, digest_leaves: 16 }
}

fn wal_config() -> WalConfig {
    // Tiny segments so that rotation and multi-segment replay are exercised.
    WalConfig { fsync: FsyncPolicy::Always, segment_bytes: 256, queue_bytes: 1 << 20 }
}

impl Engine {
    fn open(disk: MemDisk, clock: Arc<ManualClock>) -> Engine {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let recovered = recover(&disk, &recovery_config(), clock.now_ms()).expect("recovery");
        let hlc = Hlc::new(u64::MAX);
        hlc.observe(recovered.max_timestamp, clock.now_ms()).unwrap();
        let wal = Wal::start(Arc::new(disk.clone()), recovered.next_segment, wal_config()).unwrap();
        Engine { rt, disk, clock, hlc, shards: recovered.shards, wal, partitioner: Partitioner::new(PARTITIONS) }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn version(&self) -> Version {
        Version::new(self.hlc.now(self.now()), NodeTag(7))
    }

    fn write(&mut self, k: u8, entry: Entry) {
        let p = self.partitioner.partition_of(&[k]);
        let now = self.now();
        self.shards[p.0 as usize].apply(&[k], entry.clone(), now);
        let frames = WalRecord::Entry { partition: p.0, key: Bytes::copy_from_slice(&[k]), entry }.encode().unwrap();
        self.rt.block_on(self.wal.append(frames)).unwrap();
    }

    fn read(&self, k: u8) -> Option<Entry> {
        let p = self.partitioner.partition_of(&[k]);
        let shard = &self.shards[p.0 as usize];
        shard.get(&[k], self.now())?;
        shard.entry(&[k])
    }

    fn snapshot(&mut self) {
        let covers = self.rt.block_on(self.wal.rotate()).unwrap();
        let writer = SnapshotWriter::start(Arc::new(self.disk.clone()), covers).unwrap();
        let epoch = self.shards.iter().map(Shard::epoch).max().unwrap_or(Epoch::NONE);
        for (p, shard) in self.shards.iter().enumerate() {
            let mut after: Option<Bytes> = None;
            loop {
                let chunk = shard.chunk_after(after.as_deref(), 2);
                let Some((last, _)) = chunk.last() else { break };
                after = Some(last.clone());
                self.rt.block_on(writer.add(p as u16, chunk)).unwrap();
            }
        }
        self.rt.block_on(writer.finish(epoch)).unwrap();
        compact(&self.disk, covers).unwrap();
    }
}

struct StorageTest;

impl StateMachineTest for StorageTest {
    type SystemUnderTest = Engine;
    type Reference = Reference;

    fn init_test(model: &Model) -> Engine {
        Engine::open(MemDisk::new(), Arc::new(ManualClock::new(model.now)))
    }

    fn apply(mut e: Engine, _model: &Model, op: Op) -> Engine {
        match op {
            Op::Put(k, v) => {
                let version = e.version();
                e.write(k, Entry::value(version, Bytes::from(vec![v]), None));
            }
            Op::PutTtl(k, v, t) => {
                let (version, exp) = (e.version(), e.now() + t);
                e.write(k, Entry::value(version, Bytes::from(vec![v]), Some(exp)));
            }
            Op::Delete(k) => {
                let version = e.version();
                e.write(k, Entry::tombstone(version));
            }
            Op::Expire(k, t) => {
                if let Some(cur) = e.read(k) {
                    let (version, exp) = (e.version(), e.now() + t);
                    e.write(k, Entry { version, expires_at: Some(exp), ..cur });
                }
            }
            Op::Persist(k) => {
                if let Some(cur) = e.read(k).filter(|c| c.expires_at.is_some()) {
                    let version = e.version();
                    e.write(k, Entry { version, expires_at: None, ..cur });
                }
            }
            Op::Clear => {
                let epoch = Epoch(e.hlc.now(e.now()));
                for shard in &mut e.shards {
                    shard.truncate(epoch);
                }
                let frames = WalRecord::Truncate { epoch }.encode().unwrap();
                e.rt.block_on(e.wal.append(frames)).unwrap();
            }
            Op::DropPartition(p) => {
                e.shards[p as usize].drop_all();
                let frames = WalRecord::DropPartition { partition: p }.encode().unwrap();
                e.rt.block_on(e.wal.append(frames)).unwrap();
            }
            Op::Advance(ms) => e.clock.advance_ms(ms),
            Op::Sweep(budget) => {
                let now = e.now();
                for shard in &mut e.shards {
                    shard.sweep(now, Horizon::at(now.saturating_sub(GRACE_MS)), budget);
                }
            }
            Op::Snapshot => e.snapshot(),
            Op::Restart => {
                e.rt.block_on(e.wal.close()).unwrap();
                let (disk, clock) = (e.disk.clone(), e.clock.clone());
                drop(e);
                return Engine::open(disk, clock);
            }
            Op::Crash => {
                let (disk, clock) = (e.disk.clone(), e.clock.clone());
                drop(e);
                disk.crash();
                return Engine::open(disk, clock);
            }
        }
        e
    }

    fn check_invariants(e: &Engine, model: &Model) {
        for k in 0..KEYS {
            let got = e.read(k).map(|entry| (entry.value.unwrap()[0], entry.expires_at));
            assert_eq!(got, model.live(k), "key {k} at {}", model.now);
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn storage_matches_model(sequential 1..80 => StorageTest);
}
