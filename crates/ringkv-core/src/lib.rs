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
pub mod memory;
mod partition;
pub mod quorum;
pub mod ring;
mod rng;
pub mod scan;
mod size;
mod time;
pub mod update;

pub use api::{Consistency, KeyTtl, KvStore, expiry_from_ttl};
pub use entry::{Entry, EntryRef, Epoch, Liveness};
pub use error::{KvError, ReplicaFailure};
pub use hlc::{Clock, Hlc, HlcError, ManualClock, Timestamp};
pub use limits::Limits;
pub use memory::{EvictionPolicy, format_size, parse_size};
pub use partition::{PartitionId, Partitioner, key_hash};
pub use rng::SplitMix64;
pub use size::{batches, encoded_len, fitting};
pub use time::{Deadline, format_duration, parse_duration};

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

/// The version every write carries. `ts` and `node` stamp the write that
/// produced the entry's value (a put or a delete); `touch` is set on an
/// entry that `expire` or `persist` rewrote, to the stamp of that rewrite.
///
/// Ordered by the value's stamp (timestamp, then node), then by the touch,
/// none first: a total order, so last-writer-wins is one. A rewrite carries
/// the value it read, so it must outrank that value and earlier rewrites of
/// it, and must never outrank a write stamped after that value, or
/// last-writer-wins, through any replica, hint or repair that let it in,
/// would bring the older value back over an acknowledged put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub ts: Timestamp,
    pub node: NodeTag,
    pub touch: Option<Touch>,
}

/// The stamp of an expire or persist rewrite (see [`Version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Touch {
    pub ts: Timestamp,
    pub node: NodeTag,
}

impl Version {
    pub const ZERO: Version = Version::new(Timestamp(0), NodeTag(0));

    /// The version of a put or delete stamped `ts` by `node`.
    pub const fn new(ts: Timestamp, node: NodeTag) -> Version {
        Version { ts, node, touch: None }
    }

    /// The version of a rewrite, stamped `stamp`, of the value this version
    /// wrote: it keeps the value's stamp and replaces any earlier touch.
    pub fn touched(self, stamp: Version) -> Version {
        Version { touch: Some(Touch { ts: stamp.newest_ts(), node: stamp.node }), ..self }
    }

    /// The newest timestamp in the version, which a clock absorbs so that
    /// everything it stamps afterwards orders after the version.
    pub fn newest_ts(self) -> Timestamp {
        self.touch.map_or(self.ts, |t| t.ts.max(self.ts))
    }
}
