//! Walking every key of the cluster (`SCAN`, `KEYS`, `DBSIZE`): the cursor
//! and the merge of replicas' pages, free of I/O.
//!
//! Keys are walked partition by partition, and inside a partition in the
//! order of their hash, which is the order a shard keeps them in. Both
//! depend on the key alone, never on membership, so a cursor names the same
//! place in the walk however nodes join, leave or fail between two calls: a
//! key that exists throughout a scan is either behind the cursor or ahead
//! of it, and a later page reaches it.
//!
//! A page of one partition comes from a read quorum of its replicas. A key
//! acknowledged by a write quorum is on at least one of them (R + W > N),
//! and a key deleted by a write quorum has its tombstone on at least one,
//! which outranks a stale live copy elsewhere: the newest version of each
//! key decides whether it is listed, as it decides what a read returns.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{PartitionId, Version, key_hash};

/// The hash bits a cursor keeps; the other 16 carry the partition.
/// The most keys one replica lists per page: it clamps what it is asked,
/// and coordinators ask for no more.
pub const MAX_PAGE_KEYS: usize = 4096;

const POSITION_BITS: u32 = 48;
const DROPPED_BITS: u32 = 64 - POSITION_BITS;

/// Where a scan resumes: a partition, and the hash from which its keys
/// are still to be listed. Encoded for clients as one integer (redis-py
/// parses cursors as integers), partition in the top 16 bits and the top
/// 48 bits of the hash below; 0 starts a scan and, returned, ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub partition: PartitionId,
    /// The smallest key hash not yet listed in `partition`; a multiple of
    /// 2^16, since only the top 48 bits survive encoding.
    pub from: u64,
}

impl Cursor {
    pub const START: Cursor = Cursor { partition: PartitionId(0), from: 0 };

    /// The cursor a client sent, or `None` if it names a partition the
    /// cluster does not have (a cursor from elsewhere, or made up).
    pub fn decode(cursor: u64, partitions: u16) -> Option<Cursor> {
        let partition = (cursor >> POSITION_BITS) as u16;
        (partition < partitions).then_some(Cursor { partition: PartitionId(partition), from: cursor << DROPPED_BITS })
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.partition.0) << POSITION_BITS) | (self.from >> DROPPED_BITS)
    }

    /// Where the walk goes after `partition` is done: the next partition's
    /// start, or `None` after the last one.
    pub fn after(partition: PartitionId, partitions: u16) -> Option<Cursor> {
        let next = partition.0.checked_add(1).filter(|p| *p < partitions)?;
        Some(Cursor { partition: PartitionId(next), from: 0 })
    }
}

/// One key as a replica lists it: its stored version and whether it is
/// live there (not a tombstone, not expired, not cleared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub key: Bytes,
    pub version: Version,
    pub live: bool,
}

/// One replica's answer: keys of the partition from the cursor's hash on,
/// in shard order, and whether it stopped at the limit asked (more may
/// follow) rather than at the partition's end.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub keys: Vec<Listed>,
    pub full: bool,
}

/// What a read quorum's pages say: the live keys, in walk order, and the
/// hash the partition resumes from, or `None` if it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub live: Vec<Bytes>,
    pub resume: Option<u64>,
}

/// Merges the pages of one partition from the same cursor. A full page
/// knows nothing past its last key, so the merge lists only what every
/// full page has covered: keys whose hash, cut to the cursor's 48 bits,
/// is below the smallest last such position among the full pages, and it
/// resumes there. If all of one page's keys share a position (a page of
/// one key), that position is listed whole so that the walk moves on;
/// keys sharing 48 hash bits in one partition are then at risk, which
/// takes some 2^24 keys in it to become likely.
pub fn merge(pages: Vec<Page>) -> Merged {
    let position = |key: &[u8]| key_hash(key) >> DROPPED_BITS;
    let cut = pages.iter().filter(|p| p.full).filter_map(|p| p.keys.last()).map(|k| position(&k.key)).min();
    let mut newest: BTreeMap<(u64, Bytes), (Version, bool)> = BTreeMap::new();
    for listed in pages.into_iter().flat_map(|p| p.keys) {
        let slot = newest.entry((key_hash(&listed.key), listed.key)).or_insert((listed.version, listed.live));
        // On equal versions a dead copy wins, as a tombstone wins a tie in
        // the merge of entries.
        if listed.version > slot.0 || (listed.version == slot.0 && !listed.live) {
            *slot = (listed.version, listed.live);
        }
    }
    let all = 1u64 << POSITION_BITS;
    let (limit, resume) = match cut {
        None => (all, None),
        Some(cut) if newest.keys().any(|(hash, _)| hash >> DROPPED_BITS < cut) => (cut, Some(cut << DROPPED_BITS)),
        Some(cut) => (cut + 1, (cut + 1 < all).then(|| (cut + 1) << DROPPED_BITS)),
    };
    let live = newest
        .into_iter()
        .filter(|((hash, _), (_, live))| *live && hash >> DROPPED_BITS < limit)
        .map(|((_, key), _)| key)
        .collect();
    Merged { live, resume }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeTag, SplitMix64, Timestamp};

    fn version(ts: u64) -> Version {
        Version::new(Timestamp::new(ts, 0), NodeTag(1))
    }

    fn listed(key: &str, ts: u64, live: bool) -> Listed {
        Listed { key: Bytes::from(key.to_string()), version: version(ts), live }
    }

    /// A replica's shard as a page source: entries in hash order.
    struct Replica(Vec<Listed>);

    impl Replica {
        fn new(mut keys: Vec<Listed>) -> Replica {
            keys.sort_by(|a, b| (key_hash(&a.key), &a.key).cmp(&(key_hash(&b.key), &b.key)));
            Replica(keys)
        }

        fn page(&self, from: u64, limit: usize) -> Page {
            let rest: Vec<Listed> = self.0.iter().filter(|l| key_hash(&l.key) >= from).cloned().collect();
            Page { full: rest.len() > limit, keys: rest.into_iter().take(limit).collect() }
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_partitions_the_cluster_lacks() {
        assert_eq!(Cursor::START.encode(), 0);
        assert_eq!(Cursor::decode(0, 256), Some(Cursor::START));
        let cursor = Cursor { partition: PartitionId(255), from: 0xdead_beef_cafe << 16 };
        assert_eq!(Cursor::decode(cursor.encode(), 256), Some(cursor));
        assert_eq!(Cursor::decode(cursor.encode(), 255), None);
        assert_eq!(Cursor::after(PartitionId(254), 256), Some(Cursor { partition: PartitionId(255), from: 0 }));
        assert_eq!(Cursor::after(PartitionId(255), 256), None);
        assert_eq!(Cursor::after(PartitionId(u16::MAX), u16::MAX), None);
    }

    #[test]
    fn the_newest_copy_decides_whether_a_key_is_listed() {
        let a = Page { keys: vec![listed("deleted", 2, false), listed("rewritten", 3, true)], full: false };
        let b = Page {
            keys: vec![listed("deleted", 1, true), listed("rewritten", 2, false), listed("tie", 5, true)],
            full: false,
        };
        let c = Page { keys: vec![listed("tie", 5, false), listed("only-here", 1, true)], full: false };
        let merged = merge(vec![a, b, c]);
        let mut live = merged.live.clone();
        live.sort();
        assert_eq!(live, vec![Bytes::from("only-here"), Bytes::from("rewritten")]);
        assert_eq!(merged.resume, None);
    }

    #[test]
    fn a_full_page_stops_the_merge_where_its_knowledge_ends() {
        let keys: Vec<Listed> = (0..20).map(|i| listed(&format!("k{i}"), 1, true)).collect();
        let whole = Replica::new(keys.clone());
        let merged = merge(vec![whole.page(0, 5), whole.page(0, 50)]);
        assert_eq!(merged.live.len(), 4, "the fifth key's position is where the short page's knowledge ends");
        let resume = merged.resume.expect("the partition has more");
        assert_eq!(resume, (key_hash(&whole.0[4].key) >> 16) << 16);
        let listed: Vec<Bytes> = whole.0[..4].iter().map(|l| l.key.clone()).collect();
        assert_eq!(merged.live, listed);
    }

    #[test]
    fn a_page_of_one_key_still_moves_the_walk_on() {
        let whole = Replica::new((0..3).map(|i| listed(&format!("k{i}"), 1, true)).collect());
        let merged = merge(vec![whole.page(0, 1)]);
        assert_eq!(merged.live, vec![whole.0[0].key.clone()]);
        let resume = merged.resume.expect("two keys are left");
        assert!(resume > key_hash(&whole.0[0].key) && resume <= key_hash(&whole.0[1].key));
    }

    /// Replicas that each miss some keys, hold stale copies of others, and
    /// answer pages of random small sizes: the walk lists each key whose
    /// newest copy is live exactly once, and nothing else.
    #[test]
    fn a_walk_over_disagreeing_replicas_lists_every_live_key_once() {
        for seed in 0..200 {
            let mut rng = SplitMix64::new(seed);
            let mut replicas = vec![Vec::new(), Vec::new(), Vec::new()];
            let mut expected = Vec::new();
            for i in 0..rng.below(60) {
                let key = format!("key-{seed}-{i}");
                let newest_live = rng.chance(0.7);
                let holders: Vec<usize> = (0..3).filter(|_| rng.chance(0.7)).collect();
                let Some((&newest, stale)) = holders.split_first() else { continue };
                if newest_live {
                    expected.push(Bytes::from(key.clone()));
                }
                replicas[newest].push(listed(&key, 10, newest_live));
                for &other in stale {
                    let live = rng.chance(0.5);
                    replicas[other].push(listed(&key, rng.below(10), live));
                }
            }
            let replicas: Vec<Replica> = replicas.into_iter().map(Replica::new).collect();
            let mut walked = Vec::new();
            let mut from = Some(0);
            while let Some(at) = from {
                let pages = replicas.iter().map(|r| r.page(at, 1 + rng.below(6) as usize)).collect();
                let merged = merge(pages);
                walked.extend(merged.live);
                assert!(merged.resume.is_none_or(|next| next > at), "seed {seed}: the walk went backwards");
                from = merged.resume;
            }
            walked.sort();
            expected.sort();
            assert_eq!(walked, expected, "seed {seed}");
        }
    }
}
