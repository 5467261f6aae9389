//! voiyd-node binary: flags, logging and signal handling around the agent library.

use clap::{CommandFactory, FromArgMatches, Parser};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use voiyd_nats::connect::{install_crypto_provider, ConnectOptions};
use voiyd_node::agent::{self, AgentConfig};
use voiyd_node::containerd::client::Containerd;
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
    /// Credentials and TLS for NATS.
    #[command(flatten)]
    nats_auth: voiyd_nats::flags::NatsFlags,
    /// One-time join token (`voiydctl token create`): the node makes its own NATS
    /// identity, keeps it in the data dir and uses it from then on.
    #[arg(long, env = "VOIYD_JOIN_TOKEN")]
    join_token: Option<String>,
    /// Directory of CNI plugin binaries (repeatable; default /usr/lib/cni then /opt/cni/bin).
    #[arg(long = "cni-bin-dir")]
    cni_bin_dirs: Vec<PathBuf>,
    /// Where the node writes the CNI conflist it uses (default: <data-dir>/cni).
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// Name of the bridge tasks are attached to (one per node on a host).
    #[arg(long, default_value = "voiyd0")]
    bridge: String,
    /// Answer DNS for the node's tasks (cluster names `NAME`, `NAME.voiyd`; other names
    /// go to the upstream resolvers) on the bridge's gateway address. `false`: tasks get
    /// the host's resolvers, as before.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    cluster_dns: bool,
    /// Upstream resolver for names that are not the cluster's, `IP` or `IP:PORT`
    /// (repeatable; default: the host's /etc/resolv.conf, loopback resolvers included).
    #[arg(long = "dns-upstream", value_name = "ADDR", value_delimiter = ',')]
    dns_upstreams: Vec<String>,
    /// Join the node mesh: other nodes reach this node's tasks through an encrypted
    /// tunnel (userspace WireGuard) sent to this address, `IP` or `IP:PORT` (default
    /// port: --mesh-port). The address other nodes can reach; behind NAT, the public one.
    #[arg(long, value_name = "IP[:PORT]")]
    mesh_endpoint: Option<String>,
    /// UDP port of the mesh device.
    #[arg(long, default_value_t = 51820)]
    mesh_port: u16,
    /// Name of the mesh device (at most 15 characters).
    #[arg(long, default_value = "voiyd-mesh")]
    mesh_interface: String,
    /// Remove unused images when the filesystem holding containerd's data (--containerd-root)
    /// is fuller than this percentage...
    #[arg(long, default_value_t = 85.0, value_name = "PERCENT")]
    image_gc_high: f64,
    /// ... until it is below this one (oldest images first; never one a container uses).
    #[arg(long, default_value_t = 80.0, value_name = "PERCENT")]
    image_gc_low: f64,
    /// Images pulled more recently than this are kept (a task's container may not exist yet).
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    image_gc_min_age: String,
    /// Seconds between two checks of the disk.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    image_gc_every: u64,
    /// Where containerd keeps its data (its `root`), for image garbage collection.
    #[arg(long, default_value = "/var/lib/containerd", value_name = "DIR")]
    containerd_root: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101); off when not given.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Seconds without NATS after which this node stops the tasks that say
    /// `onDisconnect: stop` (fencing); other tasks run on through any outage.
    #[arg(long, default_value_t = 5)]
    node_timeout: u64,
    /// Runtime: containerd, or sim (simulated containers that start at once, for
    /// scale tests; no containerd needed).
    #[arg(long, default_value = "containerd", value_parser = ["containerd", "sim"])]
    runtime: String,
    /// With --runtime sim: how many simulated nodes this process hosts, named
    /// `<name>-0001`… (each with its own NATS connection).
    #[arg(long, default_value_t = 1)]
    sim_nodes: usize,
    /// With --runtime sim: CPU each simulated node offers.
    #[arg(long, default_value = "4")]
    sim_cpu: String,
    /// With --runtime sim: memory each simulated node offers.
    #[arg(long, default_value = "8Gi")]
    sim_memory: String,
    /// Seconds between re-reports of every task's status, and the least time between
    /// periodic full reads of this node's work (a safety net for a lost work update;
    /// each read is a filtered consumer nats-server pays for in proportion to the whole
    /// work bucket, so the reads thin out as it grows: one per 100 keys-seconds, at most
    /// an hour apart). Default: 10, or 30 with --runtime sim.
    #[arg(long, value_name = "SECS")]
    resync_every: Option<u64>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 1)]
    heartbeat: u64,
    /// Log level or tracing filter.
    #[arg(long, default_value = "info", env = "VOIYD_LOG")]
    log_level: String,
    /// Log format: text, or JSON lines for log shippers.
    #[arg(long, value_enum, default_value_t = voiyd_telemetry::LogFormat::Text)]
    log_format: voiyd_telemetry::LogFormat,
    /// Export traces to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
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
    if args.runtime == "sim" {
        return run_sim(args, name, labels).await;
    }
    // Before anything else: an upgrade that keeps failing goes back to the old binary.
    let agent = voiyd_node::upgrade::Agent::current(&name, &args.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot read the agent's own binary: {e}"))?;
    voiyd_node::upgrade::check_at_start(&agent);
    let auth = match &args.registry_auth {
        Some(p) => RegistryAuth::load(p)?,
        None => RegistryAuth::anonymous(),
    };
    if args.bridge.is_empty() || args.bridge.len() > 15 || args.bridge.contains(['/', ' ', ':']) {
        anyhow::bail!(
            "--bridge `{}` is not a valid interface name: use 1 to 15 characters without /, : or spaces",
            args.bridge
        );
    }
    let network = std::sync::Arc::new(voiyd_node::network::Network::new(
        voiyd_node::network::NetworkConfig {
            bin_dirs: if args.cni_bin_dirs.is_empty() {
                voiyd_node::network::DEFAULT_BIN_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .collect()
            } else {
                args.cni_bin_dirs.clone()
            },
            conf_dir: args
                .cni_conf_dir
                .clone()
                .unwrap_or_else(|| args.data_dir.join("cni")),
            bridge: args.bridge.clone(),
            state_dir: args.data_dir.join("network"),
            cluster_dns: args.cluster_dns,
        },
    ));
    let mesh = match &args.mesh_endpoint {
        Some(endpoint) => {
            let endpoint = if endpoint.parse::<std::net::SocketAddr>().is_ok() {
                endpoint.clone()
            } else if endpoint.parse::<std::net::IpAddr>().is_ok() {
                format!("{endpoint}:{}", args.mesh_port)
            } else {
                anyhow::bail!("--mesh-endpoint `{endpoint}`: give IP or IP:PORT, e.g. 192.0.2.10 or 192.0.2.10:51820");
            };
            let cfg = voiyd_node::mesh::MeshConfig {
                endpoint,
                port: args.mesh_port,
                interface: args.mesh_interface.clone(),
            };
            Some(voiyd_node::mesh::Mesh::start(cfg, network.clone())?)
        }
        None => None,
    };
    let traffic = voiyd_node::traffic::Traffic::new(
        network.clone(),
        mesh.as_ref().map(|_| args.mesh_interface.clone()),
    );
    let dns = if args.cluster_dns {
        let mut upstreams = args
            .dns_upstreams
            .iter()
            .map(|u| voiyd_node::dns::parse_upstream(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--dns-upstream: {e}"))?;
        if upstreams.is_empty() {
            let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            upstreams = voiyd_node::dns::upstreams_of(&host);
        }
        if upstreams.is_empty() {
            tracing::warn!("no resolver in /etc/resolv.conf and no --dns-upstream: tasks resolve only cluster names");
        }
        Some(voiyd_node::dns::serve::DnsConfig {
            network: network.clone(),
            upstreams,
        })
    } else {
        None
    };
    let gc = image_gc(&args)?;
    let cd = Containerd::connect(&args.containerd_socket, &args.namespace).await?;
    tokio::spawn(voiyd_node::image::gc::run(cd.clone(), gc));
    let (shipper, logs_outbox) = voiyd_node::logs::ship::channel(&name);
    let secrets = std::sync::Arc::new(voiyd_node::secrets::Secrets::new(&name, &args.data_dir));
    let rt = ContainerdRuntime::new(
        cd,
        ContainerdConfig {
            data_dir: args.data_dir.clone(),
            pull: PullOptions {
                insecure_registries: args.insecure_registries.clone(),
                auth,
                ..Default::default()
            },
            cgroup_parent: format!("/voiyd/{}", args.namespace),
            rotation: Rotation::default(),
            network: Some(network),
            shipper: Some(shipper),
            secrets: Some(secrets.clone()),
        },
    );
    rt.reattach().await?;
    rt.cleanup_networks().await?;
    let mut nats = nats_options(&args);
    // Replies and deliveries for this node arrive under its own inbox prefix, which
    // NATS permissions keep private to it.
    nats.inbox_prefix = Some(voiyd_nats::names::node_inbox_prefix(&name));
    if nats.nkey_seed.is_none() && nats.creds_file.is_none() {
        let joined = voiyd_node::identity::join::credentials(
            &args.data_dir,
            &name,
            args.join_token.as_deref(),
            &nats,
        )
        .await?;
        nats.nkey_seed = joined.map(|p| p.to_string_lossy().into_owned());
    }
    let cfg = AgentConfig {
        name,
        labels,
        nats,
        data_dir: args.data_dir,
        heartbeat_every: Duration::from_secs(args.heartbeat.max(1)),
        resync_every: Duration::from_secs(args.resync_every.unwrap_or(10).max(1)),
        capacity: None,
        disconnect_timeout: Duration::from_secs(args.node_timeout),
        agent_digest: agent.digest.clone(),
        xkey: secrets.public_key(),
        mesh: mesh.clone(),
    };
    tokio::spawn(voiyd_node::upgrade::settle(agent.clone()));
    // Logs, exec, stats, metrics, DNS and upgrades, on a NATS connection of their own.
    let _services = voiyd_node::serve::start(voiyd_node::serve::ServicesConfig {
        node: cfg.name.clone(),
        nats: cfg.nats.clone(),
        data_dir: cfg.data_dir.clone(),
        containerd: rt.containerd().clone(),
        task_events: rt.task_events(),
        metrics_addr: args.metrics_addr,
        dns,
        upgrade: Some(agent),
        logs_outbox: Some(logs_outbox),
        secrets: Some(secrets),
        mesh: mesh.clone(),
        traffic: Some(traffic.clone()),
    })
    .await?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping the agent; containers keep running");
    };
    let result = agent::run(cfg, rt, shutdown).await;
    // Containers keep running, but nothing routes to them through this agent's rules
    // any more: they go with it (a crashed agent's are replaced when it starts again).
    drop(_services);
    traffic.remove();
    if let Some(mesh) = &mesh {
        mesh.remove_rules();
    }
    result?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Image garbage collection, from the flags.
fn image_gc(args: &Args) -> anyhow::Result<voiyd_node::image::gc::GcConfig> {
    let (high, low) = (args.image_gc_high, args.image_gc_low);
    if !(0.0..=100.0).contains(&high) || !(0.0..=100.0).contains(&low) || low > high {
        anyhow::bail!(
            "--image-gc-high {high} and --image-gc-low {low}: give percentages with low <= high, e.g. 85 and 80"
        );
    }
    let min_age = voiyd_messages::time::parse_duration(&args.image_gc_min_age)
        .map_err(|e| anyhow::anyhow!("--image-gc-min-age: {e}"))?;
    Ok(voiyd_node::image::gc::GcConfig {
        high,
        low,
        path: args.containerd_root.clone(),
        every: Duration::from_secs(args.image_gc_every.max(1)),
        min_age,
    })
}

/// How to reach NATS, from the flags.
fn nats_options(args: &Args) -> ConnectOptions {
    args.nats_auth.options(&args.server)
}

/// `--runtime sim`: one or many simulated nodes in this process.
async fn run_sim(args: Args, name: String, labels: BTreeMap<String, String>) -> anyhow::Result<()> {
    use voiyd_messages::quantity::{parse_cpu, parse_memory};
    let mut nats = nats_options(&args);
    if args.join_token.is_some() {
        // A token makes one identity: one simulated node per process joins.
        if args.sim_nodes > 1 {
            anyhow::bail!("--join-token joins one node: run one voiyd-node per simulated node to join, or give the nodes --nkey/--creds");
        }
        nats.inbox_prefix = Some(voiyd_nats::names::node_inbox_prefix(&name));
        let dir = args.data_dir.join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let joined =
            voiyd_node::identity::join::credentials(&dir, &name, args.join_token.as_deref(), &nats)
                .await?;
        nats.nkey_seed = joined.map(|p| p.to_string_lossy().into_owned());
    }
    let cfg = voiyd_node::agent::sim_nodes::SimNodesConfig {
        name,
        count: args.sim_nodes.max(1),
        labels,
        nats,
        data_dir: args.data_dir,
        heartbeat_every: Duration::from_secs(args.heartbeat.max(1)),
        resync_every: Duration::from_secs(args.resync_every.unwrap_or(30).max(1)),
        disconnect_timeout: Duration::from_secs(args.node_timeout),
        capacity: voiyd_messages::v1::NodeResources {
            cpu_millis: parse_cpu(&args.sim_cpu).map_err(|e| anyhow::anyhow!("--sim-cpu: {e}"))?,
            memory_bytes: parse_memory(&args.sim_memory)
                .map_err(|e| anyhow::anyhow!("--sim-memory: {e}"))?,
        },
    };
    voiyd_node::agent::sim_nodes::run(cfg, shutdown_signal()).await
}

#[tokio::main]
async fn main() {
    let cmd = voiyd_nats::flags::with_aliases(Args::command(), voiyd_nats::flags::NODE_ALIASES);
    let args = Args::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    install_crypto_provider();
    let _telemetry = voiyd_telemetry::init_or_exit(
        &args.log_level,
        args.log_format,
        "info",
        args.otlp_endpoint.as_deref(),
        "voiyd-node",
    );
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
