//! Keeps each task's placement and its node's work in step with the task's spec.
//!
//! The record of placement is the task's status (`status.node`), written with CAS:
//! when two servers place the same task at once, one write wins and the other server
//! adopts the winner's choice. The node's work (`voiyd_work`, key `<node>.<task>`)
//! is derived from it and rewritten idempotently.

use crate::api::{resources, Ctx, Failure};
use crate::managed::Managed;
use crate::placement::{self, Candidate};
use crate::status;
use async_nats::jetstream::kv;
use futures::TryStreamExt;
use prost::Message;
use std::collections::HashMap;
use voiyd_messages::v1::{Assignment, Node, Task, TaskStatus};
use voiyd_messages::Resource;
use voiyd_nats::names;

/// Phase of a task that waits for a node.
pub const PENDING: &str = "Pending";
/// Phase of a task placed on a node that has not reported yet.
pub const SCHEDULED: &str = "Scheduled";

/// Places the task if it has no node yet, then writes its node's work. Returns the
/// task with its current status.
pub async fn sync_task(ctx: &Ctx, name: &str, kill: bool) -> Result<Task, Failure> {
    for _ in 0..8 {
        let task = resources::fetch::<Task>(ctx, name).await?;
        let current = status::read_versioned::<TaskStatus>(&ctx.status.0, "task", name).await?;
        let (mut st, rev) = match current {
            Some(v) => (v.status, v.revision),
            None => (TaskStatus::default(), 0),
        };
        if !st.node.is_empty() {
            write_work(ctx, &st.node, &task, kill).await?;
            let mut t = task;
            t.set_status(Some(st));
            return Ok(t);
        }
        let candidates = candidates(ctx).await?;
        let config = task.config.clone().unwrap_or_default();
        match placement::place(&config, &candidates) {
            Ok(node) => {
                st.node = node.clone();
                st.phase = SCHEDULED.to_string();
                st.reason = String::new();
                st.message = format!("placed on {node}");
                st.conditions =
                    crate::conditions::for_phase(&st.conditions, SCHEDULED, "", true, crate::now());
                if status::write(&ctx.status.0, "task", name, &st, rev)
                    .await?
                    .is_some()
                {
                    write_work(ctx, &node, &task, kill).await?;
                    ctx.events
                        .publish(
                            "task",
                            name,
                            "scheduled",
                            "Scheduled",
                            format!("placed on node {node}"),
                            None,
                        )
                        .await;
                    let mut t = task;
                    t.set_status(Some(st));
                    return Ok(t);
                }
            }
            Err(why) => {
                let message = why.to_string();
                let changed = st.phase != PENDING || st.message != message;
                st.phase = PENDING.to_string();
                st.reason = "Unschedulable".to_string();
                st.message = message;
                if changed {
                    st.conditions = crate::conditions::for_phase(
                        &st.conditions,
                        PENDING,
                        "Unschedulable",
                        false,
                        crate::now(),
                    );
                }
                if !changed
                    || status::write(&ctx.status.0, "task", name, &st, rev)
                        .await?
                        .is_some()
                {
                    let mut t = task;
                    t.set_status(Some(st));
                    return Ok(t);
                }
            }
        }
        // Someone else wrote the status first: read again and follow their decision.
    }
    Err(Failure::conflict(format!(
        "task {name} is being changed by others too often: retry"
    )))
}

async fn write_work(ctx: &Ctx, node: &str, task: &Task, kill: bool) -> Result<(), Failure> {
    let a = Assignment {
        task: Some(task.clone()),
        kill,
    };
    let key = names::work_key(node, task.name());
    ctx.work
        .put(&key, a.encode_to_vec().into())
        .await
        .map(|_| ())
        .map_err(|e| Failure::internal(format!("cannot write work {key}: {e}")))
}

/// Removes a deleted task's work from whichever node has it.
pub async fn unassign(ctx: &Ctx, task: &Task) {
    let suffix = format!(".{}", names::token(task.name()));
    let keys: Vec<String> = match ctx.work.keys().await {
        Ok(k) => k.try_collect().await.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(task = task.name(), error = %e, "cannot list work");
            return;
        }
    };
    for key in keys.into_iter().filter(|k| k.ends_with(&suffix)) {
        if let Err(e) = ctx.work.delete(&key).await {
            tracing::warn!(%key, error = %e, "cannot remove work");
        }
    }
}

/// Every node with its status and how many tasks it holds.
async fn candidates(ctx: &Ctx) -> Result<Vec<Candidate>, Failure> {
    let mut nodes = Node::store(&ctx.cluster).list().await?;
    let mut statuses = status::read_all::<Node>(&ctx.status).await?;
    let counts = work_counts(&ctx.work).await;
    Ok(nodes
        .iter_mut()
        .map(|n| {
            let s = statuses.remove(n.name());
            n.set_status(s);
            Candidate::from_node(n, counts.get(n.name()).copied().unwrap_or(0))
        })
        .collect())
}

async fn work_counts(work: &kv::Store) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let Ok(keys) = work.keys().await else {
        return counts;
    };
    let keys: Vec<String> = keys.try_collect().await.unwrap_or_default();
    for key in keys {
        if let Some((node, _)) = names::parse_work_key(&key) {
            *counts.entry(node).or_insert(0) += 1;
        }
    }
    counts
}

/// Retries placement of every task still waiting for a node.
pub async fn place_pending(ctx: &Ctx) -> Result<usize, Failure> {
    let statuses = status::read_all::<Task>(&ctx.status).await?;
    let mut placed = 0;
    for task in Task::store(&ctx.cluster).list().await? {
        let waiting = statuses.get(task.name()).is_none_or(|s| s.node.is_empty());
        if waiting {
            let t = sync_task(ctx, task.name(), false).await?;
            placed += usize::from(t.status.is_some_and(|s| !s.node.is_empty()));
        }
    }
    Ok(placed)
}
