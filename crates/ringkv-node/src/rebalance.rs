//! Rebalancing: partitions move when members join or leave on purpose.
//!
//! Placement has two tables while members join or leave (see
//! [`Topology::pending`]). Reads and quorums use the current one; writes go
//! to the union, so a partition's new replicas miss nothing while they catch
//! up. A joining node pulls each partition it gains from the current
//! replicas (as many as it takes to be sure of every acknowledged write:
//! `replicas - W + 1`), in throttled pages with a cursor it resumes from
//! after a failure, and only then gossips `serving`, which moves it into the
//! current table. A leaving node pushes each partition it holds to the
//! partition's gaining replicas, then gossips `left` and exits.
//!
//! Partitions a node no longer replicates (now or once pending moves are
//! done) are dropped at once: an old copy would miss the deletes made
//! meanwhile and could bring their keys back if the partition ever moved
//! back to this node.
//!
//! A member restarting with its data (the `member` file in its data
//! directory) takes its place back as `recovering`. One that was gone longer
//! than `dead_node_grace` while the others kept serving has been replaced:
//! its partitions were re-replicated and tombstones purged without it, so
//! it discards its data and joins as a new node.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::ring::NodeName;
use ringkv_core::{Entry, KvError, PartitionId, batches};
use ringkv_net::wire::{MemberStatus, ReplicaRequest, Reply, TransferStatus};
use ringkv_storage::settle;
use tokio::time::Instant;

use crate::membership::Life;
use crate::node::Node;
use crate::partition::PartitionMsg;
use crate::repair::{Budget, entries_bytes};
use crate::topology::Topology;

/// Entries per page of a partition transfer, at most; a page is also cut
/// to a batch's bytes (`NodeConfig::batch_bytes`), by the source when it
/// answers a pull and before sending when a leaving node pushes.
const PAGE: usize = 512;
/// Failed pages in a row before a transfer moves on to another source.
const PAGE_ATTEMPTS: usize = 5;

pub(crate) struct Transfers {
    status: Mutex<TransferStatus>,
    budget: Budget,
}

impl Transfers {
    pub(crate) fn new(bytes_per_sec: u64) -> Transfers {
        Transfers { status: Mutex::new(TransferStatus::default()), budget: Budget::new(bytes_per_sec) }
    }

    pub(crate) fn status(&self) -> TransferStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, update: impl FnOnce(&mut TransferStatus)) {
        update(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The file that says this data directory belongs to a ring member, and
/// when that member was last alive (wall-clock ms).
pub(crate) struct MemberFile {
    path: PathBuf,
}

impl MemberFile {
    pub(crate) fn new(data_dir: &Path) -> MemberFile {
        MemberFile { path: data_dir.join("member") }
    }

    pub(crate) fn last_alive(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let value = text.lines().find_map(|l| l.strip_prefix("last_alive_ms="));
        match value.and_then(|v| v.trim().parse().ok()) {
            Some(ms) => Some(ms),
            None => {
                tracing::warn!(file = %self.path.display(), "unreadable member file; joining as a new member");
                None
            }
        }
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("ringkv member file v1\nlast_alive_ms={now_ms}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot update the member file");
        }
    }

    pub(crate) fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot remove the member file");
        }
    }
}

/// Whether a member that was last alive at `last_alive_ms` must discard its
/// data: it was gone longer than the grace period while some other member
/// lived on for longer than that, so placement may have moved on without it
/// (partitions re-replicated, tombstones purged). The other member either
/// serves now and has been up that long, or it restarted too but had been
/// alive until well after this one died (a whole-cluster restart after this
/// member had long been gone). After a restart of the whole cluster at
/// once, nobody has, and the data is kept.
pub(crate) fn replaced(last_alive_ms: u64, now_ms: u64, grace: Duration, others: &[Life]) -> bool {
    let grace = grace.as_millis() as u64;
    let outlived = |other: &Life| {
        other.serving_since.is_some_and(|since| now_ms.saturating_sub(since) > grace)
            || other.alive_before > last_alive_ms.saturating_add(grace)
    };
    now_ms.saturating_sub(last_alive_ms) > grace && others.iter().any(outlived)
}

/// Replicas a gaining node must pull a partition from to hold every
/// acknowledged write: any `replicas - W + 1` of them include one that
/// acknowledged it.
pub(crate) fn sources_needed(replicas: usize, write_quorum: usize) -> usize {
    replicas.saturating_sub(write_quorum.min(replicas)) + 1
}

impl Node {
    /// Forgets every partition's contents, durably.
    pub(crate) async fn drop_all_partitions(&self) -> Result<usize, KvError> {
        let mut dropped = 0;
        for p in 0..self.inner.partitions.len() {
            dropped += self.drop_partition(PartitionId(p as u16)).await?;
        }
        Ok(dropped)
    }

    async fn drop_partition(&self, partition: PartitionId) -> Result<usize, KvError> {
        let mailbox = &self.inner.partitions[partition.0 as usize];
        let (dropped, durable) = mailbox.call(|reply| PartitionMsg::Drop { reply }).await??;
        if let Some(durable) = durable {
            settle(durable).await.map_err(|e| KvError::Storage(e.to_string()))?;
        }
        Ok(dropped)
    }

    /// Waits, unless shutting down; returns whether to go on.
    pub(crate) async fn pause(&self, period: Duration) -> bool {
        let mut shutdown = self.inner.shutdown_signal();
        tokio::select! {
            _ = tokio::time::sleep(period) => true,
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// A replica request retried with a growing pause, so that a hiccup
    /// does not fail a transfer page (or a clear), but given up after
    /// `PAGE_ATTEMPTS` so that a dead peer does not stall it.
    pub(crate) async fn call_retrying(
        &self,
        topo: &Topology,
        node: &NodeName,
        request: impl Fn() -> ReplicaRequest,
    ) -> Result<Reply, KvError> {
        let mut attempt = 0;
        loop {
            match self.on_replica(topo, node, request()).await {
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    attempt += 1;
                    if attempt >= PAGE_ATTEMPTS || !self.pause(Duration::from_millis(200 * attempt as u64)).await {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Gives other nodes time to see our new status, so that they send us
    /// (or stop expecting from us) the writes of the partitions that move.
    async fn let_gossip_spread(&self) -> bool {
        self.pause(self.inner.config.gossip_interval * 6).await
    }

    pub(crate) async fn set_status(&self, status: MemberStatus) {
        if let Some(membership) = self.inner.membership.lock().await.as_ref() {
            membership.set_status(status).await;
        }
    }

    /// Pulls every partition this new member gains, then serves.
    pub(crate) async fn join(self) {
        let inner = self.inner.clone();
        inner.transfers.record(|s| *s = TransferStatus { phase: Some("joining".into()), ..TransferStatus::default() });
        // The first member of a new cluster has nobody to pull from.
        let first = inner.topology().table.members().is_empty();
        if !first && !self.let_gossip_spread().await {
            return;
        }
        let started = Instant::now();
        let mut done: Vec<PartitionId> = Vec::new();
        loop {
            let topo = inner.topology();
            let gained: Vec<PartitionId> = match &topo.pending {
                Some(pending) => pending
                    .owned_by(&topo.self_name)
                    .filter(|p| !topo.table.is_replica(*p, &topo.self_name) && !done.contains(p))
                    .collect(),
                None => Vec::new(),
            };
            if gained.is_empty() {
                break;
            }
            let total = (done.len() + gained.len()) as u32;
            inner.transfers.record(|s| s.partitions_total = total);
            for partition in gained {
                if !self.pull(partition).await {
                    return;
                }
                done.push(partition);
                inner.transfers.record(|s| {
                    s.partitions_done = done.len() as u32;
                    s.current = None;
                });
            }
        }
        let status = inner.transfers.status();
        tracing::info!(
            partitions = done.len(),
            keys = status.keys_moved,
            bytes = status.bytes_moved,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "joined: partitions pulled; serving"
        );
        self.set_status(MemberStatus::Serving).await;
        inner.transfers.record(|s| s.phase = None);
    }

    /// Pulls one partition from enough current replicas. Retries until it
    /// succeeds; returns false only when the node is shutting down.
    async fn pull(&self, partition: PartitionId) -> bool {
        loop {
            let topo = self.inner.topology();
            let replicas = topo.replicas(partition);
            let needed = sources_needed(replicas.len(), self.inner.config.write_quorum);
            let mut pulled = 0;
            for source in replicas.iter().filter(|n| topo.is_up(n) && !topo.is_self(n)) {
                match self.pull_from(&topo, partition, source).await {
                    Ok(()) => pulled += 1,
                    Err(e) => {
                        tracing::warn!(partition = partition.0, %source, error = %e, "partition pull failed; trying another replica")
                    }
                }
                if pulled >= needed {
                    return true;
                }
            }
            if replicas.is_empty() {
                return true;
            }
            tracing::info!(partition = partition.0, pulled, needed, "not enough replicas to pull from yet; waiting");
            if !self.pause(Duration::from_secs(1)).await {
                return false;
            }
        }
    }

    /// Streams one replica's copy of a partition into ours, page by page,
    /// resuming after the last key received when a page fails.
    async fn pull_from(&self, topo: &Topology, partition: PartitionId, source: &NodeName) -> Result<(), KvError> {
        let transfers = &self.inner.transfers;
        transfers.record(|s| s.current = Some((partition.0, source.to_string())));
        let mut after: Option<Bytes> = None;
        loop {
            let stream = || ReplicaRequest::Stream { partition: partition.0, after: after.clone(), limit: PAGE as u32 };
            let page = match self.call_retrying(topo, source, stream).await? {
                Reply::Entries(page) => page,
                other => return Err(KvError::Protocol(format!("unexpected reply to a stream request: {other:?}"))),
            };
            let Some((last, _)) = page.last() else { return Ok(()) };
            after = Some(last.clone());
            let (keys, bytes) = (page.len() as u64, entries_bytes(&page));
            transfers.budget.throttle(bytes).await;
            let entries = page.into_iter().map(|(k, e)| (partition.0, k, e)).collect();
            self.local_replica(ReplicaRequest::Deliver { entries }).await?;
            transfers.record(|s| {
                s.keys_moved += keys;
                s.bytes_moved += bytes as u64;
            });
        }
    }

    /// Starts handing this node's partitions off; the node exits when done
    /// (see [`Node::left`]).
    pub(crate) async fn begin_leave(&self) -> Result<(), KvError> {
        if self.inner.membership.lock().await.is_none() {
            return Err(KvError::Unavailable("a standalone node has no cluster to hand its data to".into()));
        }
        let topo = self.inner.topology();
        match topo.members.get(&topo.self_name).map(|m| m.status) {
            Some(MemberStatus::Leaving | MemberStatus::Left) => return Ok(()),
            Some(MemberStatus::Serving) => {}
            other => {
                return Err(KvError::Unavailable(format!(
                    "only a serving member can leave; this one is {}",
                    other.map_or("unknown", |s| s.as_str())
                )));
            }
        }
        let others = topo.table.members().iter().filter(|n| !topo.is_self(n) && topo.is_up(n)).count();
        if others == 0 {
            return Err(KvError::Unavailable(
                "no other serving member to hand this node's partitions to; stop it instead".into(),
            ));
        }
        self.set_status(MemberStatus::Leaving).await;
        tokio::spawn(self.clone().hand_off_and_leave());
        Ok(())
    }

    async fn hand_off_and_leave(self) {
        let inner = self.inner.clone();
        inner.transfers.record(|s| *s = TransferStatus { phase: Some("leaving".into()), ..TransferStatus::default() });
        tracing::info!("leaving: handing partitions off");
        if !self.let_gossip_spread().await {
            return;
        }
        let started = Instant::now();
        let topo = inner.topology();
        let held: Vec<PartitionId> = topo.table.owned_by(&topo.self_name).collect();
        inner.transfers.record(|s| s.partitions_total = held.len() as u32);
        for (i, partition) in held.iter().enumerate() {
            for gainer in topo.gaining(*partition) {
                if let Err(e) = self.push_to(&topo, *partition, &gainer).await {
                    // The other current replicas still hold the partition,
                    // and repair fills the gainer from them.
                    tracing::warn!(partition = partition.0, %gainer, error = %e, "handing a partition off failed");
                }
            }
            inner.transfers.record(|s| {
                s.partitions_done = i as u32 + 1;
                s.current = None;
            });
        }
        let status = inner.transfers.status();
        tracing::info!(
            partitions = held.len(),
            keys = status.keys_moved,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partitions handed off; leaving the ring"
        );
        self.set_status(MemberStatus::Left).await;
        self.let_gossip_spread().await;
        if let Some(file) = &inner.member_file {
            file.remove();
        }
        if let Err(e) = self.drop_all_partitions().await {
            tracing::warn!(error = %e, "could not drop handed-off data");
        }
        inner.transfers.record(|s| s.phase = None);
        let _ = inner.left.send(true);
    }

    /// Sends our copy of a partition to a node gaining it.
    async fn push_to(&self, topo: &Topology, partition: PartitionId, gainer: &NodeName) -> Result<(), KvError> {
        let inner = &self.inner;
        inner.transfers.record(|s| s.current = Some((partition.0, gainer.to_string())));
        let mailbox = &inner.partitions[partition.0 as usize];
        let mut after: Option<Bytes> = None;
        loop {
            let cursor = after.clone();
            let page = mailbox.call(|reply| PartitionMsg::Chunk { after: cursor, limit: PAGE, reply }).await?;
            let Some((last, _)) = page.last() else { return Ok(()) };
            after = Some(last.clone());
            let (keys, bytes) = (page.len() as u64, entries_bytes(&page));
            inner.transfers.budget.throttle(bytes).await;
            let entries: Vec<(u16, Bytes, Entry)> = page.into_iter().map(|(k, e)| (partition.0, k, e)).collect();
            for entries in batches(entries, inner.config.batch_bytes()) {
                self.call_retrying(topo, gainer, || ReplicaRequest::Deliver { entries: entries.clone() }).await?;
            }
            inner.transfers.record(|s| {
                s.keys_moved += keys;
                s.bytes_moved += bytes as u64;
            });
        }
    }

    /// Drops partitions this node no longer replicates, now or once the
    /// pending moves are done. At once rather than once placement settles:
    /// a copy kept by a node that is no replica misses the deletes made
    /// meanwhile, and if placement moves the partition back to it (say the
    /// node that took it over is dropped from the ring) after the others
    /// purged those tombstones, repair would spread the deleted values again.
    pub(crate) async fn drop_moved_partitions(&self) {
        let topo = self.inner.topology();
        let serving = topo.members.get(&topo.self_name).is_some_and(|m| m.status == MemberStatus::Serving);
        if !serving {
            return;
        }
        for p in 0..self.inner.partitions.len() {
            let partition = PartitionId(p as u16);
            let pending = topo.pending.as_ref().is_some_and(|t| t.is_replica(partition, &topo.self_name));
            if topo.table.is_replica(partition, &topo.self_name) || pending {
                continue;
            }
            let stats = self.inner.partitions[p].call(|reply| PartitionMsg::Stats { reply }).await;
            if stats.is_ok_and(|s| s.entries > 0) {
                match self.drop_partition(partition).await {
                    Ok(dropped) => tracing::info!(partition = p, dropped, "dropped a partition that moved elsewhere"),
                    Err(e) => tracing::warn!(partition = p, error = %e, "cannot drop a moved partition"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_sources_to_see_every_acknowledged_write() {
        assert_eq!(sources_needed(3, 2), 2);
        assert_eq!(sources_needed(3, 1), 3);
        assert_eq!(sources_needed(3, 3), 1);
        assert_eq!(sources_needed(1, 2), 1, "W is clamped to the replicas there are");
        assert_eq!(sources_needed(0, 2), 1);
    }

    #[test]
    fn a_member_is_replaced_only_if_others_served_through_its_absence() {
        let grace = Duration::from_secs(60);
        let now = 1_000_000;
        let serving = |since: u64| Life { serving_since: Some(since), alive_before: 0 };
        // Back within the grace period: keeps its data.
        assert!(!replaced(now - 30_000, now, grace, &[serving(0)]));
        // Gone for long while another member served throughout.
        assert!(replaced(now - 600_000, now, grace, &[serving(now - 900_000)]));
        // Or while the others restarted and served long enough without it.
        assert!(replaced(now - 600_000, now, grace, &[serving(now - 300_000)]));
        // Gone for long, but everybody has just restarted: a whole-cluster
        // restart.
        assert!(!replaced(now - 600_000, now, grace, &[serving(now - 10_000), serving(now - 5_000)]));
        assert!(!replaced(now - 600_000, now, grace, &[]));
        // Everybody has just restarted, but another member had been alive
        // long after this one died: the cluster had moved on without it.
        let recovering = |alive_before: u64| Life { serving_since: None, alive_before };
        assert!(replaced(now - 600_000, now, grace, &[recovering(now - 20_000)]));
        // Both died at about the same time: kept.
        assert!(!replaced(now - 600_000, now, grace, &[recovering(now - 590_000)]));
    }

    #[test]
    fn the_member_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("ringkv-member-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = MemberFile::new(&dir);
        assert_eq!(file.last_alive(), None);
        file.touch(1234);
        assert_eq!(file.last_alive(), Some(1234));
        file.remove();
        assert_eq!(file.last_alive(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
