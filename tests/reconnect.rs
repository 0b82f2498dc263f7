//! A client holds a connection to a node that is killed and restarted on
//! the same address. The new process does not know that connection; it
//! answers the client's next packet with a stateless reset signed as its
//! predecessor would have, so the client reconnects at once instead of
//! waiting on a dead connection until its request times out.

mod common;

use std::time::Duration;

use common::{Certs, node_spec, raw_connector};
use ringkv_net::tls::{TlsPaths, TransportSettings};
use ringkv_net::wire::{Reply, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resets_connections_to_its_predecessor() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let mut node = node_spec("r1", data.path(), certs.path()).start();

    let connector = raw_connector(&TlsPaths::client_in(certs.path()));
    let first = connector.call(node.addr, &Request::Ping, Duration::from_secs(10)).await;
    assert!(matches!(first, Ok(Ok(Reply::Pong { .. }))), "ping before the restart: {first:?}");

    let node = node.restart();
    // Far shorter than the connection's idle timeout: without the reset the
    // request would sit on the dead connection until this deadline passed,
    // and the call would fail instead of reconnecting.
    let deadline = Duration::from_secs(5);
    assert!(deadline < TransportSettings::default().idle_timeout);
    let after = connector.call(node.addr, &Request::Ping, deadline).await;
    assert!(matches!(after, Ok(Ok(Reply::Pong { .. }))), "first ping after the restart: {after:?}");
}
