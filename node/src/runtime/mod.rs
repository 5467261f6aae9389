//! Runtimes: what actually runs a task's container. The agent drives a runtime through
//! the small set of steps [`crate::decide::reconcile::Action`] names; [`containerd`] runs real
//! containers, and the trait leaves room for a simulated runtime.

pub mod containerd;
pub mod exec_once;
pub mod probe;
pub mod sim;

use crate::decide::reconcile::{ContainerState, Desired};
use std::future::Future;
use std::sync::Arc;
use voiyd_messages::reason::Reason;

/// What a runtime knows about one task's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// Task name (the container id).
    pub task: String,
    /// uid of the task the container was created for.
    pub uid: String,
    /// Spec generation the container was created for.
    pub generation: u64,
    /// Its state.
    pub state: ContainerState,
    /// Restarts recorded on the container (kept across agent restarts).
    pub restart_count: u32,
    /// When the current or last run started, as recorded on the container.
    pub started_at: Option<std::time::SystemTime>,
    /// The task's IP on the node's network while it runs with one (not with host networking).
    pub ip: Option<String>,
    /// The stop grace of the spec the container was created for, as recorded on it.
    pub stop_grace: Option<std::time::Duration>,
    /// The image's Docker HEALTHCHECK as a probe, as recorded on the container.
    pub image_probe: Option<voiyd_messages::v1::Probe>,
}

/// A failed runtime step: a CamelCase reason for the task status and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    /// `PullFailed`, `CreateFailed`, `StartFailed`, `StopFailed`, `DeleteFailed`, `RuntimeUnavailable`.
    pub reason: Reason,
    /// What went wrong, for people.
    pub message: String,
}

impl RuntimeError {
    /// Builds an error.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        RuntimeError {
            reason,
            message: message.into(),
        }
    }
}

/// Pull progress callback: (bytes done, bytes total).
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Static facts about a runtime, for the node's status.
#[derive(Debug, Clone, Default)]
pub struct RuntimeInfo {
    /// `containerd`, `sim`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// The steps a node agent asks of a runtime. Every step is idempotent where it can be:
/// an agent may repeat a step after a crash or a lost reply.
pub trait Runtime: Send + Sync + 'static {
    /// Name and version.
    fn info(&self) -> impl Future<Output = Result<RuntimeInfo, RuntimeError>> + Send;
    /// Every container this agent manages.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerView>, RuntimeError>> + Send;
    /// One task's container, if any.
    fn inspect(
        &self,
        task: &str,
    ) -> impl Future<Output = Result<Option<ContainerView>, RuntimeError>> + Send;
    /// Makes the task's image available.
    fn pull(
        &self,
        desired: &Desired,
        progress: Progress,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates the container for the desired task (replacing a leftover of a failed attempt).
    fn create(&self, desired: &Desired) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates and starts a task in the container; returns its pid.
    fn start(&self, task: &str) -> impl Future<Output = Result<u32, RuntimeError>> + Send;
    /// Sends SIGTERM (or SIGKILL when `kill`) to the running task.
    fn signal(
        &self,
        task: &str,
        kill: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Deletes the exited task, keeping the container.
    fn delete_task(&self, task: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Deletes the container and everything it owns on the node (but its logs).
    fn delete(&self, task: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Records the restart count on the container.
    fn set_restart_count(
        &self,
        task: &str,
        count: u32,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Wake-ups: the name of each task whose process exited.
    fn exits(&self) -> tokio::sync::broadcast::Receiver<String>;
    /// The container subnet the server allocated to this node (runtimes without a
    /// network ignore it).
    fn set_subnet(&self, _subnet: &str) {}
    /// The node's container subnet once known, for its status.
    fn subnet(&self) -> Option<String> {
        None
    }
    /// Brings the files of template volumes the task mounts up to date.
    fn sync_volumes(
        &self,
        _desired: &Desired,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }
    /// Runs one probe check against the task's running container (runtimes without real
    /// containers pass every check).
    fn probe(
        &self,
        _task: &str,
        _check: &crate::decide::probe::Check,
        _timeout: std::time::Duration,
    ) -> impl Future<Output = crate::decide::probe::Outcome> + Send {
        async { crate::decide::probe::Outcome::Pass }
    }
    /// Removes a deleted volume's data from the node.
    fn purge_volume(&self, _name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }
    /// The volumes on the node, given which tasks use which volume.
    fn volumes(
        &self,
        _in_use: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Vec<voiyd_messages::v1::NodeVolume> {
        Vec::new()
    }
}
