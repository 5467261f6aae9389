//! Phases: what nodes report of tasks and servers record of nodes (the protocol between
//! them). The wire carries [`TaskPhase::as_str`]; code compares with the enum
//! (`status.phase == TaskPhase::Running`).

use crate::vocabulary::string_enum;

string_enum! {
    /// The phase of a task (`TaskStatus.phase`).
    pub enum TaskPhase {
        /// Waiting for a node (server) or for something before the container can run (node).
        Pending,
        /// Placed on a node that has not reported it yet (set by servers).
        Scheduled,
        /// Pulling the image.
        Pulling,
        /// The container exists and its task is being started.
        Starting,
        /// The task's process is running.
        Running,
        /// A stop signal was or is about to be sent and the process still runs.
        Stopping,
        /// Not running, on request (the task is stopped or no longer assigned here).
        Stopped,
        /// Exited with code 0 and will not be restarted.
        Succeeded,
        /// Exited non-zero or could not be started, and will not be restarted.
        Failed,
        /// A node refuses a task it was given: what the task requests does not fit next to
        /// the node's other tasks (or its host ports are taken). Servers place it elsewhere.
        Rejected,
    }
}

impl TaskPhase {
    /// Phases in which a task placed on a node should be running there.
    pub const ACTIVE: [TaskPhase; 4] = [
        TaskPhase::Scheduled,
        TaskPhase::Pulling,
        TaskPhase::Starting,
        TaskPhase::Running,
    ];

    /// True for the [`ACTIVE`](Self::ACTIVE) phases.
    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// True when the task has ended and will not run again by itself.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskPhase::Succeeded | TaskPhase::Failed)
    }
}

string_enum! {
    /// The phase of a node (`NodeStatus.phase`).
    pub enum NodePhase {
        /// Heartbeating; tasks are placed on it.
        Ready,
        /// Its heartbeats stopped: its tasks move elsewhere.
        NotReady,
        /// Deleted with `voiydctl delete node`: the record stays so that the agent's
        /// session, should it come back, is refused.
        Deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_through_their_wire_strings() {
        for p in TaskPhase::ALL {
            assert_eq!(TaskPhase::parse(p.as_str()), Some(*p));
            assert_eq!(p.as_str().parse::<TaskPhase>().unwrap(), *p);
        }
        for p in NodePhase::ALL {
            assert_eq!(NodePhase::parse(p.as_str()), Some(*p));
        }
        assert_eq!(TaskPhase::Running.as_str(), "Running");
        assert_eq!(NodePhase::NotReady.as_str(), "NotReady");
        assert_eq!(TaskPhase::parse("running"), None);
        let e = "Sleeping".parse::<TaskPhase>().unwrap_err();
        assert!(
            e.starts_with("unknown TaskPhase 'Sleeping' (known: Pending, "),
            "{e}"
        );
        let wire: String = TaskPhase::Failed.into();
        assert!(wire == TaskPhase::Failed);
        assert!(TaskPhase::Failed == "Failed");
        assert!(TaskPhase::Running.is_active() && !TaskPhase::Pending.is_active());
    }
}
