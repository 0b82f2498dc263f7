//! `expire` and `persist` rewrite the value they read with a new expiry.
//! Here they run on a replica that is cut off and still holds an older
//! value than the one a quorum has acknowledged since: each succeeds there
//! alone (consistency `one`), and its entry reaches the other replicas
//! through the hints the cut-off coordinator keeps for them (and through
//! anti-entropy). Whatever path it takes, an entry that carries the older
//! value must never overwrite the acknowledged put.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, raw_connector};
use ringkv::{Consistency, KvStore};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{Reply, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_and_persist_on_a_cut_off_replica_never_revert_an_acknowledged_put() {
    let cluster = Cluster::start(3, &["fault_injection = true"]);
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(20)).await;
    }
    let client = cluster.client();
    let conn = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let t = Duration::from_secs(5);
    let [a, b, c] = [0, 1, 2].map(|i| cluster.nodes[i].addr);
    let gossip = |i: usize| cluster.nodes[i].spec.gossip.expect("clustered");
    let keys = ["expired".to_string(), "persisted".to_string()];

    // With three nodes and N=3 every node holds every key.
    client.put("expired", "old").await.unwrap();
    client.put_with_ttl("persisted", "old", Duration::from_secs(3600)).await.unwrap();
    common::converged(&client, &keys, 3, Duration::from_secs(30)).await;

    // Cut c off; a and b acknowledge newer values that c does not see.
    client.inject_fault(c, vec![a, b, gossip(0), gossip(1)]).await.unwrap();
    for addr in [a, b] {
        client.inject_fault(addr, vec![c, gossip(2)]).await.unwrap();
    }
    for key in &keys {
        let put = Request::Put {
            key: Bytes::from(key.clone()),
            value: Bytes::from_static(b"new"),
            ttl_ms: None,
            consistency: Consistency::Quorum,
        };
        assert_eq!(conn.call(a, &put, t).await.unwrap(), Ok(Reply::Done), "put {key} acknowledged");
    }

    // c reads its old values and rewrites them with a new expiry; the writes
    // to a and b fail, so c keeps them as hints.
    let expire = Request::Expire { key: Bytes::from("expired"), ttl_ms: 3_600_000, consistency: Consistency::One };
    assert_eq!(conn.call(c, &expire, t).await.unwrap(), Ok(Reply::Flag(true)), "expire at c");
    let persist = Request::Persist { key: Bytes::from("persisted"), consistency: Consistency::One };
    assert_eq!(conn.call(c, &persist, t).await.unwrap(), Ok(Reply::Flag(true)), "persist at c");

    // Heal: hints and repair bring every replica to the same version.
    for addr in [a, b, c] {
        client.inject_fault(addr, Vec::new()).await.unwrap();
    }
    common::wait_for("c's hints to drain", Duration::from_secs(30), || {
        let client = client.clone();
        async move { client.status_of(c).await.ok().filter(|s| s.hints.is_empty()) }
    })
    .await;
    common::converged(&client, &keys, 3, Duration::from_secs(60)).await;
    let all = client.with_consistency(Consistency::All);
    for key in &keys {
        let value = all.get(key.clone()).await.unwrap();
        assert_eq!(value.as_deref(), Some(&b"new"[..]), "the acknowledged put of {key} was reverted");
    }
}
