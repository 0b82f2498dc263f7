//! Active expiry and tombstone purging.

use ringkv_core::PartitionId;

use crate::node::{Node, every};
use crate::partition::PartitionMsg;

/// Active expiry: every partition gets a bounded sweep per interval, and
/// partitions with work left get another right away, so a burst of expiries
/// is reclaimed quickly without any one sweep holding an actor for long.
pub(crate) async fn sweeper(node: Node) {
    let inner = node.inner.clone();
    every(&node, inner.config.sweep_interval, || async {
        // A clock the others say is off would purge tombstones too early
        // (or expire keys too early): nothing is swept until it agrees.
        if inner.standing.as_ref().is_some_and(|s| s.clock_off().is_some()) {
            return;
        }
        let grace = inner.config.tombstone_grace.as_millis() as u64;
        let topo = inner.topology();
        for (i, partition) in inner.partitions.iter().enumerate() {
            for _ in 0..16 {
                if inner.stopping() {
                    return;
                }
                let horizon = inner.repair.purge_horizon(&topo, PartitionId(i as u16), inner.now_ms(), grace);
                let budget = inner.config.sweep_budget;
                match partition.call(|reply| PartitionMsg::Sweep { horizon, budget, reply }).await {
                    Ok(sweep) if sweep.more => tokio::task::yield_now().await,
                    _ => break,
                }
            }
        }
    })
    .await;
}
