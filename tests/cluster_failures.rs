//! One node of three fails under a unique-key write load (N=3, W=2): killed
//! with SIGKILL and restarted, paused with SIGSTOP for 5 s, or stopping by
//! itself because one of its partition actors panicked. Writes must
//! keep succeeding, no acknowledged write may be lost, hints must drain
//! once the node is back, and then every key's replicas must hold the same
//! version.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Cluster;
use ringkv::{Client, KvStore};

/// Cluster tests share two cores; running them one at a time keeps the
/// failure detector's view of "slow" honest.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Write {
    key: String,
    invoked: Instant,
    ok: bool,
}

async fn writer(client: Client, id: usize, stop: Arc<AtomicBool>) -> Vec<Write> {
    let mut log = Vec::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{id}-{seq}");
        seq += 1;
        let invoked = Instant::now();
        let ok = client.put(key.clone(), key.clone()).await.is_ok();
        log.push(Write { key, invoked, ok });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log
}

enum Fault {
    Kill,
    Pause,
    ActorPanic,
}

async fn run(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let settings: &[&str] = match fault {
        Fault::ActorPanic => &["fault_injection = true"],
        _ => &[],
    };
    let mut cluster = Cluster::start(3, settings);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let mut client = cluster.client();
    client = client.with_timeout(Duration::from_secs(3));

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|id| tokio::spawn(writer(client.clone(), id, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = 1;
    let fault_at = Instant::now();
    match fault {
        Fault::Kill => cluster.nodes[victim].kill9(),
        Fault::Pause => cluster.nodes[victim].signal(libc::SIGSTOP).unwrap(),
        Fault::ActorPanic => {
            let addr = cluster.nodes[victim].addr;
            // The actor dies instead of answering and the node stops at
            // once, so the answer can be lost with the connection (the
            // client, retrying, then finds the endpoint closed). What this
            // test judges is the node's exit below.
            match cluster.operator().inject_crash(addr, 0).await {
                Ok(()) | Err(ringkv::KvError::Transport(_)) => {}
                Err(e) => panic!("the crash injection was refused: {e}"),
            }
            // Fail-stop: the node stops by itself, with an error that says
            // which actor failed.
            let node = &mut cluster.nodes[victim];
            let status = common::wait_for("the node to exit", Duration::from_secs(20), || {
                let status = node.exited();
                async move { status }
            })
            .await;
            assert!(!status.success(), "a node whose actor failed must exit with an error, got {status}");
            let log = node.log_lines().join("\n");
            assert!(log.contains("partition 0 failed"), "the error names the actor:\n{log}");
            println!("node exited {:?} after the actor failed", fault_at.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let healed_at = Instant::now();
    match fault {
        Fault::Kill | Fault::ActorPanic => cluster.nodes[victim] = cluster.nodes[victim].spec.start(),
        Fault::Pause => cluster.nodes[victim].signal(libc::SIGCONT).unwrap(),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await.unwrap());
    }

    // Writes keep succeeding: any failure lies within the detection window
    // after the fault, and writes made while the node was out succeeded.
    let failed: Vec<&Write> = writes.iter().filter(|w| !w.ok).collect();
    let acked: Vec<&Write> = writes.iter().filter(|w| w.ok).collect();
    let during = acked.iter().filter(|w| w.invoked > fault_at && w.invoked < healed_at).count();
    println!(
        "{} writes, {} acknowledged ({during} while the node was out), {} failed",
        writes.len(),
        acked.len(),
        failed.len()
    );
    for w in &failed {
        let after = w.invoked.saturating_duration_since(fault_at);
        assert!(
            w.invoked >= fault_at && after < Duration::from_secs(6),
            "write {} failed {after:?} after the fault",
            w.key
        );
    }
    assert!(during > 50, "too few writes while the node was out ({during})");

    // Hints drain once the node is back.
    common::wait_for("hints to drain", Duration::from_secs(30), || {
        let (client, addrs) = (client.clone(), cluster.addrs());
        async move {
            for addr in addrs {
                let status = client.status_of(addr).await.ok()?;
                if !status.hints.is_empty() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;

    // No acknowledged write is lost.
    for w in &acked {
        let value = client.get(w.key.clone()).await.unwrap();
        assert_eq!(value.as_deref(), Some(w.key.as_bytes()), "acknowledged write {} lost", w.key);
    }
    // And every replica holds the same version of every key.
    let keys: Vec<String> = acked.iter().map(|w| w.key.clone()).collect();
    let took = common::converged(&client, &keys, 3, Duration::from_secs(30)).await;
    println!("replicas identical {took:?} after the checks began");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_nothing_and_converges() {
    run(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_pause_loses_nothing_and_converges() {
    run(Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_actor_stops_the_node_and_a_restart_loses_nothing() {
    run(Fault::ActorPanic).await;
}
