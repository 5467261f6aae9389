//! The node's interactive services: logs, exec and stats on its own NATS subjects,
//! runtime event reports, and Prometheus `/metrics` when an address is given.
//!
//! They use a NATS connection of their own, apart from the agent's: a burst of log or
//! exec traffic then never delays a heartbeat or a status report.

pub mod exec;
pub mod logs;

use crate::containerd::client::Containerd;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use voiyd_metrics as metrics;
use voiyd_nats::connect::{connect, ConnectOptions};

/// What the services need.
#[derive(Debug)]
pub struct ServicesConfig {
    /// Node name.
    pub node: String,
    /// How to reach NATS (the agent's options).
    pub nats: ConnectOptions,
    /// The agent's data directory (task logs live under `logs/`).
    pub data_dir: PathBuf,
    /// containerd, scoped to the node's namespace.
    pub containerd: Containerd,
    /// The node's feed of containerd's task events.
    pub task_events: crate::containerd::events::TaskEvents,
    /// Address of `/metrics`; none = off.
    pub metrics_addr: Option<SocketAddr>,
    /// Cluster DNS for the node's tasks; none = off.
    pub dns: Option<crate::dns::serve::DnsConfig>,
    /// The running agent, which answers upgrade requests; none = not upgradable.
    pub upgrade: Option<crate::upgrade::Agent>,
    /// Secrets of the node's tasks: fetched over this connection, files kept current.
    pub secrets: Option<std::sync::Arc<crate::secrets::Secrets>>,
    /// The node mesh, kept current from `voiyd_mesh`; none = not in a mesh.
    pub mesh: Option<std::sync::Arc<crate::mesh::Mesh>>,
    /// Sets' virtual IPs, ports and isolation, kept current from `voiyd_services`.
    pub traffic: Option<std::sync::Arc<crate::traffic::Traffic>>,
    /// Task output waiting for the logs stream; none = output stays on the node.
    pub logs_outbox: Option<crate::logs::ship::Outbox>,
}

/// Running services; dropping this stops them.
pub struct Services {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where `/metrics` listens, when on.
    pub metrics_addr: Option<SocketAddr>,
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the services.
pub async fn start(cfg: ServicesConfig) -> anyhow::Result<Services> {
    let mut opts = cfg.nats.clone();
    opts.retry_on_initial_connect = true;
    opts.name = format!("voiyd-node {} streams", cfg.node);
    let client = connect(&opts).await?;
    let (_, capacity) = crate::identity::host::host_facts(&cfg.node);
    let mut tasks = Vec::new();
    if let Some(agent) = cfg.upgrade.clone() {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::upgrade::serve(c, agent).await {
                tracing::error!(error = %e, "upgrade service stopped");
            }
        }));
    }
    if let Some(secrets) = cfg.secrets.clone() {
        secrets.connected(client.clone());
        let js = async_nats::jetstream::new(client.clone());
        tasks.push(tokio::spawn(secrets.follow(js)));
    }
    if let Some(mesh) = cfg.mesh.clone() {
        tasks.push(tokio::spawn(mesh.follow(client.clone(), cfg.node.clone())));
    }
    if let Some(traffic) = cfg.traffic.clone() {
        let js = async_nats::jetstream::new(client.clone());
        tasks.push(tokio::spawn(traffic.follow(js)));
    }
    if let Some(outbox) = cfg.logs_outbox {
        let js = async_nats::jetstream::new(client.clone());
        tasks.push(tokio::spawn(outbox.run(js)));
    }
    if let Some(dns) = cfg.dns.clone() {
        let names = crate::dns::names::SharedNames::default();
        let js = async_nats::jetstream::new(client.clone());
        tasks.push(tokio::spawn(crate::dns::names::follow(js, names.clone())));
        tasks.push(tokio::spawn(crate::dns::serve::run(dns, names)));
    }
    {
        let (c, n, d) = (client.clone(), cfg.node.clone(), cfg.data_dir.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::serve::logs::serve(c, n, d).await {
                tracing::error!(error = %e, "log service stopped");
            }
        }));
    }
    {
        let (c, n, d, cd) = (
            client.clone(),
            cfg.node.clone(),
            cfg.data_dir.clone(),
            cfg.containerd.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::serve::exec::serve(c, n, d, cd).await {
                tracing::error!(error = %e, "exec service stopped");
            }
        }));
    }
    {
        let (c, n, cd) = (client.clone(), cfg.node.clone(), cfg.containerd.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::containerd::usage::serve(c, n, cd, capacity).await {
                tracing::error!(error = %e, "stats service stopped");
            }
        }));
    }
    tasks.push(tokio::spawn(crate::containerd::events::report_task_events(
        client.clone(),
        cfg.node.clone(),
        cfg.containerd.clone(),
        cfg.task_events.clone(),
    )));
    let mut metrics_addr = None;
    if let Some(addr) = cfg.metrics_addr {
        let r = metrics::global();
        r.set(
            "voiyd_node_capacity_cpu_millis",
            "CPU of the node, thousandths of a core",
            &[("node", &cfg.node)],
            capacity.cpu_millis as f64,
        );
        r.set(
            "voiyd_node_capacity_memory_bytes",
            "Memory of the node",
            &[("node", &cfg.node)],
            capacity.memory_bytes as f64,
        );
        let (cd, c) = (cfg.containerd.clone(), client.clone());
        let collect: metrics::Collector = Arc::new(move || {
            let (cd, c) = (cd.clone(), c.clone());
            Box::pin(async move { crate::containerd::usage::collect(&cd, &c).await })
        });
        let (bound, task) = metrics::serve(addr, collect).await?;
        metrics_addr = Some(bound);
        tasks.push(task);
    }
    Ok(Services {
        tasks,
        metrics_addr,
    })
}
