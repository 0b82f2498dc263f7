use serde::{Deserialize, Serialize};

/// A partition number in `0..P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u16);

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The stable 64-bit hash that places keys. xxh3 with seed 0 is specified
/// and portable, unlike std's `DefaultHasher`, so every node, every release
/// and every client agrees on it forever.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Maps keys to one of a fixed number of partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioner {
    count: u16,
}

impl Partitioner {
    /// # Panics
    /// If `count` is zero; config validation rejects that first.
    pub fn new(count: u16) -> Partitioner {
        assert!(count > 0, "partition count must be positive");
        Partitioner { count }
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        PartitionId((key_hash(key) % u64::from(self.count)) as u16)
    }

    pub fn all(&self) -> impl Iterator<Item = PartitionId> + use<> {
        (0..self.count).map(PartitionId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_specified_xxh3() {
        // Pinned values: if these change, every existing cluster would lose
        // track of where its keys live.
        assert_eq!(key_hash(b""), 0x2d06800538d394c2);
        assert_eq!(Partitioner::new(256).partition_of(b"hello"), PartitionId((key_hash(b"hello") % 256) as u16));
    }

    #[test]
    fn partitions_are_roughly_balanced() {
        let p = Partitioner::new(16);
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            counts[p.partition_of(&i.to_be_bytes()).0 as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*max < *min * 13 / 10, "unbalanced: {counts:?}");
    }
}
