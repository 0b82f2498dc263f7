//! Mutual TLS for every QUIC connection: nodes and clients present
//! certificates signed by the cluster CA, and both sides verify the other
//! against that CA only. There is no way to turn verification off.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls::{self, RootCertStore, pki_types::pem::PemObject};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use crate::NetError;

/// The name every node certificate carries and every connection verifies.
/// Nodes are reached by IP address, so the name proves membership of the
/// cluster (a certificate from its CA), not a host name.
pub const SERVER_NAME: &str = "ringkv-node";
pub const ALPN: &[u8] = b"ringkv/1";

/// A node certificate names its node id in a URI subject alternative name
/// `ringkv://node/<id>`; an operator certificate its holder in
/// `ringkv://operator/<name>`. A certificate names at most one of these.
pub const NODE_URI: &str = "ringkv://node/";
pub const OPERATOR_URI: &str = "ringkv://operator/";
const RINGKV_URI: &str = "ringkv://";

/// What a certificate names with a `ringkv://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Node(String),
    Operator(String),
}

/// Node ids and operator names: letters, digits, `-`, `_` and `.`, at most
/// 128 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Reads the ringkv name among a certificate's URI names: none, exactly one
/// well-formed `ringkv://node/<id>` or `ringkv://operator/<name>`, or an
/// error for anything else under `ringkv://` (two names, an unknown kind, a
/// malformed name). Other URIs are ignored.
pub fn parse_names<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Option<Named>, String> {
    let mut found = None;
    for uri in uris.into_iter().filter(|u| u.starts_with(RINGKV_URI)) {
        let named = if let Some(id) = uri.strip_prefix(NODE_URI) {
            Named::Node(id.to_string())
        } else if let Some(name) = uri.strip_prefix(OPERATOR_URI) {
            Named::Operator(name.to_string())
        } else {
            return Err(format!("unknown ringkv name {uri:?}"));
        };
        let (Named::Node(name) | Named::Operator(name)) = &named;
        if !valid_name(name) {
            return Err(format!("malformed ringkv name {uri:?}"));
        }
        if found.is_some() {
            return Err("the certificate carries more than one ringkv name".into());
        }
        found = Some(named);
    }
    Ok(found)
}

fn names_of(cert: &CertificateDer<'_>) -> Result<Option<Named>, String> {
    let cert = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    parse_names(cert.valid_uri_names())
}

/// What a connection's certificate allows (see ARCHITECTURE.md, *Roles on
/// the QUIC port*). Every certificate has been verified against the
/// cluster CA before a role is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Any other certificate of the cluster CA: the client certificate,
    /// the legacy shared `node.crt` that names no node, or one whose
    /// ringkv name is malformed.
    Client,
    /// A certificate naming `ringkv://operator/<name>`.
    Operator(Arc<str>),
    /// A node certificate (valid for server use under [`SERVER_NAME`])
    /// naming `ringkv://node/<id>`.
    Node(Arc<str>),
}

impl Role {
    /// The role of a certificate with these names; `node_usage` is whether
    /// it is valid as a node certificate (server use under
    /// [`SERVER_NAME`]). Least privilege: a node name without node usage,
    /// an operator name with it, or a malformed name is a plain client.
    pub fn from_names(names: Result<Option<Named>, String>, node_usage: bool) -> Role {
        match (names, node_usage) {
            (Ok(Some(Named::Node(id))), true) => Role::Node(id.into()),
            (Ok(Some(Named::Operator(name))), false) => Role::Operator(name.into()),
            _ => Role::Client,
        }
    }

    /// For errors and logs: "a client certificate", "the node certificate
    /// of n3", "the operator certificate of alice".
    pub fn describe(&self) -> String {
        match self {
            Role::Client => "a client certificate".into(),
            Role::Operator(name) => format!("the operator certificate of {name}"),
            Role::Node(id) => format!("the node certificate of {id}"),
        }
    }
}

/// Where a party's certificate, key and the cluster CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPaths {
    /// A node's files in a directory written by `ringkv certs init`: its own
    /// `<node_id>.crt` if one was issued, otherwise the shared `node.crt`.
    pub fn node_in(dir: &Path, node_id: &str) -> TlsPaths {
        let own = dir.join(format!("{node_id}.crt"));
        let stem = if own.exists() { node_id } else { "node" };
        TlsPaths { ca: dir.join("ca.crt"), cert: dir.join(format!("{stem}.crt")), key: dir.join(format!("{stem}.key")) }
    }

    pub fn client_in(dir: &Path) -> TlsPaths {
        TlsPaths { ca: dir.join("ca.crt"), cert: dir.join("client.crt"), key: dir.join("client.key") }
    }

    /// The operator certificate of `ringkv certs issue --operator`.
    pub fn operator_in(dir: &Path) -> TlsPaths {
        TlsPaths { ca: dir.join("ca.crt"), cert: dir.join("operator.crt"), key: dir.join("operator.key") }
    }
}

/// Loaded certificate material.
#[derive(Debug)]
pub struct Identity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity { roots: self.roots.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let bytes = std::fs::read(path).map_err(|e| NetError::File { path: path.into(), reason: e.to_string() })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::Certificate { path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(NetError::Certificate { path: path.into(), reason: "no certificate in the file".into() });
    }
    Ok(certs)
}

impl Identity {
    pub fn load(paths: &TlsPaths) -> Result<Identity, NetError> {
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&paths.ca)? {
            roots.add(ca).map_err(|e| NetError::Certificate { path: paths.ca.clone(), reason: e.to_string() })?;
        }
        let chain = read_certs(&paths.cert)?;
        let key_bytes =
            std::fs::read(&paths.key).map_err(|e| NetError::File { path: paths.key.clone(), reason: e.to_string() })?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|e| NetError::Certificate { path: paths.key.clone(), reason: e.to_string() })?;
        Ok(Identity { roots: Arc::new(roots), chain, key })
    }

    /// The ringkv name of this identity's own certificate, if it has one.
    pub fn named(&self, paths: &TlsPaths) -> Result<Option<Named>, NetError> {
        names_of(&self.chain[0]).map_err(|reason| NetError::Certificate { path: paths.cert.clone(), reason })
    }
}

/// QUIC transport knobs shared by servers and clients.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// Concurrent requests per connection (one bidirectional stream each).
    /// quinn's default of 100 throttles a coordinator's fan-out.
    pub max_streams: u32,
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
}

impl Default for TransportSettings {
    fn default() -> TransportSettings {
        TransportSettings {
            max_streams: 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

fn transport(settings: &TransportSettings) -> Result<Arc<quinn::TransportConfig>, NetError> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(settings.max_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.max_idle_timeout(Some(
        settings.idle_timeout.try_into().map_err(|e| NetError::Tls(format!("idle timeout out of range: {e}")))?,
    ));
    t.keep_alive_interval(Some(settings.keep_alive));
    Ok(Arc::new(t))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Always explicit: relying on a process-default provider lets a second
    // crypto backend slip in through some other dependency.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a node's endpoint needs to accept connections.
pub struct Listener {
    pub config: quinn::ServerConfig,
    /// Signs the stateless resets this endpoint sends for connections it
    /// does not know.
    pub reset_key: Arc<dyn quinn::crypto::HmacKey>,
    /// Keys the connection ids this endpoint issues; a packet whose id does
    /// not validate is dropped without a reset.
    pub cid_key: u64,
}

/// Both keys are derived from the node's private key, so a restarted
/// process validates the connection ids its predecessor issued and signs
/// resets as it did: a client still holding a connection to the dead
/// process recognises the reset and reconnects at once, instead of waiting
/// out its request timeout.
pub fn listener(identity: &Identity, settings: &TransportSettings) -> Result<Listener, NetError> {
    let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.key.secret_der());
    // Never the private key itself: one derived key per purpose.
    let derive = |purpose: &[u8]| ring::hmac::sign(&secret, purpose);
    let reset = derive(b"ringkv stateless reset key v1");
    let cid = derive(b"ringkv connection id key v1");
    Ok(Listener {
        config: server_config(identity, settings)?,
        reset_key: Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref())),
        cid_key: u64::from_le_bytes(cid.as_ref()[..8].try_into().expect("an HMAC-SHA256 tag has 32 bytes")),
    })
}

fn server_config(identity: &Identity, settings: &TransportSettings) -> Result<quinn::ServerConfig, NetError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(identity.roots.clone(), provider.clone())
        .build()
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| NetError::Tls(format!("node certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(settings)?);
    Ok(config)
}

/// TLS for the RESP port (`redis-cli --tls`): the node's certificate, and
/// a client certificate signed by the cluster CA required of every client,
/// as on the QUIC port. TLS 1.3 only, as on the QUIC port.
pub fn resp_server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, NetError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(identity.roots.clone(), provider.clone())
        .build()
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| NetError::Tls(format!("node certificate: {e}")))?;
    Ok(Arc::new(tls))
}

pub fn client_config(identity: &Identity, settings: &TransportSettings) -> Result<quinn::ClientConfig, NetError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_root_certificates(identity.roots.clone())
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| NetError::Tls(format!("client certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(settings)?);
    Ok(config)
}

/// Gives each connection its [`Role`]. Every certificate is signed by the
/// cluster CA, but only node certificates are valid for server use under
/// [`SERVER_NAME`], and only those naming a node id are a node's; replica
/// requests are accepted only from a member's, so a client cannot write to
/// a replica behind its coordinator's back.
#[derive(Debug, Clone)]
pub struct NodeCheck {
    verifier: Arc<WebPkiServerVerifier>,
}

impl NodeCheck {
    pub fn new(identity: &Identity) -> Result<NodeCheck, NetError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(identity.roots.clone(), provider())
            .build()
            .map_err(|e| NetError::Tls(e.to_string()))?;
        Ok(NodeCheck { verifier })
    }

    /// The role of a connection's peer identity (quinn's
    /// `peer_identity()`), already verified against the CA by the handshake.
    pub fn role(&self, peer_identity: Option<Box<dyn std::any::Any>>) -> Role {
        let Some(chain) = peer_identity.and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok()) else {
            return Role::Client;
        };
        let Some((end_entity, intermediates)) = chain.split_first() else { return Role::Client };
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        let node_usage =
            self.verifier.verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now()).is_ok();
        Role::from_names(names_of(end_entity), node_usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_at_most_one_node_or_operator() {
        assert_eq!(parse_names([]), Ok(None));
        assert_eq!(parse_names(["https://example.com/x"]), Ok(None), "other URIs are ignored");
        assert_eq!(parse_names(["ringkv://node/n1"]), Ok(Some(Named::Node("n1".into()))));
        assert_eq!(parse_names(["ringkv://operator/ops-1"]), Ok(Some(Named::Operator("ops-1".into()))));
        assert_eq!(parse_names(["https://x", "ringkv://node/a.b_c-9"]), Ok(Some(Named::Node("a.b_c-9".into()))));
        for bad in [
            vec!["ringkv://node/"],
            vec!["ringkv://node/n1/x"],
            vec!["ringkv://node/n 1"],
            vec!["ringkv://client/c"],
            vec!["ringkv://node/n1", "ringkv://node/n2"],
            vec!["ringkv://node/n1", "ringkv://operator/o"],
            vec!["ringkv://node/n1", "ringkv://node/n1"],
        ] {
            assert!(parse_names(bad.iter().copied()).is_err(), "{bad:?}");
        }
        assert!(valid_name(&"x".repeat(128)) && !valid_name(&"x".repeat(129)));
    }

    #[test]
    fn roles_follow_names_and_usage_with_least_privilege() {
        let node = || Ok(Some(Named::Node("n1".into())));
        let operator = || Ok(Some(Named::Operator("ops".into())));
        assert_eq!(Role::from_names(node(), true), Role::Node("n1".into()));
        assert_eq!(Role::from_names(node(), false), Role::Client, "a node name without node usage");
        assert_eq!(Role::from_names(operator(), false), Role::Operator("ops".into()));
        assert_eq!(Role::from_names(operator(), true), Role::Client, "an operator name on a node certificate");
        assert_eq!(Role::from_names(Ok(None), true), Role::Client, "the legacy shared node.crt");
        assert_eq!(Role::from_names(Ok(None), false), Role::Client);
        assert_eq!(Role::from_names(Err("two names".into()), true), Role::Client);
        assert_eq!(Role::Node("n3".into()).describe(), "the node certificate of n3");
    }
}
