//! Reasons: the short CamelCase cause beside a phase or a condition (`TaskStatus.reason`,
//! `Condition.reason`, event reasons), for machines, filters and people. One list, so a
//! node and a server, and `voiydctl`, mean the same thing by the same word.

use crate::vocabulary::string_enum;

string_enum! {
    /// Why a task, node or set is where it is.
    pub enum Reason {
        // Reported by nodes for tasks.
        /// The task is no longer assigned to this node.
        Unassigned,
        /// The task was asked to stop (stopped, deleted, moved).
        StopRequested,
        /// The task runs as it should.
        Started,
        /// A stop is under way, on request.
        Stopping,
        /// The container is being replaced by one of a newer spec.
        Replacing,
        /// The image is being pulled.
        Pulling,
        /// The container is being created.
        ContainerCreating,
        /// The task is being started.
        Starting,
        /// The task exited and is being started again.
        Restarting,
        /// The task exited and waits out its restart backoff.
        BackOff,
        /// The task exited 0 and is not restarted.
        Completed,
        /// The task exited non-zero and is not restarted.
        Error,
        /// The kernel killed the task for memory.
        OOMKilled,
        /// The task failed its liveness probe and was restarted.
        LivenessProbeFailed,
        /// The task failed its startup probe and was restarted.
        StartupProbeFailed,
        /// The task runs but fails its readiness probe (the `Ready` condition is false).
        Unhealthy,
        /// The image could not be pulled.
        PullFailed,
        /// The container could not be created.
        CreateFailed,
        /// The task could not be started.
        StartFailed,
        /// The task could not be stopped.
        StopFailed,
        /// The container could not be removed.
        DeleteFailed,
        /// The task's network could not be set up.
        NetworkFailed,
        /// The node's network is not ready.
        NetworkUnavailable,
        /// A volume could not be prepared.
        VolumeFailed,
        /// containerd (or the runtime) could not be reached.
        RuntimeUnavailable,
        // Decided by servers or node admission, for placement.
        /// No node fits the task.
        Unschedulable,
        /// The node holding the data of a volume the task mounts is not ready (or gone).
        VolumeNodeUnavailable,
        /// The node's free CPU is too small for the task.
        OutOfCpu,
        /// The node's free memory is too small for the task.
        OutOfMemory,
        /// A host port the task asks for is taken on the node.
        HostPortInUse,
        /// Two tasks on the node ask for the same host port.
        PortConflict,
        /// The task's node was lost; the task was placed again.
        NodeLost,
        /// The task's node was deleted; the task was placed again.
        NodeDeleted,
        /// The task's node was drained; the task was placed again.
        NodeDrained,
        /// The task's node refused it; the task was placed again.
        NodeRejected,
        /// The task's spec changed and no longer fits its node; the task was placed again.
        SpecChanged,
        /// The task was placed again.
        Rescheduled,
        /// The task was placed on a node.
        Scheduled,
        // Events of every kind.
        /// The resource was created.
        Created,
        /// The resource's spec changed.
        Updated,
        /// The resource was deleted.
        Deleted,
        // Conditions of nodes and container sets.
        /// The node heartbeats.
        NodeReady,
        /// A rollout is under way.
        RolloutInProgress,
        /// The set runs its current template everywhere.
        RolloutComplete,
        /// A rollout failed and the set went back to its previous template.
        RolledBack,
        /// A rollout made no progress within its deadline.
        ProgressDeadlineExceeded,
        /// The set has at least its minimum of available replicas.
        MinimumAvailable,
        // Jobs.
        /// A job had more failed tasks than its backoffLimit.
        BackoffLimitExceeded,
        /// A job ran longer than its activeDeadlineSeconds.
        DeadlineExceeded,
        /// A cron job skipped a run (too late, or another still runs under Forbid).
        RunSkipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_camel_case_and_round_trip() {
        for r in Reason::ALL {
            let s = r.as_str();
            assert_eq!(Reason::parse(s), Some(*r));
            assert!(s.starts_with(|c: char| c.is_ascii_uppercase()), "{s}");
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        }
        assert_eq!(Reason::PullFailed.to_string(), "PullFailed");
    }
}
