//! Task status reports: latest-wins per task, sent in batches.

use super::*;

/// Reports the task's status when it changed (or always, with `force`).
pub(super) async fn report<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    desired: Option<&Desired>,
    obs: Option<&Observed>,
    mem: &mut Memory,
    force: bool,
) {
    let Some(d) = desired else { return };
    let err = mem
        .last_error
        .as_ref()
        .map(|e| (e.reason, e.message.as_str()));
    let p = phase::derive(desired, obs, mem.pulling, err, SystemTime::now());
    let mut st = TaskStatus {
        phase: p.phase.into(),
        reason: p.reason.into(),
        message: p.message,
        node: s.cfg.name.clone(),
        observed_generation: d.generation,
        ..Default::default()
    };
    if let Some(o) = obs.filter(|o| o.uid == d.uid) {
        st.id = o.task.clone();
        st.ip = mem.ip.clone().unwrap_or_default();
        st.restart_count = o.restart_count;
        st.started_at = o.last_started.map(voiyd_messages::time::from_system);
        match o.state {
            ContainerState::Running { pid, .. } => st.pid = pid,
            ContainerState::Exited { code, at } => {
                st.exit_code = code;
                st.finished_at = Some(voiyd_messages::time::from_system(at));
                st.exited = true;
            }
            _ => {}
        }
        if !o.state.is_running() {
            if let Some(e) = o.last_exit.filter(|_| !st.exited) {
                st.exit_code = e.code;
                st.finished_at = Some(voiyd_messages::time::from_system(e.at));
            }
        }
    }
    let running = p.phase == voiyd_messages::phase::TaskPhase::Running;
    let with_image = crate::decide::probe::effective(&d.config, mem.image_probe.as_ref());
    let config = with_image.as_ref().unwrap_or(&d.config);
    if let Some((ready, reason, msg)) =
        crate::decide::probe::readiness(config, running, mem.health.as_ref())
    {
        // The node's say on readiness; servers keep the transition times.
        st.conditions = vec![voiyd_messages::v1::Condition {
            r#type: voiyd_messages::condition::ConditionType::Ready.into(),
            status: voiyd_messages::condition::status(ready).into(),
            reason: reason.into(),
            msg,
            last_transition_time: None,
        }];
    }
    if !force && mem.last_report.as_ref() == Some(&st) {
        return;
    }
    // A new phase of traced work is a step of its trace.
    let new_phase = mem.last_report.as_ref().is_none_or(|r| r.phase != st.phase);
    let span = if new_phase {
        super::tasks::traced_span(Some(d), &format!("report {}", st.phase))
    } else {
        tracing::Span::none()
    };
    mem.last_report = Some(st.clone());
    span.in_scope(|| send(s, task, &d.uid, st));
}

/// Queues a status report. Reports leave through [`flush_reports`], latest per task:
/// when reports come faster than they can be sent, the ones overtaken are dropped here
/// instead of being sent and folded in for nothing.
pub(super) fn send<R: Runtime>(s: &Shared<R>, task: &str, uid: &str, mut status: TaskStatus) {
    // Lets the server drop a report that overtook a newer one.
    status.reported_at = Some(voiyd_messages::time::from_system(SystemTime::now()));
    let report = TaskStatusReport {
        task: task.to_string(),
        node: s.cfg.name.clone(),
        uid: uid.to_string(),
        status: Some(status),
    };
    s.outbox
        .lock()
        .expect("outbox lock")
        .insert(task.to_string(), report);
    s.outbox_ready.notify_one();
}

/// Sends queued status reports as they come.
pub(super) async fn flush_reports<R: Runtime>(s: Arc<Shared<R>>) {
    loop {
        s.outbox_ready.notified().await;
        send_queued(&s).await;
    }
}

/// Sends (and empties) the queue of status reports.
pub(super) async fn send_queued<R: Runtime>(s: &Shared<R>) {
    let subject = names::node::status(&s.cfg.name);
    let batch: Vec<TaskStatusReport> = s
        .outbox
        .lock()
        .expect("outbox lock")
        .drain()
        .map(|(_, r)| r)
        .collect();
    for report in batch {
        if let Err(e) = s
            .client
            .publish(subject.clone(), report.encode_to_vec().into())
            .await
        {
            tracing::debug!(task = %report.task, error = %e, "status not sent");
        }
    }
}
