use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// One replica that did not contribute to a quorum, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFailure {
    pub node: String,
    pub reason: String,
}

/// The error of a store operation, as every implementation of [`crate::KvStore`]
/// reports it: the embedded node, the cluster coordinator and the remote
/// client. It is serializable because a node sends it to its clients as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    #[error("key is empty")]
    EmptyKey,
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("invalid ttl: {0}")]
    InvalidTtl(String),
    #[error("{what} is overloaded ({capacity} requests queued), retry later")]
    Busy { what: String, capacity: usize },
    #[error(
        "{operation} needed {needed} of {replicas} replicas, {acked} acknowledged ({answered:?}); failed: {}",
        fmt_failures(failed)
    )]
    Quorum {
        operation: String,
        needed: usize,
        replicas: usize,
        acked: usize,
        answered: Vec<String>,
        failed: Vec<ReplicaFailure>,
    },
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout { what: String, ms: u64 },
    /// The client had given up on the request before this node could start
    /// it (see [`crate::Deadline`]); nothing was applied.
    #[error("the request's deadline passed {late_ms} ms ago by this node's clock; not applied")]
    DeadlineExpired { late_ms: u64 },
    #[error("no node can serve the request: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    /// A replica refused a write stamped at or below the truncate epoch it
    /// has applied: the cluster was cleared after the coordinator stamped
    /// the write, so storing it would be dropping it while acknowledging it.
    #[error("the write is older than the cluster's last clear (truncate epoch {epoch}); retry it")]
    Cleared { epoch: Timestamp },
    /// The request needs a role the connection's certificate does not
    /// have (see ARCHITECTURE.md, *Roles on the QUIC port*); nothing was
    /// done. `needed` names the role, `presented` what the certificate is.
    #[error("{request} needs {needed}; this connection presented {presented}")]
    Forbidden { request: String, needed: String, presented: String },
    /// The write would take a node past its memory bound (`maxmemory`)
    /// and its policy could not make room; nothing was stored, and
    /// nothing already stored was dropped for it.
    #[error(
        "out of memory: {used} bytes used of maxmemory {limit}, the write needs {needed} more, and policy {policy} \
         could not make room; the write was refused"
    )]
    OutOfMemory { used: u64, needed: u64, limit: u64, policy: String },
    /// A read-modify-write found a value it cannot apply to (`INCR` on
    /// text, an overflow, a value grown past the limit); nothing changed.
    #[error("{0}")]
    Update(#[from] crate::update::UpdateError),
}

fn fmt_failures(failed: &[ReplicaFailure]) -> String {
    if failed.is_empty() {
        return "none".to_string();
    }
    failed.iter().map(|f| format!("{} ({})", f.node, f.reason)).collect::<Vec<_>>().join(", ")
}

impl KvError {
    /// Whether retrying the same request elsewhere or later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KvError::Busy { .. }
                | KvError::Quorum { .. }
                | KvError::Timeout { .. }
                | KvError::DeadlineExpired { .. }
                | KvError::Cleared { .. }
                | KvError::Unavailable(_)
                | KvError::Transport(_)
                | KvError::ShuttingDown
        )
    }

    /// Whether another node may well succeed where the one that answered
    /// this did nothing: it reached none of the replicas it needed (a node
    /// cut off from the rest, which still answers its clients), or it
    /// cannot serve at all (fenced, or not yet confirmed after a pause).
    /// Nothing was applied, so a client can send the request elsewhere.
    pub fn worth_another_node(&self) -> bool {
        matches!(self, KvError::Quorum { acked: 0, .. } | KvError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_error_names_the_replicas() {
        let err = KvError::Quorum {
            operation: "put".into(),
            needed: 2,
            replicas: 3,
            acked: 1,
            answered: vec!["n1".into()],
            failed: vec![
                ReplicaFailure { node: "n2".into(), reason: "timed out".into() },
                ReplicaFailure { node: "n3".into(), reason: "down".into() },
            ],
        };
        assert_eq!(
            err.to_string(),
            "put needed 2 of 3 replicas, 1 acknowledged ([\"n1\"]); failed: n2 (timed out), n3 (down)"
        );
        assert!(!err.worth_another_node(), "one replica has it: the error stands");
        let none = KvError::Quorum {
            operation: "put".into(),
            needed: 2,
            replicas: 3,
            acked: 0,
            answered: Vec::new(),
            failed: Vec::new(),
        };
        assert!(none.worth_another_node(), "a coordinator that reached nobody");
    }

    #[test]
    fn forbidden_names_the_role_and_is_final() {
        let err = KvError::Forbidden {
            request: "leave".into(),
            needed: "an operator certificate".into(),
            presented: "a client certificate".into(),
        };
        assert_eq!(
            err.to_string(),
            "leave needs an operator certificate; this connection presented a client certificate"
        );
        assert!(!err.is_retryable());
    }
}
