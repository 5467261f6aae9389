//! Folds what nodes report into the cluster state: heartbeats register a node and keep
//! it Ready; task status reports are accepted only from the node that holds the task.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::store::managed::Managed;
use crate::store::status;
use futures::StreamExt;
use prost::Message;
use voiyd_messages::event::EventType;
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::{
    Meta, Node, NodeConfig, NodeStatus, NodeStatusReport, TaskStatus, TaskStatusReport,
};
use voiyd_messages::Resource;
use voiyd_nats::names;
use voiyd_nats::store::StoreError;

/// Whether a heartbeat comes from the agent run that was running when the node was
/// deleted (a restarted agent has a new session and may join again).
pub fn from_deleted_session(prev: Option<&NodeStatus>, session: &str) -> bool {
    prev.is_some_and(|p| {
        p.phase == voiyd_messages::phase::NodePhase::Deleted
            && !session.is_empty()
            && p.session == session
    })
}

/// Workers folding in task status reports, and heartbeats, per server.
const STATUS_WORKERS: usize = 128;
const HEARTBEAT_WORKERS: usize = 32;

/// Handles heartbeats and status reports until the connection closes. Every server
/// subscribes in one queue group, so each report is folded in once.
///
/// Reports are read off NATS at once into latest-wins mailboxes (keyed by node and
/// task, or by node) and folded in by a fixed set of workers: a burst neither piles up
/// tasks and memory nor makes NATS drop messages for a slow consumer, and reports
/// overtaken by newer ones are skipped.
pub async fn run(client: async_nats::Client, ctx: Ctx) -> Result<(), async_nats::Error> {
    use crate::ingest::mailbox::Mailbox;
    use std::sync::Arc;
    let mut heartbeats = client
        .queue_subscribe(names::node::ALL_HEARTBEATS, names::SERVER_QUEUE.to_string())
        .await?;
    let mut statuses = client
        .queue_subscribe(names::node::ALL_STATUS, names::SERVER_QUEUE.to_string())
        .await?;
    let beats: Arc<Mailbox<(String, String), async_nats::Message>> = Arc::default();
    let reports: Arc<Mailbox<(String, String), async_nats::Message>> = Arc::default();
    for _ in 0..HEARTBEAT_WORKERS {
        let (ctx, beats) = (ctx.clone(), beats.clone());
        tokio::spawn(async move {
            loop {
                let (_, msg) = beats.take().await;
                if let Err(e) = heartbeat(&ctx, &msg).await {
                    if e.code() == voiyd_nats::api::ErrorCode::Unavailable {
                        crate::store::patience::note_outage();
                    }
                    tracing::warn!(subject = %msg.subject, error = %e.message(), "heartbeat dropped");
                }
            }
        });
    }
    for _ in 0..STATUS_WORKERS {
        let (ctx, reports) = (ctx.clone(), reports.clone());
        tokio::spawn(async move {
            loop {
                let (_, msg) = reports.take().await;
                if let Err(e) = task_status(&ctx, &msg).await {
                    tracing::warn!(subject = %msg.subject, error = %e.message(), "status report dropped");
                }
            }
        });
    }
    loop {
        tokio::select! {
            Some(msg) = heartbeats.next() => {
                // Keyed by subject and the node the report names, so a forged report
                // never displaces a genuine one.
                let named = NodeStatusReport::decode(msg.payload.clone())
                    .map(|r| r.node)
                    .unwrap_or_default();
                beats.put((msg.subject.to_string(), named), msg);
            }
            Some(msg) = statuses.next() => {
                // Keyed by node and task: a stale node's report must not replace the
                // holder's.
                let task = TaskStatusReport::decode(msg.payload.clone())
                    .map(|r| r.task)
                    .unwrap_or_default();
                reports.put((msg.subject.to_string(), task), msg);
            }
            else => return Ok(()),
        }
    }
}

/// Registers the node on first sight, then records its status.
async fn heartbeat(ctx: &Ctx, msg: &async_nats::Message) -> Result<(), ServerError> {
    let node_name = names::node::node_of(&msg.subject).unwrap_or_default();
    let report = NodeStatusReport::decode(msg.payload.clone())?;
    if report.node != node_name {
        return Err(ServerError::invalid(format!(
            "node {node_name} sent a heartbeat for {}",
            report.node
        )));
    }
    let store = Node::store(&ctx.cluster);
    let session = report
        .status
        .as_ref()
        .map(|s| s.session.clone())
        .unwrap_or_default();
    // A node the view knows as registered, with its status and revision: the write
    // goes with CAS on that revision, without reading first (a stale one costs a read
    // and one retry). Anything else reads the status before deciding to register.
    let seen = ctx.view.node_status(&node_name);
    let known = seen.is_some()
        || ctx.view.is_registered(&node_name)
        || store.get(&node_name).await?.is_some();
    let mut fresh = seen.is_none();
    let mut prev = match seen {
        Some((status, revision)) => Some(status::Versioned { status, revision }),
        None => status::read_versioned::<NodeStatus>(&ctx.status.0, "node", &node_name).await?,
    };
    // Deleted (possibly while this heartbeat was on its way): do not bring it back. The
    // status is written with CAS on this read, so a deletion after it wins too.
    if from_deleted_session(prev.as_ref().map(|p| &p.status), &session) {
        tracing::debug!(node = %node_name, "heartbeat of a deleted node's agent ignored");
        return Ok(());
    }
    let mut joined = false;
    if !known {
        let now = voiyd_messages::time::now();
        let node = Node {
            version: "node/v1".into(),
            meta: Some(Meta {
                name: node_name.clone(),
                labels: report.labels.clone(),
                created: Some(now),
                updated: Some(now),
                generation: 1,
                uid: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            }),
            config: Some(NodeConfig::default()),
            status: None,
        };
        node.validate().map_err(ServerError::invalid)?;
        match store.create(&node).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => joined = true,
            Err(e) => return Err(e.into()),
        }
    }
    let mut st = report.status.unwrap_or_default();
    if st.subnet.is_empty() && st.runtime == "containerd" {
        // The node learns it from `voiyd_subnets` and reports it from then on.
        st.subnet = ctx.subnets.ensure(&node_name).await?;
    }
    st.phase = voiyd_messages::phase::NodePhase::Ready.into();
    st.last_heartbeat = Some(voiyd_messages::time::now());
    let previous = loop {
        let rev = prev.as_ref().map(|p| p.revision).unwrap_or(0);
        if let Some(written) = status::write(&ctx.status.0, "node", &node_name, &st, rev).await? {
            ctx.view.saw_node_status(&node_name, &st, written);
            break prev.map(|p| p.status);
        }
        // A lost race on a fresh read means a fresher heartbeat or a deletion was
        // written: nothing to do (renewing the lease of a node just deleted would bring
        // back a stale record). On the view's revision: read and try once more.
        if fresh {
            return Ok(());
        }
        fresh = true;
        prev = status::read_versioned::<NodeStatus>(&ctx.status.0, "node", &node_name).await?;
        if from_deleted_session(prev.as_ref().map(|p| &p.status), &session) {
            return Ok(());
        }
    };
    let was_ready = previous
        .as_ref()
        .is_some_and(|p| p.phase == voiyd_messages::phase::NodePhase::Ready);
    let prev_volumes = previous.map(|p| p.volumes).unwrap_or_default();
    if prev_volumes != st.volumes || !was_ready {
        crate::service::volumes::fold_node_report(ctx, &node_name, &prev_volumes, &st.volumes)
            .await?;
    }
    crate::controllers::failover::renew_node_lease(ctx, &node_name).await;
    if joined || !was_ready {
        ctx.events
            .publish(
                "node",
                &node_name,
                EventType::Ready.as_str(),
                Reason::NodeReady.as_str(),
                "node is ready".into(),
                None,
            )
            .await;
        if let Err(e) = crate::controllers::placer::place_pending(ctx).await {
            tracing::warn!(error = %e.message(), "placing pending tasks failed");
        }
    }
    Ok(())
}

/// Folds one task status report in, if the reporting node holds the task.
async fn task_status(ctx: &Ctx, msg: &async_nats::Message) -> Result<(), ServerError> {
    let node_name = names::node::node_of(&msg.subject).unwrap_or_default();
    let report = TaskStatusReport::decode(msg.payload.clone())?;
    for attempt in 0..5 {
        // The scheduler's view knows the uid of nearly every task: read the spec only
        // when it does not (yet).
        let uid = match ctx.view.task_uid(&report.task) {
            Some(uid) => uid,
            None => {
                let Some(task) = voiyd_messages::v1::Task::store(&ctx.cluster)
                    .get(&report.task)
                    .await?
                else {
                    return Ok(()); // deleted meanwhile
                };
                task.meta().map(|m| m.uid.clone()).unwrap_or_default()
            }
        };
        if uid != report.uid {
            return Ok(()); // a report about an older task of the same name
        }
        // First from the view (no read); after a lost CAS, from the bucket.
        let from_view = if attempt == 0 {
            ctx.view
                .task_status(&report.task)
                .map(|(status, revision)| status::Versioned { status, revision })
        } else {
            None
        };
        let fresh = from_view.is_none();
        let current = match from_view {
            Some(v) => v,
            None => match status::read_versioned::<TaskStatus>(&ctx.status.0, "task", &report.task)
                .await?
            {
                Some(v) => v,
                None => return Ok(()),
            },
        };
        // The view may lag behind the bucket: it is good enough to write with CAS (a
        // stale revision only fails), never to drop a report. Any decision to skip
        // waits for a fresh read.
        let skip = |why: &str| {
            tracing::debug!(task = %report.task, node = %node_name, why, "report not folded in");
        };
        if current.status.node != node_name {
            if !fresh {
                continue;
            }
            skip("the node does not hold the task");
            return Ok(());
        }
        let mut st = report.status.clone().unwrap_or_default();
        if st.phase == voiyd_messages::phase::TaskPhase::Rejected {
            // The node refused it (capacity or host ports taken, e.g. by a task another
            // server placed there at the same instant): place it elsewhere.
            tracing::info!(task = %report.task, node = %node_name, reason = %st.reason, message = %st.message, "node refused task");
            crate::service::assign::move_task(
                ctx,
                &report.task,
                &node_name,
                Reason::NodeRejected,
                Some(&st.message),
            )
            .await?;
            return Ok(());
        }
        let stamp = |t: &Option<voiyd_messages::Timestamp>| t.map(|t| (t.seconds, t.nanos));
        if stamp(&st.reported_at) < stamp(&current.status.reported_at) {
            // Overtaken by a newer report already folded in (the view only lags, so
            // what it shows is at least that new).
            skip("overtaken");
            return Ok(());
        }
        // The server owns placement and rescheduling history.
        st.node = current.status.node.clone();
        st.reschedule_count = current.status.reschedule_count;
        st.last_reschedule_reason = current.status.last_reschedule_reason.clone();
        let node_ready = st
            .conditions
            .iter()
            .find(|c| c.r#type == voiyd_messages::condition::ConditionType::Ready)
            .cloned();
        st.conditions = crate::schedule::conditions::for_phase(
            &current.status.conditions,
            &st.phase,
            &st.reason,
            true,
            node_ready.as_ref(),
            voiyd_messages::time::now(),
        );
        let unchanged = TaskStatus {
            reported_at: current.status.reported_at,
            ..st.clone()
        };
        if unchanged == current.status {
            if !fresh {
                continue;
            }
            return Ok(());
        }
        let phase_changed = st.phase != current.status.phase;
        if status::write_patiently(&ctx.status.0, "task", &report.task, &st, current.revision)
            .await?
            .is_some()
        {
            if phase_changed {
                let what = if st.message.is_empty() {
                    st.phase.clone()
                } else {
                    format!("{}: {}", st.phase, st.message)
                };
                ctx.events
                    .publish(
                        "task",
                        &report.task,
                        &st.phase.to_lowercase(),
                        &st.reason,
                        what,
                        None,
                    )
                    .await;
            }
            return Ok(());
        }
    }
    Err(ServerError::conflict(format!(
        "status of task {} kept changing",
        report.task
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_deleted_agent_run_is_refused() {
        let deleted = NodeStatus {
            phase: voiyd_messages::phase::NodePhase::Deleted.into(),
            session: "s1".into(),
            ..Default::default()
        };
        assert!(from_deleted_session(Some(&deleted), "s1"));
        assert!(!from_deleted_session(Some(&deleted), "s2"));
        assert!(!from_deleted_session(Some(&deleted), ""));
        assert!(!from_deleted_session(None, "s1"));
        let ready = NodeStatus {
            phase: "Ready".into(),
            session: "s1".into(),
            ..Default::default()
        };
        assert!(!from_deleted_session(Some(&ready), "s1"));
    }
}
