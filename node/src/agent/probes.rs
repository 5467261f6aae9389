//! Probe runs: while a task's run is up, one loop per probe checks it through the
//! runtime, [`Probes`] (decide::probe) counts the outcomes, and the task's worker is woken
//! whenever the run's health changes. A run ends its probes by dropping its [`ProbeRun`].

use super::*;
use crate::decide::probe::{Health, Outcome, ProbeKind, Probes};

/// Which run the probes belong to: a new start is a new run with fresh counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunKey {
    uid: String,
    generation: u64,
    started: Option<SystemTime>,
}

/// The probes of one run, checking in the background until dropped.
pub(super) struct ProbeRun {
    key: RunKey,
    health: watch::Receiver<Health>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl ProbeRun {
    /// The run's health now.
    pub(super) fn health(&self) -> Health {
        self.health.borrow().clone()
    }
}

/// The run the probes should follow now: the desired spec's container, running and not
/// being stopped by the agent; `None` when the spec has no probes.
pub(super) fn run_key(desired: Option<&Desired>, obs: Option<&Observed>) -> Option<RunKey> {
    let (d, o) = (desired?, obs?);
    let has_probes = d.config.liveness_probe.is_some()
        || d.config.readiness_probe.is_some()
        || d.config.startup_probe.is_some();
    if !has_probes || d.stopped() || !o.is_for(d) || !o.state.is_running() {
        return None;
    }
    if o.stop_requested_at.is_some() || o.probe_failure.is_some() {
        return None;
    }
    Some(RunKey {
        uid: d.uid.clone(),
        generation: d.generation,
        started: o.last_started,
    })
}

/// Keeps `current` following `key`: starts probes for a new run, drops those of an old one.
pub(super) fn follow<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    desired: Option<&Desired>,
    key: Option<RunKey>,
    current: &mut Option<ProbeRun>,
    wake: &Arc<Notify>,
) {
    if current.as_ref().map(|r| &r.key) == key.as_ref() {
        return;
    }
    *current = None;
    let (Some(key), Some(d)) = (key, desired) else {
        return;
    };
    let Some(probes) = Probes::of(&d.config) else {
        return;
    };
    let (tx, rx) = watch::channel(probes.health().clone());
    let handle = tokio::spawn(run(
        s.rt.clone(),
        task.to_string(),
        probes,
        tx,
        wake.clone(),
    ));
    *current = Some(ProbeRun {
        key,
        health: rx,
        handle,
    });
}

async fn run<R: Runtime>(
    rt: Arc<R>,
    task: String,
    probes: Probes,
    tx: watch::Sender<Health>,
    wake: Arc<Notify>,
) {
    let tx = Arc::new(tx);
    let state = Arc::new(Mutex::new(probes));
    // Dropping the set (when this run is aborted) aborts every loop.
    let mut loops = tokio::task::JoinSet::new();
    for kind in ProbeKind::ALL {
        if state.lock().expect("probes lock").spec(kind).is_none() {
            continue;
        }
        loops.spawn(probe_loop(
            rt.clone(),
            task.clone(),
            kind,
            state.clone(),
            tx.clone(),
            wake.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
}

async fn probe_loop<R: Runtime>(
    rt: Arc<R>,
    task: String,
    kind: ProbeKind,
    state: Arc<Mutex<Probes>>,
    tx: Arc<watch::Sender<Health>>,
    wake: Arc<Notify>,
) {
    let Some(spec) = state.lock().expect("probes lock").spec(kind).cloned() else {
        return;
    };
    tokio::time::sleep(spec.initial_delay).await;
    if kind != ProbeKind::Startup {
        // Liveness and readiness wait for the startup probe.
        let mut rx = tx.subscribe();
        if rx
            .wait_for(|h| h.started || h.failed.is_some())
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        if !state.lock().expect("probes lock").should_run(kind) {
            return;
        }
        let outcome = rt.probe(&task, &spec.check, spec.timeout).await;
        if let Outcome::Fail(why) = &outcome {
            tracing::debug!(%task, probe = kind.word(), %why, "probe failed");
        }
        let health = {
            let mut p = state.lock().expect("probes lock");
            p.record(kind, outcome).then(|| p.health().clone())
        };
        if let Some(h) = health {
            tracing::info!(%task, probe = kind.word(), ready = ?h.ready, failed = ?h.failed, "task health changed");
            tx.send_replace(h);
            wake.notify_one();
        }
        tokio::time::sleep(spec.period).await;
    }
}
