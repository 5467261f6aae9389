//! Task conditions derived from the phase, with the time each last changed.

use voiyd_messages::condition::{self, ConditionType};
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::Condition;
use voiyd_messages::Timestamp;

/// The task's conditions after a report in `phase` for a task placed on a node, keeping
/// the previous transition time of every condition whose status did not change.
pub fn for_phase(
    prev: &[Condition],
    phase: &str,
    reason: &str,
    scheduled: bool,
    now: Timestamp,
) -> Vec<Condition> {
    let want = [
        (
            ConditionType::Scheduled,
            scheduled,
            if scheduled {
                Reason::Scheduled.as_str()
            } else {
                Reason::Unschedulable.as_str()
            },
        ),
        (
            ConditionType::Ready,
            phase == voiyd_messages::phase::TaskPhase::Running,
            if reason.is_empty() { phase } else { reason },
        ),
    ];
    want.iter()
        .map(|(ty, ok, why)| {
            let status = condition::status(*ok);
            let old = prev.iter().find(|c| c.r#type == *ty);
            let since = match old {
                Some(c) if c.status == status => c.last_transition_time,
                _ => Some(now),
            };
            Condition {
                r#type: ty.to_string(),
                status: status.to_string(),
                reason: why.to_string(),
                msg: String::new(),
                last_transition_time: since,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp {
            seconds: s,
            nanos: 0,
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let c1 = for_phase(&[], "Pulling", "Pulling", true, t(1));
        assert_eq!(c1[0].status, "True");
        assert_eq!(c1[1].status, "False");
        let c2 = for_phase(&c1, "Starting", "Starting", true, t(2));
        assert_eq!(
            c2[1].last_transition_time,
            Some(t(1)),
            "still not ready: time kept"
        );
        let c3 = for_phase(&c2, "Running", "Started", true, t(3));
        assert_eq!(c3[1].status, "True");
        assert_eq!(c3[1].last_transition_time, Some(t(3)));
        assert_eq!(c3[0].last_transition_time, Some(t(1)));
        let c4 = for_phase(&c3, "Failed", "Error", true, t(4));
        assert_eq!(
            (c4[1].status.as_str(), c4[1].reason.as_str()),
            ("False", "Error")
        );
        assert_eq!(c4[1].last_transition_time, Some(t(4)));
    }
}
