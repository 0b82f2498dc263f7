//! How good the shard's approximated eviction is, measured the way Redis
//! measures its own: a cache of a fixed size under a power-law access
//! pattern, filled on every miss, against the same cache with exact LRU.
//! The test suite checks the ratio and `examples/lru_quality.rs` prints it
//! for BENCHMARKS.md.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use ringkv_core::{Entry, EvictionPolicy, NodeTag, SplitMix64, Timestamp, Version};

use crate::Shard;

/// One simulated workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Distinct keys requested.
    pub keys: usize,
    /// Zipf exponent of their popularity (1.0 is the classic power law).
    pub skew: f64,
    /// Requests made.
    pub requests: usize,
    /// Keys the cache holds: the bound is this many entries' footprint.
    pub capacity: usize,
    pub value_bytes: usize,
    pub seed: u64,
}

/// Hit ratios of one run.
#[derive(Debug, Clone, Copy)]
pub struct HitRatios {
    /// The shard under the policy (sampled, with its eviction pool).
    pub shard: f64,
    /// A cache of the same capacity evicting the exact least recently used
    /// key.
    pub exact_lru: f64,
}

/// Runs `workload` against a shard evicting under `policy` and against
/// exact LRU. Time advances one millisecond per request.
pub fn hit_ratios(workload: Workload, policy: EvictionPolicy) -> HitRatios {
    let zipf = Zipf::new(workload.keys, workload.skew);
    let mut rng = SplitMix64::new(workload.seed);
    let requests: Vec<usize> = (0..workload.requests).map(|_| zipf.sample(&mut rng)).collect();
    let value = Bytes::from(vec![b'v'; workload.value_bytes]);
    let key = |i: usize| format!("key:{i:08}").into_bytes();

    let mut shard = Shard::new(64);
    shard.set_eviction(policy, workload.seed, 0);
    let per_entry = crate::footprint(key(0).len(), &Entry::value(Version::ZERO, value.clone(), None));
    let bound = per_entry * workload.capacity;
    let mut hits = 0usize;
    for (t, &i) in requests.iter().enumerate() {
        let now = t as u64;
        let k = key(i);
        if shard.read(&k, now).is_some_and(|e| e.value.is_some()) {
            hits += 1;
            continue;
        }
        while shard.stats().bytes + per_entry > bound {
            let Some(victim) = shard.victim(now, None) else { break };
            shard.forget(&victim);
        }
        let version = Version::new(Timestamp::new(now + 1, 0), NodeTag(1));
        shard.apply(&k, Entry::value(version, value.clone(), None), now);
    }
    HitRatios { shard: hits as f64 / requests.len() as f64, exact_lru: exact_lru(&requests, workload.capacity) }
}

fn exact_lru(requests: &[usize], capacity: usize) -> f64 {
    let mut last_use: HashMap<usize, usize> = HashMap::new();
    let mut by_age: BTreeMap<usize, usize> = BTreeMap::new();
    let mut hits = 0usize;
    for (t, &i) in requests.iter().enumerate() {
        match last_use.insert(i, t) {
            Some(before) => {
                hits += 1;
                by_age.remove(&before);
            }
            None if last_use.len() > capacity => {
                let (_, oldest) = by_age.pop_first().expect("a full cache has an oldest key");
                last_use.remove(&oldest);
            }
            None => {}
        }
        by_age.insert(t, i);
    }
    hits as f64 / requests.len() as f64
}

/// Samples key indexes with probability proportional to 1 / rank^skew.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(keys: usize, skew: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=keys)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(skew);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let total = *self.cumulative.last().expect("at least one key");
        let at = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.cumulative.partition_point(|c| *c < at).min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximated_lru_hits_within_five_percent_of_exact_lru() {
        let workload =
            Workload { keys: 50_000, skew: 1.0, requests: 300_000, capacity: 5_000, value_bytes: 100, seed: 7 };
        let r = hit_ratios(workload, EvictionPolicy::AllkeysLru);
        assert!(r.exact_lru > 0.3, "the workload must reward a good policy: {r:?}");
        assert!(r.shard >= r.exact_lru * 0.95, "approximated LRU {:.4} vs exact {:.4}", r.shard, r.exact_lru);
        // Random eviction is the floor a sampled LRU must beat.
        let random = hit_ratios(workload, EvictionPolicy::AllkeysRandom);
        assert!(random.shard < r.shard, "random {:.4} vs approximated LRU {:.4}", random.shard, r.shard);
    }
}
