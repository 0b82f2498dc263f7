//! `expire` and `persist` rewrite the value they read with a new expiry.
//! Here they run on a replica that is cut off and still holds an older
//! value than the one a quorum has acknowledged since: each succeeds there
//! (consistency `one`), and its entry reaches the other replicas through
//! the hints the cut-off coordinator keeps for them, or through a stand-in
//! that took it for them (and through anti-entropy). Whatever path it
//! takes, an entry that carries the older value must never overwrite the
//! acknowledged put.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, raw_connector};
use ringkv::{Client, Consistency, KvStore};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{Reply, Request};

/// Cluster tests share two cores; one at a time keeps failure detection
/// honest.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn expire(key: &str) -> Request {
    Request::Expire { key: Bytes::from(key.to_owned()), ttl_ms: 3_600_000, consistency: Consistency::One }
}

fn persist(key: &str) -> Request {
    Request::Persist { key: Bytes::from(key.to_owned()), consistency: Consistency::One }
}

fn put_new(key: &str) -> Request {
    Request::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from_static(b"new"),
        ttl_ms: None,
        consistency: Consistency::Quorum,
    }
}

/// Node indexes (0-based) of the key's preference list.
async fn replicas_of(client: &Client, key: &str) -> Vec<usize> {
    let explanation = client.explain(key.to_owned()).await.expect("explain");
    explanation.replicas.iter().map(|r| r.node_id.trim_start_matches('n').parse::<usize>().unwrap() - 1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_and_persist_on_a_cut_off_replica_never_revert_an_acknowledged_put() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_serving(3, &["fault_injection = true"]).await;
    let client = cluster.client();
    let conn = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let t = Duration::from_secs(5);
    let [a, c] = [0, 2].map(|i| cluster.nodes[i].addr);
    let keys = ["expired".to_string(), "persisted".to_string()];

    // With three nodes and N=3 every node holds every key.
    client.put("expired", "old").await.unwrap();
    client.put_with_ttl("persisted", "old", Duration::from_secs(3600)).await.unwrap();
    common::converged(&client, &keys, 3, Duration::from_secs(30)).await;

    // Cut c off; a and b acknowledge newer values that c does not see.
    cluster.cut(2, &[0, 1]).await;
    for key in &keys {
        assert_eq!(conn.call(a, &put_new(key), t).await.unwrap(), Ok(Reply::Done), "put {key} acknowledged");
    }

    // c reads its old values and rewrites them with a new expiry; the writes
    // to a and b fail, so c keeps them as hints.
    assert_eq!(conn.call(c, &expire("expired"), t).await.unwrap(), Ok(Reply::Flag(true)), "expire at c");
    assert_eq!(conn.call(c, &persist("persisted"), t).await.unwrap(), Ok(Reply::Flag(true)), "persist at c");

    // Heal: hints and repair bring every replica to the same version.
    cluster.heal().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_and_persist_through_a_stand_in_never_revert_an_acknowledged_put() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_serving(4, &["fault_injection = true"]).await;
    let client = cluster.client();
    let conn = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let t = Duration::from_secs(5);

    // Two keys on the same three replicas; the fourth node can stand in.
    let expired = "expired".to_string();
    let replicas = replicas_of(&client, &expired).await;
    let mut persisted = String::new();
    for i in 0.. {
        persisted = format!("persisted-{i}");
        let mut theirs = replicas_of(&client, &persisted).await;
        let mut ours = replicas.clone();
        theirs.sort();
        ours.sort();
        if theirs == ours {
            break;
        }
    }
    let keys = [expired.clone(), persisted.clone()];
    let (ai, bi, ci) = (replicas[0], replicas[1], replicas[2]);
    let di = (0..4).find(|i| !replicas.contains(i)).expect("a fourth node");
    let [a, c, d] = [ai, ci, di].map(|i| cluster.nodes[i].addr);

    client.put(expired.clone(), "old").await.unwrap();
    client.put_with_ttl(persisted.clone(), "old", Duration::from_secs(3600)).await.unwrap();
    common::converged(&client, &keys, 3, Duration::from_secs(30)).await;

    // Cut c off from a and b, which then acknowledge newer values that c
    // does not see.
    cluster.cut(ci, &[ai, bi]).await;
    for key in &keys {
        assert_eq!(conn.call(a, &put_new(key), t).await.unwrap(), Ok(Reply::Done), "put {key} acknowledged");
    }
    // Then a and b stop. c must see them down (gossip from d would tell it
    // of them if they were only cut off), so that it picks d to stand in.
    cluster.nodes[ai].signal(libc::SIGSTOP).unwrap();
    cluster.nodes[bi].signal(libc::SIGSTOP).unwrap();
    common::wait_for("c to see a and b down", Duration::from_secs(30), || {
        let client = client.clone();
        let names = [format!("n{}", ai + 1), format!("n{}", bi + 1)];
        async move {
            let members = client.members_of(c).await.ok()?;
            members.members.iter().filter(|m| names.contains(&m.node_id)).all(|m| !m.live).then_some(())
        }
    })
    .await;

    // c reads its old values and rewrites them; d stores the rewrites as
    // hints for a replica it stands in for, without any condition.
    assert_eq!(conn.call(c, &expire(&expired), t).await.unwrap(), Ok(Reply::Flag(true)), "expire at c");
    assert_eq!(conn.call(c, &persist(&persisted), t).await.unwrap(), Ok(Reply::Flag(true)), "persist at c");
    let held = client.status_of(d).await.unwrap().hints;
    let stood_in = [format!("n{}", ai + 1), format!("n{}", bi + 1)];
    assert!(held.iter().any(|(n, _)| stood_in.contains(n)), "d stood in for a or b and holds hints: {held:?}");

    cluster.nodes[ai].signal(libc::SIGCONT).unwrap();
    cluster.nodes[bi].signal(libc::SIGCONT).unwrap();
    cluster.heal().await;
    common::wait_for("hints to drain", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            for addr in [c, d] {
                client.status_of(addr).await.ok().filter(|s| s.hints.is_empty())?;
            }
            Some(())
        }
    })
    .await;
    common::converged(&client, &keys, 3, Duration::from_secs(60)).await;
    let all = client.with_consistency(Consistency::All);
    for key in &keys {
        let value = all.get(key.clone()).await.unwrap();
        assert_eq!(value.as_deref(), Some(&b"new"[..]), "the acknowledged put of {key} was reverted");
    }
}
