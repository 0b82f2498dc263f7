//! Large values through every path that moves entries in batches:
//! snapshots and recovery, the partition transfers of a join and of a
//! leave, hinted handoff and anti-entropy. Each batch is cut by its encoded
//! size, so none of them can outgrow the receiver's frame limit or
//! recovery's record limit however large the values are.

mod common;

use std::time::Duration;

use common::{Certs, Cluster, converged, node_spec, wait_for};
use ringkv::{Client, Consistency, KvStore};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Repair only on its (long) interval, so that what the tests see moved was
/// moved by the path under test.
const SLOW_REPAIR: &str = "repair_interval = \"1h\"";

/// A value of `len` bytes that names its key, so a value read under the
/// wrong key or cut short is caught.
fn value_of(key: &str, len: usize) -> Vec<u8> {
    let mut value = format!("{key}:").into_bytes();
    let fill = key.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    value.resize(len, fill);
    value
}

/// Writes `n` keys of `len`-byte values, a few at a time.
async fn write_keys(client: &Client, prefix: &str, n: usize, len: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for share in keys.chunks(n.div_ceil(8)) {
        let (client, share) = (client.clone(), share.to_vec());
        tasks.spawn(async move {
            for key in share {
                let value = value_of(&key, len);
                client.put(key.clone(), value).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    keys
}

/// Reads every key back and checks its value.
async fn all_readable(client: &Client, keys: &[String], len: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for share in keys.chunks(keys.len().div_ceil(8)) {
        let (client, share) = (client.clone(), share.to_vec());
        tasks.spawn(async move {
            for key in share {
                let value = client.get(key.clone()).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
                assert!(value.as_deref() == Some(&value_of(&key, len)[..]), "{key} lost or damaged");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// The size of the largest snapshot in a data directory.
fn largest_snapshot(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|files| {
            files
                .filter_map(Result::ok)
                .filter(|f| f.file_name().to_string_lossy().ends_with(".snap"))
                .filter_map(|f| f.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_large_values_recovers_after_kill_9_and_under_a_lower_value_limit() {
    let _serial = SERIAL.lock().await;
    const LEN: usize = 9_000;
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("n1");
    let spec = node_spec("n1", &dir, certs.path())
        .setting("partitions = 1")
        .setting("max_value_bytes = 65536")
        .setting("snapshot_after_bytes = 1048576");
    let mut node = spec.start();
    let client = certs.client(vec![node.addr]);
    let mut keys = write_keys(&client, "big", 3_000, LEN).await;
    // Enough entries in the one partition that a snapshot chunk of 1024
    // entries holds more than a frame-sized record limit's worth of bytes.
    let enough = 2_000 * LEN as u64;
    wait_for("a snapshot holding most of the keys", Duration::from_secs(30), || {
        let size = largest_snapshot(&dir);
        async move { (size >= enough).then_some(()) }
    })
    .await;

    node.kill9();
    let mut node = match node.spec.try_start() {
        Ok(node) => node,
        Err(log) => panic!("the node does not recover its snapshot after kill -9:\n{log}"),
    };
    let client = certs.client(vec![node.addr]);
    all_readable(&client, &keys, LEN).await;

    // A few more after the snapshot, so that the log holds large records too.
    keys.extend(write_keys(&client, "late", 40, LEN).await);
    // Lowering the limits between restarts refuses new large values, but
    // what is stored was accepted and must still load, from the snapshot
    // and from the log alike.
    node.kill9();
    node.spec.settings.retain(|line| !line.starts_with("max_value_bytes"));
    node.spec.settings.push("max_value_bytes = 4096".into());
    node.spec.settings.push("max_key_bytes = 64".into());
    let node = match node.spec.try_start() {
        Ok(node) => node,
        Err(log) => panic!("the node does not recover under a lower max_value_bytes:\n{log}"),
    };
    let client = certs.client(vec![node.addr]);
    all_readable(&client, &keys, LEN).await;
    let refused = client.put("new", value_of("new", LEN)).await;
    assert!(refused.is_err(), "the lower limit applies to new values");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_cluster_of_large_values() {
    let _serial = SERIAL.lock().await;
    const LEN: usize = 4_096;
    let settings = ["partitions = 8", "max_value_bytes = 65536", SLOW_REPAIR];
    let mut cluster = Cluster::start(3, &settings);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let client = cluster.client().with_consistency(Consistency::All);
    let keys = write_keys(&client, "k", 1_500, LEN).await;

    let n4 = cluster.add(&settings);
    let n4_addr = cluster.nodes[n4].addr;
    let observer = cluster.client_of(0);
    wait_for("n4 serving", Duration::from_secs(45), || {
        let observer = observer.clone();
        async move {
            let status = observer.status_of(n4_addr).await.ok()?;
            (status.status == ringkv_net::wire::MemberStatus::Serving).then_some(())
        }
    })
    .await;
    cluster.wait_serving(0, 4, Duration::from_secs(20)).await;
    let status = observer.status_of(n4_addr).await.unwrap();
    assert!(status.partitions_owned > 0 && status.transfers.keys_moved > 0, "n4 pulled nothing: {status:?}");
    // Every replica, n4 included where it is one, answers with the value.
    all_readable(&cluster.client().with_consistency(Consistency::All), &keys, LEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_off_a_partition_of_large_values() {
    let _serial = SERIAL.lock().await;
    const LEN: usize = 4_096;
    let settings = ["partitions = 8", "max_value_bytes = 65536", SLOW_REPAIR];
    let mut cluster = Cluster::start(4, &settings);
    cluster.wait_serving(0, 4, Duration::from_secs(30)).await;
    let client = cluster.client_of(0);
    let keys = write_keys(&client.with_consistency(Consistency::All), "k", 1_000, LEN).await;

    cluster.operator_of(0).leave(cluster.nodes[3].addr).await.unwrap();
    let exited = wait_for("n4 to exit after leaving", Duration::from_secs(45), || {
        let done = cluster.nodes[3].exited();
        async move { done }
    })
    .await;
    assert!(exited.success(), "n4 exited with {exited:?}");
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    // Three copies of everything on the three remaining nodes: what n4 held
    // reached the nodes that gained its partitions, with repair an hour away.
    converged(&client, &keys, 3, Duration::from_secs(20)).await;
    all_readable(&client, &keys, LEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_of_large_values_are_delivered_when_the_replica_returns() {
    let _serial = SERIAL.lock().await;
    const LEN: usize = 4_096;
    let settings = ["partitions = 8", "max_value_bytes = 65536", SLOW_REPAIR];
    let mut cluster = Cluster::start(3, &settings);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    cluster.nodes[2].wait_member_file().await;
    cluster.nodes[2].kill9();
    cluster.wait_serving(0, 2, Duration::from_secs(20)).await;
    // Written while n3 is down: the coordinators keep hints for it.
    let keys = write_keys(&cluster.client(), "k", 1_000, LEN).await;
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;

    let observer = cluster.client_of(0);
    let addrs = cluster.addrs();
    wait_for("every hint delivered", Duration::from_secs(30), || {
        let (observer, addrs) = (observer.clone(), addrs.clone());
        async move {
            for addr in addrs {
                let status = observer.status_of(addr).await.ok()?;
                if status.hints.iter().any(|(_, n)| *n > 0) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    // Repair is an hour away: what n3 holds came as hints.
    all_readable(&cluster.client().with_consistency(Consistency::All), &keys, LEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_refills_a_wiped_replica_of_large_values() {
    let _serial = SERIAL.lock().await;
    const LEN: usize = 8_192;
    const KEYS: usize = 800;
    // One partition, so that a round of 64 digest leaves covers a sixteenth
    // of all the data: far more than one frame.
    let settings = ["partitions = 1", "max_value_bytes = 65536", "repair_interval = \"1s\""];
    let mut cluster = Cluster::start(3, &settings);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let keys = write_keys(&cluster.client().with_consistency(Consistency::All), "k", KEYS, LEN).await;

    // Same node id, its log and snapshots gone; the member file stays, so it
    // comes back as the same ring member and only repair can refill it.
    cluster.nodes[2].wait_member_file().await;
    cluster.nodes[2].kill9_and_wipe_keeping_membership();
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;

    let observer = cluster.client_of(0);
    let n3 = cluster.nodes[2].addr;
    wait_for("n3 refilled by anti-entropy", Duration::from_secs(45), || {
        let observer = observer.clone();
        async move { (observer.status_of(n3).await.ok()?.entries >= KEYS as u64).then_some(()) }
    })
    .await;
    all_readable(&cluster.client().with_consistency(Consistency::All), &keys, LEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_with_lower_limits_is_still_refilled_with_what_it_held() {
    let _serial = SERIAL.lock().await;
    const LEN: usize = 8_192;
    const KEYS: usize = 300;
    let settings = ["partitions = 8", "max_value_bytes = 65536", "repair_interval = \"1s\""];
    let mut cluster = Cluster::start(3, &settings);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let keys = write_keys(&cluster.client().with_consistency(Consistency::All), "k", KEYS, LEN).await;

    // n3 comes back wiped and with limits below the values stored: what
    // its peers send it was written under the old ones, and must still be
    // taken.
    cluster.nodes[2].wait_member_file().await;
    cluster.nodes[2].kill9_and_wipe_keeping_membership();
    let spec = &mut cluster.nodes[2].spec;
    spec.settings.retain(|line| !line.starts_with("max_value_bytes"));
    spec.settings.extend(["max_value_bytes = 1024".into(), "max_key_bytes = 64".into()]);
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;

    let observer = cluster.client_of(0);
    let n3 = cluster.nodes[2].addr;
    wait_for("n3 refilled by anti-entropy", Duration::from_secs(30), || {
        let observer = observer.clone();
        async move { (observer.status_of(n3).await.ok()?.entries >= KEYS as u64).then_some(()) }
    })
    .await;
    // Every read at consistency all has n3 answer with a value larger than
    // its own limits.
    all_readable(&cluster.client().with_consistency(Consistency::All), &keys, LEN).await;
}
