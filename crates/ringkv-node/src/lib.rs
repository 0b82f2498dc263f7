//! A ringkv node: partition-owner actors holding the shards, the
//! coordination of client requests, persistence in the background, and the
//! QUIC server.

mod access;
mod clock;
pub mod config;
mod error;
mod fault;
mod gossip;
mod hints;
mod mailbox;
mod membership;
mod memory;
mod metrics;
mod node;
mod ops;
mod partition;
pub mod peers;
mod proofs;
mod rebalance;
mod repair;
mod resp;
mod scan;
mod supervisor;
mod topology;

pub use clock::SystemClock;
pub use config::{NodeConfig, Password, Persistence, TlsConfig};
pub use error::NodeError;
pub use node::{Env, Node};
