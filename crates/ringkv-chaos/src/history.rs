//! The client history: one record per operation, with its invocation and
//! completion times (milliseconds since the run started, from a monotonic
//! clock) and its outcome.
//!
//! Every written value is unique (`v{client}.{seq}`), so a value read back
//! names the one operation that wrote it; the checker relies on this.

use std::io::Write;
use std::path::Path;

use ringkv_core::KvError;
use serde::{Deserialize, Serialize};

/// Client id of the controller (the scheduled `clear`).
pub const CONTROLLER: u32 = 1000;
/// Client id of the final reads after the cluster healed.
pub const FINAL_READER: u32 = 1001;
/// Client id under which the checker lists the nodes' evictions among a
/// key's mutations (deletes that no client invoked; see
/// [`crate::evictions`]). Never in a history file.
pub const EVICTOR: u32 = 1002;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Put,
    PutTtl,
    Delete,
    Get,
    Clear,
    /// `exists(key)`; the answer is [`Answer::Exists`].
    Exists,
    /// `ttl(key)`; the answer is [`Answer::Ttl`].
    Ttl,
    /// `expire(key, ttl_ms)`; the answer is [`Answer::Applied`].
    Expire,
    /// `persist(key)`; the answer is [`Answer::Applied`].
    Persist,
}

impl OpKind {
    pub const ALL: [OpKind; 9] = [
        OpKind::Put,
        OpKind::PutTtl,
        OpKind::Delete,
        OpKind::Get,
        OpKind::Exists,
        OpKind::Ttl,
        OpKind::Expire,
        OpKind::Persist,
        OpKind::Clear,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::PutTtl => "put_ttl",
            OpKind::Delete => "delete",
            OpKind::Get => "get",
            OpKind::Clear => "clear",
            OpKind::Exists => "exists",
            OpKind::Ttl => "ttl",
            OpKind::Expire => "expire",
            OpKind::Persist => "persist",
        }
    }

    /// Whether the operation may change what is stored (expire and persist
    /// change the expiry of the value they find).
    pub fn is_mutation(self) -> bool {
        !self.is_read()
    }

    /// Whether the operation only observes the key.
    pub fn is_read(self) -> bool {
        matches!(self, OpKind::Get | OpKind::Exists | OpKind::Ttl)
    }
}

/// What `exists`, `ttl`, `expire` and `persist` answered (a `get`'s answer
/// is its [`Read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Exists(bool),
    Ttl(TtlAnswer),
    /// Whether `expire` or `persist` changed anything (false: the key was
    /// missing, or for `persist` had no expiry).
    Applied(bool),
}

/// `ttl(key)`'s answer, as [`ringkv_core::KeyTtl`] with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlAnswer {
    Missing,
    Persistent,
    Expires { ms: u64 },
}

impl From<ringkv_core::KeyTtl> for TtlAnswer {
    fn from(ttl: ringkv_core::KeyTtl) -> TtlAnswer {
        match ttl {
            ringkv_core::KeyTtl::Missing => TtlAnswer::Missing,
            ringkv_core::KeyTtl::Persistent => TtlAnswer::Persistent,
            ringkv_core::KeyTtl::Expires(d) => TtlAnswer::Expires { ms: d.as_millis() as u64 },
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused by a node (e.g. no quorum). It may still have reached some
    /// replicas, and with them become the key's state later: a failed write
    /// is "may or may not have happened", stamped within its interval.
    Fail,
    /// No answer (timeout, transport error): may or may not have happened.
    Unknown,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Read {
    Absent,
    Value(String),
}

/// Which part of the run an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The workload, while faults are applied.
    Run,
    /// The reads at consistency `all` after the cluster healed.
    Final,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub client: u32,
    pub phase: Phase,
    pub op: OpKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value written (puts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The TTL a put or an expire set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// What a successful get returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Read>,
    /// What a successful exists, ttl, expire or persist returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// A record for an operation about to be invoked; `complete_ms` and the
    /// outcome are filled in by [`Record::finish`].
    pub fn invoke(client: u32, phase: Phase, op: OpKind, key: Option<String>, invoke_ms: u64) -> Record {
        Record {
            client,
            phase,
            op,
            key,
            value: None,
            ttl_ms: None,
            invoke_ms,
            complete_ms: invoke_ms,
            outcome: Outcome::Unknown,
            read: None,
            answer: None,
            error: None,
        }
    }

    pub fn with_value(mut self, value: String, ttl_ms: Option<u64>) -> Record {
        self.value = Some(value);
        self.ttl_ms = ttl_ms;
        self
    }

    pub fn finish<T>(&mut self, complete_ms: u64, result: &Result<T, KvError>) {
        self.complete_ms = complete_ms;
        match result {
            Ok(_) => self.outcome = Outcome::Ok,
            Err(e) => {
                self.outcome = classify(e);
                self.error = Some(e.to_string());
            }
        }
    }

    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }
}

/// Whether a failed request may have been applied. Only errors that a node
/// returned after deciding are `Fail`; anything that might be a lost answer
/// is `Unknown`. The checker treats both as "may have happened", so a wrong
/// guess here can only move counts in the summary, never hide a violation.
pub fn classify(error: &KvError) -> Outcome {
    match error {
        KvError::EmptyKey
        | KvError::KeyTooLarge { .. }
        | KvError::ValueTooLarge { .. }
        | KvError::InvalidTtl(_)
        | KvError::Quorum { .. }
        | KvError::Unavailable(_)
        | KvError::Cleared { .. }
        | KvError::DeadlineExpired { .. }
        | KvError::Forbidden { .. }
        | KvError::OutOfMemory { .. }
        | KvError::Update(_)
        | KvError::ShuttingDown => Outcome::Fail,
        KvError::Busy { .. }
        | KvError::Timeout { .. }
        | KvError::Transport(_)
        | KvError::Storage(_)
        | KvError::Protocol(_)
        | KvError::Internal(_) => Outcome::Unknown,
    }
}

/// Writes the history, one JSON object per line.
pub fn write_jsonl(path: &Path, history: &[Record]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in history {
        writeln!(out, "{}", record.to_json())?;
    }
    out.flush()
}

/// Reads a history written by [`write_jsonl`] (for re-checking a run), or
/// any other file of one JSON object per line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

/// The system clock in ms since the Unix epoch, as node versions count.
pub fn now_wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let mut put = Record::invoke(3, Phase::Run, OpKind::PutTtl, Some("t/3/1".into()), 10)
            .with_value("v3.7".into(), Some(2000));
        put.finish::<()>(12, &Err(KvError::Timeout { what: "x".into(), ms: 1 }));
        let mut get = Record::invoke(FINAL_READER, Phase::Final, OpKind::Get, Some("t/3/1".into()), 20);
        get.finish(21, &Ok(()));
        get.read = Some(Read::Absent);
        let mut get2 = get.clone();
        get2.read = Some(Read::Value("v3.7".into()));
        let mut ttl = Record::invoke(3, Phase::Run, OpKind::Ttl, Some("s/1".into()), 30);
        ttl.finish(31, &Ok(()));
        ttl.answer = Some(Answer::Ttl(TtlAnswer::Expires { ms: 1200 }));
        let mut expire = Record::invoke(3, Phase::Run, OpKind::Expire, Some("s/1".into()), 40);
        expire.ttl_ms = Some(3000);
        expire.finish(41, &Ok(()));
        expire.answer = Some(Answer::Applied(false));
        for r in [put, get, get2, ttl, expire] {
            let line = r.to_json();
            assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r, "{line}");
        }
    }

    #[test]
    fn timeouts_are_unknown_refusals_fail() {
        assert_eq!(classify(&KvError::Timeout { what: "x".into(), ms: 1 }), Outcome::Unknown);
        assert_eq!(classify(&KvError::Transport("reset".into())), Outcome::Unknown);
        assert_eq!(classify(&KvError::Unavailable("none".into())), Outcome::Fail);
    }
}
