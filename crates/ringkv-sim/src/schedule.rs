//! The fault schedule: which faults a seed brings, and when. Plain data
//! from the seed alone, so a schedule can be printed, compared, cut down
//! ([`Schedule::without`]) and minimized ([`minimize`]) without running
//! anything but the runs the minimizer asks for.

use std::collections::BTreeSet;
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
    /// Every datagram between the node and the other nodes is held, then
    /// all are delivered at once when the episode heals: requests and
    /// answers arriving late, in a burst, while the node runs on.
    Hold(usize),
    /// The node's process stops, as SIGSTOP, a long GC or a migrated VM
    /// stops it: none of its tasks runs, its clocks stand still and
    /// datagrams to it wait, while the others run on and may declare it
    /// dead, hand its writes off and collect tombstones.
    Pause(usize),
    /// A paused node goes on: its clocks jump by the pause, every timer
    /// that fell due fires at once, and what waited is delivered.
    Resume(usize),
    /// Every link works again, without loss or extra delay, and what was
    /// held is delivered.
    Heal,
    /// The node's wall clock runs this many ms off (0: back in step).
    Skew(usize, i64),
    /// The node's wall clock starts to gain (or, negative, lose) this many
    /// ms per second, from wherever it reads, past the clock check's bound
    /// (`FAR_CLOCK_BOUND_MS`) and on, until a `Skew` sets it again. It
    /// gains only while the cluster is otherwise whole: a ring of three
    /// with a member down cannot tell which of the other two clocks is
    /// wrong (README), and the checker is told what a clock the check can
    /// judge may reach before the check stops its node.
    Drift(usize, i64),
    /// The spare host's node starts and joins the ring as a new member.
    Join(usize),
    /// The node hands its partitions off and leaves the ring for good.
    Leave(usize),
    /// An operator's `clear()`, from the clients' host: not a fault but a
    /// checked operation, and unlike the chaos suite's it may meet any
    /// fault (README promises a clear through a partition or a crash).
    Clear,
    /// Every call that would change the node's disk fails (reads work):
    /// the node's log fails at its next write and the node stops; it is
    /// restarted, as a process supervisor would, and cannot start until
    /// the disk works again. Nothing with storage in memory.
    DiskFail(usize, DiskError),
    /// The node's disk works again.
    DiskHeal(usize),
}

/// How a failing disk refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskError {
    /// ENOSPC.
    Full,
    /// EIO.
    Io,
}

impl DiskError {
    pub fn kind(self) -> std::io::ErrorKind {
        match self {
            DiskError::Full => std::io::ErrorKind::StorageFull,
            DiskError::Io => std::io::ErrorKind::Other,
        }
    }
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
            Fault::Hold(i) => write!(f, "hold {}'s datagrams", n(i)),
            Fault::Pause(i) => write!(f, "pause {}", n(i)),
            Fault::Resume(i) => write!(f, "resume {}", n(i)),
            Fault::Heal => write!(f, "heal every link"),
            Fault::Skew(i, ms) => write!(f, "skew {} by {ms} ms", n(i)),
            Fault::Drift(i, ms) => write!(f, "clock of {} drifts {ms:+} ms per second", n(i)),
            Fault::Join(i) => write!(f, "{} joins", n(i)),
            Fault::Leave(i) => write!(f, "{} leaves", n(i)),
            Fault::Clear => write!(f, "clear"),
            Fault::DiskFail(i, DiskError::Full) => write!(f, "disk of {} full", n(i)),
            Fault::DiskFail(i, DiskError::Io) => write!(f, "disk of {} fails with I/O errors", n(i)),
            Fault::DiskHeal(i) => write!(f, "disk of {} works again", n(i)),
        }
    }
}

impl fmt::Display for Planned {
    /// Times count from the cluster's formation, as the run's fault log
    /// does (a crash may be held back from its planned time there).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7.1}s  episode {:>2}: {}", self.at.as_secs_f64(), self.episode, self.fault)
    }
}

impl Fault {
    /// The nodes the fault acts on, as opposed to the rest of a partition
    /// (which only loses its links to them).
    fn subjects(&self) -> Vec<usize> {
        match self {
            Fault::Crash(i)
            | Fault::Restart(i)
            | Fault::Degrade(i, ..)
            | Fault::Hold(i)
            | Fault::Pause(i)
            | Fault::Resume(i)
            | Fault::Skew(i, _)
            | Fault::Drift(i, _)
            | Fault::Join(i)
            | Fault::Leave(i)
            | Fault::DiskFail(i, _)
            | Fault::DiskHeal(i) => vec![*i],
            Fault::Partition(a, _) => a.clone(),
            Fault::OneWay(a, b) => vec![*a, *b],
            Fault::Heal | Fault::Clear => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
    /// The faults that start and end together share an episode (a crash,
    /// the partition inside it, the heal and the restart): the unit a
    /// schedule is cut down by. Numbered from 1 in the order drawn.
    pub episode: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub faults: Vec<Planned>,
}

/// Time for the cluster to form before the first fault.
const QUIET_START: Duration = Duration::from_secs(5);
/// Skews stay within this: the chaos checker is told the largest. The
/// clock check's bound is no lower, so it stops no node for them.
const MAX_SKEW_MS: u64 = 2_000;
/// The clock check's bound in the simulator: half of the nodes'
/// `max_clock_drift` (`node_config`).
pub const FAR_CLOCK_BOUND_MS: u64 = 2_000;
/// How often the simulated nodes check their clocks (two gossip
/// intervals), plus the longest a round of asks takes on healthy links
/// and the half second the driver may take to see that a member is out
/// of the ring (`World::drift`).
const CLOCK_CHECK_ROUND_MS: u64 = 2_000;
/// The fastest a drifting clock gains or loses, in ms per second.
const MAX_DRIFT_MS_PER_S: u64 = 600;

impl Schedule {
    /// Episodes one after another until `duration`: each starts one fault,
    /// lasts 1-20 s (so some outlast `dead_node_grace` and
    /// `tombstone_grace`, 8 and 12 s in the simulator), and ends it. A crash
    /// may overlap a network fault on another node. At most one node is
    /// crashed at a time: with data in memory, a second crash before the
    /// first node has caught up could lose acknowledged writes for want of
    /// copies, which is not a bug. (A failing disk, drawn apart, may stop a
    /// second node meanwhile; with data in memory it changes nothing.) One episode may start the
    /// spare (node `nodes`, a new member), then or later one member leaves
    /// for good (never the first node, every node's seed; maybe the
    /// joiner); faults pick among the members of their time.
    pub fn generate(seed: u64, nodes: usize, duration: Duration) -> Schedule {
        let mut rng = SplitMix64::new(seed ^ 0x5151_5151);
        let mut faults = Vec::new();
        let mut at = QUIET_START;
        let end = duration.saturating_sub(Duration::from_secs(1));
        let mut episode = 0;
        let mut push = |episode: usize, at: Duration, fault: Fault| faults.push(Planned { at, fault, episode });
        let mut members: Vec<usize> = (0..nodes).collect();
        let (mut joined, mut left) = (false, false);
        while at < end {
            episode += 1;
            let length = Duration::from_millis(1_000 + rng.below(19_000));
            let until = (at + length).min(end);
            let a = members[rng.below(members.len() as u64) as usize];
            let others: Vec<usize> = members.iter().copied().filter(|x| *x != a).collect();
            let b = others[rng.below(others.len() as u64) as usize];
            match rng.below(8) {
                0 => {
                    push(episode, at, Fault::Crash(a));
                    if rng.chance(0.5) {
                        let rest: Vec<usize> = members.iter().copied().filter(|x| *x != a && *x != b).collect();
                        push(episode, at + (until - at) / 3, Fault::Partition(vec![b], rest));
                        push(episode, until, Fault::Heal);
                    }
                    push(episode, until, Fault::Restart(a));
                    // A restarted node needs a while to rejoin and pull its
                    // partitions before anything else goes down.
                    at = until + Duration::from_secs(10);
                    continue;
                }
                1 => {
                    push(episode, at, Fault::Partition(vec![a], others));
                    push(episode, until, Fault::Heal);
                }
                2 => {
                    push(episode, at, Fault::OneWay(a, b));
                    push(episode, until, Fault::Heal);
                }
                3 => {
                    let ms = rng.below(2 * MAX_SKEW_MS + 1) as i64 - MAX_SKEW_MS as i64;
                    push(episode, at, Fault::Skew(a, ms));
                    push(episode, until, Fault::Skew(a, 0));
                }
                4 => {
                    let permille = 10 + rng.below(191) as u32;
                    let ms = 10 + rng.below(291);
                    push(episode, at, Fault::Degrade(a, permille, ms));
                    push(episode, until, Fault::Heal);
                }
                6 => {
                    push(episode, at, Fault::Hold(a));
                    push(episode, until, Fault::Heal);
                }
                5 if !left => {
                    // The next episode waits as after a crash: a member
                    // change is over once the partitions have moved.
                    if !joined {
                        push(episode, at, Fault::Join(nodes));
                        members.push(nodes);
                        joined = true;
                        at += Duration::from_secs(15);
                        if !rng.chance(0.6) {
                            continue;
                        }
                        episode += 1;
                    }
                    // Any member but the first, the joiner included.
                    let leaver = members[1 + rng.below(members.len() as u64 - 1) as usize];
                    push(episode, at, Fault::Leave(leaver));
                    members.retain(|x| *x != leaver);
                    left = true;
                    at += Duration::from_secs(15);
                    continue;
                }
                _ => {
                    push(episode, at, Fault::Crash(a));
                    push(episode, until, Fault::Restart(a));
                    at = until + Duration::from_secs(10);
                    continue;
                }
            }
            at = until + Duration::from_millis(rng.below(3_000));
        }
        // Drawn after the episodes, so that it leaves them as they were.
        if end > QUIET_START && rng.chance(0.5) {
            episode += 1;
            let span = (end - QUIET_START).as_millis() as u64;
            push(episode, QUIET_START + Duration::from_millis(rng.below(span)), Fault::Clear);
        }
        // So are the overlays, which may overlap anything: one node (of the
        // first members, one that stays) from any time on, for a while.
        let stayed: Vec<usize> = (0..nodes).filter(|x| members.contains(x)).collect();
        let overlay = |rng: &mut SplitMix64, least_ms: u64, spread_ms: u64| {
            let span = (end - QUIET_START).as_millis() as u64;
            let at = QUIET_START + Duration::from_millis(rng.below(span));
            let until = (at + Duration::from_millis(least_ms + rng.below(spread_ms))).min(end);
            (at, until, stayed[rng.below(stayed.len() as u64) as usize])
        };
        // A disk's failure, in half the seeds, for 1-20 s.
        if end > QUIET_START && rng.chance(0.5) {
            episode += 1;
            let (at, until, a) = overlay(&mut rng, 1_000, 19_000);
            let error = if rng.chance(0.5) { DiskError::Full } else { DiskError::Io };
            push(episode, at, Fault::DiskFail(a, error));
            push(episode, until, Fault::DiskHeal(a));
        }
        // A clock that drifts past the clock check's bound, in a quarter of
        // the seeds: 200-600 ms per second either way, for 10-40 s, then set
        // right (as NTP steps a clock).
        if end > QUIET_START && rng.chance(0.25) {
            episode += 1;
            let (at, until, a) = overlay(&mut rng, 10_000, 30_000);
            let rate = (200 + rng.below(MAX_DRIFT_MS_PER_S - 199)) as i64;
            push(episode, at, Fault::Drift(a, if rng.chance(0.5) { rate } else { -rate }));
            push(episode, until, Fault::Skew(a, 0));
        }
        // A paused process, in half the seeds, for 1-30 s: past the
        // failure detector, `dead_node_grace` and `tombstone_grace` in
        // some, and over whatever else happens meanwhile. Drawn last, so
        // that the seeds drawn before pauses were keep their other faults.
        if end > QUIET_START && rng.chance(0.5) {
            episode += 1;
            let (at, until, a) = overlay(&mut rng, 1_000, 29_000);
            push(episode, at, Fault::Pause(a));
            push(episode, until, Fault::Resume(a));
        }
        faults.sort_by_key(|p| p.at);
        Schedule { faults }
    }

    /// The episodes, in order.
    pub fn episodes(&self) -> Vec<usize> {
        let mut episodes: Vec<usize> = self.faults.iter().map(|p| p.episode).collect();
        episodes.sort_unstable();
        episodes.dedup();
        episodes
    }

    /// The schedule without the `dropped` episodes, nor those that need
    /// one of them: without the spare's join, nothing that acts on the
    /// spare, and no partition counts it among the rest. What is left
    /// happens at the times drawn for it, so a run of the rest differs from
    /// the whole only by what was dropped.
    pub fn without(&self, dropped: &BTreeSet<usize>) -> Schedule {
        let mut dropped = dropped.clone();
        let unjoined: Vec<usize> = self
            .faults
            .iter()
            .filter_map(|p| match p.fault {
                Fault::Join(spare) if dropped.contains(&p.episode) => Some(spare),
                _ => None,
            })
            .collect();
        for spare in &unjoined {
            dropped.extend(self.faults.iter().filter(|p| p.fault.subjects().contains(spare)).map(|p| p.episode));
        }
        let faults = self.faults.iter().filter(|p| !dropped.contains(&p.episode)).cloned().map(|mut p| {
            // A partition cuts members off from the rest, and a spare that
            // never joined is not among them.
            if let Fault::Partition(_, rest) = &mut p.fault {
                rest.retain(|i| !unjoined.contains(i));
            }
            p
        });
        Schedule { faults: faults.collect() }
    }

    /// The largest skew a node serves with, for the checker: a drifting
    /// clock's passes the clock check's bound by at most what it gains in
    /// a round of the check.
    pub fn max_skew_ms(&self) -> u64 {
        self.faults
            .iter()
            .filter_map(|p| match p.fault {
                Fault::Skew(_, ms) => Some(ms.unsigned_abs()),
                Fault::Drift(_, rate) => Some(FAR_CLOCK_BOUND_MS + rate.unsigned_abs() * CLOCK_CHECK_ROUND_MS / 1_000),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// The episodes to drop from a failing schedule so that what is left
/// still fails and no single episode more can go (one-minimal, as in
/// Zeller's delta debugging, one episode at a time). `fails` runs the
/// schedule without the given episodes; it is called at most
/// `n (n + 1) / 2` times for `n` episodes, since every pass but the last
/// drops one more. Later episodes are tried first: they are the likelier
/// to come after the failure.
pub fn minimize(episodes: &[usize], mut fails: impl FnMut(&BTreeSet<usize>) -> bool) -> BTreeSet<usize> {
    let mut dropped = BTreeSet::new();
    loop {
        let before = dropped.len();
        for &episode in episodes.iter().rev() {
            if dropped.contains(&episode) {
                continue;
            }
            let mut trial = dropped.clone();
            trial.insert(episode);
            if fails(&trial) {
                dropped = trial;
            }
        }
        if dropped.len() == before {
            return dropped;
        }
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
            check(seed, &schedule);
        }
    }

    /// What every schedule, whole or cut down, must be: faults that act on
    /// members of their time, one node down at most, every crash undone.
    fn check(seed: u64, schedule: &Schedule) {
        {
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
                    Fault::Degrade(i, ..)
                    | Fault::Hold(i)
                    | Fault::Pause(i)
                    | Fault::Resume(i)
                    | Fault::Skew(i, _)
                    | Fault::Drift(i, _)
                    | Fault::DiskFail(i, _)
                    | Fault::DiskHeal(i) => vec![*i],
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
            let drifted = FAR_CLOCK_BOUND_MS + MAX_DRIFT_MS_PER_S * CLOCK_CHECK_ROUND_MS / 1_000;
            assert!(schedule.max_skew_ms() <= MAX_SKEW_MS.max(drifted));
        }
    }

    #[test]
    fn a_schedule_cut_down_keeps_whole_episodes_and_no_fault_on_a_spare_that_never_joined() {
        let mut rng = SplitMix64::new(9);
        let mut unjoined = 0;
        for seed in 0..300 {
            let schedule = Schedule::generate(seed, 3, Duration::from_secs(60));
            let episodes = schedule.episodes();
            assert_eq!(episodes, (1..=episodes.len()).collect::<Vec<_>>(), "seed {seed}: numbered from 1");
            let dropped: BTreeSet<usize> = episodes.iter().copied().filter(|_| rng.chance(0.4)).collect();
            let cut = schedule.without(&dropped);
            check(seed, &cut);
            let kept: BTreeSet<usize> = cut.episodes().into_iter().collect();
            assert!(kept.is_disjoint(&dropped), "seed {seed}");
            for e in &kept {
                let whole = schedule.faults.iter().filter(|p| p.episode == *e).count();
                assert_eq!(cut.faults.iter().filter(|p| p.episode == *e).count(), whole, "seed {seed}");
            }
            let join = schedule.faults.iter().find(|p| matches!(p.fault, Fault::Join(_))).map(|p| p.episode);
            if let Some(join) = join.filter(|j| dropped.contains(j)) {
                unjoined += 1;
                let acting_on_spare =
                    schedule.faults.iter().filter(|p| p.episode != join && p.fault.subjects().contains(&3));
                assert!(acting_on_spare.clone().all(|p| !kept.contains(&p.episode)), "seed {seed}");
            }
            assert_eq!(schedule.without(&BTreeSet::new()), schedule);
        }
        assert!(unjoined > 20, "only {unjoined} schedules lost their join");
    }

    #[test]
    fn minimizing_keeps_exactly_the_episodes_a_failure_needs() {
        let episodes: Vec<usize> = (1..=12).collect();
        let mut runs = 0;
        // Fails while episodes 3 and 8 are both kept.
        let dropped = minimize(&episodes, |dropped| {
            runs += 1;
            !dropped.contains(&3) && !dropped.contains(&8)
        });
        let kept: Vec<usize> = episodes.iter().copied().filter(|e| !dropped.contains(e)).collect();
        assert_eq!(kept, vec![3, 8]);
        assert!(runs <= 12 * 13 / 2, "{runs} runs");
        // A failure that needs any one of two episodes keeps one of them.
        let dropped = minimize(&episodes, |dropped| !dropped.contains(&2) || !dropped.contains(&5));
        assert_eq!(episodes.len() - dropped.len(), 1);
        // A failure that needs nothing drops everything; none keeps all.
        assert_eq!(minimize(&episodes, |_| true).len(), 12);
        assert!(minimize(&episodes, |_| false).is_empty());
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
                Fault::Hold(_) => "hold",
                Fault::Pause(_) => "pause",
                Fault::Resume(_) => "resume",
                Fault::Heal => "heal",
                Fault::Skew(..) => "skew",
                Fault::Drift(..) => "drift",
                Fault::Join(_) => "join",
                Fault::Leave(_) => "leave",
                Fault::Clear => "clear",
                Fault::DiskFail(_, DiskError::Full) => "disk full",
                Fault::DiskFail(_, DiskError::Io) => "disk I/O errors",
                Fault::DiskHeal(_) => "disk heal",
            })
            .collect();
        assert_eq!(kinds.len(), 17, "{kinds:?}");
    }
}
