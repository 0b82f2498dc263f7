//! Test harness: real `ringkv` processes on loopback ports chosen at run
//! time, killed on every exit path by their drop guards.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringkv::{Client, ClientConfig};
use ringkv_net::Connector;
use ringkv_net::tls::{Identity, TlsPaths, TransportSettings};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringkv");

/// A bare protocol connection with the certificate at `paths`, for sending
/// requests the typed client would not (raw frames, replica requests) or to
/// one node without routing.
pub fn raw_connector(paths: &TlsPaths) -> Connector {
    let identity = Identity::load(paths).unwrap();
    let tls = ringkv_net::tls::client_config(&identity, &TransportSettings::default()).unwrap();
    Connector::new(ringkv_net::bind("127.0.0.1:0".parse().unwrap(), None, tls, None).unwrap(), 1 << 20)
}

/// Certificates for one test, in a directory deleted with it.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    /// A CA, the client certificate and the operator certificate. Node
    /// certificates are issued as nodes are specified ([`NodeSpec::new`]).
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        ringkv_net::certs::init(dir.path(), &[], &[]).expect("certs");
        ringkv_net::certs::issue_operator_cert(dir.path(), "tests").expect("operator certificate");
        Certs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn client(&self, nodes: Vec<SocketAddr>) -> Client {
        self.client_with(nodes, TlsPaths::client_in(self.path()))
    }

    /// A client presenting the operator certificate: it may also make nodes
    /// leave and inject faults.
    pub fn operator(&self, nodes: Vec<SocketAddr>) -> Client {
        self.client_with(nodes, TlsPaths::operator_in(self.path()))
    }

    fn client_with(&self, nodes: Vec<SocketAddr>, tls: TlsPaths) -> Client {
        let mut config = ClientConfig::new(nodes, tls);
        config.timeout = Duration::from_secs(5);
        Client::new(config).expect("client")
    }
}

/// How to start a node.
#[derive(Clone)]
pub struct NodeSpec {
    pub node_id: String,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    pub listen: SocketAddr,
    /// Gossip address; `None` runs the node standalone.
    pub gossip: Option<SocketAddr>,
    pub seeds: Vec<SocketAddr>,
    pub extra: Vec<String>,
    /// Lines of TOML written to a config file passed with --config.
    pub config: Vec<String>,
}

impl NodeSpec {
    /// Issues the node's own certificate (naming `node_id`) from the CA in
    /// `certs` if there is none yet.
    pub fn new(node_id: &str, data_dir: &Path, certs: &Path) -> NodeSpec {
        if !certs.join(format!("{node_id}.crt")).exists() && certs.join("ca.key").exists() {
            ringkv_net::certs::issue_node_cert(certs, node_id, &[]).expect("node certificate");
        }
        NodeSpec {
            node_id: node_id.into(),
            data_dir: data_dir.into(),
            certs: certs.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            gossip: None,
            seeds: Vec::new(),
            extra: Vec::new(),
            config: Vec::new(),
        }
    }

    pub fn arg(mut self, a: &str) -> NodeSpec {
        self.extra.push(a.into());
        self
    }

    pub fn setting(mut self, line: &str) -> NodeSpec {
        self.config.push(line.into());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--node-id")
            .arg(&self.node_id)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--certs")
            .arg(&self.certs)
            .arg("--listen")
            .arg(self.listen.to_string())
            .args(&self.extra)
            .env("RUST_LOG", std::env::var("RINGKV_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(gossip) = self.gossip {
            cmd.arg("--gossip").arg(gossip.to_string());
        }
        if !self.seeds.is_empty() {
            let seeds: Vec<String> = self.seeds.iter().map(|s| s.to_string()).collect();
            cmd.arg("--seeds").arg(seeds.join(","));
        }
        if !self.config.is_empty() {
            std::fs::create_dir_all(&self.data_dir).unwrap();
            let path = self.data_dir.with_extension("toml");
            std::fs::write(&path, self.config.join("\n")).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd
    }

    /// Starts the node and waits for it to announce its address.
    pub fn start(&self) -> NodeProcess {
        match self.try_start() {
            Ok(p) => p,
            Err(stderr) => panic!("node {} did not start:\n{stderr}", self.node_id),
        }
    }

    /// Starts the node on a thread of its own, for a node that is expected
    /// not to become ready yet; see [`Starting`].
    pub fn start_in_background(&self) -> Starting {
        let spec = self.clone();
        Starting(Some(std::thread::spawn(move || spec.start())))
    }

    /// Starts the node; on failure returns what it printed on stderr.
    pub fn try_start(&self) -> Result<NodeProcess, String> {
        let mut child = self.command().spawn().expect("spawn ringkv");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (err_tx, err_rx) = mpsc::channel();
        let log_name = self.node_id.clone();
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("RINGKV_TEST_ECHO").is_some() {
                    eprintln!("[{log_name}] {line}");
                }
                all.push_str(&line);
                all.push('\n');
                let _ = err_tx.send(line);
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = ready_tx.send(line);
            }
        });
        let mut process = NodeProcess {
            child: Some(child),
            addr: self.listen,
            resp: None,
            metrics: None,
            spec: self.clone(),
            stderr: err_rx,
            log: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(line) = ready_rx.recv_timeout(Duration::from_millis(50)) {
                let words: Vec<&str> = line.split(' ').collect();
                let after = |marker: &str| {
                    words.iter().position(|w| *w == marker).and_then(|i| words.get(i + 1)).and_then(|a| a.parse().ok())
                };
                if let Some(addr) = after("on") {
                    process.addr = addr;
                    process.spec.listen = addr;
                    process.spec.gossip = after("gossip").or(process.spec.gossip);
                    process.resp = after("resp");
                    process.metrics = after("metrics");
                    return Ok(process);
                }
            }
            if let Some(status) = process.child.as_mut().unwrap().try_wait().unwrap() {
                // Give the stderr reader a moment to drain.
                std::thread::sleep(Duration::from_millis(100));
                let log = process.drain_log().join("\n");
                process.child = None;
                return Err(format!("exited with {status}\n{log}"));
            }
            if Instant::now() > deadline {
                return Err(format!("no ready line within 30 s\n{}", process.drain_log().join("\n")));
            }
        }
    }
}

/// A node being started in the background. Dropping it (a test that
/// panicked) waits for the start to end and kills the node, so no process
/// outlives the test.
pub struct Starting(Option<std::thread::JoinHandle<NodeProcess>>);

impl Starting {
    /// Whether the node announced itself ready (or failed to start).
    pub fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(|h| h.is_finished())
    }

    pub fn wait(mut self) -> NodeProcess {
        self.0.take().expect("not yet joined").join().expect("the starting thread panicked")
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

/// A running node; killed when dropped.
pub struct NodeProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The RESP port, if the node serves one (`--resp`).
    pub resp: Option<SocketAddr>,
    /// The metrics port, if the node serves one (`--metrics`).
    pub metrics: Option<SocketAddr>,
    pub spec: NodeSpec,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl NodeProcess {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, if the process has exited by itself.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// SIGTERM, and wait for a clean exit within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.stop_with("TERM", timeout)
    }

    /// Sends `sig` and waits for the process to exit within `timeout`.
    pub fn stop_with(&mut self, sig: &str, timeout: Duration) -> std::process::ExitStatus {
        self.signal(sig);
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} did not exit within {timeout:?} of SIG{sig}", self.spec.node_id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the node logged so far.
    pub fn drain_log(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
        self.log.clone()
    }

    /// Waits until the node has recorded in its data directory that it is a
    /// ring member (a few seconds after it serves), so that it comes back
    /// from a restart as the same member rather than joining as a new one.
    pub async fn wait_member_file(&self) {
        let file = self.spec.data_dir.join("member");
        wait_for(&format!("{}'s member file", self.spec.node_id), Duration::from_secs(20), || {
            let exists = file.exists();
            async move { exists.then_some(()) }
        })
        .await;
    }

    /// SIGKILL, then delete the node's log and snapshots but keep its member
    /// file: it comes back as the same ring member holding nothing.
    pub fn kill9_and_wipe_keeping_membership(&mut self) {
        self.kill9();
        for file in std::fs::read_dir(&self.spec.data_dir).unwrap() {
            let path = file.unwrap().path();
            if path.file_name().unwrap() != "member" {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }

    /// Restarts on the same port and data directory.
    pub fn restart(&mut self) -> NodeProcess {
        self.kill9();
        self.spec.start()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of real nodes on loopback, ports chosen at run time.
pub struct Cluster {
    pub certs: Certs,
    pub data: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// Starts `n` nodes named n1.. with the given config lines; every node
    /// after the first joins through n1. Afterwards every node's seeds are
    /// all the others, so any of them can be restarted.
    pub fn start(n: usize, settings: &[&str]) -> Cluster {
        let certs = Certs::new();
        let data = tempfile::tempdir().unwrap();
        let mut nodes: Vec<NodeProcess> = Vec::new();
        for i in 1..=n {
            let mut spec = NodeSpec::new(&format!("n{i}"), &data.path().join(format!("n{i}")), certs.path());
            spec.gossip = Some("127.0.0.1:0".parse().unwrap());
            spec.seeds = nodes.first().and_then(|n1| n1.spec.gossip).into_iter().collect();
            for line in settings {
                spec = spec.setting(line);
            }
            nodes.push(spec.start());
        }
        let gossips: Vec<SocketAddr> = nodes.iter().filter_map(|n| n.spec.gossip).collect();
        for node in &mut nodes {
            let own = node.spec.gossip;
            node.spec.seeds = gossips.iter().copied().filter(|g| Some(*g) != own).collect();
        }
        Cluster { certs, data, nodes }
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    pub fn client(&self) -> Client {
        self.certs.client(self.addrs())
    }

    /// A client that only knows node `i` (0-based).
    pub fn client_of(&self, i: usize) -> Client {
        self.certs.client(vec![self.nodes[i].addr])
    }

    /// An operator client (leave, fault injection) knowing every node.
    pub fn operator(&self) -> Client {
        self.certs.operator(self.addrs())
    }

    /// An operator client that only knows node `i` (0-based).
    pub fn operator_of(&self, i: usize) -> Client {
        self.certs.operator(vec![self.nodes[i].addr])
    }

    /// Waits until node `i` reports `expected` members serving and live.
    pub async fn wait_serving(&self, i: usize, expected: usize, timeout: Duration) {
        let client = self.client_of(i);
        let addr = self.nodes[i].addr;
        wait_for(&format!("{expected} serving members"), timeout, || {
            let client = client.clone();
            async move {
                let members = client.members_of(addr).await.ok()?;
                let serving = members
                    .members
                    .iter()
                    .filter(|m| m.live && m.status == ringkv_net::wire::MemberStatus::Serving)
                    .count();
                (serving == expected).then_some(())
            }
        })
        .await
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` at the
/// deadline.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each key has `replicas` replicas that all hold the same
/// version (a tombstone counts), and returns how long that took.
pub async fn converged(client: &Client, keys: &[String], replicas: usize, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut pending: Vec<String> = keys.to_vec();
    while !pending.is_empty() {
        assert!(started.elapsed() < bound, "{} keys still differ after {bound:?}, e.g. {}", pending.len(), pending[0]);
        let mut still = Vec::new();
        for key in pending {
            let agree = match client.explain(key.clone()).await {
                Ok(explanation) => {
                    let versions: Vec<_> = explanation
                        .replicas
                        .iter()
                        .map(|r| r.entry.clone().ok().flatten().map(|e| e.version))
                        .collect();
                    versions.len() == replicas && versions.iter().all(|v| v.is_some() && *v == versions[0])
                }
                Err(_) => false,
            };
            if !agree {
                still.push(key);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    started.elapsed()
}

impl Cluster {
    /// Starts the (stopped) nodes at these indices at the same time, for
    /// members that each wait for another as their seed.
    pub fn start_together(&mut self, indices: &[usize]) {
        let specs: Vec<NodeSpec> = indices.iter().map(|i| self.nodes[*i].spec.clone()).collect();
        let started: Vec<NodeProcess> = std::thread::scope(|s| {
            let handles: Vec<_> = specs.iter().map(|spec| s.spawn(|| spec.start())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, node) in indices.iter().zip(started) {
            self.nodes[*i] = node;
        }
    }

    /// Starts a new member n{k} that joins through every current node.
    pub fn add(&mut self, settings: &[&str]) -> usize {
        let i = self.nodes.len() + 1;
        let mut spec = NodeSpec::new(&format!("n{i}"), &self.data.path().join(format!("n{i}")), self.certs.path());
        spec.gossip = Some("127.0.0.1:0".parse().unwrap());
        spec.seeds = self.nodes.iter().filter_map(|n| n.spec.gossip).collect();
        for line in settings {
            spec = spec.setting(line);
        }
        self.nodes.push(spec.start());
        self.nodes.len() - 1
    }
}

impl Cluster {
    /// Starts `n` nodes and waits until every one of them sees all `n`
    /// serving (a node cut off later must have seen the others first).
    pub async fn start_serving(n: usize, settings: &[&str]) -> Cluster {
        let cluster = Cluster::start(n, settings);
        for i in 0..n {
            cluster.wait_serving(i, n, Duration::from_secs(30)).await;
        }
        cluster
    }

    /// Cuts node `i` off from the nodes `from` (fault injection, replica
    /// traffic and gossip, both ways); `from` empty heals every cut of
    /// those nodes and of `i`.
    pub async fn cut(&self, i: usize, from: &[usize]) {
        let client = &self.operator();
        let gossip = |j: usize| self.nodes[j].spec.gossip.expect("clustered");
        let theirs: Vec<SocketAddr> = from.iter().flat_map(|&j| [self.nodes[j].addr, gossip(j)]).collect();
        client.inject_fault(self.nodes[i].addr, theirs).await.unwrap();
        let ours = if from.is_empty() { Vec::new() } else { vec![self.nodes[i].addr, gossip(i)] };
        for &j in from {
            client.inject_fault(self.nodes[j].addr, ours.clone()).await.unwrap();
        }
    }

    /// Heals every cut on every node.
    pub async fn heal(&self) {
        let client = &self.operator();
        for node in &self.nodes {
            client.inject_fault(node.addr, Vec::new()).await.unwrap();
        }
    }
}
