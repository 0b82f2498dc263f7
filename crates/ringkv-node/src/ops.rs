//! The store's operations as a coordinating node runs them: validate, stamp,
//! fan out to the key's replicas (local ones by actor message, remote ones
//! over the peer transport), feed the answers to the request's round from
//! `coordinate.rs`, which decides, answer, and finish the rest in the
//! background (remaining replica writes, hints for replicas that failed,
//! read repair).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ringkv_core::quorum::Progress;
use ringkv_core::ring::NodeName;
use ringkv_core::scan::Cursor;
use ringkv_core::update::{Answer, Update};
use ringkv_core::{
    Consistency, Deadline, Entry, Epoch, KeyTtl, KvError, KvStore, Limits, PartitionId, ReplicaFailure, Version,
    expiry_from_ttl, fitting,
};
use ringkv_net::wire::{self, Explanation, NodeStatus, ReplicaRequest, ReplicaView, Reply, Request, Response};
use ringkv_net::{Handler, Peer};
use ringkv_storage::settle;

use crate::access;
use crate::coordinate::{Action, Round, WriteRound, Written, plan_read, plan_write, read_round, unavailable};
use crate::hints::{HintsMsg, hint_horizon, outlived};
use crate::metrics::{Metrics, Op, Outcome, Protocol};
use crate::node::Node;
use crate::partition::{Applied, PartitionMsg};
use crate::topology::Topology;

/// How often a read-modify-write (expire, persist) retries after losing a
/// race with a concurrent write before giving up.
const RMW_ATTEMPTS: usize = 8;

fn storage(e: ringkv_storage::StorageError) -> KvError {
    KvError::Storage(e.to_string())
}

type BoxedUpdate<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer, KvError>> + Send + 'a>>;

impl Node {
    /// Runs a replica request on this node's own partitions: for requests
    /// from peers, and for the local share of requests this node coordinates.
    pub(crate) async fn local_replica(&self, request: ReplicaRequest) -> Result<Reply, KvError> {
        let inner = &self.inner;
        match request {
            ReplicaRequest::Apply { partition, key, entry, condition, hint_for } => {
                self.check_placement(partition, &key)?;
                let _ = inner.hlc.observe(entry.version.newest_ts(), inner.now_ms());
                if let Some(target) = hint_for {
                    // A hint bypasses the partition actor, which refuses
                    // writes its epoch covers for the shard path.
                    let epoch = inner.epoch();
                    if epoch.covers(entry.version) {
                        return Err(KvError::Cleared { epoch: epoch.0 });
                    }
                    let durable = inner
                        .hints
                        .call(|reply| HintsMsg::Store { target: target.into(), partition, key, entry, reply })
                        .await??;
                    if let Some(durable) = durable {
                        settle(durable).await.map_err(storage)?;
                    }
                    return Ok(Reply::Applied { was_live: false });
                }
                let mailbox = &inner.partitions[partition as usize];
                match mailbox.call(|reply| PartitionMsg::Apply { key, entry, condition, admit: true, reply }).await?? {
                    Applied::Done { was_live, durable } => {
                        if let Some(durable) = durable {
                            settle(durable).await.map_err(storage)?;
                        }
                        Ok(Reply::Applied { was_live })
                    }
                    Applied::Conflict => Ok(Reply::Conflict),
                    Applied::Covered(epoch) => Err(KvError::Cleared { epoch: epoch.0 }),
                }
            }
            ReplicaRequest::Read { partition, key } => {
                self.check_placement(partition, &key)?;
                let entry =
                    inner.partitions[partition as usize].call(|reply| PartitionMsg::Read { key, reply }).await?;
                Ok(Reply::Entry(entry))
            }
            ReplicaRequest::Truncate { epoch } => {
                self.apply_epoch(epoch).await?;
                Ok(Reply::Done)
            }
            ReplicaRequest::Clock => Ok(Reply::Clock(inner.hlc.now(inner.now_ms()))),
            ReplicaRequest::Update { partition, key, update } => {
                self.check_placement(partition, &key)?;
                let answer = self.lead_update(PartitionId(partition), key, update).await?;
                Ok(Reply::Updated(answer))
            }
            ReplicaRequest::Digest { partition, branches, root } => {
                let mailbox = self.partition(partition)?;
                let words = mailbox.call(|reply| PartitionMsg::Digest { branches, reply }).await?;
                let same = root.is_some_and(|r| r == words.iter().fold(0, |a, b| a ^ b));
                Ok(Reply::Digest(if same { Vec::new() } else { words }))
            }
            ReplicaRequest::Versions { partition, leaves, after } => {
                let mailbox = self.partition(partition)?;
                let mut versions = mailbox.call(|reply| PartitionMsg::Versions { leaves, after, reply }).await?;
                versions.truncate(fitting(&versions, inner.config.batch_bytes()));
                Ok(Reply::Versions(versions))
            }
            ReplicaRequest::ReadMany { partition, keys } => {
                for key in &keys {
                    self.check_placement(partition, key)?;
                }
                let mailbox = self.partition(partition)?;
                let mut entries = mailbox.call(|reply| PartitionMsg::ReadMany { keys, reply }).await?;
                entries.truncate(fitting(&entries, inner.config.batch_bytes()));
                Ok(Reply::Entries(entries))
            }
            ReplicaRequest::Stream { partition, after, limit } => {
                let mailbox = self.partition(partition)?;
                let limit = (limit as usize).clamp(1, 4096);
                let mut page = mailbox.call(|reply| PartitionMsg::Chunk { after, limit, reply }).await?;
                page.truncate(fitting(&page, inner.config.batch_bytes()));
                Ok(Reply::Entries(page))
            }
            ReplicaRequest::Keys { partition, from, limit } => {
                let mailbox = self.partition(partition)?;
                let limit = (limit as usize).clamp(1, ringkv_core::scan::MAX_PAGE_KEYS);
                // One more than asked tells whether the partition goes on.
                let mut keys = mailbox.call(|reply| PartitionMsg::Keys { from, limit: limit + 1, reply }).await?;
                let mut full = keys.len() > limit;
                keys.truncate(limit);
                let fit = fitting(&keys, inner.config.batch_bytes());
                full |= fit < keys.len();
                keys.truncate(fit);
                Ok(Reply::Keys { keys, full })
            }
            ReplicaRequest::Deliver { entries, hinted } => {
                let horizon = hint_horizon(inner.now_ms(), inner.config.tombstone_grace);
                let mut durables = Vec::new();
                for (partition, key, entry) in entries {
                    self.check_placement(partition, &key)?;
                    if hinted && outlived(&entry, horizon) {
                        continue;
                    }
                    let mailbox = &inner.partitions[partition as usize];
                    if let Applied::Done { durable: Some(d), .. } = mailbox
                        .call(|reply| PartitionMsg::Apply { key, entry, condition: None, admit: false, reply })
                        .await??
                    {
                        durables.push(d);
                    }
                }
                for durable in durables {
                    settle(durable).await.map_err(storage)?;
                }
                Ok(Reply::Done)
            }
            ReplicaRequest::Batch(requests) => {
                // Concurrently: each write waits for its own durability, and
                // waiting in turn would serialise a batch's fsyncs.
                let replies = requests.into_iter().map(|request| async move {
                    if matches!(request, ReplicaRequest::Batch(_)) {
                        return Err(KvError::Protocol("batches do not nest".into()));
                    }
                    Box::pin(self.local_replica(request)).await
                });
                let replies = futures_util::future::join_all(replies).await;
                Ok(Reply::Batch(wire::fit_batch(replies, inner.config.max_frame_bytes())))
            }
        }
    }

    /// Refuses to start work for a client that has given up on it. Writes
    /// call it right *after* stamping, not before: a stamp that passes was
    /// taken before the deadline, however this process was stopped around
    /// it, whereas a check before the stamp leaves a window for a stop in
    /// between. A stamp refused here is dropped unused, which costs the
    /// clock nothing.
    fn check_deadline(&self, deadline: Option<Deadline>) -> Result<(), KvError> {
        deadline.map_or(Ok(()), |d| d.check(self.inner.now_ms()))
    }

    fn check_fault_injection(&self) -> Result<(), KvError> {
        match self.inner.config.fault_injection {
            true => Ok(()),
            false => Err(KvError::Protocol("fault injection is disabled on this node".into())),
        }
    }

    fn partition(&self, partition: u16) -> Result<&crate::partition::PartitionMailbox, KvError> {
        self.inner
            .partitions
            .get(partition as usize)
            .ok_or_else(|| KvError::Protocol(format!("partition {partition} out of range")))
    }

    /// Requests from peers name a partition; it must be one of ours and the
    /// key must belong to it, or a confused peer could plant keys where no
    /// reader will look. The key is held to the configuration's caps rather
    /// than to this node's limits: a client's key was checked where it
    /// arrived, and one stored under larger limits must still move.
    fn check_placement(&self, partition: u16, key: &Bytes) -> Result<(), KvError> {
        const ANY_CONFIG: Limits = Limits { max_key_bytes: Limits::KEY_CAP, max_value_bytes: Limits::VALUE_CAP };
        let inner = &self.inner;
        ANY_CONFIG.check_key(key)?;
        if partition >= inner.partitioner.count() || inner.partitioner.partition_of(key).0 != partition {
            return Err(KvError::Protocol(format!("key does not belong to partition {partition}")));
        }
        Ok(())
    }

    pub(crate) async fn on_replica(
        &self,
        topo: &Topology,
        node: &NodeName,
        request: ReplicaRequest,
    ) -> Result<Reply, KvError> {
        if topo.is_self(node) {
            return self.local_replica(request).await;
        }
        let addr = topo.addr(node).ok_or_else(|| KvError::Unavailable(format!("no address for {node}")))?;
        self.inner.peers.call(addr, request, self.inner.config.replica_timeout).await
    }

    pub(crate) async fn store_hint(&self, target: NodeName, partition: PartitionId, key: Bytes, entry: Entry) {
        let stored = self
            .inner
            .hints
            .call(|reply| HintsMsg::Store { target: target.clone(), partition: partition.0, key, entry, reply })
            .await;
        if let Err(e) = stored.and_then(|r| r) {
            tracing::debug!(%target, error = %e, "could not keep a hint");
        }
    }

    /// Sends an entry to the key's replicas and waits for the quorum.
    async fn replicate(
        &self,
        operation: &'static str,
        key: Bytes,
        entry: Entry,
        condition: Option<Version>,
        consistency: Consistency,
    ) -> Result<Written, KvError> {
        let topo = self.inner.topology();
        let partition = self.inner.partitioner.partition_of(&key);
        let plan = plan_write(operation, &topo, partition, consistency, self.inner.config.write_quorum)?;
        for replica in &plan.hints {
            self.store_hint(replica.clone(), partition, key.clone(), entry.clone()).await;
        }
        for gainer in &plan.gainers {
            let (node, topo, key, entry, gainer) =
                (self.clone(), topo.clone(), key.clone(), entry.clone(), gainer.clone());
            tokio::spawn(async move {
                let request = ReplicaRequest::Apply { partition: partition.0, key, entry, condition, hint_for: None };
                if let Err(e) = node.on_replica(&topo, &gainer, request).await {
                    tracing::debug!(%gainer, error = %e, "write to a gaining replica failed");
                }
            });
        }
        // The replica calls run inside this task until the quorum is met
        // (no task per replica), and whatever is left runs on in a task of
        // its own so that slow replicas still get the write, or a hint.
        let mut calls: FuturesUnordered<_> = plan
            .targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let request = ReplicaRequest::Apply {
                    partition: partition.0,
                    key: key.clone(),
                    entry: entry.clone(),
                    condition,
                    hint_for: target.hint_for.as_ref().map(|n| n.to_string()),
                };
                let (node, topo, target) = (self.clone(), topo.clone(), target.node.clone());
                async move { (i, node.on_replica(&topo, &target, request).await) }
            })
            .collect();
        let mut round = WriteRound::new(operation, &plan, &topo);
        let keep_hint = {
            let (node, key, entry) = (self.clone(), key.clone(), entry.clone());
            move |Action::KeepHint(replica): Action| {
                let (node, key, entry) = (node.clone(), key.clone(), entry.clone());
                async move {
                    tracing::debug!(%replica, "replica write failed; keeping a hint");
                    node.store_hint(replica, partition, key, entry).await;
                }
            }
        };
        let mut keep_late_hint = keep_hint.clone();
        fan_out(&mut calls, &mut round, keep_hint, Until::Decided).await;
        let outcome = round.outcome();
        if !calls.is_empty() {
            tokio::spawn(async move { fan_out(&mut calls, &mut round, &mut keep_late_hint, Until::AllAnswered).await });
        }
        outcome
    }

    /// Reads the key from its replicas, returns the newest entry and repairs
    /// stale replicas in the background.
    async fn read_entry(&self, key: &Bytes, consistency: Consistency) -> Result<Option<Entry>, KvError> {
        let topo = self.inner.topology();
        let partition = self.inner.partitioner.partition_of(key);
        let read_quorum = self.inner.config.read_quorum;
        let up = plan_read("read", &topo, partition, consistency, read_quorum)?;
        // As for writes: the calls run in this task until the quorum is
        // met, and late answers are awaited in the background (they count
        // for read repair: a replica that was slow may be stale).
        let mut calls: FuturesUnordered<_> =
            up.iter()
                .enumerate()
                .map(|(i, name)| {
                    let (node, topo, name, key) = (self.clone(), topo.clone(), name.clone(), key.clone());
                    async move {
                        (i, node.on_replica(&topo, &name, ReplicaRequest::Read { partition: partition.0, key }).await)
                    }
                })
                .collect();
        let mut round = read_round(up, consistency, read_quorum);
        fan_out(&mut calls, &mut round, no_action, Until::Decided).await;
        round.outcome()?;
        let newest = round.newest();
        if let Some(entry) = &newest {
            // What this node answers with, its clock now covers: a client's
            // session (and this node's next write) orders after it.
            let _ = self.inner.hlc.observe(entry.version.newest_ts(), self.inner.now_ms());
        }
        if calls.is_empty() && round.repairs().is_none() {
            return Ok(newest);
        }
        let (node, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            fan_out(&mut calls, &mut round, no_action, Until::AllAnswered).await;
            let Some((newest, stale)) = round.repairs() else { return };
            for replica in stale {
                let request = ReplicaRequest::Apply {
                    partition: partition.0,
                    key: key.clone(),
                    entry: newest.clone(),
                    condition: None,
                    hint_for: None,
                };
                if let Err(e) = node.on_replica(&topo, &replica, request).await {
                    tracing::debug!(node = %replica, error = %e, "read repair failed");
                }
            }
        });
        Ok(newest)
    }
}

/// When [`fan_out`] returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Once the round has its answer; calls still running stay in `calls`.
    Decided,
    /// Once every call has answered.
    AllAnswered,
}

/// The one driver of a request's replica calls: feeds each call's result
/// to `round` as it comes in and does the actions the round returns.
pub(crate) async fn fan_out<R: Round, F, Fut>(
    calls: &mut (impl futures_util::Stream<Item = (usize, Result<Reply, KvError>)> + Unpin),
    round: &mut R,
    mut act: F,
    until: Until,
) where
    F: FnMut(Action) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some((i, result)) = calls.next().await {
        let progress = round.answer(i, result);
        for action in round.actions() {
            act(action).await;
        }
        if until == Until::Decided && progress != Progress::Pending {
            return;
        }
    }
}

/// The action handler of rounds that return none.
pub(crate) async fn no_action(action: Action) {
    tracing::error!(?action, "a round without actions returned one");
}

impl Node {
    async fn read_live(&self, key: &Bytes, consistency: Consistency) -> Result<Option<(Entry, u64)>, KvError> {
        self.inner.limits.check_key(key)?;
        let entry = self.read_entry(key, consistency).await?;
        Ok(self.live_now(entry))
    }

    /// The entry if it is live now, with the time it was judged at.
    fn live_now(&self, entry: Option<Entry>) -> Option<(Entry, u64)> {
        let now = self.inner.now_ms();
        let epoch = self.inner.epoch();
        entry.filter(|e| e.live_value(now, epoch).is_some()).map(|e| (e, now))
    }

    /// Writes an existing entry, version unchanged, to its key's current
    /// replicas (an eviction's tombstone, from the leader that chose it).
    pub(crate) async fn write_entry(&self, key: Bytes, entry: Entry) -> Result<(), KvError> {
        self.replicate("eviction", key, entry, None, Consistency::One).await.map(|_| ())
    }

    pub(crate) async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
        c: Consistency,
        deadline: Option<Deadline>,
    ) -> Result<(), KvError> {
        let inner = &self.inner;
        inner.limits.check_key(&key)?;
        inner.limits.check_value(&value)?;
        let now = inner.now_ms();
        let expires_at = ttl.map(|t| expiry_from_ttl(now, t)).transpose()?;
        let entry = Entry::value(inner.stamp(now), value, expires_at);
        self.check_deadline(deadline)?;
        self.replicate("put", key, entry, None, c).await.map(|_| ())
    }

    pub(crate) async fn get(&self, key: Bytes, c: Consistency) -> Result<Option<Bytes>, KvError> {
        Ok(self.read_live(&key, c).await?.and_then(|(e, _)| e.value))
    }

    pub(crate) async fn delete(&self, key: Bytes, c: Consistency, deadline: Option<Deadline>) -> Result<bool, KvError> {
        self.inner.limits.check_key(&key)?;
        let entry = Entry::tombstone(self.inner.stamp(self.inner.now_ms()));
        self.check_deadline(deadline)?;
        match self.replicate("delete", key, entry, None, c).await? {
            Written::Done { was_live } => Ok(was_live),
            Written::Conflict => Err(KvError::Internal("an unconditional delete reported a conflict".into())),
        }
    }

    pub(crate) async fn exists(&self, key: Bytes, c: Consistency) -> Result<bool, KvError> {
        Ok(self.read_live(&key, c).await?.is_some())
    }

    pub(crate) async fn ttl(&self, key: Bytes, c: Consistency) -> Result<KeyTtl, KvError> {
        Ok(match self.read_live(&key, c).await? {
            None => KeyTtl::Missing,
            Some((Entry { expires_at: None, .. }, _)) => KeyTtl::Persistent,
            Some((Entry { expires_at: Some(at), .. }, now)) => KeyTtl::Expires(Duration::from_millis(at - now)),
        })
    }

    /// Rewrites a live entry with a new expiry (or none). The rewrite keeps
    /// the version of the value it read and adds a fresh touch
    /// ([`Version::touched`]), so that it outranks that value but never a
    /// write stamped after it: wherever it lands (a replica that missed a
    /// newer put, a stand-in, a hint, repair), it cannot bring the older
    /// value back. The write is also conditional on nothing newer than what
    /// was read being stored, and retried if a concurrent write got in
    /// between, so that racing a put it lands on the new value.
    pub(crate) async fn set_expiry(
        &self,
        key: Bytes,
        ttl: Option<Duration>,
        c: Consistency,
        deadline: Option<Deadline>,
    ) -> Result<bool, KvError> {
        // A conflict on one replica does not undo the write on the others:
        // the next attempt may read back what the last one wrote, which
        // means it was applied (a persist that then found no expiry left
        // answered "not applied" for a key it had just made persistent),
        // even if that write has expired since (a short expire whose
        // retry came later than its ttl answered "not applied" for a key
        // it had made expire).
        self.inner.limits.check_key(&key)?;
        let mut written: Option<Version> = None;
        for _ in 0..RMW_ATTEMPTS {
            let seen = self.read_entry(&key, c).await?;
            if written.is_some() && written == seen.as_ref().map(|e| e.version) {
                return Ok(true);
            }
            let Some((current, _)) = self.live_now(seen) else { return Ok(false) };
            if ttl.is_none() && current.expires_at.is_none() {
                return Ok(false);
            }
            // The expiry counts from now, after the read, not from before it.
            let now = self.inner.now_ms();
            let expires_at = ttl.map(|t| expiry_from_ttl(now, t)).transpose()?;
            let version = current.version.touched(self.inner.stamp(now));
            self.check_deadline(deadline)?;
            let entry = Entry { version, value: current.value, expires_at };
            written = Some(version);
            let operation = if ttl.is_some() { "expire" } else { "persist" };
            if let Written::Done { .. } =
                self.replicate(operation, key.clone(), entry, Some(current.version), c).await?
            {
                return Ok(true);
            }
        }
        Err(KvError::Unavailable(format!("key kept changing during {RMW_ATTEMPTS} attempts to update its expiry")))
    }

    /// A read-modify-write, run at the key's leading replica (its first
    /// replica that is up): here if this node leads, else there. Updates of
    /// one key are serialized while one replica leads; when the lead moves
    /// (the leader is down, or seen down), the new leader starts from what
    /// a quorum read finds, so an update acknowledged by a write quorum is
    /// never lost, but two updates racing across the change may both apply
    /// to the same value, and an update whose answer was lost may have been
    /// applied.
    pub(crate) async fn update(&self, key: Bytes, update: Update) -> Result<Answer, KvError> {
        let inner = &self.inner;
        inner.limits.check_key(&key)?;
        if let Update::Set { value, .. } = &update {
            inner.limits.check_value(value)?;
        }
        let topo = inner.topology();
        let partition = inner.partitioner.partition_of(&key);
        let leader = topo.replicas(partition).iter().find(|n| topo.is_up(n)).cloned();
        let Some(leader) = leader else { return Err(unavailable("update", &topo, partition, 1)) };
        if topo.is_self(&leader) {
            return self.lead_update(partition, key, update).await;
        }
        let addr = topo.addr(&leader).ok_or_else(|| KvError::Unavailable(format!("no address for {leader}")))?;
        // The leader reads a quorum and then writes one, each waiting up
        // to a replica timeout.
        let request = ReplicaRequest::Update { partition: partition.0, key, update };
        match inner.peers.call(addr, request, inner.config.replica_timeout * 3).await? {
            Reply::Updated(answer) => Ok(answer),
            other => Err(KvError::Protocol(format!("unexpected reply to an update: {other:?}"))),
        }
    }

    /// Runs an update as the key's leader: reads a quorum (this replica may
    /// have missed the newest write), applies the update in the partition's
    /// actor, and writes the result to a quorum.
    ///
    /// Boxed behind a named type: it replicates, and replicating can call
    /// `local_replica`, which calls it back for a forwarded update.
    pub(crate) fn lead_update(&self, partition: PartitionId, key: Bytes, update: Update) -> BoxedUpdate<'_> {
        Box::pin(async move {
            let inner = &self.inner;
            let seen = self.read_entry(&key, Consistency::Quorum).await?;
            let max_value = inner.limits.max_value_bytes;
            let mailbox = &inner.partitions[partition.0 as usize];
            let updated = mailbox
                .call(|reply| PartitionMsg::Update { key: key.clone(), update, seen, max_value, reply })
                .await??;
            if let Some((entry, _)) = updated.written {
                // Applied here again, the identical entry waits for the first
                // one's durability, and counts towards the quorum.
                if let Written::Conflict = self.replicate("update", key, entry, None, Consistency::Quorum).await? {
                    return Err(KvError::Internal("an unconditional write reported a conflict".into()));
                }
            }
            Ok(updated.answer)
        })
    }

    /// Raises the truncate epoch everywhere it can reach now; gossip carries
    /// it to the rest, and a node that was down learns it before serving.
    /// Clears the cluster: a truncate epoch ordered after every write any
    /// reachable member stamped or acknowledged before (its clock is asked
    /// first), applied by every live member before the clear is
    /// acknowledged. Each member absorbs the epoch into its clock however
    /// far ahead it is, so whatever it stamps afterwards survives the
    /// clear; a replica refuses a write the epoch covers
    /// (`KvError::Cleared`) rather than acknowledge what it drops. Members
    /// that are down learn the epoch from gossip before they serve again.
    pub(crate) async fn clear(&self) -> Result<(), KvError> {
        let inner = &self.inner;
        let topo = inner.topology();
        let others: Vec<NodeName> =
            topo.members.iter().filter(|(n, m)| !topo.is_self(n) && m.live).map(|(n, _)| n.clone()).collect();
        let clocks = others.iter().map(|name| self.on_replica(&topo, name, ReplicaRequest::Clock));
        let mut epoch = inner.hlc.now(inner.now_ms());
        for (name, clock) in others.iter().zip(futures_util::future::join_all(clocks).await) {
            match clock {
                Ok(Reply::Clock(clock)) => epoch = epoch.max(clock),
                Ok(other) => return Err(KvError::Protocol(format!("unexpected reply to a clock request: {other:?}"))),
                Err(e) => tracing::warn!(node = %name, error = %e, "clear cannot ask this member's clock"),
            }
        }
        let epoch = Epoch(epoch);
        self.apply_epoch(epoch).await?;
        let truncates =
            others.iter().map(|name| self.call_retrying(&topo, name, || ReplicaRequest::Truncate { epoch }));
        let mut answered = Vec::new();
        let mut failed = Vec::new();
        for (name, result) in others.iter().zip(futures_util::future::join_all(truncates).await) {
            match result {
                Ok(_) => answered.push(name.to_string()),
                Err(e) => failed.push(ReplicaFailure { node: name.to_string(), reason: e.to_string() }),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        // Applied here and spreading by gossip, but a member that has not
        // applied it may still acknowledge writes that it will drop.
        Err(KvError::Quorum {
            operation: "clear".into(),
            needed: others.len() + 1,
            replicas: others.len() + 1,
            acked: answered.len() + 1,
            answered,
            failed,
        })
    }

    /// Makes `epoch` the truncate epoch here: the clock absorbs it, every
    /// partition drops what it covers (durably; a busy partition is asked
    /// again until it has), hints it covers are dropped, and only then is
    /// the epoch recorded and gossiped, so a failure part-way leaves it to
    /// be applied again.
    pub(crate) async fn apply_epoch(&self, epoch: Epoch) -> Result<(), KvError> {
        let inner = &self.inner;
        if epoch <= inner.epoch() {
            return Ok(());
        }
        inner.hlc.absorb(epoch.0);
        let mut durables = Vec::new();
        for partition in &inner.partitions {
            if let Some(durable) =
                self.patiently(|| partition.call(|reply| PartitionMsg::Truncate { epoch, reply })).await??
            {
                durables.push(durable);
            }
        }
        for durable in durables {
            settle(durable).await.map_err(storage)?;
        }
        self.patiently(|| inner.hints.call(|reply| HintsMsg::Prune { epoch, older_than_ms: 0, reply })).await?;
        inner.raise_epoch(epoch);
        if let Some(membership) = inner.membership.lock().await.as_ref() {
            membership.set_epoch(inner.epoch()).await;
        }
        tracing::info!(epoch = %epoch.0, "truncate epoch applied");
        Ok(())
    }

    /// Retries a mailbox call while the mailbox is full, until shutdown.
    async fn patiently<T, F, Fut>(&self, call: F) -> Result<T, KvError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, KvError>>,
    {
        let mut wait = Duration::from_millis(5);
        loop {
            match call().await {
                Err(KvError::Busy { .. }) => {
                    if !self.pause(wait).await {
                        return Err(KvError::ShuttingDown);
                    }
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn explain(&self, key: Bytes) -> Result<Explanation, KvError> {
        self.inner.limits.check_key(&key)?;
        let topo = self.inner.topology();
        let partition = self.inner.partitioner.partition_of(&key);
        let mut replicas = Vec::new();
        for name in topo.replicas(partition) {
            let request = ReplicaRequest::Read { partition: partition.0, key: key.clone() };
            let entry = match self.on_replica(&topo, name, request).await {
                Ok(Reply::Entry(entry)) => Ok(entry),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            replicas.push(ReplicaView { node_id: name.to_string(), entry });
        }
        Ok(Explanation { partition: partition.0, replicas })
    }

    pub(crate) async fn status(&self) -> Result<NodeStatus, KvError> {
        let stats = self.stats().await?;
        let (hints, dropped) = self.inner.hints.call(|reply| HintsMsg::Pending { reply }).await?;
        let topo = self.inner.topology();
        Ok(NodeStatus {
            node_id: self.inner.config.node_id.clone(),
            status: topo.members.get(&topo.self_name).map_or(ringkv_net::wire::MemberStatus::Joining, |m| m.status),
            partitions_owned: topo.owned_by_self() as u32,
            entries: stats.entries as u64,
            values: stats.values as u64,
            hints: hints.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
            hints_dropped: dropped,
            epoch: self.inner.epoch(),
            repair: self.inner.repair.status(),
            transfers: self.inner.transfers.status(),
            replication: self.inner.batch_stats.status(),
            gossip: self.inner.gossip_keys.as_ref().map(|keys| {
                let mut status = keys.status();
                status.unproven = topo.unproven.iter().map(|n| n.to_string()).collect();
                status
            }),
            memory: self.inner.memory.status(),
            clock_off_ms: self.inner.standing.as_ref().and_then(|s| s.clock_off()),
        })
    }
}

/// The embedded node serves the trait at consistency `quorum`, like the
/// client's default.
impl KvStore for Node {
    async fn put(&self, key: impl Into<Bytes> + Send, value: impl Into<Bytes> + Send) -> Result<(), KvError> {
        Node::put(self, key.into(), value.into(), None, Consistency::Quorum, None).await
    }

    async fn put_with_ttl(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
        ttl: Duration,
    ) -> Result<(), KvError> {
        Node::put(self, key.into(), value.into(), Some(ttl), Consistency::Quorum, None).await
    }

    async fn get(&self, key: impl Into<Bytes> + Send) -> Result<Option<Bytes>, KvError> {
        Node::get(self, key.into(), Consistency::Quorum).await
    }

    async fn delete(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        Node::delete(self, key.into(), Consistency::Quorum, None).await
    }

    async fn exists(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        Node::exists(self, key.into(), Consistency::Quorum).await
    }

    async fn ttl(&self, key: impl Into<Bytes> + Send) -> Result<KeyTtl, KvError> {
        Node::ttl(self, key.into(), Consistency::Quorum).await
    }

    async fn expire(&self, key: impl Into<Bytes> + Send, ttl: Duration) -> Result<bool, KvError> {
        self.set_expiry(key.into(), Some(ttl), Consistency::Quorum, None).await
    }

    async fn persist(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        self.set_expiry(key.into(), None, Consistency::Quorum, None).await
    }

    async fn clear(&self) -> Result<(), KvError> {
        Node::clear(self).await
    }
}

impl crate::metrics::Source for Node {
    fn metrics(&self) -> Option<&Metrics> {
        self.inner.metrics.as_deref()
    }

    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shutdown_signal()
    }

    async fn scrape(&self) -> Result<String, KvError> {
        let status = self.status().await?;
        let members = self.inner.topology().to_wire();
        let metrics = self.inner.metrics.as_ref().ok_or(KvError::Unavailable("metrics are off".into()))?;
        Ok(metrics.render(&status, &members))
    }
}

impl crate::resp::Host for Node {
    fn metrics(&self) -> Option<&Metrics> {
        self.inner.metrics.as_deref()
    }

    async fn update(&self, key: Bytes, update: Update) -> Result<Answer, KvError> {
        Node::update(self, key, update).await
    }

    async fn scan(&self, from: Cursor, count: usize) -> Result<(Option<Cursor>, Vec<Bytes>), KvError> {
        Node::scan(self, from, count).await
    }

    fn memory_limit(&self) -> u64 {
        self.inner.memory.limit() as u64
    }

    fn set_memory_limit(&self, bytes: u64) {
        tracing::info!(maxmemory = bytes, "maxmemory changed through CONFIG SET");
        self.inner.memory.set_limit(bytes as usize);
    }

    async fn status(&self) -> Result<NodeStatus, KvError> {
        Node::status(self).await
    }

    fn config(&self) -> &crate::config::NodeConfig {
        &self.inner.config
    }

    fn clustered(&self) -> bool {
        self.gossip_addr().is_some()
    }

    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shutdown_signal()
    }

    fn standing(&self) -> Result<(), KvError> {
        self.inner.standing()
    }
}

impl Handler for Node {
    async fn handle(&self, request: Request, peer: Peer) -> Response {
        let Some(metrics) = &self.inner.metrics else { return self.serve(request, peer).await };
        let op = Op::of_request(&request);
        let started = tokio::time::Instant::now();
        let response = self.serve(request, peer).await;
        metrics.request(op, Protocol::Quic, Outcome::of(&response), started.elapsed());
        response
    }
}

impl Node {
    async fn serve(&self, request: Request, peer: Peer) -> Response {
        let Request::Session { seen, deadline, request } = request else {
            return self.dispatch(request, peer, None).await;
        };
        if matches!(*request, Request::Replica(_)) {
            return Err(KvError::Protocol("a session wraps client requests, not replica requests".into()));
        }
        // Before anything else: a request read after its client gave up
        // (this process was stopped, or behind) is refused, not started.
        self.check_deadline(deadline)?;
        let inner = &self.inner;
        // Not absorbed only if absurdly far ahead (max_clock_drift); the
        // request still runs, ordered by this node's own clock.
        if let Err(e) = inner.hlc.observe(seen, inner.now_ms()) {
            tracing::warn!(error = %e, "a client's session clock is not absorbed");
        }
        let reply = self.dispatch(*request, peer, deadline).await?;
        Ok(Reply::Session { clock: inner.hlc.last(), reply: Box::new(reply) })
    }
}

impl Node {
    /// Runs one request. Writes check the client's deadline after each
    /// stamp; reads need not, since a late read changes nothing.
    async fn dispatch(&self, request: Request, peer: Peer, deadline: Option<Deadline>) -> Response {
        let inner = &self.inner;
        // Before anything else: a request its certificate may not send is
        // refused whatever the node's state.
        let topology = inner.topology();
        if let Err(e) = access::authorize(&request, &peer.role, |id| topology.members.contains_key(id)) {
            tracing::warn!(peer = %peer.addr, error = %e, "refusing a request");
            return Err(e);
        }
        // Requests that read or change data wait for a standing this node can
        // trust; those that only describe the node (status, explain) do not.
        if request.is_data() || matches!(request, Request::Replica(_)) {
            inner.standing()?;
        }
        match request {
            Request::Session { .. } => Err(KvError::Protocol("sessions do not nest".into())),
            Request::Ping => {
                Ok(Reply::Pong { node_id: inner.config.node_id.clone(), version: env!("CARGO_PKG_VERSION").into() })
            }
            Request::Put { key, value, ttl_ms, consistency } => {
                let ttl = ttl_ms.map(Duration::from_millis);
                self.put(key, value, ttl, consistency, deadline).await.map(|()| Reply::Done)
            }
            Request::Get { key, consistency } => self.get(key, consistency).await.map(Reply::Value),
            Request::Delete { key, consistency } => self.delete(key, consistency, deadline).await.map(Reply::Flag),
            Request::Exists { key, consistency } => self.exists(key, consistency).await.map(Reply::Flag),
            Request::Ttl { key, consistency } => self.ttl(key, consistency).await.map(Reply::Ttl),
            Request::Expire { key, ttl_ms, consistency } => {
                let ttl = Some(Duration::from_millis(ttl_ms));
                self.set_expiry(key, ttl, consistency, deadline).await.map(Reply::Flag)
            }
            Request::Persist { key, consistency } => {
                self.set_expiry(key, None, consistency, deadline).await.map(Reply::Flag)
            }
            // Rare requests with large futures are boxed, so that every
            // request's future (moved whole when its task is spawned) stays
            // the size of the common ones.
            Request::Clear => Box::pin(self.clear()).await.map(|()| Reply::Done),
            Request::Replica(replica) => {
                if inner.config.fault_injection && inner.faults.blocks(peer.addr) {
                    return Err(KvError::Unavailable(format!("link from {} cut by fault injection", peer.addr)));
                }
                if topology.fences(peer.addr) {
                    return Err(KvError::Unavailable(format!(
                        "{} was removed from the ring while it was out; it must discard its data and rejoin",
                        peer.addr
                    )));
                }
                self.local_replica(replica).await
            }
            Request::Members => Ok(Reply::Members(inner.topology().to_wire())),
            Request::Time => Ok(Reply::Time { wall_ms: inner.now_ms() }),
            Request::Claim => match &inner.claims {
                Some(claims) => Box::pin(claims.claims()).await.map(Reply::Claim),
                None => Err(KvError::Unavailable("a standalone node gossips nothing".into())),
            },
            Request::Status => Box::pin(self.status()).await.map(|s| Reply::Status(Box::new(s))),
            Request::Leave => Box::pin(self.begin_leave()).await.map(|()| Reply::Done),
            Request::Fault { blocked } => {
                self.check_fault_injection()?;
                tracing::warn!(?blocked, "fault injection: traffic with these addresses is dropped");
                inner.faults.set(blocked);
                Ok(Reply::Done)
            }
            Request::Skew { offset_ms } => {
                self.check_fault_injection()?;
                tracing::warn!(offset_ms, "fault injection: the clock is skewed");
                inner.faults.skew(offset_ms);
                Ok(Reply::Done)
            }
            Request::Crash { partition } => {
                self.check_fault_injection()?;
                tracing::warn!(partition, "fault injection: the partition's actor is told to fail");
                // The actor dies instead of answering; that is the point.
                let _ = self.partition(partition)?.call(|reply| PartitionMsg::Fail { reply }).await;
                Ok(Reply::Done)
            }
            Request::Explain { key } => Box::pin(self.explain(key)).await.map(Reply::Explain),
        }
    }
}
