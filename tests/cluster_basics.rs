//! A 3-node cluster on loopback: requests coordinated by any node, replicas
//! visible through `explain`, and nodes that must not join refused with a
//! reason.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, node_spec, raw_connector};
use ringkv::{Consistency, KvStore};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{ReplicationStatus, Reply, Request, Sent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_through_one_node_read_through_another_and_held_by_three_replicas() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_serving(2, 3, Duration::from_secs(20)).await;
    let t = Duration::from_secs(5);
    // Address coordinators directly, bypassing the client's routing.
    let conn = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let (n1, n3) = (cluster.nodes[0].addr, cluster.nodes[2].addr);
    for i in 0..50 {
        let put = Request::Put {
            key: Bytes::from(format!("key-{i}")),
            value: Bytes::from(format!("value-{i}")),
            ttl_ms: None,
            consistency: Consistency::Quorum,
        };
        assert_eq!(conn.call(n1, &put, t).await.unwrap(), Ok(Reply::Done));
    }
    for i in 0..50 {
        let get = Request::Get { key: Bytes::from(format!("key-{i}")), consistency: Consistency::Quorum };
        assert_eq!(conn.call(n3, &get, t).await.unwrap(), Ok(Reply::Value(Some(Bytes::from(format!("value-{i}"))))));
    }

    let client = cluster.client();
    // n1 coordinated 50 writes, each to itself and to the two others (more
    // only if a put was retried on a fresh connection); n3 coordinated 50
    // reads, each asking the two others as well as itself (the slower answer
    // of each only after the read returned).
    for (node, what, pick) in
        [(n1, "writes", (|r| r.writes) as fn(ReplicationStatus) -> Sent), (n3, "reads", |r| r.reads)]
    {
        common::wait_for(&format!("100 replica {what} sent"), Duration::from_secs(10), || {
            let client = client.clone();
            async move {
                let sent = pick(client.status_of(node).await.ok()?.replication);
                assert!(sent.requests <= sent.items, "{sent:?}");
                (sent.items >= 100).then_some(())
            }
        })
        .await;
    }
    client.put_with_ttl("ttl-key", "v", Duration::from_secs(600)).await.unwrap();
    // Replica writes beyond the quorum finish in the background.
    common::wait_for("all three replicas to hold key-7", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let explanation = client.explain("key-7").await.ok()?;
            let versions: Vec<_> =
                explanation.replicas.iter().filter_map(|r| r.entry.clone().ok().flatten().map(|e| e.version)).collect();
            (versions.len() == 3 && versions.windows(2).all(|w| w[0] == w[1])).then_some(())
        }
    })
    .await;
    let explanation = client.explain("key-7").await.unwrap();
    let mut holders: Vec<String> = explanation.replicas.iter().map(|r| r.node_id.clone()).collect();
    holders.sort();
    assert_eq!(holders, ["n1", "n2", "n3"]);

    // Replica-level requests need a member's node certificate (more in
    // tests/roles.rs).
    let sneaky = Request::Replica(ringkv_net::wire::ReplicaRequest::Read { partition: 0, key: Bytes::from("x") });
    match conn.call(n1, &sneaky, t).await.unwrap() {
        Err(ringkv::KvError::Forbidden { needed, .. }) => assert!(needed.contains("node certificate"), "{needed}"),
        other => panic!("a client certificate must not reach replicas directly: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_partition_count_or_cluster_id_cannot_join() {
    let cluster = Cluster::start(1, &[]);
    let seed = cluster.nodes[0].spec.gossip.unwrap();

    let mut other_p =
        node_spec("bad-p", &cluster.data.path().join("bad-p"), cluster.certs.path()).setting("partitions = 64");
    other_p.gossip = Some("127.0.0.1:0".parse().unwrap());
    other_p.seeds = vec![seed];
    let stderr = other_p.try_start().err().expect("a node with another partition count must not start").to_string();
    assert!(stderr.contains("has 256 partitions and this node 64"), "{stderr}");
    assert!(stderr.contains("exit status: 2"), "{stderr}");

    let mut other_cluster = node_spec("bad-c", &cluster.data.path().join("bad-c"), cluster.certs.path())
        .arg("--cluster-id")
        .arg("elsewhere");
    other_cluster.gossip = Some("127.0.0.1:0".parse().unwrap());
    other_cluster.seeds = vec![seed];
    let stderr = other_cluster.try_start().err().expect("a node of another cluster must not start").to_string();
    assert!(stderr.contains("belongs to another cluster") && stderr.contains("'elsewhere'"), "{stderr}");

    // The cluster did not take either of them in.
    let members = cluster.client().members().await.unwrap();
    let names: Vec<&str> = members.members.iter().map(|m| m.node_id.as_str()).collect();
    assert_eq!(names, ["n1"]);
}
