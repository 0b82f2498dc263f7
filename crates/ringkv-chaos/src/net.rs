//! Network-level faults: every node in its own Linux network namespace.
//!
//! The namespaces hang off one bridge in the harness's namespace, each on a
//! veth pair with its own address in a /24 private to the run, so the
//! harness and its clients reach every node directly while the nodes reach
//! each other only across the bridge. A link is cut by a policy rule in the
//! receiving node's namespace (`ip rule add from <peer> blackhole`): the
//! kernel drops the peer's packets before any socket sees them and tells
//! the sender nothing, so requests time out instead of being refused,
//! which is what a real partition does and what an in-process fault cannot
//! imitate. Cutting only one side gives a one-way partition.
//!
//! The local routing table's rule normally comes first (preference 0) and
//! would accept the packets before a blackhole rule is consulted, so each
//! namespace moves it behind the cut rules.
//!
//! Everything is named after the harness's pid (and, for the second and
//! later networks of one process, such as two chaos tests running side by
//! side in one test binary, a number); a namespace or bridge left behind
//! by a harness that was killed is removed by the next run.
//! Needs root (CAP_NET_ADMIN) and `ip` from iproute2.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};

/// Namespace names start with this, then the harness's pid.
const NS_PREFIX: &str = "ringkv-chaos-";
/// Preference of the cut rules; the local table's rule moves behind them.
const CUT_PREF: &str = "10";
const LOCAL_PREF: &str = "100";

/// How many networks this process has created. Also held while a subnet is
/// chosen and its bridge given its address, so that two runs in one process
/// cannot both pick the same free /24.
static CREATED: Mutex<u32> = Mutex::new(0);

/// Runs `ip` with `args`; the error carries its stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().context("run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One node's namespace.
#[derive(Debug, Clone)]
struct Host {
    ns: String,
    ip: Ipv4Addr,
}

/// The run's namespaces and bridge; removed when dropped.
pub struct Netns {
    /// `{pid}` for the process's first network, `{pid}i{n}` for later ones
    /// (interface names must stay within 15 bytes).
    id: String,
    bridge: String,
    subnet: [u8; 3],
    hosts: BTreeMap<String, Host>,
    next_host: u8,
}

impl Netns {
    /// Creates the bridge, after removing what dead harnesses left behind.
    /// Fails with a message saying what is missing if namespaces cannot be
    /// made here (not root, no iproute2).
    pub fn create() -> anyhow::Result<Netns> {
        let mut created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale();
        let pid = std::process::id();
        let id = if *created == 0 { pid.to_string() } else { format!("{pid}i{created}") };
        let subnet = free_subnet(pid.wrapping_add(*created))?;
        let bridge = format!("rk{id}b");
        let gateway = format!("{}.{}.{}.1/24", subnet[0], subnet[1], subnet[2]);
        ip(&["link", "add", &bridge, "type", "bridge"])
            .context("network namespaces need root and iproute2 (or run the chaos suite with --loopback)")?;
        *created += 1;
        let net = Netns { id, bridge, subnet, hosts: BTreeMap::new(), next_host: 10 };
        ip(&["addr", "add", &gateway, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// Creates `node`'s namespace (once) and returns its address.
    pub fn add_node(&mut self, node: &str) -> anyhow::Result<Ipv4Addr> {
        if let Some(h) = self.hosts.get(node) {
            return Ok(h.ip);
        }
        let n = self.next_host;
        anyhow::ensure!(n < 250, "too many nodes for one /24");
        self.next_host += 1;
        let ns = format!("{NS_PREFIX}{}-{node}", self.id);
        let veth = format!("rk{}h{n}", self.id);
        let [a, b, c] = self.subnet;
        let addr = Ipv4Addr::new(a, b, c, n);
        ip(&["netns", "add", &ns])?;
        // Registered before the links exist, so a failure below still
        // removes the namespace on drop.
        self.hosts.insert(node.into(), Host { ns: ns.clone(), ip: addr });
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "rule", "add", "pref", LOCAL_PREF, "lookup", "local"])?;
        ip(&["-n", &ns, "rule", "del", "pref", "0"])?;
        Ok(addr)
    }

    /// The namespace `node` runs in.
    pub fn namespace(&self, node: &str) -> Option<&str> {
        self.hosts.get(node).map(|h| h.ns.as_str())
    }

    fn host(&self, node: &str) -> anyhow::Result<&Host> {
        self.hosts.get(node).with_context(|| format!("no namespace for node {node}"))
    }

    /// From now on `at` silently drops every packet from `from`.
    pub fn cut(&self, at: &str, from: &str) -> anyhow::Result<()> {
        let (at, from) = (self.host(at)?, self.host(from)?);
        ip(&["-n", &at.ns, "rule", "add", "pref", CUT_PREF, "from", &from.ip.to_string(), "blackhole"]).map(drop)
    }

    /// Undoes [`Netns::cut`].
    pub fn restore(&self, at: &str, from: &str) -> anyhow::Result<()> {
        let (at, from) = (self.host(at)?, self.host(from)?);
        ip(&["-n", &at.ns, "rule", "del", "pref", CUT_PREF, "from", &from.ip.to_string(), "blackhole"]).map(drop)
    }

    /// Removes every cut in every namespace; returns what failed.
    pub fn restore_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for host in self.hosts.values() {
            // `ip rule del pref N` removes one rule per call: repeat until none is left.
            while ip(&["-n", &host.ns, "rule", "show", "pref", CUT_PREF]).is_ok_and(|rules| !rules.trim().is_empty()) {
                if let Err(e) = ip(&["-n", &host.ns, "rule", "del", "pref", CUT_PREF]) {
                    problems.push(format!("{e:#}"));
                    break;
                }
            }
        }
        problems
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair in it.
        for host in self.hosts.values() {
            let _ = ip(&["netns", "del", &host.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A /24 for the run: 10.X.Y.0 from `start` (the pid, plus the number of
/// networks the process made before), moved on while an address of this
/// machine already lies in it.
fn free_subnet(start: u32) -> anyhow::Result<[u8; 3]> {
    let taken = ip(&["-o", "-4", "addr", "show"])? + &ip(&["-4", "route", "show"])?;
    for step in 0..256u32 {
        let x = start.wrapping_add(step);
        let subnet = [10, 200 + ((x >> 8) % 50) as u8, (x & 0xff) as u8];
        let prefix = format!(" {}.{}.{}.", subnet[0], subnet[1], subnet[2]);
        let line_start = format!("{}.{}.{}.", subnet[0], subnet[1], subnet[2]);
        if !taken.contains(&prefix) && !taken.lines().any(|l| l.starts_with(&line_start)) {
            return Ok(subnet);
        }
    }
    bail!("no free 10.x.y.0/24 for the chaos network")
}

/// Removes namespaces and bridges of harnesses that are no longer running.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    let mut dead = std::collections::BTreeSet::new();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        // `{pid}-{node}` or `{pid}i{n}-{node}`.
        let Some(id) = name.strip_prefix(NS_PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        let pid = id.split('i').next().unwrap_or(id);
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            dead.insert(id.to_string());
        }
    }
    for id in dead {
        let _ = ip(&["link", "del", &format!("rk{id}b")]);
    }
}
