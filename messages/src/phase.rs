//! Task phases: what nodes report and servers act on (the protocol between them).

/// A node refuses a task it was given: what the task requests does not fit next to
/// the node's other tasks (or its host ports are taken). Servers place it elsewhere.
pub const REJECTED: &str = "Rejected";

/// Waiting for a node (server) or for something before the container can run (node).
pub const PENDING: &str = "Pending";
/// Placed on a node that has not reported it yet (set by servers).
pub const SCHEDULED: &str = "Scheduled";
/// Pulling the image.
pub const PULLING: &str = "Pulling";
/// The container exists and its task is being started.
pub const STARTING: &str = "Starting";
/// The task's process is running.
pub const RUNNING: &str = "Running";
/// A stop signal was or is about to be sent and the process still runs.
pub const STOPPING: &str = "Stopping";
/// Not running, on request (the task is stopped or no longer assigned here).
pub const STOPPED: &str = "Stopped";
/// Exited with code 0 and will not be restarted.
pub const SUCCEEDED: &str = "Succeeded";
/// Exited non-zero or could not be started, and will not be restarted.
pub const FAILED: &str = "Failed";

/// Phases in which a task placed on a node should be running there.
pub const ACTIVE: [&str; 4] = [SCHEDULED, PULLING, STARTING, RUNNING];

/// Node phases (`NodeStatus.phase`).
pub mod node {
    /// Heartbeating; tasks are placed on it.
    pub const READY: &str = "Ready";
    /// Its heartbeats stopped: its tasks move elsewhere.
    pub const NOT_READY: &str = "NotReady";
    /// Deleted with `voiydctl delete node`: the record stays so that the agent's
    /// session, should it come back, is refused.
    pub const DELETED: &str = "Deleted";
}
