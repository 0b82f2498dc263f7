//! The members' clock check: a node whose wall clock strays from the
//! majority's stops serving until it agrees again.
//!
//! Versions are hybrid clocks, so a skewed clock cannot reorder what one
//! client saw within `max_clock_drift`; but expiry, `ttl` and tombstone
//! purge horizons are judged by the serving node's wall clock alone. A node
//! 20 s behind reports 20 s too much time left on every key (simulator
//! seed 1, with one clock set beyond the drift bound), and one 20 s ahead
//! purges tombstones 20 s early. Nothing in a single request tells such a
//! node from one whose hybrid clock a `clear` through a fast node pushed
//! ahead (every clock then reads ahead of every wall clock), so the check
//! compares wall clocks, member against member, as NTP does: the asking
//! node sends `Request::Time` and takes the answer against the midpoint of
//! the round trip, with half the round trip as the error.
//!
//! The verdict needs a majority of the ring (the node itself counting as
//! agreeing with itself): in a ring of three, a node is off only if both
//! others say so, and the one odd node out is the one that stops. A ring of
//! one or two never judges itself. The bound is half of `max_clock_drift`,
//! so a clock that drifts away is caught before it passes the bound the
//! promises are made for; a clock that jumps further at once serves by it
//! until the next round, one check interval at most.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::Clock;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::membership::Standing;
use crate::topology::Topology;

/// Asks the member at an address for its wall clock (`Request::Time`).
pub(crate) type TimeAsker =
    Arc<dyn Fn(SocketAddr) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send>> + Send + Sync>;

/// How often a node compares its clock with the others', in gossip
/// intervals.
pub(crate) const CHECK_EVERY_GOSSIP_INTERVALS: u32 = 2;

/// What the clock check reads and where it records its verdict.
pub(crate) struct ClockCheck {
    pub clock: Arc<dyn Clock>,
    pub topology: watch::Receiver<Arc<Topology>>,
    pub standing: Arc<Standing>,
    pub ask: TimeAsker,
    pub period: Duration,
    /// Half of `max_clock_drift`.
    pub bound: Duration,
    /// How long one member may take to answer (`replica_timeout`).
    pub timeout: Duration,
}

/// One member's clock as this node measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// The member's clock minus this node's: positive when this node runs
    /// behind.
    pub offset_ms: i64,
    /// How far the true offset may be from `offset_ms`: half the round
    /// trip, plus a millisecond for the clocks' resolution.
    pub error_ms: u64,
}

impl Sample {
    /// `asked_ms` is this node's clock when it asked, `round_trip` how long
    /// the answer took, `remote_ms` the member's clock in the answer.
    pub(crate) fn measure(asked_ms: u64, round_trip: Duration, remote_ms: u64) -> Sample {
        let half = (round_trip.as_millis() as u64).div_ceil(2);
        let midpoint = asked_ms.saturating_add(half);
        Sample { offset_ms: remote_ms as i64 - midpoint as i64, error_ms: half + 1 }
    }

    fn beyond(&self, bound_ms: u64) -> bool {
        self.offset_ms.unsigned_abs().saturating_sub(self.error_ms) > bound_ms
    }

    fn within(&self, bound_ms: u64) -> bool {
        self.offset_ms.unsigned_abs().saturating_add(self.error_ms) <= bound_ms
    }
}

/// What one round of samples says of this node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Agrees,
    /// Off from a majority of the ring by more than the bound; the offset
    /// is the median of theirs (positive: this node runs behind).
    Off {
        offset_ms: i64,
    },
    /// Too few answers either way: the last verdict stands.
    Unknown,
}

/// Judges this node's clock from the samples of one round, in a ring of
/// `ring` members (this node among them).
pub(crate) fn judge(samples: &[Sample], ring: usize, bound_ms: u64) -> Verdict {
    let mut off: Vec<i64> = samples.iter().filter(|s| s.beyond(bound_ms)).map(|s| s.offset_ms).collect();
    // This node agrees with itself.
    let agree = 1 + samples.iter().filter(|s| s.within(bound_ms)).count();
    if off.len() * 2 > ring {
        off.sort_unstable();
        Verdict::Off { offset_ms: off[off.len() / 2] }
    } else if agree * 2 > ring {
        Verdict::Agrees
    } else {
        Verdict::Unknown
    }
}

/// Asks every other live member of the ring for its clock once a period,
/// and records the verdict in the node's standing, until `shutdown`.
pub(crate) async fn clock_check(check: ClockCheck, mut shutdown: watch::Receiver<bool>) {
    let bound_ms = check.bound.as_millis() as u64;
    let mut tick = tokio::time::interval(check.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let topology = check.topology.borrow().clone();
        let ring = topology.table.members().len();
        let mut asks = JoinSet::new();
        for name in topology.table.members().iter().filter(|n| !topology.is_self(n)) {
            let Some(member) = topology.members.get(name).filter(|m| m.live) else { continue };
            let (ask, addr, clock, timeout) = (check.ask.clone(), member.addr, check.clock.clone(), check.timeout);
            asks.spawn(async move {
                let asked_ms = clock.now_ms();
                let started = tokio::time::Instant::now();
                match tokio::time::timeout(timeout, ask(addr)).await {
                    Ok(Ok(remote_ms)) => Some(Sample::measure(asked_ms, started.elapsed(), remote_ms)),
                    _ => None,
                }
            });
        }
        let samples: Vec<Sample> = asks.join_all().await.into_iter().flatten().collect();
        match judge(&samples, ring, bound_ms) {
            Verdict::Off { offset_ms } => check.standing.set_clock_off(Some(offset_ms)),
            Verdict::Agrees => check.standing.set_clock_off(None),
            Verdict::Unknown => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset_ms: i64) -> Sample {
        Sample { offset_ms, error_ms: 5 }
    }

    #[test]
    fn a_measurement_takes_the_midpoint_of_the_round_trip() {
        let s = Sample::measure(1_000, Duration::from_millis(40), 1_020);
        assert_eq!(s, Sample { offset_ms: 0, error_ms: 21 });
        let behind = Sample::measure(1_000, Duration::from_millis(2), 31_001);
        assert_eq!(behind.offset_ms, 30_000, "the member reads 30 s later: this node runs behind");
    }

    #[test]
    fn the_odd_node_out_is_the_one_judged_off() {
        // Ring of three: both others read 20 s ahead of this node.
        assert_eq!(judge(&[at(20_000), at(20_010)], 3, 2_000), Verdict::Off { offset_ms: 20_010 });
        // One other is off, the other agrees: it is that one's clock.
        assert_eq!(judge(&[at(-20_000), at(100)], 3, 2_000), Verdict::Agrees);
    }

    #[test]
    fn a_ring_of_two_never_judges_itself() {
        assert_eq!(judge(&[at(20_000)], 2, 2_000), Verdict::Unknown);
        assert_eq!(judge(&[], 1, 2_000), Verdict::Agrees);
    }

    #[test]
    fn too_few_answers_leave_the_verdict_as_it_was() {
        // Five members, only one answered, and it is off.
        assert_eq!(judge(&[at(20_000)], 5, 2_000), Verdict::Unknown);
        // A sample whose error straddles the bound counts for neither side.
        let vague = Sample { offset_ms: 2_000, error_ms: 50 };
        assert_eq!(judge(&[vague, vague], 3, 2_000), Verdict::Unknown);
    }

    #[test]
    fn offsets_within_the_bound_agree() {
        assert_eq!(judge(&[at(1_500), at(-1_500)], 3, 2_000), Verdict::Agrees);
        assert_eq!(judge(&[at(1_996), at(-1_996)], 3, 2_000), Verdict::Unknown, "within only by less than the error");
    }
}
