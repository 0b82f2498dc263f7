//! A request the client gave up on must not be applied later. A client with
//! a 1 s timeout writes v1 and then v2 to a key whose first replica (the
//! coordinator the client routes to) is stopped with SIGSTOP: v1 times out
//! there, fails over to another node and is acknowledged, v2 is
//! acknowledged. The stopped node still holds v1 in its socket buffers;
//! when it resumes it must refuse it (its deadline has passed), not stamp it
//! with a fresh version that would overwrite v2.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{Certs, Cluster, node_spec, raw_connector};
use ringkv::{Client, ClientConfig, Consistency, KvError, KvStore, Timestamp};
use ringkv_core::Deadline;
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{Reply, Request};

const TRIALS: usize = 3;

/// A key whose preference list starts with node `first` (0-based), so that
/// the client routes its requests there.
async fn key_led_by(client: &Client, first: usize, prefix: &str) -> String {
    let wanted = format!("n{}", first + 1);
    for i in 0.. {
        let key = format!("{prefix}-{i}");
        let explanation = client.explain(key.clone()).await.expect("explain");
        if explanation.replicas[0].node_id == wanted {
            return key;
        }
    }
    unreachable!("the loop only ends by returning")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_later_write_is_never_overwritten_by_its_earlier_write_delivered_late() {
    let cluster = Cluster::start(3, &[]);
    for trial in 0..TRIALS {
        // Each trial stops another node; all must be back and serving first.
        for i in 0..3 {
            cluster.wait_serving(i, 3, Duration::from_secs(30)).await;
        }
        let mut config = ClientConfig::new(cluster.addrs(), TlsPaths::client_in(cluster.certs.path()));
        config.timeout = Duration::from_secs(1);
        let client = Client::new(config).expect("client");
        let victim = trial % 3;
        let key = key_led_by(&client, victim, &format!("trial{trial}")).await;

        cluster.nodes[victim].signal(libc::SIGSTOP).unwrap();
        // v1 times out at the stopped node and is acknowledged through the
        // next one; v2 follows it.
        client.put(key.clone(), "v1").await.unwrap_or_else(|e| panic!("trial {trial}: v1 not acknowledged: {e}"));
        client.put(key.clone(), "v2").await.unwrap_or_else(|e| panic!("trial {trial}: v2 not acknowledged: {e}"));
        cluster.nodes[victim].signal(libc::SIGCONT).unwrap();

        // The resumed node answers once it has worked through what was
        // buffered while it was stopped, the stale v1 included.
        let addr = cluster.nodes[victim].addr;
        common::wait_for("the resumed node to answer", Duration::from_secs(10), || {
            let client = client.clone();
            async move { client.status_of(addr).await.ok() }
        })
        .await;
        common::converged(&client, std::slice::from_ref(&key), 3, Duration::from_secs(60)).await;
        let value = client.with_consistency(Consistency::All).get(key.clone()).await.unwrap();
        assert_eq!(
            value.as_deref(),
            Some(&b"v2"[..]),
            "trial {trial}: the client's later write of {key} was overwritten by its earlier one"
        );
    }
}

/// The refusal itself, without a stopped process: a request whose deadline
/// has already passed by the node's clock gets `DeadlineExpired` and writes
/// nothing, while the same request in time is applied; and so does a late
/// replica write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_refused_and_not_applied() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let node = node_spec("d1", data.path(), certs.path()).start();
    let conn = raw_connector(&TlsPaths::client_in(certs.path()));
    let t = Duration::from_secs(5);
    let now_ms = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let put = |deadline: Deadline| Request::Session {
        seen: Timestamp(0),
        deadline: Some(deadline),
        request: Box::new(Request::Put {
            key: Bytes::from_static(b"late"),
            value: Bytes::from_static(b"v"),
            ttl_ms: None,
            consistency: Consistency::One,
        }),
    };

    let late = conn.call(node.addr, &put(Deadline(now_ms() - 1_000)), t).await.unwrap();
    assert!(matches!(late, Err(KvError::DeadlineExpired { late_ms }) if late_ms >= 1_000), "got {late:?}");
    let get = Request::Get { key: Bytes::from_static(b"late"), consistency: Consistency::One };
    assert_eq!(conn.call(node.addr, &get, t).await.unwrap(), Ok(Reply::Value(None)), "the late put was not applied");

    let in_time = conn.call(node.addr, &put(Deadline(now_ms() + 10_000)), t).await.unwrap();
    assert!(matches!(in_time, Ok(Reply::Session { .. })), "got {in_time:?}");
    let value = conn.call(node.addr, &get, t).await.unwrap();
    assert_eq!(value, Ok(Reply::Value(Some(Bytes::from_static(b"v")))));
}
