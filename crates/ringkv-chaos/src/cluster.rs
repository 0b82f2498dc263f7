//! The chaos suite's cluster: the nodes of one run by id, each a
//! [`NodeProc`] of the shared test kit ([`crate::process`]), optionally each
//! in a network namespace of its own ([`crate::net`]), with the pids the
//! memory sampler reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};

use crate::net::Netns;
use crate::process::{NodeProc, NodeSpec};

/// PIDs of the running node processes, by node id; the memory sampler reads
/// it while the fault runner changes it.
pub type Pids = Arc<Mutex<BTreeMap<String, u32>>>;

/// The cluster: every node ever started (running, killed or paused),
/// by id; removed nodes are dropped from it.
///
/// Fields drop in order: the nodes are killed before their namespaces go.
pub struct Cluster {
    pub bin: PathBuf,
    pub certs: PathBuf,
    pub data_root: PathBuf,
    pub log_dir: PathBuf,
    /// Every node's config, as lines of TOML.
    pub settings: Vec<String>,
    /// Every node's log filter (`RUST_LOG`).
    pub rust_log: String,
    pub nodes: BTreeMap<String, NodeProc>,
    pub pids: Pids,
    pub start_timeout: Duration,
    /// The nodes' namespaces, if the run uses network-level faults.
    pub net: Option<Netns>,
}

impl Cluster {
    /// Creates certificates under `out` and starts
    /// `n` nodes n1..n{n}, each joining through n1; afterwards every node's
    /// seeds are all the others', so any of them can restart alone. With
    /// `namespaces`, each node runs in a network namespace of its own.
    /// `rust_log` is every node's log filter.
    pub async fn start(
        bin: &Path,
        out: &Path,
        n: usize,
        config_toml: &str,
        namespaces: bool,
        rust_log: &str,
    ) -> anyhow::Result<Cluster> {
        let certs = out.join("certs");
        let data_root = out.join("data");
        let log_dir = out.join("logs");
        for dir in [&certs, &data_root, &log_dir] {
            if dir.exists() {
                std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
            }
            std::fs::create_dir_all(dir)?;
        }
        // A certificate per node id, up to the one node the schedule adds
        // (`schedule.rs`, n{nodes + 1}), and the operator certificate the
        // controller injects faults with.
        let ids: Vec<String> = (1..=n + 1).map(|i| format!("n{i}")).collect();
        ringkv_net::certs::init(&certs, &ids, &[]).context("create certificates")?;
        ringkv_net::certs::issue_operator_cert(&certs, "chaos").context("create the operator certificate")?;
        let mut cluster = Cluster {
            bin: bin.into(),
            certs,
            data_root,
            log_dir,
            settings: config_toml.lines().map(String::from).collect(),
            rust_log: rust_log.into(),
            nodes: BTreeMap::new(),
            pids: Pids::default(),
            start_timeout: Duration::from_secs(60),
            net: if namespaces { Some(Netns::create()?) } else { None },
        };
        for i in 1..=n {
            let seeds: Vec<SocketAddr> = cluster.nodes.get("n1").map(|n1| n1.gossip()).into_iter().collect();
            cluster.start_new(&format!("n{i}"), seeds).await?;
        }
        let gossips: Vec<SocketAddr> = cluster.nodes.values().map(|n| n.gossip()).collect();
        for node in cluster.nodes.values_mut() {
            let own = node.gossip();
            node.spec.seeds = gossips.iter().copied().filter(|g| *g != own).collect();
        }
        Ok(cluster)
    }

    /// Starts a node that has never run, with fresh ports and data.
    pub async fn start_new(&mut self, id: &str, seeds: Vec<SocketAddr>) -> anyhow::Result<()> {
        let (any, netns) = match &mut self.net {
            Some(net) => {
                let addr = net.add_node(id)?;
                (SocketAddr::from((addr, 0)), net.namespace(id).map(String::from))
            }
            None => ("127.0.0.1:0".parse().expect("valid"), None),
        };
        let mut spec = NodeSpec::new(&self.bin, id, &self.data_root.join(id), &self.certs);
        spec.listen = any;
        spec.gossip = Some(any);
        spec.seeds = seeds;
        spec.settings = self.settings.clone();
        spec.netns = netns;
        spec.rust_log = self.rust_log.clone();
        spec.log = self.log_dir.join(format!("{id}.log"));
        spec.ready_within = self.start_timeout;
        let node = start(spec).await?;
        self.register(&node);
        self.nodes.insert(id.into(), node);
        Ok(())
    }

    fn register(&self, node: &NodeProc) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        match node.pid() {
            Some(pid) => pids.insert(node.spec.node_id.clone(), pid),
            None => pids.remove(&node.spec.node_id),
        };
    }

    pub fn node(&mut self, id: &str) -> anyhow::Result<&mut NodeProc> {
        self.nodes.get_mut(id).ok_or_else(|| anyhow!("no node {id}"))
    }

    /// SIGKILL during the run (a fault): marked in the node's log.
    pub fn kill9(&mut self, id: &str) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(id).ok_or_else(|| anyhow!("no node {id}"))?;
        node.kill9_marked("kill fault");
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        Ok(())
    }

    /// Restarts a killed node with the same id, data directory and ports.
    pub async fn restart(&mut self, id: &str) -> anyhow::Result<()> {
        let old = self.nodes.remove(id).ok_or_else(|| anyhow!("no node {id}"))?;
        let mut spec = old.spec.clone();
        drop(old);
        // Seeds: whoever is around now (the original seeds may have left).
        spec.seeds = self.nodes.values().filter(|n| n.is_running()).map(|n| n.gossip()).collect();
        let node = start(spec).await?;
        self.register(&node);
        self.nodes.insert(id.into(), node);
        Ok(())
    }

    /// SIGTERM (the node leaves the ring) and waits for it to exit.
    pub async fn remove(&mut self, id: &str, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut node = self.nodes.remove(id).ok_or_else(|| anyhow!("no node {id}"))?;
        let result = tokio::task::spawn_blocking(move || node.terminate(timeout)).await?;
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        result
    }

    /// QUIC addresses of the running nodes.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.values().filter(|n| n.is_running()).map(|n| n.addr).collect()
    }

    /// Ids of the nodes that are running and not paused.
    pub fn running_ids(&self) -> Vec<String> {
        self.nodes.values().filter(|n| n.is_running() && !n.paused).map(|n| n.spec.node_id.clone()).collect()
    }

    /// Nodes that exited without being told to.
    pub fn crashed(&mut self) -> Vec<(String, ExitStatus)> {
        let crashed: Vec<(String, ExitStatus)> =
            self.nodes.iter_mut().filter_map(|(id, n)| n.exited().map(|s| (id.clone(), s))).collect();
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        for (id, _) in &crashed {
            pids.remove(id);
        }
        crashed
    }

    /// Kills every node now (the drop guards would too).
    pub fn shutdown(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill9();
        }
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Starts a node on a blocking thread, so that the run's clients and
/// faults go on while it comes up.
async fn start(spec: NodeSpec) -> anyhow::Result<NodeProc> {
    tokio::task::spawn_blocking(move || spec.try_start()).await?
}
