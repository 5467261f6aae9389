//! Waiting for a task to reach a state, with progress on a terminal.

use crate::error::{CtlError, Result};
use crate::timefmt::format_duration;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use voiyd_messages::phase::TaskPhase;
use voiyd_messages::v1::Task;
use voiyd_nats::api::{ApiClient, ApiError};

/// Longest pause between two reads of the task while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// First pause: a container usually runs within a few hundred milliseconds, and a read
/// costs the servers well under one; the pause grows by half each time up to
/// [`POLL_INTERVAL`], so a wait is seen within a few percent of when it ends.
const FIRST_POLL: Duration = Duration::from_millis(10);

/// The pause after `prev`.
fn next_poll(prev: Duration) -> Duration {
    (prev + prev / 2).min(POLL_INTERVAL)
}

/// Restarts after which a task that is not running is said to crash-loop: waiting for
/// it to run stops there instead of at the timeout.
pub const CRASH_LOOP_RESTARTS: u32 = 2;

/// The state to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Phase Running (or Succeeded: it ran to completion).
    Running,
    /// Phase Stopped, Succeeded or Failed.
    Stopped,
    /// Its process ended for good: Succeeded, or Failed after exiting.
    Finished,
    /// The task no longer exists.
    Gone,
}

impl Goal {
    fn label(self) -> &'static str {
        match self {
            Goal::Running => TaskPhase::Running.as_str(),
            Goal::Stopped => TaskPhase::Stopped.as_str(),
            Goal::Finished => "completion",
            Goal::Gone => "deletion",
        }
    }
}

/// Where a task stands relative to a goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reached; the line to print.
    Done(String),
    /// Will not be reached; the error message.
    Failed(String),
    /// Will not be reached: the task's process exited with this non-zero code and will
    /// not run again.
    Exited(String, i32),
    /// Not yet; a short description of the current state (`Pulling (3.0/12.5 MiB)`).
    Pending(String),
}

const MIB: f64 = 1024.0 * 1024.0;

/// Describes a task's current state in a few words.
pub fn describe(task: &Task) -> String {
    let st = task.status.clone().unwrap_or_default();
    let mut s = if st.phase.is_empty() {
        TaskPhase::Pending.into()
    } else {
        st.phase.clone()
    };
    if st.phase == TaskPhase::Pulling && st.pull_bytes_total > 0 {
        s.push_str(&format!(
            " ({:.1}/{:.1} MiB)",
            st.pull_bytes_done as f64 / MIB,
            st.pull_bytes_total as f64 / MIB
        ));
    } else if !st.reason.is_empty() || !st.message.is_empty() {
        let detail = [st.reason.as_str(), st.message.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        s.push_str(&format!(" ({detail})"));
    }
    s
}

/// Decides whether `task` (None: it does not exist) has reached `goal`. A status
/// observed for a generation older than `min_generation` is not trusted yet.
pub fn assess(goal: Goal, name: &str, task: Option<&Task>, min_generation: u64) -> Verdict {
    let Some(task) = task else {
        return match goal {
            Goal::Gone => Verdict::Done(format!("task/{name} deleted")),
            _ => Verdict::Failed(format!(
                "task {name} was deleted while waiting for it to reach {}",
                goal.label()
            )),
        };
    };
    let st = task.status.clone().unwrap_or_default();
    let stale = st.observed_generation != 0 && st.observed_generation < min_generation;
    if goal == Goal::Gone || stale {
        return Verdict::Pending(describe(task));
    }
    let failure = || {
        let why = [st.reason.as_str(), st.message.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let why = if why.is_empty() {
            format!("exit code {}", st.exit_code)
        } else {
            why
        };
        format!("task {name} failed: {why}: see `voiydctl events --name {name}`")
    };
    use TaskPhase::{Failed, Running, Stopped, Succeeded};
    let ready = st
        .conditions
        .iter()
        .find(|c| c.r#type == voiyd_messages::condition::ConditionType::Ready);
    match (goal, TaskPhase::parse(&st.phase)) {
        // Running, but its readiness probe has not passed (yet): not there.
        (Goal::Running, Some(Running))
            if ready.is_some_and(|c| c.status != voiyd_messages::condition::status(true)) =>
        {
            let c = ready.expect("checked");
            let why = [c.reason.as_str(), c.msg.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            Verdict::Pending(format!("Running, not ready ({why})"))
        }
        (Goal::Running, Some(Running)) => Verdict::Done(if st.node.is_empty() {
            format!("task/{name} running")
        } else {
            format!("task/{name} running on node {}", st.node)
        }),
        (Goal::Running, Some(Succeeded)) => {
            Verdict::Done(format!("task/{name} ran to completion (exit code 0)"))
        }
        (Goal::Running, Some(Failed)) if st.exited && st.exit_code != 0 => {
            Verdict::Exited(failure(), st.exit_code)
        }
        (Goal::Running, Some(Failed)) => Verdict::Failed(failure()),
        (Goal::Running, _) if st.restart_count >= CRASH_LOOP_RESTARTS => {
            Verdict::Failed(format!(
                "task {name} keeps exiting: restarted {} times, last with exit code {}; it is restarted again with a growing delay: see `voiydctl logs {name}` and `voiydctl events --name {name}`",
                st.restart_count, st.exit_code
            ))
        }
        (Goal::Stopped, Some(Stopped | Succeeded | Failed)) => {
            Verdict::Done(format!("task/{name} stopped ({})", st.phase))
        }
        (Goal::Finished, Some(Succeeded)) => {
            Verdict::Done(format!("task/{name} completed (exit code 0)"))
        }
        (Goal::Finished, Some(Failed)) if st.exited && st.exit_code != 0 => {
            Verdict::Exited(failure(), st.exit_code)
        }
        (Goal::Finished, Some(Failed)) => Verdict::Failed(failure()),
        (Goal::Finished, Some(Stopped)) => Verdict::Failed(format!(
            "task {name} was stopped before it completed"
        )),
        _ => Verdict::Pending(describe(task)),
    }
}

/// Prints progress: one rewritten line on a terminal, a line per change otherwise.
struct Progress {
    tty: bool,
    last: String,
    quiet: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stdout().is_terminal(),
            last: String::new(),
            quiet: false,
        }
    }

    fn show(&mut self, name: &str, state: &str) {
        if state == self.last || self.quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2Ktask/{name} {state}");
        } else {
            // Only phase changes, not every pull progress tick, get a line of their own.
            let phase = |s: &str| s.split(' ').next().unwrap_or("").to_string();
            if phase(state) == phase(&self.last) {
                self.last = state.to_string();
                return;
            }
            let _ = writeln!(out, "task/{name} {state}");
        }
        let _ = out.flush();
        self.last = state.to_string();
    }

    fn finish(&mut self) {
        if self.tty && !self.last.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}

/// Polls a task until `goal` is reached, it fails, or `timeout` passes.
pub async fn wait_task(
    api: &ApiClient,
    name: &str,
    goal: Goal,
    min_generation: u64,
    timeout: Duration,
) -> Result<()> {
    wait_task_showing(api, name, goal, min_generation, timeout, true).await
}

/// [`wait_task`], printing progress and the final line only with `show`.
pub async fn wait_task_showing(
    api: &ApiClient,
    name: &str,
    goal: Goal,
    min_generation: u64,
    timeout: Duration,
    show: bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new();
    progress.quiet = !show;
    let mut state: String = TaskPhase::Pending.into();
    let mut pause = FIRST_POLL;
    loop {
        let verdict = match api.get::<Task>(name).await {
            Ok(t) => assess(goal, name, Some(&t), min_generation),
            Err(ApiError::NotFound(_)) => assess(goal, name, None, min_generation),
            // A server restart or a slow reply is not a verdict: keep trying until the deadline.
            Err(
                e @ (ApiError::Timeout { .. } | ApiError::NoServer { .. } | ApiError::Server(_)),
            ) => Verdict::Pending(format!("{state}; last error: {e}")),
            Err(e) => {
                progress.finish();
                return Err(e.into());
            }
        };
        match verdict {
            Verdict::Done(line) => {
                progress.finish();
                if show {
                    outln!("{line}");
                }
                return Ok(());
            }
            Verdict::Failed(msg) => {
                progress.finish();
                return Err(CtlError::Wait(msg));
            }
            Verdict::Exited(message, code) => {
                progress.finish();
                return Err(CtlError::TaskExited { message, code });
            }
            Verdict::Pending(s) => {
                progress.show(name, &s);
                state = s;
            }
        }
        if Instant::now() + pause > deadline {
            progress.finish();
            let within = format_duration(timeout);
            return Err(CtlError::Wait(match goal {
                Goal::Gone => format!("task {name} was not deleted within {within}: phase {state}"),
                _ => format!(
                    "task {name} did not reach {} within {within}: phase {state}",
                    goal.label()
                ),
            }));
        }
        tokio::time::sleep(pause).await;
        pause = next_poll(pause);
    }
}

/// Waits until `node` no longer runs `task`'s container: a deleted task's spec goes at
/// once, its container within the task's grace period. A node that does not answer is not
/// waited for (it stops the container when it is back).
pub async fn container_gone(
    nats: &async_nats::Client,
    node: &str,
    task: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL;
    loop {
        let ask = (deadline - Instant::now().min(deadline))
            .clamp(Duration::from_millis(100), Duration::from_secs(2));
        let Some(stats) = crate::ops::node_stats(nats, node, ask).await else {
            return Ok(());
        };
        if !stats.tasks.iter().any(|t| t.task == task) {
            return Ok(());
        }
        if Instant::now() + pause > deadline {
            return Err(CtlError::Wait(format!(
                "task {task} is deleted, but its container still runs on node {node} after {}: the node stops it within its grace period (or at once with --force)",
                format_duration(timeout)
            )));
        }
        tokio::time::sleep(pause).await;
        pause = next_poll(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_start_fast_and_settle_at_the_interval() {
        let mut p = FIRST_POLL;
        let mut waited = Duration::ZERO;
        let mut polls = 0;
        while waited < Duration::from_secs(1) {
            waited += p;
            p = next_poll(p);
            polls += 1;
        }
        assert!(polls >= 8, "{polls} reads in the first second");
        assert_eq!(p, POLL_INTERVAL);
    }
}
