//! Failure handling: node liveness leases, marking silent nodes NotReady, and moving
//! the tasks of lost, deleted or drained nodes to other nodes.
//!
//! Every step is level-triggered and written with CAS, so all servers may run it at
//! once: a task moves only if its status still names the node it is moved from.

use crate::api::{Ctx, Failure};
use crate::status;
use async_nats::jetstream::kv;
use prost::Message;
use std::sync::OnceLock;
use std::time::Duration;
use voiyd_messages::v1::{Lease, Meta, NodeStatus, TaskStatus};
use voiyd_messages::Timestamp;
use voiyd_nats::names;

/// Node leases this server wrote last, with their revisions.
static LAST_LEASES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, (Lease, u64)>>,
> = std::sync::LazyLock::new(Default::default);

/// Lifetime of a node lease that is not renewed (the lease bucket's TTL).
static LEASE_TTL: OnceLock<Duration> = OnceLock::new();

/// Records the lease bucket's TTL (at start-up).
pub fn set_lease_ttl(ttl: Duration) {
    let _ = LEASE_TTL.set(ttl);
}

fn lease_ttl() -> Duration {
    LEASE_TTL.get().copied().unwrap_or(Duration::from_secs(10))
}

/// `t` plus `d` (whole seconds).
pub fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp {
        seconds: t.seconds + d.as_secs() as i64,
        nanos: t.nanos,
    }
}

fn millis(t: &Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// Whether a lease this server renewed at `renewed` is due for renewal at `now`: once
/// half its lifetime has passed. Renewing on every heartbeat would double the writes
/// heartbeats cost, and a lease renewed at half-life never comes near expiring.
pub fn lease_due(renewed: Option<&Timestamp>, now: &Timestamp, ttl: Duration) -> bool {
    renewed.is_none_or(|r| millis(now) - millis(r) >= ttl.as_millis() as i64 / 2)
}

/// Acquires or renews the liveness lease `node.<node>` on a heartbeat: create =
/// acquire, update at the read revision = renew (see [`lease_due`]). A lease that
/// expires (no heartbeat for the bucket's TTL) disappears from the bucket.
pub async fn renew_node_lease(ctx: &Ctx, node: &str) {
    let kv = &ctx.cluster.leases;
    let key = names::node_lease_key(node);
    let now = crate::now();
    let ttl = lease_ttl();
    // The lease this server wrote last: renewing it needs no read unless another
    // server renewed it since (then the CAS fails and we read).
    let mut cached = LAST_LEASES.lock().expect("lease cache").get(&key).cloned();
    if cached
        .as_ref()
        .is_some_and(|(l, _)| !lease_due(l.renewed.as_ref(), &now, ttl))
    {
        return;
    }
    for _ in 0..3 {
        let current = match cached.take() {
            Some(c) => Some(c),
            None => match kv.entry(&key).await {
                Ok(e) => e
                    .filter(|e| e.operation == kv::Operation::Put)
                    .map(|e| (Lease::decode(e.value).unwrap_or_default(), e.revision)),
                Err(e) => {
                    tracing::debug!(%key, error = %e, "cannot read lease");
                    return;
                }
            },
        };
        let (mut lease, rev) = match current {
            Some(c) => c,
            None => (
                Lease {
                    version: "lease/v1".into(),
                    meta: Some(Meta {
                        name: key.clone(),
                        created: Some(now),
                        ..Default::default()
                    }),
                    holder: node.to_string(),
                    acquired: Some(now),
                    ..Default::default()
                },
                0,
            ),
        };
        if rev != 0 {
            lease.renewals += 1;
        }
        lease.renewed = Some(now);
        lease.expires = Some(plus(now, ttl));
        lease.ttl_seconds = ttl.as_secs() as u32;
        let body = lease.encode_to_vec().into();
        let written = if rev == 0 {
            kv.create(&key, body).await.ok()
        } else {
            kv.update(&key, body, rev).await.ok()
        };
        let mut cache = LAST_LEASES.lock().expect("lease cache");
        match written {
            Some(new_rev) => {
                cache.insert(key, (lease, new_rev));
                return;
            }
            None => {
                cache.remove(&key);
            }
        }
    }
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
    phase == "Ready" && now - last_heartbeat.max(observed_from) > timeout.as_millis() as i64
}

/// Marks Ready nodes NotReady that [`is_lost`] says are lost.
pub async fn mark_lost_nodes(
    ctx: &Ctx,
    timeout: Duration,
    observed_from: &Timestamp,
) -> Result<(), Failure> {
    let now = millis(&crate::now());
    let from = millis(observed_from);
    for n in ctx.view.nodes() {
        let last = n.last_heartbeat.as_ref().map(millis).unwrap_or(0);
        if !is_lost(&n.phase, last, from, now, timeout) {
            continue;
        }
        let node = n.candidate.name.clone();
        let Some(v) = status::read_versioned::<NodeStatus>(&ctx.status.0, "node", &node).await?
        else {
            continue;
        };
        let last = v.status.last_heartbeat.as_ref().map(millis).unwrap_or(0);
        if !is_lost(&v.status.phase, last, from, now, timeout) {
            continue; // a heartbeat arrived meanwhile
        }
        let mut st = v.status.clone();
        st.phase = "NotReady".into();
        st.status = format!("no heartbeat for {:.1}s", (now - last) as f64 / 1000.0);
        if status::write(&ctx.status.0, "node", &node, &st, v.revision)
            .await?
            .is_some()
        {
            tracing::warn!(%node, "node missed its heartbeats: NotReady");
            ctx.events
                .publish(
                    "node",
                    &node,
                    "notready",
                    "NodeLost",
                    st.status.clone(),
                    None,
                )
                .await;
        }
    }
    Ok(())
}

/// Why the tasks of a node must move, if they must.
pub fn evacuation_reason(
    registered: bool,
    phase: &str,
    unschedulable: bool,
    draining: bool,
) -> Option<&'static str> {
    if !registered {
        Some("NodeDeleted")
    } else if phase == "NotReady" {
        Some("NodeLost")
    } else if unschedulable && draining {
        Some("NodeDrained")
    } else {
        None
    }
}

/// Label a drained node carries: its tasks are moved away while it is cordoned.
pub const DRAIN_LABEL: &str = "voiyd.io/drain";

/// Moves every task of lost, deleted and drained nodes. Returns how many moved.
pub async fn evacuate(ctx: &Ctx) -> usize {
    let mut moved = 0;
    // Before the view has read every node record, every node would look deleted.
    if !ctx.view.wait_ready(Duration::from_millis(1)).await {
        return 0;
    }
    for n in ctx.view.nodes() {
        let draining = n.candidate.labels.contains_key(DRAIN_LABEL);
        let Some(reason) =
            evacuation_reason(n.registered, &n.phase, n.candidate.unschedulable, draining)
        else {
            continue;
        };
        // A status without a node record and without tasks is just history.
        let tasks = ctx.view.tasks_on(&n.candidate.name);
        if tasks.is_empty() {
            continue;
        }
        // The view learns of a new node's record and of the tasks placed on it through
        // different watches: a task status can arrive first. Only a record that is
        // really gone means deleted.
        if reason == "NodeDeleted" && node_record_exists(ctx, &n.candidate.name).await {
            continue;
        }
        for (task, phase) in tasks {
            if phase == "Succeeded" {
                continue; // finished: nothing to run elsewhere
            }
            match move_task(ctx, &task, &n.candidate.name, reason).await {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(%task, error = %e.message, "cannot move task"),
            }
        }
    }
    moved
}

/// Whether the node's record exists in `voiyd_nodes` (a failed read counts as yes:
/// moving tasks needs certainty).
async fn node_record_exists(ctx: &Ctx, node: &str) -> bool {
    use crate::managed::Managed;
    voiyd_messages::v1::Node::store(&ctx.cluster)
        .get(node)
        .await
        .map_or(true, |n| n.is_some())
}

/// Moves `task` off `from` if its status still says it is there: the status is reset
/// to Pending with the reschedule counted (CAS), the old node's work is removed and
/// the task is placed again. Returns whether this call moved it.
pub async fn move_task(ctx: &Ctx, task: &str, from: &str, reason: &str) -> Result<bool, Failure> {
    let Some(v) = status::read_versioned::<TaskStatus>(&ctx.status.0, "task", task).await? else {
        return Ok(false);
    };
    if v.status.node != from {
        return Ok(false);
    }
    let st = TaskStatus {
        phase: crate::scheduler::PENDING.into(),
        reason: "Rescheduled".into(),
        message: format!("{reason}: moving off node {from}"),
        reschedule_count: v.status.reschedule_count + 1,
        last_reschedule_reason: format!("{reason}: node {from}"),
        conditions: v.status.conditions.clone(),
        ..Default::default()
    };
    let Some(written) = status::write(&ctx.status.0, "task", task, &st, v.revision).await? else {
        return Ok(false);
    };
    ctx.view.saw_task_status(task, &st, written);
    tracing::info!(%task, node = %from, %reason, "moving task");
    crate::scheduler::remove_work(ctx, from, task).await;
    ctx.events
        .publish(
            "task",
            task,
            "rescheduled",
            reason,
            format!("moved off node {from}"),
            None,
        )
        .await;
    match crate::scheduler::sync_task(ctx, task, false).await {
        Ok(_) => {}
        Err(e) if e.code == voiyd_nats::api::ErrorCode::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_nodes_are_evacuated() {
        assert_eq!(
            evacuation_reason(false, "Ready", false, false),
            Some("NodeDeleted")
        );
        assert_eq!(
            evacuation_reason(true, "NotReady", false, false),
            Some("NodeLost")
        );
        assert_eq!(
            evacuation_reason(true, "Ready", true, true),
            Some("NodeDrained")
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
    fn lease_expiry_is_renewal_plus_ttl() {
        let t = Timestamp {
            seconds: 100,
            nanos: 5,
        };
        assert_eq!(plus(t, Duration::from_secs(10)).seconds, 110);
        assert_eq!(
            millis(&Timestamp {
                seconds: 2,
                nanos: 500_000_000
            }),
            2500
        );
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
