//! What the harness measures besides the history: node memory while the run
//! goes on, replica convergence after it, and the final reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringkv_client::Client;
use ringkv_core::{Epoch, KvStore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::checker::{describe_replicas, replicas_agree};
use crate::cluster::Pids;
use crate::history::{FINAL_READER, OpKind, Phase, Record};
use crate::workload::{RunClock, read_of};

/// Resident set size of a process, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples every node's RSS every `every` until `stop`; returns the largest
/// seen per node (across restarts).
pub async fn sample_memory(pids: Pids, every: Duration, stop: Arc<AtomicBool>) -> BTreeMap<String, u64> {
    let mut max: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let now: Vec<(String, u32)> =
            pids.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (node, pid) in now {
            if let Some(rss) = rss_bytes(pid) {
                let m = max.entry(node).or_insert(0);
                *m = (*m).max(rss);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return max;
        }
        tokio::time::sleep(every).await;
    }
}

/// The outcome of waiting for convergence.
#[derive(Debug, Clone)]
pub struct Convergence {
    /// Time from the start of the wait until a pass found every key's
    /// replicas identical; `None` if the bound passed first.
    pub converged_after: Option<Duration>,
    pub passes: u32,
    pub keys: usize,
    /// At the bound: keys whose replicas still differed, with what they held.
    pub diverged: Vec<(String, String)>,
    /// How long the last pass took (the resolution of `converged_after`).
    pub last_pass: Duration,
}

/// Compares every key's replicas (via `explain`) in full passes until one
/// pass finds them all identical, or `bound` passes. `now_ms` is the wall
/// clock expiry is judged by (the simulator's, in the simulator).
pub async fn wait_converged(
    client: &Client,
    nodes: &[SocketAddr],
    keys: &[String],
    replication: usize,
    bound: Duration,
    now_ms: impl Fn() -> u64,
) -> Convergence {
    let start = Instant::now();
    let mut passes = 0;
    loop {
        passes += 1;
        let pass = Instant::now();
        let diverged = diverged_keys(client, nodes, keys, replication, &now_ms).await;
        let last_pass = pass.elapsed();
        if diverged.is_empty() {
            return Convergence {
                converged_after: Some(start.elapsed()),
                passes,
                keys: keys.len(),
                diverged,
                last_pass,
            };
        }
        if start.elapsed() >= bound {
            return Convergence { converged_after: None, passes, keys: keys.len(), diverged, last_pass };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One pass: the keys whose replicas differ now.
async fn diverged_keys(
    client: &Client,
    nodes: &[SocketAddr],
    keys: &[String],
    replication: usize,
    now_ms: impl Fn() -> u64,
) -> Vec<(String, String)> {
    // The truncate epoch: entries it covers count as absent.
    let mut epoch = Epoch::NONE;
    for addr in nodes {
        let asked = Instant::now();
        match client.status_of(*addr).await {
            Ok(status) => epoch = epoch.merge(status.epoch),
            Err(e) => eprintln!("[chaos] status of {addr} failed after {:?}: {e}", asked.elapsed()),
        }
        if asked.elapsed() > Duration::from_secs(1) {
            eprintln!("[chaos] status of {addr} took {:?}", asked.elapsed());
        }
    }
    // One instant for the whole pass: a key's replicas are all judged at
    // the same time, so an expiry between two answers is no difference.
    let now = now_ms();
    let diverged = for_each_key(keys, move |key| {
        let client = client.clone();
        async move {
            match client.explain(Bytes::from(key.clone())).await {
                Err(e) => Some((key, format!("explain failed: {e}"))),
                Ok(explanation) => {
                    let replicas: Vec<_> = explanation.replicas.into_iter().map(|r| (r.node_id, r.entry)).collect();
                    if replicas_agree(&replicas, replication, now, epoch) {
                        None
                    } else {
                        Some((key, describe_replicas(&replicas)))
                    }
                }
            }
        }
    })
    .await;
    let mut diverged: Vec<(String, String)> = diverged.into_iter().flatten().collect();
    diverged.sort();
    diverged
}

/// Reads every key at consistency `all`, retrying each until it succeeds or
/// `deadline`; records the successful read (or the last failure).
pub async fn final_reads(client: &Client, keys: &[String], clock: RunClock, deadline: Duration) -> Vec<Record> {
    let deadline = Instant::now() + deadline;
    let mut out = for_each_key(keys, move |key| {
        let client = client.clone();
        async move {
            loop {
                let mut r = Record::invoke(FINAL_READER, Phase::Final, OpKind::Get, Some(key.clone()), clock.ms());
                let result = client.get(Bytes::from(key.clone())).await;
                r.finish(clock.ms(), &result);
                match result {
                    Ok(value) => {
                        r.read = Some(read_of(value));
                        return r;
                    }
                    Err(_) if Instant::now() >= deadline => return r,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
    })
    .await;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Runs `work` for every key, a bounded number at a time, and collects the
/// results in completion order.
async fn for_each_key<T, F, Fut>(keys: &[String], work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    const CONCURRENCY: usize = 16;
    let mut tasks = JoinSet::new();
    let mut out = Vec::with_capacity(keys.len());
    let mut pending = keys.iter().cloned();
    loop {
        while tasks.len() < CONCURRENCY {
            let Some(key) = pending.next() else { break };
            tasks.spawn(work(key));
        }
        match tasks.join_next().await {
            Some(Ok(result)) => out.push(result),
            Some(Err(e)) => panic!("a per-key task failed: {e}"),
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tringkv\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
