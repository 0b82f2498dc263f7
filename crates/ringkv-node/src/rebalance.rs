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
//! directory) takes its place back as `recovering`, and keeps its data
//! unless a member fences it ([`fence_follower`]): only then were its
//! partitions re-replicated and tombstones purged without it. Being gone
//! long is not enough: while no majority could drop it, nobody purged
//! without it, and its data may hold the only copies of acknowledged writes
//! (simulator seeds 1715 and 1808).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::ring::NodeName;
use ringkv_core::{Entry, KvError, PartitionId, batches};
use ringkv_net::wire::{MemberStatus, ReplicaRequest, Reply, TransferStatus};
use ringkv_storage::settle;
use tokio::time::Instant;

use crate::node::Node;
use crate::partition::PartitionMsg;
use crate::periodic::every;
use crate::progress::entries_bytes;
use crate::topology::Topology;

/// Entries per page of a partition transfer, at most; a page is also cut
/// to a batch's bytes (`NodeConfig::batch_bytes`), by the source when it
/// answers a pull and before sending when a leaving node pushes.
const PAGE: usize = 512;
/// Failed pages in a row before a transfer moves on to another source.
const PAGE_ATTEMPTS: usize = 5;
/// Gossip rounds a node that knows of no member listens before it founds a
/// cluster. A founder restarted without its data looks exactly like a new
/// one until the others gossip with it: each contacts a seed or a dead
/// node with probability about 1/2 to 3/4 per round in a small cluster,
/// so after four rounds of two members the odds that none has are about
/// 1 in 65,000 (simulator seed 220 caught the restarted founder serving
/// empty).
const FOUNDER_ROUNDS: u32 = 4;

/// Replicas a gaining node must pull a partition from to hold every
/// acknowledged write: any `replicas - W + 1` of them include one that
/// acknowledged it.
pub(crate) fn sources_needed(replicas: usize, write_quorum: usize) -> usize {
    replicas.saturating_sub(write_quorum.min(replicas)) + 1
}

/// Whom a gaining node pulls a partition from, drawn from one topology:
/// the current replicas that are up, one after another, until enough have
/// given their whole copy.
#[derive(Debug)]
pub(crate) struct PullRound {
    sources: std::vec::IntoIter<NodeName>,
    needed: usize,
    pulled: usize,
    /// The partition has no replica now (a cluster's first member): there
    /// is nothing to pull.
    unplaced: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PullStep {
    /// Pull the whole copy of this replica, and say whether it came.
    Ask(NodeName),
    Done,
    /// Too few replicas gave their copy: try again with a newer topology.
    Wait {
        pulled: usize,
        needed: usize,
    },
}

impl PullRound {
    pub(crate) fn new(topo: &Topology, partition: PartitionId, write_quorum: usize) -> PullRound {
        let replicas = topo.replicas(partition);
        let sources: Vec<NodeName> = replicas.iter().filter(|n| topo.is_up(n) && !topo.is_self(n)).cloned().collect();
        PullRound {
            sources: sources.into_iter(),
            needed: sources_needed(replicas.len(), write_quorum),
            pulled: 0,
            unplaced: replicas.is_empty(),
        }
    }

    pub(crate) fn next(&mut self) -> PullStep {
        if self.pulled >= self.needed || self.unplaced {
            return PullStep::Done;
        }
        match self.sources.next() {
            Some(source) => PullStep::Ask(source),
            None => PullStep::Wait { pulled: self.pulled, needed: self.needed },
        }
    }

    /// The source last asked gave its whole copy.
    pub(crate) fn pulled(&mut self) {
        self.pulled += 1;
    }
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
        if inner.topology().table.members().is_empty() && !self.listen_before_founding().await {
            return;
        }
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
        // A join cut off for longer than dead_node_grace is fenced, and what
        // it pulled may miss deletes: serve only once gossip confirms that
        // no member fences it (the fence follower restarts it otherwise).
        while inner.standing().is_err() {
            if !self.pause(inner.config.gossip_interval).await {
                return;
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

    /// Listens for the members of a cluster this node may already belong
    /// to, and waits (up to `join_timeout`) until those it heard of are
    /// proven, so that the ring it founds a cluster on, or joins, is
    /// theirs. Returns false if the node is shutting down.
    async fn listen_before_founding(&self) -> bool {
        let config = &self.inner.config;
        if !self.pause(config.gossip_interval * FOUNDER_ROUNDS).await {
            return false;
        }
        let deadline = Instant::now() + config.join_timeout;
        while !self.inner.topology().unproven.is_empty() && Instant::now() < deadline {
            if !self.pause(config.gossip_interval).await {
                return false;
            }
        }
        true
    }

    /// Pulls one partition from enough current replicas. Retries until it
    /// succeeds; returns false only when the node is shutting down.
    async fn pull(&self, partition: PartitionId) -> bool {
        loop {
            let topo = self.inner.topology();
            let mut round = PullRound::new(&topo, partition, self.inner.config.write_quorum);
            loop {
                match round.next() {
                    PullStep::Ask(source) => match self.pull_from(&topo, partition, &source).await {
                        Ok(()) => round.pulled(),
                        Err(e) => {
                            tracing::warn!(partition = partition.0, %source, error = %e, "partition pull failed; trying another replica")
                        }
                    },
                    PullStep::Done => return true,
                    PullStep::Wait { pulled, needed } => {
                        tracing::info!(
                            partition = partition.0,
                            pulled,
                            needed,
                            "not enough replicas to pull from yet; waiting"
                        );
                        break;
                    }
                }
            }
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
            self.local_replica(ReplicaRequest::Deliver { entries, hinted: false }).await?;
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
            let alone = topo.table.members().iter().all(|n| topo.is_self(n)) && topo.pending.is_none();
            // Stopping is the advice only for a ring of one: with members
            // down or still joining, this node may hold the only copies
            // of what it acknowledged (simulator seed 4297).
            let reason = if alone {
                "this is the ring's only member, with no one to hand its partitions to; stop it instead"
            } else {
                "no other member of the ring serves now (the others are down or still joining), and this node may \
                 hold the only copies of some keys; ask again once another member serves"
            };
            return Err(KvError::Unavailable(reason.into()));
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
                self.call_retrying(topo, gainer, || ReplicaRequest::Deliver {
                    entries: entries.clone(),
                    hinted: false,
                })
                .await?;
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

impl Node {
    /// Hands this node's partitions to the other members and leaves the
    /// ring; returns once done (the node should then be shut down).
    pub async fn leave(&self) -> Result<(), KvError> {
        self.begin_leave().await?;
        self.wait_left().await;
        Ok(())
    }

    /// Returns once the node has left the ring, whoever asked it to.
    pub async fn wait_left(&self) {
        let mut left = self.inner.left.subscribe();
        let _ = left.wait_for(|left| *left).await;
    }

    /// Forgets this node's data and membership and joins as a new member:
    /// whatever it held predates the current membership and may include
    /// keys deleted and purged meanwhile. Returns the entries dropped.
    pub(crate) async fn join_as_new(&self) -> Result<usize, KvError> {
        // A join in progress stops first, so that nothing it pulled lands
        // after the drop below.
        let running = self.inner.joining.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(running) = running {
            running.abort();
            let _ = running.await;
        }
        if let Some(file) = &self.inner.member_file {
            file.remove();
        }
        let dropped = self.drop_all_partitions().await?;
        // Unique among this node id's joins: the hybrid clock never repeats
        // and starts past every version the node acknowledged.
        let join = self.inner.hlc.now(self.inner.now_ms()).0;
        if let Some(membership) = self.inner.membership.lock().await.as_ref() {
            membership.begin_join(join).await;
        }
        let task = tokio::spawn(self.clone().join());
        *self.inner.joining.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(dropped)
    }
}

/// Keeps the member file's last-alive time fresh while this node holds its
/// place in the ring, and writes it a last time when the node stops in
/// place (SIGINT, not a leave), so that a member stopped soon after it
/// joined still comes back as itself. Peers and fences are written as soon
/// as they change, and no purge runs before a fence is written
/// (`Repair::purge_horizon`): a fence forgotten in a crash lets the fenced
/// member back, stale, once this node restarts.
pub(crate) async fn member_keeper(node: Node) {
    let inner = node.inner.clone();
    let Some(file) = &inner.member_file else { return };
    // The other members of the ring, while this node holds a place in it,
    // and those of its last ring it has not heard from since it started (a
    // crash before they are proven or fenced must not forget them); and
    // the members it fenced.
    let kept = || {
        let topo = inner.topology();
        let in_ring = topo.members.get(&topo.self_name).is_some_and(|m| m.status.in_current_ring());
        in_ring.then(|| {
            let ring = topo.table.members().iter().filter(|n| !topo.is_self(n));
            let peers: BTreeSet<NodeName> = ring.chain(&topo.missing).cloned().collect();
            (peers.into_iter().collect::<Vec<_>>(), topo.fences.clone())
        })
    };
    // Precise enough to compare with the grace period, without a file write
    // every second.
    let period = (inner.config.dead_node_grace / 10).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut topology = inner.topology_watch();
    let mut shutdown = inner.shutdown.subscribe();
    let mut written = None;
    // Until the first write, the fences it holds are not known to be the
    // node's: purges wait for it.
    inner.repair.fences_kept(Vec::new());
    loop {
        let due = tokio::select! {
            _ = tick.tick() => true,
            changed = topology.changed() => if changed.is_err() { break } else { false },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        if let Some(now) = kept()
            && (due || written.as_ref() != Some(&now))
            && file.touch(inner.now_ms(), &now.0, &now.1)
        {
            inner.repair.fences_kept(now.1.clone());
            written = Some(now);
        }
    }
    if let Some((peers, fences)) = kept() {
        file.touch(inner.now_ms(), &peers, &fences);
    }
}

/// Discards this node's data and joins anew whenever a member says it
/// removed this node from the ring, or from the next ring while it was
/// joining (see `membership.rs`): what it holds may include keys whose
/// tombstones the others purged meanwhile.
pub(crate) async fn fence_follower(node: Node) {
    let Some(standing) = node.inner.standing.clone() else { return };
    let mut fenced = standing.fenced();
    let mut shutdown = node.inner.shutdown.subscribe();
    // The fence is looked at as it stands before the first wait: a
    // restarted node may learn of its removal before this task subscribes,
    // and a receiver counts the value it was created with as seen
    // (simulator seed 1107: the fence was set at start and the node never
    // rejoined).
    loop {
        let topo = node.inner.topology();
        let status = topo.members.get(&topo.self_name).map(|m| m.status);
        let holds_a_place = status.is_some_and(|s| s.in_current_ring() || s == MemberStatus::Joining);
        if *fenced.borrow_and_update() && holds_a_place {
            match node.join_as_new().await {
                Ok(dropped) => {
                    tracing::warn!(dropped, "removed from the ring while out: discarded this node's data; joining anew")
                }
                Err(e) => {
                    // Fail-stop: serving on with data that may resurrect
                    // deleted keys is worse than a restart, whose recovery
                    // rules discard it. Recorded as a failure, not a bare
                    // shutdown, so that `Node::failed` resolves and the
                    // process exits with an error for its supervisor to
                    // restart (simulator seed 854: a shutdown alone left a
                    // stopped node in a running process).
                    node.inner.supervisor.fail(format!("cannot discard the data of a removed member: {e}"));
                    return;
                }
            }
        }
        tokio::select! {
            changed = fenced.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Drops partitions that moved to other nodes: within a second of a
/// placement change, and every ten seconds in case a coordinator that had
/// not yet seen the change wrote to a dropped partition meanwhile. Both far
/// below any sensible `tombstone_grace`, which is what keeps an old copy
/// from outliving the tombstones it misses (see `drop_moved_partitions`).
pub(crate) async fn mover(node: Node) {
    let mut checked: Option<(Arc<Topology>, tokio::time::Instant)> = None;
    every(node.inner.shutdown.subscribe(), Duration::from_secs(1), || {
        let topo = node.inner.topology();
        let due = checked.as_ref().is_none_or(|(seen, at)| !Arc::ptr_eq(seen, &topo) || at.elapsed() >= MOVER_RECHECK);
        if due {
            checked = Some((topo, tokio::time::Instant::now()));
        }
        let node = node.clone();
        async move {
            if due {
                node.drop_moved_partitions().await;
            }
        }
    })
    .await;
}

const MOVER_RECHECK: Duration = Duration::from_secs(10);

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
    fn a_joiner_pulls_from_replicas_up_until_enough_gave_their_copy() {
        use ringkv_net::wire::MemberStatus::{Joining, Serving};
        let all = [("n1", Serving, true), ("n2", Serving, true), ("n3", Serving, true), ("n4", Joining, true)];
        let topo = crate::topology::sketch("n4", &all);
        let ask = |name: &str| PullStep::Ask(NodeName::from(name));
        // Every current replica is up: the first two to give their copy do.
        let mut round = PullRound::new(&topo, PartitionId(0), 2);
        assert_eq!(round.next(), ask("n1"));
        round.pulled();
        assert_eq!(round.next(), ask("n2"));
        round.pulled();
        assert_eq!(round.next(), PullStep::Done);
        // A source that fails is passed over for the next.
        let mut round = PullRound::new(&topo, PartitionId(0), 2);
        assert_eq!(round.next(), ask("n1"));
        assert_eq!(round.next(), ask("n2"));
        round.pulled();
        assert_eq!(round.next(), ask("n3"));
        round.pulled();
        assert_eq!(round.next(), PullStep::Done);
        // With one replica down and another failing, it waits for more.
        let topo = crate::topology::sketch("n4", &[all[0], ("n2", Serving, false), all[2], all[3]]);
        let mut round = PullRound::new(&topo, PartitionId(0), 2);
        assert_eq!(round.next(), ask("n1"));
        round.pulled();
        assert_eq!(round.next(), ask("n3"));
        assert_eq!(round.next(), PullStep::Wait { pulled: 1, needed: 2 });
        // The first member has no replica to pull from.
        let topo = crate::topology::sketch("n1", &[("n1", Joining, true)]);
        assert_eq!(PullRound::new(&topo, PartitionId(0), 2).next(), PullStep::Done);
    }
}
