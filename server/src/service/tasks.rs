//! Task verbs: create/update/delete also keep the node's work in step; start, stop
//! and kill change the desired run state.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::assign;
use crate::service::resources::{self, Change};
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::{DeleteReply, DeleteRequest, Task, TaskActionRequest};
use voiyd_messages::Resource;

/// Creates a task and places it.
pub async fn create(ctx: &Ctx, task: Task) -> Result<Task, ServerError> {
    let task = resources::create::<Task>(ctx, task).await?;
    assign::sync_fetched(ctx, task, false, false).await
}

/// Updates (or patches) a task and hands the new spec to its node; a spec that no
/// longer fits its node (selector, affinity, resources, host ports) moves the task: its
/// node stops it within its grace period and it is placed again.
pub async fn update(ctx: &Ctx, change: Change<Task>) -> Result<Task, ServerError> {
    let task = match change {
        Change::Patch(p) => resources::patch::<Task>(ctx, &p).await?,
        Change::Replace(t) => resources::update::<Task>(ctx, t).await?,
    };
    if let Some((node, why)) = ctx.view.misfit_on_its_node(&task) {
        let detail = format!("the new spec does not fit it ({})", why.as_str());
        assign::move_task(ctx, task.name(), &node, Reason::SpecChanged, Some(&detail)).await?;
    }
    assign::sync_task(ctx, task.name(), false).await
}

/// Deletes a task: its spec, its status and its node's work (the node then stops the
/// container within the task's grace period, or at once with `force`, and removes it).
pub async fn delete(ctx: &Ctx, req: &DeleteRequest) -> Result<DeleteReply, ServerError> {
    // Read where it runs before the status goes with the spec.
    let placed = crate::store::status::read::<Task>(&ctx.status, &req.name).await?;
    let mut task = resources::delete::<Task>(ctx, req).await?;
    task.status = placed;
    assign::unassign(ctx, &task, req.force).await;
    Ok(resources::deleted(&req.name))
}

/// start: desired state running; stop: stopped (SIGTERM, then SIGKILL after the
/// grace period); kill or stop --force: stopped by SIGKILL at once.
pub async fn action(ctx: &Ctx, verb: &str, req: &TaskActionRequest) -> Result<Task, ServerError> {
    let mut task = resources::fetch::<Task>(ctx, &req.name).await?;
    let stopped = verb != "start";
    let kill = verb == "kill" || (verb == "stop" && req.force);
    let rv = task.meta().map(|m| m.resource_version).unwrap_or(0);
    task.config.get_or_insert_with(Default::default).stopped = stopped;
    let task = resources::write_update(ctx, task, rv).await?;
    assign::sync_task(ctx, task.name(), kill).await
}

/// [`delete`] by name for the controllers: a task already gone is no failure, and any
/// other failure is retried by their next pass (so only logged).
pub async fn delete_quietly(ctx: &Ctx, task: &str) {
    let req = DeleteRequest {
        name: task.to_string(),
        ..Default::default()
    };
    if let Err(e) = delete(ctx, &req).await {
        tracing::debug!(%task, error = %e.message(), "task not deleted");
    }
}
