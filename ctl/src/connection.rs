//! From flags and config to a connected API client.

use crate::config::{self, Config, Server};
use crate::error::{CtlError, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use voiyd_nats::api::ApiClient;
use voiyd_nats::connect::{connect_linked, ConnectOptions};

/// Global settings every command shares.
#[derive(Debug, Clone)]
pub struct Globals {
    /// The config file path (given or default).
    pub config_path: PathBuf,
    /// `--server` / `VOIYD_SERVER`.
    pub server: Option<String>,
    /// Timeout of each API call.
    pub api_timeout: Duration,
    /// How long commands wait for a state (run, start, stop, delete task).
    pub wait_timeout: Duration,
}

/// Where and how to connect, resolved from flags and the config.
#[derive(Debug)]
pub struct Target {
    /// The options for [`connect_linked`].
    pub options: ConnectOptions,
    /// Inline PEM written to files for the TLS setup; removed when dropped.
    _pem_dir: Option<tempfile::TempDir>,
    /// Which server entry was picked, for messages.
    pub server_name: String,
}

/// Resolves the connection target: `--server` wins, then the config's current server,
/// then the local default.
pub fn resolve(globals: &Globals) -> Result<Target> {
    let mut options = ConnectOptions {
        name: "voiydctl".to_string(),
        connect_timeout: globals.api_timeout.min(Duration::from_secs(10)),
        retry_on_initial_connect: false,
        ..ConnectOptions::default()
    };
    // --server stands on its own: the config (which may hold TLS settings or
    // credentials for another cluster, or be broken) is not read at all.
    let entry: Option<Server> = match &globals.server {
        Some(_) => None,
        None => match Config::load(&globals.config_path)? {
            Some(c) => c.current_server()?.cloned(),
            None => None,
        },
    };
    let (address, server_name) = match (&globals.server, &entry) {
        (Some(url), _) => (url.clone(), "--server".to_string()),
        (None, Some(s)) => (s.address.clone(), s.name.clone()),
        (None, None) => (config::DEFAULT_ADDRESS.to_string(), "default".to_string()),
    };
    options.urls = config::normalize_address(&address).map_err(CtlError::Usage)?;
    let mut pem_dir = None;
    if let Some(s) = &entry {
        // The same fields the daemons take as flags; a CA file means TLS.
        voiyd_nats::flags::NatsFlags {
            creds: s.creds_file.clone(),
            nkey: s.nkey_seed.clone(),
            user: s.user.clone(),
            password: s.password.clone(),
            ca: s.ca_file.clone(),
            cert: s.cert_file.clone(),
            key: s.key_file.clone(),
        }
        .apply(&mut options);
        options.token = s.token.clone();
        if let Some(tls) = &s.tls {
            options.tls_required = true;
            if tls.insecure {
                // voiyd's NATS connector has no switch to skip verification; erring on
                // the safe side, the server certificate is still verified.
                tracing::warn!(server = %s.name, "tls.insecure is ignored: the server certificate is verified (give its CA with --ca)");
            }
            options.tls_ca = options.tls_ca.or_else(|| tls.ca_file.clone());
            options.tls_cert = options.tls_cert.or_else(|| tls.cert_file.clone());
            options.tls_key = options.tls_key.or_else(|| tls.key_file.clone());
            if !tls.ca.is_empty() || !tls.certificate.is_empty() || !tls.key.is_empty() {
                let dir = tempfile::Builder::new()
                    .prefix("voiydctl-tls-")
                    .tempdir()
                    .map_err(|e| {
                        CtlError::io(
                            "cannot create a temporary directory in",
                            std::env::temp_dir(),
                            e,
                        )
                    })?;
                let write = |name: &str, pem: &str| -> Result<Option<PathBuf>> {
                    if pem.is_empty() {
                        return Ok(None);
                    }
                    let path = dir.path().join(name);
                    write_private(&path, pem)?;
                    Ok(Some(path))
                };
                if let Some(p) = write("ca.pem", &tls.ca)? {
                    options.tls_ca = Some(p);
                }
                if let Some(p) = write("cert.pem", &tls.certificate)? {
                    options.tls_cert = Some(p);
                }
                if let Some(p) = write("key.pem", &tls.key)? {
                    options.tls_key = Some(p);
                }
                pem_dir = Some(dir);
            }
        }
    }
    if options
        .urls
        .iter()
        .any(|u| u.starts_with("tls://") || u.starts_with("wss://"))
    {
        options.tls_required = true;
    }
    Ok(Target {
        options,
        _pem_dir: pem_dir,
        server_name,
    })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| CtlError::io("cannot write", path, e))
}

/// A connected API client, with what the connection needs to stay up.
pub struct Session {
    /// The API client.
    pub api: ApiClient,
    /// The state of its NATS connection (followers restart on a reconnection).
    pub link: voiyd_nats::Link,
    /// Holds the inline PEM files: async-nats reads them again on every reconnect.
    _target: Target,
}

/// Connects and returns an API client with the global timeout.
pub async fn session(globals: &Globals) -> Result<Session> {
    let target = resolve(globals)?;
    tracing::info!(
        urls = %target.options.urls.join(","),
        server = %target.server_name,
        "connecting"
    );
    let (nats, link) = connect_linked(&target.options)
        .await
        .map_err(|e| CtlError::Connect(e.to_string()))?;
    Ok(Session {
        api: ApiClient::new(nats).with_timeout(globals.api_timeout),
        link,
        _target: target,
    })
}
