//! Runtime events the node reports on `voiyd.node.<node>.events` (servers record them in
//! `VOIYD_EVENTS`): exits of a task's main process with their code and OOM kills, from
//! containerd's event stream, and pull failures, from the agent.

use crate::containerd::client::Containerd;
use containerd_client::services::v1::{GetContainerRequest, SubscribeRequest};
use futures::StreamExt;
use prost::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use voiyd_messages::v1::NodeEventReport;
use voiyd_nats::names;

/// Label on a task's container holding the task's uid (see `runtime/containerd.rs`).
const LABEL_UID: &str = "voiyd.uid";

/// One event to report.
#[derive(Debug, Clone, Default)]
pub struct RuntimeEvent {
    /// Task name.
    pub task: String,
    /// uid of the task (fencing).
    pub uid: String,
    /// `exited`, `oomkilled`, `pullfailed`.
    pub kind: &'static str,
    /// CamelCase reason.
    pub reason: String,
    /// For people.
    pub message: String,
    /// Exit code (exits).
    pub exit_code: i32,
}

fn now() -> voiyd_messages::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    voiyd_messages::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Publishes one event report (best effort: events are a record, not the state).
pub async fn report(client: &async_nats::Client, node: &str, ev: RuntimeEvent) {
    let r = NodeEventReport {
        node: node.to_string(),
        task: ev.task,
        uid: ev.uid,
        r#type: ev.kind.to_string(),
        reason: ev.reason,
        message: ev.message,
        exit_code: ev.exit_code,
        time: Some(now()),
    };
    if let Err(e) = client
        .publish(names::node::events(node), r.encode_to_vec().into())
        .await
    {
        tracing::debug!(error = %e, "runtime event not sent");
    }
}

/// What an exit code means, for the event message.
pub fn exit_message(code: i32) -> String {
    match code {
        0 => "exited with code 0".to_string(),
        c if c > 128 && c < 160 => format!("exited with code {c} (signal {})", c - 128),
        c => format!("exited with code {c}"),
    }
}

async fn uid_of(cd: &Containerd, task: &str) -> Option<String> {
    let c = cd
        .containers()
        .get(cd.request(GetContainerRequest {
            id: task.to_string(),
        }))
        .await
        .ok()?
        .into_inner()
        .container?;
    c.labels.get(LABEL_UID).cloned()
}

/// Follows containerd's exit and OOM events of this node's namespace and reports them.
pub async fn watch_containerd(client: async_nats::Client, node: String, cd: Containerd) {
    loop {
        let req = SubscribeRequest {
            filters: vec![
                "topic==\"/tasks/exit\"".to_string(),
                "topic==\"/tasks/oom\"".to_string(),
            ],
        };
        match cd.events().subscribe(cd.request(req)).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                while let Some(Ok(env)) = stream.next().await {
                    if env.namespace != cd.namespace() {
                        continue;
                    }
                    let Some(any) = env.event else { continue };
                    let ev = if env.topic == "/tasks/oom" {
                        let Ok(oom) =
                            containerd_client::events::TaskOom::decode(any.value.as_slice())
                        else {
                            continue;
                        };
                        RuntimeEvent {
                            task: oom.container_id.clone(),
                            kind: "oomkilled",
                            reason: "OOMKilled".into(),
                            message: "the kernel killed a process of the task: out of memory"
                                .into(),
                            ..Default::default()
                        }
                    } else {
                        let Ok(exit) =
                            containerd_client::events::TaskExit::decode(any.value.as_slice())
                        else {
                            continue;
                        };
                        // Exits of exec'd processes carry their own id; only the task's own process counts.
                        if exit.id != exit.container_id {
                            continue;
                        }
                        let code = exit.exit_status as i32;
                        RuntimeEvent {
                            task: exit.container_id.clone(),
                            kind: "exited",
                            reason: if code == 0 { "Completed" } else { "Error" }.into(),
                            message: exit_message(code),
                            exit_code: code,
                            ..Default::default()
                        }
                    };
                    let Some(uid) = uid_of(&cd, &ev.task).await else {
                        continue;
                    };
                    report(&client, &node, RuntimeEvent { uid, ..ev }).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "containerd events unavailable"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_messages() {
        assert_eq!(exit_message(3), "exited with code 3");
        assert_eq!(exit_message(137), "exited with code 137 (signal 9)");
    }
}
