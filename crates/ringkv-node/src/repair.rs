//! Anti-entropy: replicas of a partition compare repair digests and
//! exchange only the keys of the leaves that differ.
//!
//! Each shard keeps a digest of 1024 leaves, updated on every write (see
//! `ringkv_storage::Digest`). A comparison asks the peer for its 32 branch
//! hashes (XORs of 32 leaves each), then for the leaves of the branches that
//! differ, then for the entries of the leaves that differ, and pushes ours
//! for the same leaves. Last-writer-wins merges both sides. Entry transfers
//! take tokens from a byte-rate budget, so repair never crowds out clients.
//!
//! Every node compares each partition it replicates with every other
//! replica, once per `repair_interval` and as soon as a peer comes back. A
//! comparison that leaves the pair in sync is recorded with its start time:
//! a tombstone older than that is on both. The purge horizon of a partition
//! is the oldest such record over all its other replicas, so tombstones are
//! only purged once every replica has them, and only once what they
//! deleted was written `tombstone_grace` ago (when hints of older copies
//! have expired).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::ring::NodeName;
use ringkv_core::{Entry, KvError, PartitionId, Version, batches};
use ringkv_net::wire::{Divergence, ReplicaRequest, Reply};
use tokio::time::Instant;

use crate::node::Node;
use crate::partition::BRANCH;
use crate::progress::entries_bytes;

/// Digest leaves whose entries are exchanged in one round.
const FETCH_LEAVES: usize = 64;
use crate::topology::Topology;

/// Indices at which two digests differ. A missing word counts as differing.
pub(crate) fn differing(ours: &[u64], theirs: &[u64]) -> Vec<usize> {
    (0..ours.len().max(theirs.len())).filter(|i| ours.get(*i) != theirs.get(*i)).collect()
}

/// Which keys each side must send the other: those it holds at a newer
/// version, or that the other lacks. Both lists are in the shard's order.
pub(crate) fn plan_exchange(ours: &[(Bytes, Version)], theirs: &[(Bytes, Version)]) -> (Vec<Bytes>, Vec<Bytes>) {
    let theirs_by_key: HashMap<&Bytes, Version> = theirs.iter().map(|(k, v)| (k, *v)).collect();
    let ours_by_key: HashMap<&Bytes, Version> = ours.iter().map(|(k, v)| (k, *v)).collect();
    let newer = |mine: &[(Bytes, Version)], other: &HashMap<&Bytes, Version>| -> Vec<Bytes> {
        mine.iter().filter(|(k, v)| other.get(k).is_none_or(|o| v > o)).map(|(k, _)| k.clone()).collect()
    };
    (newer(ours, &theirs_by_key), newer(theirs, &ours_by_key))
}

fn versions_bytes(versions: &[(Bytes, Version)]) -> usize {
    versions.iter().map(|(k, v)| k.len() + if v.touch.is_some() { 32 } else { 16 }).sum()
}

impl Node {
    async fn digest(
        &self,
        topo: &Topology,
        node: &NodeName,
        partition: u16,
        branches: Option<Vec<u16>>,
        root: Option<u64>,
    ) -> Result<Vec<u64>, KvError> {
        match self.on_replica(topo, node, ReplicaRequest::Digest { partition, branches, root }).await? {
            Reply::Digest(words) => Ok(words),
            other => Err(KvError::Protocol(format!("unexpected reply to a digest request: {other:?}"))),
        }
    }

    /// The keys and versions a replica holds in some leaves, asked for page
    /// by page: one answer stops where a batch's bytes are full.
    async fn versions(
        &self,
        topo: &Topology,
        node: &NodeName,
        partition: u16,
        leaves: &[u16],
    ) -> Result<Vec<(Bytes, Version)>, KvError> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map(|(k, _): &(Bytes, Version)| k.clone());
            let request = ReplicaRequest::Versions { partition, leaves: leaves.to_vec(), after };
            match self.on_replica(topo, node, request).await? {
                Reply::Versions(page) if page.is_empty() => return Ok(all),
                Reply::Versions(page) => all.extend(page),
                other => return Err(KvError::Protocol(format!("unexpected reply to a versions request: {other:?}"))),
            }
        }
    }

    /// Copies the stored entries of `keys` from one replica to another, one
    /// batch at a time, so that neither the answers nor the pushes outgrow
    /// a frame and only one batch is held at once. Returns the entries and
    /// bytes moved.
    async fn copy(
        &self,
        topo: &Topology,
        (from, to): (&NodeName, &NodeName),
        partition: u16,
        keys: Vec<Bytes>,
    ) -> Result<(u64, usize), KvError> {
        let mut moved = (0, 0);
        for keys in batches(keys, self.inner.config.batch_bytes()) {
            let mut rest = &keys[..];
            while !rest.is_empty() {
                let request = ReplicaRequest::ReadMany { partition, keys: rest.to_vec() };
                let entries = match self.on_replica(topo, from, request).await? {
                    Reply::Entries(entries) => entries,
                    other => return Err(KvError::Protocol(format!("unexpected reply to a read request: {other:?}"))),
                };
                // Answers follow the order asked, leaving out keys no longer
                // stored, and stop where the batch was full.
                let Some((last, _)) = entries.last() else { break };
                let answered = rest.iter().position(|k| k == last).map_or(rest.len(), |i| i + 1);
                rest = &rest[answered..];
                let bytes = entries_bytes(&entries);
                self.inner.repair.budget.throttle(bytes).await;
                moved = (moved.0 + entries.len() as u64, moved.1 + bytes);
                let entries = entries.into_iter().map(|(k, e)| (partition, k, e)).collect();
                self.deliver(topo, to, entries).await?;
            }
        }
        Ok(moved)
    }

    /// Merges entries into a replica, in as many `Deliver` batches as their
    /// encoded size takes.
    async fn deliver(
        &self,
        topo: &Topology,
        node: &NodeName,
        entries: Vec<(u16, Bytes, Entry)>,
    ) -> Result<(), KvError> {
        for entries in batches(entries, self.inner.config.batch_bytes()) {
            self.on_replica(topo, node, ReplicaRequest::Deliver { entries, hinted: false }).await?;
        }
        Ok(())
    }

    /// Compares one partition with one peer and exchanges what differs.
    /// Returns the keys exchanged.
    async fn repair_pair(&self, topo: &Topology, partition: PartitionId, peer: &NodeName) -> Result<u64, KvError> {
        let repair = &self.inner.repair;
        let me = topo.self_name.clone();
        let started_ms = self.inner.now_ms();
        let p = partition.0;
        let mut bytes = 0usize;
        let ours = self.digest(topo, &me, p, None, None).await?;
        let root = ours.iter().fold(0, |a, b| a ^ b);
        // The peer answers nothing when its root equals ours.
        let theirs = self.digest(topo, peer, p, None, Some(root)).await?;
        bytes += 16 + 8 * theirs.len();
        let branches: Vec<u16> = if theirs.is_empty() {
            Vec::new()
        } else {
            differing(&ours, &theirs).into_iter().map(|b| b as u16).collect()
        };
        let mut keys = 0u64;
        if !branches.is_empty() {
            let (ours, theirs) = tokio::try_join!(
                self.digest(topo, &me, p, Some(branches.clone()), None),
                self.digest(topo, peer, p, Some(branches.clone()), None)
            )?;
            bytes += 8 * theirs.len();
            // Position i of the answer is leaf i % BRANCH of the i / BRANCH-th
            // requested branch.
            let leaves: Vec<u16> = differing(&ours, &theirs)
                .into_iter()
                .map(|i| (branches[i / BRANCH] as usize * BRANCH + i % BRANCH) as u16)
                .collect();
            // A bounded number of leaves per round keeps the lists held at
            // once small even when a replica is empty and every leaf
            // differs; the messages themselves are bounded in bytes.
            // Versions first, so that only entries one side lacks cross the
            // network.
            for leaves in leaves.chunks(FETCH_LEAVES) {
                let (ours, theirs) =
                    tokio::try_join!(self.versions(topo, &me, p, leaves), self.versions(topo, peer, p, leaves))?;
                let (to_peer, to_me) = plan_exchange(&ours, &theirs);
                let listed = versions_bytes(&theirs) + to_me.iter().map(Bytes::len).sum::<usize>();
                repair.budget.throttle(listed).await;
                let (sent, received) =
                    tokio::try_join!(self.copy(topo, (&me, peer), p, to_peer), self.copy(topo, (peer, &me), p, to_me))?;
                bytes += listed + sent.1 + received.1;
                keys += sent.0 + received.0;
            }
            if keys > 0 {
                tracing::info!(partition = p, %peer, keys, "anti-entropy repaired a divergence");
                repair.record(|s| {
                    s.last_divergence =
                        Some(Divergence { at_ms: started_ms, partition: p, peer: peer.to_string(), keys })
                });
            }
        }
        repair.record(|s| {
            s.keys_exchanged += keys;
            s.bytes_exchanged += bytes as u64;
        });
        // Writes in flight when the comparison began may still land; a
        // margin of two replica timeouts keeps them out of the sync point.
        let margin = 2 * self.inner.config.replica_timeout.as_millis() as u64;
        repair.synced(PartitionId(p), peer, started_ms.saturating_sub(margin));
        Ok(keys)
    }

    /// Compares every partition this node replicates with each other
    /// replica.
    async fn repair_pass(&self) -> Pass {
        let topo = self.inner.topology();
        let pairs: Vec<(PartitionId, NodeName)> = topo
            .table
            .owned_by(&topo.self_name)
            .flat_map(|p| {
                topo.replicas(p).iter().filter(|n| !topo.is_self(n) && topo.is_up(n)).map(move |n| (p, n.clone()))
            })
            .collect();
        // Replicas of a partition start their passes at different places, so
        // that two of them repairing a third do not do the same work at the
        // same moment: the second finds the roots equal.
        let mut pairs = pairs;
        if !pairs.is_empty() {
            let offset = ringkv_core::NodeTag::from_name(&topo.self_name).0 as usize % pairs.len();
            pairs.rotate_left(offset);
        }
        let started = Instant::now();
        let total = pairs.len() as u32;
        // A peer that stops answering costs one timeout per pass, not one
        // per partition.
        let mut failed: HashSet<NodeName> = HashSet::new();
        for (done, (partition, peer)) in pairs.into_iter().enumerate() {
            // A node that may have been out of the ring must not push what
            // it holds; it repairs once its membership is confirmed.
            if self.inner.stopping() || self.inner.standing().is_err() {
                self.inner.repair.record(|s| s.progress = None);
                return Pass::Done;
            }
            if !self.inner.topology().same_as(&topo) {
                self.inner.repair.record(|s| s.progress = None);
                return Pass::Restart;
            }
            if failed.contains(&peer) {
                continue;
            }
            self.inner.repair.record(|s| s.progress = Some((done as u32, total)));
            if let Err(e) = self.repair_pair(&topo, partition, &peer).await {
                tracing::debug!(partition = partition.0, %peer, error = %e, "repair comparison failed");
                failed.insert(peer);
            }
        }
        let elapsed = started.elapsed().as_millis() as u64;
        self.inner.repair.record(|s| {
            s.progress = None;
            s.passes += 1;
            s.last_pass_ms = Some(elapsed);
        });
        if failed.is_empty() { Pass::Done } else { Pass::Incomplete }
    }
}

enum Pass {
    Done,
    /// Placement changed mid-way: start over at once.
    Restart,
    /// Some peers failed (a peer that just restarted often times out once,
    /// on a connection to its previous incarnation): try again soon.
    Incomplete,
}

/// How soon a pass that missed some peers is retried.
const RETRY_INCOMPLETE: Duration = Duration::from_secs(3);

/// Runs a pass every `repair_interval`, and at once when a peer comes up.
pub(crate) async fn repair_task(node: Node) {
    let inner = node.inner.clone();
    let mut shutdown = inner.shutdown_signal();
    let mut topology = inner.topology_watch();
    // The peers up at start are not "returning": a node that restarts lets
    // them come to it (they see it return) instead of repairing the same
    // pairs from its side at the same moment.
    let first = inner.topology();
    let mut up: HashSet<NodeName> = first.members.keys().filter(|n| first.is_up(n)).cloned().collect();
    let mut ring: Vec<NodeName> = first.table.members().to_vec();
    let period = inner.config.repair_interval;
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.repair.wake.notified() => {}
            changed = topology.changed() => {
                if changed.is_err() {
                    return;
                }
                let topo = topology.borrow_and_update().clone();
                let now_up: HashSet<NodeName> = topo.members.keys().filter(|n| topo.is_up(n)).cloned().collect();
                let returned = now_up.difference(&up).any(|n| !topo.is_self(n));
                up = now_up;
                // A member that left or was given up on: its partitions have
                // new replicas now, which repair fills to N copies.
                let ring_shrank = ring.iter().any(|n| !topo.table.members().contains(n));
                ring = topo.table.members().to_vec();
                if !returned && !ring_shrank {
                    continue;
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let mut retries = 0;
        loop {
            match node.repair_pass().await {
                Pass::Done => break,
                Pass::Restart => continue,
                // Bounded: a peer that keeps failing waits for the next tick.
                Pass::Incomplete if retries < 3 => {
                    retries += 1;
                    if !node.pause(RETRY_INCOMPLETE.min(inner.config.repair_interval)).await {
                        return;
                    }
                }
                Pass::Incomplete => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_sends_only_what_the_other_lacks_or_holds_older() {
        let v = |ts: u64| Version::new(ringkv_core::Timestamp(ts), ringkv_core::NodeTag(1));
        let k = |s: &'static str| Bytes::from(s);
        let ours = [(k("a"), v(1)), (k("b"), v(5)), (k("c"), v(3)), (k("d"), v(2))];
        let theirs = [(k("b"), v(4)), (k("c"), v(6)), (k("d"), v(2)), (k("e"), v(1))];
        let (to_peer, to_me) = plan_exchange(&ours, &theirs);
        assert_eq!(to_peer, [k("a"), k("b")]);
        assert_eq!(to_me, [k("c"), k("e")]);
        let (to_peer, to_me) = plan_exchange(&ours, &ours);
        assert!(to_peer.is_empty() && to_me.is_empty());
    }

    #[test]
    fn differing_positions() {
        assert_eq!(differing(&[1, 2, 3], &[1, 5, 3]), vec![1]);
        assert_eq!(differing(&[1, 2], &[1, 2, 3]), vec![2]);
        assert!(differing(&[7; 32], &[7; 32]).is_empty());
    }
}
