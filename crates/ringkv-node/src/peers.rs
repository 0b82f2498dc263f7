//! How a node reaches other nodes' replicas. Behind a trait so that tests
//! can cut links and drop messages without touching the network, the way
//! chitchat's `ChannelTransport` does for gossip.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_core::KvError;
use ringkv_net::Connector;
use ringkv_net::wire::{ReplicaRequest, ReplicationStatus, Reply, Request};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

pub type PeerFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, KvError>> + Send + 'a>>;

pub trait PeerTransport: Send + Sync + 'static {
    /// Sends one replica request and waits at most `timeout` for the reply.
    fn call(&self, addr: SocketAddr, request: ReplicaRequest, timeout: Duration) -> PeerFuture<'_>;
}

/// The production transport: the node's own QUIC endpoint, one connection
/// per peer, a stream per request.
pub struct QuicPeers {
    connector: Arc<Connector>,
}

impl QuicPeers {
    pub fn new(connector: Arc<Connector>) -> QuicPeers {
        QuicPeers { connector }
    }
}

impl PeerTransport for QuicPeers {
    fn call(&self, addr: SocketAddr, request: ReplicaRequest, timeout: Duration) -> PeerFuture<'_> {
        Box::pin(async move {
            match self.connector.call(addr, &Request::Replica(request), timeout).await {
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
/// What an apply adds to a frame besides its key and value (postcard's
/// varints, the version, the expiry, a stand-in's name are all far below).
const APPLY_OVERHEAD: usize = 256;

/// Coalesces replica writes to the same peer into `ReplicaRequest::Batch`
/// requests. Only writes: their replies are a few bytes, so a batch's reply
/// always fits a frame, whereas a batch of reads could return values adding
/// up to more than the frame limit.
pub struct BatchingPeers {
    inner: Arc<dyn PeerTransport>,
    shared: Arc<Shared>,
}

/// What `ringkv status` shows of batching.
#[derive(Debug, Default)]
pub struct BatchStats {
    writes: AtomicU64,
    requests: AtomicU64,
}

impl BatchStats {
    fn record(&self, writes: usize) {
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn status(&self) -> ReplicationStatus {
        ReplicationStatus {
            writes: self.writes.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

struct Shared {
    max_items: usize,
    max_bytes: usize,
    stats: Arc<BatchStats>,
    queues: Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Queued>)>>,
    next_id: AtomicU64,
}

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

    /// The queue of the batcher for `addr`, started if there is none.
    fn queue(&self, addr: SocketAddr) -> mpsc::Sender<Queued> {
        let mut queues = self.shared.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, tx)) = queues.get(&addr) {
            return tx.clone();
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE_PER_PEER);
        queues.insert(addr, (id, tx.clone()));
        tokio::spawn(batcher(self.inner.clone(), self.shared.clone(), addr, id, rx));
        tx
    }
}

impl PeerTransport for BatchingPeers {
    fn call(&self, addr: SocketAddr, request: ReplicaRequest, timeout: Duration) -> PeerFuture<'_> {
        let bytes = match &request {
            ReplicaRequest::Apply { key, entry, .. } => {
                key.len() + entry.value.as_ref().map_or(0, |v| v.len()) + APPLY_OVERHEAD
            }
            _ => return self.inner.call(addr, request, timeout),
        };
        if self.shared.max_items <= 1 {
            self.shared.stats.record(1);
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
                match tokio::time::timeout_at(deadline, self.queue(addr).send(queued)).await {
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
            Err(KvError::Internal(format!("cannot queue a write for {addr}")))
        })
    }
}

/// Sends what is queued for one peer, at most [`BATCHES_IN_FLIGHT`] batches
/// at a time, each as large as has accumulated.
async fn batcher(
    inner: Arc<dyn PeerTransport>,
    shared: Arc<Shared>,
    addr: SocketAddr,
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
                    if queues.get(&addr).is_some_and(|(current, _)| *current == id) {
                        queues.remove(&addr);
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
            send_batch(&*inner, &stats, addr, batch).await;
            drop(permit);
        });
    }
}

async fn send_batch(inner: &dyn PeerTransport, stats: &BatchStats, addr: SocketAddr, batch: Vec<Queued>) {
    let now = Instant::now();
    // Writes whose callers have given up are not sent at all.
    let batch: Vec<Queued> = batch.into_iter().filter(|q| q.deadline > now && !q.reply.is_closed()).collect();
    let Some(deadline) = batch.iter().map(|q| q.deadline).max() else { return };
    stats.record(batch.len());
    let timeout = deadline - now;
    if batch.len() == 1 {
        let Queued { request, reply, .. } = batch.into_iter().next().expect("one");
        let _ = reply.send(inner.call(addr, request, timeout).await);
        return;
    }
    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.request, q.reply)).unzip();
    let count = requests.len();
    let error = match inner.call(addr, ReplicaRequest::Batch(requests), timeout).await {
        Ok(Reply::Batch(results)) if results.len() == count => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
            return;
        }
        Ok(Reply::Batch(results)) => {
            KvError::Protocol(format!("{addr} answered a batch of {count} with {} replies", results.len()))
        }
        Ok(_) => KvError::Protocol(format!("{addr} answered a batch of {count} with something else")),
        Err(e) => e,
    };
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_core::{Entry, Version};

    /// Holds every call until the test opens the gate; answers each write
    /// with `was_live` set to whether its key has an even length, so a
    /// caller can tell its own answer from its neighbour's.
    struct Gated {
        gate: Semaphore,
        sizes: Mutex<Vec<usize>>,
        fail: bool,
    }

    fn answer(request: ReplicaRequest) -> Result<Reply, KvError> {
        match request {
            ReplicaRequest::Batch(requests) => Ok(Reply::Batch(requests.into_iter().map(answer).collect())),
            ReplicaRequest::Apply { key, .. } => Ok(Reply::Applied { was_live: key.len() % 2 == 0 }),
            _ => Ok(Reply::Done),
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
                if self.fail { Err(KvError::Unavailable("link cut".into())) } else { answer(request) }
            })
        }
    }

    fn apply(key: &str) -> ReplicaRequest {
        let entry = Entry { version: Version::ZERO, value: Some(Bytes::from_static(b"v")), expires_at: None };
        ReplicaRequest::Apply { partition: 0, key: Bytes::from(key.to_owned()), entry, condition: None, hint_for: None }
    }

    const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    struct Harness {
        inner: Arc<Gated>,
        peers: Arc<BatchingPeers>,
        calls: Vec<tokio::task::JoinHandle<(String, Result<Reply, KvError>)>>,
    }

    impl Harness {
        fn new(max_items: usize, max_bytes: usize, fail: bool) -> Harness {
            let inner = Arc::new(Gated { gate: Semaphore::new(0), sizes: Mutex::default(), fail });
            let peers = Arc::new(BatchingPeers::new(inner.clone(), max_items, max_bytes, Arc::default()));
            Harness { inner, peers, calls: Vec::new() }
        }

        fn write(&mut self, key: String) {
            let peers = self.peers.clone();
            self.calls.push(tokio::spawn(async move {
                let result = peers.call(ADDR, apply(&key), Duration::from_secs(30)).await;
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

        fn queued(&self) -> usize {
            let queues = self.peers.shared.queues.lock().unwrap();
            queues.get(&ADDR).map_or(0, |(_, tx)| QUEUE_PER_PEER - tx.capacity())
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

    /// Fills every in-flight slot with a write of its own, then queues `n`
    /// more behind them.
    async fn saturate(h: &mut Harness, n: usize) {
        for i in 0..BATCHES_IN_FLIGHT {
            h.write(format!("alone-{i}"));
            h.until("the write sent", |h| h.sent().len() == i + 1).await;
        }
        for i in 0..n {
            h.write("k".repeat(i + 1));
        }
        // The batcher holds the first of them while it waits for a slot.
        h.until("the rest queued", |h| h.queued() == n - 1).await;
    }

    #[tokio::test]
    async fn writes_travel_alone_until_the_peer_is_busy_then_together() {
        let mut h = Harness::new(64, 1 << 20, false);
        saturate(&mut h, 20).await;
        assert_eq!(h.sent(), vec![1; BATCHES_IN_FLIGHT], "nothing more is sent while every slot is busy");
        let results = h.finish().await;
        for (key, result) in &results {
            assert_eq!(result, &Ok(Reply::Applied { was_live: key.len() % 2 == 0 }), "answer for {key}");
        }
    }

    /// The size of every request the peer saw when `n` writes queued behind
    /// busy slots, smallest first.
    async fn sizes_sent(max_items: usize, max_bytes: usize, n: usize) -> Vec<usize> {
        let mut h = Harness::new(max_items, max_bytes, false);
        saturate(&mut h, n).await;
        let (inner, stats) = (h.inner.clone(), h.peers.shared.stats.clone());
        h.finish().await;
        let sizes = inner.sent();
        let status = stats.status();
        assert_eq!(status.writes, sizes.iter().sum::<usize>() as u64);
        assert_eq!(status.requests, sizes.len() as u64);
        sizes
    }

    #[tokio::test]
    async fn queued_writes_leave_as_one_batch_within_the_limits() {
        let alone = vec![1; BATCHES_IN_FLIGHT];
        assert_eq!(sizes_sent(64, 1 << 20, 20).await, [alone.clone(), vec![20]].concat());
        assert_eq!(sizes_sent(4, 1 << 20, 10).await, [alone.clone(), vec![2, 4, 4]].concat(), "at most 4 per batch");
        // Each write counts its key, its one-byte value and the overhead.
        let per_write = |i: usize| i + 1 + 1 + APPLY_OVERHEAD;
        let max_bytes = per_write(0) + per_write(1) + per_write(2);
        assert_eq!(sizes_sent(64, max_bytes, 6).await, [alone, vec![1, 2, 3]].concat(), "bounded by bytes");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_writes() {
        let mut h = Harness::new(64, 1 << 20, true);
        saturate(&mut h, 5).await;
        for (key, result) in h.finish().await {
            assert_eq!(result, Err(KvError::Unavailable("link cut".into())), "{key}");
        }
    }

    #[tokio::test]
    async fn with_batching_off_every_write_is_its_own_request() {
        let h = Harness::new(1, 1 << 20, false);
        h.inner.gate.add_permits(2);
        for key in ["a", "bb"] {
            let reply = h.peers.call(ADDR, apply(key), Duration::from_secs(1)).await;
            assert_eq!(reply, Ok(Reply::Applied { was_live: key.len() % 2 == 0 }));
        }
        assert_eq!(h.sent(), [1, 1]);
        assert!(h.peers.shared.queues.lock().unwrap().is_empty(), "no batcher when batching is off");
        assert_eq!(h.peers.shared.stats.status(), ReplicationStatus { writes: 2, requests: 2 });
    }

    #[tokio::test]
    async fn only_writes_are_batched() {
        let h = Harness::new(64, 1 << 20, false);
        h.inner.gate.add_permits(1);
        let read = ReplicaRequest::Read { partition: 0, key: Bytes::from_static(b"k") };
        assert_eq!(h.peers.call(ADDR, read, Duration::from_secs(1)).await, Ok(Reply::Done));
        assert_eq!(h.queued(), 0);
        assert!(h.peers.shared.queues.lock().unwrap().is_empty(), "a read starts no batcher");
    }
}
