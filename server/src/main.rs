//! voiyd-server binary: flags and logging; everything else is in the library.

// glibc malloc took a fifth of the server's CPU under load (perf, BENCHMARKS.md); mimalloc's
// per-thread free lists suit many small, short-lived messages.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory, FromArgMatches, Parser};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use voiyd_nats::bootstrap::BootstrapOptions;

/// The voiyd control plane.
#[derive(Parser, Debug)]
#[command(name = "voiyd-server", version, about)]
struct Args {
    /// Directory for the embedded NATS config and JetStream store.
    #[arg(long, default_value = "/var/lib/voiyd/server", env = "VOIYD_DATA_DIR")]
    data_dir: PathBuf,
    /// The keys secrets are encrypted with at rest, one base64 key per line, the first
    /// encrypting (made with one key when missing; every server of a cluster needs the
    /// same file). Default: DATA_DIR/secrets.keys.
    #[arg(long, env = "VOIYD_SECRETS_KEY_FILE", value_name = "FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Client address of the embedded NATS; nodes and voiydctl connect here.
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats_listen: SocketAddr,
    /// Embedded NATS as one node of a cluster: where it listens for routes from the
    /// other voiyd-servers (e.g. 127.0.0.1:6222). Needs --nats-peers.
    #[arg(long, value_name = "ADDR", requires = "nats_peers")]
    nats_cluster_listen: Option<SocketAddr>,
    /// Route addresses of the other voiyd-servers' embedded NATS, comma-separated
    /// (e.g. 10.0.0.2:6222,10.0.0.3:6222). Buckets and streams then default to 3 replicas.
    #[arg(
        long,
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        requires = "nats_cluster_listen"
    )]
    nats_peers: Vec<String>,
    /// Name of the embedded NATS cluster; the same on every server.
    #[arg(long, default_value = "voiyd")]
    nats_cluster_name: String,
    /// Shared secret the embedded cluster's routes authenticate with (the same on every
    /// server; without it any process reaching the route port can join the cluster).
    #[arg(long, env = "VOIYD_NATS_CLUSTER_SECRET", hide_env_values = true)]
    nats_cluster_secret: Option<String>,
    /// Name of the embedded nats-server, stable across restarts (a JetStream cluster
    /// knows its peers by name); default voiyd-<hostname>-<client port>.
    #[arg(long)]
    nats_server_name: Option<String>,
    /// When the embedded NATS makes writes durable: `always` (fsync before every
    /// acknowledgement, the default: an acknowledged change survives a power loss) or an
    /// interval such as `2m` (nats-server's own default: faster, loses up to that much on
    /// a power loss of every replica).
    #[arg(long, default_value = "always", value_parser = voiyd_nats::SyncPolicy::parse)]
    nats_sync: voiyd_nats::SyncPolicy,
    /// Before creating the buckets, restore the backup in DIR (`voiyd-server backup
    /// --to DIR`); refused when NATS already holds voiyd state.
    #[arg(long, value_name = "DIR")]
    restore_from: Option<PathBuf>,
    /// Use an existing NATS server or cluster (comma-separated URLs) instead of the embedded one.
    #[arg(long, env = "VOIYD_NATS_URL")]
    nats_url: Option<String>,
    /// nats-server binary for embedded mode (default: $VOIYD_NATS_SERVER, then PATH).
    #[arg(long)]
    nats_server_bin: Option<PathBuf>,
    /// Credentials and TLS for an external NATS (with --nats-url).
    #[command(flatten)]
    nats_auth: voiyd_nats::flags::NatsFlags,
    /// Replicas of every bucket and stream (default: 1, or 3 with --nats-peers; give 3
    /// or 5 on an external NATS cluster).
    #[arg(long)]
    replicas: Option<usize>,
    /// Seconds without heartbeat before a node is NotReady.
    #[arg(long, default_value_t = 5)]
    node_timeout: u64,
    /// Seconds between sweeps for stale work (work left on a node its task has moved
    /// off); an entry goes after two sweeps that find it stale.
    #[arg(long, default_value_t = 30)]
    work_sweep_interval: u64,
    /// Placement strategy for tasks that choose none: spread (least utilised node) or
    /// binpack (fullest node that fits).
    #[arg(long, default_value = "spread", value_parser = ["spread", "binpack"])]
    placement: String,
    /// Network that node container subnets are allocated from.
    #[arg(long, default_value = "10.69.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's container subnet.
    #[arg(long, default_value_t = 24)]
    node_subnet_prefix: u8,
    /// Network that sets' virtual IPs (`vip: true`) are allocated from; must not overlap
    /// --cluster-cidr.
    #[arg(long, default_value = "10.68.0.0/16")]
    vip_cidr: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100); off when not given.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the HTTP API at http://ADDR/api/v1 (and /metrics, /healthz), e.g.
    /// 127.0.0.1:8080; off when not given. With --auth it needs a bearer token from
    /// `voiydctl token create --admin`.
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info", env = "VOIYD_LOG")]
    log_level: String,
    /// Log format: text, or JSON lines for log shippers.
    #[arg(long, value_enum, default_value_t = voiyd_telemetry::LogFormat::Text)]
    log_format: voiyd_telemetry::LogFormat,
    /// Export traces to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// TLS, NATS identities and admission policy.
    #[command(flatten)]
    security: voiyd_server::app::commands::SecurityArgs,
    /// Certificate and authorization helpers (no server is started).
    #[command(subcommand)]
    command: Option<voiyd_server::app::commands::Command>,
}

#[tokio::main]
async fn main() {
    let cmd = Args::command().mut_subcommand("backup", |b| {
        voiyd_nats::flags::with_aliases(b, voiyd_nats::flags::BACKUP_ALIASES)
    });
    let args = Args::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    if let Some(cmd) = args.command.clone() {
        if let voiyd_server::app::commands::Command::Backup(b) = cmd {
            std::process::exit(voiyd_server::app::backup::run_backup(b, &args.data_dir).await);
        }
        std::process::exit(voiyd_server::app::commands::run_command(cmd));
    }
    let security = match args.security.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    voiyd_nats::connect::install_crypto_provider();
    let _telemetry = voiyd_telemetry::init_or_exit(
        &args.log_level,
        args.log_format,
        "info",
        args.otlp_endpoint.as_deref(),
        "voiyd-server",
    );
    let nats = args.nats_url.as_ref().map(|urls| {
        let mut o = args.nats_auth.options(urls);
        o.retry_on_initial_connect = true;
        o
    });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let cluster = args
        .nats_cluster_listen
        .map(|listen| voiyd_nats::EmbeddedCluster {
            name: args.nats_cluster_name.clone(),
            listen,
            peers: args.nats_peers.clone(),
            secret: args.nats_cluster_secret.clone(),
            tls: security.tls.clone(),
        });
    let replicas = args.replicas.unwrap_or(match &cluster {
        Some(c) => (c.peers.len() + 1).min(3),
        None => 1,
    });
    let nats_server_name = args.nats_server_name.clone().unwrap_or_else(|| {
        format!("voiyd-{host}-{}", args.nats_listen.port())
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
    });
    let cfg = voiyd_server::ServerConfig {
        secrets_key_file: args
            .secrets_key_file
            .clone()
            .unwrap_or_else(|| args.data_dir.join("secrets.keys")),
        data_dir: args.data_dir,
        nats_listen: args.nats_listen,
        nats,
        nats_server_bin: args.nats_server_bin,
        nats_cluster: cluster,
        nats_sync: args.nats_sync,
        nats_server_name,
        bootstrap: BootstrapOptions {
            replicas,
            ..Default::default()
        },
        node_timeout: Duration::from_secs(args.node_timeout),
        work_sweep_interval: Duration::from_secs(args.work_sweep_interval.max(1)),
        placement: voiyd_server::schedule::placement::Strategy::parse(&args.placement),
        id: format!("{host}-{}", std::process::id()),
        cluster_cidr: args.cluster_cidr,
        node_subnet_prefix: args.node_subnet_prefix,
        vip_cidr: args.vip_cidr,
        auth_secret: args.security.auth_secret.clone(),
        restore_from: args.restore_from.clone(),
        security,
        metrics_addr: args.metrics_addr,
        http_addr: args.http_addr,
    };
    if let Err(e) = voiyd_server::run(cfg).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
