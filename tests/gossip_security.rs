//! Sealed gossip (issue 9, item 1), with real processes.
//!
//! Before gossip was sealed, chitchat took gossip from anyone who knew the
//! cluster id. The first test is the scenario: a stranger with a
//! CA of its own runs a standalone node with the victims' cluster id, clears
//! it (raising its truncate epoch), and restarts it with `--gossip` and
//! `--seeds` pointing at the cluster. Unsealed, the stranger was listed by
//! `ringkv status` on every victim within seconds and every node applied
//! the epoch it gossiped: all 50 keys were gone. Sealed, its datagrams
//! (under its own gossip key) are refused and counted, and nothing changes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{BIN, Certs, Cluster, NodeProc, node_spec, wait_for};
use ringkv::{Client, Consistency, KvStore};
use ringkv_net::wire::MemberStatus;

fn key(i: usize) -> String {
    format!("victim-{i:02}")
}

/// Stops a node with SIGINT (it keeps its data and place) and waits for
/// it to exit.
fn stop(node: &mut NodeProc) {
    node.signal(libc::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.exited().is_none() {
        assert!(Instant::now() < deadline, "node {} did not stop on SIGINT", node.spec.node_id);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_its_own_keys_and_the_cluster_id_is_refused_and_cannot_clear() {
    let cluster = Cluster::start_serving(3, &[]).await;
    let client = cluster.client();
    for i in 0..50 {
        client.put(key(i), format!("value-{i}")).await.unwrap();
    }

    // The stranger: its own CA and gossip key, the same (default) cluster
    // id, and a clear that raises its truncate epoch above every write.
    let stranger_certs = Certs::new();
    let mut spec = node_spec("stranger", &cluster.data.path().join("stranger"), stranger_certs.path());
    let mut stranger = spec.start();
    stranger_certs.client(vec![stranger.addr]).clear().await.unwrap();
    stop(&mut stranger);
    spec.gossip = Some("127.0.0.1:0".parse().unwrap());
    spec.seeds = cluster.nodes.iter().filter_map(|n| n.spec.gossip).collect();
    // It hears nobody, so it starts alone after the join timeout.
    let stranger = spec.start();

    // Every victim refuses its datagrams, and at no point lists it.
    let victims: Vec<SocketAddr> = cluster.addrs();
    wait_for("every victim to refuse at least 10 of the stranger's datagrams", Duration::from_secs(60), || {
        let client = client.clone();
        let victims = victims.clone();
        async move {
            let mut all = true;
            for addr in victims {
                let members = client.members_of(addr).await.unwrap();
                assert!(
                    members.members.iter().all(|m| m.node_id != "stranger"),
                    "{addr} lists the stranger as a member: {members:?}"
                );
                let status = client.status_of(addr).await.unwrap();
                all &= status.gossip.expect("a clustered node reports its gossip").rejected >= 10;
            }
            all.then_some(())
        }
    })
    .await;

    // Nothing was cleared: every key on every replica.
    let all = client.with_consistency(Consistency::All);
    for i in 0..50 {
        assert_eq!(all.get(key(i)).await.unwrap().as_deref(), Some(format!("value-{i}").as_bytes()), "{}", key(i));
    }
    for addr in victims {
        let members = client.members_of(addr).await.unwrap();
        let names: Vec<&str> = members.members.iter().map(|m| m.node_id.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"], "as {addr} sees it");
    }
    // Nor did the stranger learn anything of the cluster.
    let theirs = stranger_certs.client(vec![stranger.addr]).members_of(stranger.addr).await.unwrap();
    let names: Vec<&str> = theirs.members.iter().map(|m| m.node_id.as_str()).collect();
    assert_eq!(names, ["stranger"]);
}

/// Issue 9, item 2: the gossip key alone does not make a member. Two
/// strangers hold the victims' gossip key and cluster id but only node
/// certificates of their own CA: one announces a new node id, the other
/// the id of a victim (`n2`) under a newer generation. Both cleared their
/// own data first, so they gossip a truncate epoch above every write. No
/// victim places either, nor believes the epoch; the new id is listed as
/// unproven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_key_holders_without_a_member_certificate_are_never_placed_and_cannot_clear() {
    let cluster = Cluster::start_serving(3, &[]).await;
    let client = cluster.client();
    for i in 0..50 {
        client.put(key(i), format!("value-{i}")).await.unwrap();
    }
    let victims: Vec<SocketAddr> = cluster.addrs();
    let epoch_before = client.status_of(victims[0]).await.unwrap().epoch;

    let stranger_certs = Certs::new();
    std::fs::copy(cluster.certs.path().join("gossip.key"), stranger_certs.path().join("gossip.key")).unwrap();
    let mut strangers = Vec::new();
    for id in ["intruder", "n2"] {
        let mut spec = node_spec(id, &cluster.data.path().join(format!("stranger-{id}")), stranger_certs.path());
        let mut stranger = spec.start();
        stranger_certs.client(vec![stranger.addr]).clear().await.unwrap();
        stop(&mut stranger);
        spec.gossip = Some("127.0.0.1:0".parse().unwrap());
        spec.seeds = cluster.nodes.iter().filter_map(|n| n.spec.gossip).collect();
        strangers.push(spec.start());
    }

    // Every victim hears the intruder (its datagrams open) and lists it as
    // unproven, never as a member.
    wait_for("every victim to list the intruder as unproven", Duration::from_secs(60), || {
        let client = client.clone();
        let victims = victims.clone();
        async move {
            let mut all = true;
            for addr in victims {
                let status = client.status_of(addr).await.ok()?;
                all &= status.gossip?.unproven.contains(&"intruder".to_string());
            }
            all.then_some(())
        }
    })
    .await;
    // A few more gossip rounds for anything that would follow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for addr in &victims {
        let members = client.members_of(*addr).await.unwrap();
        let names: Vec<&str> = members.members.iter().map(|m| m.node_id.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"], "as {addr} sees it");
        assert!(
            members.members.iter().all(|m| victims.contains(&m.addr)),
            "{addr} places a member at a stranger's address: {members:?}"
        );
        let status = client.status_of(*addr).await.unwrap();
        assert_eq!(status.epoch, epoch_before, "{addr} applied a stranger's truncate epoch");
    }
    let all = client.with_consistency(Consistency::All);
    for i in 0..50 {
        assert_eq!(all.get(key(i)).await.unwrap().as_deref(), Some(format!("value-{i}").as_bytes()), "{}", key(i));
    }
    drop(strangers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_node_without_a_gossip_key_refuses_to_start_and_says_how_to_make_one() {
    let certs = Certs::new();
    std::fs::remove_file(certs.path().join("gossip.key")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut spec = node_spec("n1", &data.path().join("n1"), certs.path());
    spec.gossip = Some("127.0.0.1:0".parse().unwrap());
    let stderr = spec.try_start().err().expect("a clustered node without a gossip key must not start").to_string();
    assert!(stderr.contains("gossip.key") && stderr.contains("ringkv certs gossip-key new"), "{stderr}");
    assert!(stderr.contains("exit status: 2"), "{stderr}");

    // A standalone node needs none.
    spec.gossip = None;
    let node = spec.start();
    certs.client(vec![node.addr]).put("k", "v").await.unwrap();

    // The command the error names makes one, and the node then starts.
    ringkv(&["certs", "gossip-key", "new", "--dir", certs.path().to_str().unwrap()]);
    drop(node);
    spec.gossip = Some("127.0.0.1:0".parse().unwrap());
    spec.start();
}

/// Runs the `ringkv` binary and returns its stdout; panics on failure.
fn ringkv(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "ringkv {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Gives a node a new version of the keyring the way an operator copies
/// it: written beside and renamed over, so the node never reads half.
fn install(keyring: &Path, node_file: &Path) {
    let tmp = node_file.with_extension("new");
    std::fs::copy(keyring, &tmp).unwrap();
    std::fs::rename(&tmp, node_file).unwrap();
}

/// Waits until every node reports the keyring `check` accepts.
async fn wait_keyring(client: &Client, nodes: &[SocketAddr], what: &str, check: impl Fn(&str, &[String]) -> bool) {
    wait_for(what, Duration::from_secs(30), || {
        let client = client.clone();
        let nodes = nodes.to_vec();
        let check = &check;
        async move {
            for addr in nodes {
                let gossip = client.status_of(addr).await.ok()?.gossip?;
                if !check(&gossip.primary_key, &gossip.accepted_keys) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await
}

/// The rotation procedure of README's *Security* section while clients
/// write at quorum: each node has its own copy of the keyring, the new key
/// is added everywhere, then promoted everywhere, then the old one
/// removed everywhere, each step confirmed by `status` on every node before
/// the next. Nodes reload the file without restarting. No write fails, no
/// node ever sees a member down or not serving, and no datagram is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_keys_rotate_under_load_without_a_failed_write_or_a_member_down() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let admin = certs.path().join("gossip.key");
    let mut nodes: Vec<NodeProc> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for i in 1..=3 {
        let file = data.path().join(format!("n{i}.gossip.key"));
        install(&admin, &file);
        let mut spec = node_spec(&format!("n{i}"), &data.path().join(format!("n{i}")), certs.path())
            .setting("[tls]")
            .setting(&format!("gossip_key = {:?}", file.to_str().unwrap()));
        spec.gossip = Some("127.0.0.1:0".parse().unwrap());
        spec.seeds = nodes.first().and_then(|n1| n1.spec.gossip).into_iter().collect();
        nodes.push(spec.start());
        files.push(file);
    }
    let cluster = Cluster { certs, data, nodes };
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(30)).await;
    }
    let addrs = cluster.addrs();
    let client = cluster.client();
    let old = ringkv(&["certs", "gossip-key", "list", "--keyring", admin.to_str().unwrap()]);
    let old = old.split_whitespace().nth(1).unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, stop, written) = (client.clone(), stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = client.put(format!("w{w}-{}", n % 500), format!("{n}")).await {
                    failures.push(e.to_string());
                }
                n += 1;
                written.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    let watcher = {
        let (client, stop, addrs) = (client.clone(), stop.clone(), addrs.clone());
        tokio::spawn(async move {
            let mut seen_down = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for addr in &addrs {
                    match client.members_of(*addr).await {
                        Ok(members) => {
                            for m in members.members.iter().filter(|m| !m.live || m.status != MemberStatus::Serving) {
                                seen_down.push(format!("{addr} saw {} {:?} live={}", m.node_id, m.status, m.live));
                            }
                        }
                        Err(e) => seen_down.push(format!("{addr} did not answer: {e}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen_down
        })
    };
    let progress = |what: &'static str| {
        let written = written.clone();
        async move {
            let target = written.load(Ordering::Relaxed) + 100;
            wait_for(what, Duration::from_secs(30), || {
                let done = written.load(Ordering::Relaxed) >= target;
                async move { done.then_some(()) }
            })
            .await
        }
    };
    progress("writes before the rotation").await;

    // 1. A new key, accepted everywhere.
    let added = ringkv(&["certs", "gossip-key", "new", "--keyring", admin.to_str().unwrap()]);
    let new = added.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(new.len(), 8, "{added}");
    for file in &files {
        install(&admin, file);
    }
    wait_keyring(&client, &addrs, "every node to accept the new key", |primary, accepted| {
        primary == old && accepted == [new.clone()]
    })
    .await;
    progress("writes with the new key accepted").await;

    // 2. Promoted everywhere: each node seals with it once it reloads, and
    // the others already open it.
    ringkv(&["certs", "gossip-key", "promote", &new, "--keyring", admin.to_str().unwrap()]);
    for file in &files {
        install(&admin, file);
    }
    wait_keyring(&client, &addrs, "every node to seal with the new key", |primary, accepted| {
        primary == new && accepted == [old.clone()]
    })
    .await;
    progress("writes with the new key primary").await;

    // 3. The old key removed everywhere.
    ringkv(&["certs", "gossip-key", "remove", &old, "--keyring", admin.to_str().unwrap()]);
    for file in &files {
        install(&admin, file);
    }
    wait_keyring(&client, &addrs, "every node to drop the old key", |primary, accepted| {
        primary == new && accepted.is_empty()
    })
    .await;
    progress("writes after the rotation").await;
    // Gossip still flows under the new key alone: every node's view of
    // every member stays fresh for a while longer (the watcher checks).
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(10)).await;
    }
    progress("more writes after the rotation").await;

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for writer in writers {
        failures.extend(writer.await.unwrap());
    }
    let seen_down = watcher.await.unwrap();
    assert!(failures.is_empty(), "{} writes failed, e.g. {}", failures.len(), failures[0]);
    assert!(seen_down.is_empty(), "members looked down: {seen_down:?}");
    for addr in &addrs {
        let gossip = client.status_of(*addr).await.unwrap().gossip.unwrap();
        assert_eq!(gossip.rejected, 0, "{addr} refused datagrams during the rotation");
    }
    assert!(written.load(Ordering::Relaxed) >= 500);
}
