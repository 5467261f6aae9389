//! Records the runtime events nodes report (`voiyd.node.<node>.events`: exits with their
//! code, OOM kills, pull failures) in `VOIYD_EVENTS`, fenced like status reports: only
//! the node that holds the task may speak about it.

use crate::context::Ctx;
use crate::error::ServerError;
use crate::store::managed::Managed;
use crate::store::status;
use futures::StreamExt;
use prost::Message;
use voiyd_messages::event::EventType;
use voiyd_messages::v1::{Event, NodeEventReport, TaskStatus};
use voiyd_messages::Resource;
use voiyd_nats::names;

/// Handles node event reports until the connection closes (queue group: one server each).
pub async fn run(client: async_nats::Client, ctx: Ctx) -> Result<(), async_nats::Error> {
    let mut reports = client
        .queue_subscribe(names::node::ALL_EVENTS, names::SERVER_QUEUE.to_string())
        .await?;
    while let Some(msg) = reports.next().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = record(&ctx, &msg).await {
                tracing::debug!(subject = %msg.subject, error = %e.message(), "node event dropped");
            }
        });
    }
    Ok(())
}

/// Checks one report and records it as an event.
pub async fn record(ctx: &Ctx, msg: &async_nats::Message) -> Result<(), ServerError> {
    let node = names::node::node_of(&msg.subject).unwrap_or_default();
    let r = NodeEventReport::decode(msg.payload.clone())?;
    if r.node != node {
        return Err(ServerError::invalid(format!(
            "node {node} reported an event as {}",
            r.node
        )));
    }
    if !EventType::parse(&r.r#type).is_some_and(|t| EventType::FROM_NODES.contains(&t)) {
        return Err(ServerError::invalid(format!(
            "unknown event type `{}`",
            r.r#type
        )));
    }
    let Some(task) = voiyd_messages::v1::Task::store(&ctx.cluster)
        .get(&r.task)
        .await?
    else {
        return Ok(());
    };
    if task.meta().map(|m| m.uid.as_str()) != Some(r.uid.as_str()) {
        return Ok(());
    }
    let held = status::read_versioned::<TaskStatus>(&ctx.status.0, "task", &r.task)
        .await?
        .is_some_and(|v| v.status.node == node);
    if !held {
        return Ok(());
    }
    ctx.events
        .publish_event(Event {
            time: r.time.or_else(|| Some(voiyd_messages::time::now())),
            kind: "task".into(),
            name: r.task.clone(),
            r#type: r.r#type.clone(),
            reason: r.reason.clone(),
            message: r.message.clone(),
            source: format!("node/{node}"),
            exit_code: r.exit_code,
            ..Default::default()
        })
        .await;
    Ok(())
}
