//! A remote client against a running node or cluster.
//!
//! ```sh
//! just serve            # in one terminal (or `just cluster`)
//! cargo run --example client -- 127.0.0.1:7400 certs
//! ```

use std::time::Duration;

use ringkv::{Client, ClientConfig, Consistency, KvStore, TlsPaths};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7400".into());
    let certs = args.next().unwrap_or_else(|| "certs".into());
    let nodes = ringkv::resolve(&[addr]).await?;
    let client = Client::new(ClientConfig::new(nodes, TlsPaths::client_in(certs.as_ref())))?;

    let (node, version) = client.ping().await?;
    println!("connected to {node} running ringkv {version}");
    client.put("greeting", "hello from the client example").await?;
    println!("greeting = {:?}", client.get("greeting").await?);
    client.put_with_ttl("ephemeral", "short-lived", Duration::from_secs(5)).await?;
    println!("ephemeral ttl = {:?}", client.ttl("ephemeral").await?);
    let strict = client.with_consistency(Consistency::All);
    println!("read at consistency all: {:?}", strict.get("greeting").await?);
    println!("deleted: {}", client.delete("greeting").await?);
    Ok(())
}
