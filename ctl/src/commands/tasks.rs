//! `run`, `start`, `stop`: task actions that wait for the resulting state.

use crate::checks;
use crate::cli::{ActionArgs, RunArgs, StopArgs, WaitArgs};
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use crate::flags;
use crate::ops;
use crate::wait::{wait_task, wait_task_showing, Goal};
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
    let mut task = flags::task_from_run(args).map_err(CtlError::Usage)?;
    if args.rm {
        let config = task.config.get_or_insert_with(Default::default);
        match config.restart_policy.as_str() {
            "" => config.restart_policy = "never".into(),
            "always" => {
                return Err(CtlError::Usage(
                    "--rm runs the task to completion, which --restart always never reaches: drop --restart or use on-failure".into(),
                ))
            }
            _ => {}
        }
        if !args.wait.enabled() {
            return Err(CtlError::Usage(
                "--rm waits for the task to complete: drop --no-wait".into(),
            ));
        }
    }
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
    let generation = created.meta().map(|m| m.generation).unwrap_or(0);
    if args.rm {
        return run_to_completion(globals, &session, &args.name, generation).await;
    }
    outln!("task/{} created", args.name);
    if let Some(t) = timeout {
        wait_task(&session.api, &args.name, Goal::Running, generation, t).await?;
    }
    Ok(())
}

/// `run --rm`: waits for the task's process to end, prints its output, deletes the
/// task and returns its exit code as the result.
async fn run_to_completion(
    globals: &Globals,
    session: &connection::Session,
    name: &str,
    generation: u64,
) -> Result<()> {
    let ended = wait_task_showing(
        &session.api,
        name,
        Goal::Finished,
        generation,
        globals.wait_timeout,
        false,
    )
    .await;
    let logs = crate::cli::LogsArgs {
        target: Some(name.to_string()),
        selector: None,
        follow: false,
        tail: None,
        since: None,
        timestamps: false,
        stdout: false,
        stderr: false,
        prefix: false,
        previous: false,
    };
    if let Err(e) = crate::commands::logs::run(globals, &logs).await {
        eprintln!("voiydctl: cannot read the output of task {name}: {e}");
    }
    ops::delete(&session.api, Kind::Task, name, false, true).await?;
    ended
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
