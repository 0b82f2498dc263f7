//! The `ringkv` command line. Lives in a library so that the `ringkv`
//! package's binary is one line and the integration tests, which belong to
//! that package, can run the real binary.

mod bench;
mod commands;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringkv_core::Consistency;

#[derive(Parser)]
#[command(name = "ringkv", version, about = "A peer-to-peer, Dynamo-style key-value store and cache")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(serve::ServeArgs),
    /// Create or extend a cluster's certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Store a value.
    Put {
        key: String,
        value: String,
        /// Time to live, e.g. 500ms, 10s, 5m.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a value; exit code 1 if the key does not exist.
    Get {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key; exit code 1 if it did not exist.
    Del {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Exit code 0 if the key exists, 1 if not.
    Exists {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the remaining time to live.
    Ttl {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a time to live on an existing key.
    Expire {
        key: String,
        #[arg(value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the time to live of a key; exit code 1 if it has none or does
    /// not exist.
    Persist {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete every key in the cluster.
    Clear {
        /// Required: this cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster members with their address, status, liveness, partitions
    /// owned and hints pending.
    Status {
        /// Only the membership as the contacted node sees it, without asking
        /// each member for its own figures.
        #[arg(long)]
        brief: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Where a key lives: its partition, preference list, and what each
    /// replica holds.
    Explain {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make the node at --addr hand its partitions to the other members and
    /// exit (as SIGTERM does). Returns once it has started leaving; follow
    /// it with `ringkv status`. Uses the operator certificate
    /// (`operator.crt` in --certs; `ringkv certs issue --operator NAME`).
    Leave {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check that a node answers.
    Ping {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load generator over the real protocol.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a cluster CA, one node certificate per --nodes id, a client
    /// certificate, the gossip keyring, and a shared node.crt naming no node
    /// (for a standalone node only).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Node ids to issue their own certificates for (`<id>.crt`, naming
        /// `ringkv://node/<id>`); a clustered node needs its own.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Extra DNS names or IP addresses for node certificates.
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
    },
    /// Issue one more certificate from the CA in --dir: a node's
    /// (`--name ID`: `ID.crt`, naming that node id) or the operator's
    /// (`--operator NAME`: `operator.crt`, which may make nodes leave).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// The node id the certificate names.
        #[arg(long, required_unless_present = "operator", conflicts_with = "operator")]
        name: Option<String>,
        /// Issue the operator certificate instead, naming its holder.
        #[arg(long)]
        operator: Option<String>,
        /// Extra DNS names or IP addresses (node certificates).
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
    },
    /// Manage the gossip keyring (`gossip.key`): new keys, promotion,
    /// removal. Every node of a cluster needs the same keys; see README,
    /// "Security", for rotating them without downtime.
    #[command(subcommand)]
    GossipKey(GossipKeyCommand),
}

#[derive(Subcommand)]
pub(crate) enum GossipKeyCommand {
    /// Add a new random key, accepted but not yet used to seal (or, if
    /// there is no keyring yet, create one with the key as primary).
    New {
        #[command(flatten)]
        file: KeyringArgs,
    },
    /// Seal gossip with this key from now on; the former primary stays
    /// accepted.
    Promote {
        /// The key id (8 hex digits), as `list` shows it.
        id: String,
        #[command(flatten)]
        file: KeyringArgs,
    },
    /// Stop accepting a key. The primary key cannot be removed.
    Remove {
        id: String,
        #[command(flatten)]
        file: KeyringArgs,
    },
    /// Show the key ids and their roles (never the keys).
    List {
        #[command(flatten)]
        file: KeyringArgs,
    },
}

/// Which keyring file a `gossip-key` command works on.
#[derive(Args)]
pub(crate) struct KeyringArgs {
    /// The certificate directory holding `gossip.key`.
    #[arg(long, required_unless_present = "keyring")]
    dir: Option<PathBuf>,
    /// The keyring file itself, instead of --dir.
    #[arg(long, conflicts_with = "dir")]
    keyring: Option<PathBuf>,
}

impl KeyringArgs {
    fn path(&self) -> PathBuf {
        match (&self.keyring, &self.dir) {
            (Some(file), _) => file.clone(),
            (None, Some(dir)) => dir.join(ringkv_net::gossip::KEYRING_FILE),
            (None, None) => PathBuf::from(ringkv_net::gossip::KEYRING_FILE),
        }
    }
}

/// How client commands reach the cluster.
#[derive(Args, Clone, Debug)]
pub(crate) struct ClientArgs {
    /// Node address(es), host:port, comma separated.
    #[arg(long, env = "RINGKV_ADDR", default_value = "127.0.0.1:7400", value_delimiter = ',', global = true)]
    addr: Vec<String>,
    /// Directory written by `ringkv certs init`.
    #[arg(long, env = "RINGKV_CERTS", default_value = "certs", global = true)]
    certs: PathBuf,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    timeout: Duration,
    #[arg(long, value_enum, default_value_t = Level::Quorum, global = true)]
    consistency: Level,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Level {
    One,
    Quorum,
    All,
}

impl From<Level> for Consistency {
    fn from(level: Level) -> Consistency {
        match level {
            Level::One => Consistency::One,
            Level::Quorum => Consistency::Quorum,
            Level::All => Consistency::All,
        }
    }
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    ringkv_core::parse_duration(text)
}

/// Exit codes: 0 found/done, 1 key not found (or nothing to do), 2 error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // Like any Unix tool, stop quietly when the reader of our output
        // goes away (`ringkv status | head`) instead of panicking on a broken
        // pipe. Not for `serve`: a node must outlive whatever reads its logs.
        // SAFETY: restoring a signal's default disposition before any thread
        // is started has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Certs(cmd) => commands::certs(cmd),
            Command::Bench(args) => bench::run(args).await,
            other => commands::client_command(other).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
