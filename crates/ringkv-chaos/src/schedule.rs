//! The fault schedule: a pure function of the seed and the run's shape.
//!
//! Faults are strictly sequential, each preceded by a healthy gap, so at
//! most one node is faulty at any time: with N=3 and W=R=2 that is exactly
//! the failure the cluster promises to ride out without losing anything
//! acknowledged. Some kills, pauses and partitions are *long*: they outlast
//! both `dead_node_grace` and `tombstone_grace` of the chaos configuration,
//! so the others drop the node from the ring and purge tombstones without
//! it, and it must come back as a new member without resurrecting anything.
//! Every schedule has at least one long pause and one long partition. The node added and the node removed are scheduled so that
//! the add comes first: with the default five nodes the ring then never has
//! fewer than five members, and one of them faulty still leaves four serving.
//!
//! The schedule states *planned* offsets. The runner executes the items in
//! order, waiting for the cluster to be healthy after each one; how long
//! a restart or a hand-off takes varies between runs, so actual start times
//! are recorded separately, but which faults happen, to whom, for how long
//! and after which gap depends on the seed alone.

use std::fmt;

use ringkv_core::SplitMix64;
use serde::{Deserialize, Serialize};

/// What one schedule item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL; after `duration` restart with the same id, data and ports.
    Kill,
    /// SIGSTOP; SIGCONT after `duration`.
    Pause,
    /// Cut the target off from every other node (replica traffic and
    /// gossip, both directions) for `duration`.
    Partition,
    /// Set the target's clock `skew_ms` off the true time for `duration`:
    /// its versions, expiry instants and expiry checks are that far off.
    ClockSkew,
    /// Start a new node that joins the ring and pulls its partitions.
    AddNode,
    /// SIGTERM: the target hands its partitions off, leaves and exits.
    RemoveNode,
    /// A `clear()`: not a fault but a checked operation, run while no
    /// fault is active.
    Clear,
}

impl FaultKind {
    /// Whether a fault of this kind can last past the grace periods.
    pub fn can_be_long(self) -> bool {
        matches!(self, FaultKind::Kill | FaultKind::Pause | FaultKind::Partition)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::AddNode => "add-node",
            FaultKind::RemoveNode => "remove-node",
            FaultKind::Clear => "clear",
        }
    }
}

/// One schedule item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub index: usize,
    /// Healthy time before the item starts.
    pub gap_ms: u64,
    /// Planned start, from the beginning of the fault phase (informational:
    /// the runner honours gaps and durations, not absolute times).
    pub at_ms: u64,
    pub kind: FaultKind,
    /// The node the fault applies to (`None` for a clear).
    pub target: Option<String>,
    /// How long a kill, pause, partition or skew lasts; 0 for the others,
    /// which last as long as the join, the hand-off or the clear takes.
    pub duration_ms: u64,
    /// How far off a skewed clock reads (ahead if positive); 0 otherwise.
    #[serde(default)]
    pub skew_ms: i64,
}

impl Fault {
    /// Lasts past both grace periods (see [`LONG_MS`]).
    pub fn is_long(&self) -> bool {
        self.kind.can_be_long() && self.duration_ms >= LONG_MS.0
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:<2} +{:>6.1}s  {:<11}", self.index, self.at_ms as f64 / 1000.0, self.kind.as_str())?;
        if let Some(target) = &self.target {
            write!(f, " {target:<4}")?;
        } else {
            write!(f, "     ")?;
        }
        if self.skew_ms != 0 {
            write!(f, " by {:+.1}s", self.skew_ms as f64 / 1000.0)?;
        }
        if self.duration_ms > 0 {
            write!(f, " for {:.1}s", self.duration_ms as f64 / 1000.0)?;
        }
        write!(f, " (after {:.1}s healthy)", self.gap_ms as f64 / 1000.0)
    }
}

/// What the schedule is generated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleParams {
    pub seed: u64,
    /// Length of the fault phase; faults are planned until it is used up
    /// (the add and the remove are always included).
    pub duration_ms: u64,
    /// Nodes at the start, named n1..; the added node is n{nodes+1}.
    pub nodes: usize,
    /// Whether to schedule one `clear()`.
    pub clear: bool,
}

/// Durations, in milliseconds, as (min, max) inclusive.
pub const GAP_MS: (u64, u64) = (3_000, 5_000);
pub const KILL_MS: (u64, u64) = (2_000, 10_000);
pub const PAUSE_MS: (u64, u64) = (2_000, 8_000);
pub const PARTITION_MS: (u64, u64) = (3_000, 10_000);
pub const SKEW_FOR_MS: (u64, u64) = (3_000, 10_000);
/// A long kill, pause or partition: past the chaos configuration's
/// `dead_node_grace` (8 s) plus failure detection, and past its
/// `tombstone_grace` (12 s) after that.
pub const LONG_MS: (u64, u64) = (24_000, 30_000);
/// How far off a skewed clock reads, either way: from what NTP trouble
/// commonly causes to a clock that was never synchronised properly, well
/// within `max_clock_drift`.
pub const SKEW_BY_MS: (u64, u64) = (200, 3_000);
/// What the planner assumes a join or a leave takes, for the planned
/// offsets only.
const MEMBERSHIP_CHANGE_ESTIMATE_MS: u64 = 15_000;
const CLEAR_ESTIMATE_MS: u64 = 1_000;
/// The faults that make one node misbehave for a while.
const NODE_FAULTS: [FaultKind; 4] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition, FaultKind::ClockSkew];
/// The node faults that every schedule has at least once, and whether long.
const REQUIRED: [(FaultKind, bool); 6] = [
    (FaultKind::Kill, false),
    (FaultKind::Pause, false),
    (FaultKind::Partition, false),
    (FaultKind::ClockSkew, false),
    (FaultKind::Pause, true),
    (FaultKind::Partition, true),
];
/// One in this many of the other kills, pauses and partitions is long.
const LONG_ONE_IN: u64 = 4;
/// Fewest nodes that keep four serving while one is faulty.
pub const MIN_NODES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub faults: Vec<Fault>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault schedule for seed {} ({} items):", self.seed, self.faults.len())?;
        for fault in &self.faults {
            writeln!(f, "  {fault}")?;
        }
        Ok(())
    }
}

fn between(rng: &mut SplitMix64, (lo, hi): (u64, u64)) -> u64 {
    lo + rng.below(hi - lo + 1)
}

/// Generates the schedule. Same parameters, same schedule.
pub fn generate(params: &ScheduleParams) -> Result<Schedule, String> {
    if params.nodes < MIN_NODES {
        return Err(format!(
            "the chaos schedule needs at least {MIN_NODES} nodes (got {}): one faulty node must leave four serving",
            params.nodes
        ));
    }
    // Mix the seed so that seed 1 and seed 2 do not start from neighbouring
    // SplitMix64 states (they would anyway diverge at once; this is cheap).
    let mut rng = SplitMix64::new(params.seed ^ 0x6368_616f_735f_7631);
    let duration = params.duration_ms;
    let add_at = duration * between(&mut rng, (10, 40)) / 100;
    let remove_at = duration * between(&mut rng, (50, 75)) / 100;
    // Early rather than late: keys written after the clear are the ones
    // whose final state says the most.
    let clear_at = duration * between(&mut rng, (15, 50)) / 100;

    let mut members: Vec<String> = (1..=params.nodes).map(|i| format!("n{i}")).collect();
    let originals = members.clone();
    let new_node = format!("n{}", params.nodes + 1);
    let (mut added, mut removed, mut cleared) = (false, false, !params.clear);
    // Every kind of node fault at least once, in a seeded order; after that
    // uniformly at random.
    let mut pending = REQUIRED.to_vec();
    for i in (1..pending.len()).rev() {
        pending.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut faults = Vec::new();
    let mut t = 0u64;
    loop {
        let gap_ms = between(&mut rng, GAP_MS);
        let at_ms = t + gap_ms;
        let must_finish = at_ms >= duration;
        if must_finish && added && removed && cleared && pending.is_empty() {
            break;
        }
        let (kind, target, duration_ms) = if !cleared && (at_ms >= clear_at || must_finish) {
            cleared = true;
            (FaultKind::Clear, None, 0)
        } else if !added && (at_ms >= add_at || must_finish) {
            added = true;
            members.push(new_node.clone());
            (FaultKind::AddNode, Some(new_node.clone()), 0)
        } else if added && !removed && (at_ms >= remove_at || must_finish) {
            removed = true;
            let candidates: Vec<&String> = members.iter().filter(|m| originals.contains(m)).collect();
            let target = candidates[rng.below(candidates.len() as u64) as usize].clone();
            members.retain(|m| *m != target);
            (FaultKind::RemoveNode, Some(target), 0)
        } else {
            let target = members[rng.below(members.len() as u64) as usize].clone();
            let (kind, long) = pending.pop().unwrap_or_else(|| {
                let kind = NODE_FAULTS[rng.below(NODE_FAULTS.len() as u64) as usize];
                (kind, kind.can_be_long() && rng.below(LONG_ONE_IN) == 0)
            });
            let range = match kind {
                _ if long => LONG_MS,
                FaultKind::Kill => KILL_MS,
                FaultKind::Pause => PAUSE_MS,
                FaultKind::ClockSkew => SKEW_FOR_MS,
                _ => PARTITION_MS,
            };
            (kind, Some(target), between(&mut rng, range))
        };
        let skew_ms = match kind {
            FaultKind::ClockSkew => {
                let by = between(&mut rng, SKEW_BY_MS) as i64;
                if rng.below(2) == 0 { by } else { -by }
            }
            _ => 0,
        };
        let lasts = match kind {
            FaultKind::AddNode | FaultKind::RemoveNode => MEMBERSHIP_CHANGE_ESTIMATE_MS,
            FaultKind::Clear => CLEAR_ESTIMATE_MS,
            _ => duration_ms,
        };
        faults.push(Fault { index: faults.len() + 1, gap_ms, at_ms, kind, target, duration_ms, skew_ms });
        t = at_ms + lasts;
    }
    Ok(Schedule { seed: params.seed, faults })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64, duration_ms: u64) -> ScheduleParams {
        ScheduleParams { seed, duration_ms, nodes: 5, clear: true }
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        for seed in [1, 2, 3, 42, u64::MAX] {
            assert_eq!(generate(&params(seed, 120_000)), generate(&params(seed, 120_000)));
        }
        assert_ne!(generate(&params(1, 120_000)).unwrap().faults, generate(&params(2, 120_000)).unwrap().faults);
    }

    #[test]
    fn pinned_schedule_for_seed_1() {
        // Pins the generator: a change to it changes what `--seed 1` means,
        // and a failing seed reported earlier would no longer replay.
        let s = generate(&params(1, 45_000)).unwrap();
        let got: Vec<(FaultKind, Option<&str>, u64, u64)> =
            s.faults.iter().map(|f| (f.kind, f.target.as_deref(), f.duration_ms, f.gap_ms)).collect();
        let expected = [
            (FaultKind::Partition, Some("n4")),
            (FaultKind::ClockSkew, Some("n1")),
            (FaultKind::Clear, None),
            (FaultKind::AddNode, Some("n6")),
            (FaultKind::RemoveNode, Some("n5")),
            (FaultKind::Pause, Some("n6")),
            (FaultKind::Kill, Some("n2")),
            (FaultKind::Pause, Some("n4")),
            (FaultKind::Partition, Some("n1")),
        ];
        assert_eq!(got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(), expected);
        let timing: Vec<(u64, u64)> = got.iter().map(|g| (g.2, g.3)).collect();
        assert_eq!(
            timing,
            [
                (7584, 3745),
                (3516, 3446),
                (0, 3122),
                (0, 4762),
                (0, 4856),
                (29543, 3528),
                (6017, 4134),
                (3869, 4329),
                (28044, 3061)
            ]
        );
        let skews: Vec<i64> = s.faults.iter().map(|f| f.skew_ms).collect();
        assert_eq!(skews, [0, -1315, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.to_string(), generate(&params(1, 45_000)).unwrap().to_string());
    }

    #[test]
    fn invariants_hold_for_many_seeds() {
        for seed in 0..500 {
            for duration_ms in [20_000, 60_000, 120_000, 600_000] {
                let s = generate(&params(seed, duration_ms)).unwrap();
                let count = |k: FaultKind| s.faults.iter().filter(|f| f.kind == k).count();
                assert_eq!(count(FaultKind::AddNode), 1, "seed {seed}");
                assert_eq!(count(FaultKind::RemoveNode), 1, "seed {seed}");
                assert_eq!(count(FaultKind::Clear), 1, "seed {seed}");
                for kind in NODE_FAULTS {
                    assert!(count(kind) >= 1, "seed {seed}: no {kind:?}");
                }
                for kind in [FaultKind::Pause, FaultKind::Partition] {
                    let long = s.faults.iter().filter(|f| f.kind == kind && f.is_long()).count();
                    assert!(long >= 1, "seed {seed}: no long {kind:?}");
                }
                let add = s.faults.iter().position(|f| f.kind == FaultKind::AddNode).unwrap();
                let remove = s.faults.iter().position(|f| f.kind == FaultKind::RemoveNode).unwrap();
                assert!(add < remove, "seed {seed}: the add must come before the remove");
                let mut members: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
                let mut prev_end = 0;
                for f in &s.faults {
                    assert!((GAP_MS.0..=GAP_MS.1).contains(&f.gap_ms));
                    assert!(f.at_ms >= prev_end + GAP_MS.0, "seed {seed}: faults overlap");
                    let range = match f.kind {
                        FaultKind::Kill => Some(KILL_MS),
                        FaultKind::Pause => Some(PAUSE_MS),
                        FaultKind::Partition => Some(PARTITION_MS),
                        FaultKind::ClockSkew => Some(SKEW_FOR_MS),
                        _ => None,
                    };
                    let skewed = f.skew_ms.unsigned_abs();
                    match f.kind {
                        FaultKind::ClockSkew => assert!((SKEW_BY_MS.0..=SKEW_BY_MS.1).contains(&skewed)),
                        _ => assert_eq!(skewed, 0),
                    }
                    match (range, &f.target) {
                        (Some(r), Some(t)) => {
                            let long = f.kind.can_be_long() && (LONG_MS.0..=LONG_MS.1).contains(&f.duration_ms);
                            assert!((r.0..=r.1).contains(&f.duration_ms) || long);
                            assert!(members.contains(t), "seed {seed}: {t} is not a member at #{}", f.index);
                            assert!(members.len() > MIN_NODES - 1, "four must stay serving");
                        }
                        (None, Some(t)) if f.kind == FaultKind::AddNode => {
                            assert_eq!(t, "n6");
                            members.push(t.clone());
                        }
                        (None, Some(t)) => {
                            assert_eq!(f.kind, FaultKind::RemoveNode);
                            assert_ne!(t, "n6", "the node removed is one of the originals");
                            assert!(members.contains(t));
                            members.retain(|m| m != t);
                        }
                        (None, None) => assert_eq!(f.kind, FaultKind::Clear),
                        (Some(_), None) => panic!("a fault without a target"),
                    }
                    prev_end = f.at_ms + f.duration_ms;
                }
                assert!(members.len() >= MIN_NODES);
            }
        }
    }

    #[test]
    fn too_few_nodes_is_refused() {
        assert!(generate(&ScheduleParams { seed: 1, duration_ms: 60_000, nodes: 4, clear: true }).is_err());
    }

    #[test]
    fn no_clear_when_not_asked() {
        let s = generate(&ScheduleParams { seed: 1, duration_ms: 60_000, nodes: 5, clear: false }).unwrap();
        assert!(s.faults.iter().all(|f| f.kind != FaultKind::Clear));
    }
}
