//! The ringkv client.
//!
//! [`Client`] implements [`KvStore`], the same trait as the embedded node, so
//! code written against one runs against the other. It learns the cluster's
//! membership from any node it is given, computes placement exactly as the
//! nodes do, and sends each request to a replica of the key's partition,
//! which coordinates it; if that node is unreachable it fails over to the
//! next replica, then to any other member. [`actor`] wraps it as a ractor
//! actor whose messages are the store's operations.

pub mod actor;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringkv_core::ring::{NodeName, PartitionTable};
use ringkv_core::{Clock, Consistency, Deadline, KeyTtl, KvError, KvStore, Partitioner, Timestamp};
use ringkv_net::tls::{Identity, TlsPaths, TransportSettings, client_config};
use ringkv_net::wire::{Explanation, Members, NodeStatus, Reply, Request};
use ringkv_net::{Connector, NetError, bind};
use tokio::time::Instant;

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no node address given")]
    NoAddress,
    #[error("cannot resolve '{addr}': {reason}")]
    Resolve { addr: String, reason: String },
    #[error(transparent)]
    Net(#[from] NetError),
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes to learn the cluster from; any one reachable node is enough.
    pub nodes: Vec<SocketAddr>,
    pub tls: TlsPaths,
    /// Per attempt; a request fails over to at most a few other nodes.
    pub timeout: Duration,
    pub consistency: Consistency,
    /// Largest reply accepted; must cover the cluster's value limit.
    pub max_frame_bytes: usize,
    /// How old the membership view may get before it is refreshed.
    pub refresh: Duration,
}

impl ClientConfig {
    pub fn new(nodes: Vec<SocketAddr>, tls: TlsPaths) -> ClientConfig {
        ClientConfig {
            nodes,
            tls,
            timeout: Duration::from_secs(5),
            consistency: Consistency::Quorum,
            max_frame_bytes: 64 << 20,
            refresh: Duration::from_secs(5),
        }
    }
}

/// Resolves `host:port` strings, as given on a command line.
pub async fn resolve(addrs: &[String]) -> Result<Vec<SocketAddr>, ClientError> {
    let mut out = Vec::new();
    for addr in addrs {
        let found = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|e| ClientError::Resolve { addr: addr.clone(), reason: e.to_string() })?;
        out.extend(found);
    }
    Ok(out)
}

/// The cluster as the client last saw it.
struct View {
    members: Members,
    partitioner: Partitioner,
    table: PartitionTable,
    addrs: HashMap<NodeName, SocketAddr>,
    fetched: Instant,
}

impl View {
    fn new(members: Members) -> View {
        let ring: Vec<NodeName> =
            members.members.iter().filter(|m| m.in_ring).map(|m| NodeName::from(m.node_id.as_str())).collect();
        let table = PartitionTable::build(&ring, members.partitions, members.replication as usize, members.vnodes);
        let addrs = members.members.iter().map(|m| (NodeName::from(m.node_id.as_str()), m.addr)).collect();
        View { partitioner: Partitioner::new(members.partitions), table, addrs, members, fetched: Instant::now() }
    }

    fn is_up(&self, node: &str) -> bool {
        self.members.members.iter().any(|m| m.node_id == node && m.live && m.status.serves())
    }

    /// Replicas of the key's partition that are up, in preference order,
    /// then every other serving member.
    fn route(&self, key: Option<&[u8]>) -> Vec<SocketAddr> {
        let mut order: Vec<SocketAddr> = Vec::new();
        if let Some(key) = key {
            for name in self.table.replicas(self.partitioner.partition_of(key)) {
                if self.is_up(name) {
                    order.extend(self.addrs.get(name));
                }
            }
        }
        for m in &self.members.members {
            if m.live && m.status.serves() && !order.contains(&m.addr) {
                order.push(m.addr);
            }
        }
        order
    }
}

#[derive(Clone)]
pub struct Client {
    connector: Arc<Connector>,
    seeds: Arc<[SocketAddr]>,
    view: Arc<RwLock<Option<View>>>,
    /// Nodes that recently failed a request, and when. They go to the back
    /// of every route until they answer again or the suspicion expires, so a
    /// dead node costs one timeout, not one per request.
    suspects: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    refreshing: Arc<AtomicBool>,
    timeout: Duration,
    refresh: Duration,
    consistency: Consistency,
    /// The highest clock reading a node has answered this client (or a
    /// handle cloned from it) with. Sent with every request, so that
    /// whichever node coordinates orders its writes after everything the
    /// client has written or read, even if that node's clock is slow.
    session: Arc<AtomicU64>,
    /// The wall clock deadlines are set by: the system's, or the
    /// simulator's.
    clock: Arc<dyn Clock>,
}

/// How many nodes one request tries before giving up.
const MAX_ATTEMPTS: usize = 3;
/// How long a node that failed a request stays at the back of routes.
const SUSPICION: Duration = Duration::from_secs(10);

impl Client {
    /// Creates the client's endpoint. No connection is made until the first
    /// request; use [`Client::ping`] to check reachability.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        if config.nodes.is_empty() {
            return Err(ClientError::NoAddress);
        }
        let identity = Identity::load(&config.tls)?;
        let tls = client_config(&identity, &TransportSettings::default())?;
        let bind_addr: SocketAddr = if config.nodes[0].is_ipv6() {
            "[::]:0".parse().expect("valid")
        } else {
            "0.0.0.0:0".parse().expect("valid")
        };
        let endpoint = bind(bind_addr, None, tls, None)?;
        Ok(Client::with_endpoint(config, endpoint))
    }

    /// A client on an endpoint made elsewhere (over a simulated network in
    /// `ringkv-sim`), with its client TLS configuration already set.
    pub fn with_endpoint(config: ClientConfig, endpoint: ringkv_net::Endpoint) -> Client {
        Client {
            connector: Arc::new(Connector::new(endpoint, config.max_frame_bytes)),
            seeds: config.nodes.into(),
            view: Arc::new(RwLock::new(None)),
            suspects: Arc::new(Mutex::new(HashMap::new())),
            refreshing: Arc::new(AtomicBool::new(false)),
            timeout: config.timeout,
            refresh: config.refresh,
            consistency: config.consistency,
            session: Arc::new(AtomicU64::new(0)),
            clock: Arc::new(WallClock),
        }
    }

    /// The nodes the client was given to start from.
    pub fn seeds(&self) -> &[SocketAddr] {
        &self.seeds
    }

    /// The session clock: at or above the version of everything this client
    /// has written or read so far.
    pub fn session(&self) -> Timestamp {
        Timestamp(self.session.load(Ordering::Acquire))
    }

    /// A handle to the same connections that sends requests at another
    /// consistency level.
    pub fn with_consistency(&self, consistency: Consistency) -> Client {
        Client { consistency, ..self.clone() }
    }

    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// A handle to the same connections with another per-attempt timeout.
    /// The same client setting deadlines by another wall clock (the
    /// simulator's).
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Client {
        Client { clock, ..self.clone() }
    }

    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client { timeout, ..self.clone() }
    }

    /// The answering node's id and version.
    pub async fn ping(&self) -> Result<(String, String), KvError> {
        match self.call(None, Request::Ping).await? {
            Reply::Pong { node_id, version } => Ok((node_id, version)),
            other => Err(unexpected(other)),
        }
    }

    /// The membership as a node reports it (fetched fresh).
    pub async fn members(&self) -> Result<Members, KvError> {
        self.fetch_members().await
    }

    /// The membership as one particular node sees it.
    pub async fn members_of(&self, node: SocketAddr) -> Result<Members, KvError> {
        match self.call_at(node, &Request::Members).await? {
            Reply::Members(members) => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// One node's own status.
    pub async fn status_of(&self, node: SocketAddr) -> Result<NodeStatus, KvError> {
        match self.call_at(node, &Request::Status).await? {
            Reply::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// Asks one node to hand its partitions off and exit.
    pub async fn leave(&self, node: SocketAddr) -> Result<(), KvError> {
        self.done_at(node, &Request::Leave).await
    }

    /// Fault injection: makes `node` drop all traffic with `blocked`
    /// (an empty list heals). Only nodes started with `fault_injection`
    /// accept it.
    pub async fn inject_fault(&self, node: SocketAddr, blocked: Vec<SocketAddr>) -> Result<(), KvError> {
        self.done_at(node, &Request::Fault { blocked }).await
    }

    /// Fault injection: makes `node`'s clock read `offset_ms` off the true
    /// time (0 heals). Only nodes started with `fault_injection` accept it.
    pub async fn inject_skew(&self, node: SocketAddr, offset_ms: i64) -> Result<(), KvError> {
        self.done_at(node, &Request::Skew { offset_ms }).await
    }

    /// Fault injection: makes `node`'s actor for `partition` fail, as a bug
    /// in it would; the node then stops. Only nodes started with
    /// `fault_injection` accept it.
    pub async fn inject_crash(&self, node: SocketAddr, partition: u16) -> Result<(), KvError> {
        self.done_at(node, &Request::Crash { partition }).await
    }

    /// Where the key lives and what each replica holds.
    pub async fn explain(&self, key: impl Into<Bytes>) -> Result<Explanation, KvError> {
        let key = key.into();
        match self.call(Some(&key), Request::Explain { key: key.clone() }).await? {
            Reply::Explain(explanation) => Ok(explanation),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a request answered with `Done` to one node.
    async fn done_at(&self, addr: SocketAddr, request: &Request) -> Result<(), KvError> {
        match self.call_at(addr, request).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn call_at(&self, addr: SocketAddr, request: &Request) -> Result<Reply, KvError> {
        self.connector.call(addr, request, self.timeout).await.map_err(KvError::from)?
    }

    /// Moves suspected nodes to the back, keeping the order otherwise.
    fn deprioritize(&self, mut route: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        suspects.retain(|_, since| since.elapsed() < SUSPICION);
        route.sort_by_key(|addr| suspects.contains_key(addr));
        route
    }

    /// Moves `addr` to the back of routes for a while and makes the next
    /// request refresh the view of the cluster, from another node: whatever
    /// we knew may be out of date.
    fn distrust(&self, addr: SocketAddr) {
        self.suspect(addr, true);
        if let Some(view) = self.view.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
            view.fetched = Instant::now() - self.refresh;
        }
    }

    fn suspect(&self, addr: SocketAddr, failed: bool) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        if failed {
            suspects.insert(addr, Instant::now());
        } else {
            suspects.remove(&addr);
        }
    }

    async fn fetch_members(&self) -> Result<Members, KvError> {
        let known: Vec<SocketAddr> = {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            let mut addrs: Vec<SocketAddr> = view.as_ref().map(|v| v.route(None)).unwrap_or_default();
            addrs.extend(self.seeds.iter().filter(|s| !addrs.contains(s)).collect::<Vec<_>>());
            self.deprioritize(addrs)
        };
        let mut last = KvError::Unavailable("no node to ask for the membership".into());
        for addr in known {
            let answer = self.call_at(addr, &Request::Members).await;
            self.suspect(addr, matches!(answer, Err(KvError::Transport(_) | KvError::Timeout { .. })));
            match answer {
                Ok(Reply::Members(members)) => {
                    *self.view.write().unwrap_or_else(|e| e.into_inner()) = Some(View::new(members.clone()));
                    return Ok(members);
                }
                Ok(other) => last = unexpected(other),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Where to send a request for `key`: a fresh-enough view's routing, or
    /// the configured nodes if no view could be had.
    async fn route(&self, key: Option<&[u8]>) -> Vec<SocketAddr> {
        let stale = {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            match view.as_ref() {
                Some(v) if v.fetched.elapsed() < self.refresh => return v.route(key),
                Some(_) => true,
                None => false,
            }
        };
        if stale {
            // Route with the old view now, refresh in the background.
            if !self.refreshing.swap(true, Ordering::AcqRel) {
                let client = self.clone();
                tokio::spawn(async move {
                    let _ = client.fetch_members().await;
                    client.refreshing.store(false, Ordering::Release);
                });
            }
        } else if self.fetch_members().await.is_err() {
            return self.seeds.to_vec();
        }
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.as_ref().map(|v| v.route(key)).unwrap_or_else(|| self.seeds.to_vec())
    }

    /// Sends a request to a replica of `key` (or any node), failing over to
    /// the next on transport errors, on a deadline a node refused at once
    /// (its clock runs ahead), and on a node that applied nothing because it
    /// reached no replica or cannot serve ([`KvError::worth_another_node`]).
    /// Other errors the node itself returns are final: the request reached
    /// a coordinator and its answer stands.
    ///
    /// Each attempt carries its deadline, the end of its timeout on this
    /// machine's wall clock: a node that reads the request only after that
    /// (it was stopped, or overloaded) refuses it, so an attempt given up on
    /// here can never be applied after the next attempt, or the next
    /// request, succeeded elsewhere.
    ///
    /// An attempt lost after it was sent may still have been applied. A
    /// delete, expire or persist retried after one, and answered false,
    /// may have found only what the lost attempt left (the key deleted, or
    /// expired under the TTL it set), so that answer would be a lie: the
    /// lost attempt's error is returned instead, and the outcome stays
    /// unknown to the caller, as it is.
    pub async fn call(&self, key: Option<&[u8]>, request: Request) -> Result<Reply, KvError> {
        let mut route = self.route(key).await;
        if route.is_empty() {
            route = self.seeds.to_vec();
        }
        let route = self.deprioritize(route);
        let request = Box::new(request);
        let mut last = KvError::Unavailable("no node to send the request to".into());
        let mut lost: Option<KvError> = None;
        for addr in route.into_iter().take(MAX_ATTEMPTS) {
            let deadline = Deadline::after(self.clock.now_ms(), self.timeout);
            let session = Request::Session { seen: self.session(), deadline: Some(deadline), request: request.clone() };
            let answer = self.connector.call_resent(addr, &session, self.timeout).await.map(|(response, resent)| {
                // The transport sent it again on a fresh connection: the
                // copy on the lost one may have been applied too.
                if let Some(reason) = resent {
                    lost = Some(NetError::Connection { addr, reason }.into());
                }
                response
            });
            match answer {
                Ok(Err(KvError::ShuttingDown)) => last = KvError::ShuttingDown,
                // Refused before anything was stamped: that node's clock
                // reads past a deadline ours has not reached (it runs
                // ahead), so another node may well take the request.
                Ok(Err(e @ KvError::DeadlineExpired { .. })) => {
                    tracing::debug!(node = %addr, error = %e, "deadline refused; trying another node");
                    self.suspect(addr, true);
                    last = e;
                }
                // The node reached none of the replicas, or cannot serve
                // at all (cut off, fenced): nothing was applied, and a node
                // on the other side of a partition may well succeed.
                Ok(Err(e)) if e.worth_another_node() => {
                    tracing::debug!(node = %addr, error = %e, "the node could not serve; trying another node");
                    // Its view of the cluster (which ours may come from)
                    // is likely as cut off as it is.
                    self.distrust(addr);
                    last = e;
                }
                Ok(Ok(Reply::Session { clock, reply })) => {
                    self.suspect(addr, false);
                    self.session.fetch_max(clock.0, Ordering::AcqRel);
                    if let Some(lost) = lost
                        && may_echo_an_earlier_attempt(&request, &reply)
                    {
                        return Err(lost);
                    }
                    return Ok(*reply);
                }
                Ok(response) => {
                    self.suspect(addr, false);
                    return response;
                }
                Err(e) => {
                    tracing::debug!(node = %addr, error = %e, "request failed, trying another node");
                    self.distrust(addr);
                    let sent = !matches!(e, NetError::Connect { .. });
                    last = e.into();
                    if sent {
                        lost = Some(last.clone());
                    }
                }
            }
        }
        Err(last)
    }

    async fn flag(&self, key: &Bytes, request: Request) -> Result<bool, KvError> {
        match self.call(Some(key), request).await? {
            Reply::Flag(flag) => Ok(flag),
            other => Err(unexpected(other)),
        }
    }
}

/// This machine's wall clock, in milliseconds since the Unix epoch, for
/// deadlines. A clock before 1970 reads as 0, which only makes deadlines
/// early: requests are refused, never applied late.
struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Whether `reply` to `request` may describe what an earlier, lost attempt
/// of the same request left rather than the state before the request: a
/// delete, expire or persist answers false when it finds nothing to change.
fn may_echo_an_earlier_attempt(request: &Request, reply: &Reply) -> bool {
    matches!(request, Request::Delete { .. } | Request::Expire { .. } | Request::Persist { .. })
        && *reply == Reply::Flag(false)
}

fn unexpected(reply: Reply) -> KvError {
    KvError::Protocol(format!("unexpected reply {reply:?}"))
}

fn ttl_ms(ttl: Duration) -> Result<u64, KvError> {
    u64::try_from(ttl.as_millis()).map_err(|_| KvError::InvalidTtl(format!("{ttl:?} is too long")))
}

impl KvStore for Client {
    async fn put(&self, key: impl Into<Bytes> + Send, value: impl Into<Bytes> + Send) -> Result<(), KvError> {
        let key = key.into();
        let request =
            Request::Put { key: key.clone(), value: value.into(), ttl_ms: None, consistency: self.consistency };
        self.call(Some(&key), request).await.map(|_| ())
    }

    async fn put_with_ttl(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
        ttl: Duration,
    ) -> Result<(), KvError> {
        let key = key.into();
        let ttl_ms = Some(ttl_ms(ttl)?);
        let request = Request::Put { key: key.clone(), value: value.into(), ttl_ms, consistency: self.consistency };
        self.call(Some(&key), request).await.map(|_| ())
    }

    async fn get(&self, key: impl Into<Bytes> + Send) -> Result<Option<Bytes>, KvError> {
        let key = key.into();
        match self.call(Some(&key), Request::Get { key: key.clone(), consistency: self.consistency }).await? {
            Reply::Value(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        let key = key.into();
        self.flag(&key, Request::Delete { key: key.clone(), consistency: self.consistency }).await
    }

    async fn exists(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        let key = key.into();
        self.flag(&key, Request::Exists { key: key.clone(), consistency: self.consistency }).await
    }

    async fn ttl(&self, key: impl Into<Bytes> + Send) -> Result<KeyTtl, KvError> {
        let key = key.into();
        match self.call(Some(&key), Request::Ttl { key: key.clone(), consistency: self.consistency }).await? {
            Reply::Ttl(ttl) => Ok(ttl),
            other => Err(unexpected(other)),
        }
    }

    async fn expire(&self, key: impl Into<Bytes> + Send, ttl: Duration) -> Result<bool, KvError> {
        let key = key.into();
        let request = Request::Expire { key: key.clone(), ttl_ms: ttl_ms(ttl)?, consistency: self.consistency };
        self.flag(&key, request).await
    }

    async fn persist(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        let key = key.into();
        self.flag(&key, Request::Persist { key: key.clone(), consistency: self.consistency }).await
    }

    async fn clear(&self) -> Result<(), KvError> {
        self.call(None, Request::Clear).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_net::tls::NodeCheck;
    use ringkv_net::wire::Response;
    use ringkv_net::{Handler, Peer, ServeOptions, serve};
    use tokio::sync::watch;

    /// A node that answers every expire with `flag`, or with nothing at
    /// all (`None`: it applied the request and died before answering, as
    /// far as a client can tell), and has no membership to give.
    struct Fake {
        flag: Option<bool>,
    }

    impl Handler for Fake {
        async fn handle(&self, request: Request, _peer: Peer) -> Response {
            match (request, self.flag) {
                (Request::Session { request, .. }, Some(flag)) if matches!(*request, Request::Expire { .. }) => {
                    Ok(Reply::Session { clock: Timestamp(1), reply: Box::new(Reply::Flag(flag)) })
                }
                (Request::Session { .. }, None) => std::future::pending().await,
                _ => Err(KvError::Unavailable("a fake node".into())),
            }
        }
    }

    async fn fake(dir: &std::path::Path, flag: Option<bool>) -> (SocketAddr, watch::Sender<bool>) {
        let identity = Identity::load(&TlsPaths::node_in(dir, "n1")).unwrap();
        let settings = TransportSettings::default();
        let server = ringkv_net::tls::listener(&identity, &settings).unwrap();
        let client = client_config(&identity, &settings).unwrap();
        let endpoint = bind("127.0.0.1:0".parse().unwrap(), Some(server), client, None).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let options = ServeOptions {
            max_frame_bytes: 1 << 20,
            max_connections: 16,
            read_timeout: Duration::from_secs(5),
            node_check: NodeCheck::new(&identity).unwrap(),
        };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(endpoint, Arc::new(Fake { flag }), options, stopped));
        (addr, stop)
    }

    /// Simulator seed 329: an expire reached a node that applied it and
    /// crashed; the retry elsewhere found the key expired under the TTL the
    /// first attempt set, and the client reported "not applied".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_cannot_answer_for_an_attempt_that_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        ringkv_net::certs::init(dir.path(), &["n1".into()], &[]).unwrap();
        let (lost, _a) = fake(dir.path(), None).await;
        let (no, _b) = fake(dir.path(), Some(false)).await;
        let (yes, _c) = fake(dir.path(), Some(true)).await;
        let client = |nodes| {
            let mut config = ClientConfig::new(nodes, TlsPaths::client_in(dir.path()));
            config.timeout = Duration::from_millis(500);
            Client::new(config).unwrap()
        };
        let expire = |client: Client| async move { client.expire("k", Duration::from_secs(1)).await };

        let err = expire(client(vec![lost, no])).await.unwrap_err();
        assert!(matches!(err, KvError::Timeout { .. }), "the lost attempt's fate stays unknown: {err}");
        assert_eq!(expire(client(vec![lost, yes])).await, Ok(true), "a retry that applied answers for itself");
        assert_eq!(expire(client(vec![no])).await, Ok(false), "with no attempt lost, false is the answer");
    }
}
