//! Hostile and broken clients against a real node: each gets an error, and
//! a well-behaved client keeps being served throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Certs, node_spec, raw_connector};
use ringkv::{KvError, KvStore};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::{self, Request};

fn protocol_error(result: Result<ringkv_net::wire::Response, ringkv_net::NetError>) -> String {
    match result {
        Ok(Err(KvError::Protocol(message))) => message,
        other => panic!("expected a protocol error reply, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_wrong_version_get_errors_while_others_are_served() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let node = node_spec("a1", data.path(), certs.path()).setting("max_value_bytes = 1024").start();

    // A well-behaved client works in the background the whole time.
    let good = certs.client(vec![node.addr]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let background = {
        let (good, stop, served) = (good.clone(), stop.clone(), served.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("good-{}", i % 100);
                good.put(key.clone(), format!("{i}")).await.expect("good client failed a put");
                assert_eq!(good.get(key).await.expect("good client failed a get").unwrap(), format!("{i}"));
                served.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    let bad = raw_connector(&TlsPaths::client_in(certs.path()));
    for _ in 0..20 {
        let msg = protocol_error(bad.call_frame(node.addr, b"\x00\x00\x00\x08GARBAGE!", Duration::from_secs(5)).await);
        assert!(msg.contains("version") || msg.contains("malformed"), "{msg}");

        let msg = protocol_error(bad.call_frame(node.addr, &[0xff; 64], Duration::from_secs(5)).await);
        assert!(msg.contains("exceeds the maximum"), "{msg}");

        let mut huge = (10u32 << 20).to_be_bytes().to_vec();
        huge.extend(std::iter::repeat_n(7u8, 256 << 10));
        let msg = protocol_error(bad.call_frame(node.addr, &huge, Duration::from_secs(5)).await);
        assert!(msg.contains("exceeds the maximum"), "{msg}");

        let mut future = wire::encode(&Request::Ping).unwrap();
        let next = wire::PROTOCOL_VERSION + 1;
        future[4..6].copy_from_slice(&next.to_be_bytes());
        let msg = protocol_error(bad.call_frame(node.addr, &future, Duration::from_secs(5)).await);
        assert!(msg.contains(&format!("protocol version {next}")), "{msg}");

        let mut cut = wire::encode(&Request::Clear).unwrap();
        cut.truncate(cut.len() - 1);
        let msg = protocol_error(bad.call_frame(node.addr, &cut, Duration::from_secs(5)).await);
        assert!(msg.contains("incomplete frame") || msg.contains("malformed"), "{msg}");
    }
    // Oversized values through the API: a clear error, nothing stored.
    match good.put("big", vec![0u8; 2048]).await {
        Err(KvError::ValueTooLarge { len: 2048, max: 1024 }) => {}
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(good.get("big").await.unwrap(), None);

    // A client whose certificate comes from another CA is refused.
    let other = tempfile::tempdir().unwrap();
    ringkv_net::certs::init(other.path(), &[], &[]).unwrap();
    let stranger = raw_connector(&TlsPaths::client_in(other.path()));
    assert!(stranger.call(node.addr, &Request::Ping, Duration::from_secs(5)).await.is_err());

    let before = served.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::Relaxed) < before + 50 {
        assert!(tokio::time::Instant::now() < deadline, "the good client stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    assert!(served.load(Ordering::Relaxed) > 100);
}
