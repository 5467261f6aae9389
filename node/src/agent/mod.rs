//! The node agent: dials out to NATS, registers through heartbeats, follows its own work
//! (messages on `voiyd.node.<node>.work`, re-reads of `voiyd_work` keys `<node>.>`),
//! admits what fits, and runs one reconcile worker per task, which drives the runtime
//! towards the assignment and reports the task's status.

mod fence;
mod follow;
mod heartbeat;
mod probes;
mod reports;
pub mod sim_nodes;
mod tasks;
mod work;

use fence::{fenced_desired, fencing};
use follow::{follow_purges, follow_subnet, volumes_in_use};
use heartbeat::heartbeats;
use reports::{flush_reports, report, send, send_queued};
use tasks::{forward_exits, task_worker, Memory};
use work::{follow_work, full_sync, resync_ticks};

use crate::decide::admission::{self, Load};
use crate::decide::phase;
use crate::decide::reconcile::{decide, Action, ContainerState, Desired, Exit, Observed};
use crate::decide::restart::backoff;
use crate::decide::work_ledger::WorkLedger;
use crate::identity::host::host_facts;
use crate::runtime::{ContainerView, Runtime, RuntimeError};
use futures::StreamExt;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use voiyd_messages::v1::{
    Assignment, NodeResources, NodeStatus, NodeStatusReport, TaskStatus, TaskStatusReport,
    WorkUpdate,
};
use voiyd_nats::connect::{connect_linked, ConnectOptions};
use voiyd_nats::names;
use voiyd_nats::store::{RawKv, TypedKv};
use voiyd_nats::watch::{WatchEvent, Watcher};
use voiyd_nats::Link;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Labels the node registers with (the agent adds `voiyd.io/os`, `arch`, `hostname`).
    pub labels: BTreeMap<String, String>,
    /// How to reach NATS.
    pub nats: ConnectOptions,
    /// Agent data directory (logs, FIFOs, volumes).
    pub data_dir: PathBuf,
    /// Heartbeat period.
    pub heartbeat_every: Duration,
    /// Full resync period (re-read all work, re-report every status).
    pub resync_every: Duration,
    /// Capacity to report instead of the host's (simulated nodes).
    pub capacity: Option<NodeResources>,
    /// Fencing: after this long without NATS the node stops the tasks that ask for it
    /// (`onDisconnect: stop`); every other task keeps running through the outage.
    pub disconnect_timeout: Duration,
    /// SHA-256 (hex) of the agent's binary, reported in heartbeats ("" for simulated nodes).
    pub agent_digest: String,
    /// The public xkey servers seal this node's secrets to (empty: no secrets here).
    pub xkey: String,
    /// This node's end of the mesh, when it joined one (heartbeats report its key,
    /// endpoints and the peers it cannot reach).
    pub mesh: Option<std::sync::Arc<crate::mesh::Mesh>>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// NATS could not be reached or used.
    #[error("{0}")]
    Nats(String),
    /// The runtime could not be used.
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
}

struct Worker {
    desired: watch::Sender<Option<Desired>>,
    /// What the desired task takes from the node, kept with it: admission and the
    /// heartbeat sum every worker's, which must not re-read each spec.
    load: Option<Load>,
    wake: Arc<Notify>,
    /// Report at the next wake even if nothing changed (the servers asked again).
    report_again: Arc<std::sync::atomic::AtomicBool>,
    /// The task was taken away with a request to kill it at once.
    kill: Arc<std::sync::atomic::AtomicBool>,
}

struct Shared<R> {
    cfg: AgentConfig,
    rt: Arc<R>,
    client: async_nats::Client,
    workers: Mutex<HashMap<String, Worker>>,
    /// Ticks every `resync_every`: each worker reconciles its task.
    resync: watch::Sender<u64>,
    /// Full rounds, which thin out as the work bucket grows ([`read_interval`]): the
    /// work is read in full and every worker reports its task again.
    round: watch::Sender<u64>,
    /// True while fenced: NATS lost for longer than the disconnect timeout.
    fenced: watch::Sender<bool>,
    /// Which work changes have been applied (orders messages against full reads).
    ledger: Mutex<WorkLedger>,
    /// The state of the NATS connection, from the client's own events.
    link: Link,
    /// What the node offers its tasks (admission and heartbeats).
    capacity: NodeResources,
    /// Status reports waiting to be sent, latest per task.
    outbox: Mutex<HashMap<String, TaskStatusReport>>,
    /// Signals [`flush_reports`].
    outbox_ready: Notify,
}

/// Runs the agent until `shutdown` resolves. Running containers are left alone on
/// shutdown: a restarted agent re-attaches to them.
pub async fn run<R: Runtime>(
    cfg: AgentConfig,
    rt: Arc<R>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let mut opts = cfg.nats.clone();
    opts.retry_on_initial_connect = true;
    opts.name = format!("voiyd-node {}", cfg.name);
    let (client, link) = connect_linked(&opts)
        .await
        .map_err(|e| AgentError::Nats(e.to_string()))?;
    let info = rt.info().await?;
    tracing::info!(node = %cfg.name, runtime = %info.name, version = %info.version, "agent connected");
    let (resync, _) = watch::channel(0u64);
    let capacity = cfg.capacity.unwrap_or_else(|| host_facts(&cfg.name).1);
    let shared = Arc::new(Shared {
        cfg,
        rt,
        client,
        workers: Mutex::new(HashMap::new()),
        resync,
        round: watch::channel(0u64).0,
        fenced: watch::channel(false).0,
        ledger: Mutex::new(WorkLedger::default()),
        link,
        capacity,
        outbox: Mutex::new(HashMap::new()),
        outbox_ready: Notify::new(),
    });

    let hb = tokio::spawn(heartbeats(shared.clone(), info));
    let work = tokio::spawn(follow_work(shared.clone()));
    let exits = tokio::spawn(forward_exits(shared.clone()));
    let ticks = tokio::spawn(resync_ticks(shared.clone()));
    let subnet = tokio::spawn(follow_subnet(shared.clone()));
    let purges = tokio::spawn(follow_purges(shared.clone()));
    let fence = tokio::spawn(fencing(shared.clone()));
    let reports = tokio::spawn(flush_reports(shared.clone()));
    shutdown.await;
    for t in [hb, work, exits, ticks, subnet, purges, fence, reports] {
        t.abort();
    }
    // Reports still queued go out with the final flush. NATS may be gone: do not hang
    // the shutdown on it.
    let last = async {
        send_queued(&shared).await;
        let _ = shared.client.flush().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), last).await;
    Ok(())
}

fn wake_all<R: Runtime>(s: &Shared<R>) {
    for w in s.workers.lock().expect("workers lock").values() {
        w.wake.notify_one();
    }
}
