//! Active expiry and tombstone purging.

use std::sync::Arc;
use std::time::Duration;

use ringkv_core::{Clock, PartitionId};
use tokio::sync::watch;

use crate::membership::Standing;
use crate::partition::{PartitionMailbox, PartitionMsg};
use crate::periodic::every;
use crate::progress::Repair;
use crate::topology::Topology;

/// What the sweeper works from, and nothing else of the node: it purges
/// tombstones, so what decides how far (the repair records, the topology,
/// the clock and its check) is in plain sight.
pub(crate) struct Sweeper {
    pub partitions: Vec<PartitionMailbox>,
    /// The comparisons that left replicas in sync, which set each
    /// partition's purge horizon.
    pub repair: Arc<Repair>,
    pub topology: watch::Receiver<Arc<Topology>>,
    /// A clustered node's standing: while its clock is off from the
    /// majority's, nothing is swept.
    pub standing: Option<Arc<Standing>>,
    pub clock: Arc<dyn Clock>,
    pub interval: Duration,
    pub tombstone_grace: Duration,
    /// Entries one sweep of one partition may remove, at most.
    pub budget: usize,
}

/// Active expiry: every partition gets a bounded sweep per interval, and
/// partitions with work left get another right away, so a burst of expiries
/// is reclaimed quickly without any one sweep holding an actor for long.
pub(crate) async fn sweeper(sweeper: Sweeper, shutdown: watch::Receiver<bool>) {
    let stopping = shutdown.clone();
    let grace = sweeper.tombstone_grace.as_millis() as u64;
    every(shutdown, sweeper.interval, || async {
        // A clock the others say is off would purge tombstones too early
        // (or expire keys too early): nothing is swept until it agrees.
        if sweeper.standing.as_ref().is_some_and(|s| s.clock_off().is_some()) {
            return;
        }
        let topo = sweeper.topology.borrow().clone();
        for (i, partition) in sweeper.partitions.iter().enumerate() {
            for _ in 0..16 {
                if *stopping.borrow() {
                    return;
                }
                let horizon = sweeper.repair.purge_horizon(&topo, PartitionId(i as u16), sweeper.clock.now_ms(), grace);
                let budget = sweeper.budget;
                match partition.call(|reply| PartitionMsg::Sweep { horizon, budget, reply }).await {
                    Ok(sweep) if sweep.more => tokio::task::yield_now().await,
                    _ => break,
                }
            }
        }
    })
    .await;
}
