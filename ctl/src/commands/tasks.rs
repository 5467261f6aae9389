//! `run`, `start`, `stop`: task actions that wait for the resulting state.

use crate::checks;
use crate::cli::{ActionArgs, RunArgs, StopArgs, WaitArgs};
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::flags;
use crate::ops;
use crate::wait::{wait_task, Goal};
use std::time::Duration;
use voiyd_messages::manifest::AnyResource;
use voiyd_messages::{Kind, Resource};
use voiyd_nats::api::ApiError;

/// The wait timeout, or None when not waiting.
pub fn wait_timeout(globals: &Globals, w: &WaitArgs) -> Option<Duration> {
    w.enabled().then_some(globals.wait_timeout)
}

fn only_tasks(kind: &str, verb: &str) -> Result<()> {
    match ops::parse_kind(kind)? {
        Kind::Task => Ok(()),
        other => Err(CtlError::Usage(format!(
            "{verb} works on tasks, not {}: use `voiydctl {verb} task NAME`",
            other.plural()
        ))),
    }
}

/// `run NAME --image REF ...`.
pub async fn run(globals: &Globals, args: &RunArgs) -> Result<()> {
    let task = flags::task_from_run(args).map_err(CtlError::Usage)?;
    checks::validate(&AnyResource::Task(task.clone())).map_err(CtlError::Invalid)?;
    let timeout = wait_timeout(globals, &args.wait);
    let session = connection::session(globals).await?;
    let created = match session.api.create(&task).await {
        Ok(t) => t,
        Err(ApiError::Conflict(_)) => {
            return Err(CtlError::Other(format!(
                "task {} already exists: delete it first, or change it with `voiydctl apply` or `voiydctl edit task {}`",
                args.name, args.name
            )))
        }
        Err(e) => return Err(e.into()),
    };
    outln!("task/{} created", args.name);
    if let Some(t) = timeout {
        let generation = created.meta().map(|m| m.generation).unwrap_or(0);
        wait_task(&session.api, &args.name, Goal::Running, generation, t).await?;
    }
    Ok(())
}

/// `start task NAME...`.
pub async fn start(globals: &Globals, args: &ActionArgs) -> Result<()> {
    only_tasks(&args.kind, "start")?;
    let timeout = wait_timeout(globals, &args.wait);
    let session = connection::session(globals).await?;
    for name in &args.names {
        let t = session.api.task_action("start", name, false).await?;
        outln!("task/{name} started");
        if let Some(to) = timeout {
            let generation = t.meta().map(|m| m.generation).unwrap_or(0);
            wait_task(&session.api, name, Goal::Running, generation, to).await?;
        }
    }
    Ok(())
}

/// `stop task NAME... [--force]`.
pub async fn stop(globals: &Globals, args: &StopArgs) -> Result<()> {
    only_tasks(&args.kind, "stop")?;
    let timeout = wait_timeout(globals, &args.wait);
    let session = connection::session(globals).await?;
    for name in &args.names {
        // force asks the server for SIGKILL without the grace period.
        let t = session.api.task_action("stop", name, args.force).await?;
        outln!("task/{name} stopping");
        if let Some(to) = timeout {
            let generation = t.meta().map(|m| m.generation).unwrap_or(0);
            wait_task(&session.api, name, Goal::Stopped, generation, to).await?;
        }
    }
    Ok(())
}
