//! The run's summary: what was done, what went wrong, how long healing took.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ringkv_net::wire::MemoryStatus;
use serde::Serialize;

use crate::checker::Violation;
use crate::evictions::{self, Eviction};
use crate::faults::Applied;
use crate::history::{OpKind, Outcome, Phase, Record};

/// Invoked / acknowledged / failed / unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        self.invoked += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}

/// Counts per operation kind, for one phase.
pub fn count(history: &[Record], phase: Phase) -> BTreeMap<&'static str, Counts> {
    let mut out = BTreeMap::new();
    for r in history.iter().filter(|r| r.phase == phase) {
        out.entry(r.op.as_str()).or_insert_with(Counts::default).add(r.outcome);
    }
    out
}

/// What the memory bound of the cache profile did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvictionSummary {
    /// Every node's `maxmemory`, bytes, and its policy.
    pub maxmemory_bytes: u64,
    pub policy: String,
    /// Evictions the nodes logged (`evictions.jsonl`), of how many keys.
    pub evictions: u64,
    pub keys: usize,
    pub by_node: BTreeMap<String, u64>,
    /// Of them, logged by a process the harness killed afterwards (they
    /// may not have taken effect).
    pub killed_after: u64,
    /// Workload writes that failed with a memory refusal in their error
    /// (a coordinator's own, or a replica's within a quorum failure).
    pub writes_refused_for_memory: u64,
    /// What each node serving at the end reported; its counters start at
    /// its last start.
    pub status: BTreeMap<String, MemoryStatus>,
}

impl EvictionSummary {
    pub fn new(
        maxmemory_bytes: u64,
        policy: &str,
        logged: &[Eviction],
        history: &[Record],
        status: BTreeMap<String, MemoryStatus>,
    ) -> EvictionSummary {
        let mut keys: Vec<&str> = logged.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        EvictionSummary {
            maxmemory_bytes,
            policy: policy.into(),
            evictions: logged.len() as u64,
            keys: keys.len(),
            by_node: evictions::per_node(logged),
            killed_after: logged.iter().filter(|e| e.killed_after).count() as u64,
            writes_refused_for_memory: history
                .iter()
                .filter(|r| r.op.is_mutation() && r.error.as_deref().is_some_and(|e| e.contains("out of memory")))
                .count() as u64,
            status,
        }
    }
}

impl fmt::Display for EvictionSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_node: Vec<String> = self.by_node.iter().map(|(n, c)| format!("{n} {c}")).collect();
        writeln!(
            f,
            "memory bound: maxmemory {} per node, {}: {} evictions of {} keys logged ({}), {} of them by a process \
             killed afterwards; {} writes refused for memory",
            ringkv_core::format_size(self.maxmemory_bytes),
            self.policy,
            self.evictions,
            self.keys,
            if by_node.is_empty() { "none".to_string() } else { by_node.join(", ") },
            self.killed_after,
            self.writes_refused_for_memory
        )?;
        let status: Vec<String> = self
            .status
            .iter()
            .map(|(n, m)| {
                format!("{n} {:.1} MiB, {} evictions, {} refused", m.used as f64 / 1048576.0, m.evictions, m.refused)
            })
            .collect();
        write!(f, "  at the end, since each node's last start: {}", status.join("; "))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub fault_phase_ms: u64,
    pub nodes: usize,
    pub clients: usize,
    pub keys: usize,
    pub ops: BTreeMap<&'static str, Counts>,
    pub final_reads: Counts,
    pub faults: Vec<Applied>,
    pub convergence_bound_ms: u64,
    /// From the end of the workload (every fault over, every link healed).
    pub convergence_ms: Option<u64>,
    pub convergence_passes: u32,
    pub memory_bound_bytes: u64,
    pub max_rss_bytes: BTreeMap<String, u64>,
    /// The cache profile's evictions; `None` without a memory bound.
    pub evictions: Option<EvictionSummary>,
    pub violations: Vec<Violation>,
    pub history: PathBuf,
    pub out_dir: PathBuf,
    pub wall_ms: u64,
}

impl Summary {
    /// No violation of anything the README promises. Session-order
    /// violations of reads ([`Violation::is_promised`]) are reported, with
    /// a count of their own, but do not fail the run.
    pub fn passed(&self) -> bool {
        self.violations.iter().all(|v| !v.is_promised())
    }

    /// How many reads broke session order (`session_read`).
    pub fn session_reads(&self) -> usize {
        self.violations.iter().filter(|v| !v.is_promised()).count()
    }
}

/// The last `per_node` lines of each node's log in `logs` (`n1.log`, ...)
/// that say how its membership changed (fences, joins, discarded data,
/// stalls): what a failed run's printout needs when its directory is gone,
/// as on a CI machine, to tell why a node stayed out.
pub fn membership_events(logs: &Path, per_node: usize) -> String {
    let Ok(dir) = std::fs::read_dir(logs) else { return String::new() };
    let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut out = String::new();
    for log in files {
        let Ok(text) = std::fs::read_to_string(&log) else { continue };
        let events: Vec<&str> =
            text.lines().filter(|line| MEMBERSHIP_EVENTS.iter().any(|event| line.contains(event))).collect();
        let node = log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for line in &events[events.len().saturating_sub(per_node)..] {
            out.push_str(&format!("{node}: {line}\n"));
        }
    }
    out
}

/// Fragments of the node's log messages on membership changes.
const MEMBERSHIP_EVENTS: &[&str] = &[
    "removed this node from the ring",
    "fenced members changed",
    "fencing it",
    "discarded this node's data",
    "discarded entries from an earlier membership",
    "down for longer than half",
    "joined: partitions pulled",
    "did not run for longer than half",
    "confirms this node's membership",
    "not heard from yet",
];

/// Most violations of one kind listed in the text summary (all are in
/// `violations.json`).
const LIST_PER_KIND: usize = 20;

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "=== ringkv chaos: seed {} ===", self.seed)?;
        writeln!(
            f,
            "cluster: {} nodes (N=3 W=2 R=2), {} clients, fault phase planned {:.0}s, wall time {:.1}s",
            self.nodes,
            self.clients,
            self.fault_phase_ms as f64 / 1000.0,
            self.wall_ms as f64 / 1000.0
        )?;
        let total = self.ops.values().fold(Counts::default(), |a, c| Counts {
            invoked: a.invoked + c.invoked,
            ok: a.ok + c.ok,
            fail: a.fail + c.fail,
            unknown: a.unknown + c.unknown,
        });
        writeln!(f, "operations: {} invoked on {} keys", total.invoked, self.keys)?;
        writeln!(f, "  {:<8} {:>8} {:>8} {:>8} {:>8}", "op", "invoked", "acked", "failed", "unknown")?;
        for kind in OpKind::ALL {
            if let Some(c) = self.ops.get(kind.as_str()) {
                writeln!(f, "  {:<8} {:>8} {:>8} {:>8} {:>8}", kind.as_str(), c.invoked, c.ok, c.fail, c.unknown)?;
            }
        }
        writeln!(f, "  {:<8} {:>8} {:>8} {:>8} {:>8}", "total", total.invoked, total.ok, total.fail, total.unknown)?;
        writeln!(
            f,
            "  final reads (consistency all): {} of {} succeeded",
            self.final_reads.ok, self.final_reads.invoked
        )?;
        let mut kinds: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for fault in self.faults.iter().flat_map(|a| std::iter::once(&a.fault).chain(a.fault.also.as_deref())) {
            let count = kinds.entry(fault.kind.as_str()).or_default();
            count.0 += 1;
            count.1 += usize::from(fault.is_long());
        }
        let overlapping = self.faults.iter().filter(|a| a.fault.also.is_some()).count();
        let faults: usize = kinds.values().map(|(n, _)| n).sum();
        let kinds: Vec<String> = kinds
            .iter()
            .map(
                |(kind, (n, long))| {
                    if *long > 0 { format!("{n} {kind} ({long} past the graces)") } else { format!("{n} {kind}") }
                },
            )
            .collect();
        writeln!(
            f,
            "faults applied: {faults} in {} items, {overlapping} of them two at once ({})",
            self.faults.len(),
            kinds.join(", ")
        )?;
        for a in &self.faults {
            let healthy = a.healthy_ms.map_or("never".to_string(), |h| format!("{:.1}s", h as f64 / 1000.0));
            writeln!(
                f,
                "  {}  | ran {:.1}s..{:.1}s, healthy at {healthy}{}",
                a.fault,
                a.start_ms as f64 / 1000.0,
                a.end_ms as f64 / 1000.0,
                if a.note.is_empty() { String::new() } else { format!(" ({})", a.note) }
            )?;
        }
        match self.convergence_ms {
            Some(ms) => writeln!(
                f,
                "convergence: every key's replicas identical {:.1}s after healing ({} passes; bound {:.0}s)",
                ms as f64 / 1000.0,
                self.convergence_passes,
                self.convergence_bound_ms as f64 / 1000.0
            )?,
            None => writeln!(
                f,
                "convergence: NOT within the bound of {:.0}s ({} passes)",
                self.convergence_bound_ms as f64 / 1000.0,
                self.convergence_passes
            )?,
        }
        let rss: Vec<String> =
            self.max_rss_bytes.iter().map(|(n, b)| format!("{n} {:.0} MiB", *b as f64 / 1048576.0)).collect();
        writeln!(f, "max RSS (bound {} MiB): {}", self.memory_bound_bytes >> 20, rss.join(", "))?;
        if let Some(evictions) = &self.evictions {
            writeln!(f, "{evictions}")?;
        }
        let promised: Vec<&Violation> = self.violations.iter().filter(|v| v.is_promised()).collect();
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &promised {
            *by_kind.entry(v.kind()).or_default() += 1;
        }
        if promised.is_empty() {
            writeln!(f, "violations: none")?;
        } else {
            let counts: Vec<String> = by_kind.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
            writeln!(f, "violations: {} ({})", promised.len(), counts.join(", "))?;
            list(f, &promised)?;
        }
        let session: Vec<&Violation> = self.violations.iter().filter(|v| !v.is_promised()).collect();
        writeln!(
            f,
            "session order of reads (checked, not promised by the README, not counted in the result): {} session_read",
            session.len()
        )?;
        list(f, &session)?;
        writeln!(f, "history: {}", self.history.display())?;
        writeln!(f, "node logs, schedule, summary: {}", self.out_dir.display())?;
        write!(f, "result: {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// Lists violations, at most [`LIST_PER_KIND`] of each kind.
fn list(f: &mut fmt::Formatter<'_>, violations: &[&Violation]) -> fmt::Result {
    let mut listed: BTreeMap<&str, usize> = BTreeMap::new();
    for v in violations {
        let n = listed.entry(v.kind()).or_default();
        *n += 1;
        if *n <= LIST_PER_KIND {
            writeln!(f, "  - {v}")?;
        } else if *n == LIST_PER_KIND + 1 {
            writeln!(f, "  - ... more {} violations in violations.json", v.kind())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{OpRef, SessionRule};

    fn summary(violations: Vec<Violation>) -> Summary {
        let mut ops = BTreeMap::new();
        ops.insert(OpKind::Expire.as_str(), Counts { invoked: 3, ok: 2, fail: 1, unknown: 0 });
        Summary {
            seed: 1,
            fault_phase_ms: 1000,
            nodes: 5,
            clients: 4,
            keys: 1,
            ops,
            final_reads: Counts::default(),
            faults: Vec::new(),
            convergence_bound_ms: 1000,
            convergence_ms: Some(10),
            convergence_passes: 1,
            memory_bound_bytes: 1 << 30,
            max_rss_bytes: BTreeMap::new(),
            evictions: None,
            violations,
            history: PathBuf::from("history.jsonl"),
            out_dir: PathBuf::from("."),
            wall_ms: 1,
        }
    }

    #[test]
    fn session_reads_are_counted_apart_and_do_not_fail_the_run() {
        let put = OpRef {
            client: 0,
            op: OpKind::Put,
            value: Some("v0.2".into()),
            invoke_ms: 10,
            complete_ms: 15,
            outcome: Outcome::Ok,
        };
        let session = Violation::SessionRead {
            key: "s/1".into(),
            client: 0,
            rule: SessionRule::ReadYourWrites,
            read_op: OpKind::Get,
            returned: "v0.1".into(),
            read_invoke_ms: 20,
            earlier: put,
            read_writer: None,
        };
        let s = summary(vec![session.clone()]);
        assert!(s.passed());
        assert_eq!(s.session_reads(), 1);
        let text = s.to_string();
        assert!(text.contains("violations: none"), "{text}");
        assert!(text.contains("not counted in the result): 1 session_read"), "{text}");
        assert!(text.contains("expire"), "every op kind run is in the table: {text}");
        assert!(text.ends_with("result: PASS"), "{text}");

        let s = summary(vec![session, Violation::Unhealthy { what: "n1 did not come back".into() }]);
        assert!(!s.passed());
        let text = s.to_string();
        assert!(text.contains("violations: 1 (1 unhealthy)"), "{text}");
        assert!(text.ends_with("result: FAIL"), "{text}");
    }

    #[test]
    fn the_cache_profile_reports_its_evictions() {
        let eviction = |node: &str, key: &str, killed_after: bool| Eviction {
            node: node.into(),
            incarnation: 1,
            key: key.into(),
            ts: 0,
            tag: 1,
            at_ms: 0,
            logged_ms: None,
            killed_after,
        };
        let logged = [eviction("n1", "u/0/1", false), eviction("n1", "u/0/2", true), eviction("n2", "u/0/1", false)];
        let mut refused = Record::invoke(0, Phase::Run, OpKind::Put, Some("u/0/3".into()), 5);
        refused.finish::<()>(
            6,
            &Err(ringkv_core::KvError::OutOfMemory { used: 9, needed: 2, limit: 8, policy: "allkeys-lru".into() }),
        );
        let status = BTreeMap::from([(
            "n1".to_string(),
            MemoryStatus { used: 3 << 20, limit: 4 << 20, policy: "allkeys-lru".into(), evictions: 2, refused: 1 },
        )]);
        let mut s = summary(Vec::new());
        s.evictions = Some(EvictionSummary::new(4 << 20, "allkeys-lru", &logged, &[refused], status));
        let text = s.to_string();
        assert!(
            text.contains(
                "memory bound: maxmemory 4mb per node, allkeys-lru: 3 evictions of 2 keys logged (n1 2, n2 1), 1 of \
                 them by a process killed afterwards; 1 writes refused for memory"
            ),
            "{text}"
        );
        assert!(text.contains("n1 3.0 MiB, 2 evictions, 1 refused"), "{text}");
        assert!(summary(Vec::new()).to_string().lines().all(|l| !l.starts_with("memory bound")));
    }

    #[test]
    fn membership_events_are_the_last_of_each_node_in_node_order() {
        let dir = std::env::temp_dir().join(format!("ringkv-chaos-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n1 = "a INFO membership changed\nb WARN a member removed this node from the ring while it was out\n\
                  c WARN removed from the ring while out: discarded this node's data; joining anew\n\
                  d INFO joined: partitions pulled; serving\n";
        std::fs::write(dir.join("n2.log"), "e INFO fenced members changed fenced=[\"n1\"]\n").unwrap();
        std::fs::write(dir.join("n1.log"), n1).unwrap();
        let events = membership_events(&dir, 2);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            events,
            "n1: c WARN removed from the ring while out: discarded this node's data; joining anew\n\
             n1: d INFO joined: partitions pulled; serving\n\
             n2: e INFO fenced members changed fenced=[\"n1\"]\n"
        );
        assert_eq!(membership_events(Path::new("/nonexistent/logs"), 2), "", "no logs, no events");
    }
}
