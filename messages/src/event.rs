//! Event types: what happened, in the lower-case words of the event subjects
//! (`voiyd.events.<kind>.<name>.<type>`) and `voiydctl events --type`.

use crate::vocabulary::string_enum;

string_enum! {
    /// The type of an event (`Event.type`).
    pub enum EventType {
        /// A resource was created.
        Created = "created",
        /// A resource's spec changed.
        Updated = "updated",
        /// A resource was deleted.
        Deleted = "deleted",
        /// A task was placed on a node.
        Scheduled = "scheduled",
        /// A task was moved off its node.
        Rescheduled = "rescheduled",
        /// A container set went back to its previous template.
        RolledBack = "rolledback",
        /// A job's tasks succeeded `completions` times.
        Completed = "completed",
        /// A job gave up.
        Failed = "failed",
        /// A cron job skipped a run.
        Skipped = "skipped",
        /// A node heartbeats (again).
        Ready = "ready",
        /// A node stopped heartbeating.
        NotReady = "notready",
        /// A task's process exited (reported by its node).
        Exited = "exited",
        /// The kernel killed a task's process for memory (reported by its node).
        OomKilled = "oomkilled",
        /// A node could not pull a task's image (reported by its node).
        PullFailed = "pullfailed",
        /// A task failed a probe: liveness or startup (it is restarted), or readiness
        /// (it is not ready); reported by its node.
        Unhealthy = "unhealthy",
    }
}

impl EventType {
    /// The types a node may publish about its tasks; servers record no other.
    pub const FROM_NODES: [EventType; 4] = [
        EventType::Exited,
        EventType::OomKilled,
        EventType::PullFailed,
        EventType::Unhealthy,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_lower_case_words_that_round_trip() {
        for t in EventType::ALL {
            let s = t.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase()), "{s}");
            assert_eq!(EventType::parse(s), Some(*t));
        }
        assert_eq!(EventType::parse("Created"), None);
    }
}
