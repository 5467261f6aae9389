//! Keeps each task's placement and its node's work in step with the task's spec.
//!
//! The record of placement is the task's status (`status.node`), written with CAS:
//! when two servers place the same task at once, one write wins and the other server
//! adopts the winner's choice. The node's work (`voiyd_work`, key `<node>.<task>`)
//! is derived from it and rewritten idempotently. Decisions come from the in-memory
//! [`crate::cache::view::View`], kept current by watches.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::resources;
use crate::store::managed::Managed;
use crate::store::status;
use futures::StreamExt;
use std::time::Duration;
use voiyd_messages::event::EventType;
use voiyd_messages::v1::{Assignment, Task, TaskStatus};
use voiyd_messages::Resource;
use voiyd_nats::names;

use voiyd_messages::phase::TaskPhase;
use voiyd_messages::reason::Reason;

/// How long a request waits for a freshly started server's view to catch up.
const VIEW_WAIT: Duration = Duration::from_secs(10);

/// Places the task if it has no node yet, then writes its node's work. Returns the
/// task with its current status.
pub async fn sync_task(ctx: &Ctx, name: &str, kill: bool) -> Result<Task, ServerError> {
    let task = resources::fetch::<Task>(ctx, name).await?;
    sync_fetched(ctx, task, kill, true).await
}

/// [`sync_task`] for a task just read or written. `status_may_exist` false (a task
/// this request just created) skips reading a status that cannot be there yet.
pub async fn sync_fetched(
    ctx: &Ctx,
    task: Task,
    kill: bool,
    status_may_exist: bool,
) -> Result<Task, ServerError> {
    let span = tracing::info_span!("place", task = %task.name());
    tracing::Instrument::instrument(sync_in_span(ctx, task, kill, status_may_exist), span).await
}

async fn sync_in_span(
    ctx: &Ctx,
    task: Task,
    kill: bool,
    status_may_exist: bool,
) -> Result<Task, ServerError> {
    let name = task.name().to_string();
    // The volumes it mounts, read once: their selectors constrain placement, and template
    // volumes travel with the work.
    let volumes = crate::service::mounts::for_task(ctx, &task).await?;
    let mut read_status = status_may_exist;
    let mut placed_as = None;
    for _ in 0..8 {
        let (mut st, rev) = if read_status {
            match status::read_versioned::<TaskStatus>(&ctx.status.0, "task", &name).await? {
                Some(v) => (v.status, v.revision),
                None => (TaskStatus::default(), 0),
            }
        } else {
            (TaskStatus::default(), 0)
        };
        read_status = true;
        if !st.node.is_empty() {
            let written = write_work(ctx, &st.node, &task, kill, &volumes).await?;
            confirm_work(ctx, &st.node, &name, written).await?;
            let mut t = task;
            t.set_status(Some(st));
            return Ok(t);
        }
        if !ctx.view.wait_ready(VIEW_WAIT).await {
            return Err(ServerError::unavailable(
                "the scheduler is still reading the cluster state: retry",
            ));
        }
        let placed_as = placed_as.get_or_insert_with(|| with_volume_selectors(&task, &volumes));
        match ctx.view.reserve(placed_as) {
            Ok(node) => {
                st.node = node.clone();
                st.phase = TaskPhase::Scheduled.into();
                st.reason = String::new();
                st.message = format!("placed on {node}");
                st.conditions = crate::schedule::conditions::for_phase(
                    &st.conditions,
                    TaskPhase::Scheduled.as_str(),
                    "",
                    true,
                    None,
                    voiyd_messages::time::now(),
                );
                let outcome = status::write_patiently(&ctx.status.0, "task", &name, &st, rev).await;
                if outcome.is_err() {
                    // The reservation must not outlive a failed write: a reserved task is
                    // skipped by this server's placer and repairs, and the status watch
                    // brings the placement back if the write landed after all.
                    ctx.view.release(&name, &node);
                }
                if let Some(written) = outcome? {
                    ctx.view.saw_task_status(&name, &st, written);
                    // Just placed with CAS: only a failover move within this instant
                    // could make the write stale, so the create path skips the re-read
                    // (the stale-work sweep removes such work later).
                    write_work(ctx, &node, &task, kill, &volumes).await?;
                    ctx.events
                        .publish(
                            "task",
                            &name,
                            EventType::Scheduled.as_str(),
                            Reason::Scheduled.as_str(),
                            format!("placed on node {node}"),
                            None,
                        )
                        .await;
                    let mut t = task;
                    t.set_status(Some(st));
                    return Ok(t);
                }
                ctx.view.release(&name, &node);
            }
            Err(why) => {
                let message = why.to_string();
                let reason = why.reason();
                let changed = st.phase != TaskPhase::Pending
                    || st.message != message
                    || st.reason != reason.as_str();
                st.phase = TaskPhase::Pending.into();
                st.reason = reason.into();
                st.message = message;
                if changed {
                    st.conditions = crate::schedule::conditions::for_phase(
                        &st.conditions,
                        TaskPhase::Pending.as_str(),
                        reason.as_str(),
                        false,
                        None,
                        voiyd_messages::time::now(),
                    );
                }
                let written = if changed {
                    status::write(&ctx.status.0, "task", &name, &st, rev).await?
                } else {
                    None
                };
                if !changed || written.is_some() {
                    if let Some(written) = written {
                        ctx.view.saw_task_status(&name, &st, written);
                    }
                    let mut t = task;
                    t.set_status(Some(st));
                    return Ok(t);
                }
            }
        }
        // Someone else wrote the status first: read again and follow their decision.
    }
    Err(ServerError::conflict(format!(
        "task {name} is being changed by others too often: retry"
    )))
}

/// `task` as placement sees it: the node selectors of the volumes it mounts added to its
/// own, as affinity expressions that must all hold (a volume's `nodeSelector` says which
/// nodes may hold its data; a task asking for other nodes then fits none).
fn with_volume_selectors(task: &Task, volumes: &[voiyd_messages::v1::Volume]) -> Task {
    let mut t = task.clone();
    if let Some(config) = t.config.as_mut() {
        for v in volumes {
            for (k, val) in v.config.iter().flat_map(|c| &c.node_selector) {
                config.node_affinity.push(format!("{k} in ({val})"));
            }
        }
    }
    t
}

/// Writes `task`'s work on `node` with the volumes it mounts; returns the entry's revision.
async fn write_work(
    ctx: &Ctx,
    node: &str,
    task: &Task,
    kill: bool,
    volumes: &[voiyd_messages::v1::Volume],
) -> Result<u64, ServerError> {
    let a = Assignment {
        task: Some(task.clone()),
        kill,
        // Template volumes travel with the work: nodes cannot read the volume specs.
        volumes: volumes.to_vec(),
        // The node's work on it joins the trace of the request that placed it.
        trace_parent: voiyd_telemetry::traceparent().unwrap_or_default(),
    };
    crate::service::work::put(ctx, node, task.name(), a).await
}

/// After rewriting `task`'s work (at revision `written`) for the node its status named
/// when read: if the status no longer names that node (moved, or deleted, by another
/// server since the read), the work just written is stale and goes again, unless it was
/// rewritten since (by a server that placed the task on that node anew: that work is
/// current). Whoever moves a task removes the old node's work after its status write;
/// this covers a write that lands after that.
async fn confirm_work(ctx: &Ctx, node: &str, task: &str, written: u64) -> Result<(), ServerError> {
    let now = status::read_versioned::<TaskStatus>(&ctx.status.0, "task", task).await?;
    if now.is_none_or(|v| v.status.node != node) {
        tracing::debug!(%task, %node, "task moved while its work was written; removing it");
        crate::service::work::remove_at(ctx, node, task, written).await;
    }
    Ok(())
}

/// Removes a task's work from `node` (best effort: the node's resync also drops work
/// whose task is gone).
pub async fn remove_work(ctx: &Ctx, node: &str, task: &str) {
    crate::service::work::remove(ctx, node, task, false).await
}

/// Removes a deleted task's work from the node that has it (`kill`: the node stops it
/// by SIGKILL at once).
pub async fn unassign(ctx: &Ctx, task: &Task, kill: bool) {
    let st = task.status.as_ref();
    let node = match st.filter(|s| !s.node.is_empty()) {
        Some(s) => Some(s.node.clone()),
        None => status::read_versioned::<TaskStatus>(&ctx.status.0, "task", task.name())
            .await
            .ok()
            .flatten()
            .map(|v| v.status.node)
            .filter(|n| !n.is_empty()),
    };
    match node {
        Some(n) => crate::service::work::remove(ctx, &n, task.name(), kill).await,
        None => {
            // No status: look in every node's work (rare: a task deleted mid-placement).
            let suffix = format!(".{}", names::token(task.name()));
            if let Ok(keys) = ctx.work.keys().await {
                let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
                for key in keys.into_iter().filter(|k| k.ends_with(&suffix)) {
                    if let Some((node, task)) = names::parse_work_key(&key) {
                        crate::service::work::remove(ctx, &node, &task, kill).await;
                    }
                }
            }
        }
    }
}

/// Moves `task` off `from` if its status still says it is there: the status is reset
/// to Pending with the reschedule counted (CAS), the old node's work is removed and
/// the task is placed again. `detail` says more for people. Returns whether this call
/// moved it.
pub async fn move_task(
    ctx: &Ctx,
    task: &str,
    from: &str,
    reason: Reason,
    detail: Option<&str>,
) -> Result<bool, ServerError> {
    let Some(v) = status::read_versioned::<TaskStatus>(&ctx.status.0, "task", task).await? else {
        return Ok(false);
    };
    if v.status.node != from {
        return Ok(false);
    }
    let st = TaskStatus {
        phase: voiyd_messages::phase::TaskPhase::Pending.into(),
        reason: Reason::Rescheduled.into(),
        message: match detail {
            Some(d) => format!("{reason}: moving off node {from}: {d}"),
            None => format!("{reason}: moving off node {from}"),
        },
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
    remove_work(ctx, from, task).await;
    ctx.events
        .publish(
            "task",
            task,
            EventType::Rescheduled.as_str(),
            reason.as_str(),
            format!("moved off node {from}"),
            None,
        )
        .await;
    match sync_task(ctx, task, false).await {
        Ok(_) => {}
        Err(e) if e.code() == voiyd_nats::api::ErrorCode::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(true)
}
