//! The seed corpus: small valid inputs for every target, made by the
//! encoders themselves (`cargo run -p ringkv-fuzz --bin ringkv-fuzz-seeds`
//! writes them to `fuzz/corpus/<target>/seed-*`). libFuzzer mutates from
//! these, so it starts past the checksums, magic numbers and tags that
//! random bytes would almost never get through.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ringkv_core::scan::Listed;
use ringkv_core::update::{Answer, Expiry, Update, UpdateError, When};
use ringkv_core::{Consistency, Deadline, Entry, Epoch, KeyTtl, KvError, NodeTag, Partitioner, Timestamp, Version};
use ringkv_net::wire::{self, MemberInfo, MemberStatus, Members, ReplicaRequest, Reply, Request, Response};
use ringkv_storage::{Disk, FsyncPolicy, MemDisk, SnapRecord, SnapshotWriter, Wal, WalConfig, WalRecord};

use crate::storage::{NOW_MS, recovery_config};

/// One seed: the target, a file name, the bytes.
pub type Seed = (&'static str, String, Vec<u8>);

pub fn seeds() -> Vec<Seed> {
    let mut all = Vec::new();
    all.extend(wire_seeds());
    all.extend(gossip_seeds());
    all.extend(storage_seeds());
    all.extend(config_seeds());
    all.extend(cert_seeds());
    all.extend(resp_seeds());
    all
}

fn ts(i: u64) -> Timestamp {
    Timestamp::new(NOW_MS - 10_000 + i * 1_000, i as u16)
}

fn version(i: u64) -> Version {
    Version::new(ts(i), NodeTag(i))
}

fn value(i: u64, expires_at: Option<u64>) -> Entry {
    Entry::value(version(i), Bytes::from(format!("value-{i}")), expires_at)
}

fn requests() -> Vec<Request> {
    let key = || Bytes::from_static(b"key");
    let put = Request::Put {
        key: key(),
        value: Bytes::from_static(b"value"),
        ttl_ms: Some(1_000),
        consistency: Consistency::All,
    };
    vec![
        Request::Ping,
        put.clone(),
        Request::Get { key: key(), consistency: Consistency::One },
        Request::Delete { key: key(), consistency: Consistency::Quorum },
        Request::Expire { key: key(), ttl_ms: 5, consistency: Consistency::Quorum },
        Request::Clear,
        Request::Status,
        Request::Members,
        Request::Fault { blocked: vec!["127.0.0.1:7401".parse().expect("an address")] },
        Request::Session { seen: ts(1), deadline: Some(Deadline(NOW_MS)), request: Box::new(put) },
        Request::Replica(ReplicaRequest::Apply {
            partition: 3,
            key: key(),
            entry: value(2, Some(NOW_MS)),
            condition: Some(version(1).touched(version(3))),
            hint_for: Some("node-2".into()),
        }),
        Request::Replica(ReplicaRequest::Batch(vec![
            ReplicaRequest::Read { partition: 1, key: key() },
            ReplicaRequest::Deliver { entries: vec![(0, key(), Entry::tombstone(version(4)))], hinted: false },
            ReplicaRequest::Digest { partition: 2, branches: Some(vec![1, 5]), root: Some(99) },
            ReplicaRequest::Versions { partition: 2, leaves: vec![0, 3], after: Some(key()) },
            ReplicaRequest::Stream { partition: 0, after: None, limit: 100 },
            ReplicaRequest::Clock,
        ])),
        Request::Replica(ReplicaRequest::Update {
            partition: 3,
            key: key(),
            update: Update::Set { value: key(), expiry: Expiry::At(NOW_MS), when: When::Missing, get: true },
        }),
        Request::Replica(ReplicaRequest::Update {
            partition: 3,
            key: key(),
            update: Update::DeleteIf { value: key(), expires_at: Some(NOW_MS) },
        }),
        Request::Replica(ReplicaRequest::Keys { partition: 7, from: 1 << 40, limit: 10 }),
    ]
}

fn responses() -> Vec<Response> {
    let member = |i: u16| MemberInfo {
        node_id: format!("node-{i}"),
        addr: format!("127.0.0.1:{}", 7400 + i).parse().expect("an address"),
        status: MemberStatus::Serving,
        live: true,
        in_ring: true,
    };
    vec![
        Ok(Reply::Pong { node_id: "node-1".into(), version: "0.1.0".into() }),
        Ok(Reply::Value(Some(Bytes::from_static(b"value")))),
        Ok(Reply::Ttl(KeyTtl::Expires(std::time::Duration::from_millis(1_500)))),
        Ok(Reply::Entries(vec![(Bytes::from_static(b"k"), value(1, None))])),
        Ok(Reply::Members(Members {
            cluster_id: "ringkv".into(),
            partitions: 256,
            replication: 3,
            vnodes: 64,
            members: vec![member(1), member(2)],
        })),
        Ok(Reply::Session {
            clock: ts(2),
            reply: Box::new(Reply::Batch(vec![
                Ok(Reply::Applied { was_live: true }),
                Ok(Reply::Deferred),
                Err(KvError::Busy { what: "partition-3".into(), capacity: 1024 }),
            ])),
        }),
        Err(KvError::Protocol("malformed frame".into())),
        Ok(Reply::Updated(Answer::Integer(6))),
        Ok(Reply::Updated(Answer::Entry(Some((Bytes::from_static(b"v"), Some(NOW_MS)))))),
        Ok(Reply::Keys {
            keys: vec![Listed { key: Bytes::from_static(b"k"), version: version(2), live: true }],
            full: true,
        }),
        Err(KvError::Update(UpdateError::NotInteger)),
    ]
}

fn wire_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (i, request) in requests().iter().enumerate() {
        let frame = wire::encode(request).expect("encode a request");
        for peer in [0u8, 1] {
            seeds.push((
                "wire_frame",
                format!("seed-{i:02}-{}-{peer}", request.kind()),
                [&[peer][..], &frame].concat(),
            ));
        }
    }
    for (i, response) in responses().iter().enumerate() {
        let frame = wire::encode(response).expect("encode a response");
        seeds.push(("wire_reply", format!("seed-{i:02}"), [&[0u8][..], &frame].concat()));
    }
    seeds
}

/// An `op` of [`crate::gossip::gossip_open`] that seals a fragment here.
fn sealed_op(key: u8, message: u8, index: u8, count: u8, body: &[u8]) -> Vec<u8> {
    let mut op = vec![1 | key << 1, message, index, count, 0];
    op.extend_from_slice(&(body.len() as u16).to_le_bytes());
    op.extend_from_slice(body);
    op
}

fn gossip_seeds() -> Vec<Seed> {
    let one = sealed_op(0, 1, 0, 1, b"a whole chitchat message");
    let two = [sealed_op(1, 2, 1, 2, b"second half"), sealed_op(0, 2, 0, 2, b"first half, ")].concat();
    // A datagram as `gossip::seal` writes it, arriving as bytes.
    let keyring = ringkv_net::gossip::Keyring::parse(&crate::gossip::keyring_file(), Path::new("gossip.key"))
        .expect("the test keyring");
    let sealed =
        ringkv_net::gossip::seal(&keyring, crate::gossip::CLUSTER, 9, b"syn", &ring::rand::SystemRandom::new())
            .expect("seal");
    let mut raw = vec![0u8];
    raw.extend_from_slice(&(sealed[0].len() as u16).to_le_bytes());
    raw.extend_from_slice(&sealed[0]);
    vec![
        ("gossip_open", "seed-one".into(), one),
        ("gossip_open", "seed-two-fragments".into(), two),
        ("gossip_open", "seed-raw".into(), raw),
        ("gossip_keyring", "seed-two-keys".into(), crate::gossip::keyring_file().into_bytes()),
    ]
}

fn wal_records() -> Vec<WalRecord> {
    let partitioner = Partitioner::new(recovery_config().partitions);
    let key = |i: u64| Bytes::from(format!("key-{i}"));
    let part = |i: u64| partitioner.partition_of(&key(i)).0;
    vec![
        WalRecord::Entry { partition: part(1), key: key(1), entry: value(1, None) },
        WalRecord::Entry { partition: part(2), key: key(2), entry: value(2, Some(NOW_MS + 60_000)) },
        WalRecord::Entry { partition: part(3), key: key(3), entry: value(3, Some(NOW_MS - 60_000)) },
        WalRecord::Entry { partition: part(1), key: key(1), entry: Entry::tombstone(version(4).touched(version(5))) },
        WalRecord::Hint { target: "node-2".into(), partition: part(6), key: key(6), entry: value(6, None) },
        WalRecord::HintDelivered { target: "node-2".into(), partition: part(6), key: key(6), version: version(6) },
        WalRecord::Truncate { epoch: Epoch(ts(2)) },
        WalRecord::DropPartition { partition: 3 },
    ]
}

fn snap_records() -> Vec<SnapRecord> {
    let partitioner = Partitioner::new(recovery_config().partitions);
    let key = Bytes::from_static(b"snap-key");
    vec![
        SnapRecord::Chunk {
            partition: partitioner.partition_of(&key).0,
            entries: vec![(key.clone(), value(7, None)), (Bytes::from_static(b"dead"), Entry::tombstone(version(8)))],
        },
        SnapRecord::Hints { target: "node-3".into(), entries: vec![(1, key, value(9, Some(NOW_MS)))] },
        SnapRecord::End { entries: 2, epoch: Epoch(ts(1)) },
    ]
}

/// A format-1 log record as the previous build wrote it (`legacy.rs`): a
/// version was a timestamp and a node tag, without a touch.
fn legacy_wal_payload() -> Vec<u8> {
    // Variant 0 (`Entry`), partition 1, key "k", version (7, 9), value
    // "v", expiry 11, all postcard varints.
    vec![1, 0, 1, 1, b'k', 7, 9, 1, 1, b'v', 1, 11]
}

fn storage_seeds() -> Vec<Seed> {
    const FRAME_HEADER: usize = 12;
    let mut seeds = Vec::new();
    for (i, record) in wal_records().iter().enumerate() {
        let frame = record.encode().expect("encode a log record");
        seeds.push(("wal_record", format!("seed-{i:02}"), frame[FRAME_HEADER..].to_vec()));
    }
    seeds.push(("wal_record", "seed-format-1".into(), legacy_wal_payload()));
    for (i, record) in snap_records().iter().enumerate() {
        let frame = record.encode().expect("encode a snapshot record");
        seeds.push(("snapshot_record", format!("seed-{i:02}"), frame[FRAME_HEADER..].to_vec()));
    }
    seeds.push(("recovery", "seed-log-only".into(), data_dir(false)));
    seeds.push(("recovery", "seed-snapshot-and-log".into(), data_dir(true)));
    seeds
}

/// A data directory written by the real log writer and snapshot writer
/// (and recovery, which writes the meta file), in the input format of
/// [`crate::storage::recovery`].
fn data_dir(with_snapshot: bool) -> Vec<u8> {
    let disk = Arc::new(MemDisk::new());
    let config = recovery_config();
    ringkv_storage::recover(&*disk, &config, NOW_MS).expect("recover an empty directory");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async {
        let first = if with_snapshot { 2 } else { 1 };
        if with_snapshot {
            let writer = SnapshotWriter::start(disk.clone(), 1).expect("start a snapshot");
            for record in snap_records() {
                match record {
                    SnapRecord::Chunk { partition, entries } => writer.add(partition, entries).await,
                    SnapRecord::Hints { target, entries } => writer.add_hints(target, entries).await,
                    SnapRecord::End { .. } => Ok(()),
                }
                .expect("write a snapshot chunk");
            }
            writer.finish(Epoch(ts(1))).await.expect("finish the snapshot");
        }
        let wal_config = WalConfig { fsync: FsyncPolicy::Always, segment_bytes: 300, queue_bytes: 1 << 20 };
        let wal = Wal::start(disk.clone(), first, wal_config).expect("start the log");
        for record in wal_records() {
            wal.append(record.encode().expect("encode")).await.expect("append");
        }
        wal.close().await.expect("close the log");
    });
    let mut out = Vec::new();
    for name in disk.list().expect("list") {
        let kind: u8 = match &name {
            n if n.starts_with("wal-") => 0,
            n if n.ends_with(".snap") => 1,
            n if n == "ringkv.meta" => 3,
            other => panic!("unexpected file {other}"),
        };
        let digits: String = name.chars().filter(char::is_ascii_digit).collect();
        let seq: u8 = digits.parse::<u64>().map_or(0, |n| n.try_into().expect("a small sequence number"));
        assert_eq!(crate::storage::file_name(kind, seq), name);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut disk.open_read(&name).expect("open"), &mut bytes).expect("read");
        out.extend_from_slice(&[kind, seq]);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn config_seeds() -> Vec<Seed> {
    let documented =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/node.toml")).expect("config/node.toml");
    let small =
        b"node_id = \"n2\"\nlisten = \"127.0.0.1:7401\"\ngossip = \"127.0.0.1:7501\"\nseeds = [\"127.0.0.1:7500\"]\n\
                  partitions = 64\nreplication = 3\ngossip_interval = \"200ms\"\ndead_node_grace = \"1m\"\n\
                  phi_threshold = 8.5\n[tls]\ncerts_dir = \"certs\"\n";
    vec![("config", "seed-node-toml".into(), documented), ("config", "seed-small".into(), small.to_vec())]
}

fn cert_seeds() -> Vec<Seed> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    ringkv_net::certs::init(dir.path(), &[], &[]).expect("certs init");
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("a written certificate file");
    let join = |cert: &str, key: &str| [read("ca.crt"), vec![0], read(cert), vec![0], read(key)].concat();
    vec![
        ("certs", "seed-node".into(), join("node.crt", "node.key")),
        ("certs", "seed-client".into(), join("client.crt", "client.key")),
    ]
}

/// Commands as client libraries send them (arrays of bulk strings, the
/// first byte choosing where the stream is cut), inline ones as people type
/// them, and a pipeline of both.
fn resp_seeds() -> Vec<Seed> {
    let mut array = vec![100];
    let mut encoded = bytes::BytesMut::new();
    let set: Vec<Bytes> = ["SET", "key:1", "value", "EX", "60"].into_iter().map(Bytes::from).collect();
    ringkv_resp::encode_command(&set, &mut encoded);
    array.extend_from_slice(&encoded);
    let inline = b"\x80SET \"a key\" 'it\\'s' \"\\x41\\n\"\r\nPING\r\n".to_vec();
    let mut pipeline = vec![7];
    pipeline.extend_from_slice(&encoded);
    pipeline.extend_from_slice(b"GET key:1\r\n*0\r\n*1\r\n$4\r\nPING\r\n");
    vec![
        ("resp_command", "seed-array".into(), array),
        ("resp_command", "seed-inline".into(), inline),
        ("resp_command", "seed-pipeline".into(), pipeline),
    ]
}
