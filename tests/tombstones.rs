//! Tombstones are purged only when no replica can resurrect the key: a key
//! deleted while one replica is down stays deleted when that replica comes
//! back with the old value, even though the purge window passed meanwhile.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use ringkv::{Client, Consistency, KvStore};

/// What each replica holds for `key`: `Some(true)` a live value,
/// `Some(false)` a tombstone, `None` nothing; `Err` if unreachable.
async fn held(client: &Client, key: &str) -> Vec<(String, Result<Option<bool>, String>)> {
    let explanation = client.explain(key.to_string()).await.unwrap();
    explanation.replicas.into_iter().map(|r| (r.node_id, r.entry.map(|e| e.map(|e| e.value.is_some())))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_a_replica_was_down_stays_deleted() {
    // No hints: only anti-entropy can tell n3 about the deletes. A short
    // purge window, which the outage outlasts.
    let settings = ["tombstone_grace = \"2s\"", "max_hint_bytes = 0", "repair_interval = \"1s\""];
    let mut cluster = Cluster::start(3, &settings);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let all = cluster.client().with_consistency(Consistency::All);
    let keys: Vec<String> = (0..200).map(|i| format!("doomed-{i}")).collect();
    for key in &keys {
        all.put(key.clone(), "old").await.unwrap();
    }

    cluster.nodes[2].kill9();
    cluster.wait_serving(0, 2, Duration::from_secs(20)).await;
    let client = cluster.client_of(0);
    for key in &keys {
        assert!(client.delete(key.clone()).await.unwrap(), "{key} was live");
    }
    // Through the purge window and then some.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for key in &keys[..3] {
        let replicas = held(&client, key).await;
        let tombstones = replicas.iter().filter(|(_, h)| *h == Ok(Some(false))).count();
        assert_eq!(tombstones, 2, "the live replicas must keep {key}'s tombstone while n3 is away: {replicas:?}");
    }

    // n3 returns holding the old values.
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    // Anti-entropy carries the tombstones to n3; afterwards every replica
    // has been in sync, so the tombstones may go, everywhere.
    wait_for("tombstones delivered and then purged everywhere", Duration::from_secs(60), || {
        let client = client.clone();
        let key = keys[0].clone();
        async move {
            let replicas = held(&client, &key).await;
            replicas.iter().all(|(_, h)| *h == Ok(None)).then_some(())
        }
    })
    .await;
    // No replica brought any key back, at any consistency.
    for key in &keys {
        assert_eq!(all.get(key.clone()).await.unwrap(), None, "{key} came back");
        let replicas = held(&client, key).await;
        assert!(replicas.iter().all(|(_, h)| *h != Ok(Some(true))), "{key} resurrected on a replica: {replicas:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_replicas_down_quorum_fails_fast_and_one_serves() {
    // A replica timeout far beyond the client's 5 s: a coordinator that
    // waited on the dead replicas would make the client time out with an
    // error that names no replica.
    let replica_timeout = Duration::from_secs(30);
    let setting = format!("replica_timeout = \"{}s\"", replica_timeout.as_secs());
    let mut cluster = Cluster::start(3, &[&setting]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let client = cluster.client_of(0);
    client.put("before", "v").await.unwrap();
    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    cluster.wait_serving(0, 1, Duration::from_secs(20)).await;
    // A client that knows the cluster as it is now (one that still believed
    // n2 and n3 up would first spend its connect timeouts on them).
    let client = cluster.client_of(0);
    client.members().await.unwrap();

    let started = std::time::Instant::now();
    let err = client.put("k", "v").await.unwrap_err().to_string();
    let took = started.elapsed();
    assert!(err.contains("n2") && err.contains("n3"), "the error must name the missing replicas: {err}");
    // Known down: refused without waiting for any replica timeout.
    assert!(took < replica_timeout, "quorum failure took {took:?}: {err}");
    println!("quorum write refused in {took:?}: {err}");
    let err = client.get("before").await.unwrap_err().to_string();
    assert!(err.contains("n2") && err.contains("n3"), "{err}");

    let one = client.with_consistency(Consistency::One);
    one.put("k", "v").await.unwrap();
    assert_eq!(one.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(one.get("before").await.unwrap().as_deref(), Some(&b"v"[..]));
}
