//! Real QUIC with real certificates on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::{Consistency, KvError};
use ringkv_net::tls::{
    Identity, Named as certs_named, NodeCheck, TlsPaths, TransportSettings, client_config, listener,
};
use ringkv_net::wire::{self, Reply, Request, Response};
use ringkv_net::{Connector, Handler, NetError, Peer, ServeOptions, bind, certs, serve};

struct Echo;

impl Handler for Echo {
    async fn handle(&self, request: Request, peer: Peer) -> Response {
        match request {
            Request::Ping => Ok(Reply::Pong { node_id: peer.role.describe(), version: peer.is_node().to_string() }),
            Request::Get { key, .. } => Ok(Reply::Value(Some(key))),
            other => Err(KvError::Internal(format!("unexpected {}", other.kind()))),
        }
    }
}

const MAX_FRAME: usize = 64 * 1024;

fn connector(paths: &TlsPaths) -> Connector {
    connector_with(paths, MAX_FRAME)
}

fn connector_with(paths: &TlsPaths, max_frame: usize) -> Connector {
    let identity = Identity::load(paths).unwrap();
    let endpoint = bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        client_config(&identity, &TransportSettings::default()).unwrap(),
        None,
    )
    .unwrap();
    Connector::new(endpoint, max_frame)
}

async fn start_server(dir: &std::path::Path) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    start_server_at(dir, "127.0.0.1:0".parse().unwrap()).await
}

async fn start_server_at(dir: &std::path::Path, addr: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let identity = Identity::load(&TlsPaths::node_in(dir, "n1")).unwrap();
    let settings = TransportSettings::default();
    let endpoint =
        bind(addr, Some(listener(&identity, &settings).unwrap()), client_config(&identity, &settings).unwrap(), None)
            .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = ServeOptions {
        max_frame_bytes: MAX_FRAME,
        max_connections: 16,
        read_timeout: Duration::from_secs(5),
        node_check: NodeCheck::new(&identity).unwrap(),
    };
    tokio::spawn(serve(endpoint, Arc::new(Echo), options, stopped));
    (addr, stop)
}

fn get(key: &'static str) -> Request {
    Request::Get { key: Bytes::from(key), consistency: Consistency::One }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_is_answered_with_errors_and_others_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &["n1".into()], &[]).unwrap();
    let (addr, _stop) = start_server(dir.path()).await;
    let good = connector(&TlsPaths::client_in(dir.path()));
    let bad = connector(&TlsPaths::client_in(dir.path()));
    let t = Duration::from_secs(5);

    assert_eq!(good.call(addr, &get("a"), t).await.unwrap(), Ok(Reply::Value(Some(Bytes::from("a")))));

    let protocol_error = |r: Result<Response, NetError>| match r {
        Ok(Err(KvError::Protocol(msg))) => msg,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    let garbage = protocol_error(bad.call_frame(addr, b"\x00\x00\x00\x05hello", Duration::from_secs(5)).await);
    assert!(garbage.contains("malformed") || garbage.contains("version"), "{garbage}");

    let mut oversized = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
    oversized.extend(std::iter::repeat_n(0u8, MAX_FRAME + 1));
    let msg = protocol_error(bad.call_frame(addr, &oversized, Duration::from_secs(5)).await);
    assert!(msg.contains("exceeds the maximum"), "{msg}");

    let mut future = wire::encode(&get("x")).unwrap();
    future[4..6].copy_from_slice(&99u16.to_be_bytes());
    let msg = protocol_error(bad.call_frame(addr, &future, Duration::from_secs(5)).await);
    assert!(msg.contains("version 99"), "{msg}");

    // Both clients are still served.
    assert_eq!(good.call(addr, &get("b"), t).await.unwrap(), Ok(Reply::Value(Some(Bytes::from("b")))));
    assert_eq!(bad.call(addr, &get("c"), t).await.unwrap(), Ok(Reply::Value(Some(Bytes::from("c")))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_another_ca_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    certs::init(ours.path(), &[], &[]).unwrap();
    certs::init(theirs.path(), &[], &[]).unwrap();
    let (addr, _stop) = start_server(ours.path()).await;

    let stranger = connector(&TlsPaths::client_in(theirs.path()));
    let err = stranger
        .call(addr, &get("a"), Duration::from_secs(5))
        .await
        .expect_err("a foreign certificate must be refused");
    assert!(matches!(err, NetError::Connect { .. } | NetError::Connection { .. }), "{err}");

    // A client that trusts our CA but presents their certificate: refused too.
    let mixed = TlsPaths { ca: ours.path().join("ca.crt"), ..TlsPaths::client_in(theirs.path()) };
    assert!(connector(&mixed).call(addr, &get("a"), Duration::from_secs(5)).await.is_err());

    let friend = connector(&TlsPaths::client_in(ours.path()));
    assert!(friend.call(addr, &get("a"), Duration::from_secs(5)).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_are_told_from_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &[], &[]).unwrap();
    assert!(certs::init(dir.path(), &[], &[]).is_err(), "an existing CA is never overwritten");
    // A node certificate issued later, from the CA key alone, is accepted.
    certs::issue_node_cert(dir.path(), "n9", &[]).unwrap();
    assert_eq!(TlsPaths::node_in(dir.path(), "n9").cert, dir.path().join("n9.crt"));
    assert_eq!(TlsPaths::node_in(dir.path(), "other").cert, dir.path().join("node.crt"));
    certs::issue_operator_cert(dir.path(), "ops").unwrap();
    assert!(certs::issue_operator_cert(dir.path(), "ops").is_err(), "an operator certificate is never overwritten");
    assert!(certs::issue_node_cert(dir.path(), "node", &[]).is_err(), "'node' is the shared certificate's");
    assert!(certs::issue_node_cert(dir.path(), "a b", &[]).is_err());
    let named = |paths: &TlsPaths| Identity::load(paths).unwrap().named(paths).unwrap();
    assert_eq!(named(&TlsPaths::node_in(dir.path(), "n9")), Some(certs_named::Node("n9".into())));
    assert_eq!(named(&TlsPaths::node_in(dir.path(), "other")), None, "the shared node.crt names no node");
    assert_eq!(named(&TlsPaths::operator_in(dir.path())), Some(certs_named::Operator("ops".into())));
    assert_eq!(named(&TlsPaths::client_in(dir.path())), None);

    let (addr, _stop) = start_server(dir.path()).await;
    let t = Duration::from_secs(5);
    let role = async |paths: TlsPaths| match connector(&paths).call(addr, &Request::Ping, t).await.unwrap() {
        Ok(Reply::Pong { node_id, version }) => (node_id, version == "true"),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(role(TlsPaths::node_in(dir.path(), "n9")).await, ("the node certificate of n9".into(), true));
    assert_eq!(role(TlsPaths::node_in(dir.path(), "other")).await, ("a client certificate".into(), false));
    assert_eq!(role(TlsPaths::client_in(dir.path())).await, ("a client certificate".into(), false));
    assert_eq!(role(TlsPaths::operator_in(dir.path())).await, ("the operator certificate of ops".into(), false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_may_send_frames_over_the_client_limit_and_clients_may_not() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &["n2".into()], &[]).unwrap();
    let (addr, _stop) = start_server(dir.path()).await;
    let t = Duration::from_secs(5);
    // Twice the configured limit, as a value stored under larger limits.
    let big = Bytes::from(vec![b'k'; 2 * MAX_FRAME]);
    let request = Request::Get { key: big.clone(), consistency: Consistency::One };

    let as_node = connector_with(&TlsPaths::node_in(dir.path(), "n2"), wire::MAX_PEER_FRAME_BYTES);
    assert_eq!(as_node.call(addr, &request, t).await.unwrap(), Ok(Reply::Value(Some(big))));
    let as_client = connector_with(&TlsPaths::client_in(dir.path()), wire::MAX_PEER_FRAME_BYTES);
    match as_client.call(addr, &request, t).await {
        Ok(Err(KvError::Protocol(msg))) => assert!(msg.contains("exceeds the maximum"), "{msg}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// The node → peer direction of membership bound to certificates: a node
/// sends to a member's address only if the certificate there names that
/// member; `call_identified` hands the prover the certificate that answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sends_only_to_the_node_its_peer_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &["n1".into(), "n2".into()], &[]).unwrap();
    let (addr, _stop) = start_server(dir.path()).await;
    let paths = TlsPaths::node_in(dir.path(), "n2");
    let check = NodeCheck::new(&Identity::load(&paths).unwrap()).unwrap();
    let n2 = connector(&paths).with_node_check(check.clone());
    let t = Duration::from_secs(5);

    let refused = n2.call_node(addr, &|id| id == "n3", &get("a"), t).await;
    match refused {
        Err(NetError::Connect { reason, .. }) => {
            assert!(reason.contains("the node certificate of n1"), "{reason}")
        }
        other => panic!("sent to the wrong node: {other:?}"),
    }
    let sent = n2.call_node(addr, &|id| id == "n1", &get("a"), t).await.unwrap();
    assert_eq!(sent, Ok(Reply::Value(Some(Bytes::from("a")))));

    let (_, identity) = n2.call_identified(addr, &Request::Ping, t).await.unwrap();
    assert_eq!(check.role(identity), ringkv_net::tls::Role::Node("n1".into()));
}

/// A node that crashed and restarted on its address resets the connection
/// a caller had cached; the caller's one resend on a fresh connection is
/// answered, and reported, because the first copy may have been applied
/// before the crash (simulator seed 531: a client took the restarted node's
/// "not applied" for the answer to an expire the crashed one had applied).
#[test]
fn a_resend_after_the_peer_restarted_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &["n1".into()], &[]).unwrap();
    let runtime = || tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (crashed, main) = (runtime(), runtime());
    let (addr, _stop) = crashed.block_on(start_server(dir.path()));
    let client = main.block_on(async { connector(&TlsPaths::client_in(dir.path())) });
    let t = Duration::from_secs(5);
    let call = |key| main.block_on(client.call_resent(addr, &get(key), t)).unwrap();

    let (reply, resent) = call("a");
    assert_eq!((reply, resent), (Ok(Reply::Value(Some(Bytes::from("a")))), None));
    // Its tasks dropped without running again: no connection is closed, as
    // when a process is killed.
    crashed.shutdown_timeout(Duration::from_secs(5));
    let (_, _restarted) = main.block_on(start_server_at(dir.path(), addr));
    let (reply, resent) = call("b");
    assert_eq!(reply, Ok(Reply::Value(Some(Bytes::from("b")))));
    let reason = resent.expect("the first copy went out on the dead connection");
    assert!(reason.contains("reset"), "{reason}");
    assert_eq!(call("c").1, None, "the fresh connection is cached");
}
