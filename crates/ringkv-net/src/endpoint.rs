//! The QUIC endpoint: serving requests, and calling other nodes.
//!
//! A node has one endpoint that both accepts connections and opens them to
//! peers. Every request travels on a fresh bidirectional stream of a
//! long-lived connection: opening a stream costs microseconds, a mutual-TLS
//! handshake milliseconds.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint, EndpointConfig, RecvStream, SendStream};
use ringkv_core::KvError;
use tokio::sync::watch;

use crate::NetError;
use crate::tls::{Listener, NodeCheck, Role, SERVER_NAME};
use crate::wire::{self, Request, Response};

/// Application error codes for closing streams and connections.
const CODE_FRAME_REFUSED: u32 = 1;
const CODE_SHUTDOWN: u32 = 2;

/// Binds a UDP socket and builds an endpoint on the tokio runtime.
/// `server` is `None` for a client-only endpoint. `seed` feeds quinn's
/// randomness so a simulated run can be replayed.
pub fn bind(
    addr: SocketAddr,
    server: Option<Listener>,
    client: quinn::ClientConfig,
    seed: Option<[u8; 32]>,
) -> Result<Endpoint, NetError> {
    let socket = std::net::UdpSocket::bind(addr).map_err(|e| NetError::Bind { addr, reason: e.to_string() })?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let socket = runtime.wrap_udp_socket(socket).map_err(|e| NetError::Bind { addr, reason: e.to_string() })?;
    from_socket(socket, runtime, server, client, seed).map_err(|e| NetError::Bind { addr, reason: e.to_string() })
}

/// Builds an endpoint over any socket and runtime (a simulated network in
/// tests, real UDP in production).
pub fn from_socket(
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    runtime: Arc<dyn quinn::Runtime>,
    server: Option<Listener>,
    client: quinn::ClientConfig,
    seed: Option<[u8; 32]>,
) -> std::io::Result<Endpoint> {
    let (mut config, server) = match server {
        Some(Listener { config, reset_key, cid_key }) => {
            let mut endpoint = EndpointConfig::new(reset_key);
            endpoint.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
            (endpoint, Some(config))
        }
        None => (EndpointConfig::default(), None),
    };
    config.rng_seed(seed);
    let mut endpoint = Endpoint::new_with_abstract_socket(config, server, socket, runtime)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// What the peer's certificate allows; the handler decides, per
    /// request, whether that suffices (a node's must name a member).
    pub role: Role,
}

impl Peer {
    /// The peer presented a node certificate naming a node id (not
    /// necessarily a member's).
    pub fn is_node(&self) -> bool {
        matches!(self.role, Role::Node(_))
    }
}

/// Serves requests. Implemented by the node; every reply, including errors,
/// is a [`Response`].
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request, peer: Peer) -> impl Future<Output = Response> + Send;
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The largest request frame from a client; other nodes may send up to
    /// [`wire::MAX_PEER_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// How long a stream may take to deliver its request.
    pub read_timeout: Duration,
    pub node_check: NodeCheck,
}

/// Accepts connections until `shutdown` turns true, then closes the
/// endpoint. Misbehaving peers get an error reply on their own stream and are
/// logged; nothing they send affects other connections.
pub async fn serve<H: Handler>(
    endpoint: Endpoint,
    handler: Arc<H>,
    options: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(AtomicUsize::new(0));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Some(incoming) = incoming else { break };
        if connections.load(Ordering::Relaxed) >= options.max_connections {
            tracing::warn!(peer = %incoming.remote_address(), limit = options.max_connections, "refusing connection: too many");
            incoming.refuse();
            continue;
        }
        connections.fetch_add(1, Ordering::Relaxed);
        let (handler, options, connections) = (handler.clone(), options.clone(), connections.clone());
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve_connection(connection, handler, options).await,
                Err(e) => tracing::info!(%peer, error = %e, "handshake failed"),
            }
            connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    endpoint.close(CODE_SHUTDOWN.into(), b"shutting down");
}

async fn serve_connection<H: Handler>(connection: Connection, handler: Arc<H>, options: ServeOptions) {
    let peer = Peer { addr: connection.remote_address(), role: options.node_check.role(connection.peer_identity()) };
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(peer = %peer.addr, reason = %e, "connection closed");
                return;
            }
        };
        let (handler, options, peer) = (handler.clone(), options.clone(), peer.clone());
        tokio::spawn(async move { serve_stream(send, recv, peer, &*handler, &options).await });
    }
}

async fn serve_stream<H: Handler>(
    mut send: SendStream,
    mut recv: RecvStream,
    peer: Peer,
    handler: &H,
    options: &ServeOptions,
) {
    let max_frame = match peer.is_node() {
        true => options.max_frame_bytes.max(wire::MAX_PEER_FRAME_BYTES),
        false => options.max_frame_bytes,
    };
    let request = match tokio::time::timeout(options.read_timeout, read_frame(&mut recv, max_frame)).await {
        Ok(Ok(body)) => wire::decode::<Request>(&body),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(NetError::Malformed(format!("no complete request within {:?}", options.read_timeout))),
    };
    let addr = peer.addr;
    let response = match request {
        Ok(request) => handler.handle(request, peer).await,
        Err(e) => {
            tracing::warn!(peer = %addr, error = %e, "rejecting request");
            // Stop the peer from sending the rest of a frame we refused.
            let _ = recv.stop(CODE_FRAME_REFUSED.into());
            Err(KvError::Protocol(e.to_string()))
        }
    };
    match wire::encode(&response) {
        Ok(frame) => {
            if send.write_all(&frame).await.is_ok() {
                let _ = send.finish();
            }
        }
        Err(e) => tracing::error!(peer = %addr, error = %e, "cannot encode response"),
    }
}

/// Reads one length-prefixed frame body, refusing oversized frames before
/// reading them.
async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Vec<u8>, NetError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.map_err(|e| NetError::Malformed(format!("incomplete frame header: {e}")))?;
    let len = wire::frame_len(header, max)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| NetError::Malformed(format!("incomplete frame: {e}")))?;
    Ok(body)
}

/// Calls nodes, keeping one connection per address.
pub struct Connector {
    endpoint: Endpoint,
    max_frame_bytes: usize,
    connect_timeout: Duration,
    connections: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
    /// Reads the role of the peer of a connection, for [`Connector::call_node`].
    node_check: Option<NodeCheck>,
    /// The role of the peer of the connection to each address: (the
    /// connection's stable id, role), computed once per connection.
    roles: Mutex<HashMap<SocketAddr, (usize, Role)>>,
}

/// Which peers [`Connector::call_node`] may send to: the node ids it
/// accepts at that address.
pub type NodeNames<'a> = &'a (dyn Fn(&str) -> bool + Sync);

impl Connector {
    pub fn new(endpoint: Endpoint, max_frame_bytes: usize) -> Connector {
        Connector {
            endpoint,
            max_frame_bytes,
            connect_timeout: Duration::from_secs(2),
            connections: Mutex::new(HashMap::new()),
            node_check: None,
            roles: Mutex::new(HashMap::new()),
        }
    }

    /// Lets [`Connector::call_node`] check whom it is talking to.
    pub fn with_node_check(mut self, check: NodeCheck) -> Connector {
        self.node_check = Some(check);
        self
    }

    /// Sends one request to a node: refused before anything is sent unless
    /// the certificate at `addr` is a node certificate naming a node id
    /// `accept` takes (with [`Connector::with_node_check`]; without, no
    /// check).
    pub async fn call_node(
        &self,
        addr: SocketAddr,
        accept: NodeNames<'_>,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, NetError> {
        let frame = wire::encode(request)?;
        let (body, ..) = self.exchange_checked(addr, Some(accept), &frame, timeout).await?;
        wire::decode_frame::<Response>(&body, self.max_frame_bytes)
    }

    /// The role of the peer of `connection` (to `addr`), cached per
    /// connection.
    fn role_of(&self, addr: SocketAddr, connection: &Connection, check: &NodeCheck) -> Role {
        let mut roles = self.roles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, role)) = roles.get(&addr)
            && *id == connection.stable_id()
        {
            return role.clone();
        }
        let role = check.role(connection.peer_identity());
        roles.insert(addr, (connection.stable_id(), role.clone()));
        role
    }

    /// A handshake that takes longer than this fails: a node that does not
    /// answer is better skipped quickly than waited for until the request's
    /// own deadline.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Connector {
        self.connect_timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and waits for its response, within `timeout`.
    pub async fn call(&self, addr: SocketAddr, request: &Request, timeout: Duration) -> Result<Response, NetError> {
        let frame = wire::encode(request)?;
        self.call_frame(addr, &frame, timeout).await
    }

    /// Sends raw frame bytes and waits at most `timeout` for the reply.
    /// Public so that tests can send what a broken or hostile client would.
    pub async fn call_frame(&self, addr: SocketAddr, frame: &[u8], timeout: Duration) -> Result<Response, NetError> {
        let (body, ..) = self.exchange_frame(addr, frame, timeout).await?;
        wire::decode_frame::<Response>(&body, self.max_frame_bytes)
    }

    /// Sends one request and returns its response with the verified
    /// certificate chain of the peer that answered it (quinn's
    /// `peer_identity()`, for [`crate::tls::NodeCheck::role`]): the
    /// process that answered holds that certificate's key.
    pub async fn call_identified(
        &self,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Response, Option<Box<dyn std::any::Any>>), NetError> {
        let frame = wire::encode(request)?;
        let (body, connection, _) = self.exchange_frame(addr, &frame, timeout).await?;
        Ok((wire::decode_frame::<Response>(&body, self.max_frame_bytes)?, connection.peer_identity()))
    }

    /// As [`Connector::call`], with why the request was sent a second time
    /// if it was: the cached connection it went out on first was lost, so
    /// that first copy may have been applied as well, and an answer that
    /// could describe what it did is not the request's own.
    pub async fn call_resent(
        &self,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Response, Option<String>), NetError> {
        let frame = wire::encode(request)?;
        let (body, _, resent) = self.exchange_frame(addr, &frame, timeout).await?;
        Ok((wire::decode_frame::<Response>(&body, self.max_frame_bytes)?, resent))
    }

    async fn exchange_frame(
        &self,
        addr: SocketAddr,
        frame: &[u8],
        timeout: Duration,
    ) -> Result<(Vec<u8>, Connection, Option<String>), NetError> {
        self.exchange_checked(addr, None, frame, timeout).await
    }

    async fn exchange_checked(
        &self,
        addr: SocketAddr,
        accept: Option<NodeNames<'_>>,
        frame: &[u8],
        timeout: Duration,
    ) -> Result<(Vec<u8>, Connection, Option<String>), NetError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || NetError::Timeout { addr, ms: timeout.as_millis() as u64 };
        // A cached connection may have died since its last use (peer
        // restarted, idle timeout); one retry on a fresh connection covers
        // that without hiding real failures. The frame may have reached the
        // peer on the connection that died, so a failure to reconnect is
        // then a lost connection (the request's fate unknown), not a
        // failure to connect (the request never sent).
        let mut lost: Option<String> = None;
        for attempt in 0..2 {
            let connection = match tokio::time::timeout_at(deadline, self.connection(addr)).await {
                Err(_) => return Err(timed_out()),
                Ok(Ok(connection)) => connection,
                Ok(Err(e)) => match lost {
                    Some(reason) => return Err(NetError::Connection { addr, reason: format!("{reason}; then {e}") }),
                    None => return Err(e),
                },
            };
            if let (Some(accept), Some(check)) = (accept, &self.node_check) {
                match self.role_of(addr, &connection, check) {
                    Role::Node(id) if accept(&id) => {}
                    role => {
                        return Err(NetError::Connect {
                            addr,
                            reason: format!("it presented {}, not the node expected there", role.describe()),
                        });
                    }
                }
            }
            match tokio::time::timeout_at(deadline, exchange(&connection, frame, self.max_frame_bytes)).await {
                Err(_) => {
                    // A peer that was killed never closes its connections;
                    // one that stopped answering is not reused, so the next
                    // call reconnects instead of waiting on a dead path.
                    self.forget(addr, &connection).await;
                    return Err(timed_out());
                }
                Ok(Err(Exchange::Connection(reason))) if attempt == 0 => {
                    tracing::debug!(%addr, %reason, "connection failed, reconnecting");
                    self.forget(addr, &connection).await;
                    lost = Some(reason);
                }
                Ok(Err(Exchange::Connection(reason))) => {
                    self.forget(addr, &connection).await;
                    return Err(NetError::Connection { addr, reason });
                }
                Ok(Err(Exchange::Frame(e))) => return Err(e),
                Ok(Ok(body)) => return Ok((body, connection, lost)),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn slot(&self, addr: SocketAddr) -> Arc<tokio::sync::Mutex<Option<Connection>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).entry(addr).or_default().clone()
    }

    async fn connection(&self, addr: SocketAddr) -> Result<Connection, NetError> {
        let slot = self.slot(addr);
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        let connecting =
            self.endpoint.connect(addr, SERVER_NAME).map_err(|e| NetError::Connect { addr, reason: e.to_string() })?;
        let connection = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| NetError::Connect { addr, reason: format!("no handshake within {:?}", self.connect_timeout) })?
            .map_err(|e| NetError::Connect { addr, reason: describe(&e) })?;
        *guard = Some(connection.clone());
        Ok(connection)
    }

    async fn forget(&self, addr: SocketAddr, failed: &Connection) {
        let slot = self.slot(addr);
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|c| c.stable_id() == failed.stable_id()) {
            *guard = None;
        }
    }
}

enum Exchange {
    Connection(String),
    Frame(NetError),
}

async fn exchange(connection: &Connection, frame: &[u8], max: usize) -> Result<Vec<u8>, Exchange> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| Exchange::Connection(describe(&e)))?;
    // If the server refuses the frame it stops our stream; its error reply
    // still arrives on the receive side, so a failed write is not final.
    if send.write_all(frame).await.is_ok() {
        let _ = send.finish();
    }
    match recv.read_to_end(max + 4).await {
        Ok(body) => Ok(body),
        Err(quinn::ReadToEndError::TooLong) => {
            Err(Exchange::Frame(NetError::FrameTooLarge { len: (max + 5) as u64, max: max + 4 }))
        }
        Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
            Err(Exchange::Connection(describe(&e)))
        }
        Err(e) => Err(Exchange::Frame(NetError::Malformed(format!("reading the reply: {e}")))),
    }
}

/// Connection errors, with the TLS case spelled out: a certificate the peer
/// rejects shows up as a closed connection on the first stream.
fn describe(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("handshake")
        || text.contains("certificate")
        || text.contains("CryptoError")
        || text.contains("crypto")
    {
        format!("{text} (is the certificate signed by this cluster's CA?)")
    } else {
        text
    }
}
