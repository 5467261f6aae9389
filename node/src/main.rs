//! voiyd-node binary: flags, logging and signal handling around the agent library.

use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use voiyd_nats::connect::{install_crypto_provider, ConnectOptions};
use voiyd_node::agent::{self, AgentConfig};
use voiyd_node::containerd::Containerd;
use voiyd_node::image::pull::PullOptions;
use voiyd_node::image::RegistryAuth;
use voiyd_node::logs::Rotation;
use voiyd_node::runtime::containerd::{ContainerdConfig, ContainerdRuntime};

/// The voiyd node agent: runs tasks assigned to this node through containerd.
#[derive(Parser, Debug)]
#[command(name = "voiyd-node", version, about)]
struct Args {
    /// NATS URL(s) to dial, comma-separated.
    #[arg(long, env = "VOIYD_SERVER", default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// Node name (default: the host name).
    #[arg(long, env = "VOIYD_NODE_NAME")]
    name: Option<String>,
    /// Extra node labels, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// containerd socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// containerd namespace for this node's containers.
    #[arg(long, default_value = "voiyd")]
    namespace: String,
    /// Agent data directory (logs, FIFOs, volumes).
    #[arg(long, default_value = "/var/lib/voiyd/node")]
    data_dir: PathBuf,
    /// Registry reached over plain HTTP (repeatable); loopback registries always are.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Registry credentials, Docker `config.json` format.
    #[arg(long)]
    registry_auth: Option<PathBuf>,
    /// NATS credentials file.
    #[arg(long)]
    creds: Option<PathBuf>,
    /// NKEY seed, or a file holding it.
    #[arg(long)]
    nkey: Option<String>,
    /// CA certificate to verify NATS.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 1)]
    heartbeat: u64,
    /// Log level or tracing filter.
    #[arg(long, default_value = "info", env = "VOIYD_LOG")]
    log_level: String,
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items.iter().filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("label `{item}` must be key=value"))?;
        voiyd_messages::validate::check_label_key(k)
            .map_err(|e| anyhow::anyhow!("label `{item}`: {e}"))?;
        voiyd_messages::validate::check_label_value(v)
            .map_err(|e| anyhow::anyhow!("label `{item}`: {e}"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

async fn run(args: Args) -> anyhow::Result<()> {
    install_crypto_provider();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = voiyd_node::identity::resolve(&args.data_dir, args.name.as_deref(), &hostname)?;
    voiyd_messages::validate::validate_name("node", &name)
        .map_err(|e| anyhow::anyhow!("{e}: pass --name"))?;
    let labels = parse_labels(&args.labels)?;
    let auth = match &args.registry_auth {
        Some(p) => RegistryAuth::load(p)?,
        None => RegistryAuth::anonymous(),
    };
    let cd = Containerd::connect(&args.containerd_socket, &args.namespace).await?;
    let rt = ContainerdRuntime::new(
        cd,
        ContainerdConfig {
            data_dir: args.data_dir.clone(),
            pull: PullOptions {
                insecure_registries: args.insecure_registries,
                auth,
                ..Default::default()
            },
            cgroup_parent: format!("/voiyd/{}", args.namespace),
            rotation: Rotation::default(),
        },
    );
    rt.reattach().await?;
    let mut nats = ConnectOptions::from_urls(&args.server);
    nats.creds_file = args.creds;
    nats.nkey_seed = args.nkey;
    nats.tls_ca = args.tls_ca;
    nats.tls_cert = args.tls_cert;
    nats.tls_key = args.tls_key;
    let cfg = AgentConfig {
        name,
        labels,
        nats,
        data_dir: args.data_dir,
        heartbeat_every: Duration::from_secs(args.heartbeat.max(1)),
        resync_every: Duration::from_secs(10),
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping the agent; containers keep running");
    };
    agent::run(cfg, rt, shutdown).await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
