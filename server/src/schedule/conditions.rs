//! Task conditions derived from the phase, with the time each last changed.

use voiyd_messages::condition::{self, ConditionType};
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::Condition;
use voiyd_messages::Timestamp;

/// The task's conditions after a report in `phase` for a task placed on a node, keeping
/// the previous transition time of every condition whose status did not change.
/// `node_ready` is the node's own `Ready` condition, sent for a task with a readiness or
/// startup probe: such a task is ready only while it runs and the node says so.
pub fn for_phase(
    prev: &[Condition],
    phase: &str,
    reason: &str,
    scheduled: bool,
    node_ready: Option<&Condition>,
    now: Timestamp,
) -> Vec<Condition> {
    let running = phase == voiyd_messages::phase::TaskPhase::Running;
    let probed = node_ready.filter(|_| running);
    let ready = running && probed.is_none_or(|c| c.status == condition::status(true));
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
            ready,
            match probed {
                Some(c) if !c.reason.is_empty() => c.reason.as_str(),
                _ if reason.is_empty() => phase,
                _ => reason,
            },
        ),
    ];
    let msg = |ty: &ConditionType| match (ty, probed) {
        (ConditionType::Ready, Some(c)) => c.msg.clone(),
        _ => String::new(),
    };
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
                msg: msg(ty),
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
        let c1 = for_phase(&[], "Pulling", "Pulling", true, None, t(1));
        assert_eq!(c1[0].status, "True");
        assert_eq!(c1[1].status, "False");
        let c2 = for_phase(&c1, "Starting", "Starting", true, None, t(2));
        assert_eq!(
            c2[1].last_transition_time,
            Some(t(1)),
            "still not ready: time kept"
        );
        let c3 = for_phase(&c2, "Running", "Started", true, None, t(3));
        assert_eq!(c3[1].status, "True");
        assert_eq!(c3[1].last_transition_time, Some(t(3)));
        assert_eq!(c3[0].last_transition_time, Some(t(1)));
        let c4 = for_phase(&c3, "Failed", "Error", true, None, t(4));
        assert_eq!(
            (c4[1].status.as_str(), c4[1].reason.as_str()),
            ("False", "Error")
        );
        assert_eq!(c4[1].last_transition_time, Some(t(4)));
    }

    #[test]
    fn a_probed_task_is_ready_only_when_its_node_says_so() {
        let node = |ok: bool| Condition {
            r#type: "Ready".into(),
            status: condition::status(ok).into(),
            reason: if ok { "Started" } else { "Unhealthy" }.into(),
            msg: if ok {
                ""
            } else {
                "readiness probe failed: exit code 1"
            }
            .into(),
            last_transition_time: None,
        };
        let c = for_phase(&[], "Running", "Started", true, Some(&node(false)), t(1));
        assert_eq!(
            (c[1].status.as_str(), c[1].reason.as_str()),
            ("False", "Unhealthy")
        );
        assert!(c[1].msg.contains("exit code 1"));
        let c = for_phase(&c, "Running", "Started", true, Some(&node(true)), t(2));
        assert_eq!(c[1].status, "True");
        assert_eq!(c[1].last_transition_time, Some(t(2)));
        let c = for_phase(&c, "Pending", "BackOff", true, Some(&node(true)), t(3));
        assert_eq!(c[1].status, "False", "not running is never ready");
    }
}
