//! Real `ringkv serve` processes on loopback ports chosen at run time.
//!
//! Each process sits behind a guard that, when dropped — on success, error
//! or panic — resumes it (so that nothing is left stopped even if the kill
//! fails), kills it and reaps it. A node's stdout and stderr are appended
//! to `<out>/logs/<node>.log`, with a marker line at every start
//! ([`START_MARKER`]) and at every SIGKILL the run gives it
//! ([`KILL_MARKER`]), so a violation can be matched to what the node was
//! doing, and an eviction the node logged to the process that logged it
//! ([`crate::evictions`]).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::evictions::{KILL_MARKER, START_MARKER};
use crate::net::Netns;

/// PIDs of the running node processes, by node id; the memory sampler reads
/// it while the fault runner changes it.
pub type Pids = Arc<Mutex<BTreeMap<String, u32>>>;

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub node_id: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub certs: PathBuf,
    pub listen: SocketAddr,
    pub gossip: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    /// The network namespace to run in (see [`crate::net`]); `None` runs
    /// the node in the harness's namespace, on loopback.
    pub netns: Option<String>,
    /// The node's log filter (`RUST_LOG`).
    pub rust_log: String,
}

/// A node process (running, killed, or paused), killed when dropped.
pub struct NodeProc {
    pub spec: NodeSpec,
    child: Option<Child>,
    log: PathBuf,
    /// The log, shared with the threads that copy the process's output
    /// into it.
    log_file: Arc<Mutex<std::fs::File>>,
    /// One message from each of those two threads when its pipe closed.
    copied: std_mpsc::Receiver<()>,
    pub paused: bool,
}

fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of
    // our own children, not yet reaped (we hold its Child), so it cannot
    // have been reused by another process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

impl NodeProc {
    /// Starts the node and waits (up to `timeout`) for its ready line; the
    /// addresses it reports become the spec's, so a restart reuses them.
    pub async fn start(bin: &Path, spec: NodeSpec, log_dir: &Path, timeout: Duration) -> anyhow::Result<NodeProc> {
        let log = log_dir.join(format!("{}.log", spec.node_id));
        let mut file = OpenOptions::new().create(true).append(true).open(&log).context("open node log")?;
        writeln!(file, "{START_MARKER}{} listen {} gossip {}", spec.node_id, spec.listen, spec.gossip)?;
        let seeds: Vec<String> = spec.seeds.iter().map(|s| s.to_string()).collect();
        // `ip netns exec` execs the node in place, so the child's pid is the
        // node's and signals reach it directly.
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&spec.config)
            .arg("--node-id")
            .arg(&spec.node_id)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--certs")
            .arg(&spec.certs)
            .arg("--listen")
            .arg(spec.listen.to_string())
            .arg("--gossip")
            .arg(spec.gossip.to_string())
            .env("RUST_LOG", &spec.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !seeds.is_empty() {
            cmd.arg("--seeds").arg(seeds.join(","));
        }
        let mut child = cmd.spawn().with_context(|| format!("spawn {}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let log_file = Arc::new(Mutex::new(file));
        let (err_file, out_file) = (log_file.clone(), log_file.clone());
        let (copied_tx, copied) = std_mpsc::channel();
        let out_copied = copied_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(err_file.lock().unwrap_or_else(|e| e.into_inner()), "{line}");
            }
            let _ = copied_tx.send(());
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(out_file.lock().unwrap_or_else(|e| e.into_inner()), "[stdout] {line}");
                let _ = ready_tx.send(line);
            }
            let _ = out_copied.send(());
        });
        let mut node = NodeProc { spec, child: Some(child), log, log_file, copied, paused: false };
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
                Ok(Some(line)) => {
                    if let Some((addr, gossip)) = parse_ready(&line) {
                        node.spec.listen = addr;
                        node.spec.gossip = gossip;
                        return Ok(node);
                    }
                }
                Ok(None) => {
                    // stdout closed: the process is exiting.
                    let status = node.child.as_mut().expect("running").wait()?;
                    node.child = None;
                    bail!(
                        "node {} exited with {status} before it was ready; log tail:\n{}",
                        node.spec.node_id,
                        tail(&node.log, 30)
                    );
                }
                Err(_) => bail!(
                    "node {} printed no ready line within {timeout:?}; log tail:\n{}",
                    node.spec.node_id,
                    tail(&node.log, 30)
                ),
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.spec.listen
    }

    pub fn gossip(&self) -> SocketAddr {
        self.spec.gossip
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("node {} is not running", self.spec.node_id))?;
        send_signal(pid, signal).with_context(|| format!("signal {signal} to {}", self.spec.node_id))
    }

    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// SIGCONT (in case it is stopped), SIGKILL, reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = send_signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGKILL during the run: [`NodeProc::kill9`], then, once the process's
    /// output is in the log, [`KILL_MARKER`] and `why`. What the process
    /// logged but had not yet made durable or sent (an eviction's
    /// tombstone, say) may be lost, and the marker tells the log's readers
    /// which lines that concerns. Without the wait, lines still in the pipe
    /// could land after the marker, or after the next start's.
    pub fn kill9_marked(&mut self, why: &str) {
        if self.child.is_none() {
            return;
        }
        // Before the signal: no earlier than the kill.
        let at = crate::history::now_wall_ms();
        self.kill9();
        // Both pipes close when the process is reaped (it has no children);
        // the bound only keeps a stuck copy from stopping the run.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.copied.recv_timeout(left).is_err() {
                break;
            }
        }
        let mut log = self.log_file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(log, "{KILL_MARKER}{} at {at} ({why})", self.spec.node_id);
    }

    /// SIGTERM, then waits for the process to exit by itself. On timeout the
    /// process is killed and an error returned.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9_marked("did not exit after SIGTERM");
                bail!("node {} did not exit within {timeout:?} of SIGTERM", self.spec.node_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process has exited on its own (a crash); reported once,
    /// the node then counts as not running.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `ringkv node n1 serving on 127.0.0.1:PORT gossip 127.0.0.1:GPORT`
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |marker: &str| {
        words.iter().position(|w| *w == marker).and_then(|i| words.get(i + 1)).and_then(|a| a.parse().ok())
    };
    Some((after("on")?, after("gossip")?))
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The cluster: every node ever started (running, killed or paused),
/// by id; removed nodes are dropped from it.
///
/// Fields drop in order: the nodes are killed before their namespaces go.
pub struct Cluster {
    pub bin: PathBuf,
    pub certs: PathBuf,
    pub data_root: PathBuf,
    pub log_dir: PathBuf,
    pub config: PathBuf,
    /// Every node's log filter (`RUST_LOG`).
    pub rust_log: String,
    pub nodes: BTreeMap<String, NodeProc>,
    pub pids: Pids,
    pub start_timeout: Duration,
    /// The nodes' namespaces, if the run uses network-level faults.
    pub net: Option<Netns>,
}

impl Cluster {
    /// Creates certificates and a config file under `out` and starts
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
        let config = out.join("node.toml");
        std::fs::write(&config, config_toml)?;
        let mut cluster = Cluster {
            bin: bin.into(),
            certs,
            data_root,
            log_dir,
            config,
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
        let spec = NodeSpec {
            node_id: id.into(),
            data_dir: self.data_root.join(id),
            config: self.config.clone(),
            certs: self.certs.clone(),
            listen: any,
            gossip: any,
            seeds,
            netns,
            rust_log: self.rust_log.clone(),
        };
        let node = NodeProc::start(&self.bin, spec, &self.log_dir, self.start_timeout).await?;
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
        let node = NodeProc::start(&self.bin, spec, &self.log_dir, self.start_timeout).await?;
        self.register(&node);
        self.nodes.insert(id.into(), node);
        Ok(())
    }

    /// SIGTERM (the node leaves the ring) and waits for it to exit.
    pub async fn remove(&mut self, id: &str, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut node = self.nodes.remove(id).ok_or_else(|| anyhow!("no node {id}"))?;
        let result = node.terminate(timeout).await;
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        result
    }

    /// QUIC addresses of the running nodes.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.values().filter(|n| n.is_running()).map(|n| n.addr()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let (addr, gossip) = parse_ready("ringkv node n1 serving on 127.0.0.1:4000 gossip 127.0.0.1:4001").unwrap();
        assert_eq!(addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(gossip, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(parse_ready("something else"), None);
    }
}
