use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ringkv_core::EvictionPolicy;
use ringkv_node::{Node, NodeConfig, Persistence};
use ringkv_storage::FsyncPolicy;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    node_id: Option<String>,
    /// QUIC address to serve on (UDP), e.g. 127.0.0.1:7400; port 0 picks one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_parser = parse_persistence)]
    persistence: Option<Persistence>,
    #[arg(long, value_parser = parse_fsync)]
    fsync: Option<FsyncPolicy>,
    /// The memory bound, e.g. 512mb or 2gb; 0 is no limit.
    #[arg(long, value_parser = ringkv_core::parse_size)]
    maxmemory: Option<u64>,
    /// What a write past --maxmemory does: noeviction, allkeys-lru,
    /// allkeys-lfu, allkeys-random, volatile-lru, volatile-lfu,
    /// volatile-random or volatile-ttl.
    #[arg(long, value_parser = parse_policy)]
    maxmemory_policy: Option<EvictionPolicy>,
    /// Certificate directory written by `ringkv certs init`.
    #[arg(long, env = "RINGKV_CERTS")]
    certs: Option<PathBuf>,
    /// UDP address for gossip; required to form a cluster.
    #[arg(long)]
    gossip: Option<SocketAddr>,
    /// TCP address of a RESP port for Redis clients (loopback unless
    /// --resp-tls or resp_password).
    #[arg(long)]
    resp: Option<SocketAddr>,
    /// TLS on the RESP port, with client certificates from the cluster CA.
    #[arg(long)]
    resp_tls: bool,
    /// TCP address where `GET /metrics` serves Prometheus metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Gossip addresses of nodes to join through, comma separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    #[arg(long)]
    cluster_id: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy)]
enum LogFormat {
    Text,
    Json,
}

fn parse_persistence(s: &str) -> Result<Persistence, String> {
    s.parse()
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

fn parse_policy(s: &str) -> Result<EvictionPolicy, String> {
    s.parse()
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let mut config = match &args.config {
        Some(path) => NodeConfig::load(path)?,
        None => NodeConfig::default(),
    };
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.persistence {
        config.persistence = v;
    }
    if let Some(v) = args.fsync {
        config.fsync = v;
    }
    if let Some(v) = args.maxmemory {
        config.maxmemory = v;
    }
    if let Some(v) = args.maxmemory_policy {
        config.maxmemory_policy = v;
    }
    if let Some(v) = args.certs {
        config.tls.certs_dir = Some(v);
    }
    if let Some(v) = args.gossip {
        config.gossip = Some(v);
    }
    if let Some(v) = args.resp {
        config.resp_listen = Some(v);
    }
    if args.resp_tls {
        config.resp_tls = true;
    }
    if let Some(v) = args.metrics {
        config.metrics_listen = Some(v);
    }
    if !args.seeds.is_empty() {
        config.seeds = args.seeds;
    }
    if let Some(v) = args.cluster_id {
        config.cluster_id = v;
    }
    if config.tls.certs_dir.is_none() && config.tls.cert.is_none() {
        bail!(
            "no certificates: pass --certs DIR (create one with `ringkv certs init --dir DIR`) or set [tls] in the config file"
        );
    }
    let node = Node::start(config).await.context("cannot start the node")?;
    let addr = node.local_addr().context("the node did not bind its endpoint")?;
    // One line on stdout that scripts and tests wait for.
    let gossip = node.gossip_addr().map(|a| format!(" gossip {a}")).unwrap_or_default();
    let resp = node.resp_addr().map(|a| format!(" resp {a}")).unwrap_or_default();
    let metrics = node.metrics_addr().map(|a| format!(" metrics {a}")).unwrap_or_default();
    println!("ringkv node {} serving on {addr}{gossip}{resp}{metrics}", node.node_id());
    // SIGINT stops the node where it stands (it keeps its place in the ring
    // and catches up when restarted); SIGTERM, like `ringkv leave`, hands
    // its partitions off first and removes it from the ring.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        reason = node.failed() => {
            // The node is already stopping itself; exiting with an error
            // lets a supervisor (systemd, Kubernetes) restart it, and the
            // restart's recovery rebuilds what the failed actor held.
            node.shutdown().await;
            bail!("the node stopped because {reason}");
        }
        _ = int.recv() => {}
        _ = node.wait_left() => tracing::info!("left the ring"),
        _ = term.recv() => {
            tracing::info!("SIGTERM: leaving the ring before stopping (SIGINT stops at once)");
            tokio::select! {
                left = node.leave() => if let Err(e) = left {
                    tracing::warn!(error = %e, "cannot leave the ring; stopping anyway");
                },
                _ = int.recv() => tracing::warn!("SIGINT: stopping before the handoff finished"),
            }
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
