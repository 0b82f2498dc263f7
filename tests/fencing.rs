//! A deleted key never comes back, even from a replica that was out of the
//! ring for longer than both grace periods without restarting: paused with
//! SIGSTOP, or cut off from its peers. While it was gone the others removed
//! it from the ring and purged the tombstones of keys it still holds; when
//! it returns it must learn that it was removed and discard its data before
//! anything it holds can be read or repaired back, even if the members
//! that removed it restarted meanwhile.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use ringkv::{Client, Consistency, KvStore};

/// Short graces, so that an outage outlasts both within seconds; no hints,
/// so that only anti-entropy (the path that resurrected keys) moves data.
const SETTINGS: [&str; 5] = [
    "tombstone_grace = \"3s\"",
    "dead_node_grace = \"3s\"",
    "repair_interval = \"1s\"",
    "max_hint_bytes = 0",
    "fault_injection = true",
];

fn keys() -> Vec<String> {
    (0..20).map(|i| format!("doomed-{i}")).collect()
}

/// Whether node `i` sees `node` in its ring.
async fn in_ring(cluster: &Cluster, i: usize, node: &str) -> Option<bool> {
    let members = cluster.client_of(i).members_of(cluster.nodes[i].addr).await.ok()?;
    Some(members.members.iter().any(|m| m.node_id == node && m.in_ring))
}

/// Writes the keys at `all`, takes n3 out with `cut_off`, deletes the keys
/// once n3 has left the ring, waits until the tombstones are purged on the
/// remaining replicas, brings n3 back with `restore`, and checks that no
/// key comes back once n3 serves again.
async fn deleted_keys_stay_deleted(cut_off: impl AsyncFnOnce(&Cluster), restore: impl AsyncFnOnce(&Cluster)) {
    let cluster = Cluster::start(3, &SETTINGS);
    let keys = write_doomed(&cluster).await;
    // Never deleted: n1 and n2, the majority, must keep it. A rule that let
    // the cut-off n3 drop them from its ring, as they drop n3 from theirs,
    // would have each side fence the other and discard everything.
    let all = cluster.client_of(0).with_consistency(Consistency::All);
    all.put("kept", "v").await.unwrap();

    cut_off(&cluster).await;
    wait_for("n3 out of n1's and n2's rings", Duration::from_secs(30), || async {
        (in_ring(&cluster, 0, "n3").await == Some(false) && in_ring(&cluster, 1, "n3").await == Some(false))
            .then_some(())
    })
    .await;
    let client = delete_and_wait_purged(&cluster, &keys).await;

    restore(&cluster).await;
    cluster.wait_serving(0, 3, Duration::from_secs(60)).await;
    cluster.wait_serving(2, 3, Duration::from_secs(60)).await;
    // Repair runs at once when a member returns, and every second after: a
    // few passes are enough for any copy n3 kept to spread.
    three_repair_passes(&cluster).await;
    let any = cluster.client().with_consistency(Consistency::All);
    assert_eq!(any.get("kept").await.unwrap().as_deref(), Some(&b"v"[..]), "a key nobody deleted was lost");
    for key in &keys {
        assert_eq!(any.get(key.clone()).await.unwrap(), None, "{key} came back after n3 returned");
        let explanation = client.explain(key.clone()).await.unwrap();
        for replica in explanation.replicas {
            let live = replica.entry.as_ref().is_ok_and(|e| e.as_ref().is_some_and(|e| e.value.is_some()));
            assert!(!live, "{key} is live again on {}", replica.node_id);
        }
    }
}

/// Waits until every node serves, then writes the keys at `all`.
async fn write_doomed(cluster: &Cluster) -> Vec<String> {
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let all = cluster.client_of(0).with_consistency(Consistency::All);
    let keys = keys();
    for key in &keys {
        all.put(key.clone(), "old").await.unwrap();
    }
    keys
}

/// Deletes the keys through n1 and waits until their tombstones are purged
/// on every replica n1 sees; returns n1's client.
async fn delete_and_wait_purged(cluster: &Cluster, keys: &[String]) -> Client {
    let client = cluster.client_of(0);
    for key in keys {
        assert!(client.delete(key.clone()).await.unwrap(), "{key} was live");
    }
    wait_for("tombstones purged on n1 and n2", Duration::from_secs(60), || async {
        purged_everywhere(&client, keys).await.then_some(())
    })
    .await;
    client
}

async fn purged_everywhere(client: &Client, keys: &[String]) -> bool {
    for key in keys {
        let Ok(explanation) = client.explain(key.clone()).await else { return false };
        if !explanation.replicas.iter().all(|r| matches!(r.entry, Ok(None))) {
            return false;
        }
    }
    true
}

/// Waits until every node has completed three more repair passes: enough
/// for any copy a returning node kept to spread, if it could.
async fn three_repair_passes(cluster: &Cluster) {
    let before = wait_for("every node's repair status", Duration::from_secs(10), || repair_passes(cluster)).await;
    wait_for("three repair passes on every node", Duration::from_secs(30), || async {
        let now = repair_passes(cluster).await?;
        before.iter().zip(&now).all(|(b, n)| *n >= b + 3).then_some(())
    })
    .await;
}

/// Completed repair passes of each node, or `None` while one cannot answer.
async fn repair_passes(cluster: &Cluster) -> Option<Vec<u64>> {
    let mut passes = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        passes.push(cluster.client_of(i).status_of(node.addr).await.ok()?.repair.passes);
    }
    Some(passes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_a_replica_was_paused_past_both_graces_stays_deleted() {
    deleted_keys_stay_deleted(
        async |cluster| cluster.nodes[2].signal(libc::SIGSTOP).unwrap(),
        async |cluster| cluster.nodes[2].signal(libc::SIGCONT).unwrap(),
    )
    .await;
}

/// Cuts (or heals, with no addresses) every link between n3 and the others,
/// on both sides, by fault injection: requests and gossip datagrams are
/// dropped as a real partition would drop them.
async fn cut(cluster: &Cluster, heal: bool) {
    let addrs = |nodes: &[usize]| -> Vec<std::net::SocketAddr> {
        if heal {
            return Vec::new();
        }
        nodes.iter().flat_map(|i| [cluster.nodes[*i].addr, cluster.nodes[*i].spec.gossip.unwrap()]).collect()
    };
    for (i, blocked) in [(0, addrs(&[2])), (1, addrs(&[2])), (2, addrs(&[0, 1]))] {
        cluster.operator_of(i).inject_fault(cluster.nodes[i].addr, blocked).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_a_replica_was_cut_off_past_both_graces_stays_deleted() {
    deleted_keys_stay_deleted(async |cluster| cut(cluster, false).await, async |cluster| cut(cluster, true).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gone_past_the_graces_stays_replaced_across_a_whole_cluster_restart() {
    // A grace long enough that n3 comes back while n1 and n2, restarted
    // themselves, have not yet served that long.
    // Snapshots after every write, so that a purged tombstone is gone from
    // disk too, and a restart cannot bring it back from the log.
    let mut settings = SETTINGS.to_vec();
    settings[1] = "dead_node_grace = \"10s\"";
    settings.push("snapshot_after_bytes = 1");
    let mut cluster = Cluster::start(3, &settings);
    let keys = write_doomed(&cluster).await;

    // n3 has recorded that it is a member, so it restarts as a returning one.
    cluster.nodes[2].wait_member_file().await;
    cluster.nodes[2].kill9();
    wait_for("n3 out of n1's ring", Duration::from_secs(40), || async {
        (in_ring(&cluster, 0, "n3").await == Some(false)).then_some(())
    })
    .await;
    delete_and_wait_purged(&cluster, &keys).await;
    snapshot_after_the_purge(&cluster).await;

    // The whole cluster restarts: n1 and n2 first, then n3, which has been
    // gone far longer than the grace.
    for i in 0..2 {
        cluster.nodes[i].kill9();
    }
    // At once: each waits for the other as its seed.
    cluster.start_together(&[0, 1]);
    cluster.wait_serving(0, 2, Duration::from_secs(30)).await;
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    cluster.wait_serving(0, 3, Duration::from_secs(60)).await;
    cluster.wait_serving(2, 3, Duration::from_secs(60)).await;
    three_repair_passes(&cluster).await;
    let any = cluster.client().with_consistency(Consistency::All);
    for key in &keys {
        assert_eq!(any.get(key.clone()).await.unwrap(), None, "{key} came back after the restart");
    }
}

/// Writes a key and waits until n1 and n2 have each written a snapshot
/// since (with `snapshot_after_bytes = 1`): a tombstone purged before is
/// then gone from disk too, and a restart cannot bring it back from the log.
async fn snapshot_after_the_purge(cluster: &Cluster) {
    let snapshots = |i: usize| -> Vec<String> {
        let dir = std::fs::read_dir(&cluster.nodes[i].spec.data_dir).unwrap();
        let mut names: Vec<String> = dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.retain(|n| n.ends_with(".snap"));
        names
    };
    let before = [snapshots(0), snapshots(1)];
    let all = cluster.client_of(0).with_consistency(Consistency::All);
    all.put("after-the-purge", "v").await.unwrap();
    wait_for("a snapshot after the purge on n1 and n2", Duration::from_secs(20), || async {
        (snapshots(0) != before[0] && snapshots(1) != before[1]).then_some(())
    })
    .await;
}

/// The members that fenced a paused replica restart before it resumes: the
/// fence must outlive their restart, or they take it back, stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_a_replica_was_paused_stays_deleted_when_its_fencers_restart() {
    let mut settings = SETTINGS.to_vec();
    settings.push("snapshot_after_bytes = 1");
    let mut cluster = Cluster::start(3, &settings);
    let keys = write_doomed(&cluster).await;
    let all = cluster.client_of(0).with_consistency(Consistency::All);
    all.put("kept", "v").await.unwrap();
    for i in 0..2 {
        cluster.nodes[i].wait_member_file().await;
    }

    cluster.nodes[2].signal(libc::SIGSTOP).unwrap();
    wait_for("n3 out of n1's and n2's rings", Duration::from_secs(30), || async {
        (in_ring(&cluster, 0, "n3").await == Some(false) && in_ring(&cluster, 1, "n3").await == Some(false))
            .then_some(())
    })
    .await;
    delete_and_wait_purged(&cluster, &keys).await;
    snapshot_after_the_purge(&cluster).await;
    for i in 0..2 {
        cluster.nodes[i].kill9();
    }
    cluster.start_together(&[0, 1]);
    cluster.wait_serving(0, 2, Duration::from_secs(30)).await;

    cluster.nodes[2].signal(libc::SIGCONT).unwrap();
    cluster.wait_serving(0, 3, Duration::from_secs(60)).await;
    cluster.wait_serving(2, 3, Duration::from_secs(60)).await;
    three_repair_passes(&cluster).await;
    let any = cluster.client().with_consistency(Consistency::All);
    assert_eq!(any.get("kept").await.unwrap().as_deref(), Some(&b"v"[..]), "a key nobody deleted was lost");
    for key in &keys {
        assert_eq!(any.get(key.clone()).await.unwrap(), None, "{key} came back after n3 resumed");
    }
}

/// Only a majority drops a member, and a member nobody dropped keeps its
/// data when it restarts, however long it was gone: what it holds may be
/// the only copy of acknowledged writes. Here n1 and n2 hold writes n3
/// missed (it was paused, and no hints are kept), then stay down past the
/// grace while n3, a minority, runs on alone. A rule that had a restarted
/// member discard its data because another had served throughout its
/// absence lost such writes (simulator seeds 1715 and 1808).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_down_past_the_grace_that_no_majority_dropped_keep_their_data() {
    let mut cluster = Cluster::start(3, &SETTINGS);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    for i in 0..3 {
        cluster.nodes[i].wait_member_file().await;
    }
    cluster.nodes[2].signal(libc::SIGSTOP).unwrap();
    // Paused for longer than half the grace (1.5 s): once resumed, n3 must
    // not serve before a majority confirms it is still a member.
    wait_for("n1 seeing n3 down", Duration::from_secs(30), || async {
        let members = cluster.client_of(0).members_of(cluster.nodes[0].addr).await.ok()?;
        members.members.iter().any(|m| m.node_id == "n3" && !m.live).then_some(())
    })
    .await;
    let quorum = cluster.client_of(0).with_consistency(Consistency::Quorum);
    let keys: Vec<String> = (0..20).map(|i| format!("only-on-n1-n2-{i}")).collect();
    for key in &keys {
        quorum.put(key.clone(), "v").await.unwrap();
    }
    for i in 0..2 {
        cluster.nodes[i].kill9();
    }
    cluster.nodes[2].signal(libc::SIGCONT).unwrap();
    // n3 sees both down, keeps them in its ring for twice the grace, and
    // serves nothing: alone, it hears no majority, and the two its failure
    // detector called live for seconds after they died did not count (their
    // heartbeats stood still).
    wait_for("n3 seeing n1 and n2 down", Duration::from_secs(30), || async {
        let members = cluster.client_of(2).members_of(cluster.nodes[2].addr).await.ok()?;
        let down = |name: &str| members.members.iter().any(|m| m.node_id == name && !m.live);
        (down("n1") && down("n2")).then_some(())
    })
    .await;
    let alone = cluster.client_of(2).with_consistency(Consistency::One);
    let kept_until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < kept_until {
        for name in ["n1", "n2"] {
            assert_eq!(in_ring(&cluster, 2, name).await, Some(true), "n3, a minority, dropped {name}");
        }
        n3_refuses(&cluster, &alone).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.start_together(&[0, 1]);
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(60)).await;
    }
    // Back after more than half the grace, each serves once gossip has
    // confirmed, from a majority, that nobody fenced it.
    let all = cluster.client().with_consistency(Consistency::All);
    wait_for("every replica answering", Duration::from_secs(30), || async { all.get(keys[0].clone()).await.ok() })
        .await;
    for key in &keys {
        assert_eq!(all.get(key.clone()).await.unwrap().as_deref(), Some(&b"v"[..]), "{key} was lost");
    }
}

/// Asserts that n3, asked through `client`, refuses a read for want of a
/// majority's word. A transport error is no answer (the client may try a
/// member it has not yet learned is dead): it asks again.
async fn n3_refuses(cluster: &Cluster, client: &Client) {
    let refusal = wait_for("an answer from n3", Duration::from_secs(10), || async {
        match client.get("anything").await {
            Ok(_) => panic!("n3 served alone after its pause:\n{}", cluster.nodes[2].log_lines().join("\n")),
            Err(e) if e.to_string().starts_with("transport error") => None,
            Err(e) => Some(e.to_string()),
        }
    })
    .await;
    assert!(refusal.contains("from a majority"), "{refusal}");
}
