//! Jobs and cron jobs: limits that make sense together, a schedule that fires.

use super::*;
use crate::v1::Job;

/// Most completions of one job.
pub const MAX_COMPLETIONS: u32 = 10_000;
/// Most tasks of one job at once.
pub const MAX_PARALLELISM: u32 = 1_000;
/// Longest name of a cron job: its runs are named `<job>-<unix seconds>`.
pub const MAX_CRON_NAME_LEN: usize = MAX_NAME_LEN - 11 - 6;

/// Validates a job: header, `template` as a task configuration whose restart policy lets
/// tasks end (never or on-failure), completions and parallelism that fit together, and,
/// for a cron job, a schedule that fires and a concurrency policy.
pub fn validate_job(job: &Job) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_header(&mut errs, Kind::Job, &job.version, job.meta.as_ref());
    match &job.template {
        None => errs.add("template.image", "required"),
        Some(t) => {
            check_config(&mut errs, "template.", t);
            if t.restart_policy.eq_ignore_ascii_case("always") {
                errs.add(
                    "template.restartPolicy",
                    "always would never let a task finish: use never (the default for jobs) or on-failure",
                );
            }
        }
    }
    let completions = job.completions.unwrap_or(1);
    let parallelism = job.parallelism.unwrap_or(1);
    if completions == 0 || completions > MAX_COMPLETIONS {
        errs.add(
            "completions",
            format!("{completions} is out of range 1-{MAX_COMPLETIONS}"),
        );
    }
    if parallelism == 0 || parallelism > MAX_PARALLELISM {
        errs.add(
            "parallelism",
            format!("{parallelism} is out of range 1-{MAX_PARALLELISM}"),
        );
    } else if completions > 0 && completions < parallelism {
        errs.add(
            "parallelism",
            format!("{parallelism} is more than completions ({completions}): at most {completions} tasks can ever run at once, so lower parallelism to {completions}"),
        );
    }
    if let Some(b) = job.backoff_limit.filter(|b| *b > MAX_COMPLETIONS) {
        errs.add(
            "backoffLimit",
            format!("{b} is more than {MAX_COMPLETIONS}"),
        );
    }
    if job.schedule.trim().is_empty() {
        for (field, set) in [
            ("concurrencyPolicy", !job.concurrency_policy.is_empty()),
            (
                "startingDeadlineSeconds",
                job.starting_deadline_seconds != 0,
            ),
            (
                "successfulJobsHistoryLimit",
                job.successful_jobs_history_limit.is_some(),
            ),
            (
                "failedJobsHistoryLimit",
                job.failed_jobs_history_limit.is_some(),
            ),
        ] {
            if set {
                errs.add(field, "only for cron jobs: add a schedule, or remove it");
            }
        }
    } else {
        if let Err(e) = crate::schedule::Schedule::parse(&job.schedule) {
            errs.add("schedule", e);
        }
        errs.check(
            "concurrencyPolicy",
            check_one_of(
                &job.concurrency_policy,
                &["Allow", "Forbid", "Replace"],
                "concurrency policy",
            ),
        );
        if job.name().len() > MAX_CRON_NAME_LEN {
            errs.add(
                "meta.name",
                format!("longer than {MAX_CRON_NAME_LEN} characters: a cron job's runs are named <job>-<unix seconds>"),
            );
        }
    }
    errs.finish(Kind::Job.singular(), job.name())
}
