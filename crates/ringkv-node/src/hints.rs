//! Hinted handoff: entries held for replicas that were down.
//!
//! A node stores a hint when it stands in for a down preferred replica
//! (sloppy quorum), or when, as coordinator, a direct write to a replica it
//! believed up failed. Hints keep only the newest entry per key and target,
//! are logged like data when persistence is on, and are bounded in bytes:
//! past `max_hint_bytes` new hints are refused and counted. The handoff task
//! offers them to their owner once it is up and serving, and deletes them
//! once it has acknowledged them.
//!
//! A hint never resurrects anything: it is an ordinary entry under
//! last-writer-wins, so the owner keeps any newer tombstone; hints covered by
//! the truncate epoch are dropped; and hints older than the tombstone grace
//! period are dropped unsent, since the owner may already have purged the
//! tombstone that would have overruled them.

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ringkv_core::ring::NodeName;
use ringkv_core::{Entry, Epoch, KvError, Version, fitting};
use ringkv_storage::{Durable, Hints, Wal, WalRecord, merge_hint, remove_hint};

use crate::mailbox::{Envelope, Mailbox};

/// The line a hint's value must not be older than, `tombstone_grace` before
/// `now_ms`: the sweep purges tombstones written before the same line, so a
/// tombstone that overruled an older hinted value may be gone.
pub(crate) fn hint_horizon(now_ms: u64, grace: std::time::Duration) -> u64 {
    now_ms.saturating_sub(grace.as_millis() as u64)
}

/// Whether a hinted entry is too old to apply anywhere (see
/// [`hint_horizon`]). The holder drops such hints unsent, and the owner drops
/// them on arrival: by then, by its own clock, its sweep may have purged the
/// tombstone, whatever the holder's check said when it sent them. The
/// value's age counts, not a rewrite's: what may have been purged is a
/// tombstone newer than the value.
pub(crate) fn outlived(entry: &Entry, horizon_ms: u64) -> bool {
    entry.version.ts.wall_ms() < horizon_ms
}

pub(crate) type Hint = (u16, Bytes, Entry);

pub(crate) enum HintsMsg {
    Store {
        target: NodeName,
        partition: u16,
        key: Bytes,
        entry: Entry,
        reply: RpcReplyPort<Result<Option<Durable>, KvError>>,
    },
    /// Up to `max` hints for `target`, and no more than `max_bytes` of them
    /// encoded (at least one): one delivery to the target.
    Batch {
        target: NodeName,
        max: usize,
        max_bytes: usize,
        reply: RpcReplyPort<Vec<Hint>>,
    },
    Delivered {
        target: NodeName,
        delivered: Vec<(u16, Bytes, Version)>,
        reply: RpcReplyPort<Result<(), KvError>>,
    },
    /// Drops hints at or below the epoch, and hints older than the horizon.
    Prune {
        epoch: Epoch,
        older_than_ms: u64,
        reply: RpcReplyPort<usize>,
    },
    /// Targets with hints, with counts; and how many hints were refused.
    Pending {
        reply: RpcReplyPort<(Vec<(NodeName, u64)>, u64)>,
    },
    All {
        reply: RpcReplyPort<Vec<(NodeName, Vec<Hint>)>>,
    },
}

pub(crate) type HintsMailbox = Mailbox<HintsMsg>;

pub(crate) struct HintsActor;

pub(crate) struct HintsState {
    hints: Hints,
    /// What the held hints take: every hint stored adds its size, and every
    /// hint replaced, delivered or dropped takes its own back.
    bytes: usize,
    max_bytes: usize,
    dropped: u64,
    wal: Option<Wal>,
}

impl HintsState {
    pub(crate) fn new(hints: Hints, max_bytes: usize, wal: Option<Wal>) -> HintsState {
        let bytes = hints.values().flat_map(|h| h.iter()).map(|((_, k), e)| hint_size(k, e)).sum();
        HintsState { hints, bytes, max_bytes, dropped: 0, wal }
    }

    async fn log(&self, record: WalRecord) -> Result<Option<Durable>, KvError> {
        let Some(wal) = &self.wal else { return Ok(None) };
        let frames = record.encode().map_err(|e| KvError::Storage(e.to_string()))?;
        Ok(Some(wal.submit(frames).await))
    }

    async fn store(
        &mut self,
        target: NodeName,
        partition: u16,
        key: Bytes,
        entry: Entry,
    ) -> Result<Option<Durable>, KvError> {
        let held = self.hints.get(&*target).and_then(|held| held.get(&(partition, key.clone())));
        if held.is_some_and(|held| !entry.supersedes(held)) {
            return Ok(None);
        }
        // A newer hint for the same key replaces the held one, so only the
        // difference counts against the limit.
        let replaced = held.map_or(0, |held| hint_size(&key, held));
        let size = hint_size(&key, &entry);
        if (self.bytes - replaced) + size > self.max_bytes {
            self.dropped += 1;
            // Once per thousand, not once per write: a full store under load
            // would otherwise flood the log.
            if self.dropped % 1000 == 1 {
                tracing::warn!(
                    target = %target,
                    held = self.bytes,
                    dropped = self.dropped,
                    "hint store full; dropping hints (anti-entropy will repair)"
                );
            }
            return Err(KvError::Busy { what: "the hint store".into(), capacity: self.max_bytes });
        }
        merge_hint(&mut self.hints, &target, partition, key.clone(), entry.clone());
        self.bytes = self.bytes - replaced + size;
        self.log(WalRecord::Hint { target: target.to_string(), partition, key, entry }).await
    }

    fn remove(&mut self, target: &str, partition: u16, key: &Bytes, version: Version) {
        if let Some(removed) = remove_hint(&mut self.hints, target, partition, key, version) {
            self.bytes -= hint_size(key, &removed);
        }
    }
}

/// What a held hint counts for against `max_hint_bytes`.
fn hint_size(key: &Bytes, entry: &Entry) -> usize {
    key.len() + entry.size_bytes()
}

impl Actor for HintsActor {
    type Msg = Envelope<HintsMsg>;
    type State = HintsState;
    type Arguments = HintsState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: HintsState,
    ) -> Result<HintsState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        envelope: Self::Msg,
        state: &mut HintsState,
    ) -> Result<(), ActorProcessingErr> {
        match envelope.msg {
            HintsMsg::Store { target, partition, key, entry, reply } => {
                let _ = reply.send(state.store(target, partition, key, entry).await);
            }
            HintsMsg::Batch { target, max, max_bytes, reply } => {
                let mut batch: Vec<Hint> = state
                    .hints
                    .get(&*target)
                    .map(|held| held.iter().take(max).map(|((p, k), e)| (*p, k.clone(), e.clone())).collect())
                    .unwrap_or_default();
                batch.truncate(fitting(&batch, max_bytes));
                let _ = reply.send(batch);
            }
            HintsMsg::Delivered { target, delivered, reply } => {
                let mut result = Ok(());
                for (partition, key, version) in delivered {
                    state.remove(&target, partition, &key, version);
                    // A hint delivered twice is harmless, so nobody waits for
                    // the marker to be durable.
                    let marker = WalRecord::HintDelivered { target: target.to_string(), partition, key, version };
                    if let Err(e) = state.log(marker).await {
                        result = Err(e);
                        break;
                    }
                }
                let _ = reply.send(result);
            }
            HintsMsg::Prune { epoch, older_than_ms, reply } => {
                let mut gone = Vec::new();
                for (target, held) in &state.hints {
                    for ((p, k), e) in held {
                        if epoch.covers(e.version) || outlived(e, older_than_ms) {
                            gone.push((target.clone(), *p, k.clone(), e.version));
                        }
                    }
                }
                for (target, p, k, v) in &gone {
                    state.remove(target, *p, k, *v);
                }
                let _ = reply.send(gone.len());
            }
            HintsMsg::Pending { reply } => {
                let counts = state.hints.iter().map(|(t, h)| (NodeName::from(t.as_str()), h.len() as u64)).collect();
                let _ = reply.send((counts, state.dropped));
            }
            HintsMsg::All { reply } => {
                let all = state
                    .hints
                    .iter()
                    .map(|(t, h)| {
                        (NodeName::from(t.as_str()), h.iter().map(|((p, k), e)| (*p, k.clone(), e.clone())).collect())
                    })
                    .collect();
                let _ = reply.send(all);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ringkv_core::{NodeTag, Timestamp};

    use super::*;

    fn hint(ts: u64) -> Entry {
        Entry::value(Version::new(Timestamp::new(ts, 0), NodeTag(1)), Bytes::from(vec![1u8; 1000]), None)
    }

    /// The owner's own sweep purges a tombstone written before
    /// `hint_horizon(now)`; a hinted value older than that tombstone is then
    /// older than the line too, whenever the hint arrives after the purge.
    #[test]
    fn a_hint_older_than_the_grace_is_outlived_wherever_it_is_checked() {
        let grace = std::time::Duration::from_secs(12);
        let (value_written, tombstone_written, purged_at) = (51_000, 54_440, 66_467);
        assert!(tombstone_written < hint_horizon(purged_at, grace), "the sweep purges the tombstone");
        let value = hint(value_written);
        assert!(!outlived(&value, hint_horizon(60_000, grace)), "still fresh when the holder checked");
        assert!(outlived(&value, hint_horizon(purged_at, grace)), "outlived once the tombstone may be gone");
        assert!(outlived(&value, hint_horizon(66_984, grace)), "outlived when it arrives");
        assert!(!outlived(&hint(63_000), hint_horizon(66_984, grace)));
    }

    #[tokio::test]
    async fn the_byte_count_is_of_the_hints_held_not_of_every_hint_ever_stored() {
        let (target, key) = (NodeName::from("n2"), Bytes::from("k"));
        let one = key.len() + hint(1).size_bytes();
        let mut state = HintsState::new(Hints::new(), 3 * one, None);
        // A key written over and over while its replica is down holds one
        // hint, the newest.
        for ts in 1..=10 {
            if let Err(e) = state.store(target.clone(), 0, key.clone(), hint(ts)).await {
                panic!("hint {ts} for the same key refused: {e}");
            }
        }
        assert_eq!(state.bytes, one);
        // An older one changes nothing.
        state.store(target.clone(), 0, key.clone(), hint(5)).await.unwrap();
        assert_eq!(state.bytes, one);
        // Room for two more keys, and not for a third.
        for other in ["a", "b"] {
            state.store(target.clone(), 0, Bytes::from(other), hint(20)).await.unwrap();
        }
        assert!(state.store(target.clone(), 0, Bytes::from("c"), hint(20)).await.is_err());
        // Delivery gives the room back.
        state.remove("n2", 0, &key, hint(10).version);
        state.store(target.clone(), 0, Bytes::from("c"), hint(20)).await.unwrap();
        assert_eq!(state.bytes, 3 * one);
    }
}
