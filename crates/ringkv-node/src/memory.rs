//! The memory bound (`maxmemory`): what a node's shards hold, which of its
//! partitions it may evict from, and the decision whether a write fits.
//!
//! Evictions are writes: for each partition, only its first live replica
//! (its *leader* here) chooses victims, and deletes them with a stamped
//! tombstone that goes to the other replicas like any delete, so every
//! replica drops the same keys and repair, hints and rejoin never bring an
//! evicted key back. A replica never evicts on its own; one pushed past the
//! bound by others' writes takes them up to [`HEADROOM_DIVISOR`]'s margin,
//! and refuses beyond it. ARCHITECTURE.md, *The memory bound*, argues the
//! choice against the alternatives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use ringkv_core::{EvictionPolicy, Hlc, KvError, NodeTag, PartitionId, Version};
use ringkv_net::wire::MemoryStatus;
use tokio::sync::{Notify, mpsc};

use crate::topology::Topology;

/// A replica (or a leader whose own shard had nothing left to evict) may
/// go past `maxmemory` by this fraction of it before it refuses writes:
/// `maxmemory / 8`, 12.5%, room for writes in flight while the leaders of
/// the node's other partitions evict.
pub(crate) const HEADROOM_DIVISOR: usize = 8;
/// Most keys one write evicts before it is applied; the background
/// evictor does the rest.
pub(crate) const MAX_VICTIMS_PER_WRITE: usize = 16;
/// Evictions queued for replication to the other replicas; past this they
/// are left to anti-entropy (the tombstone is in the leader's shard and
/// digest, so repair moves it).
pub(crate) const EVICTION_QUEUE: usize = 4096;

/// An eviction to send to a partition's other replicas.
pub(crate) struct Evicted {
    pub key: Bytes,
    pub entry: ringkv_core::Entry,
}

/// The node-wide memory bound, shared by the partition actors.
pub(crate) struct Memory {
    /// `maxmemory` in bytes; 0 is no limit. `CONFIG SET maxmemory`
    /// changes it while the node runs.
    limit: AtomicUsize,
    pub policy: EvictionPolicy,
    /// The sum of the shards' footprints.
    used: AtomicUsize,
    /// Keys with a time to live, which the `volatile-*` policies evict.
    volatile: AtomicUsize,
    evictions: AtomicU64,
    refused: AtomicU64,
    /// Per partition: this node is its first live replica.
    leads: Box<[AtomicBool]>,
    hlc: Arc<Hlc>,
    tag: NodeTag,
    /// Evictions a clustered node still has to send to the other replicas.
    replicate: Option<mpsc::Sender<Evicted>>,
    /// Wakes the background evictor when a write left the node over the
    /// bound.
    pub wake: Notify,
}

/// Whether a write that adds `growth` bytes to a shard may be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admit,
    /// Over the bound: evict from this shard first (then decide again).
    Evict,
    /// Over the bound, within the headroom: apply it, and have the
    /// evictor bring the node back under.
    AdmitOver,
    Refuse,
}

/// The admission rule, on its own so that it can be tested directly.
/// `candidates` says whether the node holds any key the policy may evict
/// (for the `volatile-*` policies, any key with a time to live).
pub(crate) fn admission(
    used: usize,
    growth: usize,
    limit: usize,
    policy: EvictionPolicy,
    leads: bool,
    tried_evicting: bool,
    candidates: bool,
) -> Admission {
    let after = used.saturating_add(growth);
    if limit == 0 || growth == 0 || after <= limit {
        return Admission::Admit;
    }
    if !policy.evicts() || !candidates {
        return Admission::Refuse;
    }
    if leads && !tried_evicting {
        return Admission::Evict;
    }
    if after <= with_headroom(limit) { Admission::AdmitOver } else { Admission::Refuse }
}

/// The most a node takes past `limit` before it refuses writes whatever
/// its policy.
pub(crate) fn with_headroom(limit: usize) -> usize {
    limit + limit / HEADROOM_DIVISOR
}

impl Memory {
    pub(crate) fn new(
        limit: usize,
        policy: EvictionPolicy,
        partitions: usize,
        hlc: Arc<Hlc>,
        tag: NodeTag,
        replicate: Option<mpsc::Sender<Evicted>>,
    ) -> Memory {
        Memory {
            limit: AtomicUsize::new(limit),
            policy,
            used: AtomicUsize::new(0),
            volatile: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            leads: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            hlc,
            tag,
            replicate,
            wake: Notify::new(),
        }
    }

    /// Whether other replicas exist: a standalone node drops evicted keys
    /// outright, a clustered one keeps a tombstone like any delete's.
    pub(crate) fn clustered(&self) -> bool {
        self.replicate.is_some()
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A new bound, taking effect with the next write; the evictor is woken
    /// to bring a node now over it back under.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn over(&self) -> bool {
        let limit = self.limit();
        limit > 0 && self.used() > limit
    }

    pub(crate) fn volatile(&self) -> usize {
        self.volatile.load(Ordering::Relaxed)
    }

    /// Adds a shard's change in (footprint, keys with a TTL).
    pub(crate) fn account(&self, before: (usize, usize), after: (usize, usize)) {
        for (total, before, after) in [(&self.used, before.0, after.0), (&self.volatile, before.1, after.1)] {
            if after > before {
                total.fetch_add(after - before, Ordering::Relaxed);
            } else if before > after {
                total.fetch_sub(before - after, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn leads(&self, partition: PartitionId) -> bool {
        self.leads.get(partition.0 as usize).is_some_and(|l| l.load(Ordering::Relaxed))
    }

    /// Follows the topology: this node leads a partition when it is the
    /// first of its replicas that is up.
    pub(crate) fn follow(&self, topo: &Topology) {
        for (i, lead) in self.leads.iter().enumerate() {
            let first = topo.replicas(PartitionId(i as u16)).iter().find(|n| topo.is_up(n));
            lead.store(first.is_some_and(|n| topo.is_self(n)), Ordering::Relaxed);
        }
    }

    /// The version of an eviction's tombstone, stamped like any delete.
    pub(crate) fn stamp(&self, now_ms: u64) -> Version {
        Version::new(self.hlc.now(now_ms), self.tag)
    }

    /// A stamp for a read-modify-write that replaces the entry of version
    /// `replaced`: ordered after it unless that is further ahead than
    /// `max_clock_drift`.
    pub(crate) fn stamp_after(&self, now_ms: u64, replaced: Option<Version>) -> Version {
        if let Some(replaced) = replaced {
            let _ = self.hlc.observe(replaced.newest_ts(), now_ms);
        }
        self.stamp(now_ms)
    }

    pub(crate) fn evicted(&self, key: Bytes, entry: ringkv_core::Entry) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ringkv::eviction", key = %String::from_utf8_lossy(&key), version = ?entry.version, "evicted");
        if let Some(tx) = &self.replicate
            && tx.try_send(Evicted { key, entry }).is_err()
        {
            tracing::debug!("eviction queue full; anti-entropy will carry the tombstone");
        }
    }

    pub(crate) fn refusal(&self, growth: usize) -> KvError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        KvError::OutOfMemory {
            used: self.used() as u64,
            needed: growth as u64,
            limit: self.limit() as u64,
            policy: self.policy.to_string(),
        }
    }

    pub(crate) fn status(&self) -> MemoryStatus {
        MemoryStatus {
            used: self.used() as u64,
            limit: self.limit() as u64,
            policy: self.policy.to_string(),
            evictions: self.evictions.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Admission::*;
    use EvictionPolicy::*;

    #[test]
    fn admission_follows_the_policy_and_the_headroom() {
        // No limit, a delete (no growth) or room left: always.
        assert_eq!(admission(10_000, 10, 0, Noeviction, false, false, true), Admit);
        assert_eq!(admission(10_000, 0, 1_000, Noeviction, false, false, true), Admit);
        assert_eq!(admission(900, 100, 1_000, Noeviction, false, false, true), Admit);
        // Past the bound: noeviction refuses, whoever asks.
        assert_eq!(admission(901, 100, 1_000, Noeviction, true, false, true), Refuse);
        // A leader evicts first; then, or on a replica, the headroom decides.
        assert_eq!(admission(950, 100, 1_000, AllkeysLru, true, false, true), Evict);
        assert_eq!(admission(950, 100, 1_000, AllkeysLru, true, true, true), AdmitOver);
        assert_eq!(admission(950, 100, 1_000, VolatileTtl, false, false, true), AdmitOver);
        assert_eq!(admission(1_100, 100, 1_000, AllkeysLfu, false, false, true), Refuse);
        assert_eq!(
            admission(1_025, 100, 1_000, AllkeysRandom, false, false, true),
            AdmitOver,
            "1,125 is the headroom's edge"
        );
        // A volatile policy with no key with a TTL left is noeviction.
        assert_eq!(admission(950, 100, 1_000, VolatileLru, true, false, false), Refuse);
    }
}
