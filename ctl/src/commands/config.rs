//! `config init|create-server|use|view|list-servers`.

use crate::cli::{ConfigCommand, CreateServerArgs};
use crate::config::{normalize_address, Config, Server, Tls};
use crate::error::{CtlError, Result};
use std::path::Path;

fn read_pem(what: &str, path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| CtlError::io("cannot read", path, e))?;
    if !text.contains("-----BEGIN ") {
        return Err(CtlError::Usage(format!(
            "{} is not a PEM file (no -----BEGIN line): give the {what} in PEM form",
            path.display()
        )));
    }
    Ok(text)
}

/// Builds the server entry `config create-server` stores, with PEM files inlined.
pub fn server_from_args(args: &CreateServerArgs) -> Result<Server> {
    normalize_address(&args.address).map_err(CtlError::Usage)?;
    if args.cert.is_some() != args.key.is_some() {
        return Err(CtlError::Usage(
            "--cert and --key go together: give both for mutual TLS, or neither".to_string(),
        ));
    }
    let wants_tls = args.tls || args.ca.is_some() || args.cert.is_some() || args.insecure;
    let tls = if wants_tls {
        Some(Tls {
            ca: args
                .ca
                .as_deref()
                .map(|p| read_pem("CA certificate", p))
                .transpose()?
                .unwrap_or_default(),
            certificate: args
                .cert
                .as_deref()
                .map(|p| read_pem("client certificate", p))
                .transpose()?
                .unwrap_or_default(),
            key: args
                .key
                .as_deref()
                .map(|p| read_pem("client key", p))
                .transpose()?
                .unwrap_or_default(),
            insecure: args.insecure,
            ..Tls::default()
        })
    } else {
        None
    };
    let nkey_seed = match &args.nkey {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| CtlError::io("cannot read nkey seed", p, e))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    if let Some(c) = &args.creds {
        std::fs::metadata(c).map_err(|e| CtlError::io("cannot read credentials", c, e))?;
    }
    Ok(Server {
        name: args.name.clone(),
        address: args.address.clone(),
        tls,
        creds_file: args
            .creds
            .as_ref()
            .map(|c| std::path::absolute(c).unwrap_or_else(|_| c.clone())),
        nkey_seed,
        user: args.user.clone(),
        password: args.password.clone(),
        token: args.token.clone(),
        ..Server::default()
    })
}

fn load_existing(path: &Path) -> Result<Config> {
    Config::load(path)?.ok_or_else(|| {
        CtlError::Config(format!(
            "no config at {}: create one with `voiydctl config init`",
            path.display()
        ))
    })
}

/// Runs a `config` subcommand against the config file at `path`.
pub fn run(path: &Path, cmd: &ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Init { force } => {
            if path.exists() && !force {
                return Err(CtlError::Config(format!(
                    "config {} exists: pass --force to overwrite it",
                    path.display()
                )));
            }
            Config::local().save(path)?;
            outln!(
                "wrote {} (server local -> nats://127.0.0.1:4222)",
                path.display()
            );
        }
        ConfigCommand::CreateServer(args) => {
            let server = server_from_args(args)?;
            let mut cfg = Config::load(path)?.unwrap_or_default();
            if cfg.version.is_empty() {
                cfg.version = crate::config::CONFIG_VERSION.to_string();
            }
            let replaced = cfg.server(&server.name).is_some();
            cfg.upsert(server);
            if args.use_it || cfg.current.is_empty() {
                cfg.current = args.name.clone();
            }
            cfg.save(path)?;
            outln!(
                "server {} {}{}",
                args.name,
                if replaced { "updated" } else { "added" },
                if cfg.current == args.name {
                    " (current)"
                } else {
                    ""
                }
            );
        }
        ConfigCommand::Use { name } => {
            let mut cfg = load_existing(path)?;
            cfg.use_server(name)?;
            cfg.save(path)?;
            outln!("current server is now {name}");
        }
        ConfigCommand::View { raw } => {
            let cfg = load_existing(path)?;
            let cfg = if *raw { cfg } else { cfg.redacted() };
            out!("{}", cfg.to_yaml());
        }
        ConfigCommand::ListServers => {
            let cfg = load_existing(path)?;
            out!("{}", cfg.render_servers());
        }
    }
    Ok(())
}
