//! The job controller: runs each job's tasks to completion (at most `parallelism` at
//! once, until `completions` succeeded or it gives up), deletes finished jobs after their
//! TTL, and starts the runs of cron jobs as their schedules fall due.
//!
//! Every server runs it. Tasks are created under names every server derives alike
//! (`<job>-<n>`) and a cron job's runs under `<cron>-<slot>`, and a create fails when
//! the name is taken, so no task and no run is started twice; statuses are written with
//! CAS. The decisions are pure ([`crate::schedule::jobs`]).

use crate::cache::view::TaskEntry;
use crate::context::Ctx;
use crate::error::ServerError;
use crate::schedule::jobs::{
    plan_cron, plan_job, slot_of, Concurrency, CronSettings, JobTask, Limits, Outcome, Run,
    TaskState, CRON_LABEL, DEFAULT_BACKOFF_LIMIT, DEFAULT_FAILED_HISTORY,
    DEFAULT_SUCCESSFUL_HISTORY, JOB_LABEL,
};
use crate::schedule::sets::condition;
use crate::service::{resources, tasks};
use crate::store::managed::Managed;
use crate::store::status;
use std::collections::HashMap;
use voiyd_messages::condition::ConditionType;
use voiyd_messages::event::EventType;
use voiyd_messages::phase::TaskPhase;
use voiyd_messages::reason::Reason;
use voiyd_messages::schedule::Schedule;
use voiyd_messages::v1::{DeleteRequest, Job, JobStatus, Task};
use voiyd_messages::{Resource, Timestamp};

/// Reconciles every job and cron job once (the view must be ready); deletes the tasks of jobs that are gone and
/// the runs of cron jobs that are gone.
pub async fn reconcile_all(ctx: &Ctx) {
    let jobs = match Job::store(&ctx.cluster).list().await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list jobs");
            return;
        }
    };
    let statuses = status::read_all::<Job>(&ctx.status)
        .await
        .unwrap_or_default();
    let mut by_job = ctx.view.tasks_by_label(JOB_LABEL);
    let names: std::collections::HashSet<&str> = jobs.iter().map(|j| j.name()).collect();
    for job in &jobs {
        let result = if job.schedule.trim().is_empty() {
            let tasks = by_job.remove(job.name()).unwrap_or_default();
            reconcile_job(ctx, job, &tasks).await
        } else {
            reconcile_cron(ctx, job, &jobs, &statuses).await
        };
        if let Err(e) = result {
            tracing::warn!(job = job.name(), error = %e.message(), "job not reconciled");
        }
        // A run whose cron job is gone goes with it.
        if let Some(cron) = job.labels().get(CRON_LABEL) {
            if !names.contains(cron.as_str()) {
                delete_job(ctx, job.name()).await;
            }
        }
    }
    for (job, tasks) in by_job {
        for (task, _) in tasks {
            tracing::info!(%job, %task, "job deleted: deleting its task");
            tasks::delete_quietly(ctx, &task).await;
        }
    }
}

async fn delete_job(ctx: &Ctx, job: &str) {
    let req = DeleteRequest {
        name: job.to_string(),
        ..Default::default()
    };
    if let Err(e) = resources::delete::<Job>(ctx, &req).await {
        tracing::debug!(%job, error = %e.message(), "job not deleted");
    }
}

fn state_of(t: &TaskEntry) -> TaskState {
    let st = t.status.as_ref().map(|(s, _)| s);
    let exited = st.is_some_and(|s| s.exited);
    match TaskPhase::parse(t.phase()) {
        Some(TaskPhase::Succeeded) => TaskState::Succeeded,
        // A task that failed to pull or start is retried by its node: still active.
        Some(TaskPhase::Failed) if exited => TaskState::Failed,
        _ => TaskState::Active,
    }
}

fn limits(job: &Job) -> Limits {
    Limits {
        completions: job.completions.unwrap_or(1).max(1),
        parallelism: job.parallelism.unwrap_or(1).max(1),
        backoff_limit: job.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT),
        active_deadline_secs: job.active_deadline_seconds,
    }
}

/// The outcome a status records, if the job has finished.
fn recorded(st: &JobStatus) -> Option<Outcome> {
    let t = |c: &voiyd_messages::v1::Condition| c.status == voiyd_messages::condition::status(true);
    st.conditions.iter().find_map(|c| {
        if c.r#type == ConditionType::Complete && t(c) {
            Some(Outcome::Complete)
        } else if c.r#type == ConditionType::Failed && t(c) {
            Some(Outcome::Failed(
                Reason::parse(&c.reason).unwrap_or(Reason::Error),
                c.msg.clone(),
            ))
        } else {
            None
        }
    })
}

async fn create_task(ctx: &Ctx, job: &Job, name: &str) {
    let mut labels = job.labels();
    labels.remove(CRON_LABEL);
    labels.insert(JOB_LABEL.into(), job.name().into());
    let mut template = job.template.clone().unwrap_or_default();
    if template.restart_policy.is_empty() {
        template.restart_policy = "never".into();
    }
    let task = Task::new(name, template).with_labels(labels);
    if let Err(e) = tasks::create(ctx, task).await {
        tracing::debug!(task = %name, error = %e.message(), "job task not created");
    }
}

async fn reconcile_job(
    ctx: &Ctx,
    job: &Job,
    tasks: &[(String, TaskEntry)],
) -> Result<(), ServerError> {
    let now = voiyd_messages::time::now();
    let current = status::read_versioned::<JobStatus>(&ctx.status.0, "job", job.name()).await?;
    let (prev, rev) = match current {
        Some(v) => (v.status, v.revision),
        None => (JobStatus::default(), 0),
    };
    let mut st = prev.clone();
    let started = *st.start_time.get_or_insert(now);
    let members: Vec<JobTask> = tasks
        .iter()
        .map(|(name, t)| JobTask {
            name: name.clone(),
            state: state_of(t),
        })
        .collect();
    let finished_before = recorded(&st);
    let p = plan_job(
        job.name(),
        limits(job),
        &members,
        now.seconds - started.seconds,
        finished_before.clone(),
    );
    for name in &p.create {
        create_task(ctx, job, name).await;
    }
    for name in &p.delete {
        tasks::delete_quietly(ctx, name).await;
    }
    st.active = p.active + p.create.len() as u32 - p.delete.len() as u32;
    st.succeeded = p.succeeded;
    st.failed = p.failed;
    st.observed_generation = job.meta.as_ref().map_or(0, |m| m.generation);
    if finished_before.is_none() {
        if let Some(outcome) = &p.outcome {
            st.completion_time = Some(now);
            let (ty, reason, msg) = match outcome {
                Outcome::Complete => (
                    ConditionType::Complete,
                    Reason::Completed,
                    format!("{} tasks succeeded", p.succeeded),
                ),
                Outcome::Failed(reason, msg) => (ConditionType::Failed, *reason, msg.clone()),
            };
            tracing::info!(job = job.name(), %reason, %msg, "job finished");
            ctx.events
                .publish(
                    "job",
                    job.name(),
                    if ty == ConditionType::Complete {
                        EventType::Completed.as_str()
                    } else {
                        EventType::Failed.as_str()
                    },
                    reason.as_str(),
                    msg.clone(),
                    None,
                )
                .await;
            st.conditions = vec![condition(ty, true, reason, msg, &st.conditions, now)];
        }
    }
    if st != prev
        && status::write(&ctx.status.0, "job", job.name(), &st, rev)
            .await?
            .is_none()
    {
        // Another server wrote first: the next pass reads its word.
        return Ok(());
    }
    // Finished and past its TTL: the job goes, and its tasks with it.
    if let (Some(ttl), Some(done)) = (job.ttl_seconds_after_finished, st.completion_time) {
        if now.seconds - done.seconds >= i64::from(ttl) {
            tracing::info!(
                job = job.name(),
                "TTL after finishing passed: deleting the job"
            );
            delete_job(ctx, job.name()).await;
        }
    }
    Ok(())
}

async fn reconcile_cron(
    ctx: &Ctx,
    cron: &Job,
    jobs: &[Job],
    statuses: &HashMap<String, JobStatus>,
) -> Result<(), ServerError> {
    let schedule = Schedule::parse(&cron.schedule).map_err(ServerError::invalid)?;
    let now = voiyd_messages::time::now();
    let current = status::read_versioned::<JobStatus>(&ctx.status.0, "job", cron.name()).await?;
    let (prev, rev) = match current {
        Some(v) => (v.status, v.revision),
        None => (JobStatus::default(), 0),
    };
    let mut st = prev.clone();
    let runs: Vec<Run> = jobs
        .iter()
        .filter(|j| j.labels().get(CRON_LABEL).map(String::as_str) == Some(cron.name()))
        .filter_map(|j| {
            let slot = slot_of(cron.name(), j.name())?;
            let outcome = statuses.get(j.name()).and_then(recorded);
            Some(Run {
                name: j.name().to_string(),
                slot,
                succeeded: outcome.map(|o| o == Outcome::Complete),
            })
        })
        .collect();
    // Slots are looked for after the last one handled, or after the cron job's creation.
    let created = cron
        .meta
        .as_ref()
        .and_then(|m| m.created)
        .map_or(now.seconds, |t| t.seconds);
    let last = st.last_schedule_time.map_or(created - 1, |t| t.seconds);
    let settings = CronSettings {
        concurrency: Concurrency::parse(&cron.concurrency_policy),
        starting_deadline_secs: cron.starting_deadline_seconds,
        keep_succeeded: cron
            .successful_jobs_history_limit
            .unwrap_or(DEFAULT_SUCCESSFUL_HISTORY),
        keep_failed: cron
            .failed_jobs_history_limit
            .unwrap_or(DEFAULT_FAILED_HISTORY),
    };
    let p = plan_cron(&schedule, settings, last, now.seconds, &runs);
    for name in &p.delete {
        delete_job(ctx, name).await;
    }
    if let Some(slot) = p.handled {
        // Record the slot first: of the servers that saw it due, one wins this CAS and
        // starts the run; the run's name per slot stops any other start too.
        st.last_schedule_time = Some(Timestamp {
            seconds: slot,
            nanos: 0,
        });
        if status::write(&ctx.status.0, "job", cron.name(), &st, rev)
            .await?
            .is_none()
        {
            return Ok(());
        }
        if let Some(why) = &p.skipped {
            ctx.events
                .publish(
                    "job",
                    cron.name(),
                    EventType::Skipped.as_str(),
                    Reason::RunSkipped.as_str(),
                    why.clone(),
                    None,
                )
                .await;
        }
        if let Some(slot) = p.start {
            start_run(ctx, cron, slot).await;
        }
        return Ok(());
    }
    st.active_jobs = runs
        .iter()
        .filter(|r| r.succeeded.is_none() && !p.delete.contains(&r.name))
        .map(|r| r.name.clone())
        .collect();
    st.active = st.active_jobs.len() as u32;
    st.observed_generation = cron.meta.as_ref().map_or(0, |m| m.generation);
    if st != prev {
        status::write(&ctx.status.0, "job", cron.name(), &st, rev).await?;
    }
    Ok(())
}

/// Starts the run of `slot`: a job `<cron>-<slot>` with the cron job's template and limits.
async fn start_run(ctx: &Ctx, cron: &Job, slot: i64) {
    let name = format!("{}-{slot}", cron.name());
    let mut labels = cron.labels();
    labels.insert(CRON_LABEL.into(), cron.name().into());
    let run = Job {
        version: voiyd_messages::Kind::Job.manifest_version().into(),
        meta: Some(voiyd_messages::v1::Meta {
            name: name.clone(),
            labels,
            ..Default::default()
        }),
        template: cron.template.clone(),
        completions: cron.completions,
        parallelism: cron.parallelism,
        backoff_limit: cron.backoff_limit,
        active_deadline_seconds: cron.active_deadline_seconds,
        ttl_seconds_after_finished: cron.ttl_seconds_after_finished,
        ..Default::default()
    };
    match resources::create::<Job>(ctx, run).await {
        Ok(_) => {
            tracing::info!(cron = cron.name(), run = %name, "cron job run started");
            ctx.events
                .publish(
                    "job",
                    cron.name(),
                    EventType::Created.as_str(),
                    Reason::Created.as_str(),
                    format!("started run {name}"),
                    None,
                )
                .await;
        }
        Err(e) => tracing::debug!(run = %name, error = %e.message(), "cron job run not started"),
    }
}
