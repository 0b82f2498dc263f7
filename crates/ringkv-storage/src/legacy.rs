//! Record format 1, written before versions had a touch (the stamp of an
//! expire or persist rewrite). Read, converted, never written: a data
//! directory from an older build recovers, and its next snapshot and log
//! records are format 2. postcard is not self-describing, so the old shapes
//! are spelled out here rather than made optional in the current ones.

use bytes::Bytes;
use ringkv_core::{Epoch, NodeTag, Timestamp};
use serde::Deserialize;

use crate::snapshot::SnapRecord;
use crate::wal::WalRecord;

/// The record format byte of this encoding.
pub(crate) const FORMAT: u8 = 1;

#[derive(Deserialize)]
struct Version {
    ts: Timestamp,
    node: NodeTag,
}

impl From<Version> for ringkv_core::Version {
    fn from(v: Version) -> ringkv_core::Version {
        ringkv_core::Version::new(v.ts, v.node)
    }
}

#[derive(Deserialize)]
struct Entry {
    version: Version,
    value: Option<Bytes>,
    expires_at: Option<u64>,
}

impl From<Entry> for ringkv_core::Entry {
    fn from(e: Entry) -> ringkv_core::Entry {
        ringkv_core::Entry { version: e.version.into(), value: e.value, expires_at: e.expires_at }
    }
}

#[derive(Deserialize)]
enum LegacyWalRecord {
    Entry { partition: u16, key: Bytes, entry: Entry },
    Truncate { epoch: Epoch },
    Hint { target: String, partition: u16, key: Bytes, entry: Entry },
    HintDelivered { target: String, partition: u16, key: Bytes, version: Version },
    DropPartition { partition: u16 },
}

#[derive(Deserialize)]
enum LegacySnapRecord {
    Chunk { partition: u16, entries: Vec<(Bytes, Entry)> },
    End { entries: u64, epoch: Epoch },
    Hints { target: String, entries: Vec<(u16, Bytes, Entry)> },
}

pub(crate) fn wal_record(body: &[u8]) -> Result<WalRecord, String> {
    let record: LegacyWalRecord = postcard::from_bytes(body).map_err(|e| format!("undecodable record: {e}"))?;
    Ok(match record {
        LegacyWalRecord::Entry { partition, key, entry } => WalRecord::Entry { partition, key, entry: entry.into() },
        LegacyWalRecord::Truncate { epoch } => WalRecord::Truncate { epoch },
        LegacyWalRecord::Hint { target, partition, key, entry } => {
            WalRecord::Hint { target, partition, key, entry: entry.into() }
        }
        LegacyWalRecord::HintDelivered { target, partition, key, version } => {
            WalRecord::HintDelivered { target, partition, key, version: version.into() }
        }
        LegacyWalRecord::DropPartition { partition } => WalRecord::DropPartition { partition },
    })
}

pub(crate) fn snap_record(body: &[u8]) -> Result<SnapRecord, String> {
    let record: LegacySnapRecord = postcard::from_bytes(body).map_err(|e| format!("undecodable record: {e}"))?;
    Ok(match record {
        LegacySnapRecord::Chunk { partition, entries } => {
            SnapRecord::Chunk { partition, entries: entries.into_iter().map(|(k, e)| (k, e.into())).collect() }
        }
        LegacySnapRecord::End { entries, epoch } => SnapRecord::End { entries, epoch },
        LegacySnapRecord::Hints { target, entries } => {
            SnapRecord::Hints { target, entries: entries.into_iter().map(|(p, k, e)| (p, k, e.into())).collect() }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Format-1 bytes as the previous build wrote them: a version was
    /// (timestamp, node) and nothing more.
    #[test]
    fn format_one_records_decode_as_untouched_versions() {
        #[derive(serde::Serialize)]
        enum Old {
            Entry { partition: u16, key: Bytes, entry: (u64, u64, Option<Bytes>, Option<u64>) },
        }
        let old = Old::Entry { partition: 3, key: Bytes::from("k"), entry: (7, 9, Some(Bytes::from("v")), Some(11)) };
        let mut payload = vec![FORMAT];
        payload.extend(postcard::to_allocvec(&old).unwrap());
        let version = ringkv_core::Version::new(Timestamp(7), NodeTag(9));
        let entry = ringkv_core::Entry::value(version, Bytes::from("v"), Some(11));
        assert_eq!(WalRecord::decode(&payload), Ok(WalRecord::Entry { partition: 3, key: Bytes::from("k"), entry }));
    }
}
