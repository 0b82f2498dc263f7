use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ringkv_client::{Client, ClientConfig, resolve};
use ringkv_core::{KeyTtl, KvStore, format_duration, format_size};
use ringkv_net::tls::TlsPaths;
use ringkv_net::wire::Sent;

use crate::{CertsCommand, ClientArgs, Command, GossipKeyCommand};

const FOUND: u8 = 0;
const NOT_FOUND: u8 = 1;

pub(crate) async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    connect_with(args, TlsPaths::client_in(&args.certs)).await
}

/// A client presenting the operator certificate, for requests that change
/// the membership.
async fn connect_operator(args: &ClientArgs) -> anyhow::Result<Client> {
    let tls = TlsPaths::operator_in(&args.certs);
    if !tls.cert.exists() {
        bail!(
            "this command needs the operator certificate, and {} does not exist; make it with `ringkv certs issue \
             --operator NAME --dir {}`",
            tls.cert.display(),
            args.certs.display()
        );
    }
    connect_with(args, tls).await
}

async fn connect_with(args: &ClientArgs, tls: TlsPaths) -> anyhow::Result<Client> {
    let nodes = resolve(&args.addr).await?;
    let mut config = ClientConfig::new(nodes, tls);
    config.timeout = args.timeout;
    config.consistency = args.consistency.into();
    Client::new(config)
        .with_context(|| format!("cannot set up a client with certificates from {}", args.certs.display()))
}

fn flag(found: bool, missing: &str) -> ExitCode {
    if found {
        ExitCode::from(FOUND)
    } else {
        eprintln!("{missing}");
        ExitCode::from(NOT_FOUND)
    }
}

pub(crate) async fn client_command(command: Command) -> anyhow::Result<ExitCode> {
    Ok(match command {
        Command::Put { key, value, ttl, client } => {
            let client = connect(&client).await?;
            match ttl {
                Some(ttl) => client.put_with_ttl(key, value, ttl).await?,
                None => client.put(key, value).await?,
            }
            ExitCode::from(FOUND)
        }
        Command::Get { key, client } => match connect(&client).await?.get(key).await? {
            Some(value) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&value)?;
                out.write_all(b"\n")?;
                ExitCode::from(FOUND)
            }
            None => flag(false, "(not found)"),
        },
        Command::Del { key, client } => flag(connect(&client).await?.delete(key).await?, "(not found)"),
        Command::Exists { key, client } => {
            let exists = connect(&client).await?.exists(key).await?;
            println!("{exists}");
            ExitCode::from(if exists { FOUND } else { NOT_FOUND })
        }
        Command::Ttl { key, client } => match connect(&client).await?.ttl(key).await? {
            KeyTtl::Missing => flag(false, "(not found)"),
            KeyTtl::Persistent => {
                println!("persistent");
                ExitCode::from(FOUND)
            }
            KeyTtl::Expires(left) => {
                println!("{}", format_duration(left));
                ExitCode::from(FOUND)
            }
        },
        Command::Expire { key, ttl, client } => flag(connect(&client).await?.expire(key, ttl).await?, "(not found)"),
        Command::Persist { key, client } => {
            flag(connect(&client).await?.persist(key).await?, "(not found, or it has no time to live)")
        }
        Command::Clear { yes, client } => {
            if !yes {
                bail!("clear deletes every key in the cluster; pass --yes to confirm");
            }
            connect(&client).await?.clear().await?;
            ExitCode::from(FOUND)
        }
        Command::Status { brief, client } => status(&connect(&client).await?, brief).await?,
        Command::Explain { key, client } => explain(&connect(&client).await?, key).await?,
        Command::Leave { client } => {
            let node = *resolve(&client.addr).await?.first().context("no --addr given")?;
            connect_operator(&client).await?.leave(node).await?;
            println!("{node} is leaving: handing its partitions off, then it exits");
            ExitCode::from(FOUND)
        }
        Command::Ping { client } => {
            let (node, version) = connect(&client).await?.ping().await?;
            println!("pong from {node} (ringkv {version})");
            ExitCode::from(FOUND)
        }
        Command::Serve(_) | Command::Certs(_) | Command::Bench(_) => unreachable!("dispatched in main"),
    })
}

pub(crate) fn certs(command: CertsCommand) -> anyhow::Result<ExitCode> {
    let written = match command {
        CertsCommand::Init { dir, nodes, san } => ringkv_net::certs::init(&dir, &nodes, &san)?,
        CertsCommand::Issue { dir, name: Some(name), operator: None, san } => {
            ringkv_net::certs::issue_node_cert(&dir, &name, &san)?
        }
        CertsCommand::Issue { dir, operator: Some(operator), .. } => {
            ringkv_net::certs::issue_operator_cert(&dir, &operator)?
        }
        CertsCommand::Issue { .. } => bail!("pass --name NODE_ID or --operator NAME"),
        CertsCommand::GossipKey(command) => return gossip_key(command),
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::from(FOUND))
}

fn gossip_key(command: GossipKeyCommand) -> anyhow::Result<ExitCode> {
    use ringkv_net::gossip::{KeyId, Keyring};
    let parse_id = |id: &str| id.parse::<KeyId>().map_err(|e| anyhow::anyhow!(e));
    let show = |keyring: &Keyring| {
        println!("primary {}", keyring.primary());
        for id in keyring.accepted() {
            println!("accept  {id}");
        }
    };
    match command {
        GossipKeyCommand::New { file } => {
            let path = file.path();
            if !path.exists() {
                let keyring = Keyring::generate()?;
                keyring.save(&path)?;
                println!("wrote {} with primary key {}", path.display(), keyring.primary());
                return Ok(ExitCode::from(FOUND));
            }
            let mut keyring = Keyring::load(&path)?;
            let id = keyring.add_new()?;
            keyring.save(&path)?;
            println!("added key {id} to {} (accepted, not yet primary)", path.display());
        }
        GossipKeyCommand::Promote { id, file } => {
            let path = file.path();
            let mut keyring = Keyring::load(&path)?;
            keyring.promote(parse_id(&id)?)?;
            keyring.save(&path)?;
            show(&keyring);
        }
        GossipKeyCommand::Remove { id, file } => {
            let path = file.path();
            let mut keyring = Keyring::load(&path)?;
            keyring.remove(parse_id(&id)?)?;
            keyring.save(&path)?;
            show(&keyring);
        }
        GossipKeyCommand::List { file } => show(&Keyring::load(&file.path())?),
    }
    Ok(ExitCode::from(FOUND))
}

async fn status(client: &Client, brief: bool) -> anyhow::Result<ExitCode> {
    let members = client.members().await?;
    println!(
        "cluster {}: {} members, {} partitions, N={}",
        members.cluster_id,
        members.members.len(),
        members.partitions,
        members.replication
    );
    println!(
        "{:<12} {:<22} {:<8} {:<5} {:<5} {:>6} {:>10} {:>10}  hints pending",
        "node", "address", "status", "live", "ring", "owned", "entries", "values"
    );
    let mut unhealthy = false;
    let mut repairs = Vec::new();
    let mut transfers = Vec::new();
    let mut replication = Vec::new();
    let mut gossip = Vec::new();
    let mut memory = Vec::new();
    let mut clocks = Vec::new();
    for m in &members.members {
        // A member that left on purpose is gone, not unhealthy.
        let left = m.status == ringkv_net::wire::MemberStatus::Left && !m.live;
        let detail = match (brief || left, m.live) {
            (true, _) => Err(String::new()),
            (false, true) => client.status_of(m.addr).await.map_err(|e| e.to_string()),
            (false, false) => Err("down".into()),
        };
        let (owned, entries, values, hints) = match &detail {
            Ok(s) => {
                repairs.push((m.node_id.clone(), s.repair.clone()));
                replication.push((m.node_id.clone(), s.replication.clone()));
                memory.push((m.node_id.clone(), s.memory.clone()));
                if let Some(offset_ms) = s.clock_off_ms {
                    // It serves nothing meanwhile.
                    unhealthy = true;
                    clocks.push((m.node_id.clone(), offset_ms));
                }
                if let Some(g) = &s.gossip {
                    gossip.push((m.node_id.clone(), g.clone()));
                }
                if let Some(phase) = &s.transfers.phase {
                    transfers.push((m.node_id.clone(), phase.clone(), s.transfers.clone()));
                }
                let hints: Vec<String> = s.hints.iter().map(|(n, c)| format!("{n}:{c}")).collect();
                let mut hints = if hints.is_empty() { "-".to_string() } else { hints.join(" ") };
                if s.hints_dropped > 0 {
                    hints.push_str(&format!(" ({} dropped)", s.hints_dropped));
                }
                (s.partitions_owned.to_string(), s.entries.to_string(), s.values.to_string(), hints)
            }
            Err(e) if e.is_empty() => ("-".into(), "-".into(), "-".into(), "-".into()),
            Err(e) => {
                unhealthy = true;
                ("?".into(), "?".into(), "?".into(), format!("unreachable: {e}"))
            }
        };
        println!(
            "{:<12} {:<22} {:<8} {:<5} {:<5} {:>6} {:>10} {:>10}  {}",
            m.node_id,
            m.addr.to_string(),
            m.status.as_str(),
            if m.live { "yes" } else { "no" },
            if m.in_ring { "yes" } else { "no" },
            owned,
            entries,
            values,
            hints
        );
    }
    if !clocks.is_empty() {
        println!("clocks off from the majority's (these nodes serve nothing until they agree):");
    }
    for (node, offset_ms) in clocks {
        let side = if offset_ms > 0 { "behind" } else { "ahead" };
        println!("  {node:<12} {} ms {side}", offset_ms.unsigned_abs());
    }
    if !transfers.is_empty() {
        println!("transfers in progress:");
    }
    for (node, phase, t) in transfers {
        let current = match &t.current {
            Some((partition, peer)) => format!("; now partition {partition} with {peer}"),
            None => String::new(),
        };
        println!(
            "  {node:<12} {phase}: {}/{} partitions, {} keys, {} bytes moved{current}",
            t.partitions_done, t.partitions_total, t.keys_moved, t.bytes_moved
        );
    }
    if !repairs.is_empty() {
        println!("anti-entropy:");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    for (node, r) in repairs {
        let progress = match r.progress {
            Some((done, total)) => format!("pass under way: {done}/{total} comparisons"),
            None => "idle".to_string(),
        };
        let last = r.last_pass_ms.map_or("-".to_string(), |ms| format!("{ms} ms"));
        let divergence = match r.last_divergence {
            None => "none found".to_string(),
            Some(d) => format!(
                "{} keys in partition {} with {}, {} ago",
                d.keys,
                d.partition,
                d.peer,
                format_duration(std::time::Duration::from_millis(now.saturating_sub(d.at_ms) / 1000 * 1000))
            ),
        };
        println!(
            "  {node:<12} {} passes (last {last}), {progress}; exchanged {} keys, {} bytes; last divergence: {divergence}",
            r.passes, r.keys_exchanged, r.bytes_exchanged
        );
    }
    let sent = |s: &Sent| {
        format!("{} in {} requests ({:.1} per request)", s.items, s.requests, s.items as f64 / s.requests.max(1) as f64)
    };
    if replication.iter().any(|(_, r)| r.writes.items + r.reads.items > 0) {
        println!("replica requests sent to peers:");
    }
    for (node, r) in replication.iter().filter(|(_, r)| r.writes.items + r.reads.items > 0) {
        println!("  {node:<12} writes {}; reads {}", sent(&r.writes), sent(&r.reads));
    }
    if !memory.is_empty() {
        println!("memory (used as maxmemory counts it; evictions and refused writes since start):");
    }
    for (node, m) in memory {
        let limit = match m.limit {
            0 => "no limit".to_string(),
            limit => format!("maxmemory {} ({:.0}% used)", format_size(limit), m.used as f64 * 100.0 / limit as f64),
        };
        println!(
            "  {node:<12} used {} of {limit}, policy {}; {} evicted, {} writes refused",
            m.used, m.policy, m.evictions, m.refused
        );
    }
    if !gossip.is_empty() {
        println!("gossip keys (refused: datagrams not sealed with a key of the node's keyring, since start):");
    }
    for (node, g) in gossip {
        let accepts =
            if g.accepted_keys.is_empty() { String::new() } else { format!(", accepts {}", g.accepted_keys.join(" ")) };
        println!("  {node:<12} seals with {}{accepts}; refused {}", g.primary_key, g.rejected);
        if !g.unproven.is_empty() {
            println!(
                "  {:<12} unproven (gossiped, but no certificate names them; not placed): {}",
                "",
                g.unproven.join(" ")
            );
        }
    }
    Ok(ExitCode::from(if unhealthy { NOT_FOUND } else { FOUND }))
}

async fn explain(client: &Client, key: String) -> anyhow::Result<ExitCode> {
    let explanation = client.explain(key.clone()).await?;
    println!("key {key:?}: partition {}", explanation.partition);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    for (i, replica) in explanation.replicas.iter().enumerate() {
        let held = match &replica.entry {
            Err(e) => format!("unreachable: {e}"),
            Ok(None) => "absent".to_string(),
            Ok(Some(entry)) => {
                let what = match &entry.value {
                    None => "tombstone".to_string(),
                    Some(v) => format!("value of {} bytes", v.len()),
                };
                let expiry = match entry.expires_at {
                    None => String::new(),
                    Some(at) if at <= now => ", expired".to_string(),
                    Some(at) => format!(", expires in {}", format_duration(std::time::Duration::from_millis(at - now))),
                };
                let version = entry.version;
                let touch = match version.touch {
                    None => String::new(),
                    Some(t) => format!(" (expiry rewritten {}@{:016x})", t.ts, t.node.0),
                };
                format!("{what}, version {}@{:016x}{touch}{expiry}", version.ts, version.node.0)
            }
        };
        println!("  replica {} {:<12} {held}", i + 1, replica.node_id);
    }
    Ok(ExitCode::from(FOUND))
}
