//! Property tests of the node's pure decisions: `decide` against a small simulated container,
//! the restart backoff, and the phase report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use voiyd_messages::phase::TaskPhase;
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::TaskConfig;
use voiyd_node::decide::phase::derive;
use voiyd_node::decide::reconcile::{
    decide, Action, ContainerState, Decision, Desired, Exit, Observed,
};
use voiyd_node::decide::restart::{backoff, BACKOFF_MAX, RESET_AFTER};

/// The clock every generated time is relative to.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A time from about 12 days before `now()` to 100 s after it (clocks can go backwards).
fn time() -> impl Strategy<Value = SystemTime> {
    (-1_000_000_000i64..100_000).prop_map(|ms| {
        if ms >= 0 {
            now() + Duration::from_millis(ms as u64)
        } else {
            now() - Duration::from_millis(ms.unsigned_abs())
        }
    })
}

fn uid() -> impl Strategy<Value = String> {
    prop_oneof![Just("u1".to_string()), Just("u2".to_string())]
}

fn desired() -> impl Strategy<Value = Desired> {
    (
        uid(),
        1u64..=3,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec!["", "always", "on-failure", "never", "bogus"]),
        prop::sample::select(vec!["", "0s", "1s", "10s", "30s", "junk"]),
    )
        .prop_map(|(uid, generation, stopped, kill, policy, grace)| Desired {
            task: "web".into(),
            uid,
            generation,
            config: TaskConfig {
                image: "busybox:1.36".into(),
                stopped,
                restart_policy: policy.into(),
                stop_grace_period: grace.into(),
                ..TaskConfig::default()
            },
            kill,
            volumes: Vec::new(),
            trace_parent: String::new(),
        })
}

fn state() -> impl Strategy<Value = ContainerState> {
    prop_oneof![
        Just(ContainerState::Absent),
        Just(ContainerState::Created),
        (1u32.., time()).prop_map(|(pid, since)| ContainerState::Running { pid, since }),
        (any::<i32>(), time()).prop_map(|(code, at)| ContainerState::Exited { code, at }),
    ]
}

fn restart_count() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..40, any::<u32>(), Just(u32::MAX)]
}

fn observed() -> impl Strategy<Value = Observed> {
    (
        uid(),
        1u64..=3,
        state(),
        restart_count(),
        prop::option::of(time()),
        prop::option::of((any::<i32>(), time()).prop_map(|(code, at)| Exit { code, at })),
        prop::option::of(time()),
    )
        .prop_map(
            |(uid, generation, state, restart_count, last_started, last_exit, stop)| Observed {
                task: "web".into(),
                uid,
                generation,
                state,
                restart_count,
                last_started,
                last_exit,
                stop_requested_at: stop,
                probe_failure: None,
                last_grace: None,
                kill_unassigned: false,
            },
        )
}

/// A container as the executor would leave it after each action.
#[derive(Debug, Clone)]
struct Sim {
    observed: Option<Observed>,
    /// Whether the process exits on SIGTERM (busybox as PID 1 does not).
    obeys_sigterm: bool,
    now: SystemTime,
}

impl Sim {
    fn state(&self) -> ContainerState {
        self.observed
            .as_ref()
            .map_or(ContainerState::Absent, |o| o.state)
    }

    /// Applies one action, or says why it was not valid in the current state.
    fn apply(&mut self, action: Action, desired: Option<&Desired>) -> Result<(), String> {
        let now = self.now;
        let state = self.state();
        match action {
            Action::Pull => {
                desired.ok_or("Pull without a desired task")?;
            }
            Action::Create => {
                let want = desired.ok_or("Create without a desired task")?;
                if state.exists() {
                    return Err(format!("Create over an existing container: {state:?}"));
                }
                let old = self.observed.take();
                self.observed = Some(Observed {
                    task: want.task.clone(),
                    uid: want.uid.clone(),
                    generation: want.generation,
                    state: ContainerState::Created,
                    restart_count: old.as_ref().map_or(0, |o| o.restart_count),
                    last_started: old.as_ref().and_then(|o| o.last_started),
                    last_exit: old.as_ref().and_then(|o| o.last_exit),
                    stop_requested_at: old.and_then(|o| o.stop_requested_at),
                    probe_failure: None,
                    last_grace: None,
                    kill_unassigned: false,
                });
            }
            Action::Start => {
                if desired.is_none_or(|d| d.config.stopped) {
                    return Err("Start of a task that should not run".into());
                }
                let o = self.observed.as_mut().ok_or("Start without a container")?;
                if o.state != ContainerState::Created {
                    return Err(format!("Start in state {:?}", o.state));
                }
                o.state = ContainerState::Running {
                    pid: 4242,
                    since: now,
                };
                o.last_started = Some(now);
                o.stop_requested_at = None;
            }
            Action::Stop { kill, .. } => {
                let obeys = self.obeys_sigterm;
                let o = self.observed.as_mut().ok_or("Stop without a container")?;
                if !o.state.is_running() {
                    return Err(format!("Stop in state {:?}", o.state));
                }
                o.stop_requested_at.get_or_insert(now);
                if kill || obeys {
                    let code = if kill { 137 } else { 143 };
                    o.state = ContainerState::Exited { code, at: now };
                    o.last_exit = Some(Exit { code, at: now });
                }
            }
            Action::Delete => {
                let o = self.observed.as_mut().ok_or("Delete without a container")?;
                match o.state {
                    ContainerState::Created | ContainerState::Exited { .. } => {
                        o.state = ContainerState::Absent
                    }
                    s => return Err(format!("Delete in state {s:?}")),
                }
            }
            Action::DeleteTask => {
                let o = self
                    .observed
                    .as_mut()
                    .ok_or("DeleteTask without a container")?;
                match o.state {
                    ContainerState::Exited { .. } => o.state = ContainerState::Created,
                    s => return Err(format!("DeleteTask in state {s:?}")),
                }
            }
            Action::CountRestart => {
                let o = self
                    .observed
                    .as_mut()
                    .ok_or("CountRestart without a record")?;
                o.restart_count = o.restart_count.saturating_add(1);
            }
            Action::ResetRestarts => {
                let o = self
                    .observed
                    .as_mut()
                    .ok_or("ResetRestarts without a record")?;
                o.restart_count = 0;
            }
        }
        Ok(())
    }

    /// Decides and applies the decision, checking each action against the simulated state.
    fn step(&mut self, desired: Option<&Desired>) -> Result<Decision, String> {
        let decision = decide(desired, self.observed.as_ref(), self.now);
        for (i, action) in decision.actions.iter().enumerate() {
            if matches!(action, Action::Stop { .. }) && i + 1 != decision.actions.len() {
                return Err(format!("Stop is not the last action: {decision:?}"));
            }
            self.apply(*action, desired)
                .map_err(|e| format!("{e} (decision {decision:?})"))?;
        }
        Ok(decision)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Every action is valid where it stands: Start only on a container that exists (or was
    /// created earlier in the decision) without a task, Delete never under a running task, and
    /// a Stop ends its decision and always comes with a requeue.
    #[test]
    fn actions_are_valid_in_order(
        d in prop::option::of(desired()),
        o in prop::option::of(observed()),
        obeys_sigterm in any::<bool>(),
    ) {
        let mut sim = Sim { observed: o, obeys_sigterm, now: now() };
        let decision = sim.step(d.as_ref()).map_err(TestCaseError::fail)?;
        if decision.actions.iter().any(|a| matches!(a, Action::Stop { .. })) {
            prop_assert!(decision.requeue_after.is_some(), "{decision:?}");
        }
        if decision.actions.is_empty() {
            prop_assert!(decision.requeue_after != Some(Duration::ZERO), "{decision:?}");
        }
    }

    /// A running container of the desired uid and generation, not being stopped, is left
    /// alone; the only bookkeeping is resetting restarts after RESET_AFTER.
    #[test]
    fn agreement_means_no_actions(
        mut d in desired(),
        mut o in observed(),
        pid in 1u32..,
        since in time(),
    ) {
        d.config.stopped = false;
        o.uid = d.uid.clone();
        o.generation = d.generation;
        o.state = ContainerState::Running { pid, since };
        o.stop_requested_at = None;
        let decision = decide(Some(&d), Some(&o), now());
        let ran = now().duration_since(since).unwrap_or_default();
        if o.restart_count > 0 && ran >= RESET_AFTER {
            prop_assert_eq!(decision.actions, vec![Action::ResetRestarts]);
        } else {
            prop_assert!(decision.actions.is_empty(), "{decision:?}");
        }
    }

    /// A task the user stopped is never pulled, created or started.
    #[test]
    fn stopped_task_is_never_started(
        mut d in desired(),
        o in prop::option::of(observed()),
        at in time(),
    ) {
        d.config.stopped = true;
        let decision = decide(Some(&d), o.as_ref(), at);
        prop_assert!(
            !decision.actions.iter().any(|a| matches!(a, Action::Start | Action::Create | Action::Pull)),
            "{decision:?}"
        );
    }

    /// The backoff never shrinks as restarts accumulate and stays within [1 s, 5 min].
    #[test]
    fn backoff_is_monotonic_and_capped(n in restart_count()) {
        let b = backoff(n);
        prop_assert!(b <= BACKOFF_MAX && b <= Duration::from_secs(300));
        prop_assert!(b >= Duration::from_secs(1));
        if let Some(next) = n.checked_add(1) {
            prop_assert!(b <= backoff(next), "backoff({n}) = {b:?} > backoff({next})");
        }
    }

    /// With the clock standing still and containers that exit on SIGTERM, acting on each
    /// decision reaches a decision without actions within 4 passes.
    #[test]
    fn converges_within_four_passes(
        d in prop::option::of(desired()),
        o in prop::option::of(observed()),
    ) {
        let mut sim = Sim { observed: o, obeys_sigterm: true, now: now() };
        let mut history = Vec::new();
        for _ in 0..4 {
            let decision = sim.step(d.as_ref()).map_err(TestCaseError::fail)?;
            if decision.actions.is_empty() {
                return Ok(());
            }
            history.push(decision);
        }
        prop_assert!(false, "no fixed point after 4 passes: {history:?}, ending in {:?}", sim.observed);
    }

    /// With time moving on to each requeue and containers that may ignore SIGTERM, every task
    /// settles (nothing to do, nothing to wait for) within 16 passes, and then runs exactly
    /// when it should. (A stop recorded up to 60 s ahead of the clock waits out its grace in
    /// 10 s requeues first: 7 of them, then stop, delete and the settled pass.)
    #[test]
    fn settles_as_time_passes(
        d in prop::option::of(desired()),
        o in prop::option::of(observed()),
        obeys_sigterm in any::<bool>(),
    ) {
        let mut sim = Sim { observed: o, obeys_sigterm, now: now() };
        let mut history = Vec::new();
        for _ in 0..16 {
            let decision = sim.step(d.as_ref()).map_err(TestCaseError::fail)?;
            if decision.is_settled() {
                let state = sim.state();
                match &d {
                    Some(want) if !want.config.stopped => {
                        // Running, or finished for good under its restart policy.
                        let o = sim.observed.as_ref().expect("a container record");
                        prop_assert!(o.uid == want.uid && o.generation == want.generation, "{o:?}");
                        prop_assert!(
                            matches!(state, ContainerState::Running { .. } | ContainerState::Exited { .. }),
                            "{state:?}"
                        );
                    }
                    _ => prop_assert!(!state.is_running(), "{state:?}"),
                }
                return Ok(());
            }
            history.push(decision.clone());
            sim.now += decision.requeue_after.unwrap_or_default();
        }
        prop_assert!(false, "not settled after 16 passes: {history:?}, ending in {:?}", sim.observed);
    }

    /// The phase report is one of the documented phases, agrees with the run state, and a
    /// stopped or unassigned task is never reported as anything but Stopping or Stopped.
    #[test]
    fn phase_is_consistent(
        d in prop::option::of(desired()),
        o in prop::option::of(observed()),
        pulling in prop::option::of((any::<u64>(), any::<u64>())),
        failed in any::<bool>(),
        at in time(),
    ) {
        let error = failed.then_some((Reason::PullFailed, "pulling busybox:1.36: not found"));
        let report = derive(d.as_ref(), o.as_ref(), pulling, error, at);
        let phases = [
            TaskPhase::Pending, TaskPhase::Pulling, TaskPhase::Starting, TaskPhase::Running,
            TaskPhase::Stopping, TaskPhase::Stopped, TaskPhase::Succeeded, TaskPhase::Failed,
        ];
        prop_assert!(phases.contains(&report.phase), "{report:?}");
        prop_assert!(!report.message.is_empty(), "{report:?}");
        prop_assert!(!report.message.contains('\n'), "{report:?}");
        let running = o.as_ref().is_some_and(|o| o.state.is_running());
        if report.phase == TaskPhase::Running {
            prop_assert!(running, "{report:?}");
        }
        if d.as_ref().is_none_or(|d| d.config.stopped) {
            let want = if running { TaskPhase::Stopping } else { TaskPhase::Stopped };
            prop_assert_eq!(report.phase, want);
        }
    }
    /// What the report says the node will do is what `decide` does.
    #[test]
    fn phase_agrees_with_decide(
        d in prop::option::of(desired()),
        o in prop::option::of(observed()),
        at in time(),
    ) {
        let report = derive(d.as_ref(), o.as_ref(), None, None, at);
        let decision = decide(d.as_ref(), o.as_ref(), at);
        let has = |f: fn(&Action) -> bool| decision.actions.iter().any(f);
        match report.phase {
            TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Stopped => {
                prop_assert!(
                    !has(|a| matches!(a, Action::Start | Action::Stop { .. })),
                    "{report:?} but {decision:?}"
                );
                if report.phase != TaskPhase::Stopped {
                    prop_assert!(decision.is_settled(), "{report:?} but {decision:?}");
                }
            }
            TaskPhase::Running => prop_assert!(
                !has(|a| matches!(a, Action::Start | Action::Stop { .. } | Action::Delete)),
                "{report:?} but {decision:?}"
            ),
            TaskPhase::Stopping => prop_assert!(
                decision.actions.is_empty() || has(|a| matches!(a, Action::Stop { .. })),
                "{report:?} but {decision:?}"
            ),
            _ => {}
        }
        if report.reason == "BackOff" {
            prop_assert!(
                decision.actions.is_empty() && decision.requeue_after.is_some(),
                "{report:?} but {decision:?}"
            );
        }
        if report.reason == "Restarting" || report.reason == "Starting" {
            prop_assert!(has(|a| matches!(a, Action::Start)), "{report:?} but {decision:?}");
        }
    }
}
