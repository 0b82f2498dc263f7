//! The node's view of the cluster at one moment: who the members are, which
//! are up, and the partition table computed from the ring members. Rebuilt
//! by the membership task on every change and swapped in whole, so a request
//! always works from one consistent view.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use ringkv_core::ring::{NodeName, PartitionTable};
use ringkv_core::{Epoch, PartitionId};
use ringkv_net::wire::{MemberInfo, MemberStatus, Members};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberView {
    pub addr: SocketAddr,
    pub status: MemberStatus,
    pub live: bool,
    pub in_ring: bool,
    /// In the ring once rebalancing is done (the `pending` table's members).
    pub in_next: bool,
    pub epoch: Epoch,
    /// Removed from the ring by this node while it was out, and not yet
    /// back as a new member: it may hold keys whose tombstones were purged
    /// without it, so it is neither asked nor listened to (see
    /// `membership.rs`).
    pub fenced: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub self_name: NodeName,
    pub cluster_id: String,
    pub vnodes: u32,
    pub members: BTreeMap<NodeName, MemberView>,
    /// Placement now: reads, quorums, hints and repair use it.
    pub table: PartitionTable,
    /// Placement once the members that are joining or leaving are done,
    /// while it differs from `table`. Writes also go to its replicas, so
    /// that a partition's new owners miss nothing while they pull it.
    pub pending: Option<PartitionTable>,
    /// Node ids gossip names but no certificate has proven: listed, never
    /// placed (see `proofs.rs`).
    pub unproven: Vec<NodeName>,
    /// Members of this node's last ring that it has neither believed nor
    /// fenced since it started ([`Missing`]): no dead entry is purged while
    /// there are any.
    pub missing: Vec<NodeName>,
    /// This node's fences, as its member file keeps them (see
    /// `membership.rs`).
    pub fences: Vec<String>,
}

/// What gossip says about one member, before ring rules are applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gossiped {
    pub addr: SocketAddr,
    pub status: MemberStatus,
    /// The join it gossips (0 if it began none since it started).
    pub join: u64,
    pub live: bool,
    /// How long it has been dead, as this node observed it while it saw a
    /// live majority ([`DeadClocks`]).
    pub dead_for: Option<Duration>,
    pub epoch: Epoch,
    /// This node removed it from the ring and it has not rejoined since.
    pub fenced: bool,
}

impl Gossiped {
    /// A live member serving at `addr`, in no join, fenced by nobody: what
    /// a standalone node is to itself.
    pub(crate) fn serving(addr: SocketAddr) -> Gossiped {
        Gossiped {
            addr,
            status: MemberStatus::Serving,
            join: 0,
            live: true,
            dead_for: None,
            epoch: Epoch::NONE,
            fenced: false,
        }
    }
}

/// The ring rules, as a pure function: a member is in the ring while it is
/// live, or dead for less than `dead_node_grace` (its writes meanwhile go to
/// stand-ins as hints); after that its partitions move to the others, but
/// only if the live members are a majority of the ring's: a node cut off
/// with a minority keeps everyone in its ring (so it purges no tombstone
/// without them), and the majority's view is the one that holds when the
/// partition heals. A fenced member is out of both rings and never up. Of
/// the rest, the current ring holds the members that serve or recover, and
/// leaving ones until they are done; the next ring swaps leaving members
/// for joining ones. A joining member stays in the next ring through the
/// same grace as the others: the purge horizon waits for it while it is
/// there, and once it drops out it is fenced (`membership.rs`).
pub(crate) fn build(
    self_name: &NodeName,
    cluster_id: &str,
    gossiped: BTreeMap<NodeName, Gossiped>,
    partitions: u16,
    replication: usize,
    vnodes: u32,
    dead_node_grace: Duration,
) -> Topology {
    let majority = live_majority(&gossiped);
    let members: BTreeMap<NodeName, MemberView> = gossiped
        .into_iter()
        .map(|(name, g)| {
            let around = g.live || g.dead_for.is_some_and(|d| d < dead_node_grace) || !majority;
            let in_ring = around && !g.fenced && g.status.in_current_ring();
            let in_next = around && !g.fenced && g.status.in_next_ring();
            let view = MemberView {
                addr: g.addr,
                status: g.status,
                live: g.live,
                in_ring,
                in_next,
                epoch: g.epoch,
                fenced: g.fenced,
            };
            (name, view)
        })
        .collect();
    let ring: Vec<NodeName> = members.iter().filter(|(_, m)| m.in_ring).map(|(n, _)| n.clone()).collect();
    let next: Vec<NodeName> = members.iter().filter(|(_, m)| m.in_next).map(|(n, _)| n.clone()).collect();
    let table = PartitionTable::build(&ring, partitions, replication, vnodes);
    let pending =
        (next != ring && !next.is_empty()).then(|| PartitionTable::build(&next, partitions, replication, vnodes));
    Topology {
        self_name: self_name.clone(),
        cluster_id: cluster_id.to_string(),
        vnodes,
        members,
        table,
        pending,
        unproven: Vec::new(),
        missing: Vec::new(),
        fences: Vec::new(),
    }
}

/// Whether the live members are a majority of the ring's voters: the
/// members of the current ring that this node has not fenced.
fn live_majority(gossiped: &BTreeMap<NodeName, Gossiped>) -> bool {
    majority_of_voters(gossiped.values().map(|g| (g.fenced, g.status, g.live)), 0)
}

/// Whether the live ones among `members` (fenced, status, live) are a
/// majority of the voters, counting `absent` more voters as dead.
fn majority_of_voters(members: impl Iterator<Item = (bool, MemberStatus, bool)>, absent: usize) -> bool {
    let voters = members.filter(|(fenced, status, _)| !fenced && status.in_current_ring());
    let (voters, live_voters) = voters.fold((0, 0), |(all, live), (_, _, up)| (all + 1, live + usize::from(up)));
    live_voters * 2 > voters + absent
}

/// How long each member has been dead, counted only while this node sees a
/// live majority. A node cut off with a minority learns nothing about who
/// is really dead: when it regains a majority, the members it has not heard
/// from yet (their datagrams may still be on the way) must not look dead for
/// the whole cut, or it would remove them at once and fence them, and they
/// would discard their data on seeing its fence. So the clocks stop, and
/// are reset, whenever the live majority is lost, and after a gap in this
/// node's own execution ([`DeadClocks::forget`]).
///
/// A member's clock also restarts when its gossiped status or join
/// changes: only a running member changes them, so the silence before does
/// not count against what it does now. A member resuming from a pause past
/// the grace is fenced, discards its data and begins a new join; a node
/// whose failure detector still calls it down when that `joining` arrives
/// (relayed by others) would otherwise count the whole pause against the
/// join and fence it at once, and it would discard and rejoin again, over
/// and over (the chaos suite's seed 1: a 24.5 s pause left n3 joining for
/// good). A join fenced in turn is followed by another join under the same
/// status, which deserves its own grace just the same.
#[derive(Debug, Default)]
pub(crate) struct DeadClocks {
    since: HashMap<NodeName, ((MemberStatus, u64), Instant)>,
}

impl DeadClocks {
    /// Sets `dead_for` of every member that is not live (the `live` flags
    /// must be set) from its clock, starting the clocks of the newly dead.
    pub(crate) fn stamp(&mut self, gossiped: &mut BTreeMap<NodeName, Gossiped>, now: Instant) {
        if !live_majority(gossiped) {
            self.since.clear();
        }
        self.since.retain(|name, (said, _)| gossiped.get(name).is_some_and(|g| !g.live && (g.status, g.join) == *said));
        for (name, g) in gossiped.iter_mut() {
            g.dead_for = (!g.live).then(|| now - self.since.entry(name.clone()).or_insert(((g.status, g.join), now)).1);
        }
    }

    /// Restarts every clock: this node did not observe the time that passed.
    pub(crate) fn forget(&mut self) {
        self.since.clear();
    }
}

/// The members of this node's last ring, as its member file remembers
/// them, that it has neither believed nor fenced since it started. A node
/// that restarts while another member is paused or cut off cannot prove that
/// member, so it neither places it nor, when it stays away, removes and
/// fences it: the restarted node would purge tombstones the member never
/// saw and take it back, stale, when it returns (simulator seed 830: a
/// member paused through both graces came back serving deleted keys). So
/// while any is missing nothing dead is purged ([`Topology::missing`]), and
/// one missing for longer than `dead_node_grace`, counted as a dead voter
/// like a member that died, is fenced.
///
/// Only while this node holds a place in the ring do those clocks run. A
/// node that discarded its data to join anew holds nothing a stale member
/// could outlive, and knows the least of anyone: the others adopt its
/// fences, and a fence of a member it was merely slow to prove would make
/// that member discard good data and rejoin. Once it serves, its clocks
/// start; until then its missing still hold its purges back.
#[derive(Debug, Default)]
pub(crate) struct Missing {
    /// Since when each has been missing while this node saw a live majority.
    since: BTreeMap<NodeName, Option<Instant>>,
}

impl Missing {
    pub(crate) fn new(self_name: &NodeName, remembered: &[NodeName]) -> Missing {
        let since = remembered.iter().filter(|n| *n != self_name).map(|n| (n.clone(), None)).collect();
        Missing { since }
    }

    /// Drops the members now believed (`topology` lists them) or fenced,
    /// runs the clocks of the rest while this node is in the current ring
    /// and the live members are a majority of the voters and the missing
    /// together, and takes out and returns those missing for longer than
    /// `grace`, for the caller to fence.
    pub(crate) fn overdue(
        &mut self,
        topology: &Topology,
        fenced: impl Fn(&NodeName) -> bool,
        now: Instant,
        grace: Duration,
    ) -> Vec<NodeName> {
        self.since.retain(|name, _| !topology.members.contains_key(name) && !fenced(name));
        let members = topology.members.values().map(|m| (m.fenced, m.status, m.live));
        let placed = topology.members.get(&topology.self_name).is_some_and(|m| m.status.in_current_ring());
        let counting = placed && majority_of_voters(members, self.since.len());
        let mut due = Vec::new();
        for (name, since) in &mut self.since {
            if !counting {
                *since = None;
            } else if now - *since.get_or_insert(now) > grace {
                due.push(name.clone());
            }
        }
        self.since.retain(|name, _| !due.contains(name));
        due
    }

    /// Restarts every clock: this node did not observe the time that passed.
    pub(crate) fn forget(&mut self) {
        self.since.values_mut().for_each(|since| *since = None);
    }

    pub(crate) fn names(&self) -> Vec<NodeName> {
        self.since.keys().cloned().collect()
    }
}

impl Topology {
    /// Whether the live members are a majority of the current ring's
    /// voters, counting missing members as dead ones.
    pub(crate) fn live_majority(&self) -> bool {
        self.majority_where(|name| self.members.get(name).is_some_and(|m| m.live))
    }

    /// Whether the members `up` says of are a majority of the current
    /// ring's voters, counting missing members as dead ones.
    pub(crate) fn majority_where(&self, up: impl Fn(&NodeName) -> bool) -> bool {
        majority_of_voters(self.members.iter().map(|(n, m)| (m.fenced, m.status, up(n))), self.missing.len())
    }

    /// A node may be sent requests: live and serving.
    pub fn is_up(&self, node: &str) -> bool {
        self.members.get(node).is_some_and(|m| m.live && !m.fenced && m.status.serves())
    }

    /// A node takes writes for the partitions it is gaining.
    pub fn takes_writes(&self, node: &str) -> bool {
        self.members
            .get(node)
            .is_some_and(|m| m.live && !m.fenced && (m.status.serves() || m.status == MemberStatus::Joining))
    }

    /// Nodes that will replicate the partition once rebalancing is done
    /// but do not now.
    pub fn gaining(&self, partition: PartitionId) -> Vec<NodeName> {
        let Some(pending) = &self.pending else { return Vec::new() };
        let now = self.replicas(partition);
        pending.replicas(partition).iter().filter(|n| !now.contains(n)).cloned().collect()
    }

    /// Whether `addr` is the address of a member this node fenced.
    pub fn fences(&self, addr: SocketAddr) -> bool {
        self.members.values().any(|m| m.fenced && m.addr == addr)
    }

    pub fn addr(&self, node: &str) -> Option<SocketAddr> {
        self.members.get(node).map(|m| m.addr)
    }

    pub fn is_self(&self, node: &str) -> bool {
        *self.self_name == *node
    }

    pub fn owned_by_self(&self) -> usize {
        self.table.owned_by(&self.self_name).count()
    }

    pub fn replicas(&self, partition: PartitionId) -> &[NodeName] {
        self.table.replicas(partition)
    }

    /// Whether two views place data identically and agree on who is up.
    pub fn same_as(&self, other: &Topology) -> bool {
        self.members == other.members
            && self.unproven == other.unproven
            && self.missing == other.missing
            && self.fences == other.fences
    }

    pub fn to_wire(&self) -> Members {
        Members {
            cluster_id: self.cluster_id.clone(),
            partitions: self.table.partitions(),
            replication: self.table.replication() as u8,
            vnodes: self.vnodes,
            members: self
                .members
                .iter()
                .map(|(name, m)| MemberInfo {
                    node_id: name.to_string(),
                    addr: m.addr,
                    status: m.status,
                    live: m.live,
                    in_ring: m.in_ring,
                })
                .collect(),
        }
    }
}

/// A topology of `members`, `(name, status, live)`, as `self_name` sees
/// it: replication 3 over 8 partitions, 16 virtual nodes each, the dead
/// ones dead for a second. For the tests of the rules that work from one.
#[cfg(test)]
pub(crate) fn sketch(self_name: &str, members: &[(&str, MemberStatus, bool)]) -> Topology {
    let gossiped: BTreeMap<NodeName, Gossiped> = members
        .iter()
        .enumerate()
        .map(|(i, (name, status, live))| {
            let g = Gossiped {
                addr: SocketAddr::from(([127, 0, 0, 1], 7400 + i as u16)),
                status: *status,
                join: 0,
                live: *live,
                dead_for: (!live).then_some(Duration::from_secs(1)),
                epoch: Epoch::NONE,
                fenced: false,
            };
            (NodeName::from(*name), g)
        })
        .collect();
    build(&NodeName::from(self_name), "sketch", gossiped, 8, 3, 16, Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16, live: bool, dead_for: Option<u64>) -> Gossiped {
        Gossiped {
            live,
            dead_for: dead_for.map(Duration::from_secs),
            ..Gossiped::serving(SocketAddr::from(([127, 0, 0, 1], port)))
        }
    }

    #[test]
    fn dead_members_stay_in_the_ring_for_the_grace_period() {
        let mut gossiped = BTreeMap::new();
        gossiped.insert(NodeName::from("a"), member(1, true, None));
        gossiped.insert(NodeName::from("b"), member(2, false, Some(10)));
        gossiped.insert(NodeName::from("c"), member(3, false, Some(100)));
        gossiped.insert(NodeName::from("d"), member(4, true, None));
        gossiped.insert(NodeName::from("e"), member(5, true, None));
        let t = build(&"a".into(), "x", gossiped, 16, 3, 8, Duration::from_secs(60));
        let ring: Vec<&str> = t.table.members().iter().map(|n| &**n).collect();
        assert_eq!(ring, ["a", "b", "d", "e"]);
        assert!(t.is_up("a") && !t.is_up("b") && !t.is_up("c"));
        let wire = t.to_wire();
        assert_eq!(wire.members.len(), 5);
        assert!(!wire.members[2].in_ring);
    }

    #[test]
    fn only_a_majority_removes_dead_members() {
        let mut gossiped = BTreeMap::new();
        gossiped.insert(NodeName::from("a"), member(1, true, None));
        gossiped.insert(NodeName::from("b"), member(2, false, Some(100)));
        gossiped.insert(NodeName::from("c"), member(3, false, Some(100)));
        let t = build(&"a".into(), "x", gossiped.clone(), 16, 3, 8, Duration::from_secs(60));
        assert_eq!(t.table.members().len(), 3, "one live member of three keeps the others");
        assert!(t.is_up("a") && !t.is_up("b") && !t.is_up("c"));

        gossiped.get_mut("b").unwrap().live = true;
        gossiped.get_mut("b").unwrap().dead_for = None;
        let t = build(&"a".into(), "x", gossiped, 16, 3, 8, Duration::from_secs(60));
        let ring: Vec<&str> = t.table.members().iter().map(|n| &**n).collect();
        assert_eq!(ring, ["a", "b"], "two of three remove the third");
        assert_eq!(t.table.replication(), 2, "N is clamped to the ring size");
    }

    #[test]
    fn a_live_majority_is_of_the_ring_voters_and_missing_members_count_as_dead() {
        use MemberStatus::{Joining, Serving};
        assert!(sketch("n1", &[("n1", Serving, true)]).live_majority());
        assert!(!sketch("n1", &[("n1", Serving, true), ("n2", Serving, false)]).live_majority());
        let mut three = sketch("n1", &[("n1", Serving, true), ("n2", Serving, true), ("n3", Serving, false)]);
        assert!(three.live_majority());
        // A member of the last ring not heard from since the restart.
        three.missing = vec![NodeName::from("n4")];
        assert!(!three.live_majority());
        // A joiner is no voter: live, it makes no majority.
        let joined = sketch("n1", &[("n1", Serving, true), ("n2", Serving, false), ("n3", Joining, true)]);
        assert!(!joined.live_majority());
    }

    #[test]
    fn dead_clocks_run_only_while_a_live_majority_is_seen() {
        let grace = Duration::from_secs(60);
        let start = Instant::now();
        let mut clocks = DeadClocks::default();
        let mut gossiped = BTreeMap::new();
        gossiped.insert(NodeName::from("a"), member(1, true, None));
        gossiped.insert(NodeName::from("b"), member(2, false, None));
        gossiped.insert(NodeName::from("c"), member(3, false, None));
        // Cut off alone for longer than the grace: a minority counts nothing.
        for s in [0, 30, 90] {
            clocks.stamp(&mut gossiped, start + Duration::from_secs(s));
        }
        assert_eq!(gossiped["b"].dead_for, Some(Duration::ZERO));
        // The cut heals and b is heard before c: c's clock starts now, so
        // a does not remove c for the time it was cut off itself.
        gossiped.get_mut("b").unwrap().live = true;
        clocks.stamp(&mut gossiped, start + Duration::from_secs(91));
        assert_eq!(gossiped["b"].dead_for, None);
        assert_eq!(gossiped["c"].dead_for, Some(Duration::from_secs(1)));
        let t = build(&"a".into(), "x", gossiped.clone(), 16, 3, 8, grace);
        assert_eq!(t.table.members().len(), 3, "c is not removed on regaining a majority");
        // With the majority, c's death counts, and outlasts the grace.
        clocks.stamp(&mut gossiped, start + Duration::from_secs(152));
        assert_eq!(gossiped["c"].dead_for, Some(Duration::from_secs(62)));
        let t = build(&"a".into(), "x", gossiped.clone(), 16, 3, 8, grace);
        assert_eq!(t.table.members().len(), 2, "c is removed a grace after the majority saw it dead");
        // A gap in this node's execution restarts the clocks.
        clocks.forget();
        clocks.stamp(&mut gossiped, start + Duration::from_secs(300));
        assert_eq!(gossiped["c"].dead_for, Some(Duration::ZERO));
        // A member heard again has no clock.
        gossiped.get_mut("c").unwrap().live = true;
        clocks.stamp(&mut gossiped, start + Duration::from_secs(301));
        gossiped.get_mut("c").unwrap().live = false;
        clocks.stamp(&mut gossiped, start + Duration::from_secs(302));
        assert_eq!(gossiped["c"].dead_for, Some(Duration::ZERO));
        // Nor does one whose status changed while it still looks down: it
        // ran to change it.
        clocks.stamp(&mut gossiped, start + Duration::from_secs(400));
        assert_eq!(gossiped["c"].dead_for, Some(Duration::from_secs(98)));
        gossiped.get_mut("c").unwrap().status = MemberStatus::Joining;
        clocks.stamp(&mut gossiped, start + Duration::from_secs(401));
        assert_eq!(gossiped["c"].dead_for, Some(Duration::ZERO), "a new status restarts the clock");
        clocks.stamp(&mut gossiped, start + Duration::from_secs(420));
        gossiped.get_mut("c").unwrap().join = 9;
        clocks.stamp(&mut gossiped, start + Duration::from_secs(421));
        assert_eq!(gossiped["c"].dead_for, Some(Duration::ZERO), "so does a new join under the same status");
    }

    #[test]
    fn a_member_of_the_last_ring_missing_for_the_grace_under_a_majority_is_due_for_a_fence() {
        let grace = Duration::from_secs(60);
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let names = |list: &[&str]| list.iter().map(|n| NodeName::from(*n)).collect::<Vec<_>>();
        let mut missing = Missing::new(&"a".into(), &names(&["a", "b", "c"]));
        assert_eq!(missing.names(), names(&["b", "c"]), "itself is never missing");
        let mut gossiped = BTreeMap::new();
        gossiped.insert(NodeName::from("a"), member(1, true, None));
        // Alone, with both others missing: one live of three, no clock runs.
        let alone = build(&"a".into(), "x", gossiped.clone(), 16, 3, 8, grace);
        assert!(missing.overdue(&alone, |_| false, at(0), grace).is_empty());
        assert!(missing.overdue(&alone, |_| false, at(300), grace).is_empty(), "a minority fences nothing");
        // c is proven: it leaves the missing, and two of three run b's clock.
        gossiped.insert(NodeName::from("c"), member(3, true, None));
        let with_c = build(&"a".into(), "x", gossiped.clone(), 16, 3, 8, grace);
        assert!(missing.overdue(&with_c, |_| false, at(301), grace).is_empty());
        assert_eq!(missing.names(), names(&["b"]));
        assert!(missing.overdue(&with_c, |_| false, at(361), grace).is_empty(), "not longer than the grace yet");
        // A gap in this node's execution restarts the clock.
        missing.forget();
        assert!(missing.overdue(&with_c, |_| false, at(400), grace).is_empty());
        assert!(missing.overdue(&with_c, |_| false, at(460), grace).is_empty());
        assert_eq!(missing.overdue(&with_c, |_| false, at(461), grace), names(&["b"]));
        assert!(missing.names().is_empty(), "handed over to be fenced");

        // A node joining anew runs no clock: it fences nobody until it serves.
        let mut missing = Missing::new(&"a".into(), &names(&["b"]));
        gossiped.get_mut("a").unwrap().status = MemberStatus::Joining;
        let joining = build(&"a".into(), "x", gossiped.clone(), 16, 3, 8, grace);
        assert!(missing.overdue(&joining, |_| false, at(0), grace).is_empty());
        assert!(missing.overdue(&joining, |_| false, at(300), grace).is_empty(), "not while joining");
        assert_eq!(missing.names(), names(&["b"]), "still missing: its purges wait");
        gossiped.get_mut("a").unwrap().status = MemberStatus::Serving;
        let serving = build(&"a".into(), "x", gossiped.clone(), 16, 3, 8, grace);
        assert!(missing.overdue(&serving, |_| false, at(301), grace).is_empty(), "the clock starts as it serves");
        assert_eq!(missing.overdue(&serving, |_| false, at(362), grace), names(&["b"]));

        // One the caller fenced otherwise, or that is proven, is missing no more.
        let mut missing = Missing::new(&"a".into(), &names(&["b", "d"]));
        assert!(missing.overdue(&with_c, |n| **n == *"d", at(0), grace).is_empty());
        assert_eq!(missing.names(), names(&["b"]));
    }

    #[test]
    fn a_fenced_member_is_in_no_ring_and_never_up() {
        let mut gossiped = BTreeMap::new();
        gossiped.insert(NodeName::from("a"), member(1, true, None));
        gossiped.insert(NodeName::from("b"), member(2, true, None));
        gossiped.insert(NodeName::from("c"), Gossiped { fenced: true, ..member(3, true, None) });
        let t = build(&"a".into(), "x", gossiped, 16, 3, 8, Duration::from_secs(60));
        assert_eq!(t.table.members().len(), 2);
        assert!(t.pending.is_none(), "nor is it in the next ring");
        assert!(!t.is_up("c") && !t.takes_writes("c"));
        assert!(t.fences(SocketAddr::from(([127, 0, 0, 1], 3))));
        assert!(!t.fences(SocketAddr::from(([127, 0, 0, 1], 2))));
    }

    #[test]
    fn joining_members_are_only_in_the_next_ring() {
        let mut gossiped = BTreeMap::new();
        gossiped.insert(NodeName::from("a"), member(1, true, None));
        gossiped.insert(NodeName::from("b"), Gossiped { status: MemberStatus::Joining, ..member(2, true, None) });
        let t = build(&"a".into(), "x", gossiped, 64, 3, 8, Duration::from_secs(60));
        assert_eq!(t.table.members().len(), 1);
        assert!(!t.is_up("b") && t.takes_writes("b"));
        let pending = t.pending.as_ref().expect("a join is pending");
        assert_eq!(pending.members().len(), 2);
        assert!((0..64).all(|p| t.gaining(PartitionId(p)) == [NodeName::from("b")]));
    }

    #[test]
    fn a_dead_joiner_stays_in_the_next_ring_through_the_grace_only() {
        let grace = Duration::from_secs(60);
        let joiner = |dead_for: u64| Gossiped { status: MemberStatus::Joining, ..member(4, false, Some(dead_for)) };
        let mut gossiped = BTreeMap::new();
        for (name, port) in [("a", 1), ("b", 2), ("c", 3)] {
            gossiped.insert(NodeName::from(name), member(port, true, None));
        }
        gossiped.insert(NodeName::from("d"), joiner(59));
        let t = build(&"a".into(), "x", gossiped.clone(), 64, 3, 8, grace);
        assert!(t.members["d"].in_next && !t.takes_writes("d"));
        let pending = t.pending.as_ref().expect("the purge horizon still waits for the joiner");
        assert!(pending.members().contains(&NodeName::from("d")));

        gossiped.insert(NodeName::from("d"), joiner(61));
        let t = build(&"a".into(), "x", gossiped.clone(), 64, 3, 8, grace);
        assert!(!t.members["d"].in_next);
        assert!(t.pending.is_none(), "past the grace the join is dropped (and fenced by membership)");

        // Cut off with a minority, a node keeps the joiner as it keeps
        // every other member.
        for name in ["b", "c"] {
            gossiped.insert(NodeName::from(name), member(2, false, Some(61)));
        }
        let t = build(&"a".into(), "x", gossiped, 64, 3, 8, grace);
        assert!(t.members["d"].in_next);
    }

    #[test]
    fn leaving_members_serve_until_they_are_done() {
        let mut gossiped = BTreeMap::new();
        for (name, port) in [("a", 1), ("b", 2), ("c", 3)] {
            gossiped.insert(NodeName::from(name), member(port, true, None));
        }
        gossiped.insert(NodeName::from("d"), Gossiped { status: MemberStatus::Leaving, ..member(4, true, None) });
        let t = build(&"a".into(), "x", gossiped.clone(), 64, 3, 8, Duration::from_secs(60));
        assert_eq!(t.table.members().len(), 4);
        assert!(t.is_up("d"));
        let pending = t.pending.as_ref().expect("a leave is pending");
        assert!(!pending.members().contains(&NodeName::from("d")));
        let gained: usize = (0..64).map(|p| t.gaining(PartitionId(p)).len()).sum();
        let held_by_d = t.table.owned_by("d").count();
        assert_eq!(gained, held_by_d, "every partition d held gains exactly one new replica");

        gossiped.get_mut("d").unwrap().status = MemberStatus::Left;
        let t = build(&"a".into(), "x", gossiped, 64, 3, 8, Duration::from_secs(60));
        assert_eq!(t.table.members().len(), 3);
        assert!(t.pending.is_none());
    }
}
