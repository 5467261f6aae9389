//! The phase a node reports for a task (`TaskStatus.phase`, `reason`, `message`), derived
//! from the same inputs as [`crate::decide::reconcile::decide`], so the report always describes what
//! the node is doing.
//!
//! # Mapping
//!
//! Rows are tried top to bottom; the first that matches wins. "Same" means the container
//! was created for the desired uid and generation.
//!
//! | desired | container / inputs | phase | reason |
//! |---|---|---|---|
//! | none | running | Stopping | `Unassigned` |
//! | none | anything else | Stopped | `Unassigned` |
//! | stopped | running | Stopping | `StopRequested` |
//! | stopped | anything else | Stopped | `StopRequested` |
//! | running | `last_error` = (reason, message) | Failed | the caller's (`PullFailed`, `CreateFailed`, ...) |
//! | running | running, same, no stop requested | Running | `Started` |
//! | running | running, same, failed a liveness or startup probe | Stopping | `LivenessProbeFailed` / `StartupProbeFailed` |
//! | running | running, same, stop requested | Stopping | `Stopping` |
//! | running | running, other | Stopping | `Replacing` |
//! | running | `pulling` = (done, total) | Pulling | `Pulling` |
//! | running | absent | Pending | `ContainerCreating` |
//! | running | created / exited, other | Pending | `Replacing` |
//! | running | created, same | Starting | `Starting` |
//! | running | exited, same, after a failed probe | Pending (Failed without restart) | the probe's reason |
//! | running | exited, same, after our own stop | Starting | `Restarting` |
//! | running | exited, same, backoff running | Pending | `BackOff` ("restarting in 8s (exit code 1)") |
//! | running | exited, same, backoff over | Starting | `Restarting` |
//! | running | exited 0, same, no restart | Succeeded | `Completed` |
//! | running | exited non-zero, same, no restart | Failed | `Error` |
//!
//! A failure to pull, create or start is the caller's to report through `last_error`: the
//! container state alone cannot tell a failed attempt from one not yet made.

use std::time::{Duration, SystemTime};

use voiyd_messages::quantity::format_duration;

use crate::decide::reconcile::{ContainerState, Desired, Observed};
use crate::decide::restart::{restart_wait, RestartWait};

use voiyd_messages::phase::TaskPhase;
use voiyd_messages::reason::Reason;

/// A task's reported phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseReport {
    /// The phase.
    pub phase: TaskPhase,
    /// Why, for machines and filters.
    pub reason: Reason,
    /// One line for people.
    pub message: String,
}

impl PhaseReport {
    fn new(phase: TaskPhase, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            phase,
            reason,
            message: message.into(),
        }
    }
}

/// Derives the phase of a task; see the [module docs](self) for the mapping.
///
/// `pulling` is `(bytes done, bytes total)` while the image is being pulled (total 0 when
/// not yet known); `last_error` is `(reason, message)` of the last failed pull, create or
/// start of the current spec, cleared by the caller once an attempt succeeds.
pub fn derive(
    desired: Option<&Desired>,
    observed: Option<&Observed>,
    pulling: Option<(u64, u64)>,
    last_error: Option<(Reason, &str)>,
    now: SystemTime,
) -> PhaseReport {
    let state = observed.map_or(ContainerState::Absent, |o| o.state);
    let Some(want) = desired else {
        return if state.is_running() {
            PhaseReport::new(
                TaskPhase::Stopping,
                Reason::Unassigned,
                "stopping: the task is no longer assigned to this node",
            )
        } else {
            PhaseReport::new(
                TaskPhase::Stopped,
                Reason::Unassigned,
                "the task is no longer assigned to this node",
            )
        };
    };
    if want.stopped() {
        return stopped(want, observed, now);
    }
    if let Some((reason, message)) = last_error {
        return PhaseReport::new(TaskPhase::Failed, reason, message);
    }
    let same = observed.is_some_and(|o| o.is_for(want));
    match (state, observed) {
        (ContainerState::Running { pid, .. }, Some(obs)) => {
            if !same {
                PhaseReport::new(
                    TaskPhase::Stopping,
                    Reason::Replacing,
                    replacing(want, obs, "stopping"),
                )
            } else if let Some((reason, why)) = &obs.probe_failure {
                let how = match obs.stop_requested_at {
                    Some(requested) => stopping(want, requested, now),
                    None => "stopping".into(),
                };
                PhaseReport::new(TaskPhase::Stopping, *reason, format!("{why}; {how}"))
            } else if let Some(requested) = obs.stop_requested_at {
                PhaseReport::new(
                    TaskPhase::Stopping,
                    Reason::Stopping,
                    stopping(want, requested, now),
                )
            } else {
                PhaseReport::new(TaskPhase::Running, Reason::Started, running(pid, obs))
            }
        }
        _ if pulling.is_some() => {
            let (done, total) = pulling.unwrap_or_default();
            PhaseReport::new(
                TaskPhase::Pulling,
                Reason::Pulling,
                pull_progress(&want.config.image, done, total),
            )
        }
        (ContainerState::Absent, _) | (_, None) => PhaseReport::new(
            TaskPhase::Pending,
            Reason::ContainerCreating,
            format!(
                "waiting to pull {} and create the container",
                want.config.image
            ),
        ),
        (_, Some(obs)) if !same => PhaseReport::new(
            TaskPhase::Pending,
            Reason::Replacing,
            replacing(want, obs, "removing"),
        ),
        (ContainerState::Created, Some(_)) => PhaseReport::new(
            TaskPhase::Starting,
            Reason::Starting,
            "container created, starting it",
        ),
        (ContainerState::Exited { code, at }, Some(obs)) => exited(want, obs, code, at, now),
    }
}

/// The report for a task the user stopped.
fn stopped(want: &Desired, observed: Option<&Observed>, now: SystemTime) -> PhaseReport {
    let Some(obs) = observed else {
        return PhaseReport::new(TaskPhase::Stopped, Reason::StopRequested, "stopped");
    };
    match obs.state {
        ContainerState::Running { .. } => {
            let message = match obs.stop_requested_at {
                Some(requested) => stopping(want, requested, now),
                None => "stopping".to_string(),
            };
            PhaseReport::new(TaskPhase::Stopping, Reason::StopRequested, message)
        }
        ContainerState::Exited { code, .. } if obs.uid == want.uid => PhaseReport::new(
            TaskPhase::Stopped,
            Reason::StopRequested,
            format!("stopped ({})", exit(code)),
        ),
        _ => PhaseReport::new(TaskPhase::Stopped, Reason::StopRequested, "stopped"),
    }
}

/// The report for a container of this spec whose task exited.
fn exited(
    want: &Desired,
    obs: &Observed,
    code: i32,
    at: SystemTime,
    now: SystemTime,
) -> PhaseReport {
    if let Some((reason, why)) = &obs.probe_failure {
        // Stopped for a failed probe: a crash, reported with the probe's reason.
        let then = match restart_wait(want.restart_policy(), code, obs.restart_count, at, now) {
            RestartWait::After(left) => format!("restarting in {}", seconds(left)),
            RestartWait::Now => "restarting".into(),
            RestartWait::Never => {
                return PhaseReport::new(
                    TaskPhase::Failed,
                    *reason,
                    format!(
                        "{why}; restart policy {} does not restart it",
                        want.restart_policy()
                    ),
                )
            }
        };
        return PhaseReport::new(TaskPhase::Pending, *reason, format!("{why}; {then}"));
    }
    if obs.stop_requested_at.is_some() {
        return PhaseReport::new(
            TaskPhase::Starting,
            Reason::Restarting,
            format!("restarting after a stop ({})", exit(code)),
        );
    }
    match restart_wait(want.restart_policy(), code, obs.restart_count, at, now) {
        RestartWait::After(left) => PhaseReport::new(
            TaskPhase::Pending,
            Reason::BackOff,
            format!("restarting in {} ({})", seconds(left), exit(code)),
        ),
        RestartWait::Now => PhaseReport::new(
            TaskPhase::Starting,
            Reason::Restarting,
            format!("restarting ({})", exit(code)),
        ),
        RestartWait::Never if code == 0 => PhaseReport::new(
            TaskPhase::Succeeded,
            Reason::Completed,
            format!("completed ({})", exit(code)),
        ),
        RestartWait::Never => PhaseReport::new(
            TaskPhase::Failed,
            Reason::Error,
            format!(
                "failed ({}); restart policy {} does not restart it",
                exit(code),
                want.restart_policy()
            ),
        ),
    }
}

fn running(pid: u32, obs: &Observed) -> String {
    match (obs.restart_count, obs.last_exit) {
        (0, _) => format!("running as pid {pid}"),
        (n, Some(last)) => format!(
            "running as pid {pid}; restarted {n} time{}, last {}",
            plural(n),
            exit(last.code)
        ),
        (n, None) => format!("running as pid {pid}; restarted {n} time{}", plural(n)),
    }
}

fn stopping(want: &Desired, requested: SystemTime, now: SystemTime) -> String {
    let grace = if want.kill {
        Duration::ZERO
    } else {
        want.stop_grace()
    };
    let waited = now.duration_since(requested).unwrap_or(Duration::ZERO);
    match grace.checked_sub(waited).filter(|d| !d.is_zero()) {
        Some(left) => format!(
            "stopping: SIGKILL in {} if it has not exited",
            seconds(left)
        ),
        None => "stopping: SIGKILL sent".to_string(),
    }
}

fn replacing(want: &Desired, obs: &Observed, doing: &str) -> String {
    if obs.uid != want.uid {
        format!("{doing} the container of an earlier task with the same name")
    } else {
        format!(
            "{doing} the container of generation {} to run generation {}",
            obs.generation, want.generation
        )
    }
}

fn pull_progress(image: &str, done: u64, total: u64) -> String {
    if total == 0 {
        format!("pulling {image}: {}", bytes(done))
    } else {
        let percent = u128::from(done.min(total)) * 100 / u128::from(total);
        format!(
            "pulling {image}: {} of {} ({percent}%)",
            bytes(done),
            bytes(total)
        )
    }
}

/// `exit code 1`, with the signal for codes 129..=159 (128 + signal, as shells report it).
fn exit(code: i32) -> String {
    match code {
        129..=159 => format!("exit code {code}, signal {}", code - 128),
        _ => format!("exit code {code}"),
    }
}

/// A wait rounded up to whole seconds, so "restarting in 0s" never shows while waiting.
fn seconds(d: Duration) -> String {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format_duration(Duration::from_secs(whole))
}

/// Bytes with one decimal in the largest fitting binary unit: `12.5 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use voiyd_messages::v1::TaskConfig;

    use super::*;
    const STOPPING: &str = TaskPhase::Stopping.as_str();
    const STOPPED: &str = TaskPhase::Stopped.as_str();
    const FAILED: &str = TaskPhase::Failed.as_str();
    const RUNNING: &str = TaskPhase::Running.as_str();
    const PULLING: &str = TaskPhase::Pulling.as_str();
    const PENDING: &str = TaskPhase::Pending.as_str();
    const STARTING: &str = TaskPhase::Starting.as_str();
    const SUCCEEDED: &str = TaskPhase::Succeeded.as_str();
    use crate::decide::reconcile::Exit;

    const NOW: u64 = 10_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn want(f: impl FnOnce(&mut Desired)) -> Option<Desired> {
        let mut d = Desired {
            task: "web".into(),
            uid: "u1".into(),
            generation: 3,
            config: TaskConfig {
                image: "busybox:1.36".into(),
                ..TaskConfig::default()
            },
            kill: false,
            volumes: Vec::new(),
            trace_parent: String::new(),
        };
        f(&mut d);
        Some(d)
    }

    fn obs(state: ContainerState, f: impl FnOnce(&mut Observed)) -> Option<Observed> {
        let mut o = Observed {
            task: "web".into(),
            uid: "u1".into(),
            generation: 3,
            state,
            restart_count: 0,
            last_started: None,
            last_exit: None,
            stop_requested_at: None,
            probe_failure: None,
            last_grace: None,
            kill_unassigned: false,
        };
        f(&mut o);
        Some(o)
    }

    fn running() -> ContainerState {
        ContainerState::Running {
            pid: 42,
            since: at(NOW - 60),
        }
    }

    fn exited(code: i32, ago: u64) -> ContainerState {
        ContainerState::Exited {
            code,
            at: at(NOW - ago),
        }
    }

    fn keep<T>(_: &mut T) {}

    struct Case {
        name: &'static str,
        desired: Option<Desired>,
        observed: Option<Observed>,
        pulling: Option<(u64, u64)>,
        error: Option<(&'static str, &'static str)>,
        want: (&'static str, &'static str, &'static str),
    }

    fn case(
        name: &'static str,
        desired: Option<Desired>,
        observed: Option<Observed>,
        want: (&'static str, &'static str, &'static str),
    ) -> Case {
        Case {
            name,
            desired,
            observed,
            pulling: None,
            error: None,
            want,
        }
    }

    #[test]
    fn phase_table() {
        let stopped = |d: &mut Desired| d.config.stopped = true;
        let never = |d: &mut Desired| d.config.restart_policy = "never".into();
        let cases = vec![
            case(
                "unassigned, running",
                None,
                obs(running(), keep),
                (
                    STOPPING,
                    "Unassigned",
                    "stopping: the task is no longer assigned to this node",
                ),
            ),
            case(
                "unassigned, gone",
                None,
                None,
                (
                    STOPPED,
                    "Unassigned",
                    "the task is no longer assigned to this node",
                ),
            ),
            case(
                "running, failed its liveness probe",
                want(keep),
                obs(running(), |o| {
                    o.probe_failure = Some((Reason::LivenessProbeFailed, "liveness probe failed 3 times in a row: boom".into()))
                }),
                (
                    STOPPING,
                    "LivenessProbeFailed",
                    "liveness probe failed 3 times in a row: boom; stopping",
                ),
            ),
            case(
                "exited after a failed liveness probe, never restarted",
                want(never),
                obs(ContainerState::Exited { code: 137, at: at(NOW - 1) }, |o| {
                    o.stop_requested_at = Some(at(NOW - 2));
                    o.probe_failure = Some((Reason::LivenessProbeFailed, "liveness probe failed 3 times in a row: boom".into()))
                }),
                (
                    FAILED,
                    "LivenessProbeFailed",
                    "liveness probe failed 3 times in a row: boom; restart policy never does not restart it",
                ),
            ),
            case(
                "stopped, not yet signalled",
                want(stopped),
                obs(running(), keep),
                (STOPPING, "StopRequested", "stopping"),
            ),
            case(
                "stopped, SIGTERM sent 3.5s ago",
                want(stopped),
                obs(running(), |o| {
                    o.stop_requested_at = Some(at(NOW - 4) + Duration::from_millis(500))
                }),
                (
                    STOPPING,
                    "StopRequested",
                    "stopping: SIGKILL in 7s if it has not exited",
                ),
            ),
            case(
                "stopped, grace over",
                want(stopped),
                obs(running(), |o| o.stop_requested_at = Some(at(NOW - 30))),
                (STOPPING, "StopRequested", "stopping: SIGKILL sent"),
            ),
            case(
                "stopped, exited by SIGTERM",
                want(stopped),
                obs(exited(143, 1), |o| o.generation = 2),
                (
                    STOPPED,
                    "StopRequested",
                    "stopped (exit code 143, signal 15)",
                ),
            ),
            case(
                "stopped before it ever ran",
                want(stopped),
                None,
                (STOPPED, "StopRequested", "stopped"),
            ),
            Case {
                error: Some(("PullFailed", "pulling busybox:1.36: 404 not found")),
                ..case(
                    "stopped wins over an old pull failure",
                    want(stopped),
                    None,
                    (STOPPED, "StopRequested", "stopped"),
                )
            },
            Case {
                error: Some(("PullFailed", "pulling busybox:1.36: 404 not found")),
                ..case(
                    "pull failed",
                    want(keep),
                    None,
                    (FAILED, "PullFailed", "pulling busybox:1.36: 404 not found"),
                )
            },
            Case {
                error: Some(("CreateFailed", "no such volume data")),
                ..case(
                    "create failed",
                    want(keep),
                    obs(ContainerState::Absent, keep),
                    (FAILED, "CreateFailed", "no such volume data"),
                )
            },
            case(
                "running",
                want(keep),
                obs(running(), keep),
                (RUNNING, "Started", "running as pid 42"),
            ),
            case(
                "running after restarts",
                want(keep),
                obs(running(), |o| {
                    o.restart_count = 3;
                    o.last_exit = Some(Exit {
                        code: 1,
                        at: at(NOW - 61),
                    });
                }),
                (
                    RUNNING,
                    "Started",
                    "running as pid 42; restarted 3 times, last exit code 1",
                ),
            ),
            case(
                "running after one restart, exit unknown",
                want(keep),
                obs(running(), |o| o.restart_count = 1),
                (RUNNING, "Started", "running as pid 42; restarted 1 time"),
            ),
            case(
                "running, our stop under way",
                want(keep),
                obs(running(), |o| o.stop_requested_at = Some(at(NOW - 2))),
                (
                    STOPPING,
                    "Stopping",
                    "stopping: SIGKILL in 8s if it has not exited",
                ),
            ),
            case(
                "running an old generation",
                want(keep),
                obs(running(), |o| o.generation = 2),
                (
                    STOPPING,
                    "Replacing",
                    "stopping the container of generation 2 to run generation 3",
                ),
            ),
            case(
                "running an earlier task's container",
                want(keep),
                obs(running(), |o| o.uid = "u0".into()),
                (
                    STOPPING,
                    "Replacing",
                    "stopping the container of an earlier task with the same name",
                ),
            ),
            Case {
                pulling: Some((3 << 20, 12 << 20)),
                ..case(
                    "pulling",
                    want(keep),
                    None,
                    (
                        PULLING,
                        "Pulling",
                        "pulling busybox:1.36: 3.0 MiB of 12.0 MiB (25%)",
                    ),
                )
            },
            Case {
                pulling: Some((512, 0)),
                ..case(
                    "pulling, size unknown",
                    want(keep),
                    obs(ContainerState::Absent, keep),
                    (PULLING, "Pulling", "pulling busybox:1.36: 512 B"),
                )
            },
            case(
                "nothing yet",
                want(keep),
                None,
                (
                    PENDING,
                    "ContainerCreating",
                    "waiting to pull busybox:1.36 and create the container",
                ),
            ),
            case(
                "exited old generation",
                want(keep),
                obs(exited(0, 1), |o| o.generation = 2),
                (
                    PENDING,
                    "Replacing",
                    "removing the container of generation 2 to run generation 3",
                ),
            ),
            case(
                "created",
                want(keep),
                obs(ContainerState::Created, keep),
                (STARTING, "Starting", "container created, starting it"),
            ),
            case(
                "exited after our stop",
                want(never),
                obs(exited(137, 1), |o| o.stop_requested_at = Some(at(NOW - 20))),
                (
                    STARTING,
                    "Restarting",
                    "restarting after a stop (exit code 137, signal 9)",
                ),
            ),
            case(
                "crash loop back-off",
                want(keep),
                obs(exited(1, 0), |o| o.restart_count = 3),
                (PENDING, "BackOff", "restarting in 8s (exit code 1)"),
            ),
            case(
                "back-off rounds up",
                want(keep),
                obs(
                    ContainerState::Exited {
                        code: 1,
                        at: at(NOW) - Duration::from_millis(1500),
                    },
                    |o| o.restart_count = 9,
                ),
                (PENDING, "BackOff", "restarting in 4m59s (exit code 1)"),
            ),
            case(
                "back-off over",
                want(keep),
                obs(exited(1, 9), |o| o.restart_count = 3),
                (STARTING, "Restarting", "restarting (exit code 1)"),
            ),
            case(
                "succeeded",
                want(never),
                obs(exited(0, 9), keep),
                (SUCCEEDED, "Completed", "completed (exit code 0)"),
            ),
            case(
                "on-failure, succeeded",
                want(|d| d.config.restart_policy = "on-failure".into()),
                obs(exited(0, 9), keep),
                (SUCCEEDED, "Completed", "completed (exit code 0)"),
            ),
            case(
                "failed",
                want(never),
                obs(exited(2, 9), keep),
                (
                    FAILED,
                    "Error",
                    "failed (exit code 2); restart policy never does not restart it",
                ),
            ),
        ];
        for c in cases {
            let got = derive(
                c.desired.as_ref(),
                c.observed.as_ref(),
                c.pulling,
                c.error
                    .map(|(r, m)| (Reason::parse(r).expect("a known reason"), m)),
                at(NOW),
            );
            let (phase, reason, message) = c.want;
            assert_eq!(
                (
                    got.phase.as_str(),
                    got.reason.as_str(),
                    got.message.as_str()
                ),
                (phase, reason, message),
                "case: {}",
                c.name
            );
        }
    }

    #[test]
    fn byte_sizes() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 << 30, "5.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (n, want) in cases {
            assert_eq!(bytes(n), want, "{n} bytes");
        }
    }

    #[test]
    fn pull_percent_never_exceeds_100() {
        assert_eq!(pull_progress("x", 20, 10), "pulling x: 20 B of 10 B (100%)");
        assert_eq!(
            pull_progress("x", u64::MAX, u64::MAX),
            "pulling x: 16.0 EiB of 16.0 EiB (100%)"
        );
    }
}
