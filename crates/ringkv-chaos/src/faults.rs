//! Executes the fault schedule against the cluster, one item at a time.
//!
//! After every item the runner waits for the cluster to be healthy again —
//! every running node sees every running node live and serving — before the
//! next item's healthy gap starts, so "at most two nodes faulty" holds for
//! what the nodes observe, not just for what the harness did. Sleeping for a
//! fault's duration is the fault; everything else waits for a condition
//! with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use ringkv_client::Client;
use ringkv_core::KvStore;
use ringkv_net::wire::MemberStatus;
use serde::Serialize;
use tokio::time::Instant;

use crate::checker::Violation;
use crate::cluster::Cluster;
use crate::history::{CONTROLLER, OpKind, Phase, Record};
use crate::schedule::{Fault, FaultKind};
use crate::workload::RunClock;

/// How long a node may take to be seen serving again after a fault.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a joining node may take to pull its partitions and serve.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a leaving node may take to hand off and exit.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// What actually happened for one schedule item.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub fault: Fault,
    /// When the fault began and ended (node restarted, resumed, link healed,
    /// node serving, node exited), ms since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
    /// When every node saw every other live and serving again.
    pub healthy_ms: Option<u64>,
    pub note: String,
}

/// Whether every running node sees exactly the running nodes live and
/// serving. Returns what is wrong otherwise.
pub async fn health(cluster: &Cluster, ctl: &Client) -> Result<(), String> {
    let running = cluster.running_ids();
    for id in &running {
        let addr = cluster.nodes[id].addr;
        let members = ctl.members_of(addr).await.map_err(|e| format!("{id}: {e}"))?;
        for other in &running {
            let seen = members.members.iter().find(|m| &m.node_id == other);
            match seen {
                Some(m) if m.live && m.status == MemberStatus::Serving && m.in_ring => {}
                Some(m) => {
                    return Err(format!(
                        "{id} sees {other} {} live={} in_ring={}",
                        m.status.as_str(),
                        m.live,
                        m.in_ring
                    ));
                }
                None => return Err(format!("{id} does not know {other}")),
            }
        }
    }
    Ok(())
}

/// Waits until [`health`] passes or the deadline; returns the last problem
/// on timeout.
pub async fn wait_healthy(cluster: &Cluster, ctl: &Client, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match health(cluster, ctl).await {
            Ok(()) => return Ok(()),
            Err(problem) if Instant::now() >= deadline => return Err(problem),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Sends a fault-injection request to `node`, retrying for a while (the
/// node may be busy catching up).
async fn retrying<F, Fut>(node: SocketAddr, mut request: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ringkv_core::KvError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match request().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(format!("fault injection at {node} failed: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Tells `node` to drop traffic with `blocked`.
async fn inject(ctl: &Client, node: SocketAddr, blocked: Vec<SocketAddr>) -> Result<(), String> {
    retrying(node, || ctl.inject_fault(node, blocked.clone())).await
}

/// Heals every link: removes every namespace cut, and clears every
/// running node's in-process drop list.
pub async fn heal_all(cluster: &Cluster, ctl: &Client) -> Vec<String> {
    let mut problems = cluster.net.as_ref().map(|net| net.restore_all()).unwrap_or_default();
    for addr in cluster.addrs() {
        if let Err(e) = inject(ctl, addr, Vec::new()).await {
            problems.push(e);
        }
    }
    problems
}

/// The links cut right now, as (node that drops, node whose packets it
/// drops), counted: two overlapping faults may cut the same link, and it
/// heals when the last of them ends.
#[derive(Debug, Default)]
struct Cuts(BTreeMap<(String, String), usize>);

impl Cuts {
    /// Adds (`cut`) or removes the links and makes the network match:
    /// namespace rules where the run has namespaces, otherwise each running
    /// node's in-process drop list (which drops both directions, so a
    /// one-way fault becomes a two-way one on loopback).
    async fn change(&mut self, links: &[(String, String)], cut: bool, cluster: &Cluster, ctl: &Client) -> Vec<String> {
        let mut problems = Vec::new();
        for link in links {
            let count = self.0.entry(link.clone()).or_default();
            let before = *count;
            *count = if cut { before + 1 } else { before.saturating_sub(1) };
            let after = *count;
            if after == 0 {
                self.0.remove(link);
            }
            let Some(net) = &cluster.net else { continue };
            let (at, from) = link;
            let result = match (before, after) {
                (0, 1) => net.cut(at, from),
                (1, 0) => net.restore(at, from),
                _ => Ok(()),
            };
            if let Err(e) = result {
                problems.push(format!("{e:#}"));
            }
        }
        if cluster.net.is_none() {
            let nodes: BTreeSet<&String> = links.iter().map(|(at, _)| at).collect();
            for at in nodes {
                let Some(node) = cluster.nodes.get(at).filter(|n| n.is_running()) else { continue };
                let blocked: Vec<SocketAddr> = self
                    .0
                    .keys()
                    .filter(|(a, _)| a == at)
                    .filter_map(|(_, from)| cluster.nodes.get(from))
                    .flat_map(|n| [n.addr, n.gossip()])
                    .collect();
                if let Err(e) = inject(ctl, node.addr, blocked).await {
                    problems.push(e);
                }
            }
        }
        problems
    }
}

/// The links a network fault cuts, among the nodes the cluster has: the
/// target's (or the split group's) with every other node, in the
/// directions the kind says.
fn links_of(fault: &Fault, cluster: &Cluster) -> Vec<(String, String)> {
    let inside: Vec<String> = match fault.kind {
        FaultKind::Split => fault.group.clone(),
        _ => fault.target.iter().cloned().collect(),
    };
    let mut links = Vec::new();
    for i in &inside {
        for o in cluster.nodes.keys().filter(|n| !inside.contains(n)) {
            if fault.kind != FaultKind::Mute {
                links.push((i.clone(), o.clone()));
            }
            if fault.kind != FaultKind::Deaf {
                links.push((o.clone(), i.clone()));
            }
        }
    }
    links
}

/// A fault in progress.
enum Active {
    Killed(String),
    Paused(String),
    Cut(Vec<(String, String)>),
    Skewed(SocketAddr),
    /// Adding, removing and clearing are over once begun.
    Done,
}

/// What a schedule item is doing, shared by its one or two faults.
struct Item<'a> {
    cluster: &'a mut Cluster,
    ctl: &'a Client,
    cuts: Cuts,
    note: String,
    problems: Vec<String>,
    healthy_timeout: Duration,
}

impl Item<'_> {
    async fn begin(&mut self, fault: &Fault, clock: &RunClock, history: &mut Vec<Record>) -> anyhow::Result<Active> {
        let target = fault.target.clone().unwrap_or_default();
        Ok(match fault.kind {
            FaultKind::Kill => {
                self.cluster.kill9(&target)?;
                Active::Killed(target)
            }
            FaultKind::Pause => {
                self.cluster.node(&target)?.pause()?;
                Active::Paused(target)
            }
            FaultKind::Partition | FaultKind::Mute | FaultKind::Deaf | FaultKind::Split => {
                let links = links_of(fault, self.cluster);
                let problems = self.cuts.change(&links, true, self.cluster, self.ctl).await;
                self.problems.extend(problems);
                Active::Cut(links)
            }
            FaultKind::ClockSkew => {
                let node = self.cluster.node(&target)?.addr;
                let ctl = self.ctl;
                if let Err(e) = retrying(node, || ctl.inject_skew(node, fault.skew_ms)).await {
                    self.problems.push(e);
                }
                Active::Skewed(node)
            }
            FaultKind::AddNode => {
                let seeds: Vec<SocketAddr> =
                    self.cluster.nodes.values().filter(|n| n.is_running()).map(|n| n.gossip()).collect();
                self.cluster.start_new(&target, seeds).await?;
                self.healthy_timeout = JOIN_TIMEOUT;
                Active::Done
            }
            FaultKind::RemoveNode => {
                match self.cluster.remove(&target, LEAVE_TIMEOUT).await {
                    Ok(status) => self.note = format!("exited with {status}"),
                    Err(e) => self.problems.push(format!("{e:#}")),
                }
                Active::Done
            }
            FaultKind::Clear => {
                let mut r = Record::invoke(CONTROLLER, Phase::Run, OpKind::Clear, None, clock.ms());
                let result = self.ctl.with_timeout(Duration::from_secs(10)).clear().await;
                r.finish(clock.ms(), &result);
                self.note = format!("clear {:?}", r.outcome);
                history.push(r);
                Active::Done
            }
        })
    }

    async fn end(&mut self, active: Active) -> anyhow::Result<()> {
        match active {
            Active::Killed(id) => self.cluster.restart(&id).await?,
            Active::Paused(id) => self.cluster.node(&id)?.resume()?,
            Active::Cut(links) => {
                let problems = self.cuts.change(&links, false, self.cluster, self.ctl).await;
                self.problems.extend(problems);
            }
            Active::Skewed(node) => {
                let ctl = self.ctl;
                if let Err(e) = retrying(node, || ctl.inject_skew(node, 0)).await {
                    self.problems.push(e);
                }
            }
            Active::Done => {}
        }
        Ok(())
    }
}

/// Runs one schedule item: its fault, and the second one alongside if it
/// has one, each begun and ended at its planned offset. Node misbehaviour
/// becomes violations; harness failures (a node that cannot be started at
/// all) are errors.
pub async fn apply(
    fault: &Fault,
    cluster: &mut Cluster,
    ctl: &Client,
    clock: &RunClock,
    history: &mut Vec<Record>,
    violations: &mut Vec<Violation>,
) -> anyhow::Result<Applied> {
    let start_ms = clock.ms();
    let start = Instant::now();
    let mut item = Item {
        cluster,
        ctl,
        cuts: Cuts::default(),
        note: String::new(),
        problems: Vec::new(),
        healthy_timeout: HEALTHY_TIMEOUT,
    };
    // (offset, which fault, begins): begins before ends at the same offset.
    let mut steps = vec![(0, 0, true), (fault.duration_ms, 0, false)];
    if let Some(also) = &fault.also {
        steps.push((also.gap_ms, 1, true));
        steps.push((also.gap_ms + also.duration_ms, 1, false));
    }
    steps.sort_by_key(|&(at, _, begins)| (at, !begins));
    let faults: Vec<&Fault> = std::iter::once(fault).chain(fault.also.as_deref()).collect();
    let mut active: [Option<Active>; 2] = [None, None];
    for (at, which, begins) in steps {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        if begins {
            active[which] = Some(item.begin(faults[which], clock, history).await?);
        } else if let Some(a) = active[which].take() {
            item.end(a).await?;
        }
    }
    let end_ms = clock.ms();
    let (healthy_timeout, mut note) = (item.healthy_timeout, std::mem::take(&mut item.note));
    let problems = std::mem::take(&mut item.problems);
    let cluster = item.cluster;
    let mut unhealthy = |what: String, note: &mut String| {
        note.push_str(&what);
        violations
            .push(Violation::Unhealthy { what: format!("fault #{} {}: {what}", fault.index, fault.kind.as_str()) });
    };
    for problem in problems {
        unhealthy(problem, &mut note);
    }
    let healthy_ms = match wait_healthy(cluster, ctl, healthy_timeout).await {
        Ok(()) => Some(clock.ms()),
        Err(problem) => {
            unhealthy(format!("not healthy {healthy_timeout:?} after the fault ended: {problem}"), &mut note);
            None
        }
    };
    for (id, status) in cluster.crashed() {
        unhealthy(format!("node {id} exited by itself with {status}"), &mut note);
    }
    Ok(Applied { fault: fault.clone(), start_ms, end_ms, healthy_ms, note })
}
