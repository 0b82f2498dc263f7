//! How a node reaches other nodes' replicas. Behind a trait so that tests
//! can cut links and drop messages without touching the network, the way
//! chitchat's `ChannelTransport` does for gossip.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ringkv_core::KvError;
use ringkv_net::Connector;
use ringkv_net::wire::{ReplicaRequest, ReplicationStatus, Reply, Request, Sent};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::metrics::{Lane, Metrics};
use crate::topology::Topology;

pub type PeerFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, KvError>> + Send + 'a>>;

pub trait PeerTransport: Send + Sync + 'static {
    /// Sends one replica request and waits at most `timeout` for the reply.
    fn call(&self, addr: SocketAddr, request: ReplicaRequest, timeout: Duration) -> PeerFuture<'_>;
}

/// The production transport: the node's own QUIC endpoint, one connection
/// per peer, a stream per request.
///
/// With the node's topology set, a request goes only to a peer whose
/// certificate names the member at that address (any node certificate for
/// an address that is no member's): a process that took over a member's
/// address is refused before anything is sent.
pub struct QuicPeers {
    connector: Arc<Connector>,
    topology: OnceLock<watch::Receiver<Arc<Topology>>>,
}

impl QuicPeers {
    pub fn new(connector: Arc<Connector>) -> QuicPeers {
        QuicPeers { connector, topology: OnceLock::new() }
    }

    pub(crate) fn set_topology(&self, topology: watch::Receiver<Arc<Topology>>) {
        let _ = self.topology.set(topology);
    }

    /// Whether the node id a peer's certificate names may answer at `addr`.
    fn accepts(&self, addr: SocketAddr, id: &str) -> bool {
        let Some(topology) = self.topology.get() else { return true };
        let topology = topology.borrow();
        let mut at = topology.members.iter().filter(|(_, m)| m.addr == addr).peekable();
        at.peek().is_none() || at.any(|(name, _)| **name == *id)
    }
}

impl PeerTransport for QuicPeers {
    fn call(&self, addr: SocketAddr, request: ReplicaRequest, timeout: Duration) -> PeerFuture<'_> {
        Box::pin(async move {
            let accept = |id: &str| self.accepts(addr, id);
            match self.connector.call_node(addr, &accept, &Request::Replica(request), timeout).await {
                Ok(response) => response,
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Replica batches one peer may have outstanding at once. A batch is what
/// has queued by the time it is sent, so under light load every write
/// travels alone and at once; writes that arrive while all batches are out
/// wait and leave together. Under heavy load the per-stream cost of QUIC
/// (stream state, a task on each side, frames and packets) is then paid once
/// per batch instead of once per write. Two rather than one so that a peer
/// far away still gets a batch every half round trip; on loopback one and
/// two measured the same, eight made batches too small to matter
/// (BENCHMARKS.md).
const BATCHES_IN_FLIGHT: usize = 2;
/// Writes waiting for one peer; a caller that finds the queue full waits.
const QUEUE_PER_PEER: usize = 4096;
/// A peer's batcher that has had nothing to send this long exits; the next
/// write to that peer starts a new one.
const BATCHER_IDLE: Duration = Duration::from_secs(10);
/// What an apply or a read adds to a frame besides its key and value
/// (postcard's varints, the version, the expiry, a stand-in's name are all
/// far below).
const REQUEST_OVERHEAD: usize = 256;

/// Coalesces replica writes to the same peer into `ReplicaRequest::Batch`
/// requests, and reads likewise. Reads and writes queue apart: a batch is
/// answered when its slowest request is, and a read must not wait for a
/// write's fsync. A batch of reads could return more than a frame holds;
/// the peer answers the reads that do not fit with `Reply::Deferred`, and
/// those are asked again alone.
pub struct BatchingPeers {
    inner: Arc<dyn PeerTransport>,
    shared: Arc<Shared>,
}

/// What `ringkv status` and the metrics show of batching.
#[derive(Debug, Default)]
pub struct BatchStats {
    writes: Counts,
    reads: Counts,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Debug, Default)]
struct Counts {
    items: AtomicU64,
    requests: AtomicU64,
}

impl Counts {
    fn sent(&self) -> Sent {
        Sent { items: self.items.load(Ordering::Relaxed), requests: self.requests.load(Ordering::Relaxed) }
    }
}

impl BatchStats {
    pub(crate) fn new(metrics: Option<Arc<Metrics>>) -> BatchStats {
        BatchStats { metrics, ..BatchStats::default() }
    }

    fn record(&self, lane: Lane, items: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.batch(lane, items);
        }
        let counts = match lane {
            Lane::Writes => &self.writes,
            Lane::Reads => &self.reads,
        };
        counts.items.fetch_add(items as u64, Ordering::Relaxed);
        counts.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn status(&self) -> ReplicationStatus {
        ReplicationStatus { writes: self.writes.sent(), reads: self.reads.sent() }
    }
}

struct Shared {
    max_items: usize,
    max_bytes: usize,
    stats: Arc<BatchStats>,
    /// Each lane's batcher by peer: its id (a batcher that exits as idle
    /// removes only itself) and its queue.
    queues: Mutex<HashMap<(SocketAddr, Lane), Batcher>>,
    next_id: AtomicU64,
}

type Batcher = (u64, mpsc::Sender<Queued>);

struct Queued {
    request: ReplicaRequest,
    bytes: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<Reply, KvError>>,
}

impl BatchingPeers {
    /// `max_items` requests or `max_bytes` of keys and values per batch,
    /// whichever comes first; a write bigger than `max_bytes` travels alone.
    pub fn new(
        inner: Arc<dyn PeerTransport>,
        max_items: usize,
        max_bytes: usize,
        stats: Arc<BatchStats>,
    ) -> BatchingPeers {
        let shared = Shared { max_items, max_bytes, stats, queues: Mutex::default(), next_id: AtomicU64::new(0) };
        BatchingPeers { inner, shared: Arc::new(shared) }
    }

    /// The queue of the batcher for `addr`'s lane, started if there is none.
    fn queue(&self, addr: SocketAddr, lane: Lane) -> mpsc::Sender<Queued> {
        let mut queues = self.shared.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, tx)) = queues.get(&(addr, lane)) {
            return tx.clone();
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE_PER_PEER);
        queues.insert((addr, lane), (id, tx.clone()));
        tokio::spawn(batcher(self.inner.clone(), self.shared.clone(), addr, lane, id, rx));
        tx
    }
}

impl PeerTransport for BatchingPeers {
    fn call(&self, addr: SocketAddr, request: ReplicaRequest, timeout: Duration) -> PeerFuture<'_> {
        let (lane, bytes) = match &request {
            ReplicaRequest::Apply { key, entry, .. } => {
                (Lane::Writes, key.len() + entry.value.as_ref().map_or(0, |v| v.len()) + REQUEST_OVERHEAD)
            }
            ReplicaRequest::Read { key, .. } => (Lane::Reads, key.len() + REQUEST_OVERHEAD),
            _ => return self.inner.call(addr, request, timeout),
        };
        if self.shared.max_items <= 1 {
            self.shared.stats.record(lane, 1);
            return self.inner.call(addr, request, timeout);
        }
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            let timed_out = || KvError::from(ringkv_net::NetError::Timeout { addr, ms: timeout.as_millis() as u64 });
            let (reply, replied) = oneshot::channel();
            let mut queued = Queued { request, bytes, deadline, reply };
            // A batcher exiting as idle closes its queue; the second attempt
            // starts a new one.
            for _ in 0..2 {
                match tokio::time::timeout_at(deadline, self.queue(addr, lane).send(queued)).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Err(mpsc::error::SendError(back))) => queued = back,
                    Ok(Ok(())) => {
                        return match tokio::time::timeout_at(deadline, replied).await {
                            Ok(Ok(result)) => result,
                            Ok(Err(_)) => Err(KvError::Internal(format!("the batcher for {addr} stopped"))),
                            Err(_) => Err(timed_out()),
                        };
                    }
                }
            }
            Err(KvError::Internal(format!("cannot queue a request for {addr}")))
        })
    }
}

/// Sends what is queued for one peer, at most [`BATCHES_IN_FLIGHT`] batches
/// at a time, each as large as has accumulated.
async fn batcher(
    inner: Arc<dyn PeerTransport>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    lane: Lane,
    id: u64,
    mut rx: mpsc::Receiver<Queued>,
) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match tokio::time::timeout(BATCHER_IDLE, rx.recv()).await {
                Ok(Some(q)) => q,
                Ok(None) => return,
                Err(_) => {
                    let mut queues = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
                    if queues.get(&(addr, lane)).is_some_and(|(current, _)| *current == id) {
                        queues.remove(&(addr, lane));
                    }
                    // Senders holding a clone now fail and start a new
                    // batcher; what is already queued is still sent below.
                    rx.close();
                    continue;
                }
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < shared.max_items {
            match rx.try_recv() {
                Ok(q) if bytes + q.bytes <= shared.max_bytes => {
                    bytes += q.bytes;
                    batch.push(q);
                }
                Ok(q) => {
                    carried = Some(q);
                    break;
                }
                Err(_) => break,
            }
        }
        let (inner, stats) = (inner.clone(), shared.stats.clone());
        tokio::spawn(async move {
            send_batch(&*inner, &stats, addr, lane, batch).await;
            drop(permit);
        });
    }
}

async fn send_batch(inner: &dyn PeerTransport, stats: &BatchStats, addr: SocketAddr, lane: Lane, batch: Vec<Queued>) {
    let now = Instant::now();
    // Requests whose callers have given up are not sent at all.
    let batch: Vec<Queued> = batch.into_iter().filter(|q| q.deadline > now && !q.reply.is_closed()).collect();
    let Some(deadline) = batch.iter().map(|q| q.deadline).max() else { return };
    stats.record(lane, batch.len());
    let timeout = deadline - now;
    if batch.len() == 1 {
        let Queued { request, reply, .. } = batch.into_iter().next().expect("one");
        let _ = reply.send(inner.call(addr, request, timeout).await);
        return;
    }
    // Reads are cheap to keep (a key), and kept to be asked again if the
    // peer defers them.
    let (requests, waiting): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|q| {
            let again = (lane == Lane::Reads).then(|| q.request.clone());
            (q.request, (q.reply, q.deadline, again))
        })
        .unzip();
    let count = requests.len();
    let error = match inner.call(addr, ReplicaRequest::Batch(requests), timeout).await {
        Ok(Reply::Batch(results)) if results.len() == count => {
            let mut deferred = Vec::new();
            for ((reply, deadline, again), result) in waiting.into_iter().zip(results) {
                match (result, again) {
                    (Ok(Reply::Deferred), Some(request)) => deferred.push((reply, deadline, request)),
                    (result, _) => {
                        let _ = reply.send(result);
                    }
                }
            }
            let alone = deferred.into_iter().map(|(reply, deadline, request)| async move {
                stats.record(lane, 1);
                let _ = reply.send(inner.call(addr, request, deadline.saturating_duration_since(Instant::now())).await);
            });
            futures_util::future::join_all(alone).await;
            return;
        }
        Ok(Reply::Batch(results)) => {
            KvError::Protocol(format!("{addr} answered a batch of {count} with {} replies", results.len()))
        }
        Ok(_) => KvError::Protocol(format!("{addr} answered a batch of {count} with something else")),
        Err(e) => e,
    };
    for (reply, ..) in waiting {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_core::{Entry, Version};
    use ringkv_net::wire;

    /// Holds every call until the test opens the gate. Answers each write
    /// with `was_live` set to whether its key has an even length, and each
    /// read with an entry whose value is its key, so a caller can tell its
    /// own answer from its neighbour's. Fits batch replies into `max_frame`
    /// bytes as a node does.
    struct Gated {
        gate: Semaphore,
        sizes: Mutex<Vec<usize>>,
        fail: bool,
        max_frame: usize,
    }

    fn entry(value: &[u8]) -> Entry {
        Entry { version: Version::ZERO, value: Some(Bytes::copy_from_slice(value)), expires_at: None }
    }

    fn answer(request: ReplicaRequest, max_frame: usize) -> Result<Reply, KvError> {
        match request {
            ReplicaRequest::Batch(requests) => {
                let replies = requests.into_iter().map(|r| answer(r, max_frame)).collect();
                Ok(Reply::Batch(wire::fit_batch(replies, max_frame)))
            }
            ReplicaRequest::Apply { key, .. } => Ok(Reply::Applied { was_live: key.len().is_multiple_of(2) }),
            ReplicaRequest::Read { key, .. } => Ok(Reply::Entry(Some(entry(&key)))),
            _ => Ok(Reply::Done),
        }
    }

    /// What `answer` gives a request on its own.
    fn expected(key: &str, lane: Lane) -> Result<Reply, KvError> {
        match lane {
            Lane::Writes => Ok(Reply::Applied { was_live: key.len().is_multiple_of(2) }),
            Lane::Reads => Ok(Reply::Entry(Some(entry(key.as_bytes())))),
        }
    }

    impl Gated {
        /// The size of every request seen so far, smallest first.
        fn sent(&self) -> Vec<usize> {
            let mut sizes = self.sizes.lock().unwrap().clone();
            sizes.sort_unstable();
            sizes
        }
    }

    impl PeerTransport for Gated {
        fn call(&self, _addr: SocketAddr, request: ReplicaRequest, _timeout: Duration) -> PeerFuture<'_> {
            Box::pin(async move {
                let size = match &request {
                    ReplicaRequest::Batch(requests) => requests.len(),
                    _ => 1,
                };
                self.sizes.lock().unwrap().push(size);
                self.gate.acquire().await.unwrap().forget();
                if self.fail { Err(KvError::Unavailable("link cut".into())) } else { answer(request, self.max_frame) }
            })
        }
    }

    fn request(key: &str, lane: Lane) -> ReplicaRequest {
        let key = Bytes::from(key.to_owned());
        match lane {
            Lane::Writes => {
                ReplicaRequest::Apply { partition: 0, key, entry: entry(b"v"), condition: None, hint_for: None }
            }
            Lane::Reads => ReplicaRequest::Read { partition: 0, key },
        }
    }

    const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    struct Harness {
        inner: Arc<Gated>,
        peers: Arc<BatchingPeers>,
        calls: Vec<tokio::task::JoinHandle<(String, Result<Reply, KvError>)>>,
    }

    impl Harness {
        fn new(max_items: usize, max_bytes: usize, fail: bool) -> Harness {
            Harness::with_frame(max_items, max_bytes, fail, 1 << 20)
        }

        fn with_frame(max_items: usize, max_bytes: usize, fail: bool, max_frame: usize) -> Harness {
            let inner = Arc::new(Gated { gate: Semaphore::new(0), sizes: Mutex::default(), fail, max_frame });
            let peers = Arc::new(BatchingPeers::new(inner.clone(), max_items, max_bytes, Arc::default()));
            Harness { inner, peers, calls: Vec::new() }
        }

        fn send(&mut self, key: String, lane: Lane) {
            let peers = self.peers.clone();
            self.calls.push(tokio::spawn(async move {
                let result = peers.call(ADDR, request(&key, lane), Duration::from_secs(30)).await;
                (key, result)
            }));
        }

        /// Yields until `done` holds; the runtime is single-threaded, so the
        /// other tasks run exactly when this one yields.
        async fn until(&self, what: &str, done: impl Fn(&Harness) -> bool) {
            for _ in 0..10_000 {
                if done(self) {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("never reached: {what}");
        }

        fn sent(&self) -> Vec<usize> {
            self.inner.sent()
        }

        fn queued(&self, lane: Lane) -> usize {
            let queues = self.peers.shared.queues.lock().unwrap();
            queues.get(&(ADDR, lane)).map_or(0, |(_, tx)| QUEUE_PER_PEER - tx.capacity())
        }

        /// Opens the gate and returns every caller's result.
        async fn finish(self) -> Vec<(String, Result<Reply, KvError>)> {
            self.inner.gate.add_permits(1 << 20);
            let mut results = Vec::new();
            for call in self.calls {
                results.push(call.await.unwrap());
            }
            results
        }
    }

    /// Fills every in-flight slot of `lane` with a request of its own, then
    /// queues `n` more behind them, the i-th with a key of i + 1 bytes.
    async fn saturate(h: &mut Harness, lane: Lane, n: usize) {
        let before = h.sent().len();
        for i in 0..BATCHES_IN_FLIGHT {
            h.send(format!("alone-{i}"), lane);
            h.until("the request sent", |h| h.sent().len() == before + i + 1).await;
        }
        for i in 0..n {
            h.send("k".repeat(i + 1), lane);
        }
        // The batcher holds the first of them while it waits for a slot.
        h.until("the rest queued", |h| h.queued(lane) == n - 1).await;
    }

    #[tokio::test]
    async fn requests_travel_alone_until_the_peer_is_busy_then_together() {
        for lane in [Lane::Writes, Lane::Reads] {
            let mut h = Harness::new(64, 1 << 20, false);
            saturate(&mut h, lane, 20).await;
            assert_eq!(h.sent(), vec![1; BATCHES_IN_FLIGHT], "nothing more is sent while every slot is busy");
            let results = h.finish().await;
            for (key, result) in &results {
                assert_eq!(result, &expected(key, lane), "answer for {key}");
            }
        }
    }

    /// The size of every request the peer saw when `n` writes queued behind
    /// busy slots, smallest first.
    async fn sizes_sent(max_items: usize, max_bytes: usize, n: usize) -> Vec<usize> {
        let mut h = Harness::new(max_items, max_bytes, false);
        saturate(&mut h, Lane::Writes, n).await;
        let (inner, stats) = (h.inner.clone(), h.peers.shared.stats.clone());
        h.finish().await;
        let sizes = inner.sent();
        let status = stats.status();
        assert_eq!(status.writes, Sent { items: sizes.iter().sum::<usize>() as u64, requests: sizes.len() as u64 });
        assert_eq!(status.reads, Sent::default());
        sizes
    }

    #[tokio::test]
    async fn queued_writes_leave_as_one_batch_within_the_limits() {
        let alone = vec![1; BATCHES_IN_FLIGHT];
        assert_eq!(sizes_sent(64, 1 << 20, 20).await, [alone.clone(), vec![20]].concat());
        assert_eq!(sizes_sent(4, 1 << 20, 10).await, [alone.clone(), vec![2, 4, 4]].concat(), "at most 4 per batch");
        // Each write counts its key, its one-byte value and the overhead.
        let per_write = |i: usize| i + 1 + 1 + REQUEST_OVERHEAD;
        let max_bytes = per_write(0) + per_write(1) + per_write(2);
        assert_eq!(sizes_sent(64, max_bytes, 6).await, [alone, vec![1, 2, 3]].concat(), "bounded by bytes");
    }

    #[tokio::test]
    async fn reads_and_writes_queue_apart() {
        let mut h = Harness::new(64, 1 << 20, false);
        saturate(&mut h, Lane::Writes, 5).await;
        // Every write slot is busy, yet a read is sent at once.
        h.send("r".into(), Lane::Reads);
        h.until("the read sent", |h| h.sent().len() == BATCHES_IN_FLIGHT + 1).await;
        assert_eq!(h.queued(Lane::Reads), 0);
        for (key, result) in h.finish().await {
            let lane = if key == "r" { Lane::Reads } else { Lane::Writes };
            assert_eq!(result, expected(&key, lane), "answer for {key}");
        }
    }

    #[tokio::test]
    async fn reads_deferred_by_the_peer_are_asked_again_alone() {
        // Each answer carries its key as the value: 20 reads with keys of 1
        // to 20 bytes answer with 210 bytes of values plus per-entry
        // overhead, so a 150-byte frame holds only the first few.
        let mut h = Harness::with_frame(64, 1 << 20, false, 150);
        saturate(&mut h, Lane::Reads, 20).await;
        let stats = h.peers.shared.stats.clone();
        let inner = h.inner.clone();
        for (key, result) in h.finish().await {
            assert_eq!(result, expected(&key, Lane::Reads), "answer for {key}");
        }
        let sizes = inner.sent();
        let batch = *sizes.last().unwrap();
        assert_eq!(batch, 20, "the queued reads went as one batch: {sizes:?}");
        let alone = sizes.iter().filter(|s| **s == 1).count() - BATCHES_IN_FLIGHT;
        assert!(alone > 0 && alone < 20, "some reads were deferred and asked again alone: {sizes:?}");
        let reads = stats.status().reads;
        assert_eq!(reads, Sent { items: (BATCHES_IN_FLIGHT + 20 + alone) as u64, requests: sizes.len() as u64 });
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests() {
        let mut h = Harness::new(64, 1 << 20, true);
        saturate(&mut h, Lane::Writes, 5).await;
        for (key, result) in h.finish().await {
            assert_eq!(result, Err(KvError::Unavailable("link cut".into())), "{key}");
        }
    }

    #[tokio::test]
    async fn with_batching_off_every_request_is_its_own() {
        let h = Harness::new(1, 1 << 20, false);
        h.inner.gate.add_permits(3);
        for (key, lane) in [("a", Lane::Writes), ("bb", Lane::Writes), ("c", Lane::Reads)] {
            let reply = h.peers.call(ADDR, request(key, lane), Duration::from_secs(1)).await;
            assert_eq!(reply, expected(key, lane));
        }
        assert_eq!(h.sent(), [1, 1, 1]);
        assert!(h.peers.shared.queues.lock().unwrap().is_empty(), "no batcher when batching is off");
        let status = h.peers.shared.stats.status();
        assert_eq!(status.writes, Sent { items: 2, requests: 2 });
        assert_eq!(status.reads, Sent { items: 1, requests: 1 });
    }

    #[tokio::test]
    async fn other_requests_bypass_the_batchers() {
        let h = Harness::new(64, 1 << 20, false);
        h.inner.gate.add_permits(1);
        let truncate = ReplicaRequest::Truncate { epoch: Default::default() };
        assert_eq!(h.peers.call(ADDR, truncate, Duration::from_secs(1)).await, Ok(Reply::Done));
        assert!(h.peers.shared.queues.lock().unwrap().is_empty(), "a truncate starts no batcher");
    }
}
