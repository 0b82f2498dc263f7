//! Anti-entropy without any client reads: a replica whose data directory was
//! wiped is refilled, and a small divergence is repaired with few bytes.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, converged, wait_for};
use ringkv::{Consistency, KvStore};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_is_refilled_by_anti_entropy() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &["repair_interval = \"1s\""]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let client = cluster.client().with_consistency(Consistency::All);
    let keys: Vec<String> = (0..2000).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        client.put(key.clone(), key.clone()).await.unwrap();
    }
    // Same node id, its log and snapshots gone; the member file stays, so it
    // comes back as the same ring member (not as a new node that would pull
    // its partitions before serving). It is written a few seconds after the
    // node serves, which a fast run of the writes above can beat.
    cluster.nodes[2].wait_member_file().await;
    cluster.nodes[2].kill9_and_wipe_keeping_membership();
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    // n3 recovers nothing. Its peers start refilling it as soon as they see
    // it back, which can be done before this test sees it serving, so its
    // emptiness is read from its recovery rather than from its status.
    let recovered = wait_for("n3's recovery", Duration::from_secs(10), || {
        let line = cluster.nodes[2].log_lines().into_iter().find(|l| l.contains("recovered entries="));
        async move { line }
    })
    .await;
    assert!(recovered.contains("recovered entries=0 "), "n3 should start empty: {recovered}");
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;

    // No reads until the replicas agree: only anti-entropy can refill n3.
    let client = cluster.client();
    const BOUND: Duration = Duration::from_secs(60);
    let deadline = Instant::now() + BOUND;
    loop {
        let s = client.status_of(cluster.nodes[2].addr).await.unwrap();
        if s.entries >= 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "n3 holds {} of 2000 keys after {BOUND:?}", s.entries);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = converged(&client, &keys, 3, BOUND).await;
    let mut found = Vec::new();
    for node in &cluster.nodes {
        let repair = client.status_of(node.addr).await.unwrap().repair;
        found.extend(repair.last_divergence.clone());
        println!("{}: {repair:?}", node.spec.node_id);
    }
    println!("wiped replica converged; last check {took:?}");
    assert!(!found.is_empty(), "some node's status reports the divergence it repaired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_divergence_costs_a_small_fraction_of_the_data() {
    let _serial = SERIAL.lock().await;
    // No hints, so that the node that was down misses exactly what was
    // written meanwhile.
    let mut cluster = Cluster::start(3, &["repair_interval = \"2s\"", "max_hint_bytes = 0"]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let client = cluster.client().with_consistency(Consistency::All);
    let value = vec![b'v'; 100];
    let mut keys: Vec<String> = (0..20_000).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        client.put(key.clone(), value.clone()).await.unwrap();
    }
    let data_bytes: usize = keys.iter().map(|k| k.len() + value.len()).sum();

    cluster.nodes[2].kill9();
    cluster.wait_serving(0, 2, Duration::from_secs(20)).await;
    let quorum = cluster.client();
    for i in 0..20 {
        let key = format!("late-{i}");
        quorum.put(key.clone(), value.clone()).await.unwrap();
        keys.push(key);
    }
    let before: u64 = {
        let mut total = 0;
        for node in &cluster.nodes[..2] {
            total += quorum.status_of(node.addr).await.unwrap().repair.bytes_exchanged;
        }
        total
    };
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let took = converged(&quorum, &keys[20_000..], 3, Duration::from_secs(60)).await;
    let mut after = 0;
    let mut exchanged_keys = 0;
    for node in &cluster.nodes {
        let repair = quorum.status_of(node.addr).await.unwrap().repair;
        after += repair.bytes_exchanged;
        exchanged_keys += repair.keys_exchanged;
    }
    let spent = after - before;
    let ratio = spent as f64 / data_bytes as f64;
    println!(
        "20 missing keys of 20,020 repaired within {took:?}: {spent} bytes exchanged by all nodes \
         ({exchanged_keys} keys) for {data_bytes} bytes of data = {:.2}%",
        ratio * 100.0
    );
    assert!(ratio < 0.05, "repairing 0.1% of the keys cost {:.1}% of the data size", ratio * 100.0);
}
