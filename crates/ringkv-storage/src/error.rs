use std::path::PathBuf;

/// Everything that can go wrong in the storage engine. Variants about files
/// carry the path and, where it matters, the byte offset, because an operator
/// has to find and inspect the damage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {kind} {path} at offset {offset}: {reason}")]
    Corrupt { kind: &'static str, path: PathBuf, offset: u64, reason: String },
    #[error("{path} was written by format version {found}, this build reads version {supported}")]
    UnsupportedFormat { path: PathBuf, found: u32, supported: u32 },
    #[error(
        "data directory {dir} belongs to {what} '{found}', but this node is configured with '{configured}'; \
         use another data directory or fix the configuration"
    )]
    Mismatch { dir: PathBuf, what: &'static str, found: String, configured: String },
    #[error("the write-ahead log writer has stopped: {0}")]
    WriterStopped(String),
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Io { path: path.into(), source }
    }
}
