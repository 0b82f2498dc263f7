//! Record format 1, written before versions had a touch (the stamp of an
//! expire or persist rewrite). Read, converted, never written: a data
//! directory from an older build recovers, and its next snapshot and log
//! records are format 2. postcard is not self-describing, so the old shapes
//! are spelled out here rather than made optional in the current ones.

use bytes::Bytes;
use ringkv_core::{Epoch, NodeTag, Timestamp};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The record format byte of this encoding.
pub(crate) const FORMAT: u8 = 1;

#[derive(Deserialize)]
pub(crate) struct Version {
    ts: Timestamp,
    node: NodeTag,
}

impl From<Version> for ringkv_core::Version {
    fn from(v: Version) -> ringkv_core::Version {
        ringkv_core::Version::new(v.ts, v.node)
    }
}

#[derive(Deserialize)]
pub(crate) struct Entry {
    version: Version,
    value: Option<Bytes>,
    expires_at: Option<u64>,
}

impl From<Entry> for ringkv_core::Entry {
    fn from(e: Entry) -> ringkv_core::Entry {
        ringkv_core::Entry { version: e.version.into(), value: e.value, expires_at: e.expires_at }
    }
}

/// A format-1 log record; `wal.rs` converts it.
#[derive(Deserialize)]
pub(crate) enum WalRecord {
    Entry { partition: u16, key: Bytes, entry: Entry },
    Truncate { epoch: Epoch },
    Hint { target: String, partition: u16, key: Bytes, entry: Entry },
    HintDelivered { target: String, partition: u16, key: Bytes, version: Version },
    DropPartition { partition: u16 },
}

/// A format-1 snapshot record; `snapshot.rs` converts it.
#[derive(Deserialize)]
pub(crate) enum SnapRecord {
    Chunk { partition: u16, entries: Vec<(Bytes, Entry)> },
    End { entries: u64, epoch: Epoch },
    Hints { target: String, entries: Vec<(u16, Bytes, Entry)> },
}

/// Decodes a format-1 record body.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("undecodable record: {e}"))
}
