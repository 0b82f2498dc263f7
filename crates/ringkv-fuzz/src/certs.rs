//! Certificate and key loading: the CA, a certificate chain and a private
//! key from PEM files, then the TLS configurations a node and a client
//! build from them.

use std::path::PathBuf;
use std::sync::OnceLock;

use ringkv_net::tls::{self, Identity, NodeCheck, TlsPaths, TransportSettings};

/// Separates the three files in a fuzz input (PEM is text: no NUL).
pub const SEPARATOR: u8 = 0;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory").keep())
}

/// `ca.crt NUL cert.crt NUL cert.key`, written to files and loaded as a
/// node loads its certificate directory; a pair that loads builds the
/// server and client TLS configurations, or refuses with an error.
pub fn certs(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == SEPARATOR);
    let (ca, cert, key) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let dir = dir();
    let paths = TlsPaths { ca: dir.join("ca.crt"), cert: dir.join("node.crt"), key: dir.join("node.key") };
    for (path, bytes) in [(&paths.ca, ca), (&paths.cert, cert), (&paths.key, key)] {
        std::fs::write(path, bytes).expect("write a temporary file");
    }
    let identity = match Identity::load(&paths) {
        Ok(identity) => identity,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    let settings = TransportSettings::default();
    if let Err(e) = tls::listener(&identity, &settings) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = tls::client_config(&identity, &settings) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = NodeCheck::new(&identity) {
        assert!(!e.to_string().is_empty());
    }
}
