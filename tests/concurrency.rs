//! Many clients on overlapping keys against one node. Every operation is
//! recorded with its invocation and completion time; afterwards each key
//! must hold a value that no later write (one invoked after it completed)
//! supersedes, and no read may have returned a value older than a write
//! that completed before the read began.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{Certs, node_spec};
use ringkv::{Bytes, KvStore};
use ringkv_core::SplitMix64;

const CLIENTS: usize = 16;
const OPS: usize = 400;
const KEYS: u64 = 20;

#[derive(Clone, Debug)]
struct Write {
    value: Bytes,
    invoked: Instant,
    done: Instant,
}

#[derive(Clone, Debug)]
struct Read {
    key: String,
    value: Option<Bytes>,
    invoked: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_state_is_the_last_acknowledged_write_per_key() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let node = node_spec("cc", data.path(), certs.path()).start();
    let writes: Arc<Mutex<HashMap<String, Vec<Write>>>> = Arc::default();
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        // Each task has its own client and connection.
        let client = certs.client(vec![node.addr]);
        let (writes, reads) = (writes.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(c as u64 + 1);
            for i in 0..OPS {
                let key = format!("key-{}", rng.below(KEYS));
                let invoked = Instant::now();
                if rng.chance(0.5) {
                    let value = Bytes::from(format!("c{c}-{i}"));
                    client.put(key.clone(), value.clone()).await.unwrap();
                    let done = Instant::now();
                    writes.lock().unwrap().entry(key).or_default().push(Write { value, invoked, done });
                } else {
                    let value = client.get(key.clone()).await.unwrap();
                    reads.lock().unwrap().push(Read { key, value, invoked });
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let client = certs.client(vec![node.addr]);
    let writes = writes.lock().unwrap().clone();
    for (key, history) in &writes {
        let last = client.get(key.clone()).await.unwrap().expect("a written key is present");
        let chosen = history.iter().find(|w| w.value == last).expect("the final value was written by someone");
        let superseded = history.iter().any(|w| w.invoked > chosen.done);
        assert!(!superseded, "{key}: final value {last:?} was overwritten by a later acknowledged write");
    }
    let mut stale_reads = 0;
    for read in reads.lock().unwrap().iter() {
        let history = writes.get(&read.key).map(Vec::as_slice).unwrap_or(&[]);
        let completed_before: Vec<&Write> = history.iter().filter(|w| w.done < read.invoked).collect();
        match &read.value {
            None => assert!(completed_before.is_empty(), "read of {} found nothing after a completed write", read.key),
            Some(v) => {
                let source = history.iter().find(|w| w.value == v).expect("read a value nobody wrote");
                // Stale: some write completed before the read began, and the
                // value read had completed before that write began.
                if completed_before.iter().any(|w| source.done < w.invoked) {
                    stale_reads += 1;
                }
            }
        }
    }
    assert_eq!(stale_reads, 0, "reads returned values older than writes completed before them");
}
