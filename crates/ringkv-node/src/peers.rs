//! How a node reaches other nodes' replicas. Behind a trait so that tests
//! can cut links and drop messages without touching the network, the way
//! chitchat's `ChannelTransport` does for gossip.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::KvError;
use ringkv_net::Connector;
use ringkv_net::wire::{ReplicaRequest, Reply, Request};

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
