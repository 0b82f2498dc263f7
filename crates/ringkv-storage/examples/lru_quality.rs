//! The LRU-quality figure of BENCHMARKS.md: hit ratios of the shard's
//! sampled eviction against exact LRU, under power-law access at a fixed
//! memory bound, for several bounds and skews.
//!
//!     cargo run --release -p ringkv-storage --example lru_quality

use ringkv_core::EvictionPolicy;
use ringkv_storage::eviction_sim::{Workload, hit_ratios};

fn main() {
    println!("keys     requests  skew  capacity  exact-LRU  allkeys-lru  ratio  allkeys-lfu  allkeys-random");
    for (skew, capacity) in [(0.8, 10_000), (1.0, 5_000), (1.0, 20_000), (1.2, 5_000)] {
        let workload = Workload { keys: 100_000, skew, requests: 2_000_000, capacity, value_bytes: 100, seed: 1 };
        let lru = hit_ratios(workload, EvictionPolicy::AllkeysLru);
        let lfu = hit_ratios(workload, EvictionPolicy::AllkeysLfu);
        let random = hit_ratios(workload, EvictionPolicy::AllkeysRandom);
        println!(
            "{:<8} {:<9} {:<5} {:<9} {:<10.4} {:<12.4} {:<6.3} {:<12.4} {:.4}",
            workload.keys,
            workload.requests,
            skew,
            capacity,
            lru.exact_lru,
            lru.shard,
            lru.shard / lru.exact_lru,
            lfu.shard,
            random.shard
        );
    }
}
