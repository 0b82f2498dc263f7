//! Fault injection for the chaos suite: a node told to drop traffic with
//! some addresses does so for replica requests (both directions) and gossip
//! (both directions), which is a network partition as far as the protocol
//! can tell; a node told to skew its clock reads the time that much off.
//! Disabled unless `fault_injection = true` in the config; chosen over
//! network namespaces so that the suite runs without root and cuts exactly
//! the links it names.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ringkv_core::{Clock, KvError};
use ringkv_net::wire::ReplicaRequest;

use crate::peers::{PeerFuture, PeerTransport};

#[derive(Default)]
pub(crate) struct Faults {
    blocked: RwLock<HashSet<SocketAddr>>,
    skew_ms: AtomicI64,
}

impl Faults {
    pub(crate) fn skew(&self, offset_ms: i64) {
        self.skew_ms.store(offset_ms, Ordering::Relaxed);
    }

    pub(crate) fn set(&self, blocked: Vec<SocketAddr>) {
        *self.blocked.write().unwrap_or_else(|e| e.into_inner()) = blocked.into_iter().collect();
    }

    pub(crate) fn blocks(&self, addr: SocketAddr) -> bool {
        self.blocked.read().unwrap_or_else(|e| e.into_inner()).contains(&addr)
    }
}

/// The node's clock, off by the injected skew: every use of time in the
/// node (versions, expiry, purge horizons) sees the skewed time, as on a
/// machine whose clock is wrong. Monotonic timers (`tokio::time`) are not
/// skewed, as they are not by a wrong wall clock.
pub(crate) struct SkewedClock {
    pub(crate) inner: Arc<dyn Clock>,
    pub(crate) faults: Arc<Faults>,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms().saturating_add_signed(self.faults.skew_ms.load(Ordering::Relaxed))
    }
}

/// A peer transport that fails calls to blocked addresses at once.
pub(crate) struct FaultyPeers {
    pub(crate) inner: Arc<dyn PeerTransport>,
    pub(crate) faults: Arc<Faults>,
}

impl PeerTransport for FaultyPeers {
    fn call(&self, addr: SocketAddr, request: ReplicaRequest, timeout: Duration) -> PeerFuture<'_> {
        if self.faults.blocks(addr) {
            return Box::pin(
                async move { Err(KvError::Unavailable(format!("link to {addr} cut by fault injection"))) },
            );
        }
        self.inner.call(addr, request, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_net::wire::Reply;

    struct Echo;

    impl PeerTransport for Echo {
        fn call(&self, _addr: SocketAddr, _request: ReplicaRequest, _timeout: Duration) -> PeerFuture<'_> {
            Box::pin(async { Ok(Reply::Done) })
        }
    }

    #[tokio::test]
    async fn blocked_links_fail_and_heal() {
        let faults = Arc::new(Faults::default());
        let peers = FaultyPeers { inner: Arc::new(Echo), faults: faults.clone() };
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let ping = || ReplicaRequest::Truncate { epoch: ringkv_core::Epoch::NONE };
        faults.set(vec![a]);
        assert!(peers.call(a, ping(), Duration::from_secs(1)).await.is_err());
        assert!(peers.call(b, ping(), Duration::from_secs(1)).await.is_ok());
        faults.set(Vec::new());
        assert!(peers.call(a, ping(), Duration::from_secs(1)).await.is_ok());
    }
}
