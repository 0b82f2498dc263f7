//! Rebalancing with real processes: a node joins under a write and read
//! load, a node leaves on purpose, and a node dead past `dead_node_grace`
//! is replaced by re-replication.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, converged, wait_for};
use ringkv::{Client, Consistency, KvStore};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Repair only on its (long) interval, so that what the tests see moved
/// was moved by rebalancing.
const SLOW_REPAIR: &str = "repair_interval = \"1h\"";

#[derive(Default)]
struct Load {
    acked: Vec<String>,
    write_errors: Vec<String>,
    reads: usize,
    read_errors: Vec<String>,
}

/// Writes unique keys and reads back earlier ones until told to stop.
async fn load(client: Client, id: usize, stop: Arc<AtomicBool>) -> Load {
    let mut out = Load::default();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("load{id}-{seq}");
        seq += 1;
        match client.put(key.clone(), key.clone()).await {
            Ok(()) => out.acked.push(key),
            Err(e) => out.write_errors.push(format!("{key}: {e}")),
        }
        if let Some(earlier) = out.acked.get(out.acked.len() / 2).cloned() {
            out.reads += 1;
            match client.get(earlier.clone()).await {
                Ok(Some(v)) if v == earlier.as_bytes() => {}
                Ok(other) => out.read_errors.push(format!("{earlier}: read {other:?}")),
                Err(e) => out.read_errors.push(format!("{earlier}: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

async fn write_keys(client: &Client, prefix: &str, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for key in &keys {
        client.put(key.clone(), key.clone()).await.unwrap();
    }
    keys
}

async fn all_readable(client: &Client, keys: &[String]) {
    for key in keys {
        let value = client.get(key.clone()).await.unwrap();
        assert_eq!(value.as_deref(), Some(key.as_bytes()), "{key} lost");
    }
}

/// Waits until the node `client` asks lists `node` as out of the ring.
async fn wait_out_of_ring(client: &Client, node: &str) {
    wait_for(&format!("{node} out of the ring"), Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let members = client.members().await.ok()?;
            members.members.iter().any(|m| m.node_id == node && !m.in_ring).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_pulls_its_partitions_while_reads_and_writes_go_on() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[SLOW_REPAIR]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let client = cluster.client().with_timeout(Duration::from_secs(5));
    let before = write_keys(&client.with_consistency(Consistency::All), "before", 3000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..3).map(|id| tokio::spawn(load(client.clone(), id, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let joined_at = Instant::now();
    let n4 = cluster.add(&[SLOW_REPAIR]);
    let n4_addr = cluster.nodes[n4].addr;
    // Transfers show up in the joining node's status.
    let saw_transfer = Arc::new(AtomicBool::new(false));
    wait_for("n4 serving", Duration::from_secs(60), || {
        let (client, saw) = (client.clone(), saw_transfer.clone());
        async move {
            let status = client.status_of(n4_addr).await.ok()?;
            if status.transfers.phase.as_deref() == Some("joining") {
                saw.store(true, Ordering::Relaxed);
            }
            (status.status == ringkv_net::wire::MemberStatus::Serving).then_some(())
        }
    })
    .await;
    let join_took = joined_at.elapsed();
    cluster.wait_serving(0, 4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let (mut reads, mut read_errors, mut write_errors) = (0, Vec::new(), Vec::new());
    for l in loads {
        let l = l.await.unwrap();
        acked.extend(l.acked);
        reads += l.reads;
        read_errors.extend(l.read_errors);
        write_errors.extend(l.write_errors);
    }
    let status = client.status_of(n4_addr).await.unwrap();
    println!(
        "n4 joined in {join_took:?}: {} partitions, {} keys / {} bytes pulled; load: {} writes acked, {} failed, {} reads, \
         {} failed",
        status.transfers.partitions_total,
        status.transfers.keys_moved,
        status.transfers.bytes_moved,
        acked.len(),
        write_errors.len(),
        reads,
        read_errors.len()
    );
    assert!(saw_transfer.load(Ordering::Relaxed), "status never showed the transfer");
    assert!(status.partitions_owned > 0, "n4 owns no partitions");
    assert!(status.transfers.keys_moved > 0, "n4 pulled nothing");
    assert!(read_errors.is_empty(), "reads failed during the join: {:?}", &read_errors[..read_errors.len().min(5)]);
    assert!(write_errors.is_empty(), "writes failed during the join: {:?}", &write_errors[..write_errors.len().min(5)]);

    // Every key, old or written during the join, is readable and held by
    // its three current replicas, n4 included where it is one.
    all_readable(&client, &before).await;
    all_readable(&client, &acked).await;
    let sample: Vec<String> = before.iter().step_by(10).chain(acked.iter().step_by(10)).cloned().collect();
    let took = converged(&client, &sample, 3, Duration::from_secs(30)).await;
    println!("replicas agree {took:?} after the join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_partitions_off_and_exits() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(4, &[SLOW_REPAIR]);
    cluster.wait_serving(0, 4, Duration::from_secs(30)).await;
    let client = cluster.client();
    let keys = write_keys(&client.with_consistency(Consistency::All), "k", 2000).await;

    let leaving = 3;
    let leaving_addr = cluster.nodes[leaving].addr;
    cluster.operator().leave(leaving_addr).await.unwrap();
    let started = Instant::now();
    // The process exits by itself once it has handed everything off.
    let exited = wait_for("n4 to exit after leaving", Duration::from_secs(60), || {
        let done = cluster.nodes[leaving].exited();
        async move { done }
    })
    .await;
    assert!(exited.success(), "n4 exited with {exited:?}");
    println!("n4 left in {:?}", started.elapsed());
    let client = cluster.client_of(0);
    let members = client.members().await.unwrap();
    let n4 = members.members.iter().find(|m| m.node_id == "n4").expect("n4 still gossiped");
    assert!(!n4.in_ring, "n4 is out of the ring");
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    all_readable(&client, &keys).await;
    // Three copies of everything on the three remaining nodes, without
    // waiting for repair (an hour away).
    converged(&client, &keys, 3, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dead_past_the_grace_period_is_replaced_and_returns_as_new() {
    let _serial = SERIAL.lock().await;
    let settings = ["dead_node_grace = \"4s\"", "repair_interval = \"2s\""];
    let mut cluster = Cluster::start(4, &settings);
    cluster.wait_serving(0, 4, Duration::from_secs(30)).await;
    let client = cluster.client_of(0);
    let keys = write_keys(&client.with_consistency(Consistency::All), "k", 1500).await;

    cluster.nodes[3].kill9();
    let client = cluster.client_of(0);
    wait_out_of_ring(&client, "n4").await;
    // Re-replicated: three copies among the three that are left.
    let took = converged(&client, &keys, 3, Duration::from_secs(60)).await;
    println!("three copies again {took:?} after n4 left the ring");

    // Back after the grace period: the others fenced it, so its data is
    // stale; it hears the fence, discards its data and pulls its
    // partitions like a new member.
    cluster.nodes[3] = cluster.nodes[3].spec.start();
    cluster.wait_serving(0, 4, Duration::from_secs(60)).await;
    let log = cluster.nodes[3].log_lines().join("\n");
    assert!(log.contains("discarded this node's data"), "n4 did not discard its stale data:\n{log}");
    all_readable(&client, &keys).await;
    converged(&client, &keys[..300], 3, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_a_node_that_keeps_its_place_and_its_data() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_serving(0, 3, Duration::from_secs(30)).await;
    let client = cluster.client_of(0);
    let keys = write_keys(&client.with_consistency(Consistency::All), "k", 200).await;

    let status = cluster.nodes[2].stop_with(libc::SIGINT, Duration::from_secs(20)).unwrap();
    assert!(status.success(), "n3 exited with {status} after SIGINT");
    // The others see it down, and keep it in their ring.
    wait_for("n1 to see n3 down", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let members = client.members().await.ok()?;
            members.members.iter().any(|m| m.node_id == "n3" && !m.live).then_some(members)
        }
    })
    .await
    .members
    .iter()
    .filter(|m| m.node_id == "n3")
    .for_each(|m| assert!(m.in_ring, "n3 left the ring after SIGINT: {m:?}"));
    let later = write_keys(&client, "later", 50).await;

    // Back with its data directory: it rejoins as the member it was, with
    // the data it had, rather than as a new node.
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    cluster.wait_serving(0, 3, Duration::from_secs(30)).await;
    for key in &keys {
        let explanation = client.explain(key.clone()).await.unwrap();
        let n3 = explanation.replicas.iter().find(|r| r.node_id == "n3").expect("n3 is a replica of every key");
        assert!(matches!(&n3.entry, Ok(Some(e)) if e.value.is_some()), "n3 lost {key}: {:?}", n3.entry);
    }
    let log = cluster.nodes[2].log_lines().join("\n");
    assert!(!log.contains("discard"), "n3 discarded its data after a SIGINT:\n{log}");
    all_readable(&client, &later).await;
    converged(&client, &later, 3, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_with_no_other_member_serving_is_refused_and_sigterm_stops_keeping_the_data() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_serving(0, 3, Duration::from_secs(30)).await;
    let keys = write_keys(&cluster.client_of(0).with_consistency(Consistency::All), "k", 200).await;

    // The other two stop where they stand: still ring members, but down.
    for i in [1, 2] {
        let status = cluster.nodes[i].stop_with(libc::SIGINT, Duration::from_secs(20)).unwrap();
        assert!(status.success(), "n{} exited with {status} after SIGINT", i + 1);
    }
    let client = cluster.client_of(0);
    wait_for("n1 to see n2 and n3 down", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let members = client.members().await.ok()?;
            let down = members.members.iter().filter(|m| m.node_id != "n1" && !m.live && m.in_ring).count();
            (down == 2).then_some(())
        }
    })
    .await;
    // n1 may hold the only copies: its leave is refused, and the reason
    // says to ask again rather than to stop it.
    let n1 = cluster.nodes[0].addr;
    let refusal = cluster.operator_of(0).leave(n1).await.expect_err("n1's leave was taken with no one to hand off to");
    let text = refusal.to_string();
    assert!(text.contains("ask again once another member serves") && !text.contains("stop it"), "{text}");

    // SIGTERM asks for the same leave; refused, the node stops as SIGINT
    // would, keeping its place and its data.
    let status = cluster.nodes[0].terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "n1 exited with {status} after SIGTERM");
    let log = cluster.nodes[0].log_lines().join("\n");
    assert!(log.contains("cannot leave the ring; stopping anyway"), "n1 did not say why it stopped:\n{log}");

    cluster.start_together(&[0, 1, 2]);
    // Reads at `all` go through n2, so n2 too must see all three serving.
    for i in [0, 1] {
        cluster.wait_serving(i, 3, Duration::from_secs(60)).await;
    }
    let log = cluster.nodes[0].log_lines().join("\n");
    assert!(!log.contains("discard"), "n1 discarded its data after a refused leave:\n{log}");
    let client = cluster.client_of(1);
    all_readable(&client.with_consistency(Consistency::All), &keys).await;

    // Asked again once the others serve, the leave goes through: n1 hands
    // its partitions off and exits, and nothing is lost.
    cluster.operator_of(0).leave(n1).await.unwrap();
    let exited = wait_for("n1 to exit after leaving", Duration::from_secs(60), || {
        let done = cluster.nodes[0].exited();
        async move { done }
    })
    .await;
    assert!(exited.success(), "n1 exited with {exited:?}");
    wait_out_of_ring(&client, "n1").await;
    cluster.wait_serving(1, 2, Duration::from_secs(30)).await;
    all_readable(&client.with_consistency(Consistency::All), &keys).await;
}
