//! The voiydctl config file (`~/.voiyd/voiydctl.yaml`), compatible with the Go voiydctl:
//! `version: v1`, `servers: [{name, address, tls: {ca, certificate, key, insecure}}]`,
//! `current: NAME`, with inline PEM in `tls`. voiyd adds optional file paths and NATS
//! credentials per server.

use crate::error::{CtlError, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the local embedded cluster listens: the default with no config and no --server.
pub const DEFAULT_ADDRESS: &str = "nats://127.0.0.1:4222";
/// The NATS client port assumed when an address has none.
pub const DEFAULT_PORT: u16 = 4222;
/// The config file version this tool writes.
pub const CONFIG_VERSION: &str = "v1";

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Always `v1`.
    #[serde(default)]
    pub version: String,
    /// The known servers.
    #[serde(default)]
    pub servers: Vec<Server>,
    /// The name of the server commands use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current: String,
}

/// One server entry: how to reach a voiyd cluster's NATS.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// The entry's name.
    pub name: String,
    /// One or more NATS URLs, comma-separated; `host:port` means `nats://host:port`.
    pub address: String,
    /// TLS settings; present means TLS is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// CA bundle file (instead of inline `tls.ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate file (instead of inline `tls.certificate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client key file (instead of inline `tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// NATS credentials file (JWT + nkey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// NATS nkey seed (`SU...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<String>,
    /// NATS user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// NATS password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// NATS token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// TLS settings of a server, with inline PEM as the Go voiydctl writes them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// CA bundle, PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    /// Client certificate, PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    /// Client key, PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Skip verification of the server certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// CA bundle file (also accepted at the server level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate file (also accepted at the server level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client key file (also accepted at the server level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The config file used when neither `-c` nor `VOIYD_CONFIG` names one:
/// `$HOME/.voiyd/voiydctl.yaml`.
pub fn default_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".voiyd").join("voiydctl.yaml")
}

/// Splits and normalizes a comma-separated address into NATS URLs:
/// `a:4222,tls://b` becomes `nats://a:4222`, `tls://b:4222`.
pub fn normalize_address(address: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for part in address.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!(
                "address `{address}` has an empty entry: give NATS URLs separated by commas, e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222"
            ));
        }
        let (scheme, rest) = match part.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("nats".to_string(), part),
        };
        if !matches!(scheme.as_str(), "nats" | "tls" | "ws" | "wss") {
            return Err(format!(
                "address `{part}` has scheme `{scheme}`: use nats://, tls://, ws:// or wss://"
            ));
        }
        let hostport = rest.trim_end_matches('/');
        // Credentials in the URL (`user:pass@host`) are kept; the port is checked after them.
        let host_part = hostport
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(hostport);
        if host_part.is_empty() || host_part.contains('/') {
            return Err(format!(
                "address `{part}` is not host:port: use e.g. nats://127.0.0.1:4222"
            ));
        }
        let has_port = match host_part.rsplit_once(':') {
            // IPv6 literal such as `[::1]` without a port.
            Some((h, _)) if host_part.starts_with('[') && !h.ends_with(']') => false,
            Some((_, port)) => {
                port.parse::<u16>().map_err(|_| {
                    format!(
                        "address `{part}` has a bad port `{port}`: use a number from 1 to 65535"
                    )
                })?;
                true
            }
            None => false,
        };
        let default_port = matches!(scheme.as_str(), "nats" | "tls");
        if has_port || !default_port {
            urls.push(format!("{scheme}://{hostport}"));
        } else {
            urls.push(format!("{scheme}://{hostport}:{DEFAULT_PORT}"));
        }
    }
    Ok(urls)
}

impl Config {
    /// A config with one server `local` at [`DEFAULT_ADDRESS`], current.
    pub fn local() -> Config {
        Config {
            version: CONFIG_VERSION.to_string(),
            servers: vec![Server {
                name: "local".to_string(),
                address: DEFAULT_ADDRESS.to_string(),
                ..Server::default()
            }],
            current: "local".to_string(),
        }
    }

    /// Parses a config from YAML text.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let cfg: Config = yaml_serde::from_str(text).map_err(|e| {
            CtlError::Config(format!(
                "config {} is not valid: {e}: fix it or recreate it with `voiydctl config init --force`",
                path.display()
            ))
        })?;
        if !cfg.version.is_empty() && cfg.version != CONFIG_VERSION {
            return Err(CtlError::Config(format!(
                "config {} has version `{}`; this voiydctl reads version {CONFIG_VERSION}",
                path.display(),
                cfg.version
            )));
        }
        Ok(cfg)
    }

    /// Reads a config file; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Config>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CtlError::io("cannot read config", path, e)),
        }
    }

    /// Renders the config as YAML.
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_default()
    }

    /// Writes the config atomically (temp file + rename) with mode 0600, creating
    /// the directory (mode 0700) when needed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode_0700()
                .create(&dir)
                .map_err(|e| CtlError::io("cannot create directory", &dir, e))?;
        }
        // NamedTempFile is created with mode 0600 and in the same directory, so the
        // rename is atomic and the secret-bearing file is never world-readable.
        let mut tmp = tempfile::Builder::new()
            .prefix(".voiydctl-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| CtlError::io("cannot create a temporary file in", &dir, e))?;
        tmp.write_all(self.to_yaml().as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| CtlError::io("cannot write", tmp.path().to_path_buf(), e))?;
        tmp.persist(path)
            .map_err(|e| CtlError::io("cannot write config", path, e.error))?;
        Ok(())
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The current server, if the config names one that exists.
    pub fn current_server(&self) -> Result<Option<&Server>> {
        if self.current.is_empty() {
            return Ok(self.servers.first().filter(|_| self.servers.len() == 1));
        }
        match self.server(&self.current) {
            Some(s) => Ok(Some(s)),
            None => Err(CtlError::Config(format!(
                "current server `{}` is not in the config: pick one with `voiydctl config use NAME` (see `voiydctl config list-servers`)",
                self.current
            ))),
        }
    }

    /// Adds a server or replaces the one with the same name.
    pub fn upsert(&mut self, server: Server) {
        match self.servers.iter_mut().find(|s| s.name == server.name) {
            Some(s) => *s = server,
            None => self.servers.push(server),
        }
        if self.version.is_empty() {
            self.version = CONFIG_VERSION.to_string();
        }
    }

    /// Makes `name` the current server.
    pub fn use_server(&mut self, name: &str) -> Result<()> {
        if self.server(name).is_none() {
            let known: Vec<&str> = self.servers.iter().map(|s| s.name.as_str()).collect();
            return Err(CtlError::Config(format!(
                "no server named `{name}` in the config (known: {}): add it with `voiydctl config create-server {name} --address URL`",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
        self.current = name.to_string();
        Ok(())
    }

    /// A copy with passwords, tokens, nkey seeds and private keys replaced by `REDACTED`.
    pub fn redacted(&self) -> Config {
        const R: &str = "REDACTED";
        let mut c = self.clone();
        for s in &mut c.servers {
            for secret in [&mut s.password, &mut s.token, &mut s.nkey_seed] {
                if secret.is_some() {
                    *secret = Some(R.to_string());
                }
            }
            if let Some(tls) = s.tls.as_mut().filter(|t| !t.key.is_empty()) {
                tls.key = R.to_string();
            }
        }
        c
    }

    /// Lists servers, one a line, the current one marked with `*`.
    pub fn render_servers(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .servers
            .iter()
            .map(|s| {
                vec![
                    if s.name == self.current { "*" } else { "" }.to_string(),
                    s.name.clone(),
                    s.address.clone(),
                    if s.tls.is_some() { "yes" } else { "no" }.to_string(),
                ]
            })
            .collect();
        crate::table::render(&["CURRENT", "NAME", "ADDRESS", "TLS"], &rows)
    }
}

/// Sets mode 0700 on a directory builder (no-op off Unix).
trait DirMode {
    fn mode_0700(&mut self) -> &mut Self;
}

impl DirMode for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            self.mode(0o700);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            normalize_address("127.0.0.1:4222").unwrap(),
            vec!["nats://127.0.0.1:4222"]
        );
        assert_eq!(
            normalize_address("a:1, tls://b:2,nats://c").unwrap(),
            vec!["nats://a:1", "tls://b:2", "nats://c:4222"]
        );
        assert_eq!(normalize_address("host").unwrap(), vec!["nats://host:4222"]);
        assert_eq!(
            normalize_address("[::1]:4222").unwrap(),
            vec!["nats://[::1]:4222"]
        );
        assert_eq!(
            normalize_address("[::1]").unwrap(),
            vec!["nats://[::1]:4222"]
        );
        assert_eq!(
            normalize_address("ws://h:8080").unwrap(),
            vec!["ws://h:8080"]
        );
        assert_eq!(
            normalize_address("a:1,").unwrap_err(),
            "address `a:1,` has an empty entry: give NATS URLs separated by commas, e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222"
        );
        assert_eq!(
            normalize_address("http://a:1").unwrap_err(),
            "address `http://a:1` has scheme `http`: use nats://, tls://, ws:// or wss://"
        );
        assert_eq!(
            normalize_address("a:port").unwrap_err(),
            "address `a:port` has a bad port `port`: use a number from 1 to 65535"
        );
    }

    #[test]
    fn go_config_parses() {
        let text = "version: v1\nservers:\n- name: prod\n  address: 10.0.0.1:4222\n  tls:\n    ca: |\n      -----BEGIN CERTIFICATE-----\n      abc\n      -----END CERTIFICATE-----\n    insecure: true\ncurrent: prod\n";
        let cfg = Config::parse(text, Path::new("x")).unwrap();
        let s = cfg.current_server().unwrap().unwrap();
        assert_eq!(s.name, "prod");
        let tls = s.tls.as_ref().unwrap();
        assert!(tls.insecure);
        assert!(tls.ca.starts_with("-----BEGIN CERTIFICATE-----\nabc"));
        // Round trip keeps everything.
        assert_eq!(Config::parse(&cfg.to_yaml(), Path::new("x")).unwrap(), cfg);
    }
}
