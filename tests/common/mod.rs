//! Test harness: real `ringkv` processes on loopback ports chosen at run
//! time, killed on every exit path by their drop guards. The process guard,
//! the waiting and the judgement of convergence are the chaos suite's
//! ([`ringkv_chaos::process`], [`ringkv_chaos::observe`]); what is here is
//! the clusters by index that the tests address nodes in.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ringkv::{Client, ClientConfig};
use ringkv_chaos::history::now_wall_ms;
use ringkv_chaos::observe::wait_converged;
pub use ringkv_chaos::process::{NodeProc, NodeSpec, wait_for};
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
    /// certificates are issued as nodes are specified ([`node_spec`]).
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

/// A standalone node's spec for a test: `ringkv` as built for the tests,
/// logging to `<data_dir>.log` at `RINGKV_TEST_LOG` (default `info`), with
/// its own certificate (naming `node_id`), issued from the CA in `certs`
/// if there is none yet.
pub fn node_spec(node_id: &str, data_dir: &Path, certs: &Path) -> NodeSpec {
    if !certs.join(format!("{node_id}.crt")).exists() && certs.join("ca.key").exists() {
        ringkv_net::certs::issue_node_cert(certs, node_id, &[]).expect("node certificate");
    }
    let mut spec = NodeSpec::new(Path::new(BIN), node_id, data_dir, certs);
    spec.rust_log = std::env::var("RINGKV_TEST_LOG").unwrap_or_else(|_| "info".into());
    spec
}

/// A cluster of real nodes on loopback, ports chosen at run time.
pub struct Cluster {
    pub certs: Certs,
    pub data: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// Starts `n` nodes named n1.. with the given config lines; every node
    /// after the first joins through n1. Afterwards every node's seeds are
    /// all the others, so any of them can be restarted.
    pub fn start(n: usize, settings: &[&str]) -> Cluster {
        let certs = Certs::new();
        let data = tempfile::tempdir().unwrap();
        let mut nodes: Vec<NodeProc> = Vec::new();
        for i in 1..=n {
            let mut spec = node_spec(&format!("n{i}"), &data.path().join(format!("n{i}")), certs.path());
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

/// Waits until each key's replicas hold the same thing, as the chaos suite
/// judges it ([`ringkv_chaos::checker::replicas_agree`]: `replicas` of them,
/// all answering, tombstones kept, expired entries and those the truncate
/// epoch covers absent), and returns how long that took. The epoch is read
/// from the nodes the client was given.
pub async fn converged(client: &Client, keys: &[String], replicas: usize, bound: Duration) -> Duration {
    let outcome = wait_converged(client, client.seeds(), keys, replicas, bound, now_wall_ms).await;
    match outcome.converged_after {
        Some(took) => took,
        None => panic!(
            "{} of {} keys still differ after {bound:?}, e.g. {:?}",
            outcome.diverged.len(),
            outcome.keys,
            outcome.diverged.first()
        ),
    }
}

impl Cluster {
    /// Starts the (stopped) nodes at these indices at the same time, for
    /// members that each wait for another as their seed.
    pub fn start_together(&mut self, indices: &[usize]) {
        let specs: Vec<NodeSpec> = indices.iter().map(|i| self.nodes[*i].spec.clone()).collect();
        let started: Vec<NodeProc> = std::thread::scope(|s| {
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
        let mut spec = node_spec(&format!("n{i}"), &self.data.path().join(format!("n{i}")), self.certs.path());
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
