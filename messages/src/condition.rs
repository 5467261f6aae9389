//! Condition types: the named yes/no facts a status carries beside its phase
//! (`Condition.type`), as Kubernetes users know them.

use crate::vocabulary::string_enum;

string_enum! {
    /// What a condition says.
    pub enum ConditionType {
        /// A task was placed on a node (`False` with `Unschedulable` while none fits).
        Scheduled,
        /// A task runs (and, with a readiness probe, passes it); a node heartbeats.
        Ready,
        /// A container set's rollout is moving (or completed, or rolled back).
        Progressing,
        /// A container set has at least its minimum of available replicas.
        Available,
        /// A job's tasks succeeded `completions` times.
        Complete,
        /// A job gave up (backoff limit or deadline).
        Failed,
    }
}

/// The wire value of a condition's status.
pub fn status(ok: bool) -> &'static str {
    if ok {
        "True"
    } else {
        "False"
    }
}
