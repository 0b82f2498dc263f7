//! The client workload: several independent clients, each owning most of
//! its keys and sharing a few with every other client.
//!
//! Most keys are written by exactly one client, so their mutations are
//! sequential and their final state is checked strictly. A small set of
//! shared keys `s/{i}` is written, deleted and read by every client, so
//! those keys have several concurrent writers, whose order the checker
//! knows only up to the clock-skew allowance (see [`crate::checker`]).
//! Every value written is unique (`v{client}.{seq}`), so any value read
//! back names the operation that wrote it. Values are padded to sizes from
//! a few bytes to 64 KiB (log-uniform), with a pattern derived from the
//! tag, so a value that comes back cut, spliced or mixed up is caught as
//! one nobody wrote. The mix, per 100 operations:
//!
//! - 18 puts of new unique keys `u/{client}/{n}`;
//! - 14 overwrites of a small set of keys `o/{client}/{i}`;
//! - 8 puts with a 1–5 s TTL, of new keys `t/{client}/{n}` or of the
//!   overwritten keys (so values with and without TTL replace each other);
//! - 7 puts (a third of them with a TTL) of the shared keys;
//! - 6 deletes of keys the client wrote or of shared keys;
//! - 4 `exists`, 4 `ttl`, 4 `expire` (1–5 s) and 3 `persist`, and 32 gets,
//!   of keys the client wrote (biased towards recent ones, so TTL values
//!   are read around their expiry) or of shared keys.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringkv_client::Client;
use ringkv_core::{KvStore, SplitMix64};
use tokio::time::Instant;

use crate::history::{Answer, OpKind, Phase, Read, Record};

/// Milliseconds since the run started, from a monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
    /// The system clock (ms since the Unix epoch) when the run started, to
    /// place the nodes' timestamps on the run's clock. The nodes read the
    /// same system clock; the schedule's skew is added inside a node.
    start_wall_ms: u64,
}

impl RunClock {
    pub fn new() -> RunClock {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        RunClock::starting_at(wall.as_millis() as u64)
    }

    /// A run starting now on tokio's clock (the simulated one in
    /// `ringkv-sim`), at `start_wall_ms` on the nodes' wall clock.
    pub fn starting_at(start_wall_ms: u64) -> RunClock {
        RunClock { start: Instant::now(), start_wall_ms }
    }

    pub fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn wall_ms_at_start(&self) -> u64 {
        self.start_wall_ms
    }

    /// A system-clock instant (ms since the Unix epoch) as ms since the run
    /// started; 0 for anything before.
    pub fn run_ms_of_wall(&self, wall_ms: u64) -> u64 {
        wall_ms.saturating_sub(self.start_wall_ms)
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
    /// Keys every client writes and reads (`s/0` ..).
    pub shared_keys: u64,
    /// TTL range of TTL puts, milliseconds.
    pub ttl_ms: (u64, u64),
    /// Pause between a client's operations, milliseconds.
    pub think_ms: (u64, u64),
    /// Smallest value written, bytes (rounded down to a power of two).
    pub min_value_bytes: usize,
    /// Largest value written, bytes; sizes are log-uniform between the two.
    pub max_value_bytes: usize,
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig {
            overwrite_keys: 8,
            shared_keys: 16,
            ttl_ms: (1_000, 5_000),
            think_ms: (5, 25),
            min_value_bytes: 1,
            max_value_bytes: 64 << 10,
        }
    }
}

impl WorkloadConfig {
    /// The cache profile's workload: the same operations and keys, with
    /// less pause between a client's operations and values of 4 KiB and
    /// up, so that the nodes' memory bound is overflowed within seconds and
    /// stays overflowed. The floor makes that a matter of writes, not of
    /// speed: a CI machine that ran a third as many operations as a
    /// workstation wrote 0.8 MiB per node with 1-byte values in the mix,
    /// under the 1 MiB bound, and evicted nothing.
    pub fn cache() -> WorkloadConfig {
        WorkloadConfig { think_ms: (1, 5), min_value_bytes: 4 << 10, ..WorkloadConfig::default() }
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
    min_value_bytes: usize,
    max_value_bytes: usize,
    shared_keys: u64,
}

impl ClientState {
    fn new(id: u32, seed: u64, config: &WorkloadConfig) -> ClientState {
        ClientState {
            id,
            rng: SplitMix64::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(u64::from(id) + 1)),
            seq: 0,
            next_key: 0,
            written: Vec::new(),
            known: HashSet::new(),
            min_value_bytes: config.min_value_bytes,
            max_value_bytes: config.max_value_bytes,
            shared_keys: config.shared_keys,
        }
    }

    /// A new unique tag and the value that carries it, padded to a random
    /// power-of-two size between the smallest and largest value sizes.
    fn value(&mut self) -> (String, Bytes) {
        self.seq += 1;
        let tag = format!("v{}.{}", self.id, self.seq);
        let (min, max) = (self.min_value_bytes.max(1), self.max_value_bytes.max(1));
        let low = usize::BITS - 1 - min.leading_zeros();
        let bits = (usize::BITS - max.leading_zeros()).saturating_sub(low).max(1);
        let size = (1usize << (low + self.rng.below(u64::from(bits)) as u32)).min(max);
        (tag.clone(), padded(&tag, size))
    }

    fn new_key(&mut self, prefix: &str) -> String {
        self.next_key += 1;
        format!("{prefix}/{}/{}", self.id, self.next_key)
    }

    /// Remembers a key this client owns (shared keys are picked apart).
    fn wrote(&mut self, key: &str) {
        if !key.starts_with("s/") && self.known.insert(key.to_string()) {
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

    fn shared(&mut self) -> String {
        format!("s/{}", self.rng.below(self.shared_keys))
    }

    /// A key to read or to change the expiry of: a shared key three times
    /// in ten (or whenever the client has written nothing yet), else one it
    /// wrote.
    fn some_key(&mut self) -> String {
        match self.rng.chance(0.3) {
            true => self.shared(),
            false => self.some_written().unwrap_or_else(|| self.shared()),
        }
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
    let mut st = ClientState::new(id, seed, &config);
    let mut history = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let roll = st.rng.below(100);
        let ttl = config.ttl_ms.0 + st.rng.below(config.ttl_ms.1 - config.ttl_ms.0 + 1);
        let record = match roll {
            0..18 => {
                let key = st.new_key("u");
                put(&client, &mut st, &clock, key, None).await
            }
            18..32 => {
                let key = format!("o/{id}/{}", st.rng.below(config.overwrite_keys));
                put(&client, &mut st, &clock, key, None).await
            }
            32..40 => {
                let key = if st.rng.chance(0.5) {
                    st.new_key("t")
                } else {
                    format!("o/{id}/{}", st.rng.below(config.overwrite_keys))
                };
                put(&client, &mut st, &clock, key, Some(ttl)).await
            }
            40..47 => {
                let key = st.shared();
                let ttl = st.rng.chance(1.0 / 3.0).then_some(ttl);
                put(&client, &mut st, &clock, key, ttl).await
            }
            47..53 => {
                let key = match st.rng.chance(1.0 / 3.0) {
                    true => st.shared(),
                    false => st.some_written().unwrap_or_else(|| st.shared()),
                };
                let mut r = Record::invoke(id, Phase::Run, OpKind::Delete, Some(key.clone()), clock.ms());
                let result = client.delete(Bytes::from(key)).await;
                r.finish(clock.ms(), &result);
                r
            }
            53..57 => {
                let key = st.some_key();
                let mut r = Record::invoke(id, Phase::Run, OpKind::Exists, Some(key.clone()), clock.ms());
                let result = client.exists(Bytes::from(key)).await;
                r.finish(clock.ms(), &result);
                r.answer = result.ok().map(Answer::Exists);
                r
            }
            57..61 => {
                let key = st.some_key();
                let mut r = Record::invoke(id, Phase::Run, OpKind::Ttl, Some(key.clone()), clock.ms());
                let result = client.ttl(Bytes::from(key)).await;
                r.finish(clock.ms(), &result);
                r.answer = result.ok().map(|t| Answer::Ttl(t.into()));
                r
            }
            61..65 => {
                let key = st.some_key();
                let mut r = Record::invoke(id, Phase::Run, OpKind::Expire, Some(key.clone()), clock.ms());
                r.ttl_ms = Some(ttl);
                let result = client.expire(Bytes::from(key), Duration::from_millis(ttl)).await;
                r.finish(clock.ms(), &result);
                r.answer = result.ok().map(Answer::Applied);
                r
            }
            65..68 => {
                let key = st.some_key();
                let mut r = Record::invoke(id, Phase::Run, OpKind::Persist, Some(key.clone()), clock.ms());
                let result = client.persist(Bytes::from(key)).await;
                r.finish(clock.ms(), &result);
                r.answer = result.ok().map(Answer::Applied);
                r
            }
            _ => {
                let key = st.some_key();
                let mut r = Record::invoke(id, Phase::Run, OpKind::Get, Some(key.clone()), clock.ms());
                let result = client.get(Bytes::from(key)).await;
                r.finish(clock.ms(), &result);
                r.read = result.ok().map(read_of);
                r
            }
        };
        history.push(record);
        let think = config.think_ms.0 + st.rng.below(config.think_ms.1 - config.think_ms.0 + 1);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    history
}

async fn put(client: &Client, st: &mut ClientState, clock: &RunClock, key: String, ttl_ms: Option<u64>) -> Record {
    let (value, bytes) = st.value();
    let op = if ttl_ms.is_some() { OpKind::PutTtl } else { OpKind::Put };
    st.wrote(&key);
    let mut r = Record::invoke(st.id, Phase::Run, op, Some(key.clone()), clock.ms()).with_value(value.clone(), ttl_ms);
    let result = match ttl_ms {
        Some(ttl) => client.put_with_ttl(Bytes::from(key), bytes, Duration::from_millis(ttl)).await,
        None => client.put(Bytes::from(key), bytes).await,
    };
    r.finish(clock.ms(), &result);
    r
}

/// The value for `tag`: the tag, then (if there is room) `#`, the size and
/// `#`, and a pattern that depends on the tag, up to `size` bytes; a value
/// cut short or spliced no longer matches.
pub fn padded(tag: &str, size: usize) -> Bytes {
    let mut value = format!("{tag}#{size}#").into_bytes();
    if size <= value.len() {
        return Bytes::from(tag.to_string());
    }
    let seed = tag.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    value.extend((0..size - value.len()).map(|i| b'a' + ((seed + i as u64) % 26) as u8));
    Bytes::from(value)
}

/// A read's result as the history records it: the tag of the value read,
/// or the whole value, marked, if its padding is not what the tag's writer
/// wrote (which the checker reports as a value nobody wrote).
pub fn read_of(value: Option<Bytes>) -> Read {
    let Some(v) = value else { return Read::Absent };
    let tag = v.split(|b| *b == b'#').next().unwrap_or_default();
    let tag = String::from_utf8_lossy(tag).into_owned();
    if padded(&tag, v.len()) == v {
        Read::Value(tag)
    } else {
        let shown: String = String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned();
        Read::Value(format!("damaged value of {} bytes: {shown}", v.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_padded_value_reads_back_as_its_tag_and_a_damaged_one_does_not() {
        for size in [1, 4, 5, 6, 100, 64 << 10] {
            assert_eq!(read_of(Some(padded("v1.7", size))), Read::Value("v1.7".into()), "size {size}");
        }
        let good = padded("v1.7", 1000);
        let cut = good.slice(..900);
        assert!(matches!(read_of(Some(cut)), Read::Value(v) if v.starts_with("damaged")));
        let mut spliced = good.to_vec();
        spliced[500] = b'#';
        assert!(matches!(read_of(Some(Bytes::from(spliced))), Read::Value(v) if v.starts_with("damaged")));
        assert_eq!(read_of(None), Read::Absent);
    }

    /// Values shorter than their tag are the tag: below 16 bytes the sizes
    /// are not powers of two.
    #[test]
    fn value_sizes_are_every_power_of_two_between_the_bounds() {
        for (config, sizes) in [(WorkloadConfig::default(), 0..=16), (WorkloadConfig::cache(), 12..=16)] {
            let mut st = ClientState::new(1, 7, &config);
            let lens: Vec<usize> = (0..2_000).map(|_| st.value().1.len()).collect();
            assert!(lens.iter().all(|&n| n <= config.max_value_bytes), "{config:?}");
            assert!(lens.iter().all(|&n| n >= config.min_value_bytes), "{config:?}");
            let seen: HashSet<usize> = lens.into_iter().filter(|&n| n >= 16).collect();
            let expected: HashSet<usize> = sizes.map(|bits| 1 << bits).filter(|&n| n >= 16).collect();
            assert_eq!(seen, expected, "{config:?}");
        }
    }
}
