//! What a node takes from its environment instead of reaching for globals:
//! the clock, the data directory's disk, the network, and how to reach
//! peers. Production uses [`Env::default`] (the system clock, the
//! configured directory, sockets of the OS); tests and the simulator
//! (`ringkv-sim`) substitute each part.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ringkv_core::Clock;
use ringkv_storage::Disk;

use crate::SystemClock;
use crate::peers::PeerTransport;

pub struct Env {
    pub clock: Arc<dyn Clock>,
    /// The data directory's disk; `None` opens `config.data_dir`.
    pub disk: Option<Arc<dyn Disk>>,
    /// How to reach other nodes' replicas; `None` uses the node's QUIC
    /// endpoint.
    pub peers: Option<Arc<dyn PeerTransport>>,
    /// Where the node's QUIC endpoint and gossip sockets come from.
    pub network: Arc<dyn Network>,
}

impl Default for Env {
    fn default() -> Env {
        Env { clock: Arc::new(SystemClock), disk: None, peers: None, network: Arc::new(OsNetwork) }
    }
}

/// A QUIC socket and the runtime quinn drives it on.
pub type QuicSocket = (Arc<dyn quinn::AsyncUdpSocket>, Arc<dyn quinn::Runtime>);

/// A gossip transport bound before chitchat starts, so that the address a
/// node advertises is known (a port of 0 resolved).
pub trait GossipTransport: chitchat::transport::Transport {
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

pub type NetFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// The sockets a node serves and calls on.
pub trait Network: Send + Sync + 'static {
    /// The UDP socket of the QUIC endpoint, bound to `addr`.
    fn quic_socket(&self, addr: SocketAddr) -> NetFuture<'_, QuicSocket>;
    /// The gossip transport bound to `addr`, or `None` for the node's own:
    /// chitchat's messages sealed under the cluster's gossip keyring, over
    /// a UDP socket of the OS (`gossip.rs`). A simulated network brings
    /// its own, since chitchat's encoding is reachable only through an OS
    /// socket; its messages then travel unsealed.
    fn gossip_transport(&self, addr: SocketAddr) -> NetFuture<'_, Option<Box<dyn GossipTransport>>>;
}

/// Sockets of the operating system.
pub struct OsNetwork;

#[allow(clippy::disallowed_methods, reason = "the production network: sockets of the OS")]
impl Network for OsNetwork {
    fn quic_socket(&self, addr: SocketAddr) -> NetFuture<'_, QuicSocket> {
        Box::pin(async move {
            let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
            let socket = runtime.wrap_udp_socket(std::net::UdpSocket::bind(addr)?)?;
            Ok((socket, runtime))
        })
    }

    fn gossip_transport(&self, _addr: SocketAddr) -> NetFuture<'_, Option<Box<dyn GossipTransport>>> {
        Box::pin(async { Ok(None) })
    }
}
