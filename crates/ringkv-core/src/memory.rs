//! The memory bound: eviction policies, byte sizes, and the per-key access
//! metadata that approximated LRU and LFU rank keys by.
//!
//! The policies and their meanings are Redis's, so that a user who knows
//! `maxmemory-policy` knows ringkv's. The access metadata is one `u32` per
//! key whose meaning depends on the policy (as Redis's 24-bit `lru` field):
//! a coarse clock for LRU, a decaying logarithmic counter for LFU.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SplitMix64;

/// What a node does when a write would take it past `maxmemory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// Refuse writes that add data; reads, deletes and clear still work.
    #[default]
    Noeviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    /// The `volatile-*` policies consider only keys with a time to live,
    /// and refuse writes as `noeviction` does when none is left.
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    /// The key that expires soonest goes first.
    VolatileTtl,
}

impl EvictionPolicy {
    pub const ALL: [EvictionPolicy; 8] = [
        EvictionPolicy::Noeviction,
        EvictionPolicy::AllkeysLru,
        EvictionPolicy::AllkeysLfu,
        EvictionPolicy::AllkeysRandom,
        EvictionPolicy::VolatileLru,
        EvictionPolicy::VolatileLfu,
        EvictionPolicy::VolatileRandom,
        EvictionPolicy::VolatileTtl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictionPolicy::Noeviction => "noeviction",
            EvictionPolicy::AllkeysLru => "allkeys-lru",
            EvictionPolicy::AllkeysLfu => "allkeys-lfu",
            EvictionPolicy::AllkeysRandom => "allkeys-random",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::VolatileLfu => "volatile-lfu",
            EvictionPolicy::VolatileRandom => "volatile-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }

    pub fn evicts(self) -> bool {
        self != EvictionPolicy::Noeviction
    }

    /// Whether only keys with a time to live are candidates.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru
                | EvictionPolicy::VolatileLfu
                | EvictionPolicy::VolatileRandom
                | EvictionPolicy::VolatileTtl
        )
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, EvictionPolicy::AllkeysLfu | EvictionPolicy::VolatileLfu)
    }

    pub fn is_random(self) -> bool {
        matches!(self, EvictionPolicy::AllkeysRandom | EvictionPolicy::VolatileRandom)
    }
}

impl fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EvictionPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<EvictionPolicy, String> {
        EvictionPolicy::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = EvictionPolicy::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown eviction policy '{s}' (one of {})", names.join(", "))
        })
    }
}

/// Parses a byte size as Redis writes them: `0`, `1048576`, `512kb`,
/// `64mb`, `2gb` (powers of 1024, case-insensitive; `k`, `m`, `g` alone too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (amount, unit) = crate::time::number_and_unit(text)
        .ok_or_else(|| format!("'{text}' is not a size such as 0, 4096, 512mb or 2gb"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}' in '{text}' (use b, kb, mb or gb)")),
    };
    amount.checked_mul(scale).ok_or_else(|| format!("size '{text}' is too large"))
}

/// The inverse of [`parse_size`] for display, in the largest unit that
/// divides evenly.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("gb", 1u64 << 30), ("mb", 1 << 20), ("kb", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}")
}

/// The LRU clock ticks every this many milliseconds: fine enough to order
/// keys used a moment apart, coarse enough that a `u32` wraps only after
/// 497 days (an idle time is taken modulo the wrap, as Redis does).
pub const LRU_TICK_MS: u64 = 10;
/// A new key's LFU counter, so that it is not the first victim before it
/// had a chance to be read (Redis's `LFU_INIT_VAL`).
pub const LFU_INIT: u8 = 5;
/// How hard the counter is to raise: with 10, about a million hits take it
/// to 255 (Redis's default `lfu-log-factor`).
pub const LFU_LOG_FACTOR: f64 = 10.0;
/// The counter loses one per this many minutes without a hit (Redis's
/// default `lfu-decay-time`).
pub const LFU_DECAY_MINUTES: u64 = 1;

/// A key's access metadata under `policy`, for a key written or read at
/// `now_ms` whose previous metadata was `previous` (none for a new key).
/// A new key's LFU counter starts at [`LFU_INIT`] without a hit, as in
/// Redis, so that a key read once already outranks one never read.
pub fn touch(policy: EvictionPolicy, previous: Option<u32>, now_ms: u64, rng: &mut SplitMix64) -> u32 {
    match (policy.is_lfu(), previous) {
        (true, None) => lfu_pack(now_ms, LFU_INIT),
        (true, Some(p)) => lfu_pack(now_ms, lfu_increment(lfu_decayed(p, now_ms), rng)),
        (false, _) => lru_clock(now_ms),
    }
}

/// How good a victim a key is under `policy`: higher is evicted first.
/// `expires_at` is only used by `volatile-ttl`.
pub fn victim_score(policy: EvictionPolicy, access: u32, expires_at: Option<u64>, now_ms: u64) -> u64 {
    match policy {
        EvictionPolicy::VolatileTtl => u64::MAX - expires_at.unwrap_or(u64::MAX),
        p if p.is_lfu() => 255 - u64::from(lfu_decayed(access, now_ms)),
        _ => u64::from(lru_clock(now_ms).wrapping_sub(access)),
    }
}

fn lru_clock(now_ms: u64) -> u32 {
    (now_ms / LRU_TICK_MS) as u32
}

/// The LFU clock in seconds, kept to 24 bits: it wraps after 194 days, and
/// an idle time is taken modulo the wrap. Seconds, not Redis's minutes, so
/// that a counter decays a whole period after its last hit and not at the
/// next turn of the minute: a key read every second must never fall to a
/// key that was never read.
fn lfu_seconds(now_ms: u64) -> u32 {
    ((now_ms / 1_000) as u32) & LFU_CLOCK_MASK
}

const LFU_CLOCK_MASK: u32 = (1 << 24) - 1;

/// The top 24 bits hold the second of the last update, the low 8 the
/// counter.
fn lfu_pack(now_ms: u64, counter: u8) -> u32 {
    (lfu_seconds(now_ms) << 8) | u32::from(counter)
}

/// The counter after the decay due since it was last updated.
fn lfu_decayed(access: u32, now_ms: u64) -> u8 {
    let counter = (access & 0xff) as u8;
    let since = access >> 8;
    let elapsed = u64::from(lfu_seconds(now_ms).wrapping_sub(since) & LFU_CLOCK_MASK);
    let periods = elapsed / (LFU_DECAY_MINUTES * 60);
    counter.saturating_sub(periods.min(255) as u8)
}

/// A logarithmic increment: the higher the counter, the less likely a hit
/// raises it, so 8 bits span from one hit to millions.
fn lfu_increment(counter: u8, rng: &mut SplitMix64) -> u8 {
    if counter == 255 {
        return 255;
    }
    let base = f64::from(counter.saturating_sub(LFU_INIT));
    if rng.chance(1.0 / (base * LFU_LOG_FACTOR + 1.0)) { counter + 1 } else { counter }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_their_redis_names() {
        for p in EvictionPolicy::ALL {
            assert_eq!(p.as_str().parse::<EvictionPolicy>().unwrap(), p);
        }
        let err = "lru".parse::<EvictionPolicy>().unwrap_err();
        assert!(err.contains("allkeys-lru"), "{err}");
    }

    #[test]
    fn sizes_parse_like_redis() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1tb").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999gb").unwrap_err().contains("too large"));
        for size in [0, 100, 2048, 3 << 20, 5 << 30] {
            assert_eq!(parse_size(&format_size(size)), Ok(size));
        }
    }

    #[test]
    fn lru_scores_grow_with_idle_time_across_the_wrap() {
        let p = EvictionPolicy::AllkeysLru;
        let mut rng = SplitMix64::new(1);
        let old = touch(p, None, 1_000, &mut rng);
        let new = touch(p, None, 5_000, &mut rng);
        assert!(victim_score(p, old, None, 6_000) > victim_score(p, new, None, 6_000));
        let wrap = u64::from(u32::MAX) * LRU_TICK_MS;
        let before = touch(p, None, wrap - 100, &mut rng);
        assert_eq!(victim_score(p, before, None, wrap + 100), 20, "idle time is taken modulo the wrap");
    }

    #[test]
    fn lfu_counts_logarithmically_and_decays() {
        let p = EvictionPolicy::AllkeysLfu;
        let mut rng = SplitMix64::new(2);
        let mut access = touch(p, None, 0, &mut rng);
        assert_eq!(access & 0xff, u32::from(LFU_INIT), "a new key starts at the initial value");
        access = touch(p, Some(access), 0, &mut rng);
        assert_eq!(access & 0xff, u32::from(LFU_INIT) + 1, "the first hit from the initial value always counts");
        for _ in 0..10_000 {
            access = touch(p, Some(access), 0, &mut rng);
        }
        let counter = access & 0xff;
        assert!((20..60).contains(&counter), "10,000 hits gave a counter of {counter}");
        // Ten idle minutes take ten off.
        assert_eq!(u32::from(lfu_decayed(access, 10 * 60_000)), counter - 10);
        assert_eq!(u32::from(lfu_decayed(access, 10 * 60_000 + 59_999)), counter - 10);
        assert_eq!(u32::from(lfu_decayed(access, 11 * 60_000)), counter - 11);
        let cold = touch(p, None, 0, &mut rng);
        assert!(victim_score(p, cold, None, 0) > victim_score(p, access, None, 0));
        let read_once = touch(p, Some(cold), 0, &mut rng);
        assert!(victim_score(p, cold, None, 0) > victim_score(p, read_once, None, 0));
    }

    /// A hit a moment before the minute turns must not be undone by the
    /// turn: a key read every few seconds would otherwise fall, once a
    /// minute, to the level of keys never read (a CI run of
    /// `tests/cache.rs` evicted such a hot key under `allkeys-lfu`). The
    /// clock counts whole seconds, so a period may be up to a second short.
    #[test]
    fn lfu_decays_a_whole_period_after_the_last_hit_and_across_the_wrap() {
        let p = EvictionPolicy::AllkeysLfu;
        let mut rng = SplitMix64::new(3);
        let hit = touch(p, Some(touch(p, None, 59_900, &mut rng)), 59_900, &mut rng);
        let new = touch(p, None, 60_100, &mut rng);
        assert_eq!(u32::from(lfu_decayed(hit, 60_100)), u32::from(LFU_INIT) + 1);
        assert!(victim_score(p, new, None, 60_100) > victim_score(p, hit, None, 60_100));
        assert_eq!(u32::from(lfu_decayed(hit, 118_900)), u32::from(LFU_INIT) + 1);
        assert_eq!(u32::from(lfu_decayed(hit, 119_900)), u32::from(LFU_INIT));
        let wrap = u64::from(LFU_CLOCK_MASK + 1) * 1_000;
        let before = touch(p, Some(touch(p, None, wrap - 30_000, &mut rng)), wrap - 30_000, &mut rng);
        assert_eq!(u32::from(lfu_decayed(before, wrap + 29_000)), u32::from(LFU_INIT) + 1);
        assert_eq!(
            u32::from(lfu_decayed(before, wrap + 30_000)),
            u32::from(LFU_INIT),
            "idle time is taken modulo the wrap"
        );
    }

    #[test]
    fn volatile_ttl_prefers_the_soonest_expiry() {
        let p = EvictionPolicy::VolatileTtl;
        assert!(victim_score(p, 0, Some(100), 0) > victim_score(p, 0, Some(200), 0));
    }
}
