//! The client workload: several independent clients, each owning its keys.
//!
//! Each key is written by exactly one client, so a key's mutations are
//! sequential and its history can be checked without guessing at the order
//! of concurrent writes. Every value written is unique (`v{client}.{seq}`),
//! so any value read back names the operation that wrote it. The mix:
//!
//! - puts of new unique keys `u/{client}/{n}`;
//! - overwrites of a small set of keys `o/{client}/{i}`;
//! - puts with a 1–5 s TTL, of new keys `t/{client}/{n}` or of the
//!   overwritten keys (so values with and without TTL replace each other);
//! - deletes of keys the client wrote;
//! - reads of keys the client wrote, biased towards recent ones (so TTL
//!   values are read around their expiry).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringkv_client::Client;
use ringkv_core::{KvStore, SplitMix64};
use tokio::time::Instant;

use crate::history::{OpKind, Phase, Read, Record};

/// Milliseconds since the run started, from a monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    pub fn new() -> RunClock {
        RunClock { start: Instant::now() }
    }

    pub fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

impl Default for RunClock {
    fn default() -> RunClock {
        RunClock::new()
    }
}

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Overwritten keys per client.
    pub overwrite_keys: u64,
    /// TTL range of TTL puts, milliseconds.
    pub ttl_ms: (u64, u64),
    /// Pause between a client's operations, milliseconds.
    pub think_ms: (u64, u64),
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig { overwrite_keys: 8, ttl_ms: (1_000, 5_000), think_ms: (5, 25) }
    }
}

/// One client's state.
struct ClientState {
    id: u32,
    rng: SplitMix64,
    seq: u64,
    next_key: u64,
    written: Vec<String>,
    known: HashSet<String>,
}

impl ClientState {
    fn value(&mut self) -> String {
        self.seq += 1;
        format!("v{}.{}", self.id, self.seq)
    }

    fn new_key(&mut self, prefix: &str) -> String {
        self.next_key += 1;
        format!("{prefix}/{}/{}", self.id, self.next_key)
    }

    fn wrote(&mut self, key: &str) {
        if self.known.insert(key.to_string()) {
            self.written.push(key.to_string());
        }
    }

    /// A key this client wrote: half the time one of the 20 most recent.
    fn some_written(&mut self) -> Option<String> {
        if self.written.is_empty() {
            return None;
        }
        let n = self.written.len() as u64;
        let i = if self.rng.chance(0.5) { n - 1 - self.rng.below(n.min(20)) } else { self.rng.below(n) };
        Some(self.written[i as usize].clone())
    }
}

/// Runs one client until `stop` is set; returns its history.
pub async fn run_client(
    id: u32,
    seed: u64,
    client: Client,
    config: WorkloadConfig,
    clock: RunClock,
    stop: Arc<AtomicBool>,
) -> Vec<Record> {
    let mut st = ClientState {
        id,
        rng: SplitMix64::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(u64::from(id) + 1)),
        seq: 0,
        next_key: 0,
        written: Vec::new(),
        known: HashSet::new(),
    };
    let mut history = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let roll = st.rng.below(100);
        let record = match roll {
            0..25 => {
                let key = st.new_key("u");
                put(&client, &mut st, &clock, key, None).await
            }
            25..45 => {
                let key = format!("o/{id}/{}", st.rng.below(config.overwrite_keys));
                put(&client, &mut st, &clock, key, None).await
            }
            45..57 => {
                let key = if st.rng.chance(0.5) {
                    st.new_key("t")
                } else {
                    format!("o/{id}/{}", st.rng.below(config.overwrite_keys))
                };
                let ttl = config.ttl_ms.0 + st.rng.below(config.ttl_ms.1 - config.ttl_ms.0 + 1);
                put(&client, &mut st, &clock, key, Some(ttl)).await
            }
            57..67 => match st.some_written() {
                Some(key) => {
                    let mut r = Record::invoke(id, Phase::Run, OpKind::Delete, Some(key.clone()), clock.ms());
                    let result = client.delete(Bytes::from(key)).await;
                    r.finish(clock.ms(), &result);
                    r
                }
                None => continue,
            },
            _ => match st.some_written() {
                Some(key) => {
                    let mut r = Record::invoke(id, Phase::Run, OpKind::Get, Some(key.clone()), clock.ms());
                    let result = client.get(Bytes::from(key)).await;
                    r.finish(clock.ms(), &result);
                    r.read = result.ok().map(read_of);
                    r
                }
                None => continue,
            },
        };
        history.push(record);
        let think = config.think_ms.0 + st.rng.below(config.think_ms.1 - config.think_ms.0 + 1);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    history
}

async fn put(client: &Client, st: &mut ClientState, clock: &RunClock, key: String, ttl_ms: Option<u64>) -> Record {
    let value = st.value();
    let op = if ttl_ms.is_some() { OpKind::PutTtl } else { OpKind::Put };
    st.wrote(&key);
    let mut r = Record::invoke(st.id, Phase::Run, op, Some(key.clone()), clock.ms()).with_value(value.clone(), ttl_ms);
    let result = match ttl_ms {
        Some(ttl) => client.put_with_ttl(Bytes::from(key), Bytes::from(value), Duration::from_millis(ttl)).await,
        None => client.put(Bytes::from(key), Bytes::from(value)).await,
    };
    r.finish(clock.ms(), &result);
    r
}

/// A read's result as the history records it.
pub fn read_of(value: Option<Bytes>) -> Read {
    match value {
        None => Read::Absent,
        Some(v) => Read::Value(String::from_utf8_lossy(&v).into_owned()),
    }
}
