//! Entries and the last-writer-wins merge.
//!
//! Every mutation — put, delete, expire, persist — produces a whole new
//! [`Entry`] with a fresh [`Version`]. Replicas, the write-ahead log, hints and
//! repair all move entries around and reconcile them with [`Entry::merge`],
//! which is a join of a total order and therefore commutative, associative and
//! idempotent: replicas that have seen the same set of entries hold the same
//! winner regardless of the order or number of times they saw them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Timestamp, Version};

/// A versioned value, or a tombstone, with an optional absolute expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: Version,
    /// `None` is a tombstone: the key was deleted at `version`.
    pub value: Option<Bytes>,
    /// Wall-clock milliseconds since the Unix epoch at which the value stops
    /// existing. Absolute rather than relative so that every replica, the log
    /// and a restarted node all agree on the instant.
    pub expires_at: Option<u64>,
}

/// What an entry means to a reader at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Live,
    /// Deleted by a tombstone, expired, or at or below the truncate epoch.
    /// Kept as a marker so that an older value cannot be resurrected.
    Dead,
}

impl Entry {
    pub fn value(version: Version, value: Bytes, expires_at: Option<u64>) -> Entry {
        Entry { version, value: Some(value), expires_at }
    }

    pub fn tombstone(version: Version) -> Entry {
        Entry { version, value: None, expires_at: None }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.view().is_expired(now_ms)
    }

    pub fn liveness(&self, now_ms: u64, epoch: Epoch) -> Liveness {
        self.view().liveness(now_ms, epoch)
    }

    /// The entry borrowed, as a store that keeps entries in its own layout
    /// also gives them: the rules below are defined once, on the view.
    pub fn view(&self) -> EntryRef<'_> {
        EntryRef { version: self.version, value: self.value.as_deref(), expires_at: self.expires_at }
    }

    /// The value as a reader at `now_ms` sees it.
    pub fn live_value(&self, now_ms: u64, epoch: Epoch) -> Option<&Bytes> {
        match self.liveness(now_ms, epoch) {
            Liveness::Live => self.value.as_ref(),
            Liveness::Dead => None,
        }
    }

    /// Whether `self` wins against `other` under last-writer-wins.
    ///
    /// The version decides. Two different entries with the same version can
    /// only arise from a bug or a hand-made entry, but the merge must still
    /// be a total order for its laws to hold, so ties fall to tombstone first
    /// (a delete is never undone by a tie), then value bytes, then expiry.
    pub fn supersedes(&self, other: &Entry) -> bool {
        self.view().supersedes(other.view())
    }

    /// Last-writer-wins join of two entries for the same key.
    pub fn merge(a: Entry, b: Entry) -> Entry {
        if b.supersedes(&a) { b } else { a }
    }

    /// Approximate heap footprint, for memory accounting and batching.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Entry>() + self.value.as_ref().map_or(0, Bytes::len)
    }
}

/// An entry borrowed from wherever it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub version: Version,
    pub value: Option<&'a [u8]>,
    pub expires_at: Option<u64>,
}

impl EntryRef<'_> {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expires_at, Some(at) if at <= now_ms)
    }

    pub fn liveness(&self, now_ms: u64, epoch: Epoch) -> Liveness {
        if self.value.is_none() || self.is_expired(now_ms) || epoch.covers(self.version) {
            Liveness::Dead
        } else {
            Liveness::Live
        }
    }

    /// See [`Entry::supersedes`].
    pub fn supersedes(&self, other: EntryRef<'_>) -> bool {
        self.precedence() > other.precedence()
    }

    fn precedence(&self) -> (Version, bool, Option<&[u8]>, Option<u64>) {
        (self.version, self.value.is_none(), self.value, self.expires_at)
    }

    /// An owned copy; the value's bytes are copied.
    pub fn to_entry(&self) -> Entry {
        Entry { version: self.version, value: self.value.map(Bytes::copy_from_slice), expires_at: self.expires_at }
    }
}

/// The cluster-wide truncate epoch written by `clear()`: every entry whose
/// version timestamp is at or below it is dead. Epochs only grow; merging two
/// is taking the larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Epoch(pub Timestamp);

impl Epoch {
    pub const NONE: Epoch = Epoch(Timestamp(0));

    pub fn covers(self, version: Version) -> bool {
        version.ts <= self.0
    }

    pub fn merge(self, other: Epoch) -> Epoch {
        self.max(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeTag;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = Entry> {
        // Small domains so that version ties (and therefore the tie-break
        // rules) are exercised, not just the common case.
        let touch = prop::option::of(0u64..3);
        let value = prop::option::of(prop::collection::vec(0u8..3, 0..3));
        (0u64..4, 0u64..3, touch, value, prop::option::of(0u64..3)).prop_map(|(ts, node, touch, value, expires_at)| {
            Entry {
                version: Version {
                    ts: Timestamp(ts),
                    node: NodeTag(node),
                    touch: touch.map(|t| crate::Touch { ts: Timestamp(ts + t), node: NodeTag(node) }),
                },
                expires_at: value.as_ref().and(expires_at),
                value: value.map(Bytes::from),
            }
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in entry(), b in entry()) {
            prop_assert_eq!(Entry::merge(a.clone(), b.clone()), Entry::merge(b, a));
        }

        #[test]
        fn merge_is_associative(a in entry(), b in entry(), c in entry()) {
            let left = Entry::merge(Entry::merge(a.clone(), b.clone()), c.clone());
            let right = Entry::merge(a, Entry::merge(b, c));
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent(a in entry(), b in entry()) {
            prop_assert_eq!(Entry::merge(a.clone(), a.clone()), a.clone());
            let ab = Entry::merge(a.clone(), b.clone());
            prop_assert_eq!(Entry::merge(ab.clone(), b), ab);
        }

        #[test]
        fn newer_version_always_wins(a in entry(), b in entry()) {
            prop_assume!(a.version != b.version);
            let winner = Entry::merge(a.clone(), b.clone());
            prop_assert_eq!(winner.version, a.version.max(b.version));
        }

        #[test]
        fn epoch_merge_is_a_join(a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
            let (a, b, c) = (Epoch(Timestamp(a)), Epoch(Timestamp(b)), Epoch(Timestamp(c)));
            prop_assert_eq!(a.merge(b), b.merge(a));
            prop_assert_eq!(a.merge(b).merge(c), a.merge(b.merge(c)));
            prop_assert_eq!(a.merge(a), a);
        }
    }

    #[test]
    fn liveness_rules() {
        let v = |ts| Version::new(Timestamp(ts), NodeTag(1));
        let live = Entry::value(v(10), Bytes::from_static(b"x"), Some(100));
        assert_eq!(live.liveness(99, Epoch::NONE), Liveness::Live);
        assert_eq!(live.liveness(100, Epoch::NONE), Liveness::Dead, "expiry instant is exclusive");
        assert_eq!(live.liveness(0, Epoch(Timestamp(10))), Liveness::Dead, "epoch covers its own timestamp");
        assert_eq!(live.liveness(0, Epoch(Timestamp(9))), Liveness::Live);
        assert_eq!(Entry::tombstone(v(11)).liveness(0, Epoch::NONE), Liveness::Dead);
    }

    #[test]
    fn a_rewrite_outranks_its_value_but_never_a_later_write() {
        let v = |ts| Version::new(Timestamp(ts), NodeTag(1));
        let old = Entry::value(v(10), Bytes::from_static(b"old"), None);
        let put = Entry::value(v(20), Bytes::from_static(b"new"), None);
        // An expire that read `old`, stamped after the put.
        let expire = Entry::value(v(10).touched(v(30)), Bytes::from_static(b"old"), Some(1_000));
        assert!(expire.supersedes(&old), "a rewrite replaces the value it read");
        assert!(put.supersedes(&expire), "a rewrite of an older value never beats a later put");
        assert!(Entry::tombstone(v(20)).supersedes(&expire), "nor a later delete");
        let persist = Entry::value(v(10).touched(v(40)), Bytes::from_static(b"old"), None);
        assert!(persist.supersedes(&expire), "a later rewrite of the same value wins");
        assert_eq!(v(10).touched(v(30)).touched(v(40)), v(10).touched(v(40)), "a rewrite keeps the value's stamp");
        assert_eq!(v(10).touched(v(30)).newest_ts(), Timestamp(30));
        assert!(Epoch(Timestamp(15)).covers(expire.version), "a clear covers rewrites of values written before it");
    }

    #[test]
    fn tombstone_wins_a_version_tie() {
        let v = Version::new(Timestamp(5), NodeTag(1));
        let put = Entry::value(v, Bytes::from_static(b"x"), None);
        assert!(Entry::tombstone(v).supersedes(&put));
    }
}
