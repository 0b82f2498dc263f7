//! `clear` while a node is down: the node learns the truncate epoch from
//! gossip before it serves, so no cleared key is readable anywhere once it
//! is back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, raw_connector};
use ringkv::{Consistency, KvStore};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{Reply, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_with_a_node_down_is_learned_before_it_serves() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let client = cluster.client().with_consistency(Consistency::All);
    // Enough data that dropping what the clear covers takes n3 a while when
    // it comes back: long enough for a node that served before it had
    // learned the epoch to be caught doing so.
    let fillers: Vec<_> = (0..32)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..1_000 {
                    client.put(format!("fill-{t}-{i}"), "before").await.unwrap();
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.await.unwrap();
    }
    for i in 0..100 {
        client.put(format!("key-{i}"), "before").await.unwrap();
    }
    cluster.nodes[2].kill9();
    cluster.wait_serving(0, 2, Duration::from_secs(20)).await;

    let client = cluster.client();
    client.clear().await.unwrap();
    client.put("after", "clear").await.unwrap();

    cluster.nodes[2] = cluster.nodes[2].spec.start();
    // From the moment it announces itself, n3 must not serve cleared data,
    // as a coordinator or as a replica.
    let raw = raw_connector(&TlsPaths::client_in(cluster.certs.path()));
    let n3 = cluster.nodes[2].addr;
    for i in 0..100 {
        let key = Bytes::from(format!("key-{i}"));
        let get = Request::Get { key: key.clone(), consistency: Consistency::One };
        assert_eq!(raw.call(n3, &get, Duration::from_secs(5)).await.unwrap(), Ok(Reply::Value(None)), "key-{i} via n3");
        let explanation = client.explain(key).await.unwrap();
        for replica in explanation.replicas {
            if let Ok(Some(entry)) = &replica.entry {
                assert!(entry.value.is_none(), "key-{i} still has a value on {}", replica.node_id);
            }
        }
    }
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    for node in 0..3 {
        let one = cluster.client_of(node).with_consistency(Consistency::One);
        for i in 0..100 {
            assert_eq!(one.get(format!("key-{i}")).await.unwrap(), None);
        }
        assert_eq!(one.get("after").await.unwrap().as_deref(), Some(&b"clear"[..]), "writes after clear survive");
    }
}

/// `clear` through a node whose clock is `skew_ms` off (beyond
/// `max_clock_drift` either way) while a third node is cut off: every key
/// acknowledged before the clear is gone, every key acknowledged after it
/// is kept, and the cut-off node learns the clear when the cut heals.
async fn clear_is_ordered_by_acknowledgement_whatever_the_clocks(skew_ms: i64) {
    let cluster = Cluster::start(3, &["fault_injection = true", "max_clock_drift = \"10s\""]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| (n.addr, n.spec.gossip.unwrap())).collect();
    let admin = cluster.operator();
    let cut = |heal: bool| {
        let admin = admin.clone();
        let addrs = addrs.clone();
        async move {
            let of = |i: usize| if heal { Vec::new() } else { vec![addrs[i].0, addrs[i].1] };
            admin.inject_fault(addrs[0].0, of(2)).await.unwrap();
            admin.inject_fault(addrs[1].0, of(2)).await.unwrap();
            let both = if heal { Vec::new() } else { [of(0), of(1)].concat() };
            admin.inject_fault(addrs[2].0, both).await.unwrap();
        }
    };
    cut(false).await;
    cluster.wait_serving(0, 2, Duration::from_secs(20)).await;
    cluster.wait_serving(1, 2, Duration::from_secs(20)).await;
    admin.inject_skew(addrs[0].0, skew_ms).await.unwrap();

    // A fresh client for each step: no session carries clocks between them,
    // so only the cluster can order the writes and the clear.
    let via_n2 = || cluster.client_of(1);
    for i in 0..30 {
        via_n2().put(format!("before-{i}"), "v").await.unwrap();
    }
    // A request carries its deadline in the client's wall-clock time, so a
    // client only uses a coordinator whose clock is off by less than its
    // timeout (README); this one allows for the skew.
    cluster.client_of(0).with_timeout(Duration::from_secs(180)).clear().await.unwrap();
    for i in 0..30 {
        via_n2().put(format!("after-{i}"), "v").await.unwrap();
    }

    // The clock first: healed with it still off, the majority would stop
    // n1 until it agreed again (`clock_check.rs`).
    admin.inject_skew(addrs[0].0, 0).await.unwrap();
    cut(true).await;
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(30)).await;
    }
    let all = cluster.client().with_consistency(Consistency::All);
    let mut lost = Vec::new();
    let mut survived = Vec::new();
    for i in 0..30 {
        if all.get(format!("after-{i}")).await.unwrap().is_none() {
            lost.push(i);
        }
        if all.get(format!("before-{i}")).await.unwrap().is_some() {
            survived.push(i);
        }
    }
    assert!(lost.is_empty(), "writes acknowledged after the clear were lost: {lost:?}");
    assert!(survived.is_empty(), "writes acknowledged before the clear survived it: {survived:?}");
    // n3 was cut off throughout; it learned the clear and holds no key the
    // clear covered, as a coordinator at consistency one.
    let one = cluster.client_of(2).with_consistency(Consistency::One);
    for i in 0..30 {
        assert_eq!(one.get(format!("before-{i}")).await.unwrap(), None, "before-{i} via n3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_through_a_fast_node_loses_no_write_acknowledged_after_it() {
    clear_is_ordered_by_acknowledgement_whatever_the_clocks(120_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_through_a_slow_node_removes_every_write_acknowledged_before_it() {
    clear_is_ordered_by_acknowledgement_whatever_the_clocks(-120_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_reaches_no_seed_does_not_serve_data_a_clear_may_cover() {
    let join_timeout = Duration::from_secs(2);
    let setting = format!("join_timeout = \"{}s\"", join_timeout.as_secs());
    let mut cluster = Cluster::start(3, &[&setting]);
    cluster.wait_serving(0, 3, Duration::from_secs(20)).await;
    let all = cluster.client().with_consistency(Consistency::All);
    for i in 0..20 {
        all.put(format!("key-{i}"), "before").await.unwrap();
    }
    // n3 has recorded that it is a member, so it restarts as a returning one.
    cluster.nodes[2].wait_member_file().await;
    cluster.nodes[2].kill9();
    cluster.wait_serving(0, 2, Duration::from_secs(20)).await;
    cluster.client_of(0).clear().await.unwrap();
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();

    // n3 comes back while no seed answers.
    let n3 = cluster.nodes[2].spec.start_in_background();
    // The deliberate wait is the join timeout itself: by then n3 used to
    // start alone and serve what the clear had removed.
    tokio::time::sleep(join_timeout * 3).await;
    assert!(!n3.is_finished(), "n3 started alone, with data a clear it never heard of may cover");

    cluster.start_together(&[0, 1]);
    cluster.nodes[2] = n3.wait();
    cluster.wait_serving(2, 3, Duration::from_secs(30)).await;
    let one = cluster.client_of(2).with_consistency(Consistency::One);
    for i in 0..20 {
        assert_eq!(one.get(format!("key-{i}")).await.unwrap(), None, "key-{i} via n3");
    }
}

/// `clear` while every partition's mailbox (one request deep here) is kept
/// full by writers: the epoch is applied to every partition, retried while
/// a mailbox is full, rather than stopping at the first busy one. Every
/// write acknowledged before the clear is gone, and every write
/// acknowledged after it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clear_reaches_every_partition_while_their_mailboxes_are_full() {
    let cluster = Cluster::start(1, &["mailbox_capacity = 1", "partitions = 8"]);
    cluster.wait_serving(0, 1, Duration::from_secs(20)).await;
    let client = cluster.client();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let client = client.clone();
            let stop = stop.clone();
            let acks = acks.clone();
            tokio::spawn(async move {
                // (key, invoked, completed) of every acknowledged put.
                let mut acked = Vec::new();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let key = format!("w{w}-{seq}");
                    let invoked = started.elapsed();
                    if client.put(key.clone(), "v").await.is_ok() {
                        acked.push((key, invoked, started.elapsed()));
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                acked
            })
        })
        .collect();
    // The writers fill the mailboxes first, and go on after the clear.
    let acked_at_least = |n: usize| {
        let acks = acks.clone();
        async move {
            common::wait_for(&format!("{n} acknowledged writes"), Duration::from_secs(30), || {
                let done = acks.load(Ordering::Relaxed) >= n;
                async move { done.then_some(()) }
            })
            .await
        }
    };
    acked_at_least(2_000).await;
    let clear_invoked = started.elapsed();
    client.clear().await.expect("clear while the partitions are busy");
    let clear_completed = started.elapsed();
    let after_clear = acks.load(Ordering::Relaxed) + 2_000;
    acked_at_least(after_clear).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let before: Vec<&String> = acked.iter().filter(|(_, _, done)| *done < clear_invoked).map(|(k, _, _)| k).collect();
    let after: Vec<&String> =
        acked.iter().filter(|(_, invoked, _)| *invoked > clear_completed).map(|(k, _, _)| k).collect();
    assert!(
        before.len() >= 100 && !after.is_empty(),
        "{} writes before the clear, {} after",
        before.len(),
        after.len()
    );
    let reader = client.with_consistency(Consistency::All);
    // A one-deep mailbox is also busy with the node's own sweeps now and
    // then: a read refused as busy is asked again, as the error says to.
    let read = |key: String| {
        let reader = reader.clone();
        async move {
            common::wait_for(&format!("a read of {key} not refused as busy"), Duration::from_secs(10), || {
                let (reader, key) = (reader.clone(), key.clone());
                async move {
                    match reader.get(key).await {
                        // Busy itself, or a read quorum that a busy
                        // mailbox kept from answering.
                        Err(e) if e.is_retryable() => None,
                        other => Some(other.unwrap()),
                    }
                }
            })
            .await
        }
    };
    for key in before {
        assert_eq!(read(key.clone()).await, None, "{key} was acknowledged before the clear");
    }
    for key in after {
        assert!(read(key.clone()).await.is_some(), "{key} was acknowledged after the clear");
    }
}
