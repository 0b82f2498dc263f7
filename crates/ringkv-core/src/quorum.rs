//! Quorum bookkeeping for one request, without I/O.
//!
//! The coordinator feeds replica answers in as they arrive and asks whether
//! the request has succeeded, failed, or must keep waiting; read resolution
//! picks the newest answer and names the replicas that need repair.

use crate::{Entry, KvError, ReplicaFailure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Pending,
    Succeeded,
    /// Too many replicas failed for the quorum to still be reachable.
    Failed,
}

#[derive(Debug, Clone)]
pub struct QuorumTracker {
    operation: &'static str,
    needed: usize,
    replicas: usize,
    answered: Vec<String>,
    failed: Vec<ReplicaFailure>,
}

impl QuorumTracker {
    pub fn new(operation: &'static str, needed: usize, replicas: usize) -> QuorumTracker {
        QuorumTracker { operation, needed, replicas, answered: Vec::new(), failed: Vec::new() }
    }

    pub fn ok(&mut self, node: &str) -> Progress {
        self.answered.push(node.to_string());
        self.progress()
    }

    pub fn fail(&mut self, node: &str, reason: impl Into<String>) -> Progress {
        self.failed.push(ReplicaFailure { node: node.to_string(), reason: reason.into() });
        self.progress()
    }

    pub fn progress(&self) -> Progress {
        if self.answered.len() >= self.needed {
            Progress::Succeeded
        } else if self.replicas - self.failed.len() < self.needed {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    pub fn answered(&self) -> &[String] {
        &self.answered
    }

    /// The error to report when the quorum was not reached; replicas that
    /// neither answered nor failed are reported as not answering in time.
    pub fn error(&self, pending_reason: &str, pending: impl IntoIterator<Item = String>) -> KvError {
        let mut failed = self.failed.clone();
        failed.extend(pending.into_iter().map(|node| ReplicaFailure { node, reason: pending_reason.to_string() }));
        KvError::Quorum {
            operation: self.operation.to_string(),
            needed: self.needed,
            replicas: self.replicas,
            acked: self.answered.len(),
            answered: self.answered.clone(),
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
        assert_eq!(q.ok("a"), Progress::Pending);
        assert_eq!(q.fail("b", "down"), Progress::Pending);
        assert_eq!(q.ok("c"), Progress::Succeeded);

        let mut q = QuorumTracker::new("put", 2, 3);
        assert_eq!(q.fail("a", "down"), Progress::Pending);
        assert_eq!(q.fail("b", "timeout"), Progress::Failed);
        match q.error("no answer", ["c".to_string()]) {
            KvError::Quorum { needed, acked, failed, .. } => {
                assert_eq!((needed, acked), (2, 0));
                let nodes: Vec<_> = failed.iter().map(|f| f.node.as_str()).collect();
                assert_eq!(nodes, ["a", "b", "c"]);
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
