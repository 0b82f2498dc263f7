//! The store's operations as this node coordinates them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::{Entry, Epoch, KeyTtl, KvError, KvStore, Version, expiry_from_ttl};
use ringkv_net::Handler;
use ringkv_net::wire::{Reply, Request, Response};
use ringkv_storage::settle;

use crate::node::{Inner, Node};
use crate::partition::{Applied, PartitionMsg};

/// How often a read-modify-write (expire, persist) retries after losing a
/// race with a concurrent write before giving up.
const RMW_ATTEMPTS: usize = 8;

fn storage(e: ringkv_storage::StorageError) -> KvError {
    KvError::Storage(e.to_string())
}

struct WriteResult {
    was_live: bool,
}

impl Inner {
    async fn write(
        &self,
        key: Bytes,
        entry: Entry,
        condition: Option<Version>,
    ) -> Result<Option<WriteResult>, KvError> {
        let partition = &self.partitions[self.partitioner.partition_of(&key).0 as usize];
        let applied = partition.call(|reply| PartitionMsg::Apply { key, entry, condition, reply }).await??;
        match applied {
            Applied::Done { was_live, durable } => {
                if let Some(durable) = durable {
                    settle(durable).await.map_err(storage)?;
                }
                Ok(Some(WriteResult { was_live }))
            }
            Applied::Conflict => Ok(None),
        }
    }

    async fn read(&self, key: &Bytes) -> Result<Option<Entry>, KvError> {
        let partition = &self.partitions[self.partitioner.partition_of(key).0 as usize];
        let key = key.clone();
        partition.call(|reply| PartitionMsg::Read { key, reply }).await
    }

    /// The entry if a reader sees it live now.
    async fn read_live(&self, key: &Bytes) -> Result<Option<(Entry, u64)>, KvError> {
        let entry = self.read(key).await?;
        let now = self.now_ms();
        Ok(entry.filter(|e| e.live_value(now, self.epoch()).is_some()).map(|e| (e, now)))
    }

    pub(crate) async fn put(&self, key: Bytes, value: Bytes, ttl: Option<Duration>) -> Result<(), KvError> {
        self.limits.check_key(&key)?;
        self.limits.check_value(&value)?;
        let now = self.now_ms();
        let expires_at = ttl.map(|t| expiry_from_ttl(now, t)).transpose()?;
        let entry = Entry::value(self.stamp(now), value, expires_at);
        self.write(key, entry, None).await.map(|_| ())
    }

    pub(crate) async fn get(&self, key: Bytes) -> Result<Option<Bytes>, KvError> {
        self.limits.check_key(&key)?;
        Ok(self.read_live(&key).await?.and_then(|(e, _)| e.value))
    }

    pub(crate) async fn delete(&self, key: Bytes) -> Result<bool, KvError> {
        self.limits.check_key(&key)?;
        let entry = Entry::tombstone(self.stamp(self.now_ms()));
        Ok(self.write(key, entry, None).await?.is_some_and(|w| w.was_live))
    }

    pub(crate) async fn exists(&self, key: Bytes) -> Result<bool, KvError> {
        self.limits.check_key(&key)?;
        Ok(self.read_live(&key).await?.is_some())
    }

    pub(crate) async fn ttl(&self, key: Bytes) -> Result<KeyTtl, KvError> {
        self.limits.check_key(&key)?;
        Ok(match self.read_live(&key).await? {
            None => KeyTtl::Missing,
            Some((Entry { expires_at: None, .. }, _)) => KeyTtl::Persistent,
            Some((Entry { expires_at: Some(at), .. }, now)) => KeyTtl::Expires(Duration::from_millis(at - now)),
        })
    }

    /// Rewrites a live entry with a new expiry (or none), retrying if a
    /// concurrent write lands between the read and the write.
    async fn set_expiry(&self, key: Bytes, ttl: Option<Duration>) -> Result<bool, KvError> {
        self.limits.check_key(&key)?;
        for _ in 0..RMW_ATTEMPTS {
            let Some((current, now)) = self.read_live(&key).await? else { return Ok(false) };
            if ttl.is_none() && current.expires_at.is_none() {
                return Ok(false);
            }
            let expires_at = ttl.map(|t| expiry_from_ttl(now, t)).transpose()?;
            let entry = Entry { version: self.stamp(now), value: current.value, expires_at };
            if self.write(key.clone(), entry, Some(current.version)).await?.is_some() {
                return Ok(true);
            }
        }
        Err(KvError::Unavailable(format!("key kept changing during {RMW_ATTEMPTS} attempts to update its expiry")))
    }

    pub(crate) async fn clear(&self) -> Result<(), KvError> {
        let epoch = Epoch(self.hlc.now(self.now_ms()));
        self.raise_epoch(epoch);
        let mut durables = Vec::new();
        for partition in &self.partitions {
            if let Some(durable) = partition.call(|reply| PartitionMsg::Truncate { epoch, reply }).await?? {
                durables.push(durable);
            }
        }
        for durable in durables {
            settle(durable).await.map_err(storage)?;
        }
        Ok(())
    }
}

impl KvStore for Node {
    async fn put(&self, key: impl Into<Bytes> + Send, value: impl Into<Bytes> + Send) -> Result<(), KvError> {
        self.inner.put(key.into(), value.into(), None).await
    }

    async fn put_with_ttl(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
        ttl: Duration,
    ) -> Result<(), KvError> {
        self.inner.put(key.into(), value.into(), Some(ttl)).await
    }

    async fn get(&self, key: impl Into<Bytes> + Send) -> Result<Option<Bytes>, KvError> {
        self.inner.get(key.into()).await
    }

    async fn delete(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        self.inner.delete(key.into()).await
    }

    async fn exists(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        self.inner.exists(key.into()).await
    }

    async fn ttl(&self, key: impl Into<Bytes> + Send) -> Result<KeyTtl, KvError> {
        self.inner.ttl(key.into()).await
    }

    async fn expire(&self, key: impl Into<Bytes> + Send, ttl: Duration) -> Result<bool, KvError> {
        self.inner.set_expiry(key.into(), Some(ttl)).await
    }

    async fn persist(&self, key: impl Into<Bytes> + Send) -> Result<bool, KvError> {
        self.inner.set_expiry(key.into(), None).await
    }

    async fn clear(&self) -> Result<(), KvError> {
        self.inner.clear().await
    }
}

impl Handler for Node {
    async fn handle(&self, request: Request, _peer: SocketAddr) -> Response {
        let inner = &self.inner;
        match request {
            Request::Ping => {
                Ok(Reply::Pong { node_id: inner.config.node_id.clone(), version: env!("CARGO_PKG_VERSION").into() })
            }
            Request::Put { key, value, ttl_ms, .. } => {
                inner.put(key, value, ttl_ms.map(Duration::from_millis)).await.map(|()| Reply::Done)
            }
            Request::Get { key, .. } => inner.get(key).await.map(Reply::Value),
            Request::Delete { key, .. } => inner.delete(key).await.map(Reply::Flag),
            Request::Exists { key, .. } => inner.exists(key).await.map(Reply::Flag),
            Request::Ttl { key, .. } => inner.ttl(key).await.map(Reply::Ttl),
            Request::Expire { key, ttl_ms, .. } => {
                inner.set_expiry(key, Some(Duration::from_millis(ttl_ms))).await.map(Reply::Flag)
            }
            Request::Persist { key, .. } => inner.set_expiry(key, None).await.map(Reply::Flag),
            Request::Clear => inner.clear().await.map(|()| Reply::Done),
        }
    }
}
