//! The partition-owner actor: it owns one partition's shard, applies
//! entries to it, logs what changed, and answers reads. It never waits for
//! the disk: a write's reply carries a [`Durable`] that the caller awaits, so
//! the actor goes on to the next message while the log writer group-commits.

use std::sync::Arc;

use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ringkv_core::{Clock, Entry, Epoch, KvError, PartitionId, Version};
use ringkv_storage::{Durable, Shard, ShardStats, Sweep, Wal, WalRecord};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) enum PartitionMsg {
    /// Merge an entry. With a condition, only if nothing newer than that
    /// version is stored (read-modify-write operations).
    Apply {
        key: Bytes,
        entry: Entry,
        condition: Option<Version>,
        reply: RpcReplyPort<Result<Applied, KvError>>,
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
        purge_before_ms: u64,
        budget: usize,
        reply: RpcReplyPort<Sweep>,
    },
    Chunk {
        after: Option<Bytes>,
        limit: usize,
        reply: RpcReplyPort<Vec<(Bytes, Entry)>>,
    },
    Stats {
        reply: RpcReplyPort<ShardStats>,
    },
}

pub(crate) enum Applied {
    Done {
        was_live: bool,
        durable: Option<Durable>,
    },
    /// The condition failed: something newer is stored.
    Conflict,
}

/// A message plus the mailbox slot it occupies until handled.
pub(crate) struct Envelope {
    msg: PartitionMsg,
    _slot: OwnedSemaphorePermit,
}

pub(crate) struct PartitionActor;

pub(crate) struct PartitionArgs {
    pub id: PartitionId,
    pub shard: Shard,
    pub wal: Option<Wal>,
    pub clock: Arc<dyn Clock>,
}

pub(crate) struct PartitionState {
    id: PartitionId,
    shard: Shard,
    wal: Option<Wal>,
    clock: Arc<dyn Clock>,
}

impl PartitionState {
    async fn log(&self, record: WalRecord) -> Result<Option<Durable>, KvError> {
        let Some(wal) = &self.wal else { return Ok(None) };
        let frames = record.encode().map_err(|e| KvError::Storage(e.to_string()))?;
        Ok(Some(wal.submit(frames).await))
    }

    async fn apply(&mut self, key: Bytes, entry: Entry, condition: Option<Version>) -> Result<Applied, KvError> {
        let now = self.clock.now_ms();
        let applied = match condition {
            None => self.shard.apply(&key, entry.clone(), now),
            Some(expected) => match self.shard.apply_if_not_newer(&key, entry.clone(), expected, now) {
                Ok(applied) => applied,
                Err(_newer) => return Ok(Applied::Conflict),
            },
        };
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
    type Msg = Envelope;
    type State = PartitionState;
    type Arguments = PartitionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Envelope>,
        args: PartitionArgs,
    ) -> Result<PartitionState, ActorProcessingErr> {
        Ok(PartitionState { id: args.id, shard: args.shard, wal: args.wal, clock: args.clock })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Envelope>,
        envelope: Envelope,
        state: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        // A dropped reply port only means the caller gave up waiting.
        match envelope.msg {
            PartitionMsg::Apply { key, entry, condition, reply } => {
                let _ = reply.send(state.apply(key, entry, condition).await);
            }
            PartitionMsg::Read { key, reply } => {
                let _ = reply.send(state.shard.entry(&key).cloned());
            }
            PartitionMsg::Truncate { epoch, reply } => {
                let result = if epoch > state.shard.epoch() {
                    state.shard.truncate(epoch);
                    state.log(WalRecord::Truncate { epoch }).await
                } else {
                    Ok(None)
                };
                let _ = reply.send(result);
            }
            PartitionMsg::Sweep { purge_before_ms, budget, reply } => {
                let now = state.clock.now_ms();
                let _ = reply.send(state.shard.sweep(now, purge_before_ms, budget));
            }
            PartitionMsg::Chunk { after, limit, reply } => {
                let _ = reply.send(state.shard.chunk_after(after.as_deref(), limit));
            }
            PartitionMsg::Stats { reply } => {
                let _ = reply.send(state.shard.stats());
            }
        }
        Ok(())
    }
}

/// A partition actor behind a bounded mailbox. ractor's mailboxes are
/// unbounded, so admission is a semaphore: a message takes a slot when sent
/// and frees it when handled, and a full mailbox answers `Busy` at once
/// instead of queueing without limit.
#[derive(Clone)]
pub(crate) struct Mailbox {
    actor: ActorRef<Envelope>,
    slots: Arc<Semaphore>,
    capacity: usize,
    id: PartitionId,
}

impl Mailbox {
    pub(crate) async fn spawn(args: PartitionArgs, capacity: usize) -> Result<Mailbox, crate::NodeError> {
        let id = args.id;
        // Unnamed: ractor's registry is process-wide, and several nodes may
        // share a process in tests and simulation.
        let (actor, _) = Actor::spawn(None, PartitionActor, args)
            .await
            .map_err(|e| crate::NodeError::Actor { name: format!("partition {id}"), reason: e.to_string() })?;
        Ok(Mailbox { actor, slots: Arc::new(Semaphore::new(capacity)), capacity, id })
    }

    pub(crate) async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> PartitionMsg,
    ) -> Result<T, KvError> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| KvError::Busy { partition: self.id.0, capacity: self.capacity })?;
        match self.actor.call(|reply| Envelope { msg: build(reply), _slot: slot }, None).await {
            Ok(CallResult::Success(value)) => Ok(value),
            Ok(CallResult::Timeout) => Err(KvError::Timeout { what: format!("partition {}", self.id), ms: 0 }),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(KvError::Internal(format!("partition {} is not running", self.id)))
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.actor.stop(None);
    }
}
