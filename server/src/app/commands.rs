//! Security flags and subcommands of voiyd-server: `--tls-*`, `--auth`, `--allow-*`,
//! `certs init|issue` and `auth print-node-permissions`.

use crate::app::run::Security;
use crate::security::certs::{self, Usage};
use crate::security::policy::Policy;
use std::path::PathBuf;
use std::time::Duration;
use voiyd_nats::auth;
use voiyd_nats::EmbeddedTls;

/// Security flags of a running server.
#[derive(clap::Args, Debug, Clone)]
pub struct SecurityArgs {
    /// Embedded NATS serves TLS with this certificate (PEM); every client must use TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA that signed --tls-cert (and client certificates with --tls-verify-clients).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Shorthand for the files `voiyd-server certs init --dir DIR` wrote.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    pub tls_dir: Option<PathBuf>,
    /// Require a client certificate signed by the CA from every client (mutual TLS).
    #[arg(long)]
    pub tls_verify_clients: bool,
    /// Enforce NATS identities: the server, admins (voiydctl), one per node, joining nodes.
    #[arg(long)]
    pub auth: bool,
    /// With --auth: the secret every voiyd-server of the cluster derives the NATS
    /// identities from (at least 16 characters; the same on every server). Defaults to
    /// --nats-cluster-secret; a server on its own makes one under its data dir.
    #[arg(
        long,
        env = "VOIYD_AUTH_SECRET",
        hide_env_values = true,
        requires = "auth"
    )]
    pub auth_secret: Option<String>,
    /// Allow privileged tasks.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub allow_privileged: bool,
    /// Allow bind mounts of host paths.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub allow_host_paths: bool,
    /// Allow added Linux capabilities.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub allow_cap_add: bool,
    /// Allow tasks without a seccomp filter (`seccomp: unconfined`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub allow_unconfined_seccomp: bool,
}

impl SecurityArgs {
    /// The settings these flags give.
    pub fn resolve(&self) -> anyhow::Result<Security> {
        let tls = match (&self.tls_dir, &self.tls_cert, &self.tls_key) {
            (Some(dir), _, _) => Some(EmbeddedTls {
                cert: dir.join("server.pem"),
                key: dir.join("server-key.pem"),
                ca: Some(dir.join(certs::CA_CERT)),
                verify_clients: self.tls_verify_clients,
            }),
            (None, Some(cert), Some(key)) => Some(EmbeddedTls {
                cert: cert.clone(),
                key: key.clone(),
                ca: self.tls_ca.clone(),
                verify_clients: self.tls_verify_clients,
            }),
            _ => None,
        };
        if let Some(t) = &tls {
            for f in [Some(&t.cert), Some(&t.key), t.ca.as_ref()]
                .into_iter()
                .flatten()
            {
                if !f.exists() {
                    anyhow::bail!(
                        "TLS file {} does not exist: create it with `voiyd-server certs init --dir DIR`",
                        f.display()
                    );
                }
            }
            if t.verify_clients && t.ca.is_none() {
                anyhow::bail!(
                    "--tls-verify-clients needs --tls-ca (the CA client certificates chain to)"
                );
            }
        }
        Ok(Security {
            tls,
            auth: self.auth,
            policy: Policy {
                allow_privileged: self.allow_privileged,
                allow_host_paths: self.allow_host_paths,
                allow_cap_add: self.allow_cap_add,
                allow_unconfined_seccomp: self.allow_unconfined_seccomp,
            },
        })
    }
}

/// Subcommands that do their job and exit (no server is started).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Certificates for TLS between voiyd and NATS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// NATS authorization.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The keys secrets are encrypted with.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Snapshot every voiyd bucket and the events stream into a new directory (restore
    /// with `voiyd-server --restore-from DIR` on a cluster without state).
    Backup(crate::app::backup::BackupArgs),
}

/// `voiyd-server secrets …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SecretsCommand {
    /// Put a new key first in the key file: after a restart the servers encrypt with it
    /// and re-encrypt every secret; the old keys stay in the file to read old records.
    NewKey {
        /// The key file (the servers' --secrets-key-file).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

/// `voiyd-server certs …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CertsCommand {
    /// Create a CA and a server certificate (ca.pem, ca-key.pem, server.pem, server-key.pem).
    Init {
        /// Directory to write to.
        #[arg(long, default_value = "/var/lib/voiyd/server/certs")]
        dir: PathBuf,
        /// More names or IP addresses the server is reached by (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Sign another certificate with the CA (client certificates for mutual TLS).
    Issue {
        /// File name stem: writes NAME.pem and NAME-key.pem.
        name: String,
        /// Directory holding the CA (written by `certs init`).
        #[arg(long, default_value = "/var/lib/voiyd/server/certs")]
        dir: PathBuf,
        /// A server certificate instead of a client one.
        #[arg(long)]
        server: bool,
        /// A client certificate that the HTTP API admits as an administrator (no token
        /// needed over HTTPS).
        #[arg(long, conflicts_with = "server")]
        admin: bool,
        /// Names or IP addresses (server certificates).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

/// `voiyd-server auth …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AuthCommand {
    /// Print the NATS permissions of one node (for an existing NATS deployment).
    PrintNodePermissions {
        /// The node name.
        node: String,
    },
    /// Print the NATS permissions of administrators (voiydctl).
    PrintAdminPermissions,
    /// Print the NATS permissions of the join identity.
    PrintJoinPermissions,
    /// Print the nats-server configuration an external NATS needs for `--auth`: every
    /// server of that NATS cluster includes it, every voiyd-server gets the same secret.
    PrintNatsConfig {
        /// The cluster's auth secret (the --auth-secret of the voiyd-servers).
        #[arg(long, env = "VOIYD_AUTH_SECRET", hide_env_values = true)]
        auth_secret: String,
    },
}

/// Runs a subcommand; returns the process exit code.
pub fn run_command(cmd: Command) -> i32 {
    match run_inner(cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n.max(1) * 24 * 3600)
}

fn run_inner(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Backup(_) => anyhow::bail!("backup runs in main's runtime"),
        Command::Certs(CertsCommand::Init {
            dir,
            hosts,
            days: d,
        }) => {
            let w = certs::init(&dir, &hosts, days(d))?;
            println!(
                "wrote {}, {} and {}, {}\nstart the server with: voiyd-server --tls-dir {}",
                dir.join(certs::CA_CERT).display(),
                dir.join(certs::CA_KEY).display(),
                w.cert.display(),
                w.key.display(),
                dir.display()
            );
        }
        Command::Certs(CertsCommand::Issue {
            name,
            dir,
            server,
            admin,
            hosts,
            days: d,
        }) => {
            let usage = match (server, admin) {
                (true, _) => Usage::Server,
                (false, true) => Usage::Admin,
                (false, false) => Usage::Client,
            };
            let mut names = hosts;
            if names.is_empty() {
                names.push(name.clone());
            }
            let w = certs::issue(&dir, &name, usage, &names, days(d))?;
            println!("wrote {} and {}", w.cert.display(), w.key.display());
        }
        Command::Auth(AuthCommand::PrintNodePermissions { node }) => {
            voiyd_messages::validate::validate_name("node", &node)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            print_permissions(
                &format!(
                    "node {node} (connect with inbox prefix {})",
                    voiyd_nats::names::node_inbox_prefix(&node)
                ),
                &auth::node_permissions(&node),
            );
        }
        Command::Auth(AuthCommand::PrintAdminPermissions) => {
            print_permissions("administrators (voiydctl)", &auth::admin_permissions())
        }
        Command::Auth(AuthCommand::PrintJoinPermissions) => print_permissions(
            &format!(
                "the join identity (user {}, inbox prefix {})",
                auth::JOIN_USER,
                voiyd_nats::names::JOIN_INBOX_PREFIX
            ),
            &auth::join_permissions(),
        ),
        Command::Secrets(SecretsCommand::NewKey { file }) => {
            crate::security::keyring::add_key(&file)?;
            println!(
                "added a new first key to {}: copy the file to every voiyd-server and restart them",
                file.display()
            );
        }
        Command::Auth(AuthCommand::PrintNatsConfig { auth_secret }) => {
            let keys = voiyd_nats::callout::AuthKeys::derive(&auth_secret)?;
            print!("{}", keys.render_nats_config());
        }
    }
    Ok(())
}

fn print_permissions(who: &str, p: &auth::Permissions) {
    println!("# NATS permissions of {who}");
    println!("permissions: {}", auth::render_permissions(p));
}
