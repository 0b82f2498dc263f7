//! The ringkv data model, free of I/O.
//!
//! Everything here is a plain value or a pure function: the node, the storage
//! engine and the tests all agree on what a version is, which write wins and
//! where a key lives because they call the same code. This crate never reads
//! the clock (callers pass wall-clock milliseconds in) and never touches a
//! socket or a file, so every rule in it can be tested directly.

mod api;
mod entry;
mod error;
mod hlc;
mod limits;
mod partition;
pub mod quorum;
pub mod ring;
mod rng;
mod size;
mod time;

pub use api::{Consistency, KeyTtl, KvStore, expiry_from_ttl};
pub use entry::{Entry, Epoch, Liveness};
pub use error::{KvError, ReplicaFailure};
pub use hlc::{Clock, Hlc, HlcError, ManualClock, Timestamp};
pub use limits::Limits;
pub use partition::{PartitionId, Partitioner, key_hash};
pub use rng::SplitMix64;
pub use size::{batches, encoded_len, fitting};
pub use time::{format_duration, parse_duration};

/// Identifies the node that stamped a version; breaks ties between writes
/// stamped in the same HLC tick on different nodes.
///
/// It is a stable hash of the node's configured name rather than the name
/// itself so that every stored version stays a fixed 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct NodeTag(pub u64);

impl NodeTag {
    pub fn from_name(name: &str) -> NodeTag {
        NodeTag(xxhash_rust::xxh3::xxh3_64(name.as_bytes()))
    }
}

/// The version every write carries. Ordered by timestamp, then by the
/// stamping node, which makes last-writer-wins a total order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub ts: Timestamp,
    pub node: NodeTag,
}

impl Version {
    pub const ZERO: Version = Version { ts: Timestamp(0), node: NodeTag(0) };
}
