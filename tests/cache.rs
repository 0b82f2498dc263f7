//! The memory bound with real processes: each eviction policy on one node
//! loaded with four times its `maxmemory`, the process's RSS against the
//! bound ARCHITECTURE.md states, `noeviction`'s refusals (through the
//! client and the CLI's exit code), a restart into a smaller bound, and a
//! cluster whose replicas evict the same keys and keep them evicted across
//! a crash.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Certs, Cluster, NodeProc, converged, node_spec, wait_for};
use ringkv::{Client, KvError, KvStore};

/// ARCHITECTURE.md, *The memory bound*: RSS stays within 1.25 times
/// `maxmemory` plus this fixed base.
const BASE_RSS: u64 = 64 << 20;

const MB: u64 = 1 << 20;

fn rss(node: &NodeProc) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", node.pid().unwrap())).expect("the node's /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A standalone node under a memory bound, and a client of it; the node
/// is killed, and its directories removed, when this is dropped (so keep
/// it whole: destructuring it with `..` drops the directories at once).
struct Bounded {
    certs: Certs,
    _data: tempfile::TempDir,
    node: NodeProc,
    client: Client,
}

fn bounded(maxmemory: &str, policy: &str) -> Bounded {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let node = node_spec("n1", &data.path().join("n1"), certs.path())
        .setting(&format!("maxmemory = \"{maxmemory}\""))
        .setting(&format!("maxmemory_policy = \"{policy}\""))
        .start();
    let client = certs.client(vec![node.addr]);
    Bounded { certs, _data: data, node, client }
}

fn value(key: &str, len: usize) -> Vec<u8> {
    let mut v = format!("{key}:").into_bytes();
    v.resize(len, b'.');
    v
}

/// Puts `keys` (with a time to live where `ttl` says), eight at a time,
/// and returns the errors, by key.
async fn put_all(
    client: &Client,
    keys: &[String],
    len: usize,
    ttl: impl Fn(&str) -> Option<Duration>,
) -> Vec<(String, KvError)> {
    let mut failed = Vec::new();
    for chunk in keys.chunks(8) {
        let mut puts = tokio::task::JoinSet::new();
        for key in chunk {
            let (client, key, value, ttl) = (client.clone(), key.clone(), value(key, len), ttl(key));
            puts.spawn(async move {
                let result = match ttl {
                    Some(ttl) => client.put_with_ttl(key.clone(), value, ttl).await,
                    None => client.put(key.clone(), value).await,
                };
                result.err().map(|e| (key, e))
            });
        }
        failed.extend(puts.join_all().await.into_iter().flatten());
    }
    failed
}

async fn present(client: &Client, keys: &[String], len: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for key in keys {
        if let Some(v) = client.get(key.clone()).await.unwrap() {
            assert_eq!(v, value(key, len), "{key} came back damaged");
            found.insert(key.clone());
        }
    }
    found
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:06}")).collect()
}

async fn memory(client: &Client, node: &NodeProc) -> ringkv_net::wire::MemoryStatus {
    client.status_of(node.addr).await.unwrap().memory
}

/// The node's memory status once it is within `bound`. Writes admitted at
/// the same moment in two partitions can overshoot the bound by a write
/// each, which the background evictor takes back within a sweep interval;
/// a node still over it after 10 s fails the test.
async fn settled(client: &Client, node: &NodeProc, bound: u64) -> ringkv_net::wire::MemoryStatus {
    let addr = node.addr;
    wait_for(&format!("{addr} within {bound} bytes"), Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.status_of(addr).await.ok().map(|s| s.memory).filter(|m| m.used <= bound) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_times_the_bound_stays_within_the_stated_rss() {
    let cache = bounded("32mb", "allkeys-lru");
    let (node, client) = (&cache.node, &cache.client);
    // 128 MiB of 8 KiB values.
    let all = keys("big", 16_384);
    let failed = put_all(client, &all, 8 << 10, |_| None).await;
    assert!(failed.is_empty(), "allkeys-lru refused writes: {:?}", &failed[..failed.len().min(3)]);
    let m = settled(client, node, 32 * MB).await;
    assert!(m.evictions > 10_000, "{m:?}");
    let rss = rss(node);
    assert!(rss <= 32 * MB * 5 / 4 + BASE_RSS, "RSS {} MiB past 1.25 x 32 MiB + {} MiB", rss / MB, BASE_RSS / MB);
    // The newest keys are the ones kept.
    let kept = present(client, &all[all.len() - 500..], 8 << 10).await;
    assert!(kept.len() >= 450, "only {} of the 500 newest keys kept", kept.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_and_lfu_keep_the_keys_in_use() {
    for policy in ["allkeys-lru", "allkeys-lfu"] {
        let cache = bounded("4mb", policy);
        let (node, client) = (&cache.node, &cache.client);
        let hot = keys("hot", 100);
        assert!(put_all(client, &hot, 1_000, |_| None).await.is_empty());
        // About 3,300 keys fit; write four times that, reading the hot
        // keys (several times each, for LFU) between rounds of writes.
        let cold = keys("cold", 13_000);
        for round in cold.chunks(500) {
            for _ in 0..3 {
                assert_eq!(present(client, &hot, 1_000).await.len(), hot.len(), "{policy} evicted a hot key");
            }
            let failed = put_all(client, round, 1_000, |_| None).await;
            assert!(failed.is_empty(), "{policy} refused: {:?}", failed[0]);
        }
        assert_eq!(present(client, &hot, 1_000).await.len(), hot.len(), "{policy} evicted a hot key");
        let m = settled(client, node, 4 * MB).await;
        assert!(m.evictions >= 9_000 && m.refused == 0, "{policy}: {m:?}");
        let kept = present(client, &cold, 1_000).await.len();
        assert!((2_000..4_000).contains(&kept), "{policy} kept {kept} cold keys; about 3,200 fit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_policies_never_evict_keys_without_a_ttl() {
    for policy in ["volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"] {
        let cache = bounded("4mb", policy);
        let (node, client) = (&cache.node, &cache.client);
        // Half the data keeps its keys forever; the rest has TTLs of one
        // to two hours, later keys expiring later.
        let persistent = keys("keep", 1_500);
        assert!(put_all(client, &persistent, 1_000, |_| None).await.is_empty());
        let volatile = keys("ttl", 12_000);
        let ttl = |key: &str| {
            let i: u64 = key[3..].parse().unwrap();
            Some(Duration::from_secs(3_600 + i))
        };
        let failed = put_all(client, &volatile, 1_000, ttl).await;
        assert!(failed.is_empty(), "{policy} refused while keys with a TTL were left: {:?}", failed[0]);
        assert_eq!(present(client, &persistent, 1_000).await.len(), persistent.len(), "{policy}");
        if policy == "volatile-ttl" {
            // The soonest to expire went first: what is left is the tail.
            let kept = present(client, &volatile, 1_000).await;
            let first = volatile.iter().position(|k| kept.contains(k)).unwrap();
            assert!(volatile[first..].iter().filter(|k| kept.contains(*k)).count() >= kept.len() * 99 / 100);
            assert!(first > volatile.len() / 2, "{policy} kept {} from {first}", kept.len());
        }
        // With no key with a TTL left, it behaves as noeviction.
        let more = keys("more", 4_000);
        let failed = put_all(client, &more, 1_000, |_| None).await;
        assert!(!failed.is_empty(), "{policy} never refused");
        assert!(failed.iter().all(|(_, e)| matches!(e, KvError::OutOfMemory { .. })), "{policy}: {:?}", failed[0]);
        assert_eq!(present(client, &persistent, 1_000).await.len(), persistent.len(), "{policy}");
        settled(client, node, 4 * MB + 4 * MB / 8).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noeviction_refuses_with_a_clear_error_and_keeps_everything() {
    let cache = bounded("4mb", "noeviction");
    let (certs, node, client) = (&cache.certs, &cache.node, &cache.client);
    let all = keys("k", 13_000);
    let failed = put_all(client, &all, 1_000, |_| None).await;
    assert!(failed.len() > 8_000, "only {} refused", failed.len());
    let text = failed[0].1.to_string();
    assert!(matches!(failed[0].1, KvError::OutOfMemory { .. }), "{text}");
    assert!(text.contains("maxmemory 4194304") && text.contains("bytes used") && text.contains("noeviction"), "{text}");
    let refused: BTreeSet<&String> = failed.iter().map(|(k, _)| k).collect();
    let acked: Vec<String> = all.iter().filter(|k| !refused.contains(k)).cloned().collect();
    assert_eq!(present(client, &acked, 1_000).await.len(), acked.len(), "an acknowledged key was lost");
    let m = memory(client, node).await;
    assert_eq!((m.evictions, m.refused as usize), (0, failed.len()), "{m:?}");

    // The CLI says the same and exits with 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["put", "one-more", &"x".repeat(10_000), "--certs"])
        .arg(certs.path())
        .args(["--addr", &node.addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("out of memory") && stderr.contains("maxmemory"), "{stderr}");

    // Deletes make room; clear empties the node.
    for key in &acked[..1_000] {
        assert!(client.delete(key.clone()).await.unwrap());
    }
    client.put("after-deletes", value("after-deletes", 1_000)).await.unwrap();
    client.clear().await.unwrap();
    client.put("after-clear", value("after-clear", 1_000)).await.unwrap();
    assert!(client.get("after-clear").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_into_a_smaller_bound_evicts_and_says_so() {
    let Bounded { certs, _data, mut node, client } = bounded("16mb", "allkeys-lru");
    let all = keys("k", 10_000);
    assert!(put_all(&client, &all, 1_000, |_| None).await.is_empty());
    let before = memory(&client, &node).await.used;
    assert!(before > 8 * MB, "{before}");
    node.stop_with(libc::SIGINT, Duration::from_secs(20)).unwrap();
    let mut spec = node.spec.clone();
    spec.settings = vec!["maxmemory = \"4mb\"".into(), "maxmemory_policy = \"allkeys-lru\"".into()];
    let node = spec.start();
    let client = certs.client(vec![node.addr]);
    let m = settled(&client, &node, 4 * MB).await;
    assert!(m.evictions > 5_000, "{m:?}");
    let log = node.log_lines().join("\n");
    assert!(log.contains("the recovered data is over maxmemory"), "{log}");
    let kept = present(&client, &all, 1_000).await.len();
    assert!((2_000..4_000).contains(&kept), "kept {kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_evicts_the_same_keys_everywhere_and_a_crash_brings_none_back() {
    let mut cluster = Cluster::start(3, &["maxmemory = \"4mb\"", "maxmemory_policy = \"allkeys-lru\""]);
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(30)).await;
    }
    let client = cluster.client();
    // About 950 keys of 4 KiB fit; write four times that, and kill n2 with
    // SIGKILL halfway (so some evictions reach it as hints or by repair).
    let all = keys("k", 3_800);
    let failed = put_all(&client, &all[..1_900], 4_000, |_| None).await;
    assert!(failed.is_empty(), "{:?}", failed.first());
    cluster.nodes[1].kill9();
    let failed = put_all(&client, &all[1_900..], 4_000, |_| None).await;
    assert!(failed.is_empty(), "{:?}", failed.first());
    cluster.nodes[1] = cluster.nodes[1].restart();
    cluster.wait_serving(0, 3, Duration::from_secs(30)).await;
    // Every key's three replicas end up with the same version: the value,
    // or the same eviction's tombstone.
    converged(&client, &all, 3, Duration::from_secs(90)).await;
    let kept = present(&client, &all, 4_000).await;
    assert!(kept.len() < all.len() / 2 && !kept.is_empty(), "kept {} of {}", kept.len(), all.len());
    for node in &cluster.nodes {
        settled(&client, node, 4 * MB + 4 * MB / 8).await;
    }
    // A crash and restart of a replica brings no evicted key back.
    cluster.nodes[2].kill9();
    cluster.nodes[2] = cluster.nodes[2].restart();
    cluster.wait_serving(0, 3, Duration::from_secs(30)).await;
    converged(&client, &all, 3, Duration::from_secs(90)).await;
    let after = present(&client, &all, 4_000).await;
    let back: Vec<&String> = after.difference(&kept).collect();
    assert!(back.is_empty(), "evicted keys came back: {:?}", &back[..back.len().min(5)]);
}

/// The regression guard of BENCHMARKS.md's memory per key: RSS growth per
/// key of a node loaded over the network with 100,000 keys of 16 + 100
/// bytes: 155–177 measured here, 165 at 1M keys with a release build, where
/// Redis takes 208. The guard sits below Redis's figure, so it fails as soon
/// as ringkv needs more memory per key than Redis does, let alone on a
/// return to separate key and value allocations (about 370) or values kept
/// alive in large receive buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_per_key_through_a_node_stays_under_its_guard() {
    const GUARD: u64 = 200;
    const KEYS: u64 = 100_000;
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let node = node_spec("n1", &dir.path().join("n1"), certs.path()).arg("--persistence").arg("none").start();
    let bench = |ops: u64| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["bench", "--ops", &ops.to_string(), "--keys", &ops.to_string(), "--sequential"])
            .args(["--value-size", "100", "--read-ratio", "0", "--concurrency", "50", "--certs"])
            .arg(certs.path())
            .args(["--addr", &node.addr.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // Warm the connection and the runtime first, so the base is a serving node.
    bench(1_000);
    let base = rss(&node);
    bench(KEYS);
    let per_key = (rss(&node) - base) / KEYS;
    assert!(per_key <= GUARD, "{per_key} bytes per key, the guard is {GUARD}");
}
