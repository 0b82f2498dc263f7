//! Prometheus metrics: `GET /metrics` on `metrics_listen`.
//!
//! Two kinds of series. What only the request path sees (requests by
//! operation, protocol and result, their latency, replica batch sizes,
//! hints delivered, fsync latency) is counted where it happens, on handles
//! registered once at start: an atomic add, no lookup by name or label.
//! What the node already counts for `ringkv status` (keys, memory, hints
//! held, repair, transfers, members, gossip) is read when scraped, so the
//! two never disagree and the hot path pays nothing for them.
//!
//! The recorder is the node's own, never installed globally: several nodes
//! in one process (tests, the simulator) keep separate metrics. Without
//! `metrics_listen` the node has no `Metrics` and counts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use ringkv_core::KvError;
use ringkv_net::wire::{Members, NodeStatus, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The recorder ignores metadata; the `metrics` API requires one.
static META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Latency buckets, in seconds: 50 µs (a local read) to 10 s (a request
/// that waited out its replicas' timeouts).
const LATENCY_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Items per replica request: 1 (no batching) up to the batch limit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A scrape's request head may be no larger; Prometheus sends a few
/// hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Scrapes served at once; more wait in the accept queue.
const MAX_SCRAPES: usize = 8;
/// A scraper has this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Latencies are folded into the exporter's histograms, and its samples
/// into buckets, this often: each fold pushes one sample per request since
/// the last, held until the exporter's upkeep right after.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Quic,
    Resp,
}

impl Protocol {
    const ALL: [Protocol; 2] = [Protocol::Quic, Protocol::Resp];

    fn label(self) -> &'static str {
        match self {
            Protocol::Quic => "quic",
            Protocol::Resp => "resp",
        }
    }
}

/// What a request did, in ringkv's terms: a Redis `MGET` is a `get`, a
/// `SETEX` a `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Put,
    Delete,
    Exists,
    Ttl,
    Expire,
    Persist,
    Clear,
    /// A read-modify-write: `INCR`, `APPEND`, `SET … NX`, `GETDEL`, ...
    Update,
    /// A walk of the keyspace: `SCAN`, `KEYS`, `DBSIZE`, `RANDOMKEY`.
    Scan,
    /// A peer's request to this node as a replica.
    Replica,
    /// Handshakes and pings: `HELLO`, `AUTH`, `PING`, `CLIENT`, ...
    Connection,
    /// Requests about the node or the cluster: status, members, config.
    Admin,
    /// A command the node does not know.
    Unknown,
}

impl Op {
    const ALL: [Op; 14] = [
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::Exists,
        Op::Ttl,
        Op::Expire,
        Op::Persist,
        Op::Clear,
        Op::Update,
        Op::Scan,
        Op::Replica,
        Op::Connection,
        Op::Admin,
        Op::Unknown,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::Ttl => "ttl",
            Op::Expire => "expire",
            Op::Persist => "persist",
            Op::Clear => "clear",
            Op::Update => "update",
            Op::Scan => "scan",
            Op::Replica => "replica",
            Op::Connection => "connection",
            Op::Admin => "admin",
            Op::Unknown => "unknown",
        }
    }

    /// The operation a Redis command performs, by its name in any case.
    pub(crate) fn of_command(name: &[u8]) -> Op {
        let mut lower = [0u8; 16];
        let Some(lower) = lower.get_mut(..name.len()) else { return Op::Unknown };
        for (to, from) in lower.iter_mut().zip(name) {
            *to = from.to_ascii_lowercase();
        }
        match std::str::from_utf8(lower).unwrap_or("") {
            "get" | "mget" | "strlen" | "getrange" => Op::Get,
            "set" | "setex" | "psetex" | "mset" => Op::Put,
            "del" | "unlink" => Op::Delete,
            "exists" | "type" => Op::Exists,
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => Op::Ttl,
            "expire" | "pexpire" | "expireat" | "pexpireat" => Op::Expire,
            "persist" => Op::Persist,
            "flushall" | "flushdb" => Op::Clear,
            "incr" | "decr" | "incrby" | "decrby" | "incrbyfloat" | "append" | "setrange" | "setnx" | "getset"
            | "getdel" | "getex" | "rename" | "renamenx" | "copy" | "msetnx" => Op::Update,
            "scan" | "keys" | "dbsize" | "randomkey" => Op::Scan,
            "ping" | "echo" | "hello" | "auth" | "select" | "quit" | "client" | "reset" => Op::Connection,
            "config" | "time" | "command" | "info" | "cluster" => Op::Admin,
            _ => Op::Unknown,
        }
    }

    pub(crate) fn of_request(request: &Request) -> Op {
        match request {
            Request::Session { request, .. } => Op::of_request(request),
            Request::Get { .. } => Op::Get,
            Request::Put { .. } => Op::Put,
            Request::Delete { .. } => Op::Delete,
            Request::Exists { .. } => Op::Exists,
            Request::Ttl { .. } => Op::Ttl,
            Request::Expire { .. } => Op::Expire,
            Request::Persist { .. } => Op::Persist,
            Request::Clear => Op::Clear,
            Request::Replica(_) => Op::Replica,
            Request::Ping | Request::Claim | Request::Time => Op::Connection,
            Request::Members
            | Request::Status
            | Request::Leave
            | Request::Explain { .. }
            | Request::Fault { .. }
            | Request::Skew { .. }
            | Request::Crash { .. } => Op::Admin,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// The request was wrong: bad arguments, a key or value over its
    /// limit, a request its certificate may not send, an unknown command.
    Invalid,
    /// Not enough replicas answered in time, or the node could not serve
    /// yet; a retry may succeed.
    Unavailable,
    /// Refused by the memory bound.
    OutOfMemory,
    /// The node failed: storage, an internal error, a protocol violation.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Ok, Outcome::Invalid, Outcome::Unavailable, Outcome::OutOfMemory, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Unavailable => "unavailable",
            Outcome::OutOfMemory => "oom",
            Outcome::Error => "error",
        }
    }

    pub(crate) fn of<T>(result: &Result<T, KvError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::of_error(e),
        }
    }

    pub(crate) fn of_error(e: &KvError) -> Outcome {
        match e {
            KvError::EmptyKey
            | KvError::KeyTooLarge { .. }
            | KvError::ValueTooLarge { .. }
            | KvError::InvalidTtl(_)
            | KvError::Forbidden { .. }
            | KvError::Update(_) => Outcome::Invalid,
            KvError::Busy { .. }
            | KvError::Quorum { .. }
            | KvError::Timeout { .. }
            | KvError::DeadlineExpired { .. }
            | KvError::Unavailable(_)
            | KvError::Transport(_)
            | KvError::ShuttingDown
            | KvError::Cleared { .. } => Outcome::Unavailable,
            KvError::OutOfMemory { .. } => Outcome::OutOfMemory,
            KvError::Storage(_) | KvError::Protocol(_) | KvError::Internal(_) => Outcome::Error,
        }
    }
}

/// Which replica requests a coordinator batches together (see `peers.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    Writes,
    Reads,
}

pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// By (op, protocol, outcome), flattened in `ALL` order.
    requests: Vec<Count>,
    /// By (op, protocol).
    latency: Vec<Timings>,
    batch_items: [Histogram; 2],
    hints_delivered: Counter,
    fsync: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Arc<Metrics> {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("ringkv_replica_batch_items".into()), BATCH_BUCKETS))
            .expect("the bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for (name, unit, help) in DESCRIPTIONS {
            let key = KeyName::from_const_str(name);
            match name {
                n if n.ends_with("_total") => recorder.describe_counter(key, *unit, (*help).into()),
                n if n.ends_with("_seconds") || n.ends_with("_items") => {
                    recorder.describe_histogram(key, *unit, (*help).into())
                }
                _ => recorder.describe_gauge(key, *unit, (*help).into()),
            }
        }
        let mut requests = Vec::new();
        let mut latency = Vec::new();
        for op in Op::ALL {
            for protocol in Protocol::ALL {
                let labels = [("op", op.label()), ("protocol", protocol.label())];
                let histogram = recorder.register_histogram(&key("ringkv_request_duration_seconds", &labels), &META);
                latency.push(Timings::new(histogram));
                for outcome in Outcome::ALL {
                    let labels = [labels[0], labels[1], ("result", outcome.label())];
                    let counter = recorder.register_counter(&key("ringkv_requests_total", &labels), &META);
                    requests.push(Count { hits: AtomicU64::new(0), counter });
                }
            }
        }
        let lane = |lane: &'static str| {
            recorder.register_histogram(&key("ringkv_replica_batch_items", &[("lane", lane)]), &META)
        };
        let batch_items = [lane("writes"), lane("reads")];
        let hints_delivered = recorder.register_counter(&key("ringkv_hints_delivered_total", &[]), &META);
        let fsync = recorder.register_histogram(&key("ringkv_wal_fsync_duration_seconds", &[]), &META);
        Arc::new(Metrics { recorder, handle, requests, latency, batch_items, hints_delivered, fsync })
    }

    pub(crate) fn request(&self, op: Op, protocol: Protocol, outcome: Outcome, took: Duration) {
        let at = (op as usize) * Protocol::ALL.len() + protocol as usize;
        self.requests[at * Outcome::ALL.len() + outcome as usize].hits.fetch_add(1, Ordering::Relaxed);
        self.latency[at].record(took);
    }

    pub(crate) fn batch(&self, lane: Lane, items: usize) {
        self.batch_items[lane as usize].record(items as f64);
    }

    pub(crate) fn hints_delivered(&self, count: usize) {
        self.hints_delivered.increment(count as u64);
    }

    /// The histogram the log writer records each fsync's duration in.
    pub(crate) fn fsync(&self) -> Histogram {
        self.fsync.clone()
    }

    pub(crate) fn upkeep(&self) {
        self.fold();
        self.handle.run_upkeep();
    }

    /// The exposition: what was counted, and the node's state as `status`
    /// and the membership describe it now.
    pub(crate) fn render(&self, status: &NodeStatus, members: &Members) -> String {
        let gauge = |name: &'static str, labels: &[(&'static str, &'static str)]| -> Gauge {
            self.recorder.register_gauge(&key(name, labels), &META)
        };
        let counter = |name: &'static str| -> Counter { self.recorder.register_counter(&key(name, &[]), &META) };
        gauge("ringkv_entries", &[]).set(status.entries as f64);
        gauge("ringkv_keys", &[]).set(status.values as f64);
        gauge("ringkv_partitions_owned", &[]).set(status.partitions_owned);
        gauge("ringkv_memory_used_bytes", &[]).set(status.memory.used as f64);
        gauge("ringkv_memory_limit_bytes", &[]).set(status.memory.limit as f64);
        counter("ringkv_evictions_total").absolute(status.memory.evictions);
        counter("ringkv_oom_refusals_total").absolute(status.memory.refused);
        gauge("ringkv_hints_held", &[]).set(status.hints.iter().map(|(_, n)| n).sum::<u64>() as f64);
        counter("ringkv_hints_dropped_total").absolute(status.hints_dropped);
        counter("ringkv_repair_passes_total").absolute(status.repair.passes);
        counter("ringkv_repair_keys_total").absolute(status.repair.keys_exchanged);
        counter("ringkv_repair_bytes_total").absolute(status.repair.bytes_exchanged);
        counter("ringkv_transfer_keys_total").absolute(status.transfers.keys_moved);
        counter("ringkv_transfer_bytes_total").absolute(status.transfers.bytes_moved);
        gauge("ringkv_transfer_partitions", &[("state", "done")]).set(status.transfers.partitions_done);
        gauge("ringkv_transfer_partitions", &[("state", "planned")]).set(status.transfers.partitions_total);
        let sent = [("writes", &status.replication.writes), ("reads", &status.replication.reads)];
        for (lane, sent) in sent {
            let labels = [("lane", lane)];
            self.recorder
                .register_counter(&key("ringkv_replica_items_sent_total", &labels), &META)
                .absolute(sent.items);
            self.recorder
                .register_counter(&key("ringkv_replica_requests_sent_total", &labels), &META)
                .absolute(sent.requests);
        }
        counter("ringkv_gossip_rejected_total").absolute(status.gossip.as_ref().map_or(0, |g| g.rejected));
        for status in ["joining", "serving", "leaving", "recovering", "left"] {
            for (live, up) in [("true", true), ("false", false)] {
                let count = members.members.iter().filter(|m| m.live == up && m.status.as_str() == status).count();
                gauge("ringkv_members", &[("status", status), ("live", live)]).set(count as f64);
            }
        }
        self.fold();
        self.handle.render()
    }

    /// Moves what the hot path counted into the exporter.
    fn fold(&self) {
        for timings in &self.latency {
            timings.fold();
        }
        for count in &self.requests {
            count.counter.absolute(count.hits.load(Ordering::Relaxed));
        }
    }
}

/// A request counter as the hot path sees it: one relaxed add. The
/// exporter's own counter handle also tracks recency for idle-timeout
/// bookkeeping, which costs more per increment (measured with
/// `scripts/profile-resp.sh`); `fold` copies the total into it.
struct Count {
    hits: AtomicU64,
    counter: Counter,
}

/// One latency histogram, kept as atomic counts and summed nanoseconds per
/// bucket and folded into the exporter's histogram by `fold`. Recording
/// straight into the exporter costs a sample push per request (an epoch
/// pin, a clock read, a block shared by every thread); here it is two
/// relaxed adds. Folding records
/// each bucket's samples at their mean, which lies in the bucket, so
/// bucket counts, count and sum come out as if every sample had been
/// recorded.
struct Timings {
    /// Per bucket of `LATENCY_BUCKETS` and one for +Inf: (count, nanos).
    buckets: Vec<(AtomicU64, AtomicU64)>,
    histogram: Histogram,
}

impl Timings {
    fn new(histogram: Histogram) -> Timings {
        let buckets = (0..=LATENCY_BUCKETS.len()).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect();
        Timings { buckets, histogram }
    }

    fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let (count, nanos) = &self.buckets[LATENCY_BUCKETS.partition_point(|bound| *bound < seconds)];
        count.fetch_add(1, Ordering::Relaxed);
        nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    fn fold(&self) {
        for (i, (count, nanos)) in self.buckets.iter().enumerate() {
            let count = count.swap(0, Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            // A sample recorded between the two swaps moves its time to the
            // next fold; clamping keeps either fold's mean in the bucket.
            let mean = nanos.swap(0, Ordering::Relaxed) as f64 / 1e9 / count as f64;
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let upper = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::MAX);
            let inside = if i == LATENCY_BUCKETS.len() { lower * 2.0 } else { (lower + upper) / 2.0 };
            let mean = if mean > lower && mean <= upper { mean } else { inside };
            self.histogram.record_many(mean, count as usize);
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::from_static_parts(k, v)).collect();
    Key::from_parts(name, labels)
}

/// Every series' name, unit and help text. A name's suffix says its kind:
/// `_total` a counter, `_seconds` or `_items` a histogram, else a gauge.
const DESCRIPTIONS: &[(&str, Option<Unit>, &str)] = &[
    ("ringkv_requests_total", None, "Requests this node coordinated or served, by operation, protocol and result"),
    ("ringkv_request_duration_seconds", Some(Unit::Seconds), "Time from a request's arrival to its answer"),
    (
        "ringkv_replica_batch_items",
        None,
        "Items in each replica request this node sent as a coordinator; more than one when batched",
    ),
    ("ringkv_replica_items_sent_total", None, "Replica writes or reads this node sent to peers as a coordinator"),
    ("ringkv_replica_requests_sent_total", None, "Replica requests (batches) those items took"),
    ("ringkv_hints_held", None, "Hints this node holds for replicas that were down"),
    ("ringkv_hints_delivered_total", None, "Hints delivered to their replica"),
    (
        "ringkv_hints_dropped_total",
        None,
        "Hints dropped: past the tombstone grace, covered by a clear, or over the bound",
    ),
    ("ringkv_repair_passes_total", None, "Anti-entropy passes completed over every partition and peer"),
    ("ringkv_repair_keys_total", None, "Keys sent or received by anti-entropy because replicas differed"),
    ("ringkv_repair_bytes_total", Some(Unit::Bytes), "Digest and entry bytes anti-entropy exchanged"),
    ("ringkv_transfer_keys_total", None, "Keys moved by partition transfers while joining or leaving"),
    ("ringkv_transfer_bytes_total", Some(Unit::Bytes), "Bytes moved by partition transfers"),
    ("ringkv_transfer_partitions", None, "Partitions of the transfer under way, done and planned"),
    ("ringkv_members", None, "Cluster members as gossip shows them to this node, by status and liveness"),
    ("ringkv_gossip_rejected_total", None, "Gossip datagrams refused: unsealed, altered, or another cluster's"),
    ("ringkv_entries", None, "Entries this node stores, deletion markers included"),
    ("ringkv_keys", None, "Live keys this node stores"),
    ("ringkv_partitions_owned", None, "Partitions this node is a replica of"),
    ("ringkv_memory_used_bytes", Some(Unit::Bytes), "Memory the node's shards use, as maxmemory counts it"),
    ("ringkv_memory_limit_bytes", Some(Unit::Bytes), "maxmemory; 0 is no limit"),
    ("ringkv_evictions_total", None, "Keys this node evicted for the memory bound"),
    ("ringkv_oom_refusals_total", None, "Writes this node refused for the memory bound"),
    ("ringkv_wal_fsync_duration_seconds", Some(Unit::Seconds), "Time each fsync of the write-ahead log took"),
];

/// What the metrics port needs of a node. `ops.rs` implements it for
/// `Node`, so this module imports nothing of the node's own.
pub(crate) trait Source: Clone + Send + Sync + 'static {
    fn metrics(&self) -> Option<&Metrics>;
    fn shutdown_signal(&self) -> watch::Receiver<bool>;
    fn scrape(&self) -> impl std::future::Future<Output = Result<String, KvError>> + Send;
}

/// Serves `GET /metrics` until the node shuts down, and folds latencies
/// into the histograms between scrapes.
pub(crate) async fn serve(node: impl Source, listener: TcpListener) {
    let mut shutdown = node.shutdown_signal();
    let permits = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut scrapes = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                while scrapes.try_join_next().is_some() {}
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let node = node.clone();
                scrapes.spawn(async move {
                    if let Err(e) = answer(&node, stream).await {
                        tracing::debug!(error = %e, "metrics scrape failed");
                    }
                    drop(permit);
                });
            }
            _ = upkeep.tick() => {
                if let Some(metrics) = node.metrics() {
                    metrics.upkeep();
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    scrapes.shutdown().await;
}

async fn answer(node: &impl Source, mut stream: TcpStream) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return respond(&mut stream, "408 Request Timeout", "text/plain", b"request timeout\n").await,
    };
    let Some(head) = head else {
        return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"request too large\n").await;
    };
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => match node.scrape().await {
            Ok(text) => {
                respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text.as_bytes()).await
            }
            Err(e) => {
                let text = format!("cannot read the node's state: {e}\n");
                respond(&mut stream, "503 Service Unavailable", "text/plain", text.as_bytes()).await
            }
        },
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"only GET\n").await,
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"metrics are at /metrics\n").await,
    }
}

/// The request line, once the whole head has arrived; `None` if the head
/// is larger than anyone scraping metrics sends.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&head[..end]);
            return Ok(Some(head.lines().next().unwrap_or("").to_string()));
        }
        if head.len() >= MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the request ended"));
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_under_its_own_labels() {
        let metrics = Metrics::new();
        metrics.request(Op::Put, Protocol::Resp, Outcome::OutOfMemory, Duration::from_millis(3));
        metrics.request(Op::Get, Protocol::Quic, Outcome::Ok, Duration::from_micros(80));
        metrics.request(Op::Get, Protocol::Quic, Outcome::Ok, Duration::from_micros(80));
        metrics.upkeep();
        metrics.request(Op::Get, Protocol::Quic, Outcome::Error, Duration::from_secs(20));
        metrics.upkeep();
        let text = metrics.handle.render();
        let sample = |line: &str| text.lines().find(|l| l.starts_with(line)).map(|l| l.to_string());
        assert_eq!(
            sample(r#"ringkv_requests_total{op="put",protocol="resp",result="oom"}"#).as_deref(),
            Some(r#"ringkv_requests_total{op="put",protocol="resp",result="oom"} 1"#)
        );
        assert_eq!(
            sample(r#"ringkv_requests_total{op="get",protocol="quic",result="ok"}"#).as_deref(),
            Some(r#"ringkv_requests_total{op="get",protocol="quic",result="ok"} 2"#)
        );
        assert_eq!(
            sample(r#"ringkv_requests_total{op="get",protocol="resp",result="ok"}"#).as_deref(),
            Some(r#"ringkv_requests_total{op="get",protocol="resp",result="ok"} 0"#)
        );
        assert_eq!(
            sample(r#"ringkv_request_duration_seconds_bucket{op="get",protocol="quic",le="0.0001"}"#).as_deref(),
            Some(r#"ringkv_request_duration_seconds_bucket{op="get",protocol="quic",le="0.0001"} 2"#)
        );
        assert_eq!(
            sample(r#"ringkv_request_duration_seconds_count{op="put",protocol="resp"}"#).as_deref(),
            Some(r#"ringkv_request_duration_seconds_count{op="put",protocol="resp"} 1"#)
        );
        let value = |series: &str| -> f64 {
            let line = sample(series).unwrap_or_else(|| panic!("no {series} in {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        // Folded at their mean, samples keep their buckets, count and sum.
        let get = r#"{op="get",protocol="quic"}"#;
        assert_eq!(value(&format!("ringkv_request_duration_seconds_count{get}")), 3.0);
        let sum = value(&format!("ringkv_request_duration_seconds_sum{get}"));
        assert!((sum - 20.00016).abs() < 1e-9, "{sum}");
        let bucket = |le: &str| {
            value(&format!(r#"ringkv_request_duration_seconds_bucket{{op="get",protocol="quic",le="{le}"}}"#))
        };
        assert_eq!(
            (bucket("0.00005"), bucket("0.0001"), bucket("2.5"), bucket("10"), bucket("+Inf")),
            (0.0, 2.0, 2.0, 2.0, 3.0)
        );
    }

    #[test]
    fn every_error_has_an_outcome_and_commands_map_to_operations() {
        assert_eq!(Outcome::of_error(&KvError::EmptyKey), Outcome::Invalid);
        assert_eq!(Outcome::of_error(&KvError::ShuttingDown), Outcome::Unavailable);
        assert_eq!(Outcome::of_error(&KvError::Storage("disk full".into())), Outcome::Error);
        assert_eq!(Op::of_command(b"MGET"), Op::Get);
        assert_eq!(Op::of_command(b"pSetEx"), Op::Put);
        assert_eq!(Op::of_command(b"lpush"), Op::Unknown);
        assert_eq!(Op::of_command(b"a-command-name-longer-than-any"), Op::Unknown);
    }
}
