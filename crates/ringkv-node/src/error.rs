use ringkv_net::NetError;
use ringkv_storage::StorageError;

/// Why a node could not start or stop cleanly. Errors of individual
/// operations are [`ringkv_core::KvError`].
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Net(#[from] NetError),
    /// The node's certificate does not name the node it is configured as.
    #[error("the certificate {path} cannot serve as node {node_id}: {reason}")]
    Identity { path: std::path::PathBuf, node_id: String, reason: String },
    #[error("cannot listen for RESP clients on {addr}: {source}")]
    Resp { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("cannot start actor {name}: {reason}")]
    Actor { name: String, reason: String },
}
