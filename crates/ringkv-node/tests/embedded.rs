//! The embedded node through the `KvStore` trait, with a hand-driven clock.

use std::sync::Arc;
use std::time::Duration;

use ringkv_core::{KeyTtl, KvError, KvStore, ManualClock};
use ringkv_node::{Env, Node, NodeConfig, Persistence};

fn config(dir: &std::path::Path, persistence: Persistence) -> NodeConfig {
    NodeConfig {
        node_id: "t1".into(),
        data_dir: dir.to_path_buf(),
        persistence,
        partitions: 8,
        max_key_bytes: 16,
        max_value_bytes: 64,
        wal_queue_bytes: 1 << 20,
        ..NodeConfig::default()
    }
}

async fn start(dir: &std::path::Path, persistence: Persistence, clock: &Arc<ManualClock>) -> Node {
    Node::start_with(config(dir, persistence), Env { clock: clock.clone(), ..Env::default() }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_have_their_documented_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let node = start(dir.path(), Persistence::None, &clock).await;

    node.put("a", "1").await.unwrap();
    assert_eq!(node.get("a").await.unwrap().unwrap(), "1");
    assert!(node.exists("a").await.unwrap());
    assert_eq!(node.ttl("a").await.unwrap(), KeyTtl::Persistent);
    assert_eq!(node.ttl("nope").await.unwrap(), KeyTtl::Missing);

    node.put_with_ttl("t", "x", Duration::from_secs(10)).await.unwrap();
    assert_eq!(node.ttl("t").await.unwrap(), KeyTtl::Expires(Duration::from_secs(10)));
    clock.advance_ms(4_000);
    assert_eq!(node.ttl("t").await.unwrap(), KeyTtl::Expires(Duration::from_secs(6)));
    assert!(node.persist("t").await.unwrap());
    assert!(!node.persist("t").await.unwrap(), "nothing left to persist");
    assert_eq!(node.ttl("t").await.unwrap(), KeyTtl::Persistent);
    assert!(node.expire("t", Duration::from_millis(500)).await.unwrap());
    clock.advance_ms(500);
    assert_eq!(node.get("t").await.unwrap(), None, "expired exactly at its deadline");
    assert!(!node.exists("t").await.unwrap());
    assert!(!node.expire("t", Duration::from_secs(1)).await.unwrap());

    assert!(node.delete("a").await.unwrap());
    assert!(!node.delete("a").await.unwrap());
    assert_eq!(node.get("a").await.unwrap(), None);

    for i in 0..20 {
        node.put(format!("k{i}"), "v").await.unwrap();
    }
    node.clear().await.unwrap();
    for i in 0..20 {
        assert_eq!(node.get(format!("k{i}")).await.unwrap(), None);
    }
    node.put("after", "clear").await.unwrap();
    assert_eq!(node.get("after").await.unwrap().unwrap(), "clear");

    assert!(matches!(node.put("k".repeat(17), "v").await, Err(KvError::KeyTooLarge { len: 17, max: 16 })));
    assert!(matches!(node.put("k", vec![0u8; 65]).await, Err(KvError::ValueTooLarge { len: 65, max: 64 })));
    assert!(matches!(node.put("", "v").await, Err(KvError::EmptyKey)));
    assert!(matches!(node.put_with_ttl("k", "v", Duration::ZERO).await, Err(KvError::InvalidTtl(_))));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_reclaims_expired_values() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let node = start(dir.path(), Persistence::None, &clock).await;
    for i in 0..500 {
        node.put_with_ttl(format!("k{i}"), vec![1u8; 50], Duration::from_secs(1)).await.unwrap();
    }
    assert_eq!(node.stats().await.unwrap().values, 500);
    clock.advance_ms(1_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.stats().await.unwrap().values > 0 {
        assert!(tokio::time::Instant::now() < deadline, "sweeper did not reclaim: {:?}", node.stats().await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.stats().await.unwrap().value_bytes, 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_writes_deletes_clears_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let node = start(dir.path(), Persistence::Wal, &clock).await;
    node.put("gone", "x").await.unwrap();
    node.clear().await.unwrap();
    node.put("kept", "1").await.unwrap();
    node.put("deleted", "1").await.unwrap();
    node.delete("deleted").await.unwrap();
    node.put_with_ttl("short", "1", Duration::from_secs(5)).await.unwrap();
    node.snapshot().await.unwrap();
    node.put("after-snapshot", "2").await.unwrap();
    node.put_with_ttl("long", "1", Duration::from_secs(60)).await.unwrap();
    node.shutdown().await;

    clock.advance_ms(10_000);
    let node = start(dir.path(), Persistence::Wal, &clock).await;
    assert_eq!(node.get("kept").await.unwrap().unwrap(), "1");
    assert_eq!(node.get("after-snapshot").await.unwrap().unwrap(), "2");
    assert_eq!(node.get("deleted").await.unwrap(), None);
    assert_eq!(node.get("gone").await.unwrap(), None);
    assert_eq!(node.get("short").await.unwrap(), None);
    assert_eq!(node.ttl("long").await.unwrap(), KeyTtl::Expires(Duration::from_secs(50)));
    // With the clock standing still, a write after restart still wins over
    // what was written before.
    node.put("kept", "3").await.unwrap();
    assert_eq!(node.get("kept").await.unwrap().unwrap(), "3");
    node.shutdown().await;

    let other = NodeConfig { node_id: "t2".into(), ..config(dir.path(), Persistence::Wal) };
    let err = Node::start(other).await.err().expect("another node's data directory is refused");
    assert!(err.to_string().contains("belongs to node 't1'"), "{err}");
}
