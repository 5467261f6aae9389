//! Runtime events the node reports on `voiyd.node.<node>.events` (servers record them in
//! `VOIYD_EVENTS`): exits of a task's main process with their code and OOM kills, from
//! containerd's event stream, and pull failures, from the agent.

use crate::containerd::client::Containerd;
use containerd_client::services::v1::{GetContainerRequest, SubscribeRequest};
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use tokio::sync::broadcast;
use voiyd_messages::event::EventType;
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::NodeEventReport;
use voiyd_nats::names;

/// Label on a task's container holding the task's uid (see `runtime/containerd.rs`).
const LABEL_UID: &str = "voiyd.uid";

/// One event to report.
#[derive(Debug, Clone)]
pub struct RuntimeEvent {
    /// Task name.
    pub task: String,
    /// uid of the task (fencing).
    pub uid: String,
    /// `exited`, `oomkilled`, `pullfailed`.
    pub kind: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// For people.
    pub message: String,
    /// Exit code (exits).
    pub exit_code: i32,
}

/// Publishes one event report (best effort: events are a record, not the state).
pub async fn report(client: &async_nats::Client, node: &str, ev: RuntimeEvent) {
    let r = NodeEventReport {
        node: node.to_string(),
        task: ev.task,
        uid: ev.uid,
        r#type: ev.kind.into(),
        reason: ev.reason,
        message: ev.message,
        exit_code: ev.exit_code,
        time: Some(voiyd_messages::time::now()),
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

/// A task event from containerd's stream, as the node uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// A process of a task exited; `process` equals `container` for the task's own process
    /// (exec'd processes carry their own id).
    Exit {
        /// The container (task) id.
        container: String,
        /// The exited process's id.
        process: String,
        /// Its exit status.
        code: i32,
    },
    /// The kernel killed a process of the task: out of memory.
    Oom {
        /// The container (task) id.
        container: String,
    },
}

/// The node's one subscription to containerd's event stream (exits and OOM kills in its
/// namespace), handed to every reader: the runtime wakes task workers on exits, the
/// event reporter records them. Re-subscribes after containerd restarts; what happened
/// meanwhile is covered by the agent's periodic resync.
#[derive(Clone, Debug)]
pub struct TaskEvents(broadcast::Sender<TaskEvent>);

impl TaskEvents {
    /// Subscribes to containerd through `cd` and keeps doing so.
    pub fn follow(cd: Containerd) -> TaskEvents {
        let (tx, _) = broadcast::channel(1024);
        tokio::spawn(follow(cd, tx.clone()));
        TaskEvents(tx)
    }

    /// A new reader of the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.0.subscribe()
    }
}

async fn follow(cd: Containerd, tx: broadcast::Sender<TaskEvent>) {
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
                    let event = if env.topic == "/tasks/oom" {
                        containerd_client::events::TaskOom::decode(any.value.as_slice())
                            .ok()
                            .map(|oom| TaskEvent::Oom {
                                container: oom.container_id,
                            })
                    } else {
                        containerd_client::events::TaskExit::decode(any.value.as_slice())
                            .ok()
                            .map(|exit| TaskEvent::Exit {
                                container: exit.container_id,
                                process: exit.id,
                                code: exit.exit_status as i32,
                            })
                    };
                    if let Some(e) = event {
                        // No reader yet is no error: events are a wake-up and a record.
                        let _ = tx.send(e);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "containerd events unavailable"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What a task event says to the servers, if anything (exits of exec'd processes
/// say nothing).
pub fn to_report(event: &TaskEvent) -> Option<RuntimeEvent> {
    match event {
        TaskEvent::Oom { container } => Some(RuntimeEvent {
            task: container.clone(),
            kind: EventType::OomKilled,
            reason: Reason::OOMKilled.into(),
            message: "the kernel killed a process of the task: out of memory".into(),
            uid: String::new(),
            exit_code: 0,
        }),
        TaskEvent::Exit {
            container,
            process,
            code,
        } if process == container => Some(RuntimeEvent {
            task: container.clone(),
            kind: EventType::Exited,
            reason: if *code == 0 {
                Reason::Completed
            } else {
                Reason::Error
            }
            .into(),
            message: exit_message(*code),
            exit_code: *code,
            uid: String::new(),
        }),
        TaskEvent::Exit { .. } => None,
    }
}

/// Reports the exits and OOM kills of this node's tasks to the servers.
pub async fn report_task_events(
    client: async_nats::Client,
    node: String,
    cd: Containerd,
    events: TaskEvents,
) {
    let mut rx = events.subscribe();
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "runtime events came faster than they were reported"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(ev) = to_report(&event) else {
            continue;
        };
        let Some(uid) = uid_of(&cd, &ev.task).await else {
            continue;
        };
        report(&client, &node, RuntimeEvent { uid, ..ev }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_task_s_own_exit_and_ooms_are_reported() {
        let exit = |process: &str, code| TaskEvent::Exit {
            container: "t".into(),
            process: process.into(),
            code,
        };
        let r = to_report(&exit("t", 3)).unwrap();
        assert_eq!(
            (r.kind.as_str(), r.reason.as_str(), r.exit_code),
            ("exited", "Error", 3)
        );
        assert_eq!(to_report(&exit("t", 0)).unwrap().reason, "Completed");
        assert!(to_report(&exit("exec-1", 0)).is_none());
        let oom = to_report(&TaskEvent::Oom {
            container: "t".into(),
        })
        .unwrap();
        assert_eq!((oom.kind.as_str(), oom.task.as_str()), ("oomkilled", "t"));
    }

    #[test]
    fn exit_messages() {
        assert_eq!(exit_message(3), "exited with code 3");
        assert_eq!(exit_message(137), "exited with code 137 (signal 9)");
    }
}
