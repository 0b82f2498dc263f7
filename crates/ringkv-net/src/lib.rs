//! ringkv's network layer: the versioned wire protocol, QUIC endpoints with
//! mutual TLS, certificate generation for a cluster CA, and the sealed
//! gossip datagrams and keyring.

pub mod certs;
mod endpoint;
mod error;
pub mod gossip;
pub mod tls;
pub mod wire;

pub use endpoint::{Connector, Handler, Peer, ServeOptions, bind, from_socket, serve};
pub use error::NetError;
pub use quinn::Endpoint;
