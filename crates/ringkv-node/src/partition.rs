//! The partition-owner actor: it owns one partition's shard, applies
//! entries to it, logs what changed, and answers reads. It never waits for
//! the disk: a write's reply carries a [`Durable`] that the caller awaits, so
//! the actor goes on to the next message while the log writer group-commits.

use std::sync::Arc;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ringkv_core::scan::Listed;
use ringkv_core::update::{Answer, Change, Update};
use ringkv_core::{Clock, Entry, Epoch, KvError, PartitionId, Version};
use ringkv_storage::{Durable, Horizon, Shard, ShardStats, Sweep, Wal, WalRecord, footprint};

use crate::mailbox::{Envelope, Mailbox};
use crate::memory::{Admission, MAX_VICTIMS_PER_WRITE, Memory, admission, with_headroom};

pub(crate) type PartitionMailbox = Mailbox<PartitionMsg>;

pub(crate) enum PartitionMsg {
    /// Merge an entry. With a condition, only if nothing newer than that
    /// version is stored (read-modify-write operations). `admit` subjects a
    /// new write to the memory bound; what a replica already acknowledged
    /// elsewhere (hints, repair, transfers) is taken whatever it costs, as
    /// refusing it would lose it or retry it forever.
    Apply {
        key: Bytes,
        entry: Entry,
        condition: Option<Version>,
        admit: bool,
        reply: RpcReplyPort<Result<Applied, KvError>>,
    },
    /// Run a read-modify-write on the stored value (as the key's leading
    /// replica) and store the result: updates of one key here are applied
    /// one after another. `seen` is the newest entry a quorum read found,
    /// merged first, since this replica may have missed it.
    Update {
        key: Bytes,
        update: Update,
        seen: Option<Entry>,
        max_value: usize,
        reply: RpcReplyPort<Result<Updated, KvError>>,
    },
    /// Evict up to `max` keys (as this partition's leader), for a node over
    /// its memory bound. Answers how many went.
    Evict {
        max: usize,
        reply: RpcReplyPort<Result<usize, KvError>>,
    },
    /// How good the shard's best victim is, for the evictor to compare.
    VictimScore {
        reply: RpcReplyPort<Option<u64>>,
    },
    /// The stored entry, dead or alive, for the coordinator to judge.
    Read {
        key: Bytes,
        reply: RpcReplyPort<Option<Entry>>,
    },
    Truncate {
        epoch: Epoch,
        reply: RpcReplyPort<Result<Option<Durable>, KvError>>,
    },
    Sweep {
        horizon: Horizon,
        budget: usize,
        reply: RpcReplyPort<Sweep>,
    },
    Chunk {
        after: Option<Bytes>,
        limit: usize,
        reply: RpcReplyPort<Vec<(Bytes, Entry)>>,
    },
    /// A page of keys for a scan (`Shard::keys_from`).
    Keys {
        from: u64,
        limit: usize,
        reply: RpcReplyPort<Vec<Listed>>,
    },
    Stats {
        reply: RpcReplyPort<ShardStats>,
    },
    /// Digest branches (groups of leaves), or the leaves of some branches.
    Digest {
        branches: Option<Vec<u16>>,
        reply: RpcReplyPort<Vec<u64>>,
    },
    /// Keys and versions of the entries in the given digest leaves, after
    /// the key `after`.
    Versions {
        leaves: Vec<u16>,
        after: Option<Bytes>,
        reply: RpcReplyPort<Vec<(Bytes, Version)>>,
    },
    /// The stored entries of these keys.
    ReadMany {
        keys: Vec<Bytes>,
        reply: RpcReplyPort<Vec<(Bytes, Entry)>>,
    },
    /// Forget the partition's contents (durably): it moved elsewhere, or is
    /// about to be pulled afresh.
    Drop {
        reply: RpcReplyPort<Result<(usize, Option<Durable>), KvError>>,
    },
    /// Fault injection: panic, as a bug would.
    Fail {
        reply: RpcReplyPort<()>,
    },
}

/// Leaves per digest branch: the repair tree is root → branches → leaves.
pub(crate) const BRANCH: usize = 32;

pub(crate) enum Applied {
    Done {
        was_live: bool,
        durable: Option<Durable>,
    },
    /// The condition failed: something newer is stored.
    Conflict,
    /// The truncate epoch covers the entry: a clear came after it.
    Covered(Epoch),
}

/// What an update answers, and the entry it stored (to be replicated)
/// with its durability.
pub(crate) struct Updated {
    pub answer: Answer,
    pub written: Option<(Entry, Option<Durable>)>,
}

pub(crate) struct PartitionActor;

pub(crate) struct PartitionArgs {
    pub id: PartitionId,
    pub shard: Shard,
    pub wal: Option<Wal>,
    pub clock: Arc<dyn Clock>,
    pub memory: Arc<Memory>,
}

pub(crate) struct PartitionState {
    id: PartitionId,
    shard: Shard,
    wal: Option<Wal>,
    clock: Arc<dyn Clock>,
    memory: Arc<Memory>,
    /// The shard's footprint and keys with a TTL as last added to the
    /// node's totals.
    accounted: (usize, usize),
}

impl PartitionState {
    async fn log(&self, record: WalRecord) -> Result<Option<Durable>, KvError> {
        let Some(wal) = &self.wal else { return Ok(None) };
        let frames = record.encode().map_err(|e| KvError::Storage(e.to_string()))?;
        Ok(Some(wal.submit(frames).await))
    }

    /// Brings the node's total up to date with this shard's footprint.
    fn account(&mut self) {
        let stats = self.shard.stats();
        self.memory.account(self.accounted, (stats.bytes, stats.volatile));
        self.accounted = (stats.bytes, stats.volatile);
    }

    /// Makes room for a write that adds `growth` bytes, evicting from this
    /// shard if this node leads the partition and the policy evicts, or
    /// refuses it.
    ///
    /// A write evicts about its own size from its own shard, no more, while
    /// the node is within the headroom: what concurrent writes to other
    /// partitions add is theirs to evict (or the background evictor's).
    /// Evicting everything a node is over from whichever shard is written
    /// next would drain some shards to a few keys, and a small shard's
    /// least recently used key can be one a client uses all the time.
    /// The key being written is never the victim: it is the most recently
    /// used of all.
    async fn admit(&mut self, key: &[u8], growth: usize, now: u64) -> Result<(), KvError> {
        let memory = self.memory.clone();
        let leads = memory.leads(self.id);
        let headroom = with_headroom(memory.limit());
        let (start, mut evicted, mut exhausted) = (self.accounted.0, 0, false);
        loop {
            let freed = start.saturating_sub(self.accounted.0);
            let used = memory.used();
            let done = exhausted
                || evicted >= MAX_VICTIMS_PER_WRITE
                || (freed >= growth && used.saturating_add(growth) <= headroom);
            let candidates = !memory.policy.volatile_only() || memory.volatile() > 0;
            match admission(used, growth, memory.limit(), memory.policy, leads, done, candidates) {
                Admission::Admit => return Ok(()),
                Admission::AdmitOver => {
                    memory.wake.notify_one();
                    return Ok(());
                }
                Admission::Refuse => return Err(memory.refusal(growth)),
                Admission::Evict => match self.shard.victim(now, Some(key)) {
                    Some(victim) => {
                        self.evict(victim, now).await?;
                        evicted += 1;
                    }
                    None => exhausted = true,
                },
            }
        }
    }

    /// Evicts one key: a stamped delete, logged and sent to the other
    /// replicas like any other; a node without other replicas keeps no
    /// marker, since no older copy can arrive.
    ///
    /// The tombstone deletes the value that was chosen and nothing newer:
    /// its version is that value's, touched by the eviction's stamp (as an
    /// expire's rewrite is), so it outranks that value everywhere but
    /// never a write stamped after it, one in flight to this replica
    /// included. A write that raced with the eviction is kept, not lost.
    async fn evict(&mut self, key: Bytes, now: u64) -> Result<(), KvError> {
        let Some(victim) = self.shard.version(&key) else { return Ok(()) };
        let tombstone = Entry::tombstone(victim.touched(self.memory.stamp(now)));
        if self.memory.clustered() {
            // Only a touch from a clock beyond max_clock_drift could outrank
            // this one; then the value stays, and the write that needed the
            // room evicts another.
            if !self.shard.apply(&key, tombstone.clone(), now).changed {
                return Ok(());
            }
        } else {
            self.shard.forget(&key);
        }
        self.account();
        // Not awaited: an eviction lost in a crash leaves the key in place,
        // which the bound then evicts again.
        let _ = self.log(WalRecord::Entry { partition: self.id.0, key: key.clone(), entry: tombstone.clone() }).await?;
        self.memory.evicted(key, tombstone);
        Ok(())
    }

    async fn update(
        &mut self,
        key: Bytes,
        update: Update,
        seen: Option<Entry>,
        max_value: usize,
    ) -> Result<Updated, KvError> {
        if let Some(seen) = seen {
            self.apply(key.clone(), seen, None, false).await?;
        }
        let now = self.clock.now_ms();
        let stored = self.shard.read(&key, now);
        let live =
            stored.as_ref().filter(|e| !e.is_expired(now)).and_then(|e| Some((e.value.as_deref()?, e.expires_at)));
        let (change, answer) = ringkv_core::update::apply(&update, live, now, max_value)?;
        let replaced = stored.as_ref().map(|e| e.version);
        let (value, expires_at, retimed) = match change {
            Change::Keep => return Ok(Updated { answer, written: None }),
            Change::Write { value, expires_at } => (Some(value), expires_at, false),
            Change::Delete if live.is_none() => return Ok(Updated { answer, written: None }),
            Change::Delete => (None, None, false),
            Change::Retime { expires_at } => (stored.as_ref().and_then(|e| e.value.clone()), expires_at, true),
        };
        let stamp = self.memory.stamp_after(now, replaced);
        let version = match (retimed, replaced) {
            (true, Some(replaced)) => replaced.touched(stamp),
            _ => stamp,
        };
        if replaced.is_some_and(|r| r >= version) {
            return Err(KvError::Unavailable(
                "the key's version is stamped further ahead of this node's clock than max_clock_drift".into(),
            ));
        }
        let entry = Entry { version, value, expires_at };
        match self.apply(key, entry.clone(), None, true).await? {
            Applied::Done { durable, .. } => Ok(Updated { answer, written: Some((entry, durable)) }),
            Applied::Covered(epoch) => Err(KvError::Cleared { epoch: epoch.0 }),
            Applied::Conflict => Err(KvError::Internal("an unconditional write reported a conflict".into())),
        }
    }

    async fn apply(
        &mut self,
        key: Bytes,
        entry: Entry,
        condition: Option<Version>,
        admit: bool,
    ) -> Result<Applied, KvError> {
        let now = self.clock.now_ms();
        if self.shard.epoch().covers(entry.version) {
            return Ok(Applied::Covered(self.shard.epoch()));
        }
        if admit && self.memory.limit() > 0 && entry.value.is_some() {
            let size = footprint(key.len(), &entry);
            // What an overwrite replaces is looked up only when the write
            // might not fit without it.
            if self.memory.used().saturating_add(size) > self.memory.limit() {
                let stored = self.shard.footprint(&key);
                self.admit(&key, size.saturating_sub(stored), now).await?;
            }
        }
        let applied = match condition {
            None => self.shard.apply(&key, entry.clone(), now),
            Some(expected) => match self.shard.apply_if_not_newer(&key, entry.clone(), expected, now) {
                Ok(applied) => applied,
                Err(_newer) => return Ok(Applied::Conflict),
            },
        };
        // At once, not after the reply: the next write's admission, in
        // any partition, must see this one.
        self.account();
        let durable = if applied.changed {
            self.log(WalRecord::Entry { partition: self.id.0, key, entry }).await?
        } else if let Some(wal) = &self.wal {
            // Nothing new to log, but the identical entry may have been
            // logged moments ago and not be durable yet: an empty append is
            // a barrier that resolves once everything before it is.
            Some(wal.submit(Vec::new()).await)
        } else {
            None
        };
        Ok(Applied::Done { was_live: applied.was_live, durable })
    }
}

impl Actor for PartitionActor {
    type Msg = Envelope<PartitionMsg>;
    type State = PartitionState;
    type Arguments = PartitionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Envelope<PartitionMsg>>,
        args: PartitionArgs,
    ) -> Result<PartitionState, ActorProcessingErr> {
        let mut shard = args.shard;
        shard.set_eviction(args.memory.policy, u64::from(args.id.0), args.clock.now_ms());
        let mut state = PartitionState {
            id: args.id,
            shard,
            wal: args.wal,
            clock: args.clock,
            memory: args.memory,
            accounted: (0, 0),
        };
        state.account();
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Envelope<PartitionMsg>>,
        envelope: Envelope<PartitionMsg>,
        state: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        // A dropped reply port only means the caller gave up waiting. The
        // arms that wait (on the log, on evictions) run boxed: ractor moves
        // this future for every message, and unboxed they made it as large
        // as their deepest await, a copy that took 8% of a node's CPU under
        // GETs (BENCHMARKS.md, *Where the time goes*).
        match envelope.msg {
            PartitionMsg::Apply { key, entry, condition, admit, reply } => {
                let _ = reply.send(Box::pin(state.apply(key, entry, condition, admit)).await);
            }
            PartitionMsg::Update { key, update, seen, max_value, reply } => {
                let _ = reply.send(Box::pin(state.update(key, update, seen, max_value)).await);
            }
            PartitionMsg::Evict { max, reply } => {
                let now = state.clock.now_ms();
                let mut evicted = 0;
                let mut result = Ok(());
                while evicted < max && state.memory.over() && state.memory.leads(state.id) {
                    let Some(victim) = state.shard.victim(now, None) else { break };
                    result = Box::pin(state.evict(victim, now)).await;
                    if result.is_err() {
                        break;
                    }
                    evicted += 1;
                }
                let _ = reply.send(result.map(|()| evicted));
            }
            PartitionMsg::VictimScore { reply } => {
                let now = state.clock.now_ms();
                let _ = reply.send(state.shard.victim_score(now));
            }
            PartitionMsg::Read { key, reply } => {
                let now = state.clock.now_ms();
                let _ = reply.send(state.shard.read(&key, now));
            }
            PartitionMsg::Truncate { epoch, reply } => {
                let result = if epoch > state.shard.epoch() {
                    state.shard.truncate(epoch);
                    Box::pin(state.log(WalRecord::Truncate { epoch })).await
                } else {
                    Ok(None)
                };
                let _ = reply.send(result);
            }
            PartitionMsg::Sweep { horizon, budget, reply } => {
                let now = state.clock.now_ms();
                let _ = reply.send(state.shard.sweep(now, horizon, budget));
            }
            PartitionMsg::Chunk { after, limit, reply } => {
                let _ = reply.send(state.shard.chunk_after(after.as_deref(), limit));
            }
            PartitionMsg::Keys { from, limit, reply } => {
                let now = state.clock.now_ms();
                let _ = reply.send(state.shard.keys_from(from, limit, now));
            }
            PartitionMsg::Stats { reply } => {
                let _ = reply.send(state.shard.stats());
            }
            PartitionMsg::Digest { branches, reply } => {
                let digest = state.shard.digest();
                let answer = match branches {
                    None => digest.fold(BRANCH),
                    Some(branches) => branches
                        .iter()
                        .flat_map(|b| {
                            let start = (*b as usize * BRANCH).min(digest.leaves().len());
                            let end = (start + BRANCH).min(digest.leaves().len());
                            digest.leaves()[start..end].iter().copied()
                        })
                        .collect(),
                };
                let _ = reply.send(answer);
            }
            PartitionMsg::Drop { reply } => {
                // An empty shard has nothing a replay could bring back, so
                // dropping it costs no log record.
                let result = match state.shard.drop_all() {
                    0 => Ok((0, None)),
                    dropped => Box::pin(state.log(WalRecord::DropPartition { partition: state.id.0 }))
                        .await
                        .map(|d| (dropped, d)),
                };
                let _ = reply.send(result);
            }
            PartitionMsg::Versions { leaves, after, reply } => {
                let leaves: Vec<usize> =
                    leaves.iter().map(|l| *l as usize).filter(|l| *l < state.shard.digest().leaves().len()).collect();
                let versions =
                    state.shard.entries_in_leaves(&leaves, after.as_deref()).into_iter().map(|(k, e)| (k, e.version));
                let _ = reply.send(versions.collect());
            }
            PartitionMsg::Fail { reply } => {
                drop(reply);
                panic!("fault injection: partition {} told to fail", state.id.0);
            }
            PartitionMsg::ReadMany { keys, reply } => {
                let entries = keys.into_iter().filter_map(|k| state.shard.entry(&k).map(|e| (k, e)));
                let _ = reply.send(entries.collect());
            }
        }
        state.account();
        Ok(())
    }
}
