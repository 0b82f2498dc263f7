//! The checker: a pure function from the history (including the final reads
//! made after the cluster healed) to violations, plus the pure halves of the
//! convergence and memory checks.
//!
//! # The model
//!
//! Keys `u/`, `t/` and `o/` are each written by one client only, so their
//! puts and deletes are sequential; the shared keys `s/{i}` are written by
//! every client; the scheduled `clear` is concurrent with all of them.
//! Every mutation gets its version when its coordinator stamps it, which
//! happens between its invocation and its completion. (For a request the
//! client gave up on, "completion" is when it gave up: the client's
//! per-attempt timeout is longer than the ordinary pauses, so a
//! coordinator that received the request answers, or dies, before the
//! client gives up; a node that reads a request after its deadline, the end
//! of that timeout, refuses it rather than stamping it; and a coordinator
//! paused past half of `dead_node_grace` serves nothing until gossip has
//! confirmed its membership.)
//!
//! Mutation X is *certainly ordered before* Y ([`CheckOptions::ordered`])
//! when:
//!
//! - both are one client's: X was invoked first. A client's operations are
//!   sequential, and its session clock orders each write after everything
//!   it wrote or read before, including requests it gave up on (README);
//! - either is the `clear`: X completed before Y was invoked (`clear` is
//!   ordered by acknowledgement, not by clocks: README);
//! - they are different clients': X completed more than
//!   [`CheckOptions::cross_client_ms`] before Y was invoked. Between clients
//!   that never exchanged anything, a node whose clock is behind and that
//!   has not yet received X can stamp Y before it (README), so closer than
//!   that, either order is possible;
//! - either is an eviction (see *Evictions* below): as for different
//!   clients, even against the clear. The eviction's stamp is known, but
//!   it was read off a node's clock, which may be off by the skew; the
//!   harness never saw when it happened.
//!
//! Last-writer-wins on versions then means that the key's final state is
//! the effect of some put, delete or clear X that no *acknowledged* one is
//! certainly ordered after. X may have any outcome: a failed or unknown
//! write may or may not have been applied. On single-writer keys this is
//! exactly the strict rule "no acknowledged Y was invoked after X
//! completed".
//!
//! `expire` and `persist` rewrite the value they find with a new expiry,
//! keeping that value's version (`Version::touched`): they neither
//! supersede a value nor bring one back, they only change when it stops.
//! Which value they found is not recorded, so the checker assumes that one
//! may have applied to any value of its key invoked before it completed
//! (unless it answered false: then it changed nothing), and bounds a value's
//! expiry both ways: the *latest* is its own TTL (none: never), extended by
//! every expire (to its completion plus its TTL) or persist (never) invoked
//! while the value may still have been live; the *earliest* is its
//! invocation plus its TTL, or any expire's invocation plus that expire's
//! TTL. A read is judged against the latest, an absence explained by the
//! earliest. An expire that may have *shortened* a value's life is
//! therefore never held against a read of that value.
//!
//! Every successful read (`get`, `exists`, `ttl`), during the run and at the
//! end, is judged:
//!
//! - **phantom**: the value was never written, was written to another key,
//!   or was written after the read returned; `exists` true or a `ttl` with
//!   no value written before it, with only values that had certainly
//!   expired, or with an expiry (or none) that no write, expire or persist
//!   set;
//! - **expired**: the value's latest expiry had passed, by more than
//!   [`CheckOptions::expiry_slack_ms`], when the read was invoked;
//! - **session** (a separate kind, [`Violation::SessionRead`], that does not
//!   fail the run: README promises session order for a client's writes,
//!   not for its reads): a workload client's read must not return a value
//!   certainly ordered before a put or delete of its own that was
//!   acknowledged before the read (read-your-writes), nor one certainly
//!   ordered before a value it read from the key earlier (monotonic reads),
//!   and must not find the key absent after its own acknowledged put unless
//!   a delete, the clear or an expiry not certainly ordered before that put
//!   explains it.
//!
//! Reads during the run are at consistency `quorum`, which with sloppy
//! quorums may legitimately miss a recent write or delete: a delete
//! acknowledged by a stand-in reaches its home replicas by hinted handoff
//! some time after the cluster heals, and a slow home replica can make a
//! stand-in take a write even without a fault. So a value that an
//! acknowledged delete or clear superseded is judged only on the final
//! reads, at consistency `all` after healing and convergence, which must
//! match the model above.
//!
//! # Evictions
//!
//! Under a memory bound a node evicts a key by writing a tombstone stamped
//! by its hybrid logical clock and sending it to the other replicas: a
//! delete that no client invoked. Every eviction the nodes logged
//! ([`crate::evictions`]) joins its key's mutations as such a delete, by
//! client [`EVICTOR`], at the instant of its stamp (invoked and completed
//! at [`Eviction::at_ms`]), and is ordered against the rest as above. So:
//!
//! - **absence** (in the final state, or after a client's own put) is
//!   explained by an eviction *of that key* that no acknowledged mutation
//!   is certainly ordered after, stamped before the read may have returned
//!   (within the skew allowance). An eviction of another key, or one
//!   certainly older than the last acknowledged write, explains nothing:
//!   without a recorded eviction an absent key is still a lost write;
//! - **a value** is never explained by an eviction: a final read that
//!   returns a value that an acknowledged write, delete or clear certainly
//!   superseded is the same violation as without evictions;
//! - **resurrection**: a final read that returns a value certainly written
//!   before an eviction of its key is [`Violation::EvictionUndone`] (the
//!   tombstone was lost, or a stale replica brought the value back).
//!   Except when the harness killed the process that logged the eviction
//!   soon after ([`crate::evictions::KILL_WINDOW_MS`]): a node logs an
//!   eviction before its tombstone is durable or sent, so such an eviction
//!   may not have happened at all, like a write whose answer was lost (it
//!   still explains an absence).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use ringkv_core::{Entry, Epoch};
use serde::Serialize;

use crate::evictions::Eviction;
use crate::history::{Answer, CONTROLLER, EVICTOR, OpKind, Outcome, Phase, Read, Record, TtlAnswer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Allowance for clock granularity when deciding that a value had
    /// certainly expired before a read.
    pub expiry_slack_ms: u64,
    /// Allowance the other way when deciding that a TTL put may already have
    /// expired (and so may explain an absent key).
    pub expiry_early_ms: u64,
    /// How long after X completed a write by another client must have been
    /// invoked to be certainly ordered after X (see the module comment).
    pub cross_client_ms: u64,
}

/// The run's clock and the nodes' wall clocks are different clocks, each
/// read in whole milliseconds: two writes by different clients a few
/// milliseconds apart in the history may be stamped the other way round
/// even with no skew at all.
const CLOCK_GRANULARITY_MS: u64 = 5;

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions { expiry_slack_ms: 250, expiry_early_ms: 50, cross_client_ms: CLOCK_GRANULARITY_MS }
    }
}

impl CheckOptions {
    /// For a run in which some node's clock was off by up to
    /// `max_skew_ms`: expiry is an instant computed and judged by node
    /// clocks (DESIGN.md: an absolute expiry, replicated), so a coordinator
    /// whose clock is ahead stores a later instant, one behind an earlier
    /// one, and a value may be seen that much after or before its TTL. That
    /// is the promise (README), so it is what is checked.
    ///
    /// One client's writes stay strictly ordered (its session clock), and
    /// so does the clear. Writes by different clients are ordered only
    /// twice the skew apart: a node whose clock ran ahead leaves its
    /// timestamps in every clock that absorbed them for up to the skew
    /// after its fault ends, and the next fault may skew another node
    /// behind before that has worn off.
    pub fn with_clock_skew(max_skew_ms: u64) -> CheckOptions {
        let strict = CheckOptions::default();
        CheckOptions {
            expiry_slack_ms: strict.expiry_slack_ms + max_skew_ms,
            expiry_early_ms: strict.expiry_early_ms + max_skew_ms,
            cross_client_ms: strict.cross_client_ms + 2 * max_skew_ms,
        }
    }

    /// Whether mutation `x` is certainly ordered before mutation `y` (see
    /// the module comment).
    pub fn ordered(&self, x: &Record, y: &Record) -> bool {
        let eviction = x.client == EVICTOR || y.client == EVICTOR;
        if std::ptr::eq(x, y) {
            false
        } else if (x.op == OpKind::Clear || y.op == OpKind::Clear) && !eviction {
            x.complete_ms < y.invoke_ms
        } else if x.client == y.client && !eviction {
            x.invoke_ms < y.invoke_ms
        } else {
            x.complete_ms + self.cross_client_ms < y.invoke_ms
        }
    }

    /// Whether mutation `m` may have taken effect before a read that
    /// returned at `complete_ms`: invoked before it, or, for an eviction,
    /// stamped by a clock that may have been ahead by up to the skew.
    fn may_precede(&self, m: &Record, complete_ms: u64) -> bool {
        let allowance = if m.client == EVICTOR { self.cross_client_ms } else { 0 };
        m.invoke_ms < complete_ms + allowance
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

/// Which session guarantee a [`Violation::SessionRead`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionRule {
    /// The read returned something older than (or, for an absent key,
    /// unexplained after) a put or delete of the client's own that was
    /// acknowledged before the read.
    ReadYourWrites,
    /// The read returned a value older than one the client read earlier.
    MonotonicReads,
}

/// Everything the suite can find wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// The final state lost an acknowledged write: it reads an older value,
    /// or nothing, with nothing acknowledged (or invoked) since to explain it.
    LostWrite { key: String, acked: OpRef, read: Read, read_at_ms: u64, read_writer: Option<OpRef> },
    /// An acknowledged delete was undone: the final state is a value
    /// certainly written before the delete.
    DeleteUndone { key: String, delete: OpRef, read: Read, read_writer: OpRef },
    /// An acknowledged clear was undone for this key.
    ClearUndone { key: String, clear: OpRef, read: Read, read_writer: OpRef },
    /// An eviction was undone: the final state is a value certainly written
    /// before a recorded eviction of the key, by a node that was not killed
    /// soon after logging it.
    EvictionUndone { key: String, eviction: Eviction, read: Read, read_writer: OpRef },
    /// A read returned a value after its latest possible expiry (its TTL,
    /// and every expire or persist that may have applied to it) had
    /// certainly passed.
    ExpiredRead { key: String, phase: Phase, read_op: OpKind, put: OpRef, expired_by_ms: u64, read_invoke_ms: u64 },
    /// A read returned something no operation explains.
    PhantomRead { key: String, value: String, read_invoke_ms: u64, reason: String },
    /// A client's read broke its session order: see [`SessionRule`]. Not
    /// (yet) a promise of the README, so it does not fail a run.
    SessionRead {
        key: String,
        client: u32,
        rule: SessionRule,
        read_op: OpKind,
        returned: String,
        read_invoke_ms: u64,
        /// The client's own write, or the writer of the value it read
        /// earlier, that the read should not have gone behind.
        earlier: OpRef,
        read_writer: Option<OpRef>,
    },
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
            Violation::EvictionUndone { .. } => "eviction_undone",
            Violation::ExpiredRead { .. } => "expired_read",
            Violation::PhantomRead { .. } => "phantom_read",
            Violation::SessionRead { .. } => "session_read",
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
            | Violation::EvictionUndone { key, .. }
            | Violation::ExpiredRead { key, .. }
            | Violation::PhantomRead { key, .. }
            | Violation::SessionRead { key, .. }
            | Violation::Unreadable { key, .. }
            | Violation::NotConverged { key, .. } => Some(key),
            Violation::MemoryExceeded { .. } | Violation::Unhealthy { .. } => None,
        }
    }

    /// Whether the README promises what this violation breaks, so that it
    /// fails the run. Session order for reads is checked and counted but
    /// not promised: whether the node guarantees it is to be decided from
    /// real runs.
    pub fn is_promised(&self) -> bool {
        !matches!(self, Violation::SessionRead { .. })
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
            Violation::EvictionUndone { key, eviction, read, read_writer } => write!(
                f,
                "eviction undone: key {key}: final read got {} (from {read_writer}) after its {eviction}",
                fmt_read(read)
            ),
            Violation::ExpiredRead { key, phase, read_op, put, expired_by_ms, read_invoke_ms } => write!(
                f,
                "expired value returned: key {key}: {phase:?} {} invoked at {read_invoke_ms} ms returned the value \
                 of {put}, expired by {expired_by_ms} ms at the latest",
                read_op.as_str()
            ),
            Violation::PhantomRead { key, value, read_invoke_ms, reason } => {
                write!(f, "phantom read: key {key}: read invoked at {read_invoke_ms} ms returned {value}: {reason}")
            }
            Violation::SessionRead { key, client, rule, read_op, returned, read_invoke_ms, earlier, read_writer } => {
                let (name, after) = match rule {
                    SessionRule::ReadYourWrites => ("read-your-writes", "its own acknowledged"),
                    SessionRule::MonotonicReads => ("monotonic reads", "it had read the value of"),
                };
                write!(
                    f,
                    "session read ({name}): key {key}: client {client}'s {} invoked at {read_invoke_ms} ms returned \
                     {returned}",
                    read_op.as_str()
                )?;
                if let Some(w) = read_writer {
                    write!(f, " (from {w})")?;
                }
                write!(f, " after {after} {earlier}")
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

/// What a successful read says about its key.
enum Observed<'a> {
    Value(&'a str),
    Absent,
    /// Some live value, unnamed (`exists` true, or a `ttl`).
    Present,
}

fn observed(r: &Record) -> Option<Observed<'_>> {
    match (r.op, r.read.as_ref(), r.answer) {
        (OpKind::Get, Some(Read::Value(v)), _) => Some(Observed::Value(v)),
        (OpKind::Get, Some(Read::Absent), _)
        | (OpKind::Exists, _, Some(Answer::Exists(false)))
        | (OpKind::Ttl, _, Some(Answer::Ttl(TtlAnswer::Missing))) => Some(Observed::Absent),
        (OpKind::Exists, _, Some(Answer::Exists(true))) | (OpKind::Ttl, _, Some(Answer::Ttl(_))) => {
            Some(Observed::Present)
        }
        _ => None,
    }
}

/// What a read returned, for a report.
fn describe(r: &Record) -> String {
    match (r.read.as_ref(), r.answer) {
        (Some(read), _) => fmt_read(read),
        (None, Some(Answer::Exists(e))) => format!("exists: {e}"),
        (None, Some(Answer::Ttl(TtlAnswer::Missing))) => "ttl: missing".into(),
        (None, Some(Answer::Ttl(TtlAnswer::Persistent))) => "ttl: no expiry".into(),
        (None, Some(Answer::Ttl(TtlAnswer::Expires { ms }))) => format!("ttl: {ms} ms"),
        _ => "nothing".into(),
    }
}

/// One key's operations.
#[derive(Default)]
struct KeyOps<'a> {
    /// Puts, TTL puts and deletes.
    writes: Vec<&'a Record>,
    /// Expires and persists that may have changed something (all but
    /// those that answered false).
    expiries: Vec<&'a Record>,
    final_reads: Vec<&'a Record>,
}

impl KeyOps<'_> {
    /// Whether expire or persist `e` may have rewritten the value `x` wrote.
    fn may_apply(e: &Record, x: &Record) -> bool {
        x.invoke_ms < e.complete_ms
    }

    /// The latest instant at which the value `x` wrote may stop being
    /// live (`None`: it may never stop): its TTL, extended by every expire
    /// or persist that may have found it still live. Each extension may
    /// enable another, hence the loop to a fixed point.
    fn latest_expiry(&self, x: &Record, opts: &CheckOptions) -> Option<u64> {
        let mut latest = x.complete_ms + x.ttl_ms?;
        let mut used = vec![false; self.expiries.len()];
        loop {
            let mut extended = false;
            for (e, used) in self.expiries.iter().zip(used.iter_mut()) {
                if *used || !Self::may_apply(e, x) || e.invoke_ms > latest + opts.expiry_slack_ms {
                    continue;
                }
                *used = true;
                extended = true;
                match (e.op, e.ttl_ms) {
                    (OpKind::Expire, Some(ttl)) => latest = latest.max(e.complete_ms + ttl),
                    _ => return None,
                }
            }
            if !extended {
                return Some(latest);
            }
        }
    }

    /// The earliest instant at which the value `x` wrote may have stopped
    /// being live: its own TTL, or any expire that may have applied to it.
    fn earliest_expiry(&self, x: &Record) -> Option<u64> {
        let own = x.ttl_ms.filter(|_| x.op == OpKind::PutTtl).map(|ttl| x.invoke_ms + ttl);
        let expires = self
            .expiries
            .iter()
            .filter(|e| e.op == OpKind::Expire && Self::may_apply(e, x))
            .filter_map(|e| e.ttl_ms.map(|ttl| e.invoke_ms + ttl));
        own.into_iter().chain(expires).min()
    }

    /// Why `exists` true or a `ttl` answer `r` cannot be explained by any
    /// value written to the key, if it cannot.
    fn unexplained_presence(&self, r: &Record, opts: &CheckOptions) -> Option<String> {
        let before: Vec<&Record> =
            self.writes.iter().copied().filter(|x| x.value.is_some() && x.invoke_ms < r.complete_ms).collect();
        if before.is_empty() {
            return Some("no value was written to the key before the read returned".into());
        }
        let live: Vec<&Record> = before
            .iter()
            .copied()
            .filter(|x| self.latest_expiry(x, opts).is_none_or(|at| at + opts.expiry_slack_ms >= r.invoke_ms))
            .collect();
        if live.is_empty() {
            return Some("every value written to the key before the read had certainly expired".into());
        }
        // Expires and persists that may have found one of the live values.
        let live = &live;
        let touching = |op: OpKind| {
            self.expiries.iter().copied().filter(move |e| {
                e.op == op && e.invoke_ms < r.complete_ms && live.iter().any(|x| Self::may_apply(e, x))
            })
        };
        match r.answer {
            Some(Answer::Ttl(TtlAnswer::Persistent)) => {
                let plain = live.iter().any(|x| x.ttl_ms.is_none());
                (!plain && touching(OpKind::Persist).next().is_none()).then(|| {
                    "ttl said no expiry, but every live value had a TTL and no persist may have removed it".into()
                })
            }
            Some(Answer::Ttl(TtlAnswer::Expires { ms })) => {
                let set = live
                    .iter()
                    .filter_map(|x| x.ttl_ms.map(|ttl| x.complete_ms + ttl))
                    .chain(touching(OpKind::Expire).filter_map(|e| e.ttl_ms.map(|ttl| e.complete_ms + ttl)))
                    .max();
                // The expiry was stamped by one node's clock and the
                // remainder taken by another's: the slack twice.
                match set {
                    None => Some("ttl reported an expiry, but no live value had one and no expire set one".into()),
                    Some(at) if ms > (at + 2 * opts.expiry_slack_ms).saturating_sub(r.invoke_ms) => Some(format!(
                        "ttl reported {ms} ms left, but no write or expire set an expiry later than {at} ms"
                    )),
                    Some(_) => None,
                }
            }
            _ => None,
        }
    }
}

/// One client's session on one key: its latest acknowledged put or
/// delete, and the writers of the values it read.
#[derive(Default)]
struct Session<'a> {
    acked: Option<&'a Record>,
    seen: Vec<&'a Record>,
}

/// Checks a history of a run without evictions. Deterministic: the
/// violations of every read come out in the order of the records, then the
/// final state of every key in the order of the keys.
pub fn check(history: &[Record], opts: &CheckOptions) -> Vec<Violation> {
    check_with_evictions(history, &[], opts)
}

/// Checks a history together with the evictions the nodes logged during
/// it (see *Evictions* in the module comment). Evictions of keys that no
/// client wrote are ignored.
pub fn check_with_evictions(history: &[Record], evictions: &[Eviction], opts: &CheckOptions) -> Vec<Violation> {
    let mut violations = Vec::new();
    // Each eviction as the delete it is, by EVICTOR at its stamp's instant;
    // one the harness killed the node after may not have happened.
    let eviction_records: Vec<Record> = evictions
        .iter()
        .map(|e| Record {
            outcome: if e.killed_after { Outcome::Unknown } else { Outcome::Ok },
            ..Record::invoke(EVICTOR, Phase::Run, OpKind::Delete, Some(e.key.clone()), e.at_ms)
        })
        .collect();
    let evicted_by: HashMap<*const Record, &Eviction> =
        eviction_records.iter().map(|r| r as *const Record).zip(evictions).collect();
    let mut writers: HashMap<&str, &Record> = HashMap::new();
    let mut keys: BTreeMap<&str, KeyOps<'_>> = BTreeMap::new();
    let mut clears: Vec<&Record> = Vec::new();
    for r in history {
        match (r.op, r.key.as_deref()) {
            (OpKind::Clear, _) => clears.push(r),
            (OpKind::Expire | OpKind::Persist, Some(key)) if r.answer != Some(Answer::Applied(false)) => {
                keys.entry(key).or_default().expiries.push(r);
            }
            // It answered false: it changed nothing.
            (OpKind::Expire | OpKind::Persist, _) => {}
            (op, Some(key)) if op.is_mutation() => {
                if let Some(v) = r.value.as_deref() {
                    writers.insert(v, r);
                }
                keys.entry(key).or_default().writes.push(r);
            }
            (OpKind::Get, Some(key)) if r.phase == Phase::Final => keys.entry(key).or_default().final_reads.push(r),
            _ => {}
        }
    }
    for r in &eviction_records {
        if let Some(ops) = r.key.as_deref().and_then(|key| keys.get_mut(key))
            && !ops.writes.is_empty()
        {
            ops.writes.push(r);
        }
    }
    let no_ops = KeyOps::default();

    // Every successful read, in the order of the history.
    let mut sessions: HashMap<(u32, &str), Session<'_>> = HashMap::new();
    for r in history {
        let Some(key) = r.key.as_deref() else { continue };
        if r.phase == Phase::Run && r.client < CONTROLLER && r.outcome == Outcome::Ok && r.op.is_mutation() {
            if matches!(r.op, OpKind::Put | OpKind::PutTtl | OpKind::Delete) {
                sessions.entry((r.client, key)).or_default().acked = Some(r);
            }
            continue;
        }
        if !r.op.is_read() || r.outcome != Outcome::Ok {
            continue;
        }
        let Some(seen) = observed(r) else { continue };
        let ops = keys.get(key).unwrap_or(&no_ops);
        let phantom = |value: String, reason: String| Violation::PhantomRead {
            key: key.into(),
            value,
            read_invoke_ms: r.invoke_ms,
            reason,
        };
        let writer = match seen {
            Observed::Value(value) => match writers.get(value) {
                None => {
                    violations.push(phantom(value.into(), "no operation wrote this value".into()));
                    continue;
                }
                Some(w) if w.key.as_deref() != Some(key) => {
                    let reason = format!("the value was written to key {}", w.key.as_deref().unwrap_or("?"));
                    violations.push(phantom(value.into(), reason));
                    continue;
                }
                Some(w) if w.invoke_ms > r.complete_ms => {
                    let reason = format!("the value was written at {} ms, after the read returned", w.invoke_ms);
                    violations.push(phantom(value.into(), reason));
                    continue;
                }
                Some(w) => {
                    if let Some(at) = ops.latest_expiry(w, opts)
                        && at + opts.expiry_slack_ms < r.invoke_ms
                    {
                        violations.push(Violation::ExpiredRead {
                            key: key.into(),
                            phase: r.phase,
                            read_op: r.op,
                            put: OpRef::of(w),
                            expired_by_ms: at,
                            read_invoke_ms: r.invoke_ms,
                        });
                    }
                    Some(*w)
                }
            },
            Observed::Present => {
                if let Some(reason) = ops.unexplained_presence(r, opts) {
                    violations.push(phantom(describe(r), reason));
                }
                None
            }
            Observed::Absent => None,
        };
        if r.phase != Phase::Run || r.client >= CONTROLLER {
            continue;
        }
        let session = sessions.entry((r.client, key)).or_default();
        let session_read = |rule: SessionRule, earlier: &Record| Violation::SessionRead {
            key: key.into(),
            client: r.client,
            rule,
            read_op: r.op,
            returned: describe(r),
            read_invoke_ms: r.invoke_ms,
            earlier: OpRef::of(earlier),
            read_writer: writer.map(OpRef::of),
        };
        match (writer, session.acked) {
            (Some(w), Some(own)) if opts.ordered(w, own) => {
                violations.push(session_read(SessionRule::ReadYourWrites, own));
            }
            (Some(w), _) => {
                if let Some(earlier) = session.seen.iter().find(|seen| opts.ordered(w, seen)) {
                    violations.push(session_read(SessionRule::MonotonicReads, earlier));
                }
            }
            (None, Some(own))
                if matches!(seen, Observed::Absent)
                    && own.value.is_some()
                    && !absence_explained(ops, &clears, own, r, opts) =>
            {
                violations.push(session_read(SessionRule::ReadYourWrites, own));
            }
            (None, _) => {}
        }
        if let Some(w) = writer
            && !session.seen.iter().any(|seen| std::ptr::eq(*seen, w))
        {
            session.seen.push(w);
        }
    }

    // The final state of every key against the model.
    for (key, ops) in &keys {
        if ops.writes.is_empty() {
            continue;
        }
        let mut mutations = ops.writes.clone();
        mutations.extend(clears.iter().copied());
        mutations.sort_by_key(|r| (r.invoke_ms, r.complete_ms));
        let acked: Vec<&Record> = mutations.iter().copied().filter(|r| r.outcome == Outcome::Ok).collect();
        // The client's acknowledged mutation that completed last is never
        // certainly ordered before another acknowledged one (that one would
        // have completed later), so it names what an unexplained absence
        // lost.
        let last_acked = acked.iter().copied().filter(|r| r.client != EVICTOR).max_by_key(|r| r.complete_ms);
        let candidate = |x: &Record| !acked.iter().any(|y| opts.ordered(x, y));

        let reads: Vec<&Record> = ops.final_reads.iter().copied().filter(|r| r.outcome == Outcome::Ok).collect();
        if reads.is_empty() {
            let error =
                ops.final_reads.last().and_then(|r| r.error.clone()).unwrap_or_else(|| "no final read was made".into());
            violations.push(Violation::Unreadable { key: (*key).into(), error });
            continue;
        }
        for read in reads {
            let result = read.read.clone().unwrap_or(Read::Absent);
            match &result {
                Read::Value(value) => {
                    // Phantoms were reported above.
                    let Some(w) = writers.get(value.as_str()).filter(|w| w.key.as_deref() == Some(*key)) else {
                        continue;
                    };
                    // The newest acknowledged mutation certainly after it;
                    // a client's if there is one, which needs no eviction
                    // record to be a violation.
                    let after: Vec<&Record> = acked.iter().copied().filter(|y| opts.ordered(w, y)).collect();
                    let newest = |evictions: bool| {
                        after.iter().copied().filter(|y| evictions || y.client != EVICTOR).max_by_key(|y| y.invoke_ms)
                    };
                    let Some(last) = newest(false).or_else(|| newest(true)) else {
                        continue;
                    };
                    if let Some(eviction) = evicted_by.get(&(last as *const Record)) {
                        violations.push(Violation::EvictionUndone {
                            key: (*key).into(),
                            eviction: (*eviction).clone(),
                            read: result.clone(),
                            read_writer: OpRef::of(w),
                        });
                        continue;
                    }
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
                                    OpKind::Delete | OpKind::Clear => opts.may_precede(x, read.complete_ms),
                                    _ => ops
                                        .earliest_expiry(x)
                                        .is_some_and(|at| at <= read.complete_ms + opts.expiry_early_ms),
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
    }
    violations
}

/// Whether a read `r` that found the key absent after the client's own
/// acknowledged put `own` is explained: by `own`'s value expiring, or by a
/// delete, the clear, an eviction or an expiring value not certainly
/// ordered before `own` and invoked (an eviction: stamped) before the read
/// returned.
fn absence_explained(ops: &KeyOps<'_>, clears: &[&Record], own: &Record, r: &Record, opts: &CheckOptions) -> bool {
    let may_have_expired =
        |x: &Record| ops.earliest_expiry(x).is_some_and(|at| at <= r.complete_ms + opts.expiry_early_ms);
    may_have_expired(own)
        || ops.writes.iter().chain(clears).any(|m| {
            opts.may_precede(m, r.complete_ms)
                && !opts.ordered(m, own)
                && !std::ptr::eq(*m, own)
                && matches!(m.op, OpKind::Delete | OpKind::Clear)
        })
        || ops.writes.iter().any(|m| {
            m.value.is_some()
                && m.invoke_ms < r.complete_ms
                && !opts.ordered(m, own)
                && !std::ptr::eq(*m, own)
                && may_have_expired(m)
        })
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
            answer: None,
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
            // Stale but written: allowed during the run, to a client other
            // than the writer (to the writer it breaks read-your-writes).
            Record { client: 1, ..read(Phase::Run, (16, 18), Some("v0.1")) },
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

    /// `r` as client `client`'s (its value tag unchanged).
    fn by(client: u32, r: Record) -> Record {
        Record { client, ..r }
    }

    fn expire(ttl: u64, at: (u64, u64), outcome: Outcome, applied: bool) -> Record {
        let mut r = op(OpKind::Expire, None, Some(ttl), at, outcome);
        r.answer = (outcome == Outcome::Ok).then_some(Answer::Applied(applied));
        r
    }

    fn persist(at: (u64, u64), outcome: Outcome) -> Record {
        let mut r = op(OpKind::Persist, None, None, at, outcome);
        r.answer = (outcome == Outcome::Ok).then_some(Answer::Applied(true));
        r
    }

    fn answered(op_kind: OpKind, at: (u64, u64), answer: Answer) -> Record {
        let mut r = op(op_kind, None, None, at, Outcome::Ok);
        r.answer = Some(answer);
        r
    }

    fn exists(at: (u64, u64), yes: bool) -> Record {
        answered(OpKind::Exists, at, Answer::Exists(yes))
    }

    fn ttl(at: (u64, u64), answer: TtlAnswer) -> Record {
        answered(OpKind::Ttl, at, Answer::Ttl(answer))
    }

    #[test]
    fn writes_of_different_clients_are_ordered_only_beyond_the_allowance() {
        // Client 2's put invoked 10 ms after client 1's completed: more
        // than the 5 ms of clock granularity, so certainly later.
        let h = vec![
            by(1, put("v1.1", (0, 10), Outcome::Ok)),
            by(2, put("v2.1", (20, 30), Outcome::Ok)),
            fin(Some("v1.1")),
        ];
        assert_eq!(kinds(&h), ["lost_write"]);
        // Within the allowance either order is possible.
        let h = vec![
            by(1, put("v1.1", (0, 10), Outcome::Ok)),
            by(2, put("v2.1", (14, 30), Outcome::Ok)),
            fin(Some("v1.1")),
        ];
        assert_eq!(kinds(&h), Vec::<&str>::new());
        // With clock skew the allowance is twice the skew: 20 ms apart is
        // no order at all then, 7 s apart is.
        let skewed =
            |h: &[Record]| check(h, &CheckOptions::with_clock_skew(3_000)).iter().map(|v| v.kind()).collect::<Vec<_>>();
        let h = vec![
            by(1, put("v1.1", (0, 10), Outcome::Ok)),
            by(2, put("v2.1", (20, 30), Outcome::Ok)),
            fin(Some("v1.1")),
        ];
        assert_eq!(skewed(&h), Vec::<&str>::new());
        let h = vec![
            by(1, put("v1.1", (0, 10), Outcome::Ok)),
            by(2, put("v2.1", (7_000, 7_010), Outcome::Ok)),
            fin(Some("v1.1")),
        ];
        assert_eq!(skewed(&h), ["lost_write"]);
        // One client's writes stay strictly ordered whatever the skew.
        let h = vec![
            by(1, put("v1.1", (0, 10), Outcome::Ok)),
            by(1, put("v1.2", (11, 30), Outcome::Ok)),
            fin(Some("v1.1")),
        ];
        assert_eq!(skewed(&h), ["lost_write"]);
    }

    #[test]
    fn a_delete_by_another_client_undoes_only_values_certainly_before_it() {
        let h =
            vec![by(1, put("v1.1", (0, 10), Outcome::Ok)), by(2, delete((100, 110), Outcome::Ok)), fin(Some("v1.1"))];
        assert_eq!(kinds(&h), ["delete_undone"]);
        let h = vec![by(1, put("v1.1", (0, 10), Outcome::Ok)), by(2, delete((12, 20), Outcome::Ok)), fin(Some("v1.1"))];
        assert_eq!(kinds(&h), Vec::<&str>::new());
        // Absent is explained by either writer's last word.
        let h = vec![by(1, put("v1.1", (12, 20), Outcome::Ok)), by(2, delete((0, 10), Outcome::Ok)), fin(None)];
        assert_eq!(kinds(&h), Vec::<&str>::new());
        let h = vec![by(2, delete((0, 10), Outcome::Ok)), by(1, put("v1.1", (100, 110), Outcome::Ok)), fin(None)];
        assert_eq!(kinds(&h), ["lost_write"]);
    }

    #[test]
    fn a_read_older_than_the_clients_own_acknowledged_write_breaks_read_your_writes() {
        let h = vec![
            put("v0.1", (0, 5), Outcome::Ok),
            put("v0.2", (10, 15), Outcome::Ok),
            read(Phase::Run, (20, 25), Some("v0.1")),
            fin(Some("v0.2")),
        ];
        let v = check(&h, &CheckOptions::default());
        assert_eq!(v.iter().map(|v| v.kind()).collect::<Vec<_>>(), ["session_read"]);
        match &v[0] {
            Violation::SessionRead { rule, earlier, read_writer, .. } => {
                assert_eq!(*rule, SessionRule::ReadYourWrites);
                assert_eq!(earlier.value.as_deref(), Some("v0.2"));
                assert_eq!(read_writer.as_ref().unwrap().value.as_deref(), Some("v0.1"));
            }
            other => panic!("{other}"),
        }
        assert!(!v[0].is_promised(), "session order of reads is not promised (yet)");
        // Another client's value, certainly older than the client's write.
        let older = vec![
            by(1, put("v1.1", (0, 10), Outcome::Ok)),
            put("v0.1", (100, 110), Outcome::Ok),
            read(Phase::Run, (120, 125), Some("v1.1")),
            fin(Some("v0.1")),
        ];
        assert_eq!(kinds(&older), ["session_read"]);
        // Clean: a concurrent write of another client, an own write that
        // was not acknowledged, another client reading the older value.
        let clean = vec![
            by(1, put("v1.1", (0, 98), Outcome::Ok)),
            put("v0.1", (100, 110), Outcome::Ok),
            read(Phase::Run, (120, 125), Some("v1.1")),
            put("v0.2", (130, 140), Outcome::Unknown),
            read(Phase::Run, (150, 155), Some("v0.1")),
            by(2, read(Phase::Run, (150, 155), Some("v1.1"))),
            fin(Some("v0.2")),
        ];
        assert_eq!(kinds(&clean), Vec::<&str>::new());
    }

    #[test]
    fn an_older_value_after_the_clients_own_acknowledged_delete_breaks_read_your_writes() {
        let h = vec![
            put("v0.1", (0, 5), Outcome::Ok),
            delete((10, 15), Outcome::Ok),
            read(Phase::Run, (20, 25), Some("v0.1")),
            fin(None),
        ];
        assert_eq!(kinds(&h), ["session_read"]);
        let h = vec![
            put("v0.1", (0, 5), Outcome::Ok),
            delete((10, 15), Outcome::Unknown),
            read(Phase::Run, (20, 25), Some("v0.1")),
            fin(None),
        ];
        assert_eq!(kinds(&h), Vec::<&str>::new());
    }

    #[test]
    fn absence_after_the_clients_own_put_needs_a_delete_clear_or_expiry() {
        let base = vec![put("v0.1", (0, 5), Outcome::Ok)];
        for absent in [read(Phase::Run, (20, 25), None), exists((20, 25), false), ttl((20, 25), TtlAnswer::Missing)] {
            let mut h = base.clone();
            h.push(absent.clone());
            h.push(fin(Some("v0.1")));
            assert_eq!(kinds(&h), ["session_read"], "{absent:?}");
            // Explained by another client's delete, even an unacknowledged
            // one, by the clear, or by an expiry that may have passed.
            let explanations = [
                by(1, delete((3, 30), Outcome::Unknown)),
                clear((4, 8)),
                by(1, put_ttl("v1.1", 10, (1, 3), Outcome::Ok)),
                expire(10, (6, 9), Outcome::Ok, true),
            ];
            for why in explanations {
                let mut h = base.clone();
                h.push(why.clone());
                h.push(absent.clone());
                h.push(fin(None));
                assert_eq!(kinds(&h), Vec::<&str>::new(), "{why:?}");
            }
        }
        // But not by a delete certainly before the put.
        let h = vec![
            by(1, delete((0, 2), Outcome::Ok)),
            put("v0.1", (100, 105), Outcome::Ok),
            read(Phase::Run, (120, 125), None),
            fin(Some("v0.1")),
        ];
        assert_eq!(kinds(&h), ["session_read"]);
    }

    #[test]
    fn a_value_older_than_one_the_client_read_before_breaks_monotonic_reads() {
        let writes = vec![put("v0.1", (0, 5), Outcome::Ok), put("v0.2", (10, 15), Outcome::Unknown)];
        let mut h = writes.clone();
        h.push(by(1, read(Phase::Run, (20, 25), Some("v0.2"))));
        h.push(by(1, read(Phase::Run, (30, 35), Some("v0.1"))));
        h.push(fin(Some("v0.2")));
        let v = check(&h, &CheckOptions::default());
        assert!(
            matches!(&v[..], [Violation::SessionRead { rule: SessionRule::MonotonicReads, client: 1, .. }]),
            "{v:?}"
        );
        // The other way round, or by two clients, is fine.
        let mut h = writes.clone();
        h.push(by(1, read(Phase::Run, (20, 25), Some("v0.1"))));
        h.push(by(1, read(Phase::Run, (30, 35), Some("v0.2"))));
        h.push(by(2, read(Phase::Run, (40, 45), Some("v0.1"))));
        h.push(fin(Some("v0.2")));
        assert_eq!(kinds(&h), Vec::<&str>::new());
    }

    #[test]
    fn expire_and_persist_extend_the_expiry_a_read_is_judged_by() {
        let base = vec![put_ttl("v0.1", 1000, (0, 100), Outcome::Ok)];
        let late = by(1, read(Phase::Run, (3000, 3010), Some("v0.1")));
        let with = |extra: Vec<Record>, read: &Record| {
            let mut h = base.clone();
            h.extend(extra);
            h.push(read.clone());
            h.push(fin(None));
            kinds(&h)
        };
        assert_eq!(with(vec![], &late), ["expired_read"]);
        // An expire or persist that may have found the value live may
        // have extended it, whatever its outcome ...
        for extension in [
            expire(5000, (500, 600), Outcome::Ok, true),
            expire(5000, (500, 600), Outcome::Unknown, false),
            persist((500, 600), Outcome::Fail),
        ] {
            assert_eq!(with(vec![extension.clone()], &late), Vec::<&str>::new(), "{extension:?}");
        }
        // ... also one that found it through an earlier extension ...
        let chained = vec![expire(2000, (500, 600), Outcome::Ok, true), expire(5000, (2500, 2600), Outcome::Ok, true)];
        assert_eq!(with(chained.clone(), &by(1, read(Phase::Run, (7000, 7010), Some("v0.1")))), Vec::<&str>::new());
        assert_eq!(with(chained, &by(1, read(Phase::Run, (8000, 8010), Some("v0.1")))), ["expired_read"]);
        // ... but not one that answered false, one invoked after the value
        // had certainly expired, or an expire past its own TTL.
        for no in [expire(5000, (500, 600), Outcome::Ok, false), expire(5000, (1400, 1500), Outcome::Ok, true)] {
            assert_eq!(with(vec![no.clone()], &late), ["expired_read"], "{no:?}");
        }
        let read = by(1, read(Phase::Run, (6000, 6010), Some("v0.1")));
        assert_eq!(with(vec![expire(5000, (500, 600), Outcome::Ok, true)], &read), ["expired_read"]);
    }

    #[test]
    fn an_expire_that_may_have_applied_explains_an_absent_final_state() {
        let base = vec![put("v0.1", (0, 5), Outcome::Ok)];
        let mut h = base.clone();
        h.push(fin(None));
        assert_eq!(kinds(&h), ["lost_write"]);
        let mut h = base.clone();
        h.push(by(1, expire(1000, (10, 20), Outcome::Unknown, false)));
        h.push(fin(None));
        assert_eq!(kinds(&h), Vec::<&str>::new());
        let mut h = base.clone();
        h.push(by(1, expire(1000, (10, 20), Outcome::Ok, false)));
        h.push(fin(None));
        assert_eq!(kinds(&h), ["lost_write"], "an expire that answered false changed nothing");
    }

    /// An eviction of `key` stamped at `at_ms`, logged by n1, which the
    /// harness killed afterwards if `killed_after`.
    fn eviction(key: &str, at_ms: u64, killed_after: bool) -> Eviction {
        Eviction {
            node: "n1".into(),
            incarnation: 1,
            key: key.into(),
            ts: Timestamp::new(1_700_000_000_000 + at_ms, 0).0,
            tag: 1,
            at_ms,
            logged_ms: Some(at_ms),
            killed_after,
        }
    }

    fn kinds_with(history: &[Record], evictions: &[Eviction]) -> Vec<&'static str> {
        check_with_evictions(history, evictions, &CheckOptions::default()).iter().map(|v| v.kind()).collect()
    }

    #[test]
    fn only_an_eviction_of_the_key_late_enough_explains_its_absence() {
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), fin(None)];
        // No eviction, or an eviction of another key: a lost write.
        assert_eq!(kinds_with(&h, &[]), ["lost_write"]);
        assert_eq!(kinds_with(&h, &[eviction("u/0/9", 50, false)]), ["lost_write"]);
        // An eviction of the key after the put, or concurrent with it (it
        // may have been stamped after), even one that may not have happened.
        for e in [eviction(K, 50, false), eviction(K, 50, true), eviction(K, 2, false)] {
            assert_eq!(kinds_with(&h, std::slice::from_ref(&e)), Vec::<&str>::new(), "{e}");
        }
        // Not one certainly before the last acknowledged write, nor one
        // stamped after the final read returned.
        let h2 = vec![put("v0.1", (0, 5), Outcome::Ok), put("v0.2", (100, 105), Outcome::Ok), fin(None)];
        assert_eq!(kinds_with(&h2, &[eviction(K, 50, false)]), ["lost_write"]);
        assert_eq!(kinds_with(&h, &[eviction(K, 100_100, false)]), ["lost_write"]);
        // Clock skew widens "concurrent" both ways, as for two clients: an
        // eviction stamped 5 s before a put may be after it when a clock
        // was 3 s off.
        let h = vec![put("v0.1", (10_000, 10_005), Outcome::Ok), fin(None)];
        let e = [eviction(K, 5_000, false)];
        assert_eq!(kinds_with(&h, &e), ["lost_write"]);
        assert!(check_with_evictions(&h, &e, &CheckOptions::with_clock_skew(3_000)).is_empty());
    }

    #[test]
    fn an_eviction_never_explains_a_stale_value() {
        // v0.2 was acknowledged after v0.1: returning v0.1 is a lost write
        // whether an eviction came between them, after them, or not at all.
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), put("v0.2", (100, 105), Outcome::Ok), fin(Some("v0.1"))];
        for evictions in
            [vec![], vec![eviction(K, 50, false)], vec![eviction(K, 500, false)], vec![eviction(K, 500, true)]]
        {
            assert_eq!(kinds_with(&h, &evictions), ["lost_write"], "{evictions:?}");
        }
        // And after an acknowledged delete, a delete undone.
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), delete((100, 105), Outcome::Ok), fin(Some("v0.1"))];
        assert_eq!(kinds_with(&h, &[eviction(K, 500, false)]), ["delete_undone"]);
    }

    #[test]
    fn a_value_written_before_an_eviction_of_its_key_must_not_come_back() {
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), fin(Some("v0.1"))];
        let v = check_with_evictions(&h, &[eviction(K, 50, false)], &CheckOptions::default());
        match &v[..] {
            [Violation::EvictionUndone { key, eviction, read_writer, .. }] => {
                assert_eq!((key.as_str(), eviction.at_ms), (K, 50));
                assert_eq!(read_writer.value.as_deref(), Some("v0.1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(v[0].to_string().contains("eviction by n1 (start 1) at 50 ms"), "{}", v[0]);
        // Unless the node was killed after logging it (the tombstone may
        // never have been written), or the eviction may have been stamped
        // before the put, or a later write replaced the tombstone.
        assert_eq!(kinds_with(&h, &[eviction(K, 50, true)]), Vec::<&str>::new());
        assert_eq!(kinds_with(&h, &[eviction(K, 3, false)]), Vec::<&str>::new());
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), put("v0.2", (100, 105), Outcome::Ok), fin(Some("v0.2"))];
        assert_eq!(kinds_with(&h, &[eviction(K, 50, false)]), Vec::<&str>::new());
    }

    #[test]
    fn an_eviction_explains_a_clients_own_write_read_absent() {
        let h = vec![put("v0.1", (0, 5), Outcome::Ok), read(Phase::Run, (100, 105), None), fin(None)];
        assert_eq!(kinds_with(&h, &[]), ["session_read", "lost_write"]);
        assert_eq!(kinds_with(&h, &[eviction(K, 50, false)]), Vec::<&str>::new());
        // Stamped after the read returned: it explains the final state only.
        assert_eq!(kinds_with(&h, &[eviction(K, 200, false)]), ["session_read"]);
    }

    #[test]
    fn exists_and_ttl_answers_must_be_explained_by_a_live_value() {
        let phantoms = |h: &[Record]| {
            check(h, &CheckOptions::default())
                .into_iter()
                .map(|v| match v {
                    Violation::PhantomRead { value, .. } => value,
                    other => panic!("{other}"),
                })
                .collect::<Vec<_>>()
        };
        // Nothing written yet, or everything written had certainly expired.
        let h = vec![exists((0, 5), true), ttl((0, 5), TtlAnswer::Persistent)];
        assert_eq!(phantoms(&h), ["exists: true", "ttl: no expiry"]);
        let h = vec![put_ttl("v0.1", 1000, (0, 100), Outcome::Ok), exists((3000, 3005), true), fin(None)];
        assert_eq!(phantoms(&h), ["exists: true"]);
        // No expiry although every value had one, and no persist.
        let h = vec![put_ttl("v0.1", 5000, (0, 100), Outcome::Ok), ttl((200, 205), TtlAnswer::Persistent), fin(None)];
        assert_eq!(phantoms(&h), ["ttl: no expiry"]);
        // More time left than any write or expire set.
        let h = vec![
            put_ttl("v0.1", 1000, (0, 100), Outcome::Ok),
            ttl((200, 205), TtlAnswer::Expires { ms: 9000 }),
            fin(None),
        ];
        assert_eq!(phantoms(&h), ["ttl: 9000 ms"]);
        // Clean: a live value, a persist, an expire that set the time left.
        let h = vec![
            put_ttl("v0.1", 1000, (0, 100), Outcome::Ok),
            exists((200, 205), true),
            ttl((200, 205), TtlAnswer::Expires { ms: 850 }),
            expire(9000, (300, 310), Outcome::Ok, true),
            ttl((400, 405), TtlAnswer::Expires { ms: 8900 }),
            persist((500, 510), Outcome::Unknown),
            ttl((600, 605), TtlAnswer::Persistent),
            put("v0.2", (700, 710), Outcome::Ok),
            ttl((720, 725), TtlAnswer::Persistent),
            fin(Some("v0.2")),
        ];
        assert_eq!(phantoms(&h), Vec::<String>::new());
    }
}
