//! The evictions of a run with a memory bound, as the nodes logged them:
//! the evidence on which the checker accepts an acknowledged write's key
//! as absent.
//!
//! A node bound by `maxmemory` evicts by writing a tombstone stamped by its
//! hybrid logical clock, like a delete nobody asked for, and logs every
//! eviction at DEBUG under the target `ringkv::eviction`
//! ([`LOG_DIRECTIVE`], which the harness adds to the nodes' `RUST_LOG`):
//!
//! `2026-12-02T01:48:58.791083Z DEBUG ringkv::eviction: evicted key=u/1/2 version=Version { ts: Timestamp(N), node: NodeTag(M), touch: None }`
//!
//! The harness copies each node's output into `logs/<node>.log` with a
//! marker line at every start and at every SIGKILL ([`crate::cluster`]);
//! [`collect`] reads the evictions back from there after the run, with the
//! start of the node that logged each and whether the harness killed that
//! process soon after ([`KILL_WINDOW_MS`]), and [`write_jsonl`] puts them
//! in `evictions.jsonl` next to the history. Taking them from the nodes' own record, rather than
//! from status counters, is what lets the checker ask "was *this* key
//! evicted, and when", so that an eviction can explain only the absence of
//! the key it removed, and only if it came late enough.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ringkv_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::workload::RunClock;

/// The `RUST_LOG` directive that makes a node log its evictions.
pub const LOG_DIRECTIVE: &str = "ringkv::eviction=debug";

/// Starts the line the harness (`cluster.rs`) writes into a node's log
/// before each start; the markers are defined here, where they are read.
pub const START_MARKER: &str = "=== chaos: starting ";
/// Starts the line the harness writes into a node's log after it killed
/// the node with SIGKILL during the run (not at the end of the run), once
/// everything the process wrote before has been copied into the log:
/// `=== chaos: SIGKILL n2 at MS (why)`, MS the system clock just before
/// the signal, in ms since the Unix epoch.
pub const KILL_MARKER: &str = "=== chaos: SIGKILL ";

/// What an eviction's log line says after the target.
const LINE_MARKER: &str = "ringkv::eviction: evicted key=";

/// An eviction logged less than this long before the harness killed the
/// process that logged it may not have taken effect. A node logs an
/// eviction once the tombstone is in its shard and handed to its WAL
/// writer, but before the WAL has synced it (and before it is sent to the
/// other replicas), so a kill right after can lose it. With
/// `fsync = "always"` the sync follows within milliseconds; this is
/// seconds, for a loaded machine. A node is never paused in between: the
/// schedule faults one node at a time, each fault over before the next.
pub const KILL_WINDOW_MS: u64 = 5_000;

/// One eviction a node logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    /// The node whose log has it (the leader of the key's partition then).
    pub node: String,
    /// Which start of that node logged it: 1 for the first.
    pub incarnation: u32,
    pub key: String,
    /// The tombstone's version: its hybrid logical timestamp, raw ...
    pub ts: u64,
    /// ... and the evicting node's tag.
    pub tag: u64,
    /// The timestamp's wall-clock milliseconds, as milliseconds since the
    /// run started (0 if before): the moment the checker orders the
    /// eviction by, with the same clock-skew allowance as writes by
    /// different clients.
    pub at_ms: u64,
    /// When the line was logged by the node's system clock (which the
    /// schedule's skew does not touch), ms since the run started; `None`
    /// if the line's time did not parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_ms: Option<u64>,
    /// The harness killed that process (SIGKILL) within
    /// [`KILL_WINDOW_MS`] after it logged this (or at some unknown time
    /// after), so this one may never have taken effect: the key may have
    /// stayed as it was.
    pub killed_after: bool,
}

impl Eviction {
    /// `wall.logical/tag`, the way `explain` output shows versions.
    pub fn version(&self) -> String {
        let ts = Timestamp(self.ts);
        format!("{}.{}/{}", ts.wall_ms(), ts.logical(), self.tag)
    }
}

impl std::fmt::Display for Eviction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "eviction by {} (start {}) at {} ms, version {}{}",
            self.node,
            self.incarnation,
            self.at_ms,
            self.version(),
            if self.killed_after { ", killed afterwards" } else { "" }
        )
    }
}

/// The key, timestamp and node tag of an eviction's log line.
pub fn parse_line(line: &str) -> Option<(String, u64, u64)> {
    let rest = &line[line.find(LINE_MARKER)? + LINE_MARKER.len()..];
    let (key, version) = rest.split_once(" version=")?;
    let number_after = |marker: &str| -> Option<u64> {
        let start = version.find(marker)? + marker.len();
        let digits = &version[start..];
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        digits[..end].parse().ok()
    };
    Some((key.to_string(), number_after("ts: Timestamp(")?, number_after("node: NodeTag(")?))
}

/// The system-clock time a log line starts with
/// (`2026-12-02T01:48:58.791083Z`, UTC), in ms since the Unix epoch.
pub fn line_time_ms(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from 1970-01-01 to the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000 + ms).ok()
}

/// The evictions in one node's log, in the order it logged them, and how
/// many times the node was started. `line_problems` gets every line that
/// names the eviction target but does not parse (a changed log format must
/// not pass as "no evictions").
pub fn parse_log(node: &str, log: &str, clock: &RunClock, line_problems: &mut Vec<String>) -> (Vec<Eviction>, u32) {
    let mut out: Vec<(Eviction, Option<u64>)> = Vec::new();
    let mut incarnation = 0u32;
    // The starts (incarnations) the harness killed, and when (`None`: a
    // marker without its time, so at any time).
    let mut killed: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix(KILL_MARKER) {
            let at = rest.split_once(" at ").and_then(|(_, t)| t.split_whitespace().next()?.parse().ok());
            killed.insert(incarnation.max(1), at);
        } else if line.starts_with(START_MARKER) {
            incarnation += 1;
        } else if line.contains(LINE_MARKER) {
            match parse_line(line) {
                Some((key, ts, tag)) => {
                    let logged = line_time_ms(line);
                    let eviction = Eviction {
                        node: node.to_string(),
                        incarnation: incarnation.max(1),
                        key,
                        ts,
                        tag,
                        at_ms: clock.run_ms_of_wall(Timestamp(ts).wall_ms()),
                        logged_ms: logged.map(|l| clock.run_ms_of_wall(l)),
                        killed_after: false,
                    };
                    out.push((eviction, logged));
                }
                None => line_problems.push(format!("{node}: {line}")),
            }
        }
    }
    let evictions = out
        .into_iter()
        .map(|(mut e, logged)| {
            e.killed_after = match (killed.get(&e.incarnation), logged) {
                (None, _) => false,
                (Some(Some(kill)), Some(logged)) => kill.saturating_sub(logged) < KILL_WINDOW_MS,
                (Some(_), _) => true,
            };
            e
        })
        .collect();
    (evictions, incarnation)
}

/// What the node logs say about evictions.
#[derive(Debug, Clone, Default)]
pub struct Logged {
    pub evictions: Vec<Eviction>,
    /// How many times each node was started.
    pub starts: BTreeMap<String, u32>,
}

impl Logged {
    /// Evictions per node.
    pub fn per_node(&self) -> BTreeMap<String, u64> {
        per_node(&self.evictions)
    }

    /// Evictions per node logged since its last start: what its status
    /// counter, which starts at 0 with the process, counts.
    pub fn since_last_start(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self.starts.keys().map(|n| (n.clone(), 0)).collect();
        for e in &self.evictions {
            if self.starts.get(&e.node) == Some(&e.incarnation) {
                *out.entry(e.node.clone()).or_default() += 1;
            }
        }
        out
    }
}

/// Every eviction in the node logs under `log_dir` (`<node>.log`), node by
/// node. Call it once every node has stopped, so the logs are complete.
pub fn collect(log_dir: &Path, clock: &RunClock) -> anyhow::Result<Logged> {
    let mut logs: Vec<_> = std::fs::read_dir(log_dir)
        .with_context(|| format!("read {}", log_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut out = Logged::default();
    let mut problems = Vec::new();
    for path in logs {
        let node = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let (evictions, starts) = parse_log(&node, &String::from_utf8_lossy(&bytes), clock, &mut problems);
        out.evictions.extend(evictions);
        out.starts.insert(node, starts);
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{} eviction log lines could not be parsed (has the log format changed?), e.g. {}",
        problems.len(),
        problems[0]
    );
    Ok(out)
}

/// Evictions per node.
pub fn per_node(evictions: &[Eviction]) -> BTreeMap<String, u64> {
    let mut all: BTreeMap<String, u64> = BTreeMap::new();
    for e in evictions {
        *all.entry(e.node.clone()).or_default() += 1;
    }
    all
}

/// Writes the evictions, one JSON object per line.
pub fn write_jsonl(path: &Path, evictions: &[Eviction]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in evictions {
        writeln!(out, "{}", serde_json::to_string(e).expect("an eviction serializes"))?;
    }
    out.flush()
}

/// Reads evictions written by [`write_jsonl`] (for re-checking a run).
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Eviction>> {
    crate::history::read_jsonl(path).with_context(|| format!("read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An eviction's log line as a node writes it, without the time it
    /// starts with.
    fn line(key: &str, wall_ms: u64, logical: u16, tag: u64) -> String {
        format!(
            "DEBUG Actor{{id=\"0.74\"}}: ringkv::eviction: evicted key={key} version=Version {{ ts: Timestamp({}), \
             node: NodeTag({tag}), touch: None }}",
            Timestamp::new(wall_ms, logical).0
        )
    }

    #[test]
    fn parses_the_nodes_eviction_line() {
        let (key, ts, tag) =
            parse_line(&format!("2026-12-02T01:48:58.791083Z {}", line("u/1/27", 1_700_000_000_123, 4, 9))).unwrap();
        assert_eq!(
            (key.as_str(), Timestamp(ts).wall_ms(), Timestamp(ts).logical(), tag),
            ("u/1/27", 1_700_000_000_123, 4, 9)
        );
        assert_eq!(parse_line("2026-12-02T01:48:58Z  INFO ringkv_node::node: node started"), None);
    }

    /// The system clock's `ms` as a log line's time.
    fn time_of(ms: u64) -> String {
        let days = ms / 86_400_000;
        let (y, m, d) = civil(days as i64);
        let rest = ms % 86_400_000;
        let (h, min, s, frac) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{frac:03}417Z")
    }

    /// Days since 1970-01-01 to a civil date (the inverse of the above).
    fn civil(days: i64) -> (i64, i64, i64) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    #[test]
    fn reads_the_time_a_log_line_starts_with() {
        assert_eq!(line_time_ms("1970-01-01T00:00:00.000000Z DEBUG x"), Some(0));
        assert_eq!(line_time_ms("2026-12-02T01:48:58.791083Z DEBUG x"), Some(1_796_176_138_791));
        assert_eq!(line_time_ms("2000-02-29T23:59:59Z  INFO x"), Some(951_868_799_000));
        for ms in [1_700_000_000_123, 1_709_251_199_999, 4_102_444_800_000] {
            assert_eq!(line_time_ms(&time_of(ms)), Some(ms), "{}", time_of(ms));
        }
        assert_eq!(line_time_ms("=== chaos: starting n1"), None);
        assert_eq!(line_time_ms("2026-13-02T01:48:58.791083Z DEBUG x"), None);
    }

    #[test]
    fn evictions_are_numbered_by_start_and_marked_when_that_process_was_killed_soon_after() {
        let clock = RunClock::new();
        let at = clock.wall_ms_at_start();
        let logged = |key: &str, ms: u64| format!("{} {}", time_of(at + ms), line(key, at + ms, 0, 2));
        let log = [
            format!("{START_MARKER}n2 listen 10.0.0.1:0 gossip 10.0.0.1:0"),
            logged("u/0/1", 1_000),
            logged("u/0/2", 7_000),
            format!("{KILL_MARKER}n2 at {} (kill fault)", at + 9_000),
            // Copied before the marker was written, in a real log; order
            // within one start does not matter.
            logged("u/0/3", 8_500),
            format!("{START_MARKER}n2 listen 10.0.0.1:7 gossip 10.0.0.1:8"),
            format!("{} INFO ringkv_node::node: recovered", time_of(at + 12_000)),
            logged("u/0/4", 12_500),
            // Stamped by a clock set back before the run started.
            format!("{} {}", time_of(at + 13_000), line("u/0/5", at.saturating_sub(5_000), 0, 2)),
            format!("{START_MARKER}n2 listen 10.0.0.1:7 gossip 10.0.0.1:8"),
            // A line without its time, and a kill marker without its time:
            // killed, as far as anyone can tell.
            line("u/0/6", at + 20_000, 0, 2),
            logged("u/0/7", 20_000),
            format!("{KILL_MARKER}n2 (kill fault)"),
        ]
        .join("\n");
        let mut problems = Vec::new();
        let (found, starts) = parse_log("n2", &log, &clock, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let brief: Vec<(&str, u32, u64, bool)> =
            found.iter().map(|e| (e.key.as_str(), e.incarnation, e.at_ms, e.killed_after)).collect();
        assert_eq!(
            brief,
            [
                ("u/0/1", 1, 1_000, false),
                ("u/0/2", 1, 7_000, true),
                ("u/0/3", 1, 8_500, true),
                ("u/0/4", 2, 12_500, false),
                ("u/0/5", 2, 0, false),
                ("u/0/6", 3, 20_000, true),
                ("u/0/7", 3, 20_000, true)
            ]
        );
        assert_eq!(found[4].logged_ms, Some(13_000));
        assert_eq!(found[5].logged_ms, None);
        assert_eq!(starts, 3);
        let logged = Logged { evictions: found, starts: BTreeMap::from([("n2".into(), starts), ("n3".into(), 1)]) };
        assert_eq!(logged.per_node(), BTreeMap::from([("n2".into(), 7)]));
        // Only the evictions of the last start: n2's third, none for n3.
        assert_eq!(logged.since_last_start(), BTreeMap::from([("n2".into(), 2), ("n3".into(), 0)]));
        // A line that names the target but does not parse is reported.
        let mut problems = Vec::new();
        parse_log("n2", "x DEBUG ringkv::eviction: evicted key=k version=Version { ts: ?? }", &clock, &mut problems);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn evictions_round_trip_through_jsonl() {
        let dir = std::env::temp_dir().join(format!("ringkv-chaos-evictions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("evictions.jsonl");
        let e = Eviction {
            node: "n1".into(),
            incarnation: 2,
            key: "o/1/3".into(),
            ts: Timestamp::new(5, 1).0,
            tag: 7,
            at_ms: 5,
            logged_ms: Some(6),
            killed_after: true,
        };
        write_jsonl(&path, std::slice::from_ref(&e)).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), vec![e.clone()]);
        assert_eq!(e.version(), "5.1/7");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
