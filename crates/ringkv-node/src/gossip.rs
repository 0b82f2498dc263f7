//! The gossip transport: chitchat's messages sealed under the cluster's
//! gossip keyring (`ringkv_net::gossip`), over our own UDP socket.
//!
//! chitchat authenticates nothing: whoever can send it a datagram and
//! knows the cluster id is a member. So every datagram this node sends is
//! sealed with the keyring's primary key, and every datagram it receives
//! is opened with any key of the keyring before chitchat sees it. A
//! datagram that fails (an unknown key id, a wrong key, an altered byte, a
//! format this build does not read) is dropped, counted in `ringkv status`
//! and logged at most once per [`REJECT_LOG_EVERY`], with the count since
//! the last line.
//!
//! A datagram that opens under our key but is addressed to another cluster
//! (the same key copied into another cluster's configuration) is refused
//! too, except chitchat's `Syn` (which chitchat answers with `BadCluster`
//! without touching its state) and `BadCluster` itself: so a node started
//! with the wrong cluster id fails with a clear error, as it did before
//! gossip was sealed. The socket watches for `BadCluster`, which chitchat
//! only logs.
//!
//! The keyring file is read again every [`KEYRING_POLL`]; a valid new
//! version replaces the keyring in use at once, an invalid one is logged
//! and ignored (the node keeps the keys it has). So keys rotate without
//! restarts (README, *Security*).
//!
//! # The codec
//!
//! chitchat 0.13 keeps the encoding of its messages private (the
//! envelope's `serialize` and `deserialize`, and the digest's, are
//! `pub(crate)`); only its own UDP socket turns messages into bytes and
//! back. Rather than fork chitchat, the [`Codec`] uses that socket as the
//! encoder and decoder, over loopback, inside this process: to send, it
//! hands the envelope to chitchat's socket addressed to a *collector*
//! socket of ours, and seals the bytes that arrive there; to receive, it
//! sends the opened bytes to chitchat's socket from a *proxy* socket that
//! stands for the remote peer (one per peer, so the address chitchat reports
//! maps back to the peer), and reads the decoded envelope there. Every
//! datagram on these sockets is checked to come from the socket of ours it
//! must come from; another local process can neither feed chitchat nor get
//! bytes sealed without spoofing a loopback source address, which needs
//! the privileges that read the keyring file anyway. Plaintext never leaves
//! loopback; what it costs is two loopback datagrams per gossip message
//! (tens a second). A chitchat that exposes its encoding would remove
//! the codec and nothing else.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as ChitchatUdp};
use chitchat::{ChitchatEnvelope, ChitchatMessage};
use ring::rand::SystemRandom;
use ringkv_net::gossip::{self, Keyring, OpenError, Reassembly};
use ringkv_net::wire::GossipStatus;
use tokio::time::Instant;

use crate::NodeError;
use crate::env::GossipTransport;
use crate::fault::Faults;

/// How often the keyring file is read again.
pub(crate) const KEYRING_POLL: Duration = Duration::from_secs(1);
/// At most one warning about refused datagrams per this long.
pub(crate) const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The keyring in use, where it came from, and what gossip refused.
pub(crate) struct GossipKeys {
    path: PathBuf,
    current: RwLock<Arc<Keyring>>,
    /// The file's text last read, and the error it gave if it was invalid,
    /// so that a bad file is reported once rather than every poll.
    last_read: Mutex<(String, Option<String>)>,
    /// Datagrams refused: failed authentication, or another cluster's.
    rejected: AtomicU64,
    /// Datagrams opened and handed on.
    opened: AtomicU64,
}

impl GossipKeys {
    /// Loads the keyring a clustered node needs; without one the node does
    /// not start, and the error says how to make one.
    #[allow(
        clippy::disallowed_methods,
        reason = "the keyring file, not yet on the node's Disk (issue 12): the simulator reads a real one"
    )]
    pub(crate) fn load(path: &Path) -> Result<GossipKeys, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::Config(format!(
                "a clustered node seals its gossip with the cluster's gossip key, and cannot read {}: {e}; create \
                 one with `ringkv certs init --dir DIR` (a new cluster) or `ringkv certs gossip-key new --dir DIR`, \
                 give every node of the cluster the same file, or set [tls] gossip_key",
                path.display()
            ))
        })?;
        let keyring = Keyring::parse(&text, path).map_err(|e| NodeError::Config(e.to_string()))?;
        Ok(GossipKeys {
            path: path.into(),
            current: RwLock::new(Arc::new(keyring)),
            last_read: Mutex::new((text, None)),
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        })
    }

    #[cfg(test)]
    pub(crate) fn from_keyring(keyring: Keyring) -> GossipKeys {
        GossipKeys {
            path: PathBuf::from("unused"),
            current: RwLock::new(Arc::new(keyring)),
            last_read: Mutex::new((String::new(), None)),
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    pub(crate) fn keyring(&self) -> Arc<Keyring> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn status(&self) -> GossipStatus {
        let keyring = self.keyring();
        GossipStatus {
            primary_key: keyring.primary().to_string(),
            accepted_keys: keyring.accepted().iter().map(ToString::to_string).collect(),
            rejected: self.rejected.load(Ordering::Relaxed),
            unproven: Vec::new(),
        }
    }

    /// Datagrams opened so far.
    #[cfg(test)]
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Reads the file again and switches to it if it changed and is valid.
    #[allow(
        clippy::disallowed_methods,
        reason = "the keyring file, not yet on the node's Disk (issue 12): the simulator reads a real one"
    )]
    pub(crate) fn reload(&self) {
        let mut last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                let error = format!("cannot read {}: {e}", self.path.display());
                if last.1.as_ref() != Some(&error) {
                    tracing::error!(%error, "cannot reload the gossip keyring; keeping the keys in use");
                    last.1 = Some(error);
                }
                return;
            }
        };
        if text == last.0 {
            return;
        }
        match Keyring::parse(&text, &self.path) {
            Ok(keyring) => {
                let accepted: Vec<String> = keyring.accepted().iter().map(ToString::to_string).collect();
                tracing::info!(primary = %keyring.primary(), ?accepted, "gossip keyring reloaded");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
                *last = (text, None);
            }
            Err(e) => {
                let error = e.to_string();
                if last.1.as_ref() != Some(&error) {
                    tracing::error!(%error, "the gossip keyring file is invalid; keeping the keys in use");
                }
                *last = (text, Some(error));
            }
        }
    }
}

/// Reloads the keyring every [`KEYRING_POLL`] until aborted.
pub(crate) async fn watch_keyring(keys: Arc<GossipKeys>) {
    let mut tick = tokio::time::interval(KEYRING_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A blocking read of a file of a few hundred bytes, on the
        // runtime's thread: handed to another thread, its completion would
        // reorder this runtime's tasks by the OS scheduler's whim, which the
        // simulator (ringkv-sim) cannot replay.
        keys.reload();
    }
}

/// What the socket shares with the node.
pub(crate) struct SocketShared {
    pub keys: Arc<GossipKeys>,
    pub cluster_id: String,
    /// Set to the peer that answered `BadCluster`.
    pub rejected_by: Arc<Mutex<Option<SocketAddr>>>,
    pub faults: Arc<Faults>,
    /// Tests: every datagram sent, as sent.
    pub tap: Option<tokio::sync::mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>>,
}

/// Hands chitchat the one sealed socket, bound before chitchat starts so
/// that a port of 0 is resolved into the address we advertise.
pub(crate) struct SealedTransport {
    socket: Mutex<Option<SealedSocket>>,
}

impl SealedTransport {
    #[allow(
        clippy::disallowed_methods,
        reason = "the production gossip transport on sockets of the OS; the simulator brings its own (env.rs)"
    )]
    pub(crate) async fn bind(addr: SocketAddr, shared: SocketShared) -> anyhow::Result<SealedTransport> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let socket = SealedSocket {
            socket,
            codec: Codec::open().await?,
            shared,
            rng: SystemRandom::new(),
            // Random start: a restarted node's first messages do not reuse
            // its predecessor's ids while fragments of those may linger in
            // a peer's reassembly buffer.
            message_id: rand_u32(),
            buf: vec![0u8; 1 << 16].into_boxed_slice(),
            reassembly: Reassembly::default(),
            log: RejectLog::default(),
        };
        Ok(SealedTransport { socket: Mutex::new(Some(socket)) })
    }
}

impl GossipTransport for SealedTransport {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        let guard = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let socket = guard.as_ref().ok_or_else(|| std::io::Error::other("the gossip socket was handed over"))?;
        socket.socket.local_addr()
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes);
    u32::from_be_bytes(bytes)
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        let socket = socket.ok_or_else(|| anyhow::anyhow!("the gossip socket was already opened"))?;
        Ok(Box::new(socket))
    }
}

/// Peers a codec keeps a proxy socket for; the least recently used goes
/// first. Far above any cluster's size; a message from an evicted proxy in
/// flight is lost, like any datagram.
const MAX_PROXIES: usize = 256;
/// How long an envelope may take to come back from chitchat's socket over
/// loopback before the message is given up.
const CODEC_TIMEOUT: Duration = Duration::from_secs(1);

/// chitchat's encoding, borrowed from its own socket (see the module docs).
struct Codec {
    /// Encodes what it sends and decodes what it receives.
    chitchat: ChitchatUdp,
    chitchat_addr: SocketAddr,
    /// Receives the encoded messages `chitchat` sends.
    collector: tokio::net::UdpSocket,
    collector_addr: SocketAddr,
    /// One socket per remote peer, sending that peer's opened messages to
    /// `chitchat`.
    proxies: HashMap<SocketAddr, Proxy>,
    /// Proxy address to peer.
    peers: HashMap<SocketAddr, SocketAddr>,
    uses: u64,
    buf: Box<[u8]>,
}

struct Proxy {
    socket: tokio::net::UdpSocket,
    addr: SocketAddr,
    last_use: u64,
}

impl Codec {
    #[allow(
        clippy::disallowed_methods,
        reason = "the production gossip transport on sockets of the OS; the simulator brings its own (env.rs)"
    )]
    async fn open() -> anyhow::Result<Codec> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let chitchat = ChitchatUdp::open(loopback).await?;
        let chitchat_addr = chitchat::transport::Socket::local_addr(&chitchat)?;
        let collector = tokio::net::UdpSocket::bind(loopback).await?;
        let collector_addr = collector.local_addr()?;
        Ok(Codec {
            chitchat,
            chitchat_addr,
            collector,
            collector_addr,
            proxies: HashMap::new(),
            peers: HashMap::new(),
            uses: 0,
            buf: vec![0u8; 1 << 16].into_boxed_slice(),
        })
    }

    /// chitchat's bytes for `envelope`.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        // Whatever an interrupted encode left behind.
        while self.collector.try_recv_from(&mut self.buf).is_ok() {}
        self.chitchat.send(self.collector_addr, envelope).await?;
        let deadline = Instant::now() + CODEC_TIMEOUT;
        loop {
            let (len, from) = tokio::time::timeout_at(deadline, self.collector.recv_from(&mut self.buf))
                .await
                .map_err(|_| anyhow::anyhow!("the encoded message did not come back over loopback"))??;
            if from == self.chitchat_addr {
                return Ok(self.buf[..len].to_vec());
            }
        }
    }

    /// Hands an opened message from `peer` to chitchat's socket for
    /// decoding; [`Codec::decoded`] yields it. Never waits: a full loopback
    /// buffer loses the message, as the network may.
    #[allow(
        clippy::disallowed_methods,
        reason = "the production gossip transport on sockets of the OS; the simulator brings its own (env.rs)"
    )]
    async fn feed(&mut self, peer: SocketAddr, message: &[u8]) -> anyhow::Result<()> {
        self.uses += 1;
        if !self.proxies.contains_key(&peer) {
            if self.proxies.len() >= MAX_PROXIES {
                let oldest = self.proxies.iter().min_by_key(|(_, p)| p.last_use).map(|(peer, _)| *peer);
                if let Some(proxy) = oldest.and_then(|oldest| self.proxies.remove(&oldest)) {
                    self.peers.remove(&proxy.addr);
                }
            }
            let socket = tokio::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
            let addr = socket.local_addr()?;
            self.peers.insert(addr, peer);
            self.proxies.insert(peer, Proxy { socket, addr, last_use: 0 });
        }
        let proxy = self.proxies.get_mut(&peer).expect("inserted above");
        proxy.last_use = self.uses;
        if let Err(e) = proxy.socket.try_send_to(message, self.chitchat_addr) {
            tracing::debug!(%peer, error = %e, "a gossip message was lost on its way to the decoder");
        }
        Ok(())
    }

    /// The next decoded message and the peer it came from. Cancel-safe.
    async fn decoded(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let mut outcome = self.chitchat.recv().await?;
            // Only our proxies feed the decoder.
            if let Some(peer) = self.peers.get(&outcome.from_addr) {
                outcome.from_addr = *peer;
                return Ok(outcome);
            }
        }
    }
}

pub(crate) struct SealedSocket {
    socket: tokio::net::UdpSocket,
    codec: Codec,
    shared: SocketShared,
    rng: SystemRandom,
    message_id: u32,
    /// One datagram; larger than any we accept.
    buf: Box<[u8]>,
    reassembly: Reassembly,
    log: RejectLog,
}

/// Rate limit for the warning about refused datagrams.
#[derive(Default)]
struct RejectLog {
    last: Option<Instant>,
    since: u64,
}

impl RejectLog {
    fn refused(&mut self, from: SocketAddr, reason: &dyn std::fmt::Display) {
        self.since += 1;
        let now = Instant::now();
        if self.last.is_none_or(|last| now - last >= REJECT_LOG_EVERY) {
            tracing::warn!(
                %from,
                %reason,
                refused = self.since,
                "refused gossip datagrams not sealed with this cluster's gossip key (count since the last such \
                 warning; at most one warning per 10 s)"
            );
            self.last = Some(now);
            self.since = 0;
        }
    }
}

fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
    )
}

/// chitchat's message types, from the fourth byte of its encoding (after a
/// two-byte magic number and the protocol version).
const CHITCHAT_TYPE_AT: usize = 3;
const CHITCHAT_SYN: u8 = 0;
const CHITCHAT_BAD_CLUSTER: u8 = 3;

impl SealedSocket {
    fn refuse(&mut self, from: SocketAddr, reason: &dyn std::fmt::Display) {
        self.shared.keys.rejected.fetch_add(1, Ordering::Relaxed);
        self.log.refused(from, reason);
    }

    /// The message a datagram completes, if it is authentic and ours.
    fn open(&mut self, from: SocketAddr, len: usize) -> Option<Vec<u8>> {
        let keyring = self.shared.keys.keyring();
        match gossip::open(&keyring, &self.shared.cluster_id, &self.buf[..len]) {
            Ok(fragment) => {
                self.shared.keys.opened.fetch_add(1, Ordering::Relaxed);
                self.reassembly.insert(from, fragment, Instant::now().into_std())
            }
            // Authentic, for another cluster: only what lets a misconfigured
            // node learn that it is (chitchat answers a `Syn` of another
            // cluster with `BadCluster` and changes nothing).
            Err(OpenError::OtherCluster { fragment, .. })
                if fragment.count == 1
                    && matches!(
                        fragment.payload.get(CHITCHAT_TYPE_AT),
                        Some(&CHITCHAT_SYN | &CHITCHAT_BAD_CLUSTER)
                    ) =>
            {
                Some(fragment.payload)
            }
            Err(e) => {
                self.refuse(from, &e);
                None
            }
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        if self.shared.faults.blocks(to) {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let message = match self.codec.encode(envelope).await {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(%to, error = %e, "cannot encode a gossip message; dropping it");
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        let keyring = self.shared.keys.keyring();
        let id = self.message_id;
        self.message_id = id.wrapping_add(1);
        let datagrams = match gossip::seal(&keyring, &self.shared.cluster_id, id, &message, &self.rng) {
            Ok(datagrams) => datagrams,
            Err(e) => {
                tracing::warn!(%to, error = %e, "cannot seal a gossip message; dropping it");
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        let mut sent = 0;
        for datagram in datagrams {
            sent += self.socket.send_to(&datagram, to).await?;
            if let Some(tap) = &self.shared.tap {
                let _ = tap.send((to, datagram));
            }
        }
        Ok(SendOutcome { num_bytes_sent: sent })
    }

    /// Cancel-safe: both branches wait in `recv_from`, and everything after
    /// a datagram arrived runs without waiting.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            tokio::select! {
                decoded = self.codec.decoded() => {
                    let outcome = decoded?;
                    if matches!(outcome.envelope.message, ChitchatMessage::BadCluster) {
                        *self.shared.rejected_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome.from_addr);
                    }
                    return Ok(outcome);
                }
                received = self.socket.recv_from(&mut self.buf) => {
                    let (len, from) = match received {
                        Ok(received) => received,
                        Err(e) if is_transient(&e) => continue,
                        Err(e) => return Err(anyhow::Error::new(e).context("gossip socket failed")),
                    };
                    if self.shared.faults.blocks(from) {
                        continue;
                    }
                    if let Some(message) = self.open(from, len) {
                        self.codec.feed(from, &message).await?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests use real files and sockets")]
mod tests {
    use std::collections::BTreeSet;

    use chitchat::{
        ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
    };
    use ringkv_net::gossip::KeyId;
    use tokio::sync::mpsc;

    use super::*;

    const CLUSTER: &str = "unit";
    const INTERVAL: Duration = Duration::from_millis(50);

    struct Peer {
        handle: ChitchatHandle,
        addr: SocketAddr,
        keys: Arc<GossipKeys>,
        id: ChitchatId,
    }

    async fn spawn(
        name: &str,
        keyring: &Keyring,
        seeds: &[SocketAddr],
        tap: Option<mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>>,
    ) -> Peer {
        let keys = Arc::new(GossipKeys::from_keyring(keyring.clone()));
        let shared = SocketShared {
            keys: keys.clone(),
            cluster_id: CLUSTER.into(),
            rejected_by: Arc::new(Mutex::new(None)),
            faults: Arc::new(Faults::default()),
            tap,
        };
        let transport = SealedTransport::bind("127.0.0.1:0".parse().unwrap(), shared).await.unwrap();
        let addr = transport.local_addr().unwrap();
        let id = ChitchatId::new(name, 1, addr);
        let config = ChitchatConfig {
            chitchat_id: id.clone(),
            cluster_id: CLUSTER.into(),
            gossip_interval: INTERVAL,
            listen_addr: addr,
            seed_nodes: seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 5.0,
                sampling_window_size: 1_000,
                max_interval: Duration::from_secs(1),
                initial_interval: INTERVAL,
                dead_node_grace_period: Duration::from_secs(3_600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3_600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(config, Vec::new(), &transport).await.unwrap();
        Peer { handle, addr, keys, id }
    }

    fn keyring() -> Keyring {
        Keyring::from_key(KeyId(0x5eed), [7; 32])
    }

    async fn value_at(observer: &Peer, of: &ChitchatId, key: &str) -> Option<String> {
        let chitchat = observer.handle.chitchat();
        let guard = chitchat.lock().await;
        guard.node_state(of).and_then(|s| s.get(key)).map(str::to_string)
    }

    async fn is_live(observer: &Peer, of: &ChitchatId) -> bool {
        observer.handle.chitchat().lock().await.live_nodes().any(|id| id == of)
    }

    async fn heartbeat(peer: &Peer) -> u64 {
        peer.handle.chitchat().lock().await.self_node_state().heartbeat().into()
    }

    async fn wait_until<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `peer` has run `rounds` more gossip rounds.
    async fn rounds(peer: &Peer, rounds: u64) {
        let start = heartbeat(peer).await;
        wait_until("gossip rounds", || async { heartbeat(peer).await >= start + rounds }).await;
    }

    /// chitchat fills a message up to 65,507 bytes, the largest UDP payload;
    /// sealed, it no longer fits in one datagram, so it travels in two.
    ///
    /// chitchat compresses deltas, so a state of ordinary keys rarely
    /// fills a message to the last byte; its digests, though, are sent
    /// whole and uncompressed. So node a gets a node id long enough that
    /// its `Syn` (its digest: its own id, heartbeat and versions) is exactly
    /// 65,507 bytes, and b, which knows nothing of a, learns of it only
    /// from those messages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_maximal_message_is_cut_in_two_and_arrives_whole() {
        let keyring = keyring();
        let b = spawn("b", &keyring, &[], None).await;
        let overhead = gossip::overhead(CLUSTER);
        // First measure a's `Syn` with a shorter id, then lengthen the id by
        // what is missing.
        let (tap_tx, mut tap) = mpsc::unbounded_channel();
        let probe = spawn(&"p".repeat(60_000), &keyring, &[b.addr], Some(tap_tx)).await;
        let (_, first) = tap.recv().await.unwrap();
        probe.handle.shutdown().await.unwrap();
        let syn_len = first.len() - overhead;
        let name = "a".repeat(60_000 + gossip::MAX_DATAGRAM - syn_len);

        let (tap_tx, mut tap) = mpsc::unbounded_channel();
        let a = spawn(&name, &keyring, &[b.addr], Some(tap_tx)).await;
        wait_until("b to learn of a from its maximal messages", || async {
            b.handle.chitchat().lock().await.node_state(&a.id).is_some()
        })
        .await;
        let (_, first) = tap.recv().await.unwrap();
        let (_, second) = tap.recv().await.unwrap();
        // The fragment index and count are the header's tenth and eleventh
        // bytes.
        assert_eq!((first[9], first[10], second[9], second[10]), (0, 2, 1, 2));
        assert!(first.len().max(second.len()) <= gossip::MAX_DATAGRAM);
        assert_eq!(first.len() + second.len() - 2 * overhead, gossip::MAX_DATAGRAM, "not a maximal message");
        assert_eq!(b.keys.rejected(), 0);
    }

    /// Datagrams captured from a node and sent again later, by anyone, are
    /// authentic but old: chitchat keeps per key the highest version it has
    /// seen and per node the highest heartbeat, so an old value does not
    /// replace a newer one and an old heartbeat does not revive a node that
    /// has since died.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replayed_datagrams_change_nothing_that_was_superseded() {
        let keyring = keyring();
        let (tap_tx, mut tap) = mpsc::unbounded_channel();
        let a = spawn("a", &keyring, &[], Some(tap_tx)).await;
        a.handle.chitchat().lock().await.self_node_state().set("status", "joining");
        let b = spawn("b", &keyring, &[a.addr], None).await;
        wait_until("b to see a joining", || async {
            value_at(&b, &a.id, "status").await.as_deref() == Some("joining")
        })
        .await;
        let mut captured = Vec::new();
        while let Ok((to, datagram)) = tap.try_recv() {
            if to == b.addr {
                captured.push(datagram);
            }
        }
        assert!(!captured.is_empty());

        a.handle.chitchat().lock().await.self_node_state().set("status", "serving");
        wait_until("b to see a serving", || async {
            value_at(&b, &a.id, "status").await.as_deref() == Some("serving")
        })
        .await;

        let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let replay = async || {
            let before = b.keys.opened();
            for datagram in &captured {
                attacker.send_to(datagram, b.addr).await.unwrap();
            }
            let expected = before + captured.len() as u64;
            wait_until("b to open every replayed datagram", || async { b.keys.opened() >= expected }).await;
            rounds(&b, 5).await;
        };
        replay().await;
        assert_eq!(value_at(&b, &a.id, "status").await.as_deref(), Some("serving"));

        // a stops; b declares it dead; the replay does not bring it back.
        a.handle.shutdown().await.unwrap();
        wait_until("b to see a dead", || async { !is_live(&b, &a.id).await }).await;
        replay().await;
        assert!(!is_live(&b, &a.id).await, "a replayed heartbeat revived a dead node");
        assert_eq!(value_at(&b, &a.id, "status").await.as_deref(), Some("serving"));
        assert_eq!(b.keys.rejected(), 0, "replayed datagrams are authentic");
    }

    /// What is not sealed with a key of the keyring never reaches chitchat:
    /// plaintext chitchat, another key, another key under our key's id, a
    /// format from the future, a truncated datagram. Each is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datagrams_not_sealed_with_the_cluster_key_are_refused_and_counted() {
        let ours = keyring();
        let b = spawn("b", &ours, &[], None).await;
        let stranger = spawn("stranger", &Keyring::from_key(KeyId(1), [9; 32]), &[b.addr], None).await;
        let impostor = spawn("impostor", &Keyring::from_key(KeyId(0x5eed), [8; 32]), &[b.addr], None).await;
        let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut future = gossip::seal(&ours, CLUSTER, 1, b"x", &SystemRandom::new()).unwrap().remove(0);
        future[0] = 2;
        let sealed = gossip::seal(&ours, CLUSTER, 1, b"x", &SystemRandom::new()).unwrap().remove(0);
        for datagram in [&future[..], &sealed[..20], b"plaintext"] {
            attacker.send_to(datagram, b.addr).await.unwrap();
        }
        wait_until("b to refuse the strangers' syns and the bad datagrams", || async { b.keys.rejected() >= 5 }).await;
        rounds(&b, 5).await;
        let known: BTreeSet<String> =
            b.handle.chitchat().lock().await.node_states().keys().map(|id| id.node_id.to_string()).collect();
        assert_eq!(known, BTreeSet::from(["b".to_string()]));
        assert_eq!(b.keys.opened(), 0);
        drop((stranger, impostor));
    }
}
