//! Hinted handoff: hints go to their owners once those are up and serving.

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_core::ring::NodeName;
use ringkv_core::{Entry, KvError, PartitionId, Version};
use ringkv_net::wire::ReplicaRequest;

use crate::hints::{HintsMsg, hint_horizon};
use crate::node::Node;
use crate::periodic::every;
use crate::topology::Topology;

/// Hints per delivery, at most; a delivery is also cut to a batch's bytes.
const HINT_BATCH: usize = 512;

/// Hands hints to their owners once they are up and serving; hints for
/// nodes that left the ring go to the key's current replicas instead
/// ([`Node::rehome`]). Expired hints are dropped first.
pub(crate) async fn handoff(node: Node) {
    let inner = node.inner.clone();
    every(node.inner.shutdown.subscribe(), inner.config.hint_replay_interval, || async {
        let horizon = hint_horizon(inner.now_ms(), inner.config.tombstone_grace);
        let epoch = inner.epoch();
        if let Err(e) = inner.hints.call(|reply| HintsMsg::Prune { epoch, older_than_ms: horizon, reply }).await {
            tracing::debug!(error = %e, "hint pruning skipped");
        }
        if inner.standing().is_err() {
            return;
        }
        let Ok((pending, _)) = inner.hints.call(|reply| HintsMsg::Pending { reply }).await else { return };
        for (target, _) in pending {
            if inner.stopping() {
                return;
            }
            if let Err(e) = node.hand_off(&target).await {
                tracing::debug!(%target, error = %e, "hint handoff paused");
            }
        }
    })
    .await;
}

impl Node {
    async fn hand_off(&self, target: &NodeName) -> Result<(), KvError> {
        let inner = &self.inner;
        let topo = inner.topology();
        let in_ring = topo.table.members().contains(target);
        if in_ring && !topo.is_up(target) {
            return Ok(());
        }
        let addr = topo.addr(target);
        let mut delivered_total = 0;
        loop {
            let (max, max_bytes) = (HINT_BATCH, inner.config.batch_bytes());
            let batch =
                inner.hints.call(|reply| HintsMsg::Batch { target: target.clone(), max, max_bytes, reply }).await?;
            if batch.is_empty() {
                break;
            }
            let delivered: Vec<(u16, Bytes, Version)> =
                batch.iter().map(|(p, k, e)| (*p, k.clone(), e.version)).collect();
            match (in_ring, addr) {
                (true, Some(addr)) => {
                    let request = ReplicaRequest::Deliver { entries: batch, hinted: true };
                    inner.peers.call(addr, request, inner.config.replica_timeout * 4).await?;
                }
                _ => self.rehome(&topo, batch).await?,
            }
            delivered_total += delivered.len();
            if let Some(metrics) = &inner.metrics {
                metrics.hints_delivered(delivered.len());
            }
            inner.hints.call(|reply| HintsMsg::Delivered { target: target.clone(), delivered, reply }).await??;
        }
        if delivered_total > 0 {
            tracing::info!(%target, hints = delivered_total, "hints delivered");
        }
        Ok(())
    }

    /// Hints whose owner left the ring: see [`rehome`].
    async fn rehome(&self, topo: &Topology, batch: Vec<(u16, Bytes, Entry)>) -> Result<(), KvError> {
        let Rehome { deliveries, kept } = rehome(topo, batch);
        for (replica, partition, key, entry) in kept {
            self.store_hint(replica, partition, key, entry).await;
        }
        for (node, request) in deliveries {
            self.on_replica(topo, &node, request).await?;
        }
        Ok(())
    }
}

/// Where hints for a node that left the ring go.
#[derive(Debug)]
struct Rehome {
    /// A hinted delivery to each of the keys' replicas now that is up (or
    /// this node), and to each node gaining their partitions.
    deliveries: BTreeMap<NodeName, ReplicaRequest>,
    /// Hints kept here for the replicas now that are down.
    kept: Vec<(NodeName, PartitionId, Bytes, Entry)>,
}

/// Hints still go as hints to their new owners: each checks their age
/// against its own tombstone purge line, as the owner would have; a
/// rewrite as a plain write would not, and could outlive the delete that
/// overruled it. Any delivery failing fails the batch, which stays and is
/// sent again: delivering twice is harmless.
fn rehome(topo: &Topology, batch: Vec<(u16, Bytes, Entry)>) -> Rehome {
    let mut to: BTreeMap<NodeName, Vec<(u16, Bytes, Entry)>> = BTreeMap::new();
    let mut kept = Vec::new();
    for (p, key, entry) in batch {
        let partition = PartitionId(p);
        for replica in topo.replicas(partition) {
            if topo.is_self(replica) || topo.is_up(replica) {
                to.entry(replica.clone()).or_default().push((p, key.clone(), entry.clone()));
            } else {
                kept.push((replica.clone(), partition, key.clone(), entry.clone()));
            }
        }
        for gainer in topo.gaining(partition) {
            if topo.is_self(&gainer) || topo.takes_writes(&gainer) {
                to.entry(gainer).or_default().push((p, key.clone(), entry.clone()));
            }
        }
    }
    let deliveries = to.into_iter().map(|(node, entries)| (node, ReplicaRequest::Deliver { entries, hinted: true }));
    Rehome { deliveries: deliveries.collect(), kept }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use ringkv_core::{Epoch, NodeTag, Timestamp};
    use ringkv_net::wire::MemberStatus;

    use super::*;
    use crate::topology::{Gossiped, build};

    /// Self `a`; `b` and `d` up; `c` down within `dead_node_grace`, so
    /// still a replica; `e` down past it, out of the ring: the node whose
    /// hints are rehomed.
    fn topology() -> Topology {
        let member = |port: u16, dead_for: Option<u64>| Gossiped {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            status: MemberStatus::Serving,
            join: 0,
            live: dead_for.is_none(),
            dead_for: dead_for.map(Duration::from_secs),
            epoch: Epoch::NONE,
            fenced: false,
        };
        let gossiped = BTreeMap::from([
            (NodeName::from("a"), member(1, None)),
            (NodeName::from("b"), member(2, None)),
            (NodeName::from("c"), member(3, Some(10))),
            (NodeName::from("d"), member(4, None)),
            (NodeName::from("e"), member(5, Some(100))),
        ]);
        build(&"a".into(), "x", gossiped, 16, 3, 8, Duration::from_secs(60))
    }

    #[test]
    fn hints_of_a_node_that_left_go_as_hints_to_the_replicas_now() {
        let topo = topology();
        assert!(!topo.table.members().iter().any(|n| &**n == "e"), "e is out of the ring");
        let entry = |ts: u64| Entry::value(Version::new(Timestamp::new(ts, 0), NodeTag(5)), Bytes::from("v"), None);
        let batch: Vec<(u16, Bytes, Entry)> =
            (0..16u16).map(|p| (p, Bytes::from(format!("k{p}")), entry(u64::from(p) + 1))).collect();
        let Rehome { deliveries, kept } = rehome(&topo, batch.clone());
        for (p, key, e) in &batch {
            for replica in topo.replicas(PartitionId(*p)) {
                let delivered = deliveries.get(replica).is_some_and(|request| match request {
                    ReplicaRequest::Deliver { entries, hinted } => {
                        assert!(*hinted, "to {replica}: delivered as a plain write, so no replica checks its age");
                        entries.contains(&(*p, key.clone(), e.clone()))
                    }
                    other => panic!("to {replica}: {other:?}"),
                });
                let held = kept.iter().any(|(n, kp, k, ke)| n == replica && kp.0 == *p && k == key && ke == e);
                match &**replica {
                    "c" => assert!(held && !delivered, "partition {p}: down replica c gets a hint kept"),
                    _ => assert!(delivered && !held, "partition {p}: {replica} gets the hint"),
                }
            }
        }
        assert!(kept.iter().any(|(n, ..)| &**n == "c"), "c replicates some partition");
        assert!(!deliveries.contains_key("e") && !deliveries.contains_key("c"));
        let sent: usize = deliveries
            .values()
            .map(|r| match r {
                ReplicaRequest::Deliver { entries, .. } => entries.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(sent + kept.len(), 16 * 3, "every copy goes somewhere, once");
    }
}
