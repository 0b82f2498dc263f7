//! The node's network on turmoil: QUIC over simulated UDP, and gossip over
//! simulated UDP as handles to in-process envelopes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use ringkv_node::env::{NetFuture, QuicSocket};
use ringkv_node::{GossipTransport, Network};

type Readable = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// quinn's socket over a turmoil socket. turmoil's socket has no `poll_*`
/// methods, so a receive keeps the future that waits for readability.
pub(crate) struct SimUdp {
    socket: Arc<turmoil::net::UdpSocket>,
    /// The address the node advertises: turmoil binds only unspecified
    /// addresses, and reports those.
    addr: SocketAddr,
    readable: Mutex<Option<Readable>>,
}

impl SimUdp {
    pub(crate) async fn bind(addr: SocketAddr) -> io::Result<SimUdp> {
        let socket = turmoil::net::UdpSocket::bind(("0.0.0.0", addr.port())).await?;
        let port = socket.local_addr()?.port();
        let addr = SocketAddr::new(addr.ip(), port);
        Ok(SimUdp { socket: Arc::new(socket), addr, readable: Mutex::new(None) })
    }
}

impl std::fmt::Debug for SimUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimUdp({})", self.addr)
    }
}

/// turmoil queues every datagram sent; a socket is always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.socket.try_send_to(transmit.contents, transmit.destination).map(drop)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut readable = self.readable.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if readable.is_none() {
                match self.socket.try_recv_from(&mut bufs[0]) {
                    Ok((len, addr)) => {
                        meta[0] = RecvMeta { addr, len, stride: len, ecn: None, dst_ip: None };
                        return Poll::Ready(Ok(1));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let socket = self.socket.clone();
                        *readable = Some(Box::pin(async move { socket.readable().await }));
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let waiting = readable.as_mut().expect("set above");
            match waiting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    *readable = None;
                    result?;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// An endpoint's socket and runtime on turmoil: quinn's tokio runtime runs
/// on the host's runtime, whose clock turmoil drives.
pub(crate) async fn quic_socket(addr: SocketAddr) -> io::Result<QuicSocket> {
    let socket: Arc<dyn AsyncUdpSocket> = Arc::new(SimUdp::bind(addr).await?);
    Ok((socket, Arc::new(quinn::TokioRuntime)))
}

/// The simulated network, as the node sees it.
pub(crate) struct SimNetwork {
    pub(crate) envelopes: Envelopes,
}

impl Network for SimNetwork {
    fn quic_socket(&self, addr: SocketAddr) -> NetFuture<'_, QuicSocket> {
        Box::pin(quic_socket(addr))
    }

    fn gossip_transport(&self, addr: SocketAddr) -> NetFuture<'_, Option<Box<dyn GossipTransport>>> {
        let envelopes = self.envelopes.clone();
        Box::pin(async move {
            let socket = turmoil::net::UdpSocket::bind(("0.0.0.0", addr.port())).await?;
            let transport: Box<dyn GossipTransport> =
                Box::new(SimGossip { socket: Mutex::new(Some(GossipSocket { socket, addr, envelopes })), addr });
            Ok(Some(transport))
        })
    }
}

/// chitchat's envelopes in flight, by the id their datagram carries.
/// chitchat keeps its encoding private (see ringkv-node's `gossip.rs`) and
/// reaches it only through an OS socket, so in the simulator the datagram
/// carries an id and the envelope waits here; turmoil decides whether and
/// when the datagram arrives, as it would the real bytes. What the
/// simulator does not exercise is the encoding and the sealing (tested in
/// ringkv-net and ringkv-node).
#[derive(Clone, Default)]
pub(crate) struct Envelopes {
    inner: Arc<Mutex<EnvelopeTable>>,
}

#[derive(Default)]
struct EnvelopeTable {
    next: u64,
    /// Envelopes of datagrams turmoil dropped stay until the run ends.
    waiting: HashMap<u64, ChitchatEnvelope>,
}

impl Envelopes {
    fn put(&self, envelope: ChitchatEnvelope) -> u64 {
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        table.next += 1;
        let id = table.next;
        table.waiting.insert(id, envelope);
        id
    }

    fn take(&self, id: u64) -> Option<ChitchatEnvelope> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).waiting.remove(&id)
    }
}

struct SimGossip {
    socket: Mutex<Option<GossipSocket>>,
    addr: SocketAddr,
}

impl GossipTransport for SimGossip {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[async_trait]
impl Transport for SimGossip {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(Box::new(socket.ok_or_else(|| anyhow::anyhow!("the gossip socket was already opened"))?))
    }
}

struct GossipSocket {
    socket: turmoil::net::UdpSocket,
    addr: SocketAddr,
    envelopes: Envelopes,
}

#[async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let id = self.envelopes.put(envelope);
        self.socket.send_to(&id.to_le_bytes(), to).await?;
        Ok(SendOutcome { num_bytes_sent: 8 })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let mut buf = [0u8; 8];
        loop {
            let (len, from) = self.socket.recv_from(&mut buf).await?;
            if len != buf.len() {
                continue;
            }
            if let Some(envelope) = self.envelopes.take(u64::from_le_bytes(buf)) {
                return Ok(RecvOutcome { from_addr: from, envelope, num_bytes_received: len });
            }
        }
    }
}
