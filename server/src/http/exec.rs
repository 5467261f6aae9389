//! `GET /api/v1/tasks/NAME/exec` as a WebSocket: the dashboard's console into a running
//! task, relayed to the task's node over NATS as `voiydctl exec -i` does. Query:
//! `command` (a shell command line, run with `sh -c`; default: `sh`, reading commands
//! from the console). No terminal is allocated: the console is line by line.
//!
//! Frames are JSON text. From the browser: `{"stdin": "ls\n"}`, `{"close": true}` (end
//! of input), `{"kill": true}`. To the browser: `{"stdout": "..."}`, `{"stderr": "..."}`,
//! and last `{"exited": true, "code": 0, "error": ""}`.

use super::{HttpError, HttpState};
use crate::service::resources;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use std::collections::HashMap;
use std::time::Duration;
use voiyd_messages::v1::{ExecInput, ExecOutput, ExecRequest, GetRequest, Task};
use voiyd_nats::names;
use voiyd_nats::stream::ClientStream;

/// How long the node has to answer the request.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the browser sends.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Input {
    stdin: String,
    close: bool,
    kill: bool,
}

/// The handler: checks the task runs somewhere, then upgrades.
pub async fn exec(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, HttpError> {
    let task: Task = resources::get(&st.ctx, &GetRequest { name: name.clone() }).await?;
    let status = task.status.unwrap_or_default();
    if status.node.is_empty() || status.phase != voiyd_messages::phase::TaskPhase::Running {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!(
                "task {name} is not running (phase {}): nothing to exec in",
                status.phase
            ),
        ));
    }
    let args = match q.get("command").map(|c| c.trim()).filter(|c| !c.is_empty()) {
        Some(c) => vec!["sh".to_string(), "-c".to_string(), c.to_string()],
        None => vec!["sh".to_string()],
    };
    let client = st.ctx.client.clone();
    Ok(ws.on_upgrade(move |socket| relay(socket, client, status.node, name, args)))
}

fn frame(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn relay(
    socket: WebSocket,
    client: async_nats::Client,
    node: String,
    task: String,
    args: Vec<String>,
) {
    let (mut to_browser, mut from_browser) = socket.split();
    let opened = ClientStream::open(
        &client,
        &node,
        names::node::exec(&node, &task),
        OPEN_TIMEOUT,
        |inbox| {
            ExecRequest {
                args,
                stdin: true,
                deliver_to: inbox,
                ..Default::default()
            }
            .encode_to_vec()
        },
    )
    .await;
    let (mut stream, start) = match opened {
        Ok(s) => s,
        Err(e) => {
            let end = serde_json::json!({"exited": true, "code": -1, "error": e.to_string()});
            let _ = to_browser.send(frame(end)).await;
            return;
        }
    };
    let input = names::node::exec_input(&node, &task, &start.session);
    let send_input = |i: ExecInput| {
        let (client, input) = (client.clone(), input.clone());
        async move {
            client
                .publish(input, i.encode_to_vec().into())
                .await
                .is_ok()
        }
    };
    loop {
        tokio::select! {
            msg = from_browser.next() => {
                let i = match msg {
                    Some(Ok(Message::Text(t))) => {
                        let i: Input = serde_json::from_str(t.as_str()).unwrap_or_default();
                        ExecInput {
                            stdin: i.stdin.into_bytes(),
                            close_stdin: i.close,
                            kill: i.kill,
                            ..Default::default()
                        }
                    }
                    Some(Ok(Message::Binary(b))) => ExecInput { stdin: b.to_vec(), ..Default::default() },
                    Some(Ok(_)) => continue,
                    // The page went: the process goes too.
                    Some(Err(_)) | None => {
                        send_input(ExecInput { kill: true, ..Default::default() }).await;
                        return;
                    }
                };
                if !send_input(i).await {
                    return;
                }
            }
            out = stream.next::<ExecOutput>() => {
                let out = match out {
                    Ok(o) => o,
                    Err(e) => {
                        let end = serde_json::json!({"exited": true, "code": -1, "error": e.to_string()});
                        let _ = to_browser.send(frame(end)).await;
                        return;
                    }
                };
                for (key, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                    if !bytes.is_empty() {
                        let text = String::from_utf8_lossy(bytes);
                        if to_browser.send(frame(serde_json::json!({key: text}))).await.is_err() {
                            send_input(ExecInput { kill: true, ..Default::default() }).await;
                            return;
                        }
                    }
                }
                if out.exited {
                    let end = serde_json::json!({"exited": true, "code": out.exit_code, "error": out.error});
                    let _ = to_browser.send(frame(end)).await;
                    let _ = to_browser.close().await;
                    return;
                }
            }
        }
    }
}
