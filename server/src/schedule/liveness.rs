//! Node liveness, decided: when a lease is due for renewal, when a silent node is lost,
//! and why a node's tasks must move. Pure; [`crate::controllers::failover`] acts on it.

use std::time::Duration;
use voiyd_messages::reason::Reason;
use voiyd_messages::time::millis;
use voiyd_messages::Timestamp;

/// Whether a lease this server renewed at `renewed` is due for renewal at `now`: once
/// half its lifetime has passed. Renewing on every heartbeat would double the writes
/// heartbeats cost, and a lease renewed at half-life never comes near expiring.
pub fn lease_due(renewed: Option<&Timestamp>, now: &Timestamp, ttl: Duration) -> bool {
    renewed.is_none_or(|r| millis(now) - millis(r) >= ttl.as_millis() as i64 / 2)
}

/// How long after this server (re)connects to NATS before it judges nodes by their
/// silence: their own reconnect (backoff capped at 2 s, see
/// [`voiyd_nats::connect::reconnect_delay`]) plus a heartbeat.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(3);

/// Whether a Ready node is lost: silent for longer than `timeout` *while this server
/// could have heard it*. `observed_from` (ms) is when this server last (re)connected
/// plus [`RECONNECT_GRACE`]: a heartbeat missed while the control plane itself was
/// away (a server restart, a NATS outage) says nothing about the node, and counting it
/// would move every task of the cluster after every outage.
pub fn is_lost(
    phase: &str,
    last_heartbeat: i64,
    observed_from: i64,
    now: i64,
    timeout: Duration,
) -> bool {
    phase == voiyd_messages::phase::NodePhase::Ready
        && now - last_heartbeat.max(observed_from) > timeout.as_millis() as i64
}

/// Why the tasks of a node must move, if they must.
pub fn evacuation_reason(
    registered: bool,
    phase: &str,
    unschedulable: bool,
    draining: bool,
) -> Option<Reason> {
    if !registered {
        Some(Reason::NodeDeleted)
    } else if phase == voiyd_messages::phase::NodePhase::NotReady {
        Some(Reason::NodeLost)
    } else if unschedulable && draining {
        Some(Reason::NodeDrained)
    } else {
        None
    }
}

/// Label a drained node carries: its tasks are moved away while it is cordoned.
pub const DRAIN_LABEL: &str = voiyd_messages::labels::DRAIN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_nodes_are_evacuated() {
        assert_eq!(
            evacuation_reason(false, "Ready", false, false),
            Some(Reason::NodeDeleted)
        );
        assert_eq!(
            evacuation_reason(true, "NotReady", false, false),
            Some(Reason::NodeLost)
        );
        assert_eq!(
            evacuation_reason(true, "Ready", true, true),
            Some(Reason::NodeDrained)
        );
        // Cordoned alone keeps its tasks; a drain label without cordon does nothing.
        assert_eq!(evacuation_reason(true, "Ready", true, false), None);
        assert_eq!(evacuation_reason(true, "Ready", false, true), None);
        assert_eq!(evacuation_reason(true, "", false, false), None);
    }

    #[test]
    fn silence_counts_only_while_the_server_could_hear() {
        let t = Duration::from_secs(5);
        // Heard 6 s ago, listening all along: lost.
        assert!(is_lost("Ready", 1_000, 0, 7_000, t));
        assert!(!is_lost("Ready", 2_000, 0, 7_000, t));
        // Silent for a minute, but this server only listens again since 2 s ago: not yet.
        assert!(!is_lost("Ready", 0, 58_000, 60_000, t));
        assert!(is_lost("Ready", 0, 54_000, 60_000, t));
        // Only Ready nodes become lost.
        assert!(!is_lost("NotReady", 0, 0, 60_000, t));
    }

    #[test]
    fn a_lease_is_renewed_from_half_its_lifetime() {
        let at = |seconds| Timestamp { seconds, nanos: 0 };
        let ttl = Duration::from_secs(10);
        assert!(lease_due(None, &at(100), ttl));
        assert!(!lease_due(Some(&at(100)), &at(100), ttl));
        assert!(!lease_due(Some(&at(100)), &at(104), ttl));
        assert!(lease_due(Some(&at(100)), &at(105), ttl));
        assert!(lease_due(Some(&at(100)), &at(130), ttl));
    }
}
