//! ringkv embedded in a process: no network, the same `KvStore` operations a
//! remote client has.
//!
//! ```sh
//! cargo run --example embedded
//! ```

use std::time::Duration;

use ringkv::{KeyTtl, KvStore, Node, NodeConfig, Persistence};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let config = NodeConfig {
        node_id: "embedded".into(),
        data_dir: data.path().to_path_buf(),
        persistence: Persistence::Wal,
        ..NodeConfig::default()
    };
    let node = Node::start(config.clone()).await?;

    node.put("user:1", "ada").await?;
    node.put_with_ttl("session:42", "token", Duration::from_secs(30)).await?;
    println!("user:1 = {:?}", node.get("user:1").await?);
    println!("session:42 ttl = {:?}", node.ttl("session:42").await?);
    println!("deleted user:1: {}", node.delete("user:1").await?);
    println!("user:1 exists: {}", node.exists("user:1").await?);

    // The log makes the node's state survive a restart.
    node.shutdown().await;
    let node = Node::start(config).await?;
    assert!(matches!(node.ttl("session:42").await?, KeyTtl::Expires(_)));
    println!("after restart, session:42 = {:?}", node.get("session:42").await?);
    node.shutdown().await;
    Ok(())
}
