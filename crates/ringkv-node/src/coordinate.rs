//! What a coordinator decides for one client request, as plain state
//! machines: whom to ask, when enough replicas have answered, what the
//! client is told, and what is left to do for the replicas that missed a
//! write or answered a read with something stale.
//!
//! A plan is drawn from one topology; a round takes the replicas' answers
//! in whatever order they arrive and returns actions. Nothing here sends,
//! spawns or waits: `ops.rs` makes the calls and feeds their results to a
//! round through its one driver (`fan_out`), so the rules are tested here
//! with made-up answers, without a network.

use ringkv_core::quorum::{Progress, QuorumTracker, resolve_read};
use ringkv_core::ring::{NodeName, WriteTarget};
use ringkv_core::{Consistency, Entry, KvError, PartitionId, ReplicaFailure};
use ringkv_net::wire::Reply;

use crate::topology::Topology;

/// Replica answers, fed to a round as they arrive: `i` is the replica's
/// place in the round's list.
pub(crate) trait Round {
    fn answer(&mut self, i: usize, result: Result<Reply, KvError>) -> Progress;

    /// What the answers so far leave the caller to do, each action once.
    fn actions(&mut self) -> Vec<Action> {
        Vec::new()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Keep the write as a hint for this replica: it did not take it, and
    /// gets it when it can.
    KeepHint(NodeName),
}

/// The error of a request that cannot reach its quorum with the replicas
/// up now: no replica was asked, and the down ones are named.
pub(crate) fn unavailable(operation: &str, topo: &Topology, partition: PartitionId, needed: usize) -> KvError {
    let replicas = topo.replicas(partition);
    KvError::Quorum {
        operation: operation.to_string(),
        needed,
        replicas: replicas.len(),
        acked: 0,
        answered: Vec::new(),
        failed: replicas
            .iter()
            .filter(|n| !topo.is_up(n))
            .map(|n| ReplicaFailure { node: n.to_string(), reason: "down".into() })
            .collect(),
    }
}

/// Where a write goes, drawn from one topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WritePlan {
    /// Up replicas, and stand-ins for down ones; their answers count.
    pub targets: Vec<WriteTarget>,
    pub needed: usize,
    /// Down replicas that no stand-in covers: the coordinator keeps their
    /// hints itself. Such a hint does not count towards the quorum.
    pub hints: Vec<NodeName>,
    /// Nodes gaining the partition while they pull it: they take every
    /// write, but their answers do not count (anti-entropy covers a miss).
    pub gainers: Vec<NodeName>,
}

pub(crate) fn plan_write(
    operation: &str,
    topo: &Topology,
    partition: PartitionId,
    consistency: Consistency,
    write_quorum: usize,
) -> Result<WritePlan, KvError> {
    let targets = topo.table.write_targets(partition, |n| topo.is_up(n));
    let needed = consistency.required(topo.table.replication(), write_quorum);
    if targets.len() < needed || targets.is_empty() {
        return Err(unavailable(operation, topo, partition, needed.max(1)));
    }
    let hints = topo
        .replicas(partition)
        .iter()
        .filter(|replica| {
            let covered = targets.iter().any(|t| t.hint_for.as_ref() == Some(*replica));
            !topo.is_up(replica) && !covered && !topo.is_self(replica)
        })
        .cloned()
        .collect();
    let gainers = topo
        .gaining(partition)
        .into_iter()
        // A stand-in keeps the write only as a hint for the replica it
        // covers: gaining the partition too, it needs its own copy, or a
        // leaver that already handed that partition off takes the only one
        // with it, and the hint can expire before its replica is back
        // (simulator seed 1808).
        .filter(|gainer| {
            topo.takes_writes(gainer) && !targets.iter().any(|t| t.node == *gainer && t.hint_for.is_none())
        })
        .collect();
    Ok(WritePlan { targets, needed, hints, gainers })
}

/// What a write tells its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Done {
        /// Some replica held a live value before (a delete's answer).
        was_live: bool,
    },
    /// A conditional write found something newer on some replica.
    Conflict,
}

/// The answers of a write's targets. A target that fails is kept a hint
/// for (so it catches up when it can), also after the round is decided:
/// whatever answers late still counts for that.
#[derive(Debug)]
pub(crate) struct WriteRound {
    tracker: QuorumTracker,
    targets: Vec<WriteTarget>,
    /// Whether a failed call to target `i` leaves a hint: not for a
    /// stand-in (its preferred replica's hint is what it was holding) nor
    /// for this node itself (the write did not fail in transit).
    hinted: Vec<bool>,
    was_live: bool,
    conflict: bool,
    out_of_memory: Option<KvError>,
    actions: Vec<Action>,
}

impl WriteRound {
    pub(crate) fn new(operation: &'static str, plan: &WritePlan, topo: &Topology) -> WriteRound {
        WriteRound {
            tracker: QuorumTracker::new(operation, plan.needed, plan.targets.len()),
            hinted: plan.targets.iter().map(|t| t.hint_for.is_none() && !topo.is_self(&t.node)).collect(),
            targets: plan.targets.clone(),
            was_live: false,
            conflict: false,
            out_of_memory: None,
            actions: Vec::new(),
        }
    }

    /// The client's answer, once the round is decided.
    pub(crate) fn outcome(&self) -> Result<Written, KvError> {
        if self.conflict {
            return Ok(Written::Conflict);
        }
        match self.tracker.progress() {
            Progress::Succeeded => Ok(Written::Done { was_live: self.was_live }),
            // A replica's memory refusal says more than a quorum count.
            _ => match &self.out_of_memory {
                Some(e) => Err(e.clone()),
                None => {
                    let names: Vec<NodeName> = self.targets.iter().map(|t| t.node.clone()).collect();
                    Err(self.tracker.error(&names, "no answer"))
                }
            },
        }
    }
}

impl Round for WriteRound {
    fn answer(&mut self, i: usize, result: Result<Reply, KvError>) -> Progress {
        match result {
            Ok(Reply::Applied { was_live }) => {
                self.was_live |= was_live;
                self.tracker.ok(i);
            }
            Ok(Reply::Conflict) => {
                self.conflict = true;
                self.tracker.fail(i, "a newer write is stored");
            }
            Ok(other) => {
                self.tracker.fail(i, format!("unexpected reply {other:?}"));
            }
            Err(e) => {
                // Safe even for a conditional write that lost its race: a
                // rewrite never outranks a newer write. Not for a replica
                // that refused it for memory: a hint's delivery is not
                // refused, so it would overrule the bound.
                let out_of_memory = matches!(e, KvError::OutOfMemory { .. });
                if self.hinted[i] && !out_of_memory {
                    self.actions.push(Action::KeepHint(self.targets[i].node.clone()));
                }
                self.tracker.fail(i, e.to_string());
                if out_of_memory {
                    self.out_of_memory = Some(e);
                }
            }
        }
        // A conflict decides: the client is told so whatever the count.
        if self.conflict { Progress::Failed } else { self.tracker.progress() }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}

/// The replicas a read asks: those up now, if they can make its quorum.
pub(crate) fn plan_read(
    operation: &str,
    topo: &Topology,
    partition: PartitionId,
    consistency: Consistency,
    read_quorum: usize,
) -> Result<Vec<NodeName>, KvError> {
    let replicas = topo.replicas(partition);
    let needed = consistency.required(replicas.len(), read_quorum).max(1);
    let up: Vec<NodeName> = replicas.iter().filter(|n| topo.is_up(n)).cloned().collect();
    if up.len() < needed {
        return Err(unavailable(operation, topo, partition, needed));
    }
    Ok(up)
}

/// The answers of a read-like request (a key's entry, a page of keys):
/// `accept` takes a reply that answers it, or hands back one that does not
/// (counted as a failure).
pub(crate) struct Gather<T> {
    tracker: QuorumTracker,
    asked: Vec<NodeName>,
    answers: Vec<(usize, T)>,
    accept: fn(Reply) -> Result<T, Reply>,
}

impl<T> Gather<T> {
    pub(crate) fn new(
        operation: &'static str,
        asked: Vec<NodeName>,
        needed: usize,
        accept: fn(Reply) -> Result<T, Reply>,
    ) -> Gather<T> {
        Gather {
            tracker: QuorumTracker::new(operation, needed, asked.len()),
            answers: Vec::with_capacity(asked.len()),
            asked,
            accept,
        }
    }

    /// Whether the round has succeeded; otherwise the quorum error. The
    /// answers stay in the round (`newest`, `into_answers`).
    pub(crate) fn outcome(&self) -> Result<(), KvError> {
        match self.tracker.progress() {
            Progress::Succeeded => Ok(()),
            _ => Err(self.tracker.error(&self.asked, "no answer")),
        }
    }

    pub(crate) fn into_answers(self) -> impl Iterator<Item = T> {
        self.answers.into_iter().map(|(_, a)| a)
    }
}

impl<T> Round for Gather<T> {
    fn answer(&mut self, i: usize, result: Result<Reply, KvError>) -> Progress {
        match result.map(self.accept) {
            Ok(Ok(answer)) => {
                self.answers.push((i, answer));
                self.tracker.ok(i)
            }
            Ok(Err(other)) => self.tracker.fail(i, format!("unexpected reply {other:?}")),
            Err(e) => self.tracker.fail(i, e.to_string()),
        }
    }
}

/// A key's read: its replicas' entries.
pub(crate) type ReadRound = Gather<Option<Entry>>;

pub(crate) fn read_round(asked: Vec<NodeName>, consistency: Consistency, read_quorum: usize) -> ReadRound {
    let needed = consistency.required(asked.len(), read_quorum).max(1);
    Gather::new("read", asked, needed, |reply| match reply {
        Reply::Entry(entry) => Ok(entry),
        other => Err(other),
    })
}

impl ReadRound {
    /// The newest entry of the answers so far (it may be a tombstone).
    pub(crate) fn newest(&self) -> Option<Entry> {
        self.answers.iter().filter_map(|(_, e)| e.clone()).reduce(Entry::merge)
    }

    /// Read repair, once every answer is in: the newest entry, and the
    /// replicas that answered with something older or nothing. A replica
    /// that did not answer is not repaired here; anti-entropy reaches it.
    pub(crate) fn repairs(&self) -> Option<(Entry, Vec<NodeName>)> {
        let answers: Vec<(String, Option<Entry>)> =
            self.answers.iter().map(|(i, e)| (self.asked[*i].to_string(), e.clone())).collect();
        let resolution = resolve_read(&answers);
        let newest = resolution.newest?;
        (!resolution.stale.is_empty()).then(|| (newest, resolution.stale.into_iter().map(NodeName::from).collect()))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ringkv_core::{NodeTag, Timestamp, Version};
    use ringkv_net::wire::MemberStatus;

    use super::*;

    const QUORUM: usize = 2;

    fn topology(members: &[(&str, MemberStatus, bool)]) -> Topology {
        crate::topology::sketch("n1", members)
    }

    fn serving(names: &[&str]) -> Topology {
        topology(&names.iter().map(|n| (*n, MemberStatus::Serving, true)).collect::<Vec<_>>())
    }

    /// Four members, `n4` down, and a write to a partition it replicates:
    /// some other member stands in for it.
    fn fourth_down() -> (Topology, WritePlan) {
        let topo = topology(&[
            ("n1", MemberStatus::Serving, true),
            ("n2", MemberStatus::Serving, true),
            ("n3", MemberStatus::Serving, true),
            ("n4", MemberStatus::Serving, false),
        ]);
        let partition = (0..8).map(PartitionId).find(|p| topo.replicas(*p).iter().any(|n| n.as_ref() == "n4")).unwrap();
        let plan = plan_write("put", &topo, partition, Consistency::Quorum, QUORUM).unwrap();
        (topo, plan)
    }

    fn names(nodes: &[NodeName]) -> Vec<&str> {
        nodes.iter().map(|n| n.as_ref()).collect()
    }

    fn entry(ts: u64, value: &'static [u8]) -> Entry {
        Entry::value(Version::new(Timestamp(ts), NodeTag(0)), Bytes::from_static(value), None)
    }

    fn timeout() -> KvError {
        KvError::Timeout { what: "replica".into(), ms: 500 }
    }

    #[test]
    fn a_write_with_every_replica_up_asks_them_all_and_keeps_no_hint() {
        let topo = serving(&["n1", "n2", "n3"]);
        let plan = plan_write("put", &topo, PartitionId(0), Consistency::Quorum, QUORUM).unwrap();
        assert_eq!(plan.targets.len(), 3);
        assert!(plan.targets.iter().all(|t| t.hint_for.is_none()));
        assert_eq!(plan.needed, 2);
        assert!(plan.hints.is_empty() && plan.gainers.is_empty());
    }

    #[test]
    fn a_down_replica_gets_a_stand_in_or_else_a_hint_from_the_coordinator() {
        let (_, plan) = fourth_down();
        let stand_in: Vec<_> = plan.targets.iter().filter(|t| t.hint_for.is_some()).collect();
        assert_eq!(stand_in.len(), 1, "{plan:?}");
        assert_eq!(stand_in[0].hint_for.as_deref(), Some("n4"));
        assert!(plan.hints.is_empty(), "a stand-in covers n4: {plan:?}");

        // Three members: nobody can stand in, so the coordinator keeps it.
        let topo = topology(&[
            ("n1", MemberStatus::Serving, true),
            ("n2", MemberStatus::Serving, true),
            ("n3", MemberStatus::Serving, false),
        ]);
        let plan = plan_write("put", &topo, PartitionId(0), Consistency::Quorum, QUORUM).unwrap();
        assert_eq!(names(&plan.targets.iter().map(|t| t.node.clone()).collect::<Vec<_>>()).len(), 2);
        assert_eq!(names(&plan.hints), ["n3"]);
        // At `all`, two targets cannot make three answers.
        match plan_write("put", &topo, PartitionId(0), Consistency::All, QUORUM) {
            Err(KvError::Quorum { needed: 3, acked: 0, failed, .. }) => {
                assert_eq!(failed, [ReplicaFailure { node: "n3".into(), reason: "down".into() }]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_joining_member_is_sent_the_writes_of_what_it_gains_without_counting() {
        let topo = topology(&[
            ("n1", MemberStatus::Serving, true),
            ("n2", MemberStatus::Serving, true),
            ("n3", MemberStatus::Serving, true),
            ("n4", MemberStatus::Joining, true),
        ]);
        let gained = (0..8).map(PartitionId).filter(|p| !topo.gaining(*p).is_empty()).collect::<Vec<_>>();
        assert!(!gained.is_empty());
        for p in gained {
            let plan = plan_write("put", &topo, p, Consistency::Quorum, QUORUM).unwrap();
            assert_eq!(names(&plan.gainers), ["n4"]);
            assert!(plan.targets.iter().all(|t| t.node.as_ref() != "n4"));
        }
    }

    #[test]
    fn a_gainer_that_stands_in_for_a_down_replica_still_gets_its_own_copy() {
        // n2 leaves while n1 and n3 are down: n4 gains n2's partitions and
        // is the only stand-in there is.
        let topo = topology(&[
            ("n1", MemberStatus::Serving, false),
            ("n2", MemberStatus::Leaving, true),
            ("n3", MemberStatus::Serving, false),
            ("n4", MemberStatus::Serving, true),
        ]);
        let mut checked = 0;
        for p in (0..8).map(PartitionId) {
            let plan = plan_write("put", &topo, p, Consistency::One, QUORUM).unwrap();
            let stands_in = plan.targets.iter().any(|t| t.node.as_ref() == "n4" && t.hint_for.is_some());
            if stands_in && topo.gaining(p).iter().any(|g| g.as_ref() == "n4") {
                assert_eq!(names(&plan.gainers), ["n4"], "{plan:?}");
                checked += 1;
            }
        }
        assert!(checked > 0, "no partition where n4 both stands in and gains");
    }

    #[test]
    fn a_write_succeeds_at_its_quorum_and_hints_whoever_fails_even_late() {
        let topo = serving(&["n1", "n2", "n3"]);
        let plan = plan_write("put", &topo, PartitionId(0), Consistency::Quorum, QUORUM).unwrap();
        let mut round = WriteRound::new("put", &plan, &topo);
        let (mine, others): (Vec<usize>, Vec<usize>) = (0..3).partition(|i| topo.is_self(&plan.targets[*i].node));
        assert_eq!(mine.len(), 1);
        // This node's own failure leaves no hint; a peer's does.
        assert_eq!(round.answer(mine[0], Err(timeout())), Progress::Pending);
        assert!(round.actions().is_empty());
        assert_eq!(round.answer(others[0], Ok(Reply::Applied { was_live: true })), Progress::Pending);
        assert_eq!(round.answer(others[1], Err(timeout())), Progress::Failed);
        assert_eq!(round.actions(), [Action::KeepHint(plan.targets[others[1]].node.clone())]);
        match round.outcome() {
            Err(KvError::Quorum { needed: 2, acked: 1, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }

        let mut round = WriteRound::new("put", &plan, &topo);
        round.answer(0, Ok(Reply::Applied { was_live: false }));
        assert_eq!(round.answer(1, Ok(Reply::Applied { was_live: true })), Progress::Succeeded);
        assert_eq!(round.outcome().unwrap(), Written::Done { was_live: true });
        // A late failure still leaves its hint, and does not undo the answer.
        let late = 2;
        round.answer(late, Err(timeout()));
        let hinted = round.actions();
        assert_eq!(hinted.len(), usize::from(!topo.is_self(&plan.targets[late].node)));
        assert_eq!(round.outcome().unwrap(), Written::Done { was_live: true });
    }

    #[test]
    fn a_stand_in_that_fails_leaves_no_hint_of_its_own() {
        let (topo, plan) = fourth_down();
        let stand_in = plan.targets.iter().position(|t| t.hint_for.is_some()).unwrap();
        let mut round = WriteRound::new("put", &plan, &topo);
        round.answer(stand_in, Err(timeout()));
        assert!(round.actions().is_empty());
    }

    #[test]
    fn a_memory_refusal_is_the_answer_and_leaves_no_hint() {
        let topo = serving(&["n1", "n2", "n3"]);
        let plan = plan_write("put", &topo, PartitionId(0), Consistency::All, QUORUM).unwrap();
        let peer = (0..3).find(|i| !topo.is_self(&plan.targets[*i].node)).unwrap();
        let mut round = WriteRound::new("put", &plan, &topo);
        let refusal = KvError::OutOfMemory { used: 10, needed: 4, limit: 8, policy: "noeviction".into() };
        assert_eq!(round.answer(peer, Err(refusal.clone())), Progress::Failed);
        assert!(round.actions().is_empty());
        assert_eq!(round.outcome().unwrap_err(), refusal);
    }

    #[test]
    fn a_conflict_decides_a_conditional_write() {
        let topo = serving(&["n1", "n2", "n3"]);
        let plan = plan_write("expire", &topo, PartitionId(0), Consistency::Quorum, QUORUM).unwrap();
        let mut round = WriteRound::new("expire", &plan, &topo);
        assert_eq!(round.answer(0, Ok(Reply::Conflict)), Progress::Failed);
        assert!(round.actions().is_empty());
        assert_eq!(round.outcome().unwrap(), Written::Conflict);
    }

    #[test]
    fn a_read_asks_the_replicas_up_and_repairs_the_stale_once_all_answered() {
        let topo = topology(&[
            ("n1", MemberStatus::Serving, true),
            ("n2", MemberStatus::Serving, true),
            ("n3", MemberStatus::Serving, false),
        ]);
        let asked = plan_read("read", &topo, PartitionId(0), Consistency::Quorum, QUORUM).unwrap();
        assert_eq!(names(&asked), ["n1", "n2"]);
        assert!(matches!(
            plan_read("read", &topo, PartitionId(0), Consistency::All, QUORUM),
            Err(KvError::Quorum { needed: 3, .. })
        ));

        let topo = serving(&["n1", "n2", "n3"]);
        let asked = plan_read("read", &topo, PartitionId(0), Consistency::Quorum, QUORUM).unwrap();
        let mut round = read_round(asked.clone(), Consistency::Quorum, QUORUM);
        assert_eq!(round.answer(0, Ok(Reply::Entry(Some(entry(1, b"old"))))), Progress::Pending);
        assert_eq!(round.answer(1, Ok(Reply::Entry(Some(entry(2, b"new"))))), Progress::Succeeded);
        assert_eq!(round.newest(), Some(entry(2, b"new")));
        round.outcome().unwrap();
        assert_eq!(round.answers.len(), 2);
        // The late answer has nothing: it is repaired with the first.
        round.answer(2, Ok(Reply::Entry(None)));
        let (newest, stale) = round.repairs().unwrap();
        assert_eq!(newest, entry(2, b"new"));
        assert_eq!(stale, [asked[0].clone(), asked[2].clone()]);
    }

    #[test]
    fn a_read_fails_when_too_few_replicas_answer_and_names_them() {
        let topo = serving(&["n1", "n2", "n3"]);
        let asked = plan_read("read", &topo, PartitionId(0), Consistency::Quorum, QUORUM).unwrap();
        let mut round = read_round(asked.clone(), Consistency::Quorum, QUORUM);
        assert_eq!(round.answer(0, Err(timeout())), Progress::Pending);
        assert_eq!(round.answer(2, Ok(Reply::Applied { was_live: false })), Progress::Failed);
        match round.outcome() {
            Err(KvError::Quorum { needed: 2, acked: 0, failed, .. }) => {
                let reasons: Vec<_> =
                    failed.iter().map(|f| (f.node.as_str(), f.reason.starts_with("unexpected"))).collect();
                assert_eq!(
                    reasons,
                    [(asked[0].as_ref(), false), (asked[2].as_ref(), true), (asked[1].as_ref(), false)]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Agreeing answers need no repair.
        let mut round = read_round(asked, Consistency::All, QUORUM);
        for i in 0..3 {
            round.answer(i, Ok(Reply::Entry(Some(entry(5, b"same")))));
        }
        assert_eq!(round.repairs(), None);
    }
}
