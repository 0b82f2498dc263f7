//! A remote client against a running node or cluster, in both styles: the
//! typed async `Client`, and the client as a ractor actor that other actors
//! send the store's operations to.
//!
//! ```sh
//! just cluster          # in one terminal
//! cargo run --example client -- 127.0.0.1:7401 .cluster/certs
//! ```

use std::time::Duration;

use ringkv::client::actor::{self, ClientMsg};
use ringkv::{Client, ClientConfig, Consistency, KvStore, TlsPaths};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7401".into());
    let certs = args.next().unwrap_or_else(|| ".cluster/certs".into());
    let nodes = ringkv::resolve(&[addr]).await?;
    let client = Client::new(ClientConfig::new(nodes, TlsPaths::client_in(certs.as_ref())))?;

    // The typed async client.
    let (node, version) = client.ping().await?;
    println!("connected to {node} running ringkv {version}");
    let members = client.members().await?;
    println!("cluster {} has {} members, N={}", members.cluster_id, members.members.len(), members.replication);
    client.put("greeting", "hello from the client example").await?;
    println!("greeting = {:?}", client.get("greeting").await?);
    client.put_with_ttl("ephemeral", "short-lived", Duration::from_secs(5)).await?;
    println!("ephemeral ttl = {:?}", client.ttl("ephemeral").await?);
    let strict = client.with_consistency(Consistency::All);
    println!("read at consistency all: {:?}", strict.get("greeting").await?);
    let explained = client.explain("greeting").await?;
    println!(
        "greeting lives in partition {} on {:?}",
        explained.partition,
        explained.replicas.iter().map(|r| &r.node_id).collect::<Vec<_>>()
    );

    // The same operations as actor messages with reply ports.
    let store = actor::spawn(client.clone(), 1024).await?;
    ractor::call!(store, ClientMsg::Put, "actor-key".into(), "sent as a message".into(), None)??;
    let value = ractor::call!(store, ClientMsg::Get, "actor-key".into())??;
    println!("actor-key = {value:?}");
    let deleted = ractor::call!(store, ClientMsg::Delete, "actor-key".into())??;
    println!("actor deleted actor-key: {deleted}");
    store.stop(None);

    println!("deleted greeting: {}", client.delete("greeting").await?);
    Ok(())
}
