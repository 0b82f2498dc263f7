//! Time to live: values vanish for every reader at their expiry instant, and
//! `expire`/`persist` change it afterwards.
//!
//! ```sh
//! cargo run --example ttl
//! ```

use std::time::Duration;

use ringkv::{KvStore, Node, NodeConfig, Persistence};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let node = Node::start(NodeConfig { persistence: Persistence::None, ..NodeConfig::default() }).await?;

    node.put_with_ttl("flash", "gone soon", Duration::from_millis(300)).await?;
    node.put_with_ttl("kept", "saved by persist", Duration::from_millis(300)).await?;
    node.persist("kept").await?;
    node.put("later", "expires when told").await?;
    node.expire("later", Duration::from_millis(300)).await?;

    println!(
        "before: flash={:?} kept={:?} later={:?}",
        node.get("flash").await?,
        node.get("kept").await?,
        node.get("later").await?
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    println!(
        "after:  flash={:?} kept={:?} later={:?}",
        node.get("flash").await?,
        node.get("kept").await?,
        node.get("later").await?
    );
    assert_eq!(node.get("flash").await?, None);
    assert!(node.get("kept").await?.is_some());
    node.shutdown().await;
    Ok(())
}
