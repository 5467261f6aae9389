//! Failure handling: node liveness leases, marking silent nodes NotReady, and moving
//! the tasks of lost, deleted or drained nodes to other nodes.
//!
//! Every step is level-triggered and written with CAS, so all servers may run it at
//! once: a task moves only if its status still names the node it is moved from.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::schedule::liveness::{evacuation_reason, is_lost, lease_due, DRAIN_LABEL};
use crate::store::status;
use async_nats::jetstream::kv;
use prost::Message;
use std::sync::OnceLock;
use std::time::Duration;
use voiyd_messages::event::EventType;
use voiyd_messages::reason::Reason;
use voiyd_messages::time::{millis, plus};
use voiyd_messages::v1::{Lease, Meta, NodeStatus};
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

/// Acquires or renews the liveness lease `node.<node>` on a heartbeat: create =
/// acquire, update at the read revision = renew (see [`lease_due`]). A lease that
/// expires (no heartbeat for the bucket's TTL) disappears from the bucket.
pub async fn renew_node_lease(ctx: &Ctx, node: &str) {
    let kv = &ctx.cluster.leases;
    let key = names::node_lease_key(node);
    let now = voiyd_messages::time::now();
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

/// Marks Ready nodes NotReady that [`is_lost`] says are lost.
pub async fn mark_lost_nodes(
    ctx: &Ctx,
    timeout: Duration,
    observed_from: &Timestamp,
) -> Result<(), ServerError> {
    let now = millis(&voiyd_messages::time::now());
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
        st.phase = voiyd_messages::phase::NodePhase::NotReady.into();
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
                    EventType::NotReady.as_str(),
                    Reason::NodeLost.as_str(),
                    st.status.clone(),
                    None,
                )
                .await;
        }
    }
    Ok(())
}

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
        if reason == Reason::NodeDeleted && node_record_exists(ctx, &n.candidate.name).await {
            continue;
        }
        for (task, phase) in tasks {
            if phase == voiyd_messages::phase::TaskPhase::Succeeded {
                continue; // finished: nothing to run elsewhere
            }
            match crate::service::assign::move_task(ctx, &task, &n.candidate.name, reason, None)
                .await
            {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(%task, error = %e.message(), "cannot move task"),
            }
        }
    }
    moved
}

/// Whether the node's record exists in `voiyd_nodes` (a failed read counts as yes:
/// moving tasks needs certainty).
async fn node_record_exists(ctx: &Ctx, node: &str) -> bool {
    use crate::store::managed::Managed;
    voiyd_messages::v1::Node::store(&ctx.cluster)
        .get(node)
        .await
        .map_or(true, |n| n.is_some())
}
