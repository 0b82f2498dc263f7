//! Progress and pacing of data movement in the background: the byte-rate
//! budgets of repair and transfers, what each reports in `ringkv status`,
//! and the repair record that decides which tombstones may be purged. The
//! state lives in the node (`Inner`); the work that updates it lives in
//! `repair.rs` and `rebalance.rs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::ring::NodeName;
use ringkv_core::{Entry, PartitionId};
use ringkv_net::wire::{RepairStatus, TransferStatus};
use ringkv_storage::Horizon;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::topology::Topology;

/// A byte-rate budget, shared by the tasks that draw on it.
pub(crate) struct Budget(Mutex<TokenBucket>);

impl Budget {
    pub(crate) fn new(bytes_per_sec: u64) -> Budget {
        let rate = bytes_per_sec.max(1) as f64;
        Budget(Mutex::new(TokenBucket { rate, tokens: rate, last: Instant::now() }))
    }

    /// Waits until `bytes` fit the budget.
    pub(crate) async fn throttle(&self, bytes: usize) {
        let wait = self.0.lock().unwrap_or_else(|e| e.into_inner()).take(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// How long to wait before `bytes` may be sent; the debt is taken now.
    fn take(&mut self, bytes: usize) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// How long a dead marker is kept after it died at least, however soon
/// the replicas sync (unless `tombstone_grace` is shorter): longer than a
/// copy of its partition lives on a node that stopped replicating it (the
/// mover drops those within ten seconds) and than any write in flight.
pub(crate) const MARKER_SETTLE: Duration = Duration::from_secs(30);

pub(crate) struct Repair {
    /// (partition, peer) → wall-clock ms at which the last comparison that
    /// ended with both in sync began.
    synced: Mutex<HashMap<(u16, NodeName), u64>>,
    status: Mutex<RepairStatus>,
    /// The fences the member file holds, once the node keeps one
    /// (`rebalance::member_keeper`).
    kept_fences: Mutex<Option<Vec<String>>>,
    pub(crate) budget: Budget,
    pub(crate) wake: Notify,
}

impl Repair {
    pub(crate) fn new(bytes_per_sec: u64) -> Repair {
        Repair {
            synced: Mutex::new(HashMap::new()),
            status: Mutex::new(RepairStatus::default()),
            kept_fences: Mutex::new(None),
            budget: Budget::new(bytes_per_sec),
            wake: Notify::new(),
        }
    }

    pub(crate) fn status(&self) -> RepairStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Which dead entries may be purged from the partition: those whose key
    /// was written before the grace (no hint of an older copy is left) and
    /// that died before every other replica was in sync with us, and
    /// before [`MARKER_SETTLE`]. Every other replica includes those gaining
    /// the partition in a join or leave: a gainer that pulled a key and
    /// then missed its delete (writes to gainers keep no hint) would bring
    /// the key back once the tombstone was gone here (simulator seed 28).
    /// Nothing dead is purged while a member of this node's last ring is
    /// missing from its view (`topology::Missing`): where that member's
    /// replicas lie is unknown, and it may hold an older copy of any key.
    /// Nor while a fence is not yet in the member file: a crash would
    /// forget it, and the fenced member would come back, stale, to a node
    /// that purged without it.
    pub(crate) fn purge_horizon(&self, topo: &Topology, partition: PartitionId, now_ms: u64, grace_ms: u64) -> Horizon {
        let written_before = now_ms.saturating_sub(grace_ms);
        let unkept = self
            .kept_fences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|kept| *kept != topo.fences);
        if !topo.missing.is_empty() || unkept {
            return Horizon { written_before, died_before: 0 };
        }
        if !topo.table.is_replica(partition, &topo.self_name) {
            return Horizon::at(written_before);
        }
        let settled = now_ms.saturating_sub(grace_ms.min(MARKER_SETTLE.as_millis() as u64));
        let synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let gaining = topo.pending.as_ref().map_or(&[][..], |pending| pending.replicas(partition));
        let died_before = topo
            .replicas(partition)
            .iter()
            .chain(gaining)
            .filter(|peer| !topo.is_self(peer))
            .map(|peer| synced.get(&(partition.0, peer.clone())).copied().unwrap_or(0))
            .fold(settled, u64::min);
        Horizon { written_before, died_before }
    }

    /// Records the fences the member file holds now.
    pub(crate) fn fences_kept(&self, fences: Vec<String>) {
        *self.kept_fences.lock().unwrap_or_else(|e| e.into_inner()) = Some(fences);
    }

    /// Records that a comparison with `peer` that began at `at_ms` (wall
    /// clock) left the partition in sync on both sides.
    pub(crate) fn synced(&self, partition: PartitionId, peer: &NodeName, at_ms: u64) {
        self.synced.lock().unwrap_or_else(|e| e.into_inner()).insert((partition.0, peer.clone()), at_ms);
    }

    pub(crate) fn record(&self, update: impl FnOnce(&mut RepairStatus)) {
        update(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

pub(crate) struct Transfers {
    status: Mutex<TransferStatus>,
    pub(crate) budget: Budget,
}

impl Transfers {
    pub(crate) fn new(bytes_per_sec: u64) -> Transfers {
        Transfers { status: Mutex::new(TransferStatus::default()), budget: Budget::new(bytes_per_sec) }
    }

    pub(crate) fn status(&self) -> TransferStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn record(&self, update: impl FnOnce(&mut TransferStatus)) {
        update(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// What entries cost to move: their keys and stored sizes.
pub(crate) fn entries_bytes(entries: &[(Bytes, Entry)]) -> usize {
    entries.iter().map(|(k, e)| k.len() + e.size_bytes()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_wait_for_every_other_replica_and_the_settle_time_and_their_writes_for_the_grace() {
        use crate::topology::{Gossiped, build};
        let member = |port: u16| Gossiped::serving(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        let gossiped = [("a", 1), ("b", 2), ("c", 3)].map(|(n, port)| (NodeName::from(n), member(port)));
        let topo = build(&NodeName::from("a"), "test", gossiped.into(), 4, 3, 8, Duration::from_secs(60));
        let repair = Repair::new(1 << 20);
        let (p, now, grace) = (PartitionId(0), 1_000_000, 600_000);
        let sync = |peer: &str, at: u64| repair.synced(p, &NodeName::from(peer), at);
        let horizon = |grace| repair.purge_horizon(&topo, p, now, grace);
        assert_eq!(horizon(grace), Horizon { written_before: 400_000, died_before: 0 }, "nobody synced yet");
        sync("b", 990_000);
        assert_eq!(horizon(grace).died_before, 0, "c has not synced");
        sync("c", 950_000);
        assert_eq!(horizon(grace), Horizon { written_before: 400_000, died_before: 950_000 });
        sync("c", 999_000);
        assert_eq!(horizon(grace).died_before, 970_000, "30 s after death at least");
        assert_eq!(horizon(5_000), Horizon { written_before: 995_000, died_before: 990_000 }, "a shorter grace");
        let mut missing_d = topo.clone();
        missing_d.missing = vec![NodeName::from("d")];
        assert_eq!(
            repair.purge_horizon(&missing_d, p, now, grace),
            Horizon { written_before: 400_000, died_before: 0 },
            "a member of the last ring is missing: nothing dead is purged"
        );
        let mut fencing_d = topo.clone();
        fencing_d.fences = vec!["d#7".into()];
        assert_eq!(repair.purge_horizon(&fencing_d, p, now, grace).died_before, 970_000, "no member file kept");
        repair.fences_kept(Vec::new());
        assert_eq!(repair.purge_horizon(&fencing_d, p, now, grace).died_before, 0, "a fence not yet written");
        repair.fences_kept(fencing_d.fences.clone());
        assert_eq!(repair.purge_horizon(&fencing_d, p, now, grace).died_before, 970_000, "written");
    }

    #[test]
    fn markers_wait_for_a_replica_gaining_the_partition_too() {
        use crate::topology::{Gossiped, build};
        use ringkv_net::wire::MemberStatus;
        let member = |port: u16, status| Gossiped {
            status,
            ..Gossiped::serving(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        };
        let serving = MemberStatus::Serving;
        let gossiped = [("a", 1, serving), ("b", 2, serving), ("c", 3, serving), ("d", 4, MemberStatus::Joining)]
            .map(|(n, port, status)| (NodeName::from(n), member(port, status)));
        let topo = build(&NodeName::from("a"), "test", gossiped.into(), 16, 3, 8, Duration::from_secs(60));
        let pending = topo.pending.as_ref().expect("d joins");
        let p = (0..16)
            .map(PartitionId)
            .find(|p| topo.table.is_replica(*p, "a") && pending.is_replica(*p, "d") && !topo.table.is_replica(*p, "d"))
            .expect("a partition of a's that d gains");
        let repair = Repair::new(1 << 20);
        let (now, grace) = (1_000_000, 600_000);
        for peer in topo.replicas(p).iter().filter(|peer| !topo.is_self(peer)) {
            repair.synced(p, peer, 990_000);
        }
        assert_eq!(repair.purge_horizon(&topo, p, now, grace).died_before, 0, "d has not synced");
        repair.synced(p, &NodeName::from("d"), 990_000);
        assert_eq!(repair.purge_horizon(&topo, p, now, grace).died_before, 970_000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_delays_in_proportion_to_the_debt() {
        let mut bucket = TokenBucket { rate: 1000.0, tokens: 1000.0, last: Instant::now() };
        assert_eq!(bucket.take(1000), Duration::ZERO);
        assert_eq!(bucket.take(500), Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(bucket.take(400), Duration::ZERO, "refilled up to one second's worth");
    }
}
