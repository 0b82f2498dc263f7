//! A ringkv node: partition-owner actors holding the shards, the
//! coordination of client requests, persistence in the background, and the
//! QUIC server.

mod access;
mod clock;
mod clock_check;
pub mod config;
mod coordinate;
pub mod env;
mod error;
mod evictor;
mod fault;
mod gossip;
mod handoff;
mod hints;
mod mailbox;
mod member_file;
mod membership;
mod memory;
mod metrics;
mod node;
mod ops;
mod partition;
pub mod peers;
mod periodic;
mod progress;
mod proofs;
mod rebalance;
mod repair;
mod resp;
mod scan;
mod snapshotter;
mod start;
mod supervisor;
mod sweeper;
mod topology;

pub use clock::SystemClock;
pub use config::{NodeConfig, Password, Persistence, TlsConfig};
pub use env::{Env, GossipTransport, Network, OsNetwork};
pub use error::NodeError;
pub use node::Node;
