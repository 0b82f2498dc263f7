//! Roles on the QUIC port with real processes: what a client, a non-member
//! node, a member node and the operator certificate may send, and a node
//! that refuses to start under a certificate naming another node.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, node_spec, raw_connector, wait_for};
use ringkv::{Consistency, KvError, KvStore};
use ringkv_core::{Entry, NodeTag, Partitioner, Timestamp, Version};
use ringkv_net::Connector;
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{MemberInfo, ReplicaRequest, Reply, Request};

const T: Duration = Duration::from_secs(5);

/// A replica write of `key` that, if it were taken, would win against
/// every later write: stamped a day ahead.
fn forged_write(key: &str) -> Request {
    let ahead =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 86_400_000;
    let version = Version::new(Timestamp::new(ahead, 0), NodeTag::from_name("forger"));
    let partition = Partitioner::new(256).partition_of(key.as_bytes()).0;
    Request::Replica(ReplicaRequest::Apply {
        partition,
        key: Bytes::copy_from_slice(key.as_bytes()),
        entry: Entry::value(version, Bytes::from("forged"), None),
        condition: None,
        hint_for: None,
    })
}

/// Sends `request` and expects a refusal naming `needed`; returns the
/// error's text.
async fn refused(conn: &Connector, addr: SocketAddr, request: &Request, needed: &str) -> String {
    match conn.call(addr, request, T).await.expect("an answer") {
        Err(e @ KvError::Forbidden { .. }) => {
            let KvError::Forbidden { needed: got, .. } = &e else { unreachable!() };
            assert_eq!(got, needed, "{e}");
            e.to_string()
        }
        other => panic!("{} must be refused, got {other:?}", request.kind()),
    }
}

fn membership(members: &[MemberInfo]) -> Vec<(String, String, bool, bool)> {
    members.iter().map(|m| (m.node_id.clone(), m.status.as_str().to_string(), m.live, m.in_ring)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_replicate_and_only_the_operator_makes_a_node_leave() {
    let cluster = Cluster::start_serving(3, &["fault_injection = true"]).await;
    let client = cluster.client().with_consistency(Consistency::All);
    client.put("k", "v").await.unwrap();
    let before = membership(&client.members().await.unwrap().members);
    let (n1, n2, n3) = (cluster.nodes[0].addr, cluster.nodes[1].addr, cluster.nodes[2].addr);
    let member = "the node certificate of a current member";
    let operator = "the operator certificate";

    // A client certificate: a replica write, a transfer page, a hint
    // delivery, fault injection and leave are each refused, naming the role.
    let as_client = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let text = refused(&as_client, n1, &forged_write("k"), member).await;
    assert!(text.contains("this connection presented a client certificate"), "{text}");
    let transfer = Request::Replica(ReplicaRequest::Stream { partition: 0, after: None, limit: 100 });
    refused(&as_client, n1, &transfer, member).await;
    let hints = Request::Replica(ReplicaRequest::Deliver { entries: Vec::new(), hinted: true });
    refused(&as_client, n2, &hints, member).await;
    let fault = Request::Fault { blocked: vec![n2, n3] };
    let either = "the node certificate of a current member or the operator certificate";
    refused(&as_client, n1, &fault, either).await;
    refused(&as_client, n1, &Request::Skew { offset_ms: 3_600_000 }, either).await;
    let text = refused(&as_client, n3, &Request::Leave, operator).await;
    assert_eq!(text, "leave needs the operator certificate; this connection presented a client certificate");
    // The session wrapper changes nothing.
    let wrapped = Request::Session { seen: Timestamp(0), deadline: None, request: Box::new(Request::Leave) };
    refused(&as_client, n3, &wrapped, operator).await;
    // Data requests and read-only admin requests are a client's.
    assert!(matches!(as_client.call(n1, &Request::Status, T).await.unwrap(), Ok(Reply::Status(_))));

    // The shared node.crt names no node: it is a client's.
    let shared = raw_connector(&TlsPaths::node_in(cluster.certs.path(), "shared-node-crt"));
    refused(&shared, n1, &forged_write("k"), member).await;

    // A node certificate of the cluster CA naming a node that is not a
    // member: no replica writes.
    ringkv_net::certs::issue_node_cert(cluster.certs.path(), "n9", &[]).unwrap();
    let stranger = raw_connector(&TlsPaths::node_in(cluster.certs.path(), "n9"));
    for addr in [n1, n2, n3] {
        let text = refused(&stranger, addr, &forged_write("k"), member).await;
        assert!(text.contains("the node certificate of n9, which is not a member"), "{text}");
    }
    refused(&stranger, n1, &Request::Leave, operator).await;

    // A member's certificate reaches the replicas (the check is not a
    // blanket refusal): a replica read, not a write, to leave the data be.
    let as_n1 = raw_connector(&TlsPaths::node_in(cluster.certs.path(), "n1"));
    let read = Request::Replica(ReplicaRequest::Read {
        partition: Partitioner::new(256).partition_of(b"k").0,
        key: Bytes::from("k"),
    });
    match as_n1.call(n2, &read, T).await.unwrap() {
        Ok(Reply::Entry(Some(entry))) => {
            assert_eq!(entry.live_value(0, ringkv_core::Epoch::NONE), Some(&Bytes::from("v")))
        }
        other => panic!("a member reads a replica: {other:?}"),
    }
    // But not leave.
    refused(&as_n1, n2, &Request::Leave, operator).await;

    // Nothing changed: every replica holds the value written, nobody is
    // cut off or skewed, and the membership is as it was.
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v")));
    let explanation = client.explain("k").await.unwrap();
    assert_eq!(explanation.replicas.len(), 3);
    for replica in &explanation.replicas {
        let entry = replica.entry.clone().unwrap().expect("held");
        assert_eq!(entry.live_value(0, ringkv_core::Epoch::NONE), Some(&Bytes::from("v")), "{}", replica.node_id);
    }
    client.put("after", "ok").await.unwrap();
    for i in 0..3 {
        let members = cluster.client_of(i).members_of(cluster.nodes[i].addr).await.unwrap();
        assert_eq!(membership(&members.members), before, "as n{} sees it", i + 1);
    }

    // The operator certificate makes a node leave.
    cluster.operator_of(2).leave(n3).await.unwrap();
    let mut cluster = cluster;
    let exited = wait_for("n3 to exit after leaving", Duration::from_secs(60), || {
        let done = cluster.nodes[2].exited();
        async move { done }
    })
    .await;
    assert!(exited.success(), "n3 exited with {exited:?}");
    let members = cluster.client_of(0).members().await.unwrap();
    let n3_info = members.members.iter().find(|m| m.node_id == "n3").expect("n3 still gossiped");
    assert!(!n3_info.in_ring, "n3 is out of the ring");
    assert_eq!(cluster.client_of(0).get("k").await.unwrap(), Some(Bytes::from("v")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_under_a_certificate_naming_another_node() {
    let certs = common::Certs::new();
    let data = tempfile::tempdir().unwrap();
    let dir = certs.path();
    ringkv_net::certs::issue_node_cert(dir, "n2", &[]).unwrap();

    // Configured as n3, holding n2's certificate (a valid one of the CA).
    let mut spec = node_spec("n3", &data.path().join("n3"), dir);
    std::fs::copy(dir.join("n2.crt"), dir.join("n3.crt")).unwrap();
    std::fs::copy(dir.join("n2.key"), dir.join("n3.key")).unwrap();
    spec.gossip = Some("127.0.0.1:0".parse().unwrap());
    let stderr = spec.try_start().err().expect("a node under another node's certificate must not start").to_string();
    let expected =
        format!("the certificate {} cannot serve as node n3: it names node n2", dir.join("n3.crt").display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains(&format!("ringkv certs issue --name n3 --dir {}", dir.display())), "{stderr}");
    assert!(stderr.contains("exit status: 2"), "{stderr}");
    assert!(!data.path().join("n3").exists(), "refused before the data directory is touched");

    // Standalone, the same mismatch is refused too.
    let mut standalone = spec.clone();
    standalone.gossip = None;
    let stderr = standalone.try_start().err().expect("standalone too").to_string();
    assert!(stderr.contains("it names node n2"), "{stderr}");

    // A clustered node with only the shared node.crt (naming no node).
    let mut shared = node_spec("n4", &data.path().join("n4"), dir);
    std::fs::remove_file(dir.join("n4.crt")).unwrap();
    std::fs::remove_file(dir.join("n4.key")).unwrap();
    shared.gossip = Some("127.0.0.1:0".parse().unwrap());
    let stderr = shared.try_start().err().expect("a clustered node needs its own certificate").to_string();
    assert!(stderr.contains("node.crt cannot serve as node n4: it names no node id"), "{stderr}");

    // Standalone, the shared node.crt still serves.
    shared.gossip = None;
    let node = shared.start();
    certs.client(vec![node.addr]).put("k", "v").await.unwrap();
}
