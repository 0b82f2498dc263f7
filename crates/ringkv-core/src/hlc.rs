//! Hybrid logical clock.
//!
//! A timestamp packs wall-clock milliseconds into the high 48 bits and a
//! logical counter into the low 16, so timestamps compare as plain integers,
//! stay close to real time (TTLs and truncate epochs are meaningful to a
//! human) and still order causally related events when clocks disagree.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn new(wall_ms: u64, logical: u16) -> Timestamp {
        Timestamp((wall_ms << LOGICAL_BITS) | u64::from(logical))
    }

    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.wall_ms(), self.logical())
    }
}

/// Source of wall-clock milliseconds since the Unix epoch.
///
/// Injected everywhere a date is needed (HLC, TTL) so that tests and the
/// simulator can drive time by hand; nothing in ringkv reads the system clock
/// except the production implementation of this trait.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// A clock that only moves when told to. For tests and simulation.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(start_ms))
    }

    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    #[error("remote timestamp {remote} is {ahead_ms} ms ahead of the local clock, more than the allowed {max_ms} ms")]
    TooFarAhead { remote: Timestamp, ahead_ms: u64, max_ms: u64 },
}

/// The clock state of one node. Thread-safe; `now` is a short critical
/// section with no I/O, so a std mutex is the right tool.
#[derive(Debug)]
pub struct Hlc {
    last: Mutex<Timestamp>,
    max_drift_ms: u64,
}

impl Hlc {
    /// `max_drift_ms` bounds how far ahead of our own wall clock a remote
    /// timestamp may be before we refuse to absorb it: one node with a broken
    /// clock must not drag every version in the cluster into the future.
    pub fn new(max_drift_ms: u64) -> Hlc {
        Hlc { last: Mutex::new(Timestamp(0)), max_drift_ms }
    }

    /// A timestamp strictly greater than every one this clock returned or
    /// observed before, and at least the given wall time.
    pub fn now(&self, wall_ms: u64) -> Timestamp {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let next = tick(*last, wall_ms);
        *last = next;
        next
    }

    /// Absorbs a timestamp seen from another node so that everything we stamp
    /// afterwards orders after it.
    pub fn observe(&self, remote: Timestamp, wall_ms: u64) -> Result<(), HlcError> {
        let ahead_ms = remote.wall_ms().saturating_sub(wall_ms);
        if ahead_ms > self.max_drift_ms {
            return Err(HlcError::TooFarAhead { remote, ahead_ms, max_ms: self.max_drift_ms });
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if remote > *last {
            *last = remote;
        }
        Ok(())
    }

    /// Absorbs a timestamp however far ahead it is. Only for a truncate
    /// epoch: writes acknowledged after a clear must order after it, so a
    /// clear through a node whose clock runs ahead moves every clock ahead.
    pub fn absorb(&self, remote: Timestamp) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if remote > *last {
            *last = remote;
        }
    }

    pub fn last(&self) -> Timestamp {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn tick(last: Timestamp, wall_ms: u64) -> Timestamp {
    if wall_ms > last.wall_ms() {
        Timestamp::new(wall_ms, 0)
    } else {
        // The wall clock has not moved past the last timestamp (same
        // millisecond, or it went backwards): count logically. When the
        // counter is exhausted the next millisecond is borrowed, which keeps
        // monotonicity at the price of running slightly ahead.
        Timestamp(last.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Local(u64),
        Remote(u64, u16),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u64..10_000).prop_map(Event::Local),
            ((0u64..10_000), any::<u16>()).prop_map(|(w, l)| Event::Remote(w, l)),
        ]
    }

    proptest! {
        #[test]
        fn never_goes_backwards_and_absorbs_remote(events in prop::collection::vec(event(), 1..200)) {
            let hlc = Hlc::new(u64::MAX);
            let mut prev = Timestamp(0);
            let mut wall = 0u64;
            for e in events {
                match e {
                    Event::Local(w) => {
                        // Wall clocks may jump backwards; the HLC may not.
                        wall = w;
                        let t = hlc.now(wall);
                        prop_assert!(t > prev, "{t} not after {prev}");
                        prop_assert!(t.wall_ms() >= wall);
                        prev = t;
                    }
                    Event::Remote(w, l) => {
                        let remote = Timestamp::new(w, l);
                        hlc.observe(remote, wall).unwrap();
                        let t = hlc.now(wall);
                        prop_assert!(t > remote, "{t} does not order after observed {remote}");
                        prop_assert!(t > prev);
                        prev = t;
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_timestamps_from_far_future() {
        let hlc = Hlc::new(1_000);
        let err = hlc.observe(Timestamp::new(10_000, 0), 5_000).unwrap_err();
        assert_eq!(err, HlcError::TooFarAhead { remote: Timestamp::new(10_000, 0), ahead_ms: 5_000, max_ms: 1_000 });
        assert!(hlc.now(5_000) < Timestamp::new(10_000, 0));
        // A truncate epoch is absorbed however far ahead: what is stamped
        // after it orders after it.
        hlc.absorb(Timestamp::new(10_000, 0));
        assert!(hlc.now(5_000) > Timestamp::new(10_000, 0));
    }

    #[test]
    fn logical_counter_carries_into_wall_time() {
        let hlc = Hlc::new(0);
        let start = hlc.now(7);
        let mut t = start;
        for _ in 0..70_000 {
            t = hlc.now(7);
        }
        assert!(t.wall_ms() > 7);
        assert!(t > start);
    }
}
