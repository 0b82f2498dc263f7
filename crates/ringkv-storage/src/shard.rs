//! One partition's data: the entry map, the expiry and tombstone indexes,
//! and the repair digest. Pure state, no I/O and no clock: every method that
//! depends on time takes `now_ms`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;
use ringkv_core::memory::{self, EvictionPolicy};
use ringkv_core::scan::Listed;
use ringkv_core::{Entry, EntryRef, Epoch, Liveness, SplitMix64, Version, key_hash};

use crate::record::{self, Record, Shape, Tags};

/// The outcome of offering an entry to a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The entry replaced what was stored (it was newer).
    pub changed: bool,
    /// A live value was visible under the key just before.
    pub was_live: bool,
}

/// Work done by one bounded sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    pub expired: usize,
    pub purged: usize,
    /// The budget ran out with eligible work left.
    pub more: bool,
}

/// Which dead markers a sweep may purge. A marker exists to reject older
/// copies of its key, and those arrive two ways: from a replica that has not
/// seen the marker yet, and from a hint written before it. The caller (which
/// knows when the replicas last synced, and for how long hints are kept)
/// sets one bound for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// The marker's key was written before this instant: by its version's
    /// stamp, the value a tombstone or an expiry killed, or a delete's own.
    /// A hint carries the stamp of the write it holds and is dropped unsent
    /// once that is older than the grace, so no older copy is on its way.
    pub written_before: u64,
    /// The marker died (was deleted, evicted or expired) before this
    /// instant: every other replica has it.
    pub died_before: u64,
}

impl Horizon {
    /// Both bounds at one instant.
    pub fn at(ms: u64) -> Horizon {
        Horizon { written_before: ms, died_before: ms }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Stored entries, including dead markers not yet purged.
    pub entries: usize,
    /// Values, counting ones whose TTL passed but were not swept yet.
    pub values: usize,
    pub value_bytes: usize,
    pub key_bytes: usize,
    /// What the shard holds in memory by [`footprint`]: keys, values,
    /// per-entry overhead and the expiry and dead-marker indexes. The memory
    /// bound is enforced against the sum of this over a node's shards.
    pub bytes: usize,
    /// Live values with a time to live (the `volatile-*` policies'
    /// candidates), counting ones whose TTL passed but were not swept yet.
    pub volatile: usize,
}

/// What one stored entry costs in the map beyond its record, measured
/// (BENCHMARKS.md, *Memory per key*): its slot in the B-tree nodes at their
/// usual fill (the key hash, the record pointer and the access metadata)
/// and its share of the interior nodes.
pub const ENTRY_OVERHEAD: usize = 40;
/// What an entry in the expiry or dead-marker index costs beyond its key
/// bytes: its B-tree slot and the key's own allocation.
pub const INDEX_OVERHEAD: usize = 64;

/// The bytes an entry stored under a key of `key_len` bytes counts against
/// the memory bound, including its index entry if it has one.
pub fn footprint(key_len: usize, entry: &Entry) -> usize {
    footprint_of(key_len, entry.view().into())
}

fn footprint_of(key_len: usize, shape: Shape) -> usize {
    let indexed = shape.value_len.is_none() || shape.expires;
    allocated(record::encoded_len(key_len, shape)) + ENTRY_OVERHEAD + if indexed { key_len + INDEX_OVERHEAD } else { 0 }
}

/// What the allocator takes for `n` bytes: the size class of mimalloc
/// (the `ringkv` binary's allocator) that holds it, multiples of 8 up to
/// 64 bytes and then four classes per doubling (80, 96, 112, 128, 160, …).
fn allocated(n: usize) -> usize {
    if n <= 64 {
        return n.next_multiple_of(8).max(8);
    }
    let bits = usize::BITS - (n - 1).leading_zeros();
    n.next_multiple_of(1 << (bits - 3))
}

/// Keys sampled per eviction (Redis's `maxmemory-samples`).
const EVICTION_SAMPLES: usize = 5;
/// Entries a sample steps over, from its random point, to find a live one.
const SAMPLE_STEPS: usize = 64;
/// The best candidates kept between evictions (Redis's eviction pool).
const EVICTION_POOL: usize = 16;

/// How the shard ranks keys for eviction, and the state sampling keeps.
#[derive(Debug, Clone)]
struct Eviction {
    policy: EvictionPolicy,
    rng: SplitMix64,
    /// The best victims found so far, by ascending score; a candidate is
    /// checked again when it is taken, since it may have been used or
    /// deleted since it was sampled.
    pool: Vec<Candidate>,
}

/// A sampled key and what it was when sampled.
#[derive(Debug, Clone)]
struct Candidate {
    key: HashedKey,
    access: u32,
    expires_at: Option<u64>,
    score: u64,
}

/// A partition's shard.
///
/// Dead entries (tombstones, expired values) stay as markers without their
/// value until they may be purged, so that an older copy arriving from
/// another replica, a hint or the log cannot bring the key back. Purging is
/// decided by the caller through the [`Horizon`] of [`Shard::sweep`].
///
/// The map is ordered by key hash, then key: snapshots and repair walk it in
/// resumable chunks while the owner keeps serving between chunks, and a
/// repair digest leaf (a range of hashes) is a contiguous range of the map.
#[derive(Debug, Clone)]
pub struct Shard {
    /// Each entry with its access metadata (see [`ringkv_core::memory`]).
    entries: BTreeMap<Stored, u32>,
    /// The node tags the records name by index.
    tags: Tags,
    /// Live values with a TTL, by expiry instant.
    expiries: BTreeSet<(u64, Box<[u8]>)>,
    /// Dead markers, by the wall-clock instant of their version's stamp
    /// (see [`Horizon::written_before`]).
    graves: BTreeSet<(u64, Box<[u8]>)>,
    epoch: Epoch,
    digest: Digest,
    stats: ShardStats,
    eviction: Eviction,
}

impl Shard {
    pub fn new(digest_leaves: usize) -> Shard {
        Shard {
            entries: BTreeMap::new(),
            tags: Tags::default(),
            expiries: BTreeSet::new(),
            graves: BTreeSet::new(),
            epoch: Epoch::NONE,
            digest: Digest::new(digest_leaves),
            stats: ShardStats::default(),
            eviction: Eviction { policy: EvictionPolicy::Noeviction, rng: SplitMix64::new(0), pool: Vec::new() },
        }
    }

    /// Sets how keys are ranked for eviction from now on; `seed` makes the
    /// sampling (and LFU's probabilistic counting) repeatable. Keys already
    /// stored (recovered from disk) start afresh, as if written at `now_ms`:
    /// metadata kept under another policy means nothing under this one, and
    /// recovery knows nothing of use.
    pub fn set_eviction(&mut self, policy: EvictionPolicy, seed: u64, now_ms: u64) {
        let mut rng = SplitMix64::new(seed);
        for access in self.entries.values_mut() {
            *access = memory::touch(policy, None, now_ms, &mut rng);
        }
        self.eviction = Eviction { policy, rng, pool: Vec::new() };
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    fn find(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        let probe = (key_hash(key), key);
        self.entries.get_key_value(&probe as &dyn Probe).map(|(s, _)| s.record.entry(&self.tags))
    }

    /// The stored entry as [`Shard::entry`] gives it, counted as a use of
    /// the key by the eviction policy if a reader sees it live.
    pub fn read(&mut self, key: &[u8], now_ms: u64) -> Option<Entry> {
        let probe = (key_hash(key), key);
        let (policy, epoch) = (self.eviction.policy, self.epoch);
        let rng = &mut self.eviction.rng;
        // The metadata is the map's value and the entry part of its key, so
        // a lookup for both goes through the key's range of one.
        let at = Bound::Included(&probe as &dyn Probe);
        let (stored, access) = self.entries.range_mut::<dyn Probe, _>((at, at)).next()?;
        let entry = stored.record.entry(&self.tags);
        if epoch.covers(entry.version) {
            return None;
        }
        if entry.liveness(now_ms, epoch) == Liveness::Live {
            *access = memory::touch(policy, Some(*access), now_ms, rng);
        }
        Some(entry.to_entry())
    }

    /// The stored entry, dead or alive, unless the truncate epoch covers it.
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.find(key).filter(|e| !self.epoch.covers(e.version)).map(|e| e.to_entry())
    }

    /// The stored entry's version, unless the truncate epoch covers it.
    pub fn version(&self, key: &[u8]) -> Option<Version> {
        self.find(key).map(|e| e.version).filter(|v| !self.epoch.covers(*v))
    }

    /// What the entry stored under `key` counts against the memory bound,
    /// as [`footprint`] gives it; 0 if there is none.
    pub fn footprint(&self, key: &[u8]) -> usize {
        self.find(key).map_or(0, |e| footprint_of(key.len(), e.into()))
    }

    /// The value a reader sees at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<&[u8]> {
        self.find(key).filter(|e| e.liveness(now_ms, self.epoch) == Liveness::Live).and_then(|e| e.value)
    }

    pub fn is_live(&self, key: &[u8], now_ms: u64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// Merges `incoming` into the shard under last-writer-wins.
    pub fn apply(&mut self, key: &[u8], incoming: Entry, now_ms: u64) -> Applied {
        let was_live = self.is_live(key, now_ms);
        if self.epoch.covers(incoming.version) {
            return Applied { changed: false, was_live };
        }
        if let Some(existing) = self.find(key)
            && !incoming.view().supersedes(existing)
        {
            return Applied { changed: false, was_live };
        }
        let incoming = normalize(incoming, now_ms);
        self.replace(key, incoming, now_ms);
        Applied { changed: true, was_live }
    }

    /// Applies `incoming` only if nothing newer than `expected` is stored,
    /// so a read-modify-write (expire, persist) cannot silently undo a write
    /// that raced with it. Returns the stored version on conflict. Finding
    /// `incoming` itself stored is no conflict: repair or a hint can carry
    /// the write here from another replica before its own request arrives.
    pub fn apply_if_not_newer(
        &mut self,
        key: &[u8],
        incoming: Entry,
        expected: Version,
        now_ms: u64,
    ) -> Result<Applied, Version> {
        match self.version(key) {
            Some(stored) if stored > expected && stored != incoming.version => Err(stored),
            _ => Ok(self.apply(key, incoming, now_ms)),
        }
    }

    fn replace(&mut self, key: &[u8], new: Entry, now_ms: u64) {
        let hash = key_hash(key);
        let (policy, rng) = (self.eviction.policy, &mut self.eviction.rng);
        let record = Record::new(key, new.view(), &mut self.tags);
        // The entry is part of the map's key, which a map never replaces in
        // place: the old one is taken out (with the access metadata LFU
        // counts on from) and the new one put in.
        let probe = (hash, key);
        let old = self.entries.remove_entry(&probe as &dyn Probe);
        let access = memory::touch(policy, old.as_ref().map(|(_, access)| *access), now_ms, rng);
        self.entries.insert(Stored { hash, record }, access);
        // The old entry's contribution goes first: when both index the same
        // slot (two tombstones dead in the same millisecond, two values
        // expiring at the same instant), adding before removing would
        // remove the new one's slot too, and it would never be swept.
        match old {
            Some((old, _)) => self.index(key, Meta::of(old.record.entry(&self.tags)), hash, false),
            None => {
                self.stats.entries += 1;
                self.stats.key_bytes += key.len();
            }
        }
        self.index(key, Meta::of(new.view()), hash, true);
    }

    /// Adds (or removes) an entry's contribution to the indexes, digest and
    /// statistics. Every change to `entries` goes through here in pairs.
    fn index(&mut self, key: &[u8], entry: Meta, hash: u64, add: bool) {
        self.digest.toggle(hash, key, entry.version);
        let slot = match (entry.shape.value_len, entry.expires_at) {
            (Some(_), Some(at)) => Some((&mut self.expiries, at)),
            (Some(_), None) => None,
            // By when the killed value was written, not when it died: an
            // eviction's marker (the evicted value's version, touched) of a
            // value written long ago can go as soon as the replicas have it.
            (None, _) => Some((&mut self.graves, entry.version.ts.wall_ms())),
        };
        let volatile = entry.shape.value_len.is_some() && entry.expires_at.is_some();
        if let Some((set, at)) = slot {
            if add {
                set.insert((at, key.into()));
            } else {
                set.remove(&(at, key.into()));
            }
        }
        if volatile {
            if add {
                self.stats.volatile += 1;
            } else {
                self.stats.volatile -= 1;
            }
        }
        if let Some(len) = entry.shape.value_len {
            if add {
                self.stats.values += 1;
                self.stats.value_bytes += len;
            } else {
                self.stats.values -= 1;
                self.stats.value_bytes -= len;
            }
        }
        if add {
            self.stats.bytes += footprint_of(key.len(), entry.shape);
        } else {
            self.stats.bytes -= footprint_of(key.len(), entry.shape);
        }
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        let probe = (key_hash(key), key);
        let Some((old, _)) = self.entries.remove_entry(&probe as &dyn Probe) else { return false };
        self.index(key, Meta::of(old.record.entry(&self.tags)), old.hash, false);
        self.stats.entries -= 1;
        self.stats.key_bytes -= key.len();
        true
    }

    /// Drops a key outright, leaving no dead marker: for an eviction on a
    /// node that has no other replicas, where no older copy can arrive.
    pub fn forget(&mut self, key: &[u8]) -> bool {
        self.remove(key)
    }

    /// Chooses the next key to evict under the shard's policy: a key with a
    /// live value (with a time to live, for the `volatile-*` policies)
    /// other than `except` (the key a write is making room for), or none if
    /// there is no candidate. The caller evicts it (a stamped delete, or
    /// [`Shard::forget`]).
    pub fn victim(&mut self, now_ms: u64, except: Option<&[u8]>) -> Option<Bytes> {
        let (_, key) = self.best_victim(now_ms, except)?;
        if self.pooled() {
            self.eviction.pool.pop();
        }
        Some(key)
    }

    /// How good this shard's best victim is (higher is evicted first),
    /// without evicting it: a node comparing its shards evicts from the one
    /// with the best.
    pub fn victim_score(&mut self, now_ms: u64) -> Option<u64> {
        self.best_victim(now_ms, None).map(|(score, _)| score)
    }

    fn pooled(&self) -> bool {
        let policy = self.eviction.policy;
        policy.evicts() && !policy.is_random() && policy != EvictionPolicy::VolatileTtl
    }

    /// The best victim and its score; for the pooled policies it stays on
    /// top of the pool.
    fn best_victim(&mut self, now_ms: u64, except: Option<&[u8]>) -> Option<(u64, Bytes)> {
        let policy = self.eviction.policy;
        if !policy.evicts() {
            return None;
        }
        if policy == EvictionPolicy::VolatileTtl {
            // The expiry index is ordered by exactly what this policy
            // ranks by, so the best victim needs no sampling.
            let (at, key) = self.expiries.iter().find(|(_, k)| self.is_live(k, now_ms) && Some(&k[..]) != except)?;
            return Some((memory::victim_score(policy, 0, Some(*at), now_ms), Bytes::copy_from_slice(key)));
        }
        let mut sampled = self.sample(EVICTION_SAMPLES, now_ms);
        sampled.retain(|c| Some(&c.key.key[..]) != except);
        if policy.is_random() {
            let pick = self.eviction.rng.below(sampled.len().max(1) as u64) as usize;
            let score = self.eviction.rng.next_u64();
            return sampled.get(pick).map(|c| (score, Bytes::copy_from_slice(&c.key.key)));
        }
        // Candidates kept from earlier samples are ranked again as of now,
        // from what they were when sampled (idle times grow for all alike);
        // the best is taken only if it was not used since.
        let mut pool = std::mem::take(&mut self.eviction.pool);
        pool.retain(|c| !sampled.iter().any(|s| s.key == c.key));
        pool.extend(sampled);
        for c in &mut pool {
            c.score = memory::victim_score(policy, c.access, c.expires_at, now_ms);
        }
        pool.sort_unstable_by_key(|c| c.score);
        let keep = pool.len().saturating_sub(EVICTION_POOL);
        pool.drain(..keep);
        let mut best = None;
        while let Some(top) = pool.last() {
            let unchanged = Some(&top.key.key[..]) != except
                && self.entries.get_key_value(&top.key as &dyn Probe).is_some_and(|(s, access)| {
                    let entry = s.record.entry(&self.tags);
                    *access == top.access
                        && entry.liveness(now_ms, self.epoch) == Liveness::Live
                        && (!policy.volatile_only() || entry.expires_at.is_some())
                });
            if unchanged {
                best = Some((top.score, Bytes::copy_from_slice(&top.key.key)));
                break;
            }
            pool.pop();
        }
        self.eviction.pool = pool;
        best
    }

    /// Up to `n` distinct candidates at random: live values, with a time to
    /// live for the `volatile-*` policies. Dead markers (which a clustered
    /// node's evictions leave) are stepped over rather than sampled and
    /// thrown away.
    fn sample(&mut self, n: usize, now_ms: u64) -> Vec<Candidate> {
        let volatile = self.eviction.policy.volatile_only();
        let (epoch, tags) = (self.epoch, &self.tags);
        let eligible = move |s: &Stored| {
            let entry = s.record.entry(tags);
            entry.liveness(now_ms, epoch) == Liveness::Live && (!volatile || entry.expires_at.is_some())
        };
        let candidate = |s: &Stored, access: &u32| Candidate {
            key: HashedKey { hash: s.hash, key: s.record.key().into() },
            access: *access,
            expires_at: s.record.entry(tags).expires_at,
            score: 0,
        };
        if self.entries.len() <= SAMPLE_STEPS {
            // A small shard is ranked whole: sampling a few of a few dozen
            // keys would miss the best victim too often.
            return self.entries.iter().filter(|(s, _)| eligible(s)).map(|(s, a)| candidate(s, a)).collect();
        }
        if !volatile {
            // Keys next to each other in hash order are unrelated keys, so
            // the live ones after one random point are a random sample: one
            // seek instead of one per key.
            let at = (self.eviction.rng.next_u64(), &[][..]);
            let after = self.entries.range::<dyn Probe, _>((Bound::Included(&at as &dyn Probe), Bound::Unbounded));
            return after
                .chain(self.entries.iter())
                .take(SAMPLE_STEPS)
                .filter(|(s, _)| eligible(s))
                .take(n)
                .map(|(s, a)| candidate(s, a))
                .collect();
        }
        // Keys with a TTL are sampled through the expiry index, whose order
        // is not random: one seek per key, at a random instant.
        let mut out: Vec<Candidate> = Vec::with_capacity(n);
        for _ in 0..n * 4 {
            if out.len() == n {
                break;
            }
            let (Some((low, _)), Some((high, _))) = (self.expiries.first(), self.expiries.last()) else { break };
            let at = low + self.eviction.rng.below(high - low + 1);
            let key = self.expiries.range((at, Box::from(&[][..]))..).next().map(|(_, k)| k.clone());
            let found = key.and_then(|k| {
                let probe = (key_hash(&k), &k[..]);
                let (s, a) = self.entries.get_key_value(&probe as &dyn Probe)?;
                eligible(s).then(|| candidate(s, a))
            });
            let Some(found) = found else { break };
            if !out.iter().any(|c| c.key == found.key) {
                out.push(found);
            }
        }
        out
    }

    /// Bounded background expiry and purge: values whose TTL has passed lose
    /// their bytes and become dead markers; dead markers inside `horizon`
    /// are dropped. At most `budget` keys are touched.
    ///
    /// Markers are taken in the order their keys were written; one written
    /// long ago that died recently waits, and holds up those behind it, only
    /// until the replicas sync past its death.
    pub fn sweep(&mut self, now_ms: u64, horizon: Horizon, budget: usize) -> Sweep {
        let mut done = Sweep::default();
        while done.expired + done.purged < budget {
            let Some((at, key)) = self.expiries.first().cloned() else { break };
            if at > now_ms {
                break;
            }
            let entry = self.find(&key).expect("expiry index points at a stored entry");
            let dead = Entry { value: None, ..entry.to_entry() };
            self.replace(&key, dead, now_ms);
            done.expired += 1;
        }
        while done.expired + done.purged < budget && self.purgeable(horizon) {
            let (_, key) = self.graves.first().cloned().expect("a purgeable marker");
            self.remove(&key);
            done.purged += 1;
        }
        done.more = self.expiries.first().is_some_and(|(at, _)| *at <= now_ms) || self.purgeable(horizon);
        done
    }

    /// Whether the first dead marker in the index may be purged.
    fn purgeable(&self, horizon: Horizon) -> bool {
        let Some((written, key)) = self.graves.first() else { return false };
        let entry = self.find(key).expect("dead-marker index points at a stored entry");
        *written < horizon.written_before && died_at(entry) < horizon.died_before
    }

    /// Raises the truncate epoch and drops everything it covers. The epoch
    /// itself keeps rejecting older entries afterwards, so no marker is kept.
    pub fn truncate(&mut self, epoch: Epoch) -> usize {
        if epoch <= self.epoch {
            return 0;
        }
        self.epoch = epoch;
        let covered: Vec<Box<[u8]>> = self
            .entries
            .keys()
            .filter(|s| epoch.covers(s.record.entry(&self.tags).version))
            .map(|s| s.record.key().into())
            .collect();
        for key in &covered {
            self.remove(key);
        }
        covered.len()
    }

    /// Forgets every entry, keeping the truncate epoch: for a partition
    /// this node no longer replicates, or is about to pull afresh.
    pub fn drop_all(&mut self) -> usize {
        let dropped = self.entries.len();
        let eviction = Eviction { pool: Vec::new(), ..self.eviction.clone() };
        *self = Shard { epoch: self.epoch, eviction, ..Shard::new(self.digest.leaves().len()) };
        dropped
    }

    /// Up to `limit` entries in map order strictly after the key `after`,
    /// for snapshots and streaming. Entries covered by the epoch are left out.
    pub fn chunk_after(&self, after: Option<&[u8]>, limit: usize) -> Vec<(Bytes, Entry)> {
        let cursor = after.map(|k| (key_hash(k), k));
        let start = match &cursor {
            Some(c) => Bound::Excluded(c as &dyn Probe),
            None => Bound::Unbounded,
        };
        self.collect(self.entries.range::<dyn Probe, _>((start, Bound::Unbounded)), limit)
    }

    /// Up to `limit` keys whose hash is `from` or more, in map order, with
    /// their versions and whether they are live at `now_ms`: a page of a
    /// scan. Dead entries are listed too, since a tombstone here must
    /// outrank a live copy another replica lists. No value is copied.
    pub fn keys_from(&self, from: u64, limit: usize, now_ms: u64) -> Vec<Listed> {
        let start = (from, &[][..]);
        let range = self.entries.range::<dyn Probe, _>((Bound::Included(&start as &dyn Probe), Bound::Unbounded));
        range
            .map(|(s, _)| (s.record.key(), s.record.entry(&self.tags)))
            .filter(|(_, e)| !self.epoch.covers(e.version))
            .take(limit)
            .map(|(key, e)| Listed {
                key: Bytes::copy_from_slice(key),
                version: e.version,
                live: e.liveness(now_ms, self.epoch) == Liveness::Live,
            })
            .collect()
    }

    /// Entries whose keys fall into the given digest leaves, in the shard's
    /// order, after the key `after`: repair pages through leaves too large
    /// for one message with the last key it received as the cursor. Each
    /// leaf is a range of hashes, so this reads only those ranges.
    pub fn entries_in_leaves(&self, leaves: &[usize], after: Option<&[u8]>) -> Vec<(Bytes, Entry)> {
        let cursor = after.map(|k| (key_hash(k), k));
        let mut leaves = leaves.to_vec();
        leaves.sort_unstable();
        leaves.dedup();
        let mut out = Vec::new();
        for leaf in leaves {
            let (low, high) = self.digest.leaf_range(leaf);
            if let (Some((hash, _)), Some(high)) = (&cursor, high)
                && *hash >= high
            {
                continue;
            }
            let low = (low, &[][..]);
            let lower = match &cursor {
                Some(c) if c.0 >= low.0 => Bound::Excluded(c as &dyn Probe),
                _ => Bound::Included(&low as &dyn Probe),
            };
            let high = high.map(|h| (h, &[][..]));
            let upper = match &high {
                Some(h) => Bound::Excluded(h as &dyn Probe),
                None => Bound::Unbounded,
            };
            out.extend(self.collect(self.entries.range::<dyn Probe, _>((lower, upper)), usize::MAX));
        }
        out
    }

    fn collect<'a>(&self, range: impl Iterator<Item = (&'a Stored, &'a u32)>, limit: usize) -> Vec<(Bytes, Entry)> {
        range
            .map(|(s, _)| (s.record.key(), s.record.entry(&self.tags)))
            .filter(|(_, e)| !self.epoch.covers(e.version))
            .take(limit)
            .map(|(k, e)| (Bytes::copy_from_slice(k), e.to_entry()))
            .collect()
    }

    /// Every key a reader could see at `now_ms`, for tests and tooling.
    pub fn live_keys(&self, now_ms: u64) -> impl Iterator<Item = &[u8]> {
        self.entries
            .keys()
            .filter(move |s| s.record.entry(&self.tags).liveness(now_ms, self.epoch) == Liveness::Live)
            .map(|s| s.record.key())
    }
}

/// What the indexes, the digest and the accounting need of an entry: all
/// but its value's bytes, so it outlives the record it was read from.
#[derive(Debug, Clone, Copy)]
struct Meta {
    version: Version,
    expires_at: Option<u64>,
    shape: Shape,
}

impl Meta {
    fn of(entry: EntryRef<'_>) -> Meta {
        Meta { version: entry.version, expires_at: entry.expires_at, shape: entry.into() }
    }
}

/// A record with its key's hash in front, ordered by hash, then key. The
/// hash first means most comparisons during a lookup are one integer
/// compare on data inline in the tree node, instead of a memcmp behind a
/// pointer (a cache miss each).
#[derive(Debug, Clone)]
struct Stored {
    hash: u64,
    record: Record,
}

/// A key with its hash, owned: what eviction remembers of a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HashedKey {
    hash: u64,
    key: Box<[u8]>,
}

/// Lets the map be searched with a borrowed `(hash, &[u8])`, without
/// allocating a `Stored` per lookup. The key is asked for only when the
/// hashes tie, since a record's key is behind its pointer.
trait Probe {
    fn hash(&self) -> u64;
    fn key(&self) -> &[u8];
}

impl Probe for (u64, &[u8]) {
    fn hash(&self) -> u64 {
        self.0
    }

    fn key(&self) -> &[u8] {
        self.1
    }
}

impl Probe for HashedKey {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Probe for Stored {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn key(&self) -> &[u8] {
        self.record.key()
    }
}

fn compare(a: &(impl Probe + ?Sized), b: &(impl Probe + ?Sized)) -> std::cmp::Ordering {
    a.hash().cmp(&b.hash()).then_with(|| a.key().cmp(b.key()))
}

impl PartialEq for dyn Probe + '_ {
    fn eq(&self, other: &Self) -> bool {
        compare(self, other).is_eq()
    }
}

impl Eq for dyn Probe + '_ {}

impl PartialOrd for dyn Probe + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Probe + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        compare(self, other)
    }
}

impl<'a> Borrow<dyn Probe + 'a> for Stored {
    fn borrow(&self) -> &(dyn Probe + 'a) {
        self
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        compare(self, other).is_eq()
    }
}

impl Eq for Stored {}

impl PartialOrd for Stored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Stored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        compare(self, other)
    }
}

/// When a dead entry died: its expiry, or its stamp (the touch, for an
/// eviction's tombstone).
fn died_at(entry: EntryRef<'_>) -> u64 {
    entry.expires_at.unwrap_or(entry.version.newest_ts().wall_ms())
}

/// A value whose TTL already passed is stored as a dead marker: same
/// version, no bytes. Every replica makes the same conversion at the same
/// instant because the expiry is absolute.
fn normalize(entry: Entry, now_ms: u64) -> Entry {
    if entry.value.is_some() && entry.is_expired(now_ms) {
        Entry { version: entry.version, value: None, expires_at: entry.expires_at }
    } else {
        entry
    }
}

/// Bucketed hash of a shard's contents, maintained incrementally.
///
/// Each key falls into one leaf by its hash; a leaf is the XOR of
/// `hash(key, version)` over its entries, so adding or removing an entry is
/// one XOR and the order of writes does not matter. Two replicas with equal
/// leaves hold the same versions; differing leaves name the keys to exchange.
/// Interior nodes of the tree are XORs of their children and are computed on
/// demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    leaves: Box<[u64]>,
}

impl Digest {
    pub fn new(leaves: usize) -> Digest {
        assert!(leaves.is_power_of_two(), "digest leaves must be a power of two");
        Digest { leaves: vec![0; leaves].into_boxed_slice() }
    }

    pub fn leaves(&self) -> &[u64] {
        &self.leaves
    }

    /// Leaves are ranges of the hash's top bits (the partition came from
    /// its low bits), so a leaf is a contiguous range of the shard's map.
    pub fn leaf_of(&self, key_hash: u64) -> usize {
        key_hash.checked_shr(64 - self.leaves.len().trailing_zeros()).unwrap_or(0) as usize
    }

    /// The hashes a leaf covers: from `low` up to, not including, `high`
    /// (`None` for the last leaf).
    pub fn leaf_range(&self, leaf: usize) -> (u64, Option<u64>) {
        let shift = 64 - self.leaves.len().trailing_zeros();
        let low = (leaf as u64).checked_shl(shift).unwrap_or(0);
        let high = (leaf as u64 + 1).checked_shl(shift).filter(|_| leaf + 1 < self.leaves.len());
        (low, high)
    }

    fn toggle(&mut self, key_hash: u64, key: &[u8], version: Version) {
        let leaf = self.leaf_of(key_hash);
        self.leaves[leaf] ^= entry_hash(key, version);
    }

    /// The XOR of `group`-sized runs of leaves: the tree one level up.
    pub fn fold(&self, group: usize) -> Vec<u64> {
        self.leaves.chunks(group).map(|c| c.iter().fold(0, |a, b| a ^ b)).collect()
    }

    pub fn root(&self) -> u64 {
        self.leaves.iter().fold(0, |a, b| a ^ b)
    }
}

fn entry_hash(key: &[u8], version: Version) -> u64 {
    // A touch changes the hash, so replicas that differ only in an expiry
    // rewrite see different digests and repair moves the rewrite.
    let mut buf = [0u8; 32];
    buf[..8].copy_from_slice(&version.ts.0.to_le_bytes());
    buf[8..16].copy_from_slice(&version.node.0.to_le_bytes());
    let len = match version.touch {
        None => 16,
        Some(touch) => {
            buf[16..24].copy_from_slice(&touch.ts.0.to_le_bytes());
            buf[24..].copy_from_slice(&touch.node.0.to_le_bytes());
            32
        }
    };
    xxhash_rust::xxh3::xxh3_64_with_seed(key, xxhash_rust::xxh3::xxh3_64(&buf[..len]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{NodeTag, Timestamp};

    fn v(ts: u64) -> Version {
        Version::new(Timestamp::new(ts, 0), NodeTag(1))
    }

    fn val(ts: u64, s: &'static str, exp: Option<u64>) -> Entry {
        Entry::value(v(ts), Bytes::from_static(s.as_bytes()), exp)
    }

    #[test]
    fn lww_and_lazy_expiry() {
        let mut s = Shard::new(16);
        assert!(s.apply(b"k", val(10, "a", None), 0).changed);
        assert!(!s.apply(b"k", val(5, "old", None), 0).changed, "older write loses");
        assert_eq!(s.get(b"k", 0), Some(&b"a"[..]));
        s.apply(b"k", val(20, "b", Some(100)), 0);
        assert_eq!(s.get(b"k", 99), Some(&b"b"[..]));
        assert_eq!(s.get(b"k", 100), None, "expired before any sweep");
        let applied = s.apply(b"k", Entry::tombstone(v(30)), 50);
        assert_eq!(applied, Applied { changed: true, was_live: true });
        assert_eq!(s.get(b"k", 0), None);
        assert!(!s.apply(b"k", val(25, "resurrect?", None), 0).changed, "tombstone blocks older values");
    }

    #[test]
    fn sweep_reclaims_within_budget_and_purges_only_before_horizon() {
        let mut s = Shard::new(16);
        for i in 0..10u8 {
            s.apply(&[i], val(1, "xxxxxxxx", Some(100 + u64::from(i))), 0);
        }
        assert_eq!(s.stats().value_bytes, 80);
        let first = s.sweep(105, Horizon::at(0), 4);
        assert_eq!(first, Sweep { expired: 4, purged: 0, more: true });
        let second = s.sweep(105, Horizon::at(0), 100);
        assert_eq!(second, Sweep { expired: 2, purged: 0, more: false });
        assert_eq!(s.stats().values, 4);
        assert_eq!(s.stats().value_bytes, 32);
        assert_eq!(s.stats().entries, 10, "dead markers stay until the purge horizon");
        let purge = s.sweep(105, Horizon::at(104), 100);
        assert_eq!(purge.purged, 4, "only keys that died before the horizon");
        assert_eq!(s.stats().entries, 6);
        // A purged key accepts writes again.
        assert!(s.apply(&[0], val(2, "new", None), 200).changed);
    }

    #[test]
    fn a_tombstone_replacing_one_that_died_in_the_same_millisecond_is_still_purged() {
        // Two deletes of one key stamped within one wall-clock millisecond
        // (the hybrid clock counts logically while it runs ahead) index the
        // same (time of death, key); replacing one with the other must
        // leave it indexed, or the sweeper never purges it.
        let mut s = Shard::new(16);
        let at = |logical| Version::new(Timestamp::new(30, logical), NodeTag(1));
        s.apply(b"k", Entry::tombstone(at(1)), 50);
        s.apply(b"k", Entry::tombstone(at(2)), 50);
        // Likewise two values with the same expiry instant.
        s.apply(b"t", val(10, "a", Some(100)), 0);
        s.apply(b"t", val(11, "b", Some(100)), 0);
        assert_eq!(s.sweep(200, Horizon::at(0), 10), Sweep { expired: 1, purged: 0, more: false });
        assert_eq!(s.sweep(200, Horizon::at(1_000), 10), Sweep { expired: 0, purged: 2, more: false });
        assert_eq!(s.stats().entries, 0);
    }

    #[test]
    fn writes_arriving_already_expired_are_stored_dead() {
        let mut s = Shard::new(16);
        s.apply(b"k", val(1, "x", Some(10)), 20);
        assert_eq!(s.stats().values, 0);
        assert!(s.entry(b"k").unwrap().is_tombstone());
        assert_eq!(s.get(b"k", 0), None);
    }

    #[test]
    fn truncate_drops_covered_and_rejects_older() {
        let mut s = Shard::new(16);
        s.apply(b"a", val(1, "x", None), 0);
        s.apply(b"b", val(3, "y", Some(1_000)), 0);
        assert_eq!(s.truncate(Epoch(Timestamp::new(2, 0))), 1);
        assert_eq!(s.get(b"a", 0), None);
        assert_eq!(s.get(b"b", 0), Some(&b"y"[..]));
        assert!(!s.apply(b"a", val(2, "late", None), 0).changed);
        assert!(s.apply(b"a", val(4, "after", None), 0).changed);
        assert_eq!(s.truncate(Epoch(Timestamp::new(1, 0))), 0, "epochs never go back");
    }

    #[test]
    fn conditional_apply_refuses_when_something_newer_is_stored() {
        let mut s = Shard::new(16);
        s.apply(b"k", val(5, "x", None), 0);
        assert_eq!(s.apply_if_not_newer(b"k", val(6, "x", Some(10)), v(4), 0), Err(v(5)));
        assert!(s.apply_if_not_newer(b"k", val(6, "x", Some(10)), v(5), 0).unwrap().changed);
        // The same write again, as when repair brought it first (simulator
        // seed 220): applied, changing nothing.
        assert_eq!(s.apply_if_not_newer(b"k", val(6, "x", Some(10)), v(5), 0).map(|a| a.changed), Ok(false));
    }

    #[test]
    fn digest_depends_on_contents_not_history() {
        let mut a = Shard::new(64);
        let mut b = Shard::new(64);
        a.apply(b"x", val(1, "1", None), 0);
        a.apply(b"y", val(2, "2", None), 0);
        a.apply(b"x", val(3, "3", None), 0);
        b.apply(b"y", val(2, "2", None), 0);
        b.apply(b"x", val(3, "3", None), 0);
        assert_eq!(a.digest(), b.digest());
        b.apply(b"z", val(4, "4", None), 0);
        assert_ne!(a.digest().root(), b.digest().root());
        let differing: Vec<usize> = (0..64).filter(|i| a.digest().leaves()[*i] != b.digest().leaves()[*i]).collect();
        assert_eq!(differing.len(), 1);
        let exchanged = b.entries_in_leaves(&differing, None);
        assert!(exchanged.iter().any(|(k, _)| &k[..] == b"z"));
    }

    /// The footprint total must be exactly what the entries and indexes
    /// add up to after any history, or the memory bound drifts.
    fn assert_accounted(s: &Shard) {
        let sum: usize =
            s.entries.keys().map(|k| footprint_of(k.record.key().len(), k.record.entry(&s.tags).into())).sum();
        assert_eq!(s.stats().bytes, sum);
        assert_eq!(s.stats().volatile, s.expiries.len());
    }

    #[test]
    fn the_footprint_follows_every_change() {
        let mut s = Shard::new(16);
        let mut rng = SplitMix64::new(3);
        for round in 0..2_000u64 {
            let key = [rng.below(50) as u8];
            match rng.below(6) {
                0 => s.apply(&key, Entry::tombstone(v(round)), round),
                1 => s.apply(&key, val(round, "with a ttl", Some(round + rng.below(40))), round),
                _ => s.apply(&key, val(round, "value", None), round),
            };
            if round % 97 == 0 {
                s.sweep(round, Horizon::at(round.saturating_sub(30)), 10);
            }
            if round % 301 == 0 {
                s.forget(&key);
            }
            assert_accounted(&s);
        }
        s.truncate(Epoch(Timestamp::new(1_500, 0)));
        assert_accounted(&s);
        s.drop_all();
        assert_eq!(s.stats().bytes, 0);
    }

    fn filled(policy: EvictionPolicy, keys: u16, ttl_every: u16) -> Shard {
        let mut s = Shard::new(16);
        s.set_eviction(policy, 9, 0);
        for i in 0..keys {
            let expiry = (ttl_every > 0 && i % ttl_every == 0).then_some(1_000_000 + u64::from(i));
            s.apply(&i.to_be_bytes(), val(1, "x", expiry), u64::from(i) * 10);
        }
        s
    }

    fn evict(s: &mut Shard, n: usize, now: u64) -> Vec<u16> {
        (0..n)
            .map(|_| {
                let k = s.victim(now, None).expect("a victim");
                assert!(s.forget(&k));
                u16::from_be_bytes([k[0], k[1]])
            })
            .collect()
    }

    #[test]
    fn lru_evicts_keys_not_used_lately() {
        let mut s = filled(EvictionPolicy::AllkeysLru, 1_000, 0);
        // The even keys are read late; the odd ones were last written.
        for i in (0..1_000u16).step_by(2) {
            assert!(s.read(&i.to_be_bytes(), 20_000).is_some());
        }
        let victims = evict(&mut s, 300, 20_000);
        // Sampling is approximate: when every sampled key is a recent one,
        // the best of them goes. Redis's own figure is a few percent.
        let even = victims.iter().filter(|k| *k % 2 == 0).count();
        assert!(even <= 15, "{even} of 300 victims were recently read");
    }

    #[test]
    fn lfu_evicts_keys_used_rarely() {
        let mut s = filled(EvictionPolicy::AllkeysLfu, 1_000, 0);
        // Keys below 200 are read 50 times each, after everything else.
        for _ in 0..50 {
            for i in 0..200u16 {
                s.read(&i.to_be_bytes(), 20_000);
            }
        }
        let victims = evict(&mut s, 500, 20_000);
        let hot = victims.iter().filter(|k| **k < 200).count();
        assert!(hot <= 5, "{hot} of 500 victims were frequently read");
    }

    #[test]
    fn volatile_policies_evict_only_keys_with_a_ttl_and_then_nothing() {
        for policy in [
            EvictionPolicy::VolatileLru,
            EvictionPolicy::VolatileLfu,
            EvictionPolicy::VolatileRandom,
            EvictionPolicy::VolatileTtl,
        ] {
            let mut s = filled(policy, 500, 5);
            let victims = evict(&mut s, 100, 10_000);
            assert!(victims.iter().all(|k| k % 5 == 0), "{policy}: {victims:?}");
            assert_eq!(s.victim(10_000, None), None, "{policy}: no key with a ttl is left");
            assert_eq!(s.stats().values, 400);
        }
    }

    #[test]
    fn volatile_ttl_takes_the_soonest_expiry_first() {
        let mut s = filled(EvictionPolicy::VolatileTtl, 100, 1);
        assert_eq!(evict(&mut s, 3, 0), [0, 1, 2]);
    }

    #[test]
    fn random_eviction_reaches_every_region_and_noeviction_none() {
        let mut s = filled(EvictionPolicy::AllkeysRandom, 1_000, 0);
        let victims = evict(&mut s, 400, 0);
        assert!(victims.iter().any(|k| *k < 100) && victims.iter().any(|k| *k >= 900), "{victims:?}");
        let mut s = filled(EvictionPolicy::Noeviction, 10, 0);
        assert_eq!(s.victim(0, None), None);
    }

    #[test]
    fn keys_stored_before_a_policy_is_set_start_afresh_under_it() {
        let mut s = Shard::new(16);
        // Recovered under the default policy, whose metadata is an LRU clock.
        for i in 0..100u16 {
            s.apply(&i.to_be_bytes(), val(1, "x", None), 1_000_000 + u64::from(i) * 977);
        }
        s.set_eviction(EvictionPolicy::AllkeysLfu, 1, 2_000_000);
        let fresh = memory::touch(EvictionPolicy::AllkeysLfu, None, 2_000_000, &mut SplitMix64::new(0));
        assert!(s.entries.values().all(|access| *access == fresh));
        // A key read once now outranks all of them.
        s.read(&7u16.to_be_bytes(), 2_000_000);
        let victims = evict(&mut s, 99, 2_000_000);
        assert!(!victims.contains(&7));
    }

    #[test]
    fn the_key_a_write_makes_room_for_is_never_chosen() {
        let mut s = filled(EvictionPolicy::AllkeysLru, 50, 0);
        let oldest = 0u16.to_be_bytes();
        assert_eq!(s.victim(1_000, Some(&oldest)).as_deref().map(|k| k != oldest), Some(true));
        let mut s = filled(EvictionPolicy::VolatileTtl, 50, 1);
        assert_eq!(s.victim(0, Some(&oldest)).as_deref(), Some(&1u16.to_be_bytes()[..]));
    }

    #[test]
    fn an_eviction_tombstone_dies_at_its_touch_and_loses_to_later_writes() {
        let mut s = Shard::new(16);
        s.apply(b"k", val(10, "old", None), 0);
        let eviction = Entry::tombstone(v(10).touched(v(500)));
        assert!(s.apply(b"k", eviction.clone(), 0).changed, "it deletes the value it chose");
        assert!(s.sweep(600, Horizon::at(400), 10).purged == 0, "dead since 500, not since the value's 10");
        assert!(s.apply(b"k", val(20, "raced", None), 0).changed, "a write stamped after that value wins");
        assert_eq!(s.get(b"k", 0), Some(&b"raced"[..]));
    }

    #[test]
    fn a_marker_goes_once_its_value_is_past_the_hints_and_its_death_past_the_replicas() {
        let mut s = Shard::new(16);
        // Evicted at 500, the value written at 10; deleted at 300.
        s.apply(b"evicted", Entry::tombstone(v(10).touched(v(500))), 0);
        s.apply(b"deleted", Entry::tombstone(v(300)), 0);
        // Expired at 450, written at 20.
        s.apply(b"expired", val(20, "x", Some(450)), 0);
        assert_eq!(s.sweep(460, Horizon::at(0), 10).expired, 1);
        let swept = |s: &mut Shard, written_before, died_before| {
            s.sweep(1_000, Horizon { written_before, died_before }, 10).purged
        };
        assert_eq!(swept(&mut s, 400, 450), 0, "the eviction, dead since 500, waits and holds up the rest");
        assert_eq!(swept(&mut s, 15, 1_000), 1, "hints of writes after 15 may still come: only the value of 10 goes");
        assert_eq!(swept(&mut s, 400, 501), 2, "the expired value of 20 and the delete of 300");
        assert_eq!(s.stats().entries, 0);
        s.apply(b"deleted", Entry::tombstone(v(900)), 0);
        assert_eq!(swept(&mut s, 900, 2_000), 0, "a delete's marker is written when it dies: the grace applies");
    }

    #[test]
    fn dead_markers_are_never_chosen() {
        let mut s = filled(EvictionPolicy::AllkeysLru, 50, 0);
        for i in 0..49u16 {
            s.apply(&i.to_be_bytes(), Entry::tombstone(v(5)), 100);
        }
        assert_eq!(s.victim(100, None).as_deref(), Some(&49u16.to_be_bytes()[..]));
    }

    #[test]
    fn chunks_resume_and_cover_every_key_once() {
        let mut s = Shard::new(16);
        for i in 0..100u8 {
            s.apply(&[i], val(1, "x", None), 0);
        }
        let mut seen = Vec::new();
        let mut after: Option<Bytes> = None;
        loop {
            let chunk = s.chunk_after(after.as_deref(), 7);
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            seen.extend(chunk.into_iter().map(|(k, _)| k[0]));
        }
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<u8>>());
    }

    #[test]
    fn scan_pages_start_at_a_hash_and_say_what_is_live() {
        let mut s = Shard::new(16);
        for i in 0..100u8 {
            s.apply(&[i], val(1, "x", None), 0);
        }
        s.apply(&[7], Entry::tombstone(v(2)), 0);
        s.apply(&[8], val(2, "x", Some(50)), 0);
        let all = s.keys_from(0, usize::MAX, 100);
        assert_eq!(all.len(), 100, "dead entries are listed too");
        assert!(all.windows(2).all(|w| key_hash(&w[0].key) <= key_hash(&w[1].key)), "in hash order");
        let mut dead: Vec<u8> = all.iter().filter(|l| !l.live).map(|l| l.key[0]).collect();
        dead.sort();
        assert_eq!(dead, vec![7, 8], "a tombstone and an expired value");
        let middle = key_hash(&all[40].key);
        let page = s.keys_from(middle, 10, 100);
        assert_eq!(page, all[40..50].to_vec());
        assert!(s.keys_from(u64::MAX, 10, 100).len() <= 1);
    }

    #[test]
    fn leaf_ranges_select_exactly_the_keys_of_those_leaves() {
        let mut s = Shard::new(64);
        for i in 0..2000u16 {
            s.apply(&i.to_be_bytes(), val(1, "x", None), 0);
        }
        let wanted = [0usize, 5, 63];
        let mut got: Vec<Vec<u8>> = s.entries_in_leaves(&wanted, None).into_iter().map(|(k, _)| k.to_vec()).collect();
        let mut expected: Vec<Vec<u8>> = (0..2000u16)
            .map(|i| i.to_be_bytes().to_vec())
            .filter(|k| wanted.contains(&s.digest().leaf_of(key_hash(k))))
            .collect();
        got.sort();
        expected.sort();
        assert!(!expected.is_empty());
        assert_eq!(got, expected);
    }

    #[test]
    fn leaves_page_after_a_cursor_and_cover_every_key_once() {
        let mut s = Shard::new(64);
        for i in 0..2000u16 {
            s.apply(&i.to_be_bytes(), val(1, "x", None), 0);
        }
        let wanted = [63usize, 5, 0, 5];
        let all = s.entries_in_leaves(&wanted, None);
        let mut paged = Vec::new();
        let mut after: Option<Bytes> = None;
        loop {
            let page: Vec<_> = s.entries_in_leaves(&wanted, after.as_deref()).into_iter().take(7).collect();
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            paged.extend(page);
        }
        assert_eq!(paged, all, "the same keys in the same order, once each");
    }
}
