//! Hinted handoff: hints go to their owners once those are up and serving.

use bytes::Bytes;
use ringkv_core::ring::NodeName;
use ringkv_core::{KvError, Version};
use ringkv_net::wire::ReplicaRequest;

use crate::hints::{HintsMsg, hint_horizon};
use crate::node::{Node, every};

/// Hints per delivery, at most; a delivery is also cut to a batch's bytes.
const HINT_BATCH: usize = 512;

/// Hands hints to their owners once they are up and serving; hints for
/// nodes that left the ring are written to the key's current replicas
/// instead. Expired hints are dropped first.
pub(crate) async fn handoff(node: Node) {
    let inner = node.inner.clone();
    every(&node, inner.config.hint_replay_interval, || async {
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
                _ => {
                    // The owner left the ring: the key's replicas are others now.
                    for (_, key, entry) in batch {
                        self.write_entry(key, entry).await?;
                    }
                }
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
}
