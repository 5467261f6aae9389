//! Jobs and cron jobs, decided: which tasks a job starts and when it has finished
//! ([`plan_job`]); which run a cron job starts now and which old runs go ([`plan_cron`]).
//! Pure: the controller in [`crate::controllers::jobs`] reads and writes.
//!
//! A job's tasks are named `<job>-<n>` (`n` counting up from 0, never reused), so two
//! servers deciding from the same view create the same names and only one create wins.
//! A cron job's runs are jobs named `<cron>-<slot>` (the slot in Unix seconds): a slot is
//! started at most once, whichever servers see it due.

use crate::schedule::sets::index_of;
use voiyd_messages::reason::Reason;
use voiyd_messages::schedule::Schedule;

/// Label naming the job a task belongs to.
pub const JOB_LABEL: &str = voiyd_messages::labels::JOB;
/// Label naming the cron job a run (a job) belongs to.
pub const CRON_LABEL: &str = voiyd_messages::labels::CRONJOB;
/// Failed tasks a job tolerates when it sets no `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: u32 = 6;
/// Successful runs a cron job keeps when it sets no limit.
pub const DEFAULT_SUCCESSFUL_HISTORY: u32 = 3;
/// Failed runs a cron job keeps when it sets no limit.
pub const DEFAULT_FAILED_HISTORY: u32 = 1;

/// Where one task of a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Placed, starting, running (or retrying a pull).
    Active,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero and will not run again.
    Failed,
}

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTask {
    /// Its name, `<job>-<n>`.
    pub name: String,
    /// Where it stands.
    pub state: TaskState,
}

/// A job's limits, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Successful tasks needed.
    pub completions: u32,
    /// Tasks at once.
    pub parallelism: u32,
    /// Failed tasks tolerated.
    pub backoff_limit: u32,
    /// Longest run in seconds (0: none).
    pub active_deadline_secs: u32,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `completions` tasks succeeded.
    Complete,
    /// It gave up: the reason and one line for people.
    Failed(Reason, String),
}

/// What to do with a job now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobPlan {
    /// Names of tasks to create.
    pub create: Vec<String>,
    /// Tasks to delete (active ones of a job that failed).
    pub delete: Vec<String>,
    /// Tasks active, succeeded and failed.
    pub active: u32,
    /// Tasks that succeeded.
    pub succeeded: u32,
    /// Tasks that failed.
    pub failed: u32,
    /// Set once the job has finished (now or before).
    pub outcome: Option<Outcome>,
}

/// Decides a job's next step. `finished` is the outcome already recorded, if any;
/// `elapsed_secs` the time since the job started.
pub fn plan_job(
    job: &str,
    l: Limits,
    tasks: &[JobTask],
    elapsed_secs: i64,
    finished: Option<Outcome>,
) -> JobPlan {
    let count = |s: TaskState| tasks.iter().filter(|t| t.state == s).count() as u32;
    let mut p = JobPlan {
        active: count(TaskState::Active),
        succeeded: count(TaskState::Succeeded),
        failed: count(TaskState::Failed),
        ..Default::default()
    };
    let active = || {
        tasks
            .iter()
            .filter(|t| t.state == TaskState::Active)
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    let outcome = finished.or_else(|| {
        if p.succeeded >= l.completions {
            Some(Outcome::Complete)
        } else if p.failed > l.backoff_limit {
            Some(Outcome::Failed(
                Reason::BackoffLimitExceeded,
                format!(
                    "{} tasks failed, more than backoffLimit {}",
                    p.failed, l.backoff_limit
                ),
            ))
        } else if l.active_deadline_secs > 0 && elapsed_secs > i64::from(l.active_deadline_secs) {
            Some(Outcome::Failed(
                Reason::DeadlineExceeded,
                format!(
                    "ran longer than activeDeadlineSeconds {}",
                    l.active_deadline_secs
                ),
            ))
        } else {
            None
        }
    });
    match outcome {
        Some(Outcome::Failed(..)) => p.delete = active(),
        Some(Outcome::Complete) => {}
        None => {
            let room = l.parallelism.saturating_sub(p.active);
            let left = l.completions.saturating_sub(p.succeeded + p.active);
            let next = tasks
                .iter()
                .map(|t| index_of(job, &t.name))
                .filter(|i| *i != u32::MAX)
                .max()
                .map_or(0, |i| i + 1);
            p.create = (next..next + room.min(left))
                .map(|i| format!("{job}-{i}"))
                .collect();
        }
    }
    p.outcome = outcome;
    p
}

/// What a cron job does when a run is due while another is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Start it anyway.
    Allow,
    /// Skip it.
    Forbid,
    /// Delete the active runs, then start it.
    Replace,
}

impl Concurrency {
    /// From the spec's word (Allow when unset or unknown: validation refuses others).
    pub fn parse(s: &str) -> Concurrency {
        match s.to_ascii_lowercase().as_str() {
            "forbid" => Concurrency::Forbid,
            "replace" => Concurrency::Replace,
            _ => Concurrency::Allow,
        }
    }
}

/// One run of a cron job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The run's job name, `<cron>-<slot>`.
    pub name: String,
    /// Its slot.
    pub slot: i64,
    /// `None` while active, else whether it succeeded.
    pub succeeded: Option<bool>,
}

/// What a cron job does now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CronPlan {
    /// The slot to start a run for.
    pub start: Option<i64>,
    /// The slot now handled (started or skipped): the next pass looks only later.
    pub handled: Option<i64>,
    /// Why a due slot was skipped.
    pub skipped: Option<String>,
    /// Runs to delete: replaced active ones and finished ones beyond the history limits.
    pub delete: Vec<String>,
}

/// Settings of a cron job, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronSettings {
    /// What to do when a run is due while another is active.
    pub concurrency: Concurrency,
    /// A run later than this is skipped (0: never).
    pub starting_deadline_secs: u32,
    /// Successful runs kept.
    pub keep_succeeded: u32,
    /// Failed runs kept.
    pub keep_failed: u32,
}

/// Decides a cron job's step at `now`: the latest slot after `last` (the last slot
/// handled, or the cron job's creation) is started unless it is too late or forbidden.
pub fn plan_cron(
    schedule: &Schedule,
    c: CronSettings,
    last: i64,
    now: i64,
    runs: &[Run],
) -> CronPlan {
    let mut p = CronPlan::default();
    let active: Vec<&Run> = runs.iter().filter(|r| r.succeeded.is_none()).collect();
    if let Some(slot) = schedule.last_slot(last, now) {
        p.handled = Some(slot);
        let late = now - slot;
        if c.starting_deadline_secs > 0 && late > i64::from(c.starting_deadline_secs) {
            p.skipped = Some(format!(
                "the run of {slot} is {late}s late, past startingDeadlineSeconds {}",
                c.starting_deadline_secs
            ));
        } else if !active.is_empty() && c.concurrency == Concurrency::Forbid {
            p.skipped = Some(format!(
                "concurrencyPolicy Forbid: {} still runs",
                active[0].name
            ));
        } else {
            if c.concurrency == Concurrency::Replace {
                p.delete.extend(active.iter().map(|r| r.name.clone()));
            }
            p.start = Some(slot);
        }
    }
    let mut finished: Vec<&Run> = runs.iter().filter(|r| r.succeeded.is_some()).collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.slot));
    let (mut ok, mut bad) = (0u32, 0u32);
    for r in finished {
        let keep = if r.succeeded == Some(true) {
            ok += 1;
            ok <= c.keep_succeeded
        } else {
            bad += 1;
            bad <= c.keep_failed
        };
        if !keep {
            p.delete.push(r.name.clone());
        }
    }
    p
}

/// The slot of a run named `<cron>-<slot>`, if it is one.
pub fn slot_of(cron: &str, run: &str) -> Option<i64> {
    run.strip_prefix(cron)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(job: &str, i: u32, state: TaskState) -> JobTask {
        JobTask {
            name: format!("{job}-{i}"),
            state,
        }
    }

    const L: Limits = Limits {
        completions: 5,
        parallelism: 2,
        backoff_limit: 1,
        active_deadline_secs: 0,
    };

    #[test]
    fn a_job_runs_parallelism_at_a_time_until_completions() {
        let p = plan_job("j", L, &[], 0, None);
        assert_eq!(p.create, vec!["j-0", "j-1"]);
        let tasks = [
            t("j", 0, TaskState::Succeeded),
            t("j", 1, TaskState::Active),
        ];
        assert_eq!(plan_job("j", L, &tasks, 0, None).create, vec!["j-2"]);
        // Four done, one running: nothing more to start.
        let tasks: Vec<JobTask> = (0..4)
            .map(|i| t("j", i, TaskState::Succeeded))
            .chain([t("j", 4, TaskState::Active)])
            .collect();
        let p = plan_job("j", L, &tasks, 0, None);
        assert!(p.create.is_empty() && p.outcome.is_none());
        let done: Vec<JobTask> = (0..5).map(|i| t("j", i, TaskState::Succeeded)).collect();
        assert_eq!(
            plan_job("j", L, &done, 0, None).outcome,
            Some(Outcome::Complete)
        );
    }

    #[test]
    fn failures_past_the_backoff_limit_or_the_deadline_fail_the_job() {
        let tasks = [t("j", 0, TaskState::Failed), t("j", 1, TaskState::Active)];
        let p = plan_job("j", L, &tasks, 0, None);
        assert_eq!(p.create, vec!["j-2"], "one failure is tolerated, replaced");
        let tasks = [
            t("j", 0, TaskState::Failed),
            t("j", 1, TaskState::Failed),
            t("j", 2, TaskState::Active),
        ];
        let p = plan_job("j", L, &tasks, 0, None);
        assert!(matches!(
            p.outcome,
            Some(Outcome::Failed(Reason::BackoffLimitExceeded, _))
        ));
        assert_eq!(p.delete, vec!["j-2"]);
        assert!(p.create.is_empty());
        let l = Limits {
            active_deadline_secs: 10,
            ..L
        };
        let p = plan_job("j", l, &[t("j", 0, TaskState::Active)], 11, None);
        assert!(matches!(
            p.outcome,
            Some(Outcome::Failed(Reason::DeadlineExceeded, _))
        ));
    }

    fn every(secs: i64) -> Schedule {
        Schedule::parse(&format!("@every {secs}s")).unwrap()
    }

    const C: CronSettings = CronSettings {
        concurrency: Concurrency::Allow,
        starting_deadline_secs: 0,
        keep_succeeded: 1,
        keep_failed: 1,
    };

    fn run(slot: i64, succeeded: Option<bool>) -> Run {
        Run {
            name: format!("c-{slot}"),
            slot,
            succeeded,
        }
    }

    #[test]
    fn a_cron_job_starts_each_slot_once() {
        let s = every(10);
        let p = plan_cron(&s, C, 95, 103, &[]);
        assert_eq!((p.start, p.handled), (Some(100), Some(100)));
        assert_eq!(plan_cron(&s, C, 100, 109, &[]), CronPlan::default());
        // Forbid skips a slot while a run is active; Replace deletes the active one.
        let active = [run(100, None)];
        let forbid = CronSettings {
            concurrency: Concurrency::Forbid,
            ..C
        };
        let p = plan_cron(&s, forbid, 100, 111, &active);
        assert_eq!((p.start, p.handled), (None, Some(110)));
        assert!(p.skipped.unwrap().contains("Forbid"));
        let replace = CronSettings {
            concurrency: Concurrency::Replace,
            ..C
        };
        let p = plan_cron(&s, replace, 100, 111, &active);
        assert_eq!((p.start, p.delete), (Some(110), vec!["c-100".to_string()]));
        // Too late: skipped.
        let strict = CronSettings {
            starting_deadline_secs: 5,
            ..C
        };
        let p = plan_cron(&s, strict, 100, 118, &[]);
        assert_eq!((p.start, p.handled), (None, Some(110)));
    }

    #[test]
    fn a_cron_job_keeps_its_history_limits() {
        let runs = [
            run(10, Some(true)),
            run(20, Some(false)),
            run(30, Some(true)),
            run(40, Some(false)),
            run(50, None),
        ];
        let p = plan_cron(&every(10), C, 50, 55, &runs);
        let mut d = p.delete.clone();
        d.sort();
        assert_eq!(d, vec!["c-10", "c-20"]);
        assert_eq!(slot_of("c", "c-40"), Some(40));
        assert_eq!(slot_of("c", "cx-40"), None);
    }

    proptest! {
        /// Never more than parallelism active, never more than completions started
        /// beyond those that failed, and names never repeat.
        #[test]
        fn job_plans_keep_their_limits(
            completions in 1u32..8,
            parallelism in 1u32..4,
            states in proptest::collection::vec(0u8..3, 0..12),
        ) {
            let l = Limits { completions, parallelism: parallelism.min(completions), backoff_limit: 100, active_deadline_secs: 0 };
            let tasks: Vec<JobTask> = states.iter().enumerate().map(|(i, s)| t("j", i as u32, match s {
                0 => TaskState::Active, 1 => TaskState::Succeeded, _ => TaskState::Failed,
            })).collect();
            let p = plan_job("j", l, &tasks, 0, None);
            if p.outcome.is_none() {
                prop_assert!(p.active + p.create.len() as u32 <= l.parallelism.max(p.active));
                prop_assert!(p.succeeded + p.active + p.create.len() as u32 <= l.completions.max(p.succeeded + p.active));
            } else {
                prop_assert!(p.create.is_empty());
            }
            for n in &p.create {
                prop_assert!(!tasks.iter().any(|t| &t.name == n));
            }
        }
    }
}
