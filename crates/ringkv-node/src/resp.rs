//! The RESP port: Redis clients (`redis-cli`, redis-py, any language's
//! client) talk to any node, which coordinates each command exactly as it
//! coordinates a QUIC client's request, at consistency `quorum`.
//!
//! One task per connection reads into a buffer, answers every whole command
//! in it in order (pipelining), and writes the replies together. What a
//! connection holds is bounded: the decoder refuses lengths past the node's
//! key and value limits when their headers arrive, and a client that does
//! not read its replies stops being read (the writes wait), so it holds one
//! batch of replies and nothing more. A protocol error gets Redis's reply
//! and closes that connection only.
//!
//! Commands that read and then write (`INCR`, `SET … NX`, …) go to the
//! key's leading replica through `Host::update`; the rest map onto the
//! store's operations.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringkv_core::scan::Cursor;
use ringkv_core::update::{Answer, ExpireWhen, Expiry, Update, When};
use ringkv_core::{KeyTtl, KvError, KvStore, PartitionId, SplitMix64};
use ringkv_net::wire::NodeStatus;
use ringkv_resp::{Decoder, Limits, Protocol, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::NodeConfig;
use crate::metrics::{Metrics, Op, Outcome};

/// What the RESP port needs of a node: the store's operations, as the
/// embedded node serves them (at consistency `quorum`, like a QUIC client's
/// requests), and a little of its state. `ops.rs` implements it for
/// `Node`, so this module imports nothing of the node's own.
pub(crate) trait Host: KvStore + Clone + 'static {
    fn config(&self) -> &NodeConfig;
    fn clustered(&self) -> bool;
    fn now_ms(&self) -> u64;
    fn shutdown_signal(&self) -> watch::Receiver<bool>;
    /// Refused while the node cannot be trusted to serve data (starting, or
    /// just back from a pause).
    fn standing(&self) -> Result<(), KvError>;
    fn metrics(&self) -> Option<&Metrics>;
    /// A read-modify-write, run at the key's leading replica.
    fn update(&self, key: Bytes, update: Update) -> impl Future<Output = Result<Answer, KvError>> + Send;
    /// Live keys of the whole cluster from `from` on (`Node::scan`), and
    /// where the walk resumes.
    fn scan(
        &self,
        from: Cursor,
        count: usize,
    ) -> impl Future<Output = Result<(Option<Cursor>, Vec<Bytes>), KvError>> + Send;
    /// `maxmemory` now, in bytes (0: no bound).
    fn memory_limit(&self) -> u64;
    /// `CONFIG SET maxmemory`: this node's bound from now on, until it
    /// restarts (the config file is not rewritten).
    fn set_memory_limit(&self, bytes: u64);
    /// What `ringkv status` shows, for `INFO`.
    fn status(&self) -> impl Future<Output = Result<NodeStatus, KvError>> + Send;
}

/// Replies are written once this many bytes of them are waiting, even if
/// more commands are in the buffer.
const WRITE_BATCH: usize = 64 * 1024;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the node shuts down, then closes them all.
/// With `tls`, every connection is a TLS session first (`resp_tls`).
pub(crate) async fn serve(node: impl Host, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let mut shutdown = node.shutdown_signal();
    let permits = Arc::new(Semaphore::new(node.config().max_connections));
    let mut connections = JoinSet::new();
    let mut ids = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut stream, peer)) => {
                    while connections.try_join_next().is_some() {}
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // Said in clear text even on a TLS port: the client
                        // is turned away either way.
                        let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                        continue;
                    };
                    ids += 1;
                    let (node, tls) = (node.clone(), tls.clone());
                    let clients = permits.clone();
                    connections.spawn(async move {
                        let _permit = permit;
                        let password = node.config().resp_password.as_ref().map(|p| p.0.as_bytes().to_vec());
                        let mut connection = Connection::new(ids, password, clients, node.now_ms());
                        connection.local = stream.local_addr().ok();
                        connection.peer = Some(peer);
                        let ended = match tls {
                            None => connection.run(&node, stream).await,
                            Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                                Ok(Ok(stream)) => connection.run(&node, stream).await,
                                Ok(Err(e)) => Err(e),
                                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
                            },
                        };
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "RESP connection ended");
                        }
                    });
                }
                // Out of file descriptors, say: the listener is fine, the
                // next accept may succeed once connections close.
                Err(e) => {
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // The guard `wait_for` returns is not `Send`: dropped inside.
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break,
        }
    }
    connections.shutdown().await;
}

/// A connection's state: what it negotiated.
struct Connection {
    id: u64,
    protocol: Protocol,
    name: Option<Bytes>,
    /// The node's `resp_password`, if it has one.
    password: Option<Vec<u8>>,
    authenticated: bool,
    /// The node's connection permits: those taken are the clients `INFO`
    /// counts.
    clients: Arc<Semaphore>,
    /// The address the client reached: what `CLUSTER SLOTS` tells it to
    /// use for every slot.
    local: Option<std::net::SocketAddr>,
    /// The client's address, for `CLIENT INFO`.
    peer: Option<std::net::SocketAddr>,
    /// Where `RANDOMKEY` starts looking.
    rng: SplitMix64,
}

/// What a command does to its connection besides its reply.
enum After {
    Continue,
    Close,
}

impl Connection {
    fn new(id: u64, password: Option<Vec<u8>>, clients: Arc<Semaphore>, seed: u64) -> Connection {
        let authenticated = password.is_none();
        Connection {
            id,
            protocol: Protocol::Resp2,
            name: None,
            password,
            authenticated,
            clients,
            local: None,
            peer: None,
            rng: SplitMix64::new(seed ^ id.rotate_left(32)),
        }
    }

    /// Serves the connection until the client leaves; `stream` is the TCP
    /// connection, or a TLS session over it.
    async fn run(&mut self, node: &impl Host, mut stream: impl AsyncRead + AsyncWrite + Unpin) -> std::io::Result<()> {
        let limits = node.config().limits();
        // An argument is a key or a value; a command, a key and a value
        // with room for its name and options.
        let authenticated = Limits {
            max_bulk: limits.max_key_bytes.max(limits.max_value_bytes),
            max_args: 1024 * 1024,
            max_command: limits.max_key_bytes + limits.max_value_bytes + ringkv_resp::MAX_LINE,
        };
        // What a client may send before it authenticates, as in Redis: a
        // stranger cannot make the node hold a large command.
        let stranger = Limits { max_bulk: 16 * 1024, max_args: 10, max_command: 64 * 1024 };
        let mut decoder = Decoder::new(if self.authenticated { authenticated } else { stranger });
        let (mut input, mut output) = (BytesMut::with_capacity(16 * 1024), BytesMut::new());
        loop {
            loop {
                match decoder.decode(&mut input) {
                    Ok(Some(args)) => {
                        let was = self.authenticated;
                        let counted = node
                            .metrics()
                            .map(|metrics| (metrics, Op::of_command(&args[0]), tokio::time::Instant::now()));
                        let (reply, outcome, after) = self.execute(node, args).await;
                        if let Some((metrics, op, started)) = counted {
                            metrics.request(op, crate::metrics::Protocol::Resp, outcome, started.elapsed());
                        }
                        if self.authenticated != was {
                            decoder.set_limits(if self.authenticated { authenticated } else { stranger });
                        }
                        reply.encode(self.protocol, &mut output);
                        if let After::Close = after {
                            return send(&mut stream, &mut output).await;
                        }
                        if output.len() >= WRITE_BATCH {
                            send(&mut stream, &mut output).await?;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        e.reply().encode(self.protocol, &mut output);
                        return send(&mut stream, &mut output).await;
                    }
                }
            }
            if !output.is_empty() {
                send(&mut stream, &mut output).await?;
            }
            if stream.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
        }
    }

    async fn execute(&mut self, node: &impl Host, args: Vec<Bytes>) -> (Reply, Outcome, After) {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let reply = match name.as_str() {
            "quit" => return (Reply::ok(), Outcome::Ok, After::Close),
            // Back to a new connection's state: RESP2, no name, and not
            // authenticated if the node has a password.
            "reset" => match &args[1..] {
                [] => {
                    self.protocol = Protocol::Resp2;
                    self.name = None;
                    self.authenticated = self.password.is_none();
                    Ok(Reply::Status("RESET".into()))
                }
                _ => Err(arity(&name)),
            },
            "ping" => match &args[1..] {
                [] => Ok(Reply::Status("PONG".into())),
                [message] => Ok(Reply::Bulk(message.clone())),
                _ => Err(arity(&name)),
            },
            "echo" => match &args[1..] {
                [message] => Ok(Reply::Bulk(message.clone())),
                _ => Err(arity(&name)),
            },
            "hello" => self.hello(node, &args[1..]),
            "auth" => self.auth(&args[1..]),
            _ if !self.authenticated => Err(error("NOAUTH Authentication required.")),
            "select" => match &args[1..] {
                [db] => match integer(db) {
                    Ok(0) => Ok(Reply::ok()),
                    Ok(_) => Err(error("ERR DB index is out of range")),
                    Err(e) => Err(e),
                },
                _ => Err(arity(&name)),
            },
            "client" => self.client(&args[1..]),
            "time" => match &args[1..] {
                [] => {
                    let micros = node.now_ms() * 1_000;
                    let text = |n: u64| Reply::Bulk(Bytes::from(n.to_string()));
                    Ok(Reply::Array(vec![text(micros / 1_000_000), text(micros % 1_000_000)]))
                }
                _ => Err(arity(&name)),
            },
            "config" => config(node, &args[1..]),
            "command" => command(&args[1..]),
            "cluster" => cluster(node, &args[1..], self.local),
            "info" => {
                let connected = node.config().max_connections - self.clients.available_permits();
                info(node, &args[1..], connected).await
            }
            other => {
                if let Some(reply) = data(node, other, &args[1..]).await {
                    reply
                } else if let Some(reply) = update(node, other, &args[1..]).await {
                    reply
                } else if let Some(reply) = keyspace(node, other, &args[1..], self.rng.next_u64()).await {
                    reply
                } else {
                    Err(unknown(&args))
                }
            }
        };
        match reply {
            Ok(reply) => (reply, Outcome::Ok, After::Continue),
            Err(refused) => (refused.reply, refused.outcome, After::Continue),
        }
    }

    /// `HELLO [protover [SETNAME name]]`: switches the protocol and
    /// describes the server, as a map.
    fn hello(&mut self, node: &impl Host, args: &[Bytes]) -> Result<Reply, Refused> {
        let mut protocol = self.protocol;
        let mut rest = args;
        if let [version, more @ ..] = args {
            protocol = match integer(version) {
                Ok(2) => Protocol::Resp2,
                Ok(3) => Protocol::Resp3,
                _ => return Err(error("NOPROTO unsupported protocol version")),
            };
            rest = more;
        }
        let mut name = None;
        while let [option, more @ ..] = rest {
            match (option.to_ascii_lowercase().as_slice(), more) {
                (b"setname", [value, more @ ..]) => {
                    name = Some(value.clone());
                    rest = more;
                }
                (b"auth", [user, password, more @ ..]) => {
                    self.auth(&[user.clone(), password.clone()])?;
                    rest = more;
                }
                _ => return Err(error(&format!("ERR Syntax error in HELLO option '{}'", lossy(option)))),
            }
        }
        if !self.authenticated {
            return Err(error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> \
                 AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
                 version at the same time",
            ));
        }
        self.protocol = protocol;
        if name.is_some() {
            self.name = name;
        }
        let version = match protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        let field = |key: &str, value: Reply| (Reply::Bulk(Bytes::copy_from_slice(key.as_bytes())), value);
        let text = |value: &str| Reply::Bulk(Bytes::copy_from_slice(value.as_bytes()));
        let mode = if node.clustered() { "cluster" } else { "standalone" };
        Ok(Reply::Map(vec![
            field("server", text("ringkv")),
            field("version", text(env!("CARGO_PKG_VERSION"))),
            field("proto", Reply::Integer(version)),
            field("id", Reply::Integer(self.id as i64)),
            field("mode", text(mode)),
            field("role", text("master")),
            field("modules", Reply::Array(Vec::new())),
        ]))
    }

    /// `AUTH [user] password`, as Redis with only its `default` user: the
    /// password is `resp_password`, or anything if there is none.
    fn auth(&mut self, args: &[Bytes]) -> Result<Reply, Refused> {
        let wrong = || error("WRONGPASS invalid username-password pair or user is disabled.");
        let given = match args {
            [password] => password,
            [user, password] if &user[..] == b"default" => password,
            [_, _] => return Err(wrong()),
            _ => return Err(arity("auth")),
        };
        let Some(expected) = &self.password else {
            return match args {
                [_] => Err(error(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure \
                     your configuration is correct?",
                )),
                _ => Ok(Reply::ok()),
            };
        };
        if !same_secret(given, expected) {
            return Err(wrong());
        }
        self.authenticated = true;
        Ok(Reply::ok())
    }

    /// `CLIENT SETNAME | GETNAME | ID | SETINFO`.
    fn client(&mut self, args: &[Bytes]) -> Result<Reply, Refused> {
        let Some(sub) = args.first() else { return Err(arity("client")) };
        match (sub.to_ascii_lowercase().as_slice(), &args[1..]) {
            (b"setname", [name]) => {
                if name.iter().any(|b| *b <= b' ' || *b > b'~') {
                    return Err(error("ERR Client names cannot contain spaces, newlines or special characters."));
                }
                self.name = (!name.is_empty()).then(|| name.clone());
                Ok(Reply::ok())
            }
            (b"getname", []) => Ok(self.name.clone().map_or(Reply::Null, Reply::Bulk)),
            (b"id", []) => Ok(Reply::Integer(self.id as i64)),
            // The fields of Redis's line that mean something here.
            (b"info", []) => {
                let addr = |a: Option<std::net::SocketAddr>| a.map_or_else(String::new, |a| a.to_string());
                let name = self.name.as_deref().map(lossy).unwrap_or_default();
                let resp = match self.protocol {
                    Protocol::Resp2 => 2,
                    Protocol::Resp3 => 3,
                };
                let line = format!(
                    "id={} addr={} laddr={} name={name} db=0 resp={resp}\n",
                    self.id,
                    addr(self.peer),
                    addr(self.local)
                );
                Ok(Reply::Bulk(Bytes::from(line)))
            }
            // Client libraries announce themselves; nothing uses it here.
            (b"setinfo", [_, _]) => Ok(Reply::ok()),
            (b"setname" | b"getname" | b"id" | b"setinfo" | b"info", _) => {
                Err(error(&format!("ERR wrong number of arguments for 'client|{}' command", lossy(sub).to_lowercase())))
            }
            _ => Err(error(&format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", lossy(sub)))),
        }
    }
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name…`: the table client
/// libraries read. `COMMAND DOCS` is refused: `redis-cli` then uses its
/// own copy of Redis's documentation of these commands.
fn command(args: &[Bytes]) -> Result<Reply, Refused> {
    use ringkv_resp::commands::{COMMANDS, find};
    let Some(sub) = args.first() else { return Ok(Reply::Array(COMMANDS.iter().map(|c| c.reply()).collect())) };
    match (sub.to_ascii_lowercase().as_slice(), &args[1..]) {
        (b"count", []) => Ok(Reply::Integer(COMMANDS.len() as i64)),
        (b"info", []) => Ok(Reply::Array(COMMANDS.iter().map(|c| c.reply()).collect())),
        (b"info", names) => {
            Ok(Reply::Array(names.iter().map(|n| find(n).map_or(Reply::Null, |c| c.reply())).collect()))
        }
        (b"count", _) => Err(error("ERR wrong number of arguments for 'command|count' command")),
        _ => Err(error(&format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", lossy(sub)))),
    }
}

/// `CLUSTER INFO | SLOTS | SHARDS | NODES | KEYSLOT | MYID`: ringkv as one
/// shard holding every slot, served by the node the client reached, since
/// every node coordinates any key. Cluster clients (`redis-cli -c`,
/// redis-py's `RedisCluster`) then send everything here and are never
/// redirected.
fn cluster(node: &impl Host, args: &[Bytes], local: Option<std::net::SocketAddr>) -> Result<Reply, Refused> {
    let Some(sub) = args.first() else { return Err(arity("cluster")) };
    let addr = local.or(node.config().resp_listen).unwrap_or_else(|| ([127, 0, 0, 1], 6379).into());
    let (ip, port) = (addr.ip().to_string(), i64::from(addr.port()));
    let id = cluster_id(&node.config().node_id);
    let text = |s: &str| Reply::Bulk(Bytes::from(s.to_string()));
    let last = i64::from(ringkv_resp::cluster::SLOTS - 1);
    match (sub.to_ascii_lowercase().as_slice(), &args[1..]) {
        (b"info", []) => Ok(text(
            "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\n\
             cluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
        )),
        (b"slots", []) => Ok(Reply::Array(vec![Reply::Array(vec![
            Reply::Integer(0),
            Reply::Integer(last),
            Reply::Array(vec![text(&ip), Reply::Integer(port), text(&id)]),
        ])])),
        (b"shards", []) => {
            let node_fields = [
                ("id", text(&id)),
                ("port", Reply::Integer(port)),
                ("ip", text(&ip)),
                ("endpoint", text(&ip)),
                ("role", text("master")),
                ("replication-offset", Reply::Integer(0)),
                ("health", text("online")),
            ];
            let map = |fields: Vec<(&str, Reply)>| Reply::Map(fields.into_iter().map(|(k, v)| (text(k), v)).collect());
            Ok(Reply::Array(vec![map(vec![
                ("slots", Reply::Array(vec![Reply::Integer(0), Reply::Integer(last)])),
                ("nodes", Reply::Array(vec![map(node_fields.into())])),
            ])]))
        }
        (b"nodes", []) => Ok(text(&format!("{id} {ip}:{port}@{port} myself,master - 0 0 1 connected 0-{last}\n"))),
        (b"myid", []) => Ok(text(&id)),
        (b"keyslot", [key]) => Ok(Reply::Integer(i64::from(ringkv_resp::cluster::key_slot(key)))),
        (b"info" | b"slots" | b"shards" | b"nodes" | b"myid" | b"keyslot", _) => {
            Err(error(&format!("ERR wrong number of arguments for 'cluster|{}' command", lossy(sub).to_lowercase())))
        }
        _ => Err(error(&format!("ERR unknown subcommand '{}'. Try CLUSTER HELP.", lossy(sub)))),
    }
}

/// A node's cluster id as Redis writes them, 40 hex digits, derived from
/// its node id so that it stays the same across restarts.
fn cluster_id(node_id: &str) -> String {
    let tag = ringkv_core::NodeTag::from_name(node_id).0;
    let more = ringkv_core::NodeTag::from_name(&format!("{node_id}#cluster")).0;
    format!("{tag:016x}{more:016x}{:08x}", tag >> 32)
}

/// `INFO [section…]`: Redis's sections that mean something here, with
/// ringkv's own fields beside Redis's. `redis_version` is the Redis whose
/// commands and replies ringkv follows. The keyspace counts the live keys
/// this node stores as a replica, not the cluster's.
async fn info(node: &impl Host, args: &[Bytes], connected: usize) -> Result<Reply, Refused> {
    let status = node.status().await.map_err(kv_error)?;
    let config = node.config();
    let wanted = |section: &str| {
        args.is_empty()
            || args.iter().any(|a| {
                a.eq_ignore_ascii_case(section.as_bytes())
                    || [&b"all"[..], b"default", b"everything"].iter().any(|all| a.eq_ignore_ascii_case(all))
            })
    };
    let mode = if node.clustered() { "cluster" } else { "standalone" };
    // As Redis prints sizes: 0B, 867.11K, 1.00M.
    let human = |bytes: u64| match bytes {
        0..1024 => format!("{bytes}B"),
        _ => {
            let (unit, size) = [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)]
                .into_iter()
                .find(|(_, size)| bytes >= *size)
                .unwrap_or(("K", 1 << 10));
            format!("{:.2}{unit}", bytes as f64 / size as f64)
        }
    };
    let mut sections: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    let field = |k: &str, v: String| (k.to_string(), v);
    sections.push((
        "Server",
        vec![
            field("redis_version", "7.2.0".into()),
            field("ringkv_version", env!("CARGO_PKG_VERSION").into()),
            field("redis_mode", "standalone".into()),
            field("ringkv_mode", mode.into()),
            field("ringkv_node_id", status.node_id.clone()),
            field("process_id", std::process::id().to_string()),
            field("tcp_port", config.resp_listen.map_or(0, |a| a.port()).to_string()),
        ],
    ));
    sections.push((
        "Clients",
        vec![
            field("connected_clients", connected.to_string()),
            field("maxclients", config.max_connections.to_string()),
        ],
    ));
    sections.push((
        "Memory",
        vec![
            field("used_memory", status.memory.used.to_string()),
            field("used_memory_human", human(status.memory.used)),
            field("maxmemory", status.memory.limit.to_string()),
            field("maxmemory_human", human(status.memory.limit)),
            field("maxmemory_policy", status.memory.policy.clone()),
        ],
    ));
    let appendonly = matches!(config.persistence, crate::Persistence::Wal);
    sections.push(("Persistence", vec![field("aof_enabled", u8::from(appendonly).to_string())]));
    sections.push((
        "Stats",
        vec![
            field("evicted_keys", status.memory.evictions.to_string()),
            field("ringkv_oom_refusals", status.memory.refused.to_string()),
            field("ringkv_hints_held", status.hints.iter().map(|(_, n)| n).sum::<u64>().to_string()),
            field("ringkv_hints_dropped", status.hints_dropped.to_string()),
            field("ringkv_repair_passes", status.repair.passes.to_string()),
        ],
    ));
    sections.push((
        "Cluster",
        vec![
            field("cluster_enabled", "1".into()),
            field("ringkv_member_status", status.status.as_str().into()),
            field("ringkv_partitions_owned", status.partitions_owned.to_string()),
        ],
    ));
    let keyspace = match status.values {
        0 => Vec::new(),
        keys => vec![field("db0", format!("keys={keys},expires=0,avg_ttl=0"))],
    };
    sections.push(("Keyspace", keyspace));
    let mut text = String::new();
    for (name, fields) in sections.into_iter().filter(|(name, _)| wanted(name)) {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        text.push_str(&format!("# {name}\r\n"));
        for (k, v) in fields {
            text.push_str(&format!("{k}:{v}\r\n"));
        }
    }
    Ok(Reply::Bulk(Bytes::from(text)))
}

/// `CONFIG GET pattern…`: the settings Redis clients and tools ask about
/// (`redis-benchmark` asks for `save` and `appendonly` before it starts), as
/// Redis names them, matched case-insensitively with Redis's glob rules.
/// `CONFIG SET` changes what ringkv can change while running: `maxmemory`,
/// on this node, until it restarts.
fn config(node: &impl Host, args: &[Bytes]) -> Result<Reply, Refused> {
    let Some(sub) = args.first() else { return Err(arity("config")) };
    match (sub.to_ascii_lowercase().as_slice(), &args[1..]) {
        (b"get", patterns @ [_, ..]) => {
            let config = node.config();
            let appendonly = match config.persistence {
                crate::Persistence::Wal => "yes",
                crate::Persistence::None => "no",
            };
            let settings = [
                ("maxmemory", node.memory_limit().to_string()),
                ("maxmemory-policy", config.maxmemory_policy.to_string()),
                ("appendonly", appendonly.to_string()),
                ("appendfsync", config.fsync.to_string()),
                // RDB snapshots in Redis's sense: none (ringkv's own
                // snapshots compact its log, as AOF rewrites do).
                ("save", String::new()),
                ("databases", "1".to_string()),
            ];
            let pairs = settings
                .into_iter()
                .filter(|(name, _)| patterns.iter().any(|p| glob(&p.to_ascii_lowercase(), name.as_bytes())))
                .map(|(name, value)| (Reply::Bulk(Bytes::from(name)), Reply::Bulk(Bytes::from(value))))
                .collect();
            Ok(Reply::Map(pairs))
        }
        (b"set", pairs @ [_, _, ..]) if pairs.len() % 2 == 0 => {
            // All checked before any is applied, as Redis does.
            let mut limit = None;
            for pair in pairs.chunks(2) {
                let name = pair[0].to_ascii_lowercase();
                let failed = |why: &str| {
                    error(&format!("ERR CONFIG SET failed (possibly related to argument '{}') - {why}", lossy(&name)))
                };
                match name.as_slice() {
                    b"maxmemory" => {
                        let text = std::str::from_utf8(&pair[1]).unwrap_or("");
                        let bytes = ringkv_core::parse_size(text).map_err(|e| failed(&e))?;
                        if bytes != 0 && bytes < crate::config::MIN_MAXMEMORY {
                            return Err(failed("maxmemory must be 0 (no limit) or at least 1mb"));
                        }
                        limit = Some(bytes);
                    }
                    b"maxmemory-policy" | b"appendonly" | b"appendfsync" | b"save" | b"databases" => {
                        return Err(failed("ringkv cannot change it while running; set it in the config file"));
                    }
                    _ => {
                        return Err(error(&format!(
                            "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                            lossy(&pair[0])
                        )));
                    }
                }
            }
            if let Some(bytes) = limit {
                node.set_memory_limit(bytes);
            }
            Ok(Reply::ok())
        }
        (b"get" | b"set", _) => {
            Err(error(&format!("ERR wrong number of arguments for 'config|{}' command", lossy(sub).to_lowercase())))
        }
        _ => Err(error(&format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", lossy(sub)))),
    }
}

/// Redis's glob (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]` and `\`
/// escapes. Backtracks only to the last `*`, so a hostile pattern
/// (`*a*a*a*…b`) costs the length of the pattern times the text's, never
/// an exponential walk.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // After the last `*` seen: where the pattern resumes, and the text
    // position that `*` has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p + 1, t));
            p += 1;
            continue;
        }
        if let Some(next) = glob_one(pattern, p, text[t]) {
            (p, t) = (next, t + 1);
            continue;
        }
        let Some((after, swallowed)) = star else { return false };
        star = Some((after, swallowed + 1));
        (p, t) = (after, swallowed + 1);
    }
    pattern[p.min(pattern.len())..].iter().all(|c| *c == b'*')
}

/// Whether the pattern element at `p` (not `*`) matches `c`, and if so
/// where the next element starts.
fn glob_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern.get(p)? {
        b'?' => Some(p + 1),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            loop {
                match &pattern[i.min(pattern.len())..] {
                    [] => return None,
                    [b']', ..] => return (matched != negate).then_some(i + 1),
                    [b'\\', e, ..] => {
                        matched |= *e == c;
                        i += 2;
                    }
                    [a, b'-', z, ..] if *z != b']' => {
                        let (lo, hi) = if a <= z { (*a, *z) } else { (*z, *a) };
                        matched |= (lo..=hi).contains(&c);
                        i += 3;
                    }
                    [e, ..] => {
                        matched |= *e == c;
                        i += 1;
                    }
                }
            }
        }
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        literal => (*literal == c).then_some(p + 1),
    }
}

/// Writes the replies waiting in `output` and empties it. Flushed, since a
/// TLS session holds what it has not yet sealed into records.
async fn send(stream: &mut (impl AsyncWrite + Unpin), output: &mut BytesMut) -> std::io::Result<()> {
    stream.write_all(output).await?;
    stream.flush().await?;
    output.clear();
    Ok(())
}

/// The commands that read or change data, or `None` for a name this port
/// does not know.
async fn data(node: &impl Host, name: &str, args: &[Bytes]) -> Option<Result<Reply, Refused>> {
    if !matches!(
        name,
        "get"
            | "set"
            | "setex"
            | "psetex"
            | "del"
            | "unlink"
            | "exists"
            | "ttl"
            | "pttl"
            | "expire"
            | "pexpire"
            | "persist"
            | "flushall"
            | "flushdb"
            | "mget"
            | "mset"
            | "strlen"
            | "getrange"
            | "type"
            | "expireat"
            | "pexpireat"
    ) {
        return None;
    }
    if let Err(e) = node.standing() {
        return Some(Err(kv_error(e)));
    }
    let reply = match (name, args) {
        ("get", [key]) => node.get(key.clone()).await.map(|v| v.map_or(Reply::Null, Reply::Bulk)).map_err(kv_error),
        ("set", [key, value, options @ ..]) => match set_options(options, node.now_ms()) {
            // A plain SET replaces whatever is there: a write, no read.
            Ok(SetOptions { expiry, when: When::Always, get: false }) if expiry != Expiry::Keep => {
                let now = node.now_ms();
                let written = match expiry {
                    Expiry::At(at) if at > now => {
                        node.put_with_ttl(key.clone(), value.clone(), Duration::from_millis(at - now)).await
                    }
                    // Redis writes the value and expires it at once.
                    Expiry::At(_) => node.delete(key.clone()).await.map(|_| ()),
                    _ => node.put(key.clone(), value.clone()).await,
                };
                written.map(|()| Reply::ok()).map_err(kv_error)
            }
            Ok(SetOptions { expiry, when, get }) => {
                let update = Update::Set { value: value.clone(), expiry, when, get };
                node.update(key.clone(), update).await.map(answer).map_err(kv_error)
            }
            Err(e) => Err(e),
        },
        ("setex" | "psetex", [key, amount, value]) => {
            match ttl_of(amount, if name == "setex" { 1_000 } else { 1 }, name) {
                Ok(ttl) => {
                    node.put_with_ttl(key.clone(), value.clone(), ttl).await.map(|()| Reply::ok()).map_err(kv_error)
                }
                Err(e) => Err(e),
            }
        }
        ("del" | "unlink", keys @ [_, ..]) => count(keys, |key| node.delete(key)).await,
        ("exists", keys @ [_, ..]) => count(keys, |key| node.exists(key)).await,
        ("ttl" | "pttl", [key]) => node.ttl(key.clone()).await.map_err(kv_error).map(|ttl| {
            Reply::Integer(match ttl {
                KeyTtl::Missing => -2,
                KeyTtl::Persistent => -1,
                // Redis rounds the seconds to the nearest.
                KeyTtl::Expires(left) if name == "ttl" => ((left.as_millis() + 500) / 1000) as i64,
                KeyTtl::Expires(left) => left.as_millis() as i64,
            })
        }),
        ("expire" | "pexpire", [key, amount]) => {
            let unit = if name == "expire" { 1_000 } else { 1 };
            match integer(amount) {
                // Redis deletes a key given an expiry in the past.
                Ok(n) if n <= 0 => node.delete(key.clone()).await.map(|d| Reply::Integer(d.into())).map_err(kv_error),
                Ok(n) => match n.checked_mul(unit) {
                    Some(ms) => node
                        .expire(key.clone(), Duration::from_millis(ms as u64))
                        .await
                        .map(|set| Reply::Integer(set.into()))
                        .map_err(kv_error),
                    None => Err(invalid_expire(name)),
                },
                Err(e) => Err(e),
            }
        }
        ("expire" | "pexpire", [key, amount, options @ ..]) => expire_if(node, name, key, amount, options).await,
        ("expireat" | "pexpireat", [key, at]) => {
            let unit = if name == "expireat" { 1_000 } else { 1 };
            match integer(at).map(|at| at.checked_mul(unit)) {
                Ok(Some(at)) => {
                    let now = node.now_ms() as i64;
                    if at <= now {
                        node.delete(key.clone()).await.map(|d| Reply::Integer(d.into())).map_err(kv_error)
                    } else {
                        node.expire(key.clone(), Duration::from_millis((at - now) as u64))
                            .await
                            .map(|s| Reply::Integer(s.into()))
                            .map_err(kv_error)
                    }
                }
                Ok(None) => Err(invalid_expire(name)),
                Err(e) => Err(e),
            }
        }
        ("expireat" | "pexpireat", [key, at, options @ ..]) => expire_if(node, name, key, at, options).await,
        ("mget", keys @ [_, ..]) => {
            let reads = keys.iter().map(|key| node.get(key.clone()));
            let values = futures_util::future::join_all(reads).await;
            values
                .into_iter()
                .map(|v| v.map(|v| v.map_or(Reply::Null, Reply::Bulk)))
                .collect::<Result<Vec<_>, _>>()
                .map(Reply::Array)
                .map_err(kv_error)
        }
        ("mset", pairs @ [_, _, ..]) if pairs.len() % 2 == 0 => {
            let writes = pairs.chunks(2).map(|kv| node.put(kv[0].clone(), kv[1].clone()));
            let written = futures_util::future::join_all(writes).await;
            written.into_iter().collect::<Result<Vec<()>, _>>().map(|_| Reply::ok()).map_err(kv_error)
        }
        ("strlen", [key]) => {
            node.get(key.clone()).await.map(|v| Reply::Integer(v.map_or(0, |v| v.len() as i64))).map_err(kv_error)
        }
        ("getrange", [key, start, end]) => match (integer(start), integer(end)) {
            (Ok(start), Ok(end)) => node
                .get(key.clone())
                .await
                .map(|v| Reply::Bulk(v.map_or_else(Bytes::new, |v| range(&v, start, end))))
                .map_err(kv_error),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        ("type", [key]) => node
            .exists(key.clone())
            .await
            .map(|found| Reply::Status(if found { "string" } else { "none" }.into()))
            .map_err(kv_error),
        ("persist", [key]) => node.persist(key.clone()).await.map(|p| Reply::Integer(p.into())).map_err(kv_error),
        ("flushall" | "flushdb", []) => node.clear().await.map(|()| Reply::ok()).map_err(kv_error),
        ("flushall" | "flushdb", [mode]) if matches!(mode.to_ascii_lowercase().as_slice(), b"sync" | b"async") => {
            node.clear().await.map(|()| Reply::ok()).map_err(kv_error)
        }
        ("flushall" | "flushdb", _) => Err(error("ERR syntax error")),
        _ => Err(arity(name)),
    };
    Some(reply)
}

/// How many of `keys` `op` answers true for, one key after another (so
/// that `DEL k k` counts `k` once, as in Redis).
async fn count<F>(keys: &[Bytes], op: impl Fn(Bytes) -> F) -> Result<Reply, Refused>
where
    F: std::future::Future<Output = Result<bool, KvError>>,
{
    let mut n = 0;
    for key in keys {
        n += i64::from(op(key.clone()).await.map_err(kv_error)?);
    }
    Ok(Reply::Integer(n))
}

/// `GETRANGE`'s slice: `start` and `end` inclusive, negative ones counted
/// from the end, clamped to the value, empty if they cross.
fn range(value: &Bytes, start: i64, end: i64) -> Bytes {
    let len = value.len() as i64;
    let at = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (at(start), at(end).min(len - 1));
    if len == 0 || start > end {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

/// `SET`'s options, in any order, as Redis takes them: at most one of
/// `NX` and `XX`, at most one of `EX`, `PX`, `EXAT`, `PXAT` and `KEEPTTL`.
struct SetOptions {
    expiry: Expiry,
    when: When,
    get: bool,
}

fn set_options(options: &[Bytes], now_ms: u64) -> Result<SetOptions, Refused> {
    let mut set = SetOptions { expiry: Expiry::Clear, when: When::Always, get: false };
    let mut timed = false;
    let mut rest = options;
    while let [option, more @ ..] = rest {
        rest = more;
        match option.to_ascii_lowercase().as_slice() {
            b"nx" if set.when != When::Present => set.when = When::Missing,
            b"xx" if set.when != When::Missing => set.when = When::Present,
            b"get" => set.get = true,
            b"keepttl" if !timed => (set.expiry, timed) = (Expiry::Keep, true),
            unit @ (b"ex" | b"px" | b"exat" | b"pxat") if !timed => {
                let [amount, more @ ..] = rest else { return Err(error("ERR syntax error")) };
                rest = more;
                set.expiry = Expiry::At(expiry_at(unit, amount, now_ms, "set")?);
                timed = true;
            }
            _ => return Err(error("ERR syntax error")),
        }
    }
    Ok(set)
}

/// The instant, in wall-clock milliseconds, that `EX`/`PX` (from now) or
/// `EXAT`/`PXAT` (absolute) `amount` names; Redis refuses amounts that are
/// not positive or overflow.
fn expiry_at(unit: &[u8], amount: &Bytes, now_ms: u64, command: &str) -> Result<u64, Refused> {
    let n = integer(amount)?;
    let at = match unit {
        b"ex" => n.checked_mul(1_000).and_then(|ms| ms.checked_add(now_ms as i64)),
        b"px" => n.checked_add(now_ms as i64),
        b"exat" => n.checked_mul(1_000),
        _ => Some(n),
    };
    match at {
        Some(at) if n > 0 => Ok(at as u64),
        _ => Err(invalid_expire(command)),
    }
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` with `NX`, `XX`, `GT` or
/// `LT`: a read-modify-write of the expiry at the key's leader.
async fn expire_if(
    node: &impl Host,
    name: &str,
    key: &Bytes,
    amount: &Bytes,
    options: &[Bytes],
) -> Result<Reply, Refused> {
    let n = integer(amount)?;
    let now = node.now_ms() as i64;
    let at = match name {
        "expire" => n.checked_mul(1_000).and_then(|ms| ms.checked_add(now)),
        "pexpire" => n.checked_add(now),
        "expireat" => n.checked_mul(1_000),
        _ => Some(n),
    };
    let at = at.ok_or_else(|| invalid_expire(name))?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        match option.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => return Err(error(&format!("ERR Unsupported option {}", lossy(option)))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(error("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(error("ERR GT and LT options at the same time are not compatible"));
    }
    let when = match (nx, xx, gt, lt) {
        (true, ..) => ExpireWhen::Unset,
        (_, _, true, _) => ExpireWhen::Later,
        (_, true, _, true) => ExpireWhen::SetEarlier,
        (_, _, _, true) => ExpireWhen::Earlier,
        (_, true, _, _) => ExpireWhen::Set,
        _ => ExpireWhen::Always,
    };
    let update = Update::Expire { at: at.max(0) as u64, when };
    node.update(key.clone(), update).await.map(answer).map_err(kv_error)
}

/// `GETEX`'s options: none, `PERSIST`, or one of `EX`, `PX`, `EXAT`, `PXAT`.
fn getex_expiry(options: &[Bytes], now_ms: u64) -> Result<Expiry, Refused> {
    match options {
        [] => Ok(Expiry::Keep),
        [option] if option.eq_ignore_ascii_case(b"persist") => Ok(Expiry::Clear),
        [unit, amount] => match unit.to_ascii_lowercase().as_slice() {
            unit @ (b"ex" | b"px" | b"exat" | b"pxat") => Ok(Expiry::At(expiry_at(unit, amount, now_ms, "getex")?)),
            _ => Err(error("ERR syntax error")),
        },
        _ => Err(error("ERR syntax error")),
    }
}

/// The commands that read and then write, run at the key's leading replica
/// (`Host::update`); `None` for any other command.
async fn update(node: &impl Host, name: &str, args: &[Bytes]) -> Option<Result<Reply, Refused>> {
    let update = match (name, args) {
        ("incr" | "decr", [_]) => Ok(Update::IncrBy(if name == "incr" { 1 } else { -1 })),
        ("incrby", [_, by]) => integer(by).map(Update::IncrBy),
        ("decrby", [_, by]) => integer(by)
            .and_then(|by| by.checked_neg().ok_or_else(|| error("ERR decrement would overflow")))
            .map(Update::IncrBy),
        ("incrbyfloat", [_, by]) => match ringkv_core::update::parse_f64(by) {
            Some(_) => Ok(Update::IncrByFloat(by.clone())),
            None => Err(error("ERR value is not a valid float")),
        },
        ("append", [_, tail]) => Ok(Update::Append(tail.clone())),
        ("setrange", [_, offset, value]) => match integer(offset) {
            Ok(offset) if offset >= 0 => Ok(Update::SetRange { offset: offset as u64, value: value.clone() }),
            Ok(_) => Err(error("ERR offset is out of range")),
            Err(e) => Err(e),
        },
        ("setnx", [_, value]) => {
            Ok(Update::Set { value: value.clone(), expiry: Expiry::Clear, when: When::Missing, get: false })
        }
        ("getset", [_, value]) => {
            Ok(Update::Set { value: value.clone(), expiry: Expiry::Clear, when: When::Always, get: true })
        }
        ("getdel", [_]) => Ok(Update::GetDel),
        ("getex", [_, options @ ..]) => getex_expiry(options, node.now_ms()).map(|expiry| Update::GetEx { expiry }),
        ("expiretime" | "pexpiretime", [_]) => Ok(Update::ExpireTime),
        (
            "incr" | "decr" | "incrby" | "decrby" | "incrbyfloat" | "append" | "setrange" | "setnx" | "getset"
            | "getdel" | "getex" | "expiretime" | "pexpiretime",
            _,
        ) => Err(arity(name)),
        _ => return None,
    };
    let update = match update {
        Ok(update) => update,
        Err(e) => return Some(Err(e)),
    };
    if let Err(e) = node.standing() {
        return Some(Err(kv_error(e)));
    }
    let answered = node.update(args[0].clone(), update).await.map_err(kv_error);
    Some(answered.map(|a| match (name, a) {
        // SETNX answers whether it set, where SET … NX answers OK or nil.
        ("setnx", Answer::Done) => Reply::Integer(1),
        ("setnx", _) => Reply::Integer(0),
        // Seconds, rounded as Redis rounds them.
        ("expiretime", Answer::Integer(ms)) if ms >= 0 => Reply::Integer((ms + 500) / 1_000),
        (_, a) => answer(a),
    }))
}

/// The commands that walk the keyspace (`SCAN`, `KEYS`, `DBSIZE`,
/// `RANDOMKEY`) or write one key's value under another (`RENAME`,
/// `RENAMENX`, `COPY`, `MSETNX`); `None` for any other command. `seed`
/// picks where `RANDOMKEY` starts.
async fn keyspace(node: &impl Host, name: &str, args: &[Bytes], seed: u64) -> Option<Result<Reply, Refused>> {
    if !matches!(name, "scan" | "keys" | "dbsize" | "randomkey" | "rename" | "renamenx" | "copy" | "msetnx") {
        return None;
    }
    if let Err(e) = node.standing() {
        return Some(Err(kv_error(e)));
    }
    Some(match (name, args) {
        ("scan", [cursor, options @ ..]) => scan(node, cursor, options).await,
        ("keys", [pattern]) => keys(node, pattern).await,
        ("dbsize", []) => walk(node, |_| Ok(())).await.map(|n| Reply::Integer(n as i64)),
        ("randomkey", []) => random_key(node, seed).await,
        ("rename" | "renamenx", [source, destination]) => rename(node, name == "renamenx", source, destination).await,
        ("copy", [source, destination, options @ ..]) => copy(node, source, destination, options).await,
        ("msetnx", pairs @ [_, _, ..]) if pairs.len() % 2 == 0 => msetnx(node, pairs).await,
        _ => Err(arity(name)),
    })
}

/// The most keys one `SCAN` call may ask for: what it holds is bounded.
const MAX_SCAN_COUNT: usize = 100_000;

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`. `COUNT` is how
/// many live keys to examine before `MATCH` filters them, as in Redis; a
/// call may return fewer (it reads at most a bounded number of partition
/// pages) or more. Every key is a string.
async fn scan(node: &impl Host, cursor: &Bytes, options: &[Bytes]) -> Result<Reply, Refused> {
    let partitions = node.config().partitions;
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .and_then(|c| Cursor::decode(c, partitions))
        .ok_or_else(|| error("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut strings) = (None, 10, true);
    let mut rest = options;
    while let [option, value, more @ ..] = rest {
        match option.to_ascii_lowercase().as_slice() {
            b"match" => pattern = Some(value),
            b"count" => match integer(value)? {
                n if n >= 1 => count = (n as usize).min(MAX_SCAN_COUNT),
                _ => return Err(error("ERR syntax error")),
            },
            b"type" => strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Err(error("ERR syntax error")),
        }
        rest = more;
    }
    if !rest.is_empty() {
        return Err(error("ERR syntax error"));
    }
    let (next, keys) = node.scan(cursor, count).await.map_err(kv_error)?;
    let keys = keys.into_iter().filter(|k| strings && pattern.is_none_or(|p| glob(p, k))).map(Reply::Bulk).collect();
    let next = next.map_or(0, Cursor::encode);
    Ok(Reply::Array(vec![Reply::Bulk(Bytes::from(next.to_string())), Reply::Array(keys)]))
}

/// The most key bytes `KEYS` answers: past it, the client is told to use
/// `SCAN`, rather than the node holding an unbounded reply.
const MAX_KEYS_REPLY: usize = 64 << 20;

/// `KEYS pattern`: a whole walk, matched against `pattern`.
async fn keys(node: &impl Host, pattern: &Bytes) -> Result<Reply, Refused> {
    let mut found = Vec::new();
    let mut bytes = 0;
    walk(node, |key| {
        if glob(pattern, &key) {
            bytes += key.len();
            if bytes > MAX_KEYS_REPLY {
                return Err(error("ERR KEYS would answer more than 64 MiB of keys; use SCAN"));
            }
            found.push(Reply::Bulk(key));
        }
        Ok(())
    })
    .await?;
    Ok(Reply::Array(found))
}

/// Walks every live key of the cluster once, giving each to `each`;
/// answers how many there were.
async fn walk(node: &impl Host, mut each: impl FnMut(Bytes) -> Result<(), Refused>) -> Result<u64, Refused> {
    let mut seen = 0;
    let mut cursor = Some(Cursor::START);
    while let Some(at) = cursor {
        let (next, keys) = node.scan(at, 4096).await.map_err(kv_error)?;
        for key in keys {
            seen += 1;
            each(key)?;
        }
        cursor = next;
    }
    Ok(seen)
}

/// `RANDOMKEY`: the first live key from a random place in the walk,
/// wrapping around once; nil if the cluster holds none. A key after a long
/// empty stretch of hashes is likelier to be picked than its neighbours,
/// as Redis's own pick favours keys in sparse buckets.
async fn random_key(node: &impl Host, seed: u64) -> Result<Reply, Refused> {
    let mut rng = SplitMix64::new(seed);
    let partitions = node.config().partitions;
    let start =
        Cursor { partition: PartitionId(rng.below(u64::from(partitions)) as u16), from: rng.next_u64() & !0xffff };
    let (mut at, mut wrapped) = (Some(start), false);
    loop {
        let cursor = match at {
            Some(cursor) if wrapped && (cursor.partition, cursor.from) > (start.partition, start.from) => {
                return Ok(Reply::Null);
            }
            Some(cursor) => cursor,
            None if wrapped => return Ok(Reply::Null),
            None => {
                wrapped = true;
                Cursor::START
            }
        };
        let (next, keys) = node.scan(cursor, 1).await.map_err(kv_error)?;
        if let Some(key) = keys.into_iter().next() {
            return Ok(Reply::Bulk(key));
        }
        at = next;
    }
}

/// `RENAME` and `RENAMENX`: the source's value and expiry, read at its
/// leader, are written under the destination at its leader, and then the
/// source is deleted at its leader if it still holds what was copied (a
/// write to it in between wins over the rename). Two leaders, three steps:
/// not atomic, and a failure after the copy leaves both keys (README).
async fn rename(node: &impl Host, nx: bool, source: &Bytes, destination: &Bytes) -> Result<Reply, Refused> {
    let Some((value, expires_at)) = dump(node, source).await? else { return Err(error("ERR no such key")) };
    let done = if nx { Reply::Integer(1) } else { Reply::ok() };
    if source == destination {
        return Ok(if nx { Reply::Integer(0) } else { done });
    }
    if !write_copy(node, destination, &value, expires_at, nx).await? {
        return Ok(Reply::Integer(0));
    }
    node.update(source.clone(), Update::DeleteIf { value, expires_at }).await.map_err(kv_error)?;
    Ok(done)
}

/// `COPY source destination [DB 0] [REPLACE]`.
async fn copy(node: &impl Host, source: &Bytes, destination: &Bytes, options: &[Bytes]) -> Result<Reply, Refused> {
    let mut replace = false;
    let mut rest = options;
    while let [option, more @ ..] = rest {
        rest = more;
        match (option.to_ascii_lowercase().as_slice(), more) {
            (b"replace", _) => replace = true,
            (b"db", [db, more @ ..]) => {
                if integer(db)? != 0 {
                    return Err(error("ERR DB index is out of range"));
                }
                rest = more;
            }
            _ => return Err(error("ERR syntax error")),
        }
    }
    if source == destination {
        return Err(error("ERR source and destination objects are the same"));
    }
    let Some((value, expires_at)) = dump(node, source).await? else { return Ok(Reply::Integer(0)) };
    let copied = write_copy(node, destination, &value, expires_at, !replace).await?;
    Ok(Reply::Integer(copied.into()))
}

/// `MSETNX key value …`: sets every key if none exists. Each key is set at
/// its own leader only if it is missing there, in turn; if one exists, the
/// keys already set are deleted again (where they still hold this
/// command's value) and the answer is 0. Readers may see some of the keys
/// in between, and a failure while taking them back is reported with how
/// many may remain (README).
async fn msetnx(node: &impl Host, pairs: &[Bytes]) -> Result<Reply, Refused> {
    // A key named twice is set once, to its last value, as in Redis.
    let mut writes: Vec<(Bytes, Bytes)> = Vec::with_capacity(pairs.len() / 2);
    let mut index = std::collections::HashMap::new();
    for pair in pairs.chunks(2) {
        match index.get(&pair[0]) {
            Some(&i) => writes[i] = (pair[0].clone(), pair[1].clone()),
            None => {
                index.insert(pair[0].clone(), writes.len());
                writes.push((pair[0].clone(), pair[1].clone()));
            }
        }
    }
    let mut set = 0;
    let mut outcome = Ok(Reply::Integer(1));
    for (key, value) in &writes {
        match write_copy(node, key, value, None, true).await {
            Ok(true) => set += 1,
            Ok(false) => {
                outcome = Ok(Reply::Integer(0));
                break;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if matches!(outcome, Ok(Reply::Integer(1))) {
        return outcome;
    }
    let mut left = 0;
    for (key, value) in &writes[..set] {
        let undo = Update::DeleteIf { value: value.clone(), expires_at: None };
        if node.update(key.clone(), undo).await.is_err() {
            left += 1;
        }
    }
    match left {
        0 => outcome,
        _ => Err(error(&format!("ERR MSETNX did not complete and could not take back {left} of the keys it set"))),
    }
}

/// A key's live value and expiry, read at its leader.
async fn dump(node: &impl Host, key: &Bytes) -> Result<Option<(Bytes, Option<u64>)>, Refused> {
    match node.update(key.clone(), Update::Dump).await.map_err(kv_error)? {
        Answer::Entry(found) => Ok(found),
        other => Err(error(&format!("ERR unexpected answer to a read at the leader: {other:?}"))),
    }
}

/// Writes `value` under `key` at its leader with the expiry `expires_at`
/// (only if the key is missing, for `only_new`); whether it was written.
async fn write_copy(
    node: &impl Host,
    key: &Bytes,
    value: &Bytes,
    expires_at: Option<u64>,
    only_new: bool,
) -> Result<bool, Refused> {
    let update = Update::Set {
        value: value.clone(),
        expiry: expires_at.map_or(Expiry::Clear, Expiry::At),
        when: if only_new { When::Missing } else { When::Always },
        get: false,
    };
    Ok(node.update(key.clone(), update).await.map_err(kv_error)? == Answer::Done)
}

fn answer(answer: Answer) -> Reply {
    match answer {
        Answer::Integer(n) => Reply::Integer(n),
        Answer::Value(v) => v.map_or(Reply::Null, Reply::Bulk),
        Answer::Done => Reply::ok(),
        Answer::NotSet => Reply::Null,
        Answer::Entry(found) => found.map_or(Reply::Null, |(value, _)| Reply::Bulk(value)),
    }
}

/// A positive time to live of `amount` units of `unit_ms`.
fn ttl_of(amount: &Bytes, unit_ms: i64, command: &str) -> Result<Duration, Refused> {
    let n = integer(amount)?;
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
        _ => Err(invalid_expire(command)),
    }
}

fn integer(arg: &Bytes) -> Result<i64, Refused> {
    ringkv_resp::parse_int(arg).ok_or_else(|| error("ERR value is not an integer or out of range"))
}

/// Compares two secrets in a time that does not depend on where they
/// differ, nor on their lengths: both are hashed, and every byte of the
/// hashes is compared.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let hash = |s: &[u8]| ring::digest::digest(&ring::digest::SHA256, s);
    let (a, b) = (hash(a), hash(b));
    a.as_ref().iter().zip(b.as_ref()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(text: &str) -> Refused {
    Refused { reply: Reply::Error(text.to_string()), outcome: Outcome::Invalid }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arity(name: &str) -> Refused {
    error(&format!("ERR wrong number of arguments for '{name}' command"))
}

fn invalid_expire(name: &str) -> Refused {
    error(&format!("ERR invalid expire time in '{name}' command"))
}

/// Redis's reply to a command it does not know, quoting the first
/// arguments as Redis does.
fn unknown(args: &[Bytes]) -> Refused {
    let quoted: String = args[1..].iter().take(20).map(|a| format!("'{}' ", lossy(&a[..a.len().min(128)]))).collect();
    error(&format!("ERR unknown command '{}', with args beginning with: {quoted}", lossy(&args[0])))
}

/// A store error as a Redis client expects it: `OOM` for the memory
/// bound, as Redis words it, and `ERR` with ringkv's message otherwise.
fn kv_error(e: KvError) -> Refused {
    let text = match e {
        KvError::OutOfMemory { .. } => format!("OOM command not allowed when used memory > 'maxmemory': {e}"),
        ref other => format!("ERR {other}"),
    };
    Refused { reply: Reply::Error(text), outcome: Outcome::of_error(&e) }
}

/// An error reply, and what it says of the command for the metrics.
struct Refused {
    reply: Reply,
    outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_matches_them() {
        let yes = [("*", ""), ("max*", "maxmemory"), ("h?llo", "hello"), ("h[ae]llo", "hallo"), ("h[^e]llo", "hallo")];
        let yes = yes.into_iter().chain([("h[a-b]llo", "hbllo"), ("h\\*llo", "h*llo"), ("*mem*", "maxmemory-policy")]);
        for (pattern, text) in yes {
            assert!(glob(pattern.as_bytes(), text.as_bytes()), "{pattern} ~ {text}");
        }
        let no =
            [("max*", "save"), ("h?llo", "hllo"), ("h[ae]llo", "hillo"), ("h[^e]llo", "hello"), ("h\\*llo", "hallo")];
        for (pattern, text) in no {
            assert!(!glob(pattern.as_bytes(), text.as_bytes()), "{pattern} !~ {text}");
        }
        assert!(glob(b"a*b*c", b"aXXbYYc") && glob(b"*", b"") && glob(b"a**", b"a") && glob(b"\\", b"\\"));
        assert!(!glob(b"a*b*c", b"aXXbYY") && !glob(b"[ab", b"a") && !glob(b"", b"x"));
    }

    /// A pattern that makes a recursive matcher try every way of splitting
    /// the text among its stars: this one finishes at once.
    #[test]
    fn hostile_globs_cost_no_more_than_pattern_times_text() {
        let pattern = "*a".repeat(40) + "b";
        let text = "a".repeat(10_000);
        assert!(!glob(pattern.as_bytes(), text.as_bytes()));
    }

    #[test]
    fn ranges_follow_getrange() {
        let v = Bytes::from_static(b"Hello World");
        let r = |start, end| range(&v, start, end);
        assert_eq!(r(0, 4), "Hello");
        assert_eq!(r(-5, -1), "World");
        assert_eq!(r(-100, 2), "Hel");
        assert_eq!(r(6, 1_000), "World");
        assert_eq!(r(5, 2), "");
        assert_eq!(r(11, 20), "");
        assert_eq!(range(&Bytes::new(), 0, -1), "");
    }
}
