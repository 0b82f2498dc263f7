//! The ringkv client.
//!
//! [`Client`] implements [`KvStore`], the same trait as the embedded node, so
//! code written against one runs against the other. It keeps one QUIC
//! connection per node and sends each request on a new stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::{Consistency, KeyTtl, KvError, KvStore};
use ringkv_net::tls::{Identity, TlsPaths, TransportSettings, client_config};
use ringkv_net::wire::{Reply, Request};
use ringkv_net::{Connector, NetError, bind};

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
    /// Nodes to talk to; requests fail over to the next on transport errors.
    pub nodes: Vec<SocketAddr>,
    pub tls: TlsPaths,
    /// Per request, including fail-over attempts.
    pub timeout: Duration,
    pub consistency: Consistency,
    /// Largest reply accepted; must cover the cluster's value limit.
    pub max_frame_bytes: usize,
}

impl ClientConfig {
    pub fn new(nodes: Vec<SocketAddr>, tls: TlsPaths) -> ClientConfig {
        ClientConfig {
            nodes,
            tls,
            timeout: Duration::from_secs(5),
            consistency: Consistency::Quorum,
            max_frame_bytes: 64 << 20,
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

#[derive(Clone)]
pub struct Client {
    connector: Arc<Connector>,
    nodes: Arc<[SocketAddr]>,
    /// Index of the node that answered last; requests start there.
    preferred: Arc<AtomicUsize>,
    timeout: Duration,
    consistency: Consistency,
}

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
        Ok(Client {
            connector: Arc::new(Connector::new(endpoint, config.max_frame_bytes)),
            nodes: config.nodes.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            timeout: config.timeout,
            consistency: config.consistency,
        })
    }

    /// A handle to the same connections that sends requests at another
    /// consistency level.
    pub fn with_consistency(&self, consistency: Consistency) -> Client {
        Client { consistency, ..self.clone() }
    }

    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// The answering node's id and version.
    pub async fn ping(&self) -> Result<(String, String), KvError> {
        match self.call(Request::Ping).await? {
            Reply::Pong { node_id, version } => Ok((node_id, version)),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a request to the preferred node, failing over to the others on
    /// transport errors. Errors the node itself returns are final.
    pub async fn call(&self, request: Request) -> Result<Reply, KvError> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.nodes.len() {
            let index = (start + i) % self.nodes.len();
            match self.connector.call(self.nodes[index], &request, self.timeout).await {
                Ok(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return response;
                }
                Err(e) => {
                    tracing::debug!(node = %self.nodes[index], error = %e, "request failed, trying the next node");
                    last = Some(e);
                }
            }
        }
        Err(last.map(KvError::from).unwrap_or_else(|| KvError::Unavailable("no nodes".into())))
    }

    async fn flag(&self, request: Request) -> Result<bool, KvError> {
        match self.call(request).await? {
            Reply::Flag(flag) => Ok(flag),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: Reply) -> KvError {
    KvError::Protocol(format!("unexpected reply {reply:?}"))
}

fn ttl_ms(ttl: Duration) -> Result<u64, KvError> {
    u64::try_from(ttl.as_millis()).map_err(|_| KvError::InvalidTtl(format!("{ttl:?} is too long")))
}

impl KvStore for Client {
    async fn put(&self, key: impl Into<Bytes> + Send, value: impl Into<Bytes> + Send) -> Result<(), KvError> {
        let request =
            Request::Put { key: key.into(), value: value.into(), ttl_ms: None, consistency: self.consistency };
        self.call(request).await.map(|_| ())
    }

    async fn put_with_ttl(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
        ttl: Duration,
    ) -> Result<(), KvError> {
        let request = Request::Put {
            key: key.into(),
            value: value.into(),
            ttl_ms: Some(ttl_ms(ttl)?),
            consistency: self.consistency,
        };
        self.call(request).await.map(|_| ())
    }

    async fn get(&self, key: impl Into<Bytes> + Send) -> Result<Option<Bytes>, KvError> {
        match self.call(Request::Get { key: key.into(), consistency: self.consistency }).await? {
            Reply::Value(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        self.flag(Request::Delete { key: key.into(), consistency: self.consistency }).await
    }

    async fn exists(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        self.flag(Request::Exists { key: key.into(), consistency: self.consistency }).await
    }

    async fn ttl(&self, key: impl Into<Bytes> + Send) -> Result<KeyTtl, KvError> {
        match self.call(Request::Ttl { key: key.into(), consistency: self.consistency }).await? {
            Reply::Ttl(ttl) => Ok(ttl),
            other => Err(unexpected(other)),
        }
    }

    async fn expire(&self, key: impl Into<Bytes> + Send, ttl: Duration) -> Result<bool, KvError> {
        self.flag(Request::Expire { key: key.into(), ttl_ms: ttl_ms(ttl)?, consistency: self.consistency }).await
    }

    async fn persist(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        self.flag(Request::Persist { key: key.into(), consistency: self.consistency }).await
    }

    async fn clear(&self) -> Result<(), KvError> {
        self.call(Request::Clear).await.map(|_| ())
    }
}
