//! One worker per task: observe the runtime, decide (decide::reconcile), act, report; runtime exits are forwarded to the workers.

use super::*;

pub(super) async fn forward_exits<R: Runtime>(s: Arc<Shared<R>>) {
    let mut rx = s.rt.exits();
    loop {
        match rx.recv().await {
            Ok(task) => {
                if let Some(w) = s.workers.lock().expect("workers lock").get(&task) {
                    w.wake.notify_one();
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake_all(&s),
            Err(_) => return,
        }
    }
}

/// What a worker remembers about its task between passes.
#[derive(Default)]
pub(super) struct Memory {
    pub(super) stop_requested_at: Option<SystemTime>,
    pub(super) last_exit: Option<Exit>,
    pub(super) last_error: Option<RuntimeError>,
    pub(super) failures: u32,
    pub(super) pulling: Option<(u64, u64)>,
    pub(super) last_report: Option<TaskStatus>,
    pub(super) ip: Option<String>,
    /// The current run failed a liveness or startup probe: cleared by the next start.
    pub(super) probe_failure: Option<(voiyd_messages::reason::Reason, String)>,
    /// The stop grace of the last spec this worker had.
    pub(super) last_grace: Option<Duration>,
    /// The server asked for SIGKILL at once when it took the task away.
    pub(super) kill_unassigned: bool,
    /// The current run's probes, and what they found.
    pub(super) probes: Option<super::probes::ProbeRun>,
    pub(super) health: Option<crate::decide::probe::Health>,
    /// The image's HEALTHCHECK as a probe, used when the task sets no probe.
    pub(super) image_probe: Option<voiyd_messages::v1::Probe>,
}

pub(super) fn observed(view: Option<&ContainerView>, mem: &Memory) -> Option<Observed> {
    let v = view?;
    let last_exit = match v.state {
        ContainerState::Exited { code, at } => Some(Exit { code, at }),
        _ => mem.last_exit,
    };
    Some(Observed {
        task: v.task.clone(),
        uid: v.uid.clone(),
        generation: v.generation,
        state: v.state,
        restart_count: v.restart_count,
        last_started: v.started_at,
        last_exit,
        stop_requested_at: mem.stop_requested_at,
        probe_failure: mem.probe_failure.clone(),
        last_grace: mem.last_grace.or(v.stop_grace),
        kill_unassigned: mem.kill_unassigned,
    })
}

pub(super) async fn task_worker<R: Runtime>(
    s: Arc<Shared<R>>,
    task: String,
    mut desired_rx: watch::Receiver<Option<Desired>>,
    wake: Arc<Notify>,
    report_again: Arc<std::sync::atomic::AtomicBool>,
    kill_unassigned: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut mem = Memory::default();
    let mut resync = s.resync.subscribe();
    let mut round = s.round.subscribe();
    let progress = Arc::new(Mutex::new(None::<(u64, u64)>));
    loop {
        let mut desired = desired_rx.borrow_and_update().clone();
        if *s.fenced.borrow() {
            desired = fenced_desired(desired);
        }
        let view = match s.rt.inspect(&task).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%task, error = %e, "cannot inspect container");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match desired.as_ref() {
            Some(d) => {
                mem.last_grace = Some(d.stop_grace());
                kill_unassigned.store(false, std::sync::atomic::Ordering::SeqCst);
                mem.kill_unassigned = false;
            }
            None => mem.kill_unassigned = kill_unassigned.load(std::sync::atomic::Ordering::SeqCst),
        }
        let mut obs = observed(view.as_ref(), &mem);
        mem.ip = view.as_ref().and_then(|v| v.ip.clone());
        // Probes follow the current run; a failed liveness or startup probe stops it.
        mem.image_probe = view.as_ref().and_then(|v| v.image_probe.clone());
        let probed = desired.as_ref().map(|d| {
            match crate::decide::probe::effective(&d.config, mem.image_probe.as_ref()) {
                Some(config) => Desired {
                    config,
                    ..d.clone()
                },
                None => d.clone(),
            }
        });
        let key = super::probes::run_key(probed.as_ref(), obs.as_ref());
        super::probes::follow(&s, &task, probed.as_ref(), key, &mut mem.probes, &wake);
        if let Some(run) = &mem.probes {
            let health = run.health();
            if let (Some(failed), None) = (&health.failed, &mem.probe_failure) {
                probe_failed(&s, &task, desired.as_ref(), failed).await;
                mem.probe_failure = Some(failed.clone());
                obs = observed(view.as_ref(), &mem);
            }
            mem.health = Some(health);
        } else if obs.as_ref().is_none_or(|o| !o.state.is_running()) {
            mem.health = None;
        }
        if let (Some(d), Some(v)) = (desired.as_ref(), view.as_ref()) {
            // Template volumes follow their content without re-creating the container.
            if v.uid == d.uid && !d.volumes.is_empty() {
                if let Err(e) = s.rt.sync_volumes(d).await {
                    tracing::warn!(%task, error = %e, "cannot update template volumes");
                }
            }
        }
        let now = SystemTime::now();
        let decision = decide(desired.as_ref(), obs.as_ref(), now);
        let again = report_again.swap(false, std::sync::atomic::Ordering::SeqCst);
        report(&s, &task, desired.as_ref(), obs.as_ref(), &mut mem, again).await;

        if desired.is_none() && obs.is_none() {
            // Gone from this node: forget it, and its logs.
            let mut workers = s.workers.lock().expect("workers lock");
            if desired_rx.borrow().is_none() {
                workers.remove(&task);
                crate::logs::remove(&crate::logs::TaskPaths::new(&s.cfg.data_dir, &task), true);
                return;
            }
            continue;
        }

        let mut wait = decision.requeue_after;
        if !decision.actions.is_empty() {
            match execute(
                &s,
                &task,
                desired.as_ref(),
                obs.as_ref(),
                &decision.actions,
                &mut mem,
                &progress,
            )
            .await
            {
                Ok(()) => {
                    mem.last_error = None;
                    mem.failures = 0;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%task, reason = %e.reason, error = %e.message, "task step failed");
                    if let (Some(d), voiyd_messages::reason::Reason::PullFailed) =
                        (desired.as_ref(), e.reason)
                    {
                        crate::containerd::events::report(
                            &s.client,
                            &s.cfg.name,
                            crate::containerd::events::RuntimeEvent {
                                task: task.clone(),
                                uid: d.uid.clone(),
                                kind: voiyd_messages::event::EventType::PullFailed,
                                reason: e.reason.into(),
                                message: e.message.clone(),
                                exit_code: 0,
                            },
                        )
                        .await;
                    }
                    mem.failures = mem.failures.saturating_add(1);
                    mem.last_error = Some(e);
                    mem.pulling = None;
                    report(&s, &task, desired.as_ref(), obs.as_ref(), &mut mem, false).await;
                    wait =
                        Some(backoff(mem.failures.saturating_sub(1)).min(Duration::from_secs(60)));
                }
            }
        }
        let sleep = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            r = desired_rx.changed() => {
                if r.is_err() { return; }
                // A new spec gets fresh attempts.
                mem.last_error = None;
                mem.failures = 0;
            }
            _ = wake.notified() => {}
            _ = sleep => {}
            // A reconcile pass; its report goes only when something changed.
            _ = resync.changed() => {}
            _ = round.changed() => {
                let d = desired_rx.borrow().clone();
                report(&s, &task, d.as_ref(), obs.as_ref(), &mut mem, true).await;
            }
        }
    }
}

pub(super) async fn execute<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    desired: Option<&Desired>,
    obs: Option<&Observed>,
    actions: &[Action],
    mem: &mut Memory,
    progress: &Arc<Mutex<Option<(u64, u64)>>>,
) -> Result<(), RuntimeError> {
    let restarts = obs.map(|o| o.restart_count).unwrap_or(0);
    for action in actions {
        tracing::debug!(%task, ?action, observed = ?obs.map(|o| &o.state), "executing");
        let span = traced_span(desired, action.name());
        let step =
            async { execute_one(s, task, desired, obs, action, mem, progress, restarts).await };
        tracing::Instrument::instrument(step, span).await?;
    }
    Ok(())
}

/// A span for a step of work that was placed in a traced request (`node pull`, `node
/// start`, `node report`...), in that request's trace; none otherwise.
pub(super) fn traced_span(desired: Option<&Desired>, step: &str) -> tracing::Span {
    match desired.filter(|d| !d.trace_parent.is_empty()) {
        Some(d) => {
            let span =
                tracing::info_span!("node", otel.name = %format!("node {step}"), task = %d.task);
            voiyd_telemetry::continue_from(&span, &d.trace_parent);
            span
        }
        None => tracing::Span::none(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute_one<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    desired: Option<&Desired>,
    obs: Option<&Observed>,
    action: &Action,
    mem: &mut Memory,
    progress: &Arc<Mutex<Option<(u64, u64)>>>,
    restarts: u32,
) -> Result<(), RuntimeError> {
    {
        match *action {
            Action::Pull => {
                let d = desired.expect("pull only with a desired task");
                mem.pulling = Some((0, 0));
                report(s, task, desired, obs, mem, false).await;
                *progress.lock().expect("progress lock") = Some((0, 0));
                let p = progress.clone();
                let reporter = {
                    let s = s.clone();
                    let task = task.to_string();
                    let p = progress.clone();
                    let d = d.clone();
                    tokio::spawn(async move {
                        let mut last = None;
                        loop {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            let cur = *p.lock().expect("progress lock");
                            if cur != last {
                                last = cur;
                                publish_pull(&s, &task, &d, cur.unwrap_or((0, 0))).await;
                            }
                        }
                    })
                };
                let r =
                    s.rt.pull(
                        d,
                        Arc::new(move |done, total| {
                            *p.lock().expect("progress lock") = Some((done, total))
                        }),
                    )
                    .await;
                reporter.abort();
                mem.pulling = None;
                r?;
            }
            Action::Create => {
                s.rt.create(desired.expect("create only with a desired task"))
                    .await?
            }
            Action::Start => {
                s.rt.start(task).await?;
                mem.stop_requested_at = None;
                mem.probe_failure = None;
                mem.probes = None;
                mem.health = None;
            }
            Action::Stop { kill, .. } => {
                s.rt.signal(task, kill).await?;
                if mem.stop_requested_at.is_none() {
                    mem.stop_requested_at = Some(SystemTime::now());
                }
            }
            Action::Delete => {
                s.rt.delete(task).await?;
                mem.stop_requested_at = None;
                mem.last_exit = None;
            }
            Action::DeleteTask => {
                if let Some(Observed {
                    state: ContainerState::Exited { code, at },
                    ..
                }) = obs
                {
                    mem.last_exit = Some(Exit {
                        code: *code,
                        at: *at,
                    });
                }
                s.rt.delete_task(task).await?;
            }
            Action::CountRestart => {
                s.rt.set_restart_count(task, restarts.saturating_add(1))
                    .await?
            }
            Action::ResetRestarts => s.rt.set_restart_count(task, 0).await?,
        }
    }
    Ok(())
}

/// Tells the servers a run failed its liveness or startup probe (an event).
async fn probe_failed<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    desired: Option<&Desired>,
    (reason, message): &(voiyd_messages::reason::Reason, String),
) {
    tracing::warn!(%task, %reason, %message, "restarting the task");
    let Some(d) = desired else { return };
    crate::containerd::events::report(
        &s.client,
        &s.cfg.name,
        crate::containerd::events::RuntimeEvent {
            task: task.to_string(),
            uid: d.uid.clone(),
            kind: voiyd_messages::event::EventType::Unhealthy,
            reason: (*reason).into(),
            message: format!("{message}; restarting"),
            exit_code: 0,
        },
    )
    .await;
}

pub(super) async fn publish_pull<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    d: &Desired,
    (done, total): (u64, u64),
) {
    let status = TaskStatus {
        phase: voiyd_messages::phase::TaskPhase::Pulling.into(),
        reason: voiyd_messages::reason::Reason::Pulling.into(),
        message: format!("pulling {}", d.config.image),
        node: s.cfg.name.clone(),
        pull_bytes_done: done,
        pull_bytes_total: total,
        observed_generation: d.generation,
        ..Default::default()
    };
    send(s, task, &d.uid, status);
}
