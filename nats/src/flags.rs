//! The NATS connection flags every voiyd daemon takes, declared once (`voiyd-server`,
//! `voiyd-server backup` and `voiyd-node` flatten [`NatsFlags`]; voiydctl fills one from its
//! config's server entry). The names are
//! `--nats-*`. The node's and the backup's earlier spellings (`--creds`, `--nkey`,
//! `--tls-ca`, `--ca`, ...) stay as aliases, added per program by [`with_aliases`]
//! because they differ: `voiyd-server` has a `--tls-ca` of its own (the embedded NATS's).

use std::path::PathBuf;

use crate::connect::ConnectOptions;

/// How to authenticate to NATS and verify it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NatsFlags {
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long = "nats-creds", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// NKEY seed, or a file holding it.
    #[arg(long = "nats-nkey", value_name = "SEED|FILE")]
    pub nkey: Option<String>,
    /// NATS user (user/password authentication).
    #[arg(long = "nats-user")]
    pub user: Option<String>,
    /// NATS password (user/password authentication).
    #[arg(
        long = "nats-password",
        env = "VOIYD_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// CA certificate to verify the NATS server (TLS).
    #[arg(long = "nats-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(long = "nats-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(long = "nats-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl NatsFlags {
    /// Sets the credentials and TLS files of `o` from the flags (a CA means TLS is required).
    pub fn apply(&self, o: &mut ConnectOptions) {
        o.creds_file = self.creds.clone();
        o.nkey_seed = self.nkey.clone();
        o.user = self.user.clone();
        o.password = self.password.clone();
        o.tls_ca = self.ca.clone();
        o.tls_cert = self.cert.clone();
        o.tls_key = self.key.clone();
        o.tls_required |= self.ca.is_some();
    }

    /// Options for `urls` (comma-separated) with these credentials.
    pub fn options(&self, urls: &str) -> ConnectOptions {
        let mut o = ConnectOptions::from_urls(urls);
        self.apply(&mut o);
        o
    }
}

/// The node's earlier spellings: `--creds`, `--nkey`, `--tls-ca`, `--tls-cert`, `--tls-key`.
pub const NODE_ALIASES: &[(&str, &str)] = &[
    ("creds", "creds"),
    ("nkey", "nkey"),
    ("ca", "tls-ca"),
    ("cert", "tls-cert"),
    ("key", "tls-key"),
];

/// `voiyd-server backup`'s earlier spellings: `--creds`, `--nkey`, `--ca`.
pub const BACKUP_ALIASES: &[(&str, &str)] = &[("creds", "creds"), ("nkey", "nkey"), ("ca", "ca")];

/// Adds `aliases` (flag id of [`NatsFlags`], alias) to a command that flattens it.
pub fn with_aliases(mut cmd: clap::Command, aliases: &[(&str, &'static str)]) -> clap::Command {
    for (id, alias) in aliases {
        cmd = cmd.mut_arg(*id, |a| a.visible_alias(*alias));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsFlags,
    }

    fn parse(aliases: &[(&str, &'static str)], args: &[&str]) -> Cli {
        let m = with_aliases(Cli::command(), aliases).get_matches_from(args);
        Cli::from_arg_matches(&m).unwrap()
    }

    #[test]
    fn new_names_and_old_spellings_fill_the_same_options() {
        let new = parse(&[], &["x", "--nats-nkey", "SU1", "--nats-ca", "/ca.pem"]);
        let old = parse(NODE_ALIASES, &["x", "--nkey", "SU1", "--tls-ca", "/ca.pem"]);
        let backup = parse(BACKUP_ALIASES, &["x", "--nkey", "SU1", "--ca", "/ca.pem"]);
        assert!(with_aliases(Cli::command(), &[])
            .try_get_matches_from(["x", "--tls-ca", "/ca.pem"])
            .is_err());
        for cli in [new, old, backup] {
            let o = cli.nats.options("nats://a:1,nats://b:2");
            assert_eq!(o.urls.len(), 2);
            assert_eq!(o.nkey_seed.as_deref(), Some("SU1"));
            assert_eq!(o.tls_ca, Some(PathBuf::from("/ca.pem")));
            assert!(o.tls_required);
        }
        let none = parse(&[], &["x"]).nats.options("nats://a:1");
        assert!(!none.tls_required && none.creds_file.is_none());
    }
}
