//! The memory bound in the background: which partitions this node leads,
//! evicting from them while over the bound, and sending a leader's
//! evictions to the other replicas.

use std::sync::Arc;
use std::time::Duration;

use ringkv_core::{PartitionId, SplitMix64};
use tokio::sync::watch;

use crate::memory::{Evicted, Memory};
use crate::node::Node;
use crate::partition::{PartitionMailbox, PartitionMsg};
use crate::topology::Topology;

/// Keeps the memory bound's view of which partitions this node leads (is
/// the first live replica of) in step with the topology.
pub(crate) async fn leadership(
    memory: Arc<Memory>,
    mut topology: watch::Receiver<Arc<Topology>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let topo = topology.borrow_and_update().clone();
        memory.follow(&topo);
        tokio::select! {
            changed = topology.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Partitions whose best victims the background evictor compares for each
/// key it evicts.
const EVICT_CHOICES: usize = 4;

/// What the background evictor works with: the bound, and the partitions
/// it evicts from.
pub(crate) struct Evictor {
    pub memory: Arc<Memory>,
    pub partitions: Vec<PartitionMailbox>,
    /// How often it looks without being woken: the sweep interval.
    pub interval: Duration,
    /// Seeds its choice of partitions (the node's clock at start).
    pub seed: u64,
}

/// Brings a node that is over its memory bound back under it, by evicting
/// from the partitions it leads: after a recovery into a smaller
/// `maxmemory` or a `CONFIG SET` lowering it, when others' writes filled
/// its replicas, or when a write's
/// own shard had nothing left to evict. Writes evict inline as well; this
/// covers what they cannot.
pub(crate) async fn evictor(evictor: Evictor, mut shutdown: watch::Receiver<bool>) {
    let Evictor { memory, partitions, interval, seed } = evictor;
    if memory.over() {
        // Recovered (or restarted with a smaller bound) over the limit.
        match memory.policy.evicts() {
            true => tracing::warn!(
                used = memory.used(),
                maxmemory = memory.limit(),
                policy = %memory.policy,
                "the recovered data is over maxmemory; evicting from the partitions this node leads"
            ),
            false => tracing::warn!(
                used = memory.used(),
                maxmemory = memory.limit(),
                "the recovered data is over maxmemory and the policy is noeviction; writes that add data are \
                 refused until keys are deleted"
            ),
        }
    }
    let (mut unreported, mut reported_at) = (0usize, None::<tokio::time::Instant>);
    let mut rng = SplitMix64::new(seed);
    loop {
        if memory.over() && memory.policy.evicts() {
            let led: Vec<usize> = (0..partitions.len()).filter(|i| memory.leads(PartitionId(*i as u16))).collect();
            while memory.over() && !led.is_empty() && !*shutdown.borrow() {
                // The best victim of a few partitions at random, so that a
                // key goes only if it ranks low beyond its own shard.
                let mut best: Option<(u64, usize)> = None;
                for _ in 0..EVICT_CHOICES.min(led.len()) {
                    let i = led[rng.below(led.len() as u64) as usize];
                    if let Ok(Some(score)) = partitions[i].call(|reply| PartitionMsg::VictimScore { reply }).await
                        && best.is_none_or(|(s, _)| score > s)
                    {
                        best = Some((score, i));
                    }
                }
                let Some((_, i)) = best else { break };
                match partitions[i].call(|reply| PartitionMsg::Evict { max: 1, reply }).await {
                    Ok(Ok(n)) => unreported += n,
                    _ => break,
                }
            }
        }
        if unreported > 0 && reported_at.is_none_or(|at| at.elapsed() >= EVICTION_REPORT) {
            tracing::info!(
                keys = unreported,
                used = memory.used(),
                maxmemory = memory.limit(),
                "evicted in the background to stay under maxmemory"
            );
            (unreported, reported_at) = (0, Some(tokio::time::Instant::now()));
        }
        tokio::select! {
            _ = memory.wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// At most one log line per this period about background evictions.
const EVICTION_REPORT: Duration = Duration::from_secs(60);

/// Sends a clustered leader's evictions to the partitions' other replicas,
/// as the deletes they are (with hints for replicas that are down).
pub(crate) async fn eviction_sender(node: Node, evicted: tokio::sync::mpsc::Receiver<Evicted>) {
    use futures_util::StreamExt;
    let mut shutdown = node.inner.shutdown.subscribe();
    let stream = futures_util::stream::unfold(evicted, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    let sending = stream.for_each_concurrent(EVICTIONS_IN_FLIGHT, |Evicted { key, entry }| {
        let node = node.clone();
        async move {
            if let Err(e) = node.write_entry(key, entry).await {
                tracing::debug!(error = %e, "an eviction did not reach the other replicas; anti-entropy will");
            }
        }
    });
    tokio::select! {
        _ = sending => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Evictions being sent to other replicas at once.
const EVICTIONS_IN_FLIGHT: usize = 32;
