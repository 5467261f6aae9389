//! Many simulated nodes in one process (`voiyd-node --runtime sim --sim-nodes N`):
//! each has its own name, its own NATS connection and its own [`SimRuntime`], so to
//! the servers they are indistinguishable from real nodes. For scale tests and
//! benchmarks on one machine.

use crate::agent::{self, AgentConfig};
use crate::runtime::sim::SimRuntime;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use voiyd_messages::v1::NodeResources;
use voiyd_nats::connect::ConnectOptions;

/// How the simulated nodes are set up.
#[derive(Debug, Clone)]
pub struct SimNodesConfig {
    /// Name of the only node, or prefix of `<prefix>-0001` … when there are several.
    pub name: String,
    /// How many nodes.
    pub count: usize,
    /// Labels every node registers with (each also gets `voiyd.io/sim=true`).
    pub labels: BTreeMap<String, String>,
    /// How to reach NATS.
    pub nats: ConnectOptions,
    /// Time between full reads of each node's work (spread by up to 10 s per node).
    pub resync_every: Duration,
    /// Parent of each node's data directory.
    pub data_dir: PathBuf,
    /// Heartbeat period.
    pub heartbeat_every: Duration,
    /// Fencing timeout.
    pub disconnect_timeout: Duration,
    /// What each node offers.
    pub capacity: NodeResources,
}

/// The name of simulated node `i` (0-based) of `count`.
pub fn node_name(prefix: &str, i: usize, count: usize) -> String {
    if count == 1 {
        prefix.to_string()
    } else {
        format!("{prefix}-{:04}", i + 1)
    }
}

/// Runs every node until `shutdown` resolves.
pub async fn run(
    cfg: SimNodesConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::with_capacity(cfg.count);
    for i in 0..cfg.count {
        let name = node_name(&cfg.name, i, cfg.count);
        let mut labels = cfg.labels.clone();
        labels.insert("voiyd.io/sim".into(), "true".into());
        let acfg = AgentConfig {
            data_dir: cfg.data_dir.join(&name),
            name,
            labels,
            nats: cfg.nats.clone(),
            heartbeat_every: cfg.heartbeat_every,
            // Spread the full resyncs of many nodes over time.
            resync_every: cfg.resync_every + Duration::from_millis((i as u64 * 37) % 10_000),
            capacity: Some(cfg.capacity),
            disconnect_timeout: cfg.disconnect_timeout,
            agent_digest: String::new(),
            xkey: String::new(),
            mesh: None,
        };
        let mut rx = stop_rx.clone();
        let rt = Arc::new(SimRuntime::for_node(&acfg.name));
        agents.push(tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            agent::run(acfg, rt, stop).await
        }));
    }
    tracing::info!(nodes = cfg.count, "simulated nodes started");
    shutdown.await;
    let _ = stop_tx.send(true);
    for a in agents {
        match a.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "simulated node stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "simulated node panicked"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sortable() {
        assert_eq!(node_name("sim", 0, 1), "sim");
        assert_eq!(node_name("sim", 0, 1000), "sim-0001");
        assert_eq!(node_name("sim", 999, 1000), "sim-1000");
    }
}
