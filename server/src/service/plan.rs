//! `<kind>.plan`: what applying a resource would do, written nowhere (`voiydctl apply
//! --dry-run`). The resource is admitted exactly as a create or update would admit it
//! (validation, policy, mounted volumes), compared with the stored one, and the tasks
//! it would place, move, replace or remove are decided on a copy of the scheduler's
//! view ([`crate::cache::view::View::preview`]) by the same placement code.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::schedule::sets::{end_state, global_task_name, template_hash, SET_LABEL};
use crate::service::resources;
use crate::service::sets::{global_nodes, members, set_task};
use crate::store::managed::Managed;
use std::any::Any;
use std::collections::BTreeSet;
use voiyd_messages::diff::spec_changes;
use voiyd_messages::v1::{ContainerSet, PlanReply, PlannedTask, Task};
use voiyd_messages::Resource;

/// Plans applying `r`.
pub async fn plan<R: Managed>(ctx: &Ctx, r: R) -> Result<PlanReply, ServerError> {
    let r: R = resources::admit_resource(ctx, r)?;
    crate::service::mounts::require_mounted(ctx, &r).await?;
    let stored = match resources::fetch::<R>(ctx, r.name()).await {
        Ok(s) => Some(s),
        Err(ServerError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let mut reply = PlanReply::default();
    match &stored {
        None => reply.action = "create".into(),
        Some(s) => {
            reply.changed = spec_changes(s, &r).into_iter().map(|c| c.path).collect();
            reply.action = if reply.changed.is_empty() {
                "unchanged"
            } else {
                "update"
            }
            .into();
        }
    }
    if reply.action == "unchanged" {
        return Ok(reply);
    }
    if !ctx
        .view
        .wait_ready(std::time::Duration::from_secs(10))
        .await
    {
        return Err(ServerError::unavailable(
            "the scheduler is still reading the cluster state: retry",
        ));
    }
    let any: &dyn Any = &r;
    if let Some(task) = any.downcast_ref::<Task>() {
        plan_task(ctx, task, &mut reply);
    } else if let Some(set) = any.downcast_ref::<ContainerSet>() {
        plan_set(ctx, set, &mut reply);
    }
    Ok(reply)
}

fn planned(p: crate::cache::view::Preview) -> PlannedTask {
    PlannedTask {
        name: p.task,
        node: p.node.unwrap_or_default(),
        reason: p.why,
        current_node: p.current.unwrap_or_default(),
    }
}

/// A task: where it would be placed, or whether its new spec moves it.
fn plan_task(ctx: &Ctx, task: &Task, reply: &mut PlanReply) {
    let mut task = task.clone();
    task.clear_status();
    reply.tasks = ctx
        .view
        .preview(&[], &[task])
        .into_iter()
        .map(planned)
        .collect();
}

/// A set: the tasks its rollout replaces or removes, and where the new ones would go
/// once those are gone.
fn plan_set(ctx: &Ctx, set: &ContainerSet, reply: &mut PlanReply) {
    let template = set.template.clone().unwrap_or_default();
    let hash = template_hash(&template);
    let tasks = ctx
        .view
        .tasks_by_label(SET_LABEL)
        .remove(set.name())
        .unwrap_or_default();
    let now = voiyd_messages::time::now();
    let min_ready = set.strategy.unwrap_or_default().min_ready_seconds;
    let members = members(set.name(), &tasks, min_ready, &now);
    let mut new_tasks = Vec::new();
    if set.mode.eq_ignore_ascii_case("global") {
        let wanted = global_nodes(ctx, &template);
        let mut covered = BTreeSet::new();
        for m in &members {
            if !wanted.contains(&m.node) || !covered.insert(m.node.clone()) {
                reply.removed.push(m.name.clone());
            } else if m.hash != hash || m.finished {
                reply.replaced.push(m.name.clone());
                covered.remove(&m.node);
            }
        }
        for node in wanted.difference(&covered) {
            let name = global_task_name(set.name(), node);
            new_tasks.push(set_task(set, &hash, &name, Some(node)));
        }
    } else {
        let end = end_state(set.replicas.unwrap_or(1), &hash, &members);
        let used: BTreeSet<u32> = members.iter().map(|m| m.index).collect();
        new_tasks = (0u32..)
            .filter(|i| !used.contains(i))
            .take(end.created)
            .map(|i| set_task(set, &hash, &format!("{}-{i}", set.name()), None))
            .collect();
        reply.replaced = end.replaced;
        reply.removed = end.removed;
    }
    let gone: Vec<String> = reply
        .replaced
        .iter()
        .chain(&reply.removed)
        .cloned()
        .collect();
    reply.tasks = ctx
        .view
        .preview(&gone, &new_tasks)
        .into_iter()
        .map(planned)
        .collect();
}
