use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ringkv_client::{Client, ClientConfig, resolve};
use ringkv_core::{KeyTtl, KvStore, format_duration};
use ringkv_net::tls::TlsPaths;

use crate::{CertsCommand, ClientArgs, Command};

const FOUND: u8 = 0;
const NOT_FOUND: u8 = 1;

pub(crate) async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let nodes = resolve(&args.addr).await?;
    let tls = TlsPaths::client_in(&args.certs);
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
        CertsCommand::Issue { dir, name, san } => ringkv_net::certs::issue_node_cert(&dir, &name, &san)?,
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::from(FOUND))
}
