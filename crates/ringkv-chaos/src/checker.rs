//! The checker: a pure function from the history (including the final reads
//! made after the cluster healed) to violations, plus the pure halves of the
//! convergence and memory checks.
//!
//! # The model
//!
//! Each key is written by one client only, so its puts and deletes are
//! sequential; the scheduled `clear` is the only mutation concurrent with
//! them. Every mutation gets its version when its coordinator stamps it,
//! which happens between its invocation and its completion. (For a request
//! the client gave up on, "completion" is when it gave up: the client's
//! per-attempt timeout is longer than the ordinary pauses, so a
//! coordinator that received the request answers, or dies, before the
//! client gives up; a node that reads a request after its deadline, the end
//! of that timeout, refuses it rather than stamping it; and a coordinator
//! paused past half of `dead_node_grace` serves nothing until gossip has
//! confirmed its membership.)
//! Last-writer-wins on versions then means that the key's final state is
//! the effect of some mutation X that no *acknowledged* mutation follows in
//! real time — no acknowledged Y was invoked after X completed. X may have
//! any outcome: a failed or unknown write may or may not have been applied.
//!
//! Reads during the run are at consistency `quorum`, which with sloppy
//! quorums may legitimately miss a recent write or delete, so they are only
//! checked for values that cannot be explained at all (never written, written
//! to another key, written after the read returned) and for expired values.
//! The final reads, at consistency `all` after healing, must match the model.
//!
//! An expired value must never be returned: a read invoked more than
//! [`CheckOptions::expiry_slack_ms`] after the TTL put's completion plus its
//! TTL that returns the put's value is a violation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use ringkv_core::{Entry, Epoch};
use serde::Serialize;

use crate::history::{OpKind, Outcome, Phase, Read, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Allowance for clock granularity when deciding that a value had
    /// certainly expired before a read.
    pub expiry_slack_ms: u64,
    /// Allowance the other way when deciding that a TTL put may already have
    /// expired (and so may explain an absent key).
    pub expiry_early_ms: u64,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions { expiry_slack_ms: 250, expiry_early_ms: 50 }
    }
}

impl CheckOptions {
    /// For a run in which some node's clock was off by up to
    /// `max_skew_ms`: expiry is an instant computed and judged by node
    /// clocks (DESIGN.md: an absolute expiry, replicated), so a coordinator
    /// whose clock is ahead stores a later instant, one behind an earlier
    /// one, and a value may be seen that much after or before its TTL. That
    /// is the promise (README), so it is what is checked; the order of
    /// writes is not loosened.
    pub fn with_clock_skew(max_skew_ms: u64) -> CheckOptions {
        let strict = CheckOptions::default();
        CheckOptions {
            expiry_slack_ms: strict.expiry_slack_ms + max_skew_ms,
            expiry_early_ms: strict.expiry_early_ms + max_skew_ms,
        }
    }
}

/// A short reference to an operation of the history, as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpRef {
    pub client: u32,
    pub op: OpKind,
    pub value: Option<String>,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
}

impl OpRef {
    fn of(r: &Record) -> OpRef {
        OpRef {
            client: r.client,
            op: r.op,
            value: r.value.clone(),
            invoke_ms: r.invoke_ms,
            complete_ms: r.complete_ms,
            outcome: r.outcome,
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op.as_str())?;
        if let Some(v) = &self.value {
            write!(f, " {v}")?;
        }
        write!(f, " by client {} [{}..{} ms] {:?}", self.client, self.invoke_ms, self.complete_ms, self.outcome)
    }
}

/// Everything the suite can find wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// The final state lost an acknowledged write: it reads an older value,
    /// or nothing, with nothing acknowledged (or invoked) since to explain it.
    LostWrite { key: String, acked: OpRef, read: Read, read_at_ms: u64, read_writer: Option<OpRef> },
    /// An acknowledged delete was undone: the final state is a value written
    /// before the delete, and nothing was written since.
    DeleteUndone { key: String, delete: OpRef, read: Read, read_writer: OpRef },
    /// An acknowledged clear was undone for this key.
    ClearUndone { key: String, clear: OpRef, read: Read, read_writer: OpRef },
    /// A read returned a value after its TTL had certainly passed.
    ExpiredRead { key: String, phase: Phase, put: OpRef, ttl_ms: u64, read_invoke_ms: u64 },
    /// A read returned something no operation explains.
    PhantomRead { key: String, value: String, read_invoke_ms: u64, reason: String },
    /// The key could not be read at consistency `all` after healing.
    Unreadable { key: String, error: String },
    /// The key's replicas still differed at the convergence bound.
    NotConverged { key: String, bound_ms: u64, replicas: String },
    /// A node's resident memory passed the bound.
    MemoryExceeded { node: String, max_rss_bytes: u64, bound_bytes: u64 },
    /// A node did not do what it is documented to do (come back, serve,
    /// accept a fault, leave) within the harness's deadline.
    Unhealthy { what: String },
}

impl Violation {
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::LostWrite { .. } => "lost_write",
            Violation::DeleteUndone { .. } => "delete_undone",
            Violation::ClearUndone { .. } => "clear_undone",
            Violation::ExpiredRead { .. } => "expired_read",
            Violation::PhantomRead { .. } => "phantom_read",
            Violation::Unreadable { .. } => "unreadable",
            Violation::NotConverged { .. } => "not_converged",
            Violation::MemoryExceeded { .. } => "memory_exceeded",
            Violation::Unhealthy { .. } => "unhealthy",
        }
    }

    pub fn key(&self) -> Option<&str> {
        match self {
            Violation::LostWrite { key, .. }
            | Violation::DeleteUndone { key, .. }
            | Violation::ClearUndone { key, .. }
            | Violation::ExpiredRead { key, .. }
            | Violation::PhantomRead { key, .. }
            | Violation::Unreadable { key, .. }
            | Violation::NotConverged { key, .. } => Some(key),
            Violation::MemoryExceeded { .. } | Violation::Unhealthy { .. } => None,
        }
    }
}

fn fmt_read(read: &Read) -> String {
    match read {
        Read::Absent => "absent".into(),
        Read::Value(v) => v.clone(),
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::LostWrite { key, acked, read, read_at_ms, read_writer } => {
                write!(f, "lost write: key {key}: final read at {read_at_ms} ms got {}", fmt_read(read))?;
                if let Some(w) = read_writer {
                    write!(f, " (from {w})")?;
                }
                write!(f, ", but {acked} was acknowledged and nothing later explains it")
            }
            Violation::DeleteUndone { key, delete, read, read_writer } => write!(
                f,
                "delete undone: key {key}: final read got {} (from {read_writer}) after {delete}",
                fmt_read(read)
            ),
            Violation::ClearUndone { key, clear, read, read_writer } => write!(
                f,
                "clear undone: key {key}: final read got {} (from {read_writer}) after {clear}",
                fmt_read(read)
            ),
            Violation::ExpiredRead { key, phase, put, ttl_ms, read_invoke_ms } => write!(
                f,
                "expired value returned: key {key}: {phase:?} read invoked at {read_invoke_ms} ms returned the value \
                 of {put} with ttl {ttl_ms} ms (expired by {} ms at the latest)",
                put.complete_ms + ttl_ms
            ),
            Violation::PhantomRead { key, value, read_invoke_ms, reason } => {
                write!(f, "phantom read: key {key}: read invoked at {read_invoke_ms} ms returned {value}: {reason}")
            }
            Violation::Unreadable { key, error } => {
                write!(f, "unreadable: key {key} could not be read at consistency all after healing: {error}")
            }
            Violation::NotConverged { key, bound_ms, replicas } => {
                write!(f, "not converged: key {key}: replicas still differ after {bound_ms} ms: {replicas}")
            }
            Violation::MemoryExceeded { node, max_rss_bytes, bound_bytes } => write!(
                f,
                "memory: node {node} reached {} MiB resident, bound {} MiB",
                max_rss_bytes >> 20,
                bound_bytes >> 20
            ),
            Violation::Unhealthy { what } => write!(f, "unhealthy: {what}"),
        }
    }
}

/// One key's operations.
#[derive(Default)]
struct KeyOps<'a> {
    mutations: Vec<&'a Record>,
    final_reads: Vec<&'a Record>,
}

/// Checks a history. Deterministic: violations come out ordered by key,
/// then by the order of the records.
pub fn check(history: &[Record], opts: &CheckOptions) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut writers: HashMap<&str, &Record> = HashMap::new();
    let mut keys: BTreeMap<&str, KeyOps<'_>> = BTreeMap::new();
    let mut clears: Vec<&Record> = Vec::new();
    for r in history {
        match (r.op, r.key.as_deref()) {
            (OpKind::Clear, _) => clears.push(r),
            (op, Some(key)) if op.is_mutation() => {
                if let Some(v) = r.value.as_deref() {
                    writers.insert(v, r);
                }
                keys.entry(key).or_default().mutations.push(r);
            }
            (OpKind::Get, Some(key)) if r.phase == Phase::Final => keys.entry(key).or_default().final_reads.push(r),
            _ => {}
        }
    }

    // Every successful read: can its value be explained at all, and had it
    // certainly expired?
    for r in history.iter().filter(|r| r.op == OpKind::Get && r.outcome == Outcome::Ok) {
        let (Some(key), Some(Read::Value(value))) = (r.key.as_deref(), r.read.as_ref()) else { continue };
        let phantom = |reason: &str| Violation::PhantomRead {
            key: key.into(),
            value: value.clone(),
            read_invoke_ms: r.invoke_ms,
            reason: reason.into(),
        };
        let Some(w) = writers.get(value.as_str()) else {
            violations.push(phantom("no operation wrote this value"));
            continue;
        };
        if w.key.as_deref() != Some(key) {
            violations.push(phantom(&format!("the value was written to key {}", w.key.as_deref().unwrap_or("?"))));
        } else if w.invoke_ms > r.complete_ms {
            violations.push(phantom(&format!("the value was written at {} ms, after the read returned", w.invoke_ms)));
        } else if let (OpKind::PutTtl, Some(ttl)) = (w.op, w.ttl_ms)
            && w.complete_ms + ttl + opts.expiry_slack_ms < r.invoke_ms
        {
            violations.push(Violation::ExpiredRead {
                key: key.into(),
                phase: r.phase,
                put: OpRef::of(w),
                ttl_ms: ttl,
                read_invoke_ms: r.invoke_ms,
            });
        }
    }

    // The final state of every key against the model.
    for (key, ops) in &mut keys {
        let mut mutations = ops.mutations.clone();
        mutations.extend(clears.iter().copied());
        mutations.sort_by_key(|r| (r.invoke_ms, r.complete_ms));
        let acked: Vec<&Record> = mutations.iter().copied().filter(|r| r.outcome == Outcome::Ok).collect();
        // Acknowledged mutations, newest completion last; the last one
        // always qualifies as a candidate, so it names what was lost.
        let last_acked = acked.iter().copied().max_by_key(|r| r.complete_ms);
        let candidate = |x: &Record| !acked.iter().any(|y| !std::ptr::eq(*y, x) && y.invoke_ms > x.complete_ms);

        let Some(read) = ops.final_reads.iter().rev().find(|r| r.outcome == Outcome::Ok) else {
            if ops.mutations.is_empty() {
                continue;
            }
            let error =
                ops.final_reads.last().and_then(|r| r.error.clone()).unwrap_or_else(|| "no final read was made".into());
            violations.push(Violation::Unreadable { key: (*key).into(), error });
            continue;
        };
        let result = read.read.clone().unwrap_or(Read::Absent);
        match &result {
            Read::Value(value) => {
                // Phantoms were reported above.
                let Some(w) = writers.get(value.as_str()).filter(|w| w.key.as_deref() == Some(*key)) else { continue };
                if candidate(w) {
                    continue;
                }
                let last = last_acked.expect("a non-candidate implies an acknowledged mutation");
                violations.push(match last.op {
                    OpKind::Delete => Violation::DeleteUndone {
                        key: (*key).into(),
                        delete: OpRef::of(last),
                        read: result.clone(),
                        read_writer: OpRef::of(w),
                    },
                    OpKind::Clear => Violation::ClearUndone {
                        key: (*key).into(),
                        clear: OpRef::of(last),
                        read: result.clone(),
                        read_writer: OpRef::of(w),
                    },
                    _ => Violation::LostWrite {
                        key: (*key).into(),
                        acked: OpRef::of(last),
                        read: result.clone(),
                        read_at_ms: read.invoke_ms,
                        read_writer: Some(OpRef::of(w)),
                    },
                });
            }
            Read::Absent => {
                let explained = last_acked.is_none()
                    || mutations.iter().any(|x| {
                        candidate(x)
                            && match x.op {
                                OpKind::Delete | OpKind::Clear => true,
                                OpKind::PutTtl => {
                                    x.invoke_ms + x.ttl_ms.unwrap_or(0) <= read.complete_ms + opts.expiry_early_ms
                                }
                                OpKind::Put | OpKind::Get => false,
                            }
                    });
                if !explained {
                    violations.push(Violation::LostWrite {
                        key: (*key).into(),
                        acked: OpRef::of(last_acked.expect("checked above")),
                        read: Read::Absent,
                        read_at_ms: read.invoke_ms,
                        read_writer: None,
                    });
                }
            }
        }
    }
    violations
}

/// Whether a key's replicas hold the same thing, as `explain` reports them.
/// Entries compare by version and value; an entry that has expired by
/// `now_ms` or that the truncate epoch covers counts as absent, because
/// that is what every reader sees and what the sweeper and purge make of it.
/// Tombstones are kept (as markers) and must be on every replica. There
/// must be `expected` replicas (N), every one of them answering.
pub fn replicas_agree(
    replicas: &[(String, Result<Option<Entry>, String>)],
    expected: usize,
    now_ms: u64,
    epoch: Epoch,
) -> bool {
    if replicas.len() != expected {
        return false;
    }
    let mut seen = None;
    for (_, entry) in replicas {
        let Ok(entry) = entry else { return false };
        let normalized = entry
            .as_ref()
            .filter(|e| !e.is_expired(now_ms) && !epoch.covers(e.version))
            .map(|e| (e.version, e.value.clone()));
        match &seen {
            None => seen = Some(normalized),
            Some(first) if *first == normalized => {}
            Some(_) => return false,
        }
    }
    true
}

/// Describes replicas for a violation report.
pub fn describe_replicas(replicas: &[(String, Result<Option<Entry>, String>)]) -> String {
    replicas
        .iter()
        .map(|(node, entry)| match entry {
            Err(e) => format!("{node}: error {e}"),
            Ok(None) => format!("{node}: absent"),
            Ok(Some(e)) => format!(
                "{node}: {} @{}.{}/{}{}",
                e.value.as_ref().map_or("tombstone".to_string(), |v| String::from_utf8_lossy(v).into_owned()),
                e.version.ts.wall_ms(),
                e.version.ts.logical(),
                e.version.node.0,
                e.expires_at.map_or(String::new(), |at| format!(" expires {at}")),
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Nodes whose largest resident set passed the bound.
pub fn memory_violations(max_rss: &BTreeMap<String, u64>, bound_bytes: u64) -> Vec<Violation> {
    max_rss
        .iter()
        .filter(|(_, rss)| **rss > bound_bytes)
        .map(|(node, rss)| Violation::MemoryExceeded { node: node.clone(), max_rss_bytes: *rss, bound_bytes })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{CONTROLLER, FINAL_READER};
    use bytes::Bytes;
    use ringkv_core::{Timestamp, Version};

    const K: &str = "o/0/1";

    fn op(op: OpKind, value: Option<&str>, ttl_ms: Option<u64>, at: (u64, u64), outcome: Outcome) -> Record {
        Record {
            client: 0,
            phase: Phase::Run,
            op,
            key: (op != OpKind::Clear).then(|| K.to_string()),
            value: value.map(String::from),
            ttl_ms,
            invoke_ms: at.0,
            complete_ms: at.1,
            outcome,
            read: None,
            error: (outcome != Outcome::Ok).then(|| "some error".into()),
        }
    }

    fn put(value: &str, at: (u64, u64), outcome: Outcome) -> Record {
        op(OpKind::Put, Some(value), None, at, outcome)
    }

    fn put_ttl(value: &str, ttl: u64, at: (u64, u64), outcome: Outcome) -> Record {
        op(OpKind::PutTtl, Some(value), Some(ttl), at, outcome)
    }

    fn delete(at: (u64, u64), outcome: Outcome) -> Record {
        op(OpKind::Delete, None, None, at, outcome)
    }

    fn clear(at: (u64, u64)) -> Record {
        Record { client: CONTROLLER, ..op(OpKind::Clear, None, None, at, Outcome::Ok) }
    }

    fn read(phase: Phase, at: (u64, u64), value: Option<&str>) -> Record {
        let mut r = op(OpKind::Get, None, None, at, Outcome::Ok);
        r.phase = phase;
        if phase == Phase::Final {
            r.client = FINAL_READER;
        }
        r.read = Some(value.map_or(Read::Absent, |v| Read::Value(v.into())));
        r
    }

    fn fin(value: Option<&str>) -> Record {
        read(Phase::Final, (100_000, 100_010), value)
    }

    fn kinds(history: &[Record]) -> Vec<&'static str> {
        check(history, &CheckOptions::default()).iter().map(|v| v.kind()).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let h = vec![
            put("v0.1", (0, 5), Outcome::Ok),
            read(Phase::Run, (6, 8), Some("v0.1")),
            put("v0.2", (10, 15), Outcome::Ok),
            read(Phase::Run, (16, 18), Some("v0.1")), // stale but written: allowed during the run
            delete((20, 25), Outcome::Ok),
            put_ttl("v0.3", 60_000, (30, 35), Outcome::Ok),
            put("v0.4", (40, 45), Outcome::Ok),
            fin(Some("v0.4")),
        ];
        assert_eq!(kinds(&h), Vec::<&str>::new());
    }

    #[test]
    fn an_older_value_after_an_acknowledged_write_is_a_lost_write() {
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), put("v0.2", (10, 15), Outcome::Ok), fin(Some("v0.1"))];
        let v = check(&h, &CheckOptions::default());
        assert_eq!(v.len(), 1);
        match &v[0] {
            Violation::LostWrite { key, acked, read_writer, .. } => {
                assert_eq!(key, K);
                assert_eq!(acked.value.as_deref(), Some("v0.2"));
                assert_eq!(read_writer.as_ref().unwrap().value.as_deref(), Some("v0.1"));
            }
            other => panic!("{other}"),
        }
        assert!(v[0].to_string().contains("v0.2"), "{}", v[0]);
    }

    #[test]
    fn absence_after_an_acknowledged_put_is_a_lost_write() {
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), fin(None)];
        assert_eq!(kinds(&h), ["lost_write"]);
    }

    #[test]
    fn a_write_invoked_after_the_last_ack_may_or_may_not_have_happened() {
        for outcome in [Outcome::Unknown, Outcome::Fail] {
            let base = vec![put("v0.1", (0, 5), Outcome::Ok), put("v0.2", (10, 15), outcome)];
            for last in [Some("v0.1"), Some("v0.2")] {
                let mut h = base.clone();
                h.push(fin(last));
                assert_eq!(kinds(&h), Vec::<&str>::new(), "{outcome:?} {last:?}");
            }
            let mut h = base.clone();
            h.push(delete((20, 25), outcome));
            h.push(fin(None));
            assert_eq!(kinds(&h), Vec::<&str>::new(), "an unacknowledged delete may have happened");
        }
    }

    #[test]
    fn an_unacknowledged_write_before_the_last_ack_cannot_win() {
        let h = vec![put("v0.1", (0, 5), Outcome::Unknown), put("v0.2", (10, 15), Outcome::Ok), fin(Some("v0.1"))];
        assert_eq!(kinds(&h), ["lost_write"]);
    }

    #[test]
    fn an_older_value_after_an_acknowledged_delete_is_a_delete_undone() {
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), delete((10, 15), Outcome::Ok), fin(Some("v0.1"))];
        assert_eq!(kinds(&h), ["delete_undone"]);
        let ok = vec![put("v0.1", (0, 5), Outcome::Ok), delete((10, 15), Outcome::Ok), fin(None)];
        assert_eq!(kinds(&ok), Vec::<&str>::new());
    }

    #[test]
    fn a_value_from_before_an_acknowledged_clear_is_a_clear_undone() {
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), clear((10, 15)), fin(Some("v0.1"))];
        assert_eq!(kinds(&h), ["clear_undone"]);
        let ok = vec![put("v0.1", (0, 5), Outcome::Ok), clear((10, 15)), fin(None)];
        assert_eq!(kinds(&ok), Vec::<&str>::new());
    }

    #[test]
    fn a_write_concurrent_with_the_clear_may_survive_it_or_not() {
        for last in [Some("v0.1"), None] {
            let h = vec![put("v0.1", (10, 20), Outcome::Ok), clear((12, 30)), fin(last)];
            assert_eq!(kinds(&h), Vec::<&str>::new(), "{last:?}");
        }
        // A write invoked after the clear returned must survive it.
        let h = vec![clear((0, 5)), put("v0.1", (10, 20), Outcome::Ok), fin(None)];
        assert_eq!(kinds(&h), ["lost_write"]);
    }

    #[test]
    fn an_expired_value_is_a_violation_at_any_time() {
        let base = vec![put_ttl("v0.1", 1000, (0, 100), Outcome::Ok)];
        // Within the slack: fine.
        let mut h = base.clone();
        h.push(read(Phase::Run, (1300, 1310), Some("v0.1")));
        h.push(fin(None));
        assert_eq!(kinds(&h), Vec::<&str>::new());
        // Past it, during the run and at the end.
        let mut h = base.clone();
        h.push(read(Phase::Run, (1400, 1410), Some("v0.1")));
        h.push(fin(Some("v0.1")));
        assert_eq!(kinds(&h), ["expired_read", "expired_read"]);
        // An unknown TTL put is held to the same rule from when the client
        // gave up on it.
        let h = vec![put_ttl("v0.1", 1000, (0, 100), Outcome::Unknown), fin(Some("v0.1"))];
        assert_eq!(kinds(&h), ["expired_read"]);
    }

    #[test]
    fn clock_skew_widens_expiry_by_exactly_the_skew() {
        let mut h = vec![put_ttl("v0.1", 1000, (0, 100), Outcome::Ok)];
        h.push(read(Phase::Run, (2300, 2310), Some("v0.1")));
        h.push(fin(None));
        let found =
            |skew: u64| check(&h, &CheckOptions::with_clock_skew(skew)).iter().map(|v| v.kind()).collect::<Vec<_>>();
        // Read 1.2 s after the earliest expiry (completion plus TTL): with
        // the strict 250 ms of slack, a skew of 950 ms or more explains it.
        assert_eq!(found(0), ["expired_read"]);
        assert_eq!(found(940), ["expired_read"]);
        assert_eq!(found(960), Vec::<&str>::new());
        // And the write order is as strict as ever: a lost write stays lost.
        let h = vec![put("v0.1", (0, 10), Outcome::Ok), put("v0.2", (20, 30), Outcome::Ok), fin(Some("v0.1"))];
        assert_eq!(
            check(&h, &CheckOptions::with_clock_skew(3_000)).iter().map(|v| v.kind()).collect::<Vec<_>>(),
            ["lost_write"]
        );
    }

    #[test]
    fn expiry_explains_absence_only_once_the_ttl_may_have_passed() {
        let h = vec![put_ttl("v0.1", 1000, (0, 100), Outcome::Ok), read(Phase::Final, (500, 510), None)];
        assert_eq!(kinds(&h), ["lost_write"]);
        let h = vec![put_ttl("v0.1", 1000, (0, 100), Outcome::Ok), read(Phase::Final, (1000, 1010), None)];
        assert_eq!(kinds(&h), Vec::<&str>::new());
    }

    #[test]
    fn values_nobody_wrote_are_phantoms() {
        let mut other_key = put("v9.9", (0, 5), Outcome::Ok);
        other_key.key = Some("u/9/9".into());
        let h = vec![
            put("v0.1", (0, 5), Outcome::Ok),
            other_key,
            read(Phase::Run, (6, 7), Some("v7.7")),
            read(Phase::Run, (8, 9), Some("v9.9")),
            put("v0.2", (50, 55), Outcome::Ok),
            read(Phase::Run, (10, 20), Some("v0.2")),
            fin(Some("v0.2")),
            read(Phase::Final, (100_000, 100_001), Some("v9.9")),
            Record { key: Some("u/9/9".into()), ..fin(Some("v9.9")) },
        ];
        let v = check(&h, &CheckOptions::default());
        let kinds: Vec<_> = v.iter().map(|v| v.kind()).collect();
        assert_eq!(kinds, ["phantom_read", "phantom_read", "phantom_read", "phantom_read"], "{v:?}");
        // The final read that returned the other key's value is a phantom,
        // and the key's final state is taken from its latest final read.
    }

    #[test]
    fn a_key_that_could_not_be_read_at_the_end_is_reported() {
        let mut failed = read(Phase::Final, (100_000, 110_000), None);
        failed.outcome = Outcome::Unknown;
        failed.read = None;
        failed.error = Some("timed out".into());
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), failed];
        let v = check(&h, &CheckOptions::default());
        assert_eq!(v, vec![Violation::Unreadable { key: K.into(), error: "timed out".into() }]);
        // And a key with no final read at all.
        assert_eq!(kinds(&[put("v0.1", (0, 5), Outcome::Ok)]), ["unreadable"]);
    }

    fn entry(ts: u64, value: Option<&str>, expires_at: Option<u64>) -> Option<Entry> {
        Some(Entry {
            version: Version::new(Timestamp::new(ts, 0), ringkv_core::NodeTag(1)),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            expires_at,
        })
    }

    fn replicas(entries: Vec<Result<Option<Entry>, String>>) -> Vec<(String, Result<Option<Entry>, String>)> {
        entries.into_iter().enumerate().map(|(i, e)| (format!("n{}", i + 1), e)).collect()
    }

    #[test]
    fn replicas_agree_compares_versions_and_values_with_expired_as_absent() {
        let now = 10_000;
        let same = replicas(vec![Ok(entry(5, Some("a"), None)), Ok(entry(5, Some("a"), None))]);
        assert!(replicas_agree(&same, same.len(), now, Epoch::NONE));
        let older = replicas(vec![Ok(entry(5, Some("a"), None)), Ok(entry(4, Some("a"), None))]);
        assert!(!replicas_agree(&older, older.len(), now, Epoch::NONE));
        let missing = replicas(vec![Ok(entry(5, Some("a"), None)), Ok(None)]);
        assert!(!replicas_agree(&missing, missing.len(), now, Epoch::NONE));
        let tombstone_missing = replicas(vec![Ok(entry(5, None, None)), Ok(None)]);
        assert!(!replicas_agree(&tombstone_missing, tombstone_missing.len(), now, Epoch::NONE));
        let expired = replicas(vec![Ok(entry(5, Some("a"), Some(now))), Ok(None), Ok(entry(5, None, Some(now)))]);
        assert!(replicas_agree(&expired, expired.len(), now, Epoch::NONE));
        let not_yet = replicas(vec![Ok(entry(5, Some("a"), Some(now + 1))), Ok(None)]);
        assert!(!replicas_agree(&not_yet, not_yet.len(), now, Epoch::NONE));
        let cleared = replicas(vec![Ok(entry(5, Some("a"), None)), Ok(None)]);
        assert!(replicas_agree(&cleared, cleared.len(), now, Epoch(Timestamp::new(6, 0))));
        let unreachable = replicas(vec![Ok(None), Err("timed out".into())]);
        assert!(!replicas_agree(&unreachable, unreachable.len(), now, Epoch::NONE));
        assert!(!replicas_agree(&same, 3, now, Epoch::NONE), "two replicas where three are expected");
        assert!(describe_replicas(&older).contains("n2: a @4.0/1"), "{}", describe_replicas(&older));
    }

    #[test]
    fn memory_over_the_bound_is_reported() {
        let rss: BTreeMap<String, u64> = [("n1".to_string(), 100 << 20), ("n2".to_string(), 2 << 30)].into();
        let v = memory_violations(&rss, 1 << 30);
        assert_eq!(
            v,
            vec![Violation::MemoryExceeded { node: "n2".into(), max_rss_bytes: 2 << 30, bound_bytes: 1 << 30 }]
        );
    }
}
