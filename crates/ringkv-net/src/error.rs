use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("bad certificate or key in {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("cannot bind {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("connection to {addr} failed: {reason}")]
    Connection { addr: SocketAddr, reason: String },
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: u64, max: usize },
    #[error("peer speaks protocol version {found}, this build speaks {supported}")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("no answer from {addr} within {ms} ms")]
    Timeout { addr: SocketAddr, ms: u64 },
    #[error("cannot generate certificates: {0}")]
    CertGen(String),
}

impl From<NetError> for ringkv_core::KvError {
    fn from(e: NetError) -> ringkv_core::KvError {
        match e {
            NetError::Timeout { addr, ms } => {
                ringkv_core::KvError::Timeout { what: format!("a reply from {addr}"), ms }
            }
            NetError::UnsupportedVersion { .. } | NetError::Malformed(_) | NetError::FrameTooLarge { .. } => {
                ringkv_core::KvError::Protocol(e.to_string())
            }
            other => ringkv_core::KvError::Transport(other.to_string()),
        }
    }
}
