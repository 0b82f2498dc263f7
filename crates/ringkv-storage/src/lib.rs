//! The ringkv storage engine.
//!
//! [`Shard`] is one partition's in-memory state and knows nothing of disks or
//! clocks. Durability is the [`Wal`] (one per node, group-committed) plus
//! [`SnapshotWriter`], with [`recover`] rebuilding shards at start-up. All
//! file access goes through the [`Disk`] trait so that tests can crash a disk
//! the way a power cut would.

mod disk;
mod error;
pub mod eviction_sim;
mod frame;
mod host;
mod legacy;
mod record;
mod recover;
mod shard;
mod snapshot;
mod wal;

pub use disk::{Disk, DiskFile, FsDisk, MemDisk};
pub use error::StorageError;
pub use host::WriterHost;
pub use recover::{Hints, Recovered, RecoveryConfig, RecoveryStats, compact, merge_hint, recover, remove_hint};
pub use shard::{Applied, Digest, Horizon, Shard, ShardStats, Sweep, footprint};
pub use snapshot::{SnapRecord, SnapshotInfo, SnapshotWriter};
pub use wal::{Durable, FsyncPolicy, Wal, WalConfig, WalRecord, WalStats, settle};
