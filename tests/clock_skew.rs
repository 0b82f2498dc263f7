//! Write order across a slow clock. Node c's clock is 20 s slow and c is cut
//! off from a and b while a writes a key; then c coordinates a later write
//! to the same key. Without a session, c stamps that write with its own
//! slow clock, below the version it never saw, and last-writer-wins drops
//! the later write once the cut heals. With the client's session clock
//! (`Request::Session`), c first absorbs what the client saw, stamps above
//! it, and the later write stands.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, raw_connector};
use ringkv::{Consistency, KvError, KvStore, Timestamp};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{Reply, Request};

fn put(key: &str, value: &str, consistency: Consistency) -> Request {
    Request::Put { key: Bytes::from(key.to_owned()), value: Bytes::from(value.to_owned()), ttl_ms: None, consistency }
}

fn session(seen: Timestamp, request: Request) -> Request {
    Request::Session { seen, deadline: None, request: Box::new(request) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_orders_a_write_after_what_the_client_saw_despite_a_slow_clock() {
    // Every node, c included, must see all three serving before the cut.
    let cluster = Cluster::start_serving(3, &["fault_injection = true"]).await;
    let client = cluster.client();
    let conn = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let t = Duration::from_secs(5);
    let [a, c] = [0, 2].map(|i| cluster.nodes[i].addr);

    // With three nodes and N=3 every node holds every key.
    cluster.operator().inject_skew(c, -20_000).await.unwrap();
    cluster.cut(2, &[0, 1]).await;

    // a writes both keys; c does not see either.
    let first = conn.call(a, &put("plain", "first", Consistency::Quorum), t).await.unwrap();
    assert_eq!(first, Ok(Reply::Done));
    let first = conn.call(a, &session(Timestamp(0), put("session", "first", Consistency::Quorum)), t).await.unwrap();
    let Ok(Reply::Session { clock: seen, reply }) = first else { panic!("a session reply, got {first:?}") };
    assert_eq!(*reply, Reply::Done);

    // Later, c coordinates the second write of each: one alone, one in the
    // session that saw the first.
    let second = conn.call(c, &put("plain", "second", Consistency::One), t).await.unwrap();
    assert_eq!(second, Ok(Reply::Done));
    let second = conn.call(c, &session(seen, put("session", "second", Consistency::One)), t).await.unwrap();
    let Ok(Reply::Session { clock, reply }) = second else { panic!("a session reply, got {second:?}") };
    assert_eq!(*reply, Reply::Done);
    assert!(clock > seen, "c's clock absorbed the session's: {clock:?} after {seen:?}");

    // Heal; hints and repair bring every replica to the same version.
    cluster.heal().await;
    cluster.operator().inject_skew(c, 0).await.unwrap();
    common::converged(&client, &["plain".into(), "session".into()], 3, Duration::from_secs(60)).await;
    let read = |key: &'static str| {
        let conn = &conn;
        async move {
            let get = Request::Get { key: Bytes::from(key), consistency: Consistency::All };
            match conn.call(a, &get, t).await.unwrap() {
                Ok(Reply::Value(value)) => value,
                other => panic!("reading {key}: {other:?}"),
            }
        }
    };
    // The hole the session closes: without it, the later write is lost.
    assert_eq!(read("plain").await.as_deref(), Some(&b"first"[..]), "the slow clock ordered the later write first");
    assert_eq!(read("session").await.as_deref(), Some(&b"second"[..]), "the session's later write stands");

    // The client carries its session by itself.
    let before = client.session();
    client.put("carried", "v").await.unwrap();
    assert!(client.session() > before, "a write moves the session clock forward");
}

/// A node whose wall clock strays from the majority's by more than half of
/// `max_clock_drift` serves nothing (its `ttl` answers and purge horizons
/// would be off by as much) until it agrees again; the others serve on.
/// Simulator seed 1 found a node 18.6 s behind answering `ttl` by its own
/// clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_strays_from_the_majority_serves_nothing_until_it_agrees() {
    let cluster = Cluster::start_serving(3, &["fault_injection = true", "max_clock_drift = \"4s\""]).await;
    let conn = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let t = Duration::from_secs(5);
    let [a, c] = [0, 2].map(|i| cluster.nodes[i].addr);
    assert_eq!(conn.call(a, &put("k", "v", Consistency::All), t).await.unwrap(), Ok(Reply::Done));
    let get = Request::Get { key: Bytes::from("k"), consistency: Consistency::Quorum };

    // Within the bound (2 s): c serves throughout several checks.
    cluster.operator().inject_skew(c, -1_500).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let served = conn.call(c, &get, t).await.unwrap();
        assert_eq!(served, Ok(Reply::Value(Some(Bytes::from("v")))), "c refused with its clock 1.5 s off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.operator().inject_skew(c, -20_000).await.unwrap();
    let reason = common::wait_for("c to refuse with its clock 20 s behind", Duration::from_secs(20), || {
        let (conn, get) = (&conn, get.clone());
        async move {
            match conn.call(c, &get, t).await.unwrap() {
                Err(KvError::Unavailable(reason)) => Some(reason),
                _ => None,
            }
        }
    })
    .await;
    assert!(reason.contains("clock runs") && reason.contains("behind"), "{reason}");
    let status = cluster.operator().status_of(c).await.unwrap();
    let off = status.clock_off_ms.expect("the status names the clock's offset");
    assert!((15_000..=25_000).contains(&off), "the others read about 20 s later: {off}");
    // The CLI names the node and its offset, and exits as for an
    // unreachable node.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["status", "--certs"])
        .arg(cluster.certs.path())
        .args(["--addr", &a.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    let line = stdout.lines().skip_while(|l| !l.starts_with("clocks off")).nth(1).unwrap_or_default();
    assert!(line.contains("n3") && line.contains("ms behind"), "{stdout}");
    // The majority serves on, and writes reach a quorum without c.
    assert_eq!(conn.call(a, &put("k", "w", Consistency::Quorum), t).await.unwrap(), Ok(Reply::Done));

    cluster.operator().inject_skew(c, 0).await.unwrap();
    common::wait_for("c to serve again with its clock right", Duration::from_secs(20), || {
        let (conn, get) = (&conn, get.clone());
        async move { matches!(conn.call(c, &get, t).await.unwrap(), Ok(Reply::Value(_))).then_some(()) }
    })
    .await;
}
