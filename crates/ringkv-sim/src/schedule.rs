//! The fault schedule: which faults a seed brings, and when. Plain data
//! from the seed alone, so a schedule can be printed, compared and (later)
//! minimized without running anything.

use std::fmt;
use std::time::Duration;

use ringkv_core::SplitMix64;

/// One change to the simulated world. Nodes are indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The host stops at once: its tasks and memory are gone.
    Crash(usize),
    /// A crashed host starts again (a new process on the same address).
    Restart(usize),
    /// No datagram crosses between the groups, either way.
    Partition(Vec<usize>, Vec<usize>),
    /// Datagrams from the first node to the second are lost; the other
    /// way works.
    OneWay(usize, usize),
    /// The node's links to the others turn lossy and slow: of every
    /// thousand datagrams sent on one, this many are lost, each with every
    /// datagram then in flight on that link, either way (turmoil's random
    /// partition, healed by the next datagram: bursts of loss); and each
    /// datagram takes up to this many ms, drawn per datagram, so that they
    /// also arrive out of order.
    Degrade(usize, u32, u64),
    /// Every link works again, without loss or extra delay.
    Heal,
    /// The node's wall clock runs this many ms off (0: back in step).
    Skew(usize, i64),
    /// The spare host's node starts and joins the ring as a new member.
    Join(usize),
    /// The node hands its partitions off and leaves the ring for good.
    Leave(usize),
    /// An operator's `clear()`, from the clients' host: not a fault but a
    /// checked operation, and unlike the chaos suite's it may meet any
    /// fault (README promises a clear through a partition or a crash).
    Clear,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &usize| format!("n{}", i + 1);
        let group = |g: &[usize]| g.iter().map(n).collect::<Vec<_>>().join(",");
        match self {
            Fault::Crash(i) => write!(f, "crash {}", n(i)),
            Fault::Restart(i) => write!(f, "restart {}", n(i)),
            Fault::Partition(a, b) => write!(f, "partition {} | {}", group(a), group(b)),
            Fault::OneWay(a, b) => write!(f, "one-way {} -> {} lost", n(a), n(b)),
            Fault::Degrade(i, permille, ms) => {
                write!(f, "degrade {}: {:.1}% loss, up to {ms} ms delay", n(i), *permille as f64 / 10.0)
            }
            Fault::Heal => write!(f, "heal every link"),
            Fault::Skew(i, ms) => write!(f, "skew {} by {ms} ms", n(i)),
            Fault::Join(i) => write!(f, "{} joins", n(i)),
            Fault::Leave(i) => write!(f, "{} leaves", n(i)),
            Fault::Clear => write!(f, "clear"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub faults: Vec<Planned>,
}

/// Time for the cluster to form before the first fault.
const QUIET_START: Duration = Duration::from_secs(5);
/// Skews stay within this: the chaos checker is told the largest, and
/// `max_clock_drift` (default 60 s) is far above it.
const MAX_SKEW_MS: u64 = 2_000;

impl Schedule {
    /// Episodes one after another until `duration`: each starts one fault,
    /// lasts 1-20 s (so some outlast `dead_node_grace` and
    /// `tombstone_grace`, 8 and 12 s in the simulator), and ends it. A crash
    /// may overlap a network fault on another node. At most one node is
    /// down at a time: nodes keep data in memory only, so a second crash
    /// before the first node has caught up could lose acknowledged writes
    /// for want of copies, which is not a bug. One episode may start the
    /// spare (node `nodes`, a new member), then or later one member leaves
    /// for good (never the first node, every node's seed; maybe the
    /// joiner); faults pick among the members of their time.
    pub fn generate(seed: u64, nodes: usize, duration: Duration) -> Schedule {
        let mut rng = SplitMix64::new(seed ^ 0x5151_5151);
        let mut faults = Vec::new();
        let mut at = QUIET_START;
        let end = duration.saturating_sub(Duration::from_secs(1));
        let mut push = |at: Duration, fault: Fault| faults.push(Planned { at, fault });
        let mut members: Vec<usize> = (0..nodes).collect();
        let (mut joined, mut left) = (false, false);
        while at < end {
            let length = Duration::from_millis(1_000 + rng.below(19_000));
            let until = (at + length).min(end);
            let a = members[rng.below(members.len() as u64) as usize];
            let others: Vec<usize> = members.iter().copied().filter(|x| *x != a).collect();
            let b = others[rng.below(others.len() as u64) as usize];
            match rng.below(7) {
                0 => {
                    push(at, Fault::Crash(a));
                    if rng.chance(0.5) {
                        let rest: Vec<usize> = members.iter().copied().filter(|x| *x != a && *x != b).collect();
                        push(at + (until - at) / 3, Fault::Partition(vec![b], rest));
                        push(until, Fault::Heal);
                    }
                    push(until, Fault::Restart(a));
                    // A restarted node needs a while to rejoin and pull its
                    // partitions before anything else goes down.
                    at = until + Duration::from_secs(10);
                    continue;
                }
                1 => {
                    push(at, Fault::Partition(vec![a], others));
                    push(until, Fault::Heal);
                }
                2 => {
                    push(at, Fault::OneWay(a, b));
                    push(until, Fault::Heal);
                }
                3 => {
                    let ms = rng.below(2 * MAX_SKEW_MS + 1) as i64 - MAX_SKEW_MS as i64;
                    push(at, Fault::Skew(a, ms));
                    push(until, Fault::Skew(a, 0));
                }
                4 => {
                    let permille = 10 + rng.below(191) as u32;
                    let ms = 10 + rng.below(291);
                    push(at, Fault::Degrade(a, permille, ms));
                    push(until, Fault::Heal);
                }
                5 if !left => {
                    // The next episode waits as after a crash: a member
                    // change is over once the partitions have moved.
                    if !joined {
                        push(at, Fault::Join(nodes));
                        members.push(nodes);
                        joined = true;
                        at += Duration::from_secs(15);
                        if !rng.chance(0.6) {
                            continue;
                        }
                    }
                    // Any member but the first, the joiner included.
                    let leaver = members[1 + rng.below(members.len() as u64 - 1) as usize];
                    push(at, Fault::Leave(leaver));
                    members.retain(|x| *x != leaver);
                    left = true;
                    at += Duration::from_secs(15);
                    continue;
                }
                _ => {
                    push(at, Fault::Crash(a));
                    push(until, Fault::Restart(a));
                    at = until + Duration::from_secs(10);
                    continue;
                }
            }
            at = until + Duration::from_millis(rng.below(3_000));
        }
        // Drawn after the episodes, so that it leaves them as they were.
        if end > QUIET_START && rng.chance(0.5) {
            let span = (end - QUIET_START).as_millis() as u64;
            push(QUIET_START + Duration::from_millis(rng.below(span)), Fault::Clear);
        }
        faults.sort_by_key(|p| p.at);
        Schedule { faults }
    }

    /// The largest skew any node is given, for the checker.
    pub fn max_skew_ms(&self) -> u64 {
        self.faults
            .iter()
            .filter_map(|p| match p.fault {
                Fault::Skew(_, ms) => Some(ms.unsigned_abs()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_schedule_and_never_two_nodes_down_at_once() {
        for seed in 0..500 {
            let schedule = Schedule::generate(seed, 3, Duration::from_secs(60));
            assert_eq!(schedule, Schedule::generate(seed, 3, Duration::from_secs(60)));
            let mut down: Vec<usize> = Vec::new();
            let mut members = vec![0, 1, 2];
            for planned in &schedule.faults {
                let touched: Vec<usize> = match &planned.fault {
                    Fault::Crash(i) => {
                        assert!(down.is_empty(), "seed {seed}: n{} crashes while {down:?} are down", i + 1);
                        down.push(*i);
                        vec![*i]
                    }
                    Fault::Restart(i) => {
                        down.retain(|x| x != i);
                        vec![*i]
                    }
                    Fault::Join(i) => {
                        assert_eq!(*i, 3, "seed {seed}: only the spare joins");
                        assert!(!members.contains(i), "seed {seed}: the spare joins once");
                        members.push(*i);
                        vec![]
                    }
                    Fault::Leave(i) => {
                        assert!(down.is_empty(), "seed {seed}: a member leaves while {down:?} are down");
                        assert_ne!(*i, 0, "seed {seed}: the first node is every node's seed");
                        members.retain(|x| x != i);
                        vec![]
                    }
                    Fault::Partition(a, b) => a.iter().chain(b).copied().collect(),
                    Fault::OneWay(a, b) => vec![*a, *b],
                    Fault::Degrade(i, ..) | Fault::Skew(i, _) => vec![*i],
                    Fault::Heal | Fault::Clear => vec![],
                };
                for i in touched {
                    let back_in_step = matches!(planned.fault, Fault::Skew(_, 0));
                    assert!(
                        members.contains(&i) || back_in_step,
                        "seed {seed}: {} touches n{}, not a member then",
                        planned.fault,
                        i + 1
                    );
                }
            }
            assert!(down.is_empty(), "seed {seed}: every crashed node restarts");
            assert!(schedule.max_skew_ms() <= MAX_SKEW_MS);
        }
    }

    #[test]
    fn the_seeds_of_a_test_run_bring_every_kind_of_fault() {
        let kinds: std::collections::BTreeSet<&str> = (1000..1008)
            .flat_map(|seed| Schedule::generate(seed, 3, Duration::from_secs(60)).faults)
            .map(|planned| match planned.fault {
                Fault::Crash(_) => "crash",
                Fault::Restart(_) => "restart",
                Fault::Partition(..) => "partition",
                Fault::OneWay(..) => "one-way",
                Fault::Degrade(..) => "degrade",
                Fault::Heal => "heal",
                Fault::Skew(..) => "skew",
                Fault::Join(_) => "join",
                Fault::Leave(_) => "leave",
                Fault::Clear => "clear",
            })
            .collect();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
    }
}
