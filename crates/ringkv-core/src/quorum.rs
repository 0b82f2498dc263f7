//! Quorum bookkeeping for one request, without I/O.
//!
//! The coordinator feeds replica answers in as they arrive and asks whether
//! the request has succeeded, failed, or must keep waiting; read resolution
//! picks the newest answer and names the replicas that need repair.

use crate::ring::NodeName;
use crate::{Entry, KvError, ReplicaFailure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Pending,
    Succeeded,
    /// Too many replicas failed for the quorum to still be reachable.
    Failed,
}

/// Counts the answers of a request's replicas, which the caller numbers by
/// their place in its list of them. Nothing is allocated until a replica
/// fails: the common path of a request is a handful of answers, and this
/// runs once per client request.
#[derive(Debug, Clone)]
pub struct QuorumTracker {
    operation: &'static str,
    needed: usize,
    replicas: usize,
    /// Bit `i` set: replica `i` answered.
    answered: u64,
    failed: Vec<(usize, String)>,
}

impl QuorumTracker {
    /// The most replicas one request can count (a request asks at most the
    /// replication factor's replicas, which configuration caps far lower).
    pub const MAX_REPLICAS: usize = 64;

    pub fn new(operation: &'static str, needed: usize, replicas: usize) -> QuorumTracker {
        assert!(replicas <= Self::MAX_REPLICAS, "{replicas} replicas, at most {} are counted", Self::MAX_REPLICAS);
        QuorumTracker { operation, needed, replicas, answered: 0, failed: Vec::new() }
    }

    /// Replica `i` answered.
    pub fn ok(&mut self, i: usize) -> Progress {
        self.answered |= 1 << i;
        self.progress()
    }

    /// Replica `i` failed.
    pub fn fail(&mut self, i: usize, reason: impl Into<String>) -> Progress {
        self.failed.push((i, reason.into()));
        self.progress()
    }

    pub fn progress(&self) -> Progress {
        if self.answered.count_ones() as usize >= self.needed {
            Progress::Succeeded
        } else if self.replicas - self.failed.len() < self.needed {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    /// The error to report when the quorum was not reached, naming replica
    /// `i` as `names[i]`; replicas that neither answered nor failed are
    /// reported as failing for `pending_reason`.
    pub fn error(&self, names: &[NodeName], pending_reason: &str) -> KvError {
        let name = |i: usize| names.get(i).map_or_else(|| format!("replica {i}"), |n| n.to_string());
        let answered: Vec<String> = (0..self.replicas).filter(|i| self.answered & (1 << i) != 0).map(name).collect();
        let mut failed: Vec<ReplicaFailure> =
            self.failed.iter().map(|(i, reason)| ReplicaFailure { node: name(*i), reason: reason.clone() }).collect();
        failed.extend(
            (0..self.replicas)
                .filter(|i| self.answered & (1 << i) == 0 && !self.failed.iter().any(|(f, _)| f == i))
                .map(|i| ReplicaFailure { node: name(i), reason: pending_reason.to_string() }),
        );
        KvError::Quorum {
            operation: self.operation.to_string(),
            needed: self.needed,
            replicas: self.replicas,
            acked: answered.len(),
            answered,
            failed,
        }
    }
}

/// The outcome of a read across replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResolution {
    /// The newest entry any replica holds (it may be a tombstone), or none.
    pub newest: Option<Entry>,
    /// Replicas that answered with something older or nothing, and should be
    /// sent `newest`.
    pub stale: Vec<String>,
}

/// Picks the last-writer-wins winner among replica answers.
pub fn resolve_read(answers: &[(String, Option<Entry>)]) -> ReadResolution {
    let newest = answers.iter().filter_map(|(_, e)| e.clone()).reduce(Entry::merge);
    let stale = match &newest {
        None => Vec::new(),
        Some(winner) => {
            answers.iter().filter(|(_, e)| e.as_ref() != Some(winner)).map(|(node, _)| node.clone()).collect()
        }
    };
    ReadResolution { newest, stale }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeTag, Timestamp, Version};
    use bytes::Bytes;

    #[test]
    fn succeeds_at_quorum_and_fails_when_unreachable() {
        let mut q = QuorumTracker::new("put", 2, 3);
        assert_eq!(q.ok(0), Progress::Pending);
        assert_eq!(q.fail(1, "down"), Progress::Pending);
        assert_eq!(q.ok(2), Progress::Succeeded);

        let names: Vec<NodeName> = ["a", "b", "c"].into_iter().map(NodeName::from).collect();
        let mut q = QuorumTracker::new("put", 2, 3);
        assert_eq!(q.fail(1, "down"), Progress::Pending);
        assert_eq!(q.fail(0, "timeout"), Progress::Failed);
        match q.error(&names, "no answer") {
            KvError::Quorum { needed, acked, answered, failed, .. } => {
                assert_eq!((needed, acked), (2, 0));
                assert!(answered.is_empty());
                let failed: Vec<_> = failed.iter().map(|f| (f.node.as_str(), f.reason.as_str())).collect();
                assert_eq!(failed, [("b", "down"), ("a", "timeout"), ("c", "no answer")]);
            }
            other => panic!("unexpected {other:?}"),
        }

        let mut q = QuorumTracker::new("put", 3, 3);
        q.ok(2);
        assert_eq!(q.fail(0, "down"), Progress::Failed);
        match q.error(&names, "no answer") {
            KvError::Quorum { acked, answered, failed, .. } => {
                assert_eq!((acked, answered), (1, vec!["c".to_string()]));
                let nodes: Vec<_> = failed.iter().map(|f| f.node.as_str()).collect();
                assert_eq!(nodes, ["a", "b"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn read_picks_newest_and_names_stale_replicas() {
        let v = |ts| Version::new(Timestamp(ts), NodeTag(0));
        let old = Entry::value(v(1), Bytes::from_static(b"old"), None);
        let new = Entry::value(v(2), Bytes::from_static(b"new"), None);
        let answers = vec![("a".to_string(), Some(old)), ("b".to_string(), Some(new.clone())), ("c".to_string(), None)];
        let r = resolve_read(&answers);
        assert_eq!(r.newest, Some(new));
        assert_eq!(r.stale, ["a", "c"]);
        assert_eq!(resolve_read(&[("a".to_string(), None)]), ReadResolution { newest: None, stale: vec![] });
    }
}
