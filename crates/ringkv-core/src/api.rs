use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::KvError;

/// How many replicas must answer before a request completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    One,
    #[default]
    Quorum,
    All,
}

impl Consistency {
    /// Replicas needed out of `n`, given the configured quorum for this kind
    /// of request (W for writes, R for reads), both clamped to `n`.
    pub fn required(self, n: usize, quorum: usize) -> usize {
        match self {
            Consistency::One => 1.min(n),
            Consistency::Quorum => quorum.min(n),
            Consistency::All => n,
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Consistency, String> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            other => Err(format!("unknown consistency level '{other}' (use one, quorum or all)")),
        }
    }
}

/// The answer to `ttl(key)`, in the three cases Redis distinguishes with
/// -2, -1 and a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyTtl {
    Missing,
    Persistent,
    Expires(Duration),
}

/// The store's operations, with the same meaning whether served by an
/// embedded node in this process or by a cluster through the client.
///
/// Keys and values are bytes; anything that converts into [`Bytes`] (a
/// `&'static str`, a `String`, a `Vec<u8>`) can be passed without copying
/// twice. Every method validates sizes before anything is written.
pub trait KvStore: Send + Sync {
    fn put(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
    ) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Stores a value that disappears for every reader `ttl` from now.
    fn put_with_ttl(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), KvError>> + Send;

    fn get(&self, key: impl Into<Bytes> + Send) -> impl Future<Output = Result<Option<Bytes>, KvError>> + Send;

    /// Deletes the key. Returns whether a live value was removed.
    fn delete(&self, key: impl Into<Bytes> + Send) -> impl Future<Output = Result<bool, KvError>> + Send;

    fn exists(&self, key: impl Into<Bytes> + Send) -> impl Future<Output = Result<bool, KvError>> + Send;

    fn ttl(&self, key: impl Into<Bytes> + Send) -> impl Future<Output = Result<KeyTtl, KvError>> + Send;

    /// Sets a time to live on an existing key. Returns false if the key does
    /// not exist.
    fn expire(&self, key: impl Into<Bytes> + Send, ttl: Duration)
    -> impl Future<Output = Result<bool, KvError>> + Send;

    /// Removes the time to live of an existing key. Returns false if the key
    /// does not exist or had no time to live.
    fn persist(&self, key: impl Into<Bytes> + Send) -> impl Future<Output = Result<bool, KvError>> + Send;

    /// Removes every key, everywhere. Writes acknowledged after `clear`
    /// returns survive it.
    fn clear(&self) -> impl Future<Output = Result<(), KvError>> + Send;
}

/// Converts a relative TTL into the absolute expiry stored with the value.
pub fn expiry_from_ttl(now_ms: u64, ttl: Duration) -> Result<u64, KvError> {
    let ms = u64::try_from(ttl.as_millis()).map_err(|_| KvError::InvalidTtl(format!("{ttl:?} is too long")))?;
    if ms == 0 {
        return Err(KvError::InvalidTtl("ttl must be at least 1 ms".into()));
    }
    now_ms.checked_add(ms).ok_or_else(|| KvError::InvalidTtl(format!("{ttl:?} is too long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_clamps_to_ring_size() {
        assert_eq!(Consistency::Quorum.required(3, 2), 2);
        assert_eq!(Consistency::Quorum.required(1, 2), 1);
        assert_eq!(Consistency::All.required(3, 2), 3);
        assert_eq!(Consistency::One.required(3, 2), 1);
        assert_eq!("ALL".parse::<Consistency>(), Ok(Consistency::All));
    }

    #[test]
    fn ttl_conversion_rejects_zero_and_overflow() {
        assert_eq!(expiry_from_ttl(1000, Duration::from_secs(1)), Ok(2000));
        assert!(expiry_from_ttl(1000, Duration::ZERO).is_err());
        assert!(expiry_from_ttl(u64::MAX, Duration::from_secs(1)).is_err());
    }
}
