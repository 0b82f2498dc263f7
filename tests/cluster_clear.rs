//! `clear` while a node is down: the node learns the truncate epoch from
//! gossip before it serves, so no cleared key is readable anywhere once it
//! is back.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, raw_connector};
use ringkv::{Consistency, KvStore};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{Reply, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_with_a_node_down_is_learned_before_it_serves() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let client = cluster.client().with_consistency(Consistency::All);
    for i in 0..100 {
        client.put(format!("key-{i}"), "before").await.unwrap();
    }
    cluster.nodes[2].kill9();
    cluster.wait_serving(0, 2, Duration::from_secs(20)).await;

    let client = cluster.client();
    client.clear().await.unwrap();
    client.put("after", "clear").await.unwrap();

    cluster.nodes[2] = cluster.nodes[2].spec.start();
    // From the moment it announces itself, n3 must not serve cleared data,
    // as a coordinator or as a replica.
    let raw = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let n3 = cluster.nodes[2].addr;
    for i in 0..100 {
        let key = Bytes::from(format!("key-{i}"));
        let get = Request::Get { key: key.clone(), consistency: Consistency::One };
        assert_eq!(raw.call(n3, &get, Duration::from_secs(5)).await.unwrap(), Ok(Reply::Value(None)), "key-{i} via n3");
        let explanation = client.explain(key).await.unwrap();
        for replica in explanation.replicas {
            if let Ok(Some(entry)) = &replica.entry {
                assert!(entry.value.is_none(), "key-{i} still has a value on {}", replica.node_id);
            }
        }
    }
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    for node in 0..3 {
        let one = cluster.client_of(node).with_consistency(Consistency::One);
        for i in 0..100 {
            assert_eq!(one.get(format!("key-{i}")).await.unwrap(), None);
        }
        assert_eq!(one.get("after").await.unwrap().as_deref(), Some(&b"clear"[..]), "writes after clear survive");
    }
}
