//! The node's reconcile decision: given what a task should be ([`Desired`]) and what its
//! container is ([`Observed`]), which runtime actions bring them together.
//!
//! [`decide`] is pure and level-triggered: it looks only at its arguments (including the
//! clock, passed in as `now`) and may be called again at any time; a missed event or an agent
//! restart is healed by the next call. The caller executes the returned [`Action`]s in order,
//! stops at the first failure, refreshes [`Observed`] and calls again, at the latest after
//! [`Decision::requeue_after`].
//!
//! # Rules
//!
//! "Same" means the container was created for the desired task's uid and generation.
//!
//! | desired | container | actions |
//! |---|---|---|
//! | none | absent | — |
//! | none | running | Stop (the last known spec's grace, or SIGKILL when the server asked to kill) |
//! | none | created / exited | Delete |
//! | running | absent | Pull, Create, Start |
//! | running | created, same | Start |
//! | running | running, same | — (ResetRestarts once it ran [`RESET_AFTER`] with restarts counted) |
//! | running | running, other | Stop |
//! | running | running, same, failed a liveness or startup probe | Stop |
//! | running | created / exited, other | Delete, Pull, Create, Start |
//! | running | exited, same | restart policy: after the backoff DeleteTask, CountRestart, Start; before it nothing and `requeue_after` = the rest of the backoff |
//! | running | exited, same, after our own Stop | DeleteTask, Start (not a crash: no backoff, not counted) |
//! | running | exited, same, after a Stop for a failed probe | as a crash: the restart policy, backoff and count |
//! | stopped | running | Stop { kill: desired.kill } |
//! | stopped | absent / created / exited, same uid | — |
//! | stopped | created / exited, other uid | Delete (the old task's container) |
//! | any | running, stop requested | nothing until the grace has passed, then Stop { kill: true } |
//!
//! `ResetRestarts` also precedes `Pull` when a container is replaced for another uid or
//! generation, so a new spec does not inherit the old one's backoff.
//!
//! # Why a Stop ends a decision
//!
//! [`Action::Stop`] only signals: containers may take up to their grace period to exit (busybox
//! as PID 1 ignores SIGTERM entirely), and an agent must not block on that. So a decision that
//! stops a container contains nothing after the Stop; the container's exit event (or
//! `requeue_after`) triggers the next pass, which deletes and recreates. Escalation to SIGKILL
//! is itself a decision: it needs [`Observed::stop_requested_at`], which the executor sets when
//! it first signals a run to stop.
//!
//! # Restarts
//!
//! A restart reuses the container (its snapshot and spec are unchanged): [`Action::DeleteTask`]
//! removes the exited task and [`Action::Start`] creates and starts a new one. Recreating the
//! whole container would redo the image and snapshot work for nothing.

use std::time::{Duration, SystemTime};

use voiyd_messages::quantity::parse_duration;
use voiyd_messages::v1::{Assignment, TaskConfig};

use crate::decide::restart::{restart_wait, RestartPolicy, RestartWait, RESET_AFTER};

/// Grace between SIGTERM and SIGKILL when the config sets none (or one that does not parse).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How soon to check again (and SIGKILL again) after a SIGKILL, in case the first was lost.
pub const KILL_RETRY: Duration = Duration::from_secs(2);

/// What a task assigned to this node should be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// The task's name.
    pub task: String,
    /// The task's uid: a new task of the same name has another.
    pub uid: String,
    /// The spec generation, bumped on every spec change (including stop and start).
    pub generation: u64,
    /// The task's spec.
    pub config: TaskConfig,
    /// Stop by SIGKILL at once instead of SIGTERM and the grace period.
    pub kill: bool,
    /// The volumes the task mounts, as the server stored them.
    pub volumes: Vec<voiyd_messages::v1::Volume>,
    /// W3C traceparent of the placement ("" when untraced): the node's spans join it.
    pub trace_parent: String,
}

impl Desired {
    /// The desired state an assignment describes, or `None` when it names no task (no task,
    /// no meta, an empty name or no config): such an assignment cannot be run.
    pub fn from_assignment(assignment: &Assignment) -> Option<Desired> {
        let task = assignment.task.as_ref()?;
        let meta = task.meta.as_ref()?;
        if meta.name.is_empty() {
            return None;
        }
        Some(Desired {
            task: meta.name.clone(),
            uid: meta.uid.clone(),
            generation: meta.generation,
            config: task.config.clone()?,
            kill: assignment.kill,
            volumes: assignment.volumes.clone(),
            trace_parent: assignment.trace_parent.clone(),
        })
    }

    /// Whether the user wants the task stopped.
    pub fn stopped(&self) -> bool {
        self.config.stopped
    }

    /// The configured stop grace period; [`DEFAULT_STOP_GRACE`] when unset or unreadable
    /// (the server validates it, so unreadable means an older or foreign writer).
    pub fn stop_grace(&self) -> Duration {
        if self.config.stop_grace_period.trim().is_empty() {
            return DEFAULT_STOP_GRACE;
        }
        parse_duration(&self.config.stop_grace_period).unwrap_or(DEFAULT_STOP_GRACE)
    }

    /// The configured restart policy, see [`RestartPolicy::from_config`].
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::from_config(&self.config.restart_policy)
    }
}

/// The runtime state of a task's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// No container.
    Absent,
    /// A container without a running task (created, or its exited task was deleted).
    Created,
    /// The task is running.
    Running {
        /// The task's process id.
        pid: u32,
        /// When it started.
        since: SystemTime,
    },
    /// The task exited and has not been deleted.
    Exited {
        /// Its exit code.
        code: i32,
        /// When it exited.
        at: SystemTime,
    },
}

impl ContainerState {
    /// Whether a task is running.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running { .. })
    }

    /// Whether a container exists.
    pub fn exists(&self) -> bool {
        !matches!(self, Self::Absent)
    }
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code (128 + signal for a signalled process).
    pub code: i32,
    /// When it exited.
    pub at: SystemTime,
}

/// What the node knows about a task's container, kept by the agent across passes.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The task's name.
    pub task: String,
    /// The uid of the task the container was created for.
    pub uid: String,
    /// The spec generation the container was created for.
    pub generation: u64,
    /// The container's state.
    pub state: ContainerState,
    /// Restarts since the container was created or the count was last reset.
    pub restart_count: u32,
    /// When the current or last run started.
    pub last_started: Option<SystemTime>,
    /// How the last run ended.
    pub last_exit: Option<Exit>,
    /// When the agent first signalled the current run to stop: set by executing
    /// [`Action::Stop`] when unset, cleared by executing [`Action::Start`].
    pub stop_requested_at: Option<SystemTime>,
    /// The current run failed its liveness or startup probe (reason and message): it is
    /// stopped and then treated as a crash. Cleared by executing [`Action::Start`].
    pub probe_failure: Option<(voiyd_messages::reason::Reason, String)>,
    /// The stop grace of the last spec the agent had for this task, for a stop after the
    /// task was taken away from the node ([`DEFAULT_STOP_GRACE`] when unknown).
    pub last_grace: Option<Duration>,
    /// The server asked for SIGKILL at once when it took the task away (`delete --force`).
    pub kill_unassigned: bool,
}

impl Observed {
    /// Whether the container was made for `desired`'s uid and generation.
    pub fn is_for(&self, desired: &Desired) -> bool {
        self.uid == desired.uid && self.generation == desired.generation
    }
}

/// One runtime step. Each is valid right after the previous ones of the same decision
/// succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make the desired image available (the executor applies `pull_policy`: IfNotPresent
    /// skips an image that is already there).
    Pull,
    /// Create the container for the desired uid and generation (the container is absent).
    Create,
    /// Create and start a task in the container (the container exists without a task).
    /// Clears `stop_requested_at`.
    Start,
    /// Signal the running task to stop: SIGTERM, or SIGKILL when `kill`. Does not wait;
    /// `grace` is how long the decision will wait before escalating. Sets
    /// `stop_requested_at` when unset. Always the last action of its decision.
    Stop {
        /// Time allowed between SIGTERM and SIGKILL.
        grace: Duration,
        /// Send SIGKILL now.
        kill: bool,
    },
    /// Delete the container, its exited task and its snapshot (no task is running).
    Delete,
    /// Delete the exited task, keeping the container (ready for [`Action::Start`]).
    DeleteTask,
    /// Count one restart (`restart_count += 1`, saturating).
    CountRestart,
    /// Set `restart_count` to 0.
    ResetRestarts,
}

impl Action {
    /// A short name, for spans and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Create => "create",
            Action::Start => "start",
            Action::Stop { .. } => "stop",
            Action::Delete => "delete",
            Action::DeleteTask => "delete task",
            Action::CountRestart => "count restart",
            Action::ResetRestarts => "reset restarts",
        }
    }
}

/// What to do now, and when to look again even if no event arrives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Actions to execute in order.
    pub actions: Vec<Action>,
    /// Call [`decide`] again after this long at the latest (a grace period or backoff ends).
    pub requeue_after: Option<Duration>,
}

impl Decision {
    fn act(actions: Vec<Action>) -> Self {
        Self {
            actions,
            requeue_after: None,
        }
    }

    fn wait(after: Duration) -> Self {
        Self {
            actions: Vec::new(),
            requeue_after: Some(after),
        }
    }

    /// Nothing to do and nothing to wait for.
    pub fn is_settled(&self) -> bool {
        self.actions.is_empty() && self.requeue_after.is_none()
    }
}

/// Decides what to do for one task; see the [module docs](self) for the rules.
pub fn decide(desired: Option<&Desired>, observed: Option<&Observed>, now: SystemTime) -> Decision {
    let state = observed.map_or(ContainerState::Absent, |o| o.state);
    match (desired, observed) {
        (None, None) => Decision::default(),
        (None, Some(obs)) => match state {
            ContainerState::Absent => Decision::default(),
            ContainerState::Running { .. } => stop(
                obs,
                obs.last_grace.unwrap_or(DEFAULT_STOP_GRACE),
                obs.kill_unassigned,
                now,
            ),
            ContainerState::Created | ContainerState::Exited { .. } => {
                Decision::act(vec![Action::Delete])
            }
        },
        (Some(want), _) if want.stopped() => decide_stopped(want, observed, now),
        (Some(_), None) => Decision::act(vec![Action::Pull, Action::Create, Action::Start]),
        (Some(want), Some(obs)) => decide_running(want, obs, now),
    }
}

/// The user wants the task stopped: stop a running container, never start one, and clear
/// away only a container left by another task of the same name.
fn decide_stopped(want: &Desired, observed: Option<&Observed>, now: SystemTime) -> Decision {
    let Some(obs) = observed else {
        return Decision::default();
    };
    match obs.state {
        ContainerState::Running { .. } => stop(obs, want.stop_grace(), want.kill, now),
        ContainerState::Absent => Decision::default(),
        ContainerState::Created | ContainerState::Exited { .. } => {
            if obs.uid == want.uid {
                // Keep the stopped container: its exit code and logs are what the user
                // looks at next.
                Decision::default()
            } else {
                Decision::act(vec![Action::Delete])
            }
        }
    }
}

/// The user wants the task running.
fn decide_running(want: &Desired, obs: &Observed, now: SystemTime) -> Decision {
    let same = obs.is_for(want);
    match obs.state {
        ContainerState::Absent => create(obs, want, Vec::new()),
        ContainerState::Running { since, .. } => {
            if !same || obs.stop_requested_at.is_some() || obs.probe_failure.is_some() {
                return stop(obs, want.stop_grace(), want.kill, now);
            }
            if obs.restart_count == 0 {
                return Decision::default();
            }
            let ran = now.duration_since(since).unwrap_or(Duration::ZERO);
            match RESET_AFTER.checked_sub(ran) {
                Some(left) if !left.is_zero() => Decision::wait(left),
                _ => Decision::act(vec![Action::ResetRestarts]),
            }
        }
        ContainerState::Created | ContainerState::Exited { .. } if !same => {
            create(obs, want, vec![Action::Delete])
        }
        ContainerState::Created => Decision::act(vec![Action::Start]),
        ContainerState::Exited { code, at } => {
            if obs.stop_requested_at.is_some() && obs.probe_failure.is_none() {
                // We stopped it (the stop was not for this spec's sake, or the generation
                // would differ): bring it back without treating the exit as a crash.
                return Decision::act(vec![Action::DeleteTask, Action::Start]);
            }
            match restart_wait(want.restart_policy(), code, obs.restart_count, at, now) {
                RestartWait::Never => Decision::default(),
                RestartWait::After(left) => Decision::wait(left),
                RestartWait::Now => Decision::act(vec![
                    Action::DeleteTask,
                    Action::CountRestart,
                    Action::Start,
                ]),
            }
        }
    }
}

/// Pull, create and start the desired container after `before`, resetting the restart count
/// when the container is for a different uid or generation.
fn create(obs: &Observed, want: &Desired, mut before: Vec<Action>) -> Decision {
    if obs.restart_count > 0 && !obs.is_for(want) {
        before.push(Action::ResetRestarts);
    }
    before.extend([Action::Pull, Action::Create, Action::Start]);
    Decision::act(before)
}

/// Stops a running container, or escalates a stop already under way once `grace` is over.
/// A zero grace or `kill` means SIGKILL at once.
fn stop(obs: &Observed, grace: Duration, kill: bool, now: SystemTime) -> Decision {
    let grace = if kill { Duration::ZERO } else { grace };
    if let Some(requested) = obs.stop_requested_at {
        let waited = now.duration_since(requested).unwrap_or(Duration::ZERO);
        if let Some(left) = grace.checked_sub(waited).filter(|d| !d.is_zero()) {
            return Decision::wait(left);
        }
        return Decision {
            actions: vec![Action::Stop { grace, kill: true }],
            requeue_after: Some(KILL_RETRY),
        };
    }
    let kill = grace.is_zero();
    Decision {
        actions: vec![Action::Stop { grace, kill }],
        requeue_after: Some(if kill { KILL_RETRY } else { grace }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use voiyd_messages::v1::{Meta, Task};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    const NOW: u64 = 10_000;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn want() -> Desired {
        Desired {
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
        }
    }

    fn with(f: impl FnOnce(&mut Desired)) -> Option<Desired> {
        let mut d = want();
        f(&mut d);
        Some(d)
    }

    fn obs(state: ContainerState) -> Observed {
        Observed {
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
        }
    }

    fn obs_with(state: ContainerState, f: impl FnOnce(&mut Observed)) -> Option<Observed> {
        let mut o = obs(state);
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

    fn act(actions: &[Action]) -> Decision {
        Decision {
            actions: actions.to_vec(),
            requeue_after: None,
        }
    }

    fn wait(after: Duration) -> Decision {
        Decision {
            actions: Vec::new(),
            requeue_after: Some(after),
        }
    }

    fn stop(grace: u64, kill: bool, requeue: u64) -> Decision {
        Decision {
            actions: vec![Action::Stop {
                grace: s(grace),
                kill,
            }],
            requeue_after: Some(s(requeue)),
        }
    }

    use Action::{CountRestart, Create, Delete, DeleteTask, Pull, ResetRestarts, Start};
    const CREATE: [Action; 3] = [Pull, Create, Start];
    const RESTART: [Action; 3] = [DeleteTask, CountRestart, Start];

    #[test]
    fn decision_table() {
        let other_gen = |o: &mut Observed| o.generation = 2;
        let other_uid = |o: &mut Observed| o.uid = "u0".into();
        let stopped = |d: &mut Desired| d.config.stopped = true;
        let cases: Vec<(&str, Option<Desired>, Option<Observed>, Decision)> = vec![
            ("nothing wanted, nothing there", None, None, act(&[])),
            (
                "nothing wanted, absent",
                None,
                Some(obs(ContainerState::Absent)),
                act(&[]),
            ),
            (
                "unassigned running: stop with default grace",
                None,
                Some(obs(running())),
                stop(10, false, 10),
            ),
            (
                "unassigned, stop under way: wait out the grace",
                None,
                obs_with(running(), |o| o.stop_requested_at = Some(at(NOW - 3))),
                wait(s(7)),
            ),
            (
                "unassigned, grace over: escalate",
                None,
                obs_with(running(), |o| o.stop_requested_at = Some(at(NOW - 10))),
                stop(10, true, 2),
            ),
            (
                "unassigned running: the last spec's grace",
                None,
                obs_with(running(), |o| o.last_grace = Some(s(30))),
                stop(30, false, 30),
            ),
            (
                "unassigned running, the server asked to kill",
                None,
                obs_with(running(), |o| {
                    o.last_grace = Some(s(30));
                    o.kill_unassigned = true;
                }),
                stop(0, true, 2),
            ),
            (
                "running, failed its liveness probe: stop with the spec's grace",
                Some(want()),
                obs_with(running(), |o| {
                    o.probe_failure = Some((
                        voiyd_messages::reason::Reason::LivenessProbeFailed,
                        "x".into(),
                    ))
                }),
                stop(10, false, 10),
            ),
            (
                "exited after a stop for a failed probe: a crash, restarted and counted",
                Some(want()),
                obs_with(exited(137, 5), |o| {
                    o.stop_requested_at = Some(at(NOW - 6));
                    o.probe_failure = Some((
                        voiyd_messages::reason::Reason::LivenessProbeFailed,
                        "x".into(),
                    ))
                }),
                act(&RESTART),
            ),
            (
                "unassigned created: delete",
                None,
                Some(obs(ContainerState::Created)),
                act(&[Delete]),
            ),
            (
                "unassigned exited: delete",
                None,
                Some(obs(exited(0, 5))),
                act(&[Delete]),
            ),
            ("new task", Some(want()), None, act(&CREATE)),
            (
                "container gone",
                Some(want()),
                Some(obs(ContainerState::Absent)),
                act(&CREATE),
            ),
            (
                "container gone, restarts of the same spec are kept",
                Some(want()),
                obs_with(ContainerState::Absent, |o| o.restart_count = 4),
                act(&CREATE),
            ),
            (
                "container gone, restarts of an old spec are reset",
                Some(want()),
                obs_with(ContainerState::Absent, |o| {
                    o.generation = 2;
                    o.restart_count = 4;
                }),
                act(&[ResetRestarts, Pull, Create, Start]),
            ),
            (
                "created: start",
                Some(want()),
                Some(obs(ContainerState::Created)),
                act(&[Start]),
            ),
            (
                "created for an old spec: replace",
                Some(want()),
                obs_with(ContainerState::Created, other_gen),
                act(&[Delete, Pull, Create, Start]),
            ),
            (
                "running as wanted",
                Some(want()),
                Some(obs(running())),
                act(&[]),
            ),
            (
                "running after restarts: look again when the reset is due",
                Some(want()),
                obs_with(running(), |o| o.restart_count = 2),
                wait(RESET_AFTER - s(60)),
            ),
            (
                "running cleanly for RESET_AFTER: reset restarts",
                Some(want()),
                obs_with(
                    ContainerState::Running {
                        pid: 42,
                        since: at(NOW) - RESET_AFTER,
                    },
                    |o| o.restart_count = 2,
                ),
                act(&[ResetRestarts]),
            ),
            (
                "running an old generation: stop",
                Some(want()),
                obs_with(running(), other_gen),
                stop(10, false, 10),
            ),
            (
                "running an earlier task's container: stop with the configured grace",
                with(|d| d.config.stop_grace_period = "30s".into()),
                obs_with(running(), other_uid),
                stop(30, false, 30),
            ),
            (
                "running an old generation, kill requested",
                with(|d| d.kill = true),
                obs_with(running(), other_gen),
                stop(0, true, 2),
            ),
            (
                "zero grace means kill",
                with(|d| d.config.stop_grace_period = "0s".into()),
                obs_with(running(), other_gen),
                stop(0, true, 2),
            ),
            (
                "unreadable grace falls back to the default",
                with(|d| d.config.stop_grace_period = "soon".into()),
                obs_with(running(), other_gen),
                stop(10, false, 10),
            ),
            (
                "exited old generation: replace and reset restarts",
                Some(want()),
                obs_with(exited(1, 5), |o| {
                    o.generation = 2;
                    o.restart_count = 3;
                }),
                act(&[Delete, ResetRestarts, Pull, Create, Start]),
            ),
            (
                "crashed, backoff 8s not over",
                Some(want()),
                obs_with(exited(1, 5), |o| o.restart_count = 3),
                wait(s(3)),
            ),
            (
                "crashed, backoff over: restart",
                Some(want()),
                obs_with(exited(1, 8), |o| o.restart_count = 3),
                act(&RESTART),
            ),
            (
                "exit time in the future (clock went back): wait the whole backoff",
                Some(want()),
                obs(ContainerState::Exited {
                    code: 1,
                    at: at(NOW + 100),
                })
                .into(),
                wait(s(1)),
            ),
            (
                "always restarts a clean exit",
                Some(want()),
                Some(obs(exited(0, 1))),
                act(&RESTART),
            ),
            (
                "on-failure leaves a clean exit",
                with(|d| d.config.restart_policy = "on-failure".into()),
                Some(obs(exited(0, 100))),
                act(&[]),
            ),
            (
                "on-failure restarts a failure",
                with(|d| d.config.restart_policy = "on-failure".into()),
                Some(obs(exited(2, 100))),
                act(&RESTART),
            ),
            (
                "never leaves a failure",
                with(|d| d.config.restart_policy = "never".into()),
                Some(obs(exited(1, 100))),
                act(&[]),
            ),
            (
                "exited after our own stop: start again at once, not counted",
                with(|d| d.config.restart_policy = "never".into()),
                obs_with(exited(143, 0), |o| o.stop_requested_at = Some(at(NOW - 2))),
                act(&[DeleteTask, Start]),
            ),
            (
                "running, stop under way for the same spec: finish it",
                Some(want()),
                obs_with(running(), |o| o.stop_requested_at = Some(at(NOW - 12))),
                stop(10, true, 2),
            ),
            (
                "stopped by the user: stop",
                with(stopped),
                Some(obs(running())),
                stop(10, false, 10),
            ),
            (
                "stopped with kill: SIGKILL at once",
                with(|d| {
                    d.config.stopped = true;
                    d.kill = true;
                }),
                Some(obs(running())),
                stop(0, true, 2),
            ),
            (
                "stopped, SIGTERM sent 4s ago: wait",
                with(stopped),
                obs_with(running(), |o| o.stop_requested_at = Some(at(NOW - 4))),
                wait(s(6)),
            ),
            (
                "stopped, SIGTERM sent 4s ago, then force: kill now",
                with(|d| {
                    d.config.stopped = true;
                    d.kill = true;
                }),
                obs_with(running(), |o| o.stop_requested_at = Some(at(NOW - 4))),
                stop(0, true, 2),
            ),
            (
                "stopped and exited (generation bumped by the stop): keep",
                with(stopped),
                obs_with(exited(143, 3), other_gen),
                act(&[]),
            ),
            (
                "stopped and created: do not start",
                with(stopped),
                Some(obs(ContainerState::Created)),
                act(&[]),
            ),
            (
                "stopped and absent: do not create",
                with(stopped),
                Some(obs(ContainerState::Absent)),
                act(&[]),
            ),
            ("stopped, nothing there", with(stopped), None, act(&[])),
            (
                "stopped, an earlier task's container: remove it",
                with(stopped),
                obs_with(exited(0, 3), other_uid),
                act(&[Delete]),
            ),
        ];
        for (name, desired, observed, want) in cases {
            let got = decide(desired.as_ref(), observed.as_ref(), at(NOW));
            assert_eq!(got, want, "case: {name}");
        }
    }

    fn assignment(f: impl FnOnce(&mut Task)) -> Assignment {
        let mut task = Task {
            meta: Some(Meta {
                name: "web".into(),
                uid: "u1".into(),
                generation: 3,
                ..Meta::default()
            }),
            config: Some(TaskConfig {
                image: "busybox:1.36".into(),
                ..TaskConfig::default()
            }),
            ..Task::default()
        };
        f(&mut task);
        Assignment {
            task: Some(task),
            kill: true,
            volumes: Vec::new(),
            trace_parent: String::new(),
        }
    }

    #[test]
    fn desired_from_assignment() {
        let got = Desired::from_assignment(&assignment(|_| {})).expect("a complete assignment");
        assert_eq!(got, with(|d| d.kill = true).unwrap());

        let incomplete: [(&str, Assignment); 4] = [
            ("no task", Assignment::default()),
            ("no meta", assignment(|t| t.meta = None)),
            (
                "no name",
                assignment(|t| t.meta.as_mut().unwrap().name.clear()),
            ),
            ("no config", assignment(|t| t.config = None)),
        ];
        for (name, a) in incomplete {
            assert_eq!(Desired::from_assignment(&a), None, "case: {name}");
        }
    }

    #[test]
    fn stop_grace_parsing() {
        let cases = [
            ("", s(10)),
            ("  ", s(10)),
            ("30s", s(30)),
            ("1m30s", s(90)),
            ("500ms", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            ("-5s", s(10)),
            ("ten seconds", s(10)),
        ];
        for (input, grace) in cases {
            let d = with(|d| d.config.stop_grace_period = input.into()).unwrap();
            assert_eq!(d.stop_grace(), grace, "input {input:?}");
        }
    }
}
