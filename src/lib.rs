//! ringkv: a peer-to-peer, Dynamo-style key-value store and cache.
//!
//! This facade re-exports what an application needs: the [`KvStore`] trait,
//! the embedded [`Node`] and the remote [`Client`], which both implement it.
//!
//! ```no_run
//! use ringkv::{KvStore, Node, NodeConfig, Persistence};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NodeConfig { persistence: Persistence::None, ..NodeConfig::default() };
//! let node = Node::start(config).await?;
//! node.put("greeting", "hello").await?;
//! assert_eq!(node.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```

pub use bytes::Bytes;
/// The client crate, including the actor-message client in `client::actor`.
pub use ringkv_client as client;
pub use ringkv_client::{Client, ClientConfig, ClientError, resolve};
pub use ringkv_core::{Consistency, KeyTtl, KvError, KvStore, Timestamp};
pub use ringkv_net::tls::TlsPaths;
pub use ringkv_node::{Node, NodeConfig, NodeError, Persistence};
