//! Executes the fault schedule against the cluster, one item at a time.
//!
//! After every item the runner waits for the cluster to be healthy again —
//! every running node sees every running node live and serving — before the
//! next item's healthy gap starts, so "at most one node faulty" holds for
//! what the nodes observe, not just for what the harness did. Sleeping for a
//! fault's duration is the fault; everything else waits for a condition
//! with a deadline.

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
        let addr = cluster.nodes[id].addr();
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

/// Heals every link of every running node.
pub async fn heal_all(cluster: &Cluster, ctl: &Client) -> Vec<String> {
    let mut problems = Vec::new();
    for addr in cluster.addrs() {
        if let Err(e) = inject(ctl, addr, Vec::new()).await {
            problems.push(e);
        }
    }
    problems
}

/// Runs one schedule item. Node misbehaviour becomes violations; harness
/// failures (a node that cannot be started at all) are errors.
pub async fn apply(
    fault: &Fault,
    cluster: &mut Cluster,
    ctl: &Client,
    clock: &RunClock,
    history: &mut Vec<Record>,
    violations: &mut Vec<Violation>,
) -> anyhow::Result<Applied> {
    let start_ms = clock.ms();
    let hold = Duration::from_millis(fault.duration_ms);
    let target = fault.target.clone().unwrap_or_default();
    let mut note = String::new();
    let mut unhealthy = |what: String, note: &mut String| {
        note.push_str(&what);
        violations
            .push(Violation::Unhealthy { what: format!("fault #{} {}: {what}", fault.index, fault.kind.as_str()) });
    };
    let mut healthy_timeout = HEALTHY_TIMEOUT;
    match fault.kind {
        FaultKind::Kill => {
            cluster.kill9(&target)?;
            tokio::time::sleep(hold).await;
            cluster.restart(&target).await?;
        }
        FaultKind::Pause => {
            cluster.node(&target)?.pause()?;
            tokio::time::sleep(hold).await;
            cluster.node(&target)?.resume()?;
        }
        FaultKind::Partition => {
            let victim = cluster.node(&target)?;
            let (v_addr, v_gossip) = (victim.addr(), victim.gossip());
            let others: Vec<(SocketAddr, SocketAddr)> = cluster
                .nodes
                .values()
                .filter(|n| n.is_running() && n.spec.node_id != target)
                .map(|n| (n.addr(), n.gossip()))
                .collect();
            let blocked: Vec<SocketAddr> = others.iter().flat_map(|(a, g)| [*a, *g]).collect();
            if let Err(e) = inject(ctl, v_addr, blocked).await {
                unhealthy(e, &mut note);
            }
            for (addr, _) in &others {
                if let Err(e) = inject(ctl, *addr, vec![v_addr, v_gossip]).await {
                    unhealthy(e, &mut note);
                }
            }
            tokio::time::sleep(hold).await;
            for problem in heal_all(cluster, ctl).await {
                unhealthy(problem, &mut note);
            }
        }
        FaultKind::ClockSkew => {
            let node = cluster.node(&target)?.addr();
            if let Err(e) = retrying(node, || ctl.inject_skew(node, fault.skew_ms)).await {
                unhealthy(e, &mut note);
            }
            tokio::time::sleep(hold).await;
            if let Err(e) = retrying(node, || ctl.inject_skew(node, 0)).await {
                unhealthy(e, &mut note);
            }
        }
        FaultKind::AddNode => {
            let seeds: Vec<SocketAddr> =
                cluster.nodes.values().filter(|n| n.is_running()).map(|n| n.gossip()).collect();
            cluster.start_new(&target, seeds).await?;
            healthy_timeout = JOIN_TIMEOUT;
        }
        FaultKind::RemoveNode => match cluster.remove(&target, LEAVE_TIMEOUT).await {
            Ok(status) => note = format!("exited with {status}"),
            Err(e) => unhealthy(format!("{e:#}"), &mut note),
        },
        FaultKind::Clear => {
            let mut r = Record::invoke(CONTROLLER, Phase::Run, OpKind::Clear, None, clock.ms());
            let result = ctl.with_timeout(Duration::from_secs(10)).clear().await;
            r.finish(clock.ms(), &result);
            note = format!("clear {:?}", r.outcome);
            history.push(r);
        }
    }
    let end_ms = clock.ms();
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
