//! Connecting to NATS: options shared by every voiyd program, and errors that say what to do.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use crate::link::{Link, LinkEvents};

/// How to reach and authenticate to NATS. `Debug` hides secrets.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Server URLs (`nats://host:port`, `tls://host:port`); the client picks among them.
    pub urls: Vec<String>,
    /// Connection name shown in the server's monitoring (`/connz`).
    pub name: String,
    /// A `.creds` file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// An nkey seed: the seed text itself, or the path of a file holding it.
    pub nkey_seed: Option<String>,
    /// User for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication.
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// PEM file of CA certificates to trust for the server.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (needs `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Keep retrying in the background when the first attempt fails (daemons); when false
    /// the first failure is returned at once (CLIs).
    pub retry_on_initial_connect: bool,
    /// Inbox prefix instead of `_INBOX` (nodes use `_INBOX_<node>` so that NATS
    /// permissions keep their replies private; see `names::node_inbox_prefix`).
    pub inbox_prefix: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Options end up in logged configs: show which secrets are set, never their value.
        let hidden = |set: bool| if set { "<set>" } else { "<none>" };
        f.debug_struct("ConnectOptions")
            .field("urls", &self.urls)
            .field("name", &self.name)
            .field("creds_file", &self.creds_file)
            .field("nkey_seed", &hidden(self.nkey_seed.is_some()))
            .field("user", &self.user)
            .field("password", &hidden(self.password.is_some()))
            .field("token", &hidden(self.token.is_some()))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry_on_initial_connect", &self.retry_on_initial_connect)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            name: "voiyd".to_string(),
            creds_file: None,
            nkey_seed: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            connect_timeout: Duration::from_secs(5),
            retry_on_initial_connect: false,
            inbox_prefix: None,
        }
    }
}

impl ConnectOptions {
    /// Options with default settings for a comma-separated list of URLs.
    pub fn from_urls(urls: &str) -> Self {
        Self {
            urls: urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect(),
            ..Self::default()
        }
    }

    fn urls_text(&self) -> String {
        self.urls.join(",")
    }
}

/// Why connecting to NATS failed. Every message is one line and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No URL, or one that does not parse.
    #[error("invalid NATS server URL {urls:?} ({reason}): use nats://HOST:PORT, comma-separated for several")]
    BadUrl {
        /// The URLs as given.
        urls: String,
        /// What is wrong with them.
        reason: String,
    },
    /// A credentials, seed or certificate file could not be read.
    #[error("cannot read {what} {path}: {reason}: check the path and its permissions")]
    File {
        /// What the file was for ("credentials file", "nkey seed file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot reach NATS at {urls} ({reason}): start voiyd-server or pass --server URL")]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// Why, e.g. "connection refused".
        reason: String,
    },
    /// Connecting took longer than the connect timeout.
    #[error("timed out after {timeout:?} connecting to NATS at {urls}: check the address, firewalls, and that NATS is running")]
    Timeout {
        /// The URLs tried.
        urls: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The server rejected the credentials.
    #[error("NATS at {urls} rejected the credentials ({reason}): check --creds, the nkey seed, user/password or token")]
    Auth {
        /// The URLs tried.
        urls: String,
        /// What the server or client said.
        reason: String,
    },
    /// TLS setup or handshake failed.
    #[error("TLS to NATS at {urls} failed ({reason}): check the CA, client certificate and key, and the server's TLS settings")]
    Tls {
        /// The URLs tried.
        urls: String,
        /// What failed.
        reason: String,
    },
}

/// Installs the process-wide rustls crypto provider (ring). Idempotent; every `main`
/// calls it before the first TLS connection, because rustls refuses to guess when
/// more than one provider is compiled in.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Connects to NATS.
///
/// With `retry_on_initial_connect` false, an unreachable server fails within
/// `connect_timeout`; with it true, the client is returned at once and connects in the
/// background. Once connected, the client reconnects forever.
pub async fn connect(opts: &ConnectOptions) -> Result<async_nats::Client, ConnectError> {
    connect_linked(opts).await.map(|(client, _)| client)
}

/// Connects to NATS, as [`connect`], and returns the [`Link`] that follows the
/// connection's events: a program that must re-read what it missed while the
/// connection was down (a reconnect within milliseconds included) watches it.
pub async fn connect_linked(
    opts: &ConnectOptions,
) -> Result<(async_nats::Client, Link), ConnectError> {
    install_crypto_provider();
    let urls = opts.urls_text();
    if opts.urls.is_empty() {
        return Err(ConnectError::BadUrl {
            urls,
            reason: "no URL given".to_string(),
        });
    }
    let addrs = opts
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::BadUrl {
            urls: urls.clone(),
            reason: e.to_string(),
        })?;

    let (events, link) = LinkEvents::new();
    let nats_opts = build_options(opts, events).await?;
    // async-nats bounds each attempt (one per URL) by the connection timeout, but
    // resolving, TLS and the handshake happen around it; this outer bound keeps the
    // fail-fast promise.
    let outer = opts.connect_timeout * opts.urls.len() as u32 + Duration::from_secs(1);
    match tokio::time::timeout(outer, nats_opts.connect(addrs)).await {
        Ok(Ok(client)) => {
            if !opts.retry_on_initial_connect {
                // The first Connected event is delivered just after connect returns;
                // waiting for it keeps that first connection from being taken for a
                // reconnection by whoever looks at the link next.
                link.wait_connected(Duration::from_secs(1)).await;
            }
            Ok((client, link))
        }
        Ok(Err(e)) => Err(map_connect_error(&urls, opts.connect_timeout, e)),
        Err(_) => Err(ConnectError::Timeout {
            urls,
            timeout: opts.connect_timeout,
        }),
    }
}

/// Pause before reconnect attempt `attempts` (1-based): at once, then doubling from
/// 50 ms up to 2 s. async-nats's own backoff goes up to 4 s; after an outage servers
/// give nodes a grace of 3 s to be heard again, so a node must not sit out a long pause once NATS is back.
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = (attempts - 2).min(16) as u32;
    Duration::from_millis(50u64.saturating_mul(1 << exp)).min(Duration::from_secs(2))
}

async fn build_options(
    opts: &ConnectOptions,
    events: LinkEvents,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(&opts.name)
        .connection_timeout(opts.connect_timeout)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS");
                        events.connected();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS");
                        events.disconnected();
                    }
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::warn!(
                            sid,
                            "a NATS subscription fell behind: messages were dropped"
                        );
                        events.dropped();
                    }
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        });
    if opts.retry_on_initial_connect {
        o = o.retry_on_initial_connect();
    }
    if let Some(prefix) = &opts.inbox_prefix {
        o = o.custom_inbox_prefix(prefix);
    }
    if let Some(path) = &opts.creds_file {
        o = o
            .credentials_file(path)
            .await
            .map_err(|e| ConnectError::File {
                what: "credentials file",
                path: path.clone(),
                reason: e.to_string(),
            })?;
    }
    if let Some(seed) = &opts.nkey_seed {
        o = o.nkey(read_seed(seed)?);
    }
    if let Some(user) = &opts.user {
        o = o.user_and_password(user.clone(), opts.password.clone().unwrap_or_default());
    }
    if let Some(token) = &opts.token {
        o = o.token(token.clone());
    }
    for (what, path) in [
        ("TLS CA file", &opts.tls_ca),
        ("TLS certificate", &opts.tls_cert),
        ("TLS key", &opts.tls_key),
    ] {
        if let Some(path) = path {
            check_readable(what, path)?;
        }
    }
    if let Some(ca) = &opts.tls_ca {
        o = o.add_root_certificates(ca.clone());
    }
    match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => o = o.add_client_certificate(cert.clone(), key.clone()),
        (None, None) => {}
        _ => {
            return Err(ConnectError::Tls {
                urls: opts.urls_text(),
                reason: "a client certificate needs both a certificate and a key".to_string(),
            })
        }
    }
    if opts.tls_required {
        o = o.require_tls(true);
    }
    Ok(o)
}

/// A seed is given inline (it starts with `S`, as every nkey seed does) or as a file.
fn read_seed(seed: &str) -> Result<String, ConnectError> {
    let path = Path::new(seed);
    if seed.starts_with('S') && !path.exists() {
        return Ok(seed.trim().to_string());
    }
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| ConnectError::File {
            what: "nkey seed file",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn check_readable(what: &'static str, path: &Path) -> Result<(), ConnectError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| ConnectError::File {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn map_connect_error(urls: &str, timeout: Duration, e: async_nats::ConnectError) -> ConnectError {
    use async_nats::ConnectErrorKind as K;
    let urls = urls.to_string();
    let reason = root_reason(&e);
    if is_tls_failure(&e) {
        return ConnectError::Tls { urls, reason };
    }
    match e.kind() {
        K::ServerParse => ConnectError::BadUrl { urls, reason },
        K::TimedOut => ConnectError::Timeout { urls, timeout },
        K::Authentication | K::AuthorizationViolation => ConnectError::Auth { urls, reason },
        K::Tls => ConnectError::Tls { urls, reason },
        K::Dns | K::Io | K::MaxReconnects => ConnectError::Unreachable { urls, reason },
    }
}

/// Whether a rustls error (a certificate that does not verify, a failed handshake)
/// is somewhere in the chain; async-nats reports those as I/O errors.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// The most specific cause in an error chain, with I/O errors named the way people
/// say them ("connection refused") rather than with OS codes.
fn root_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
                std::io::ErrorKind::TimedOut => "timed out".to_string(),
                _ => io.to_string(),
            };
        }
        match cur.source() {
            Some(next) => cur = next,
            None => return cur.to_string().replace(['\r', '\n'], " "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_two_seconds() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(3), Duration::from_millis(100));
        assert_eq!(reconnect_delay(7), Duration::from_millis(1600));
        assert_eq!(reconnect_delay(8), Duration::from_secs(2));
        assert_eq!(reconnect_delay(10_000), Duration::from_secs(2));
    }

    #[test]
    fn from_urls_splits_and_trims() {
        let o = ConnectOptions::from_urls(" nats://a:1, nats://b:2 ,");
        assert_eq!(o.urls, vec!["nats://a:1", "nats://b:2"]);
        assert!(!o.retry_on_initial_connect);
    }

    #[test]
    fn debug_hides_secrets() {
        let o = ConnectOptions {
            password: Some("hunter2".into()),
            token: Some("tok-secret".into()),
            nkey_seed: Some("SUASECRET".into()),
            ..ConnectOptions::default()
        };
        let text = format!("{o:?}");
        assert!(
            !text.contains("hunter2")
                && !text.contains("tok-secret")
                && !text.contains("SUASECRET")
        );
        assert!(text.contains("<set>"));
    }

    #[test]
    fn inline_seed_is_kept() {
        assert_eq!(read_seed("SUAEXAMPLE ").unwrap(), "SUAEXAMPLE");
        assert!(matches!(
            read_seed("/nonexistent/seed"),
            Err(ConnectError::File { .. })
        ));
    }
}
