//! Serves `voiyd.node.<node>.exec.<task>`: runs a process in a running task's container
//! through containerd (Tasks.Exec) with FIFOs the agent owns, and relays its stdin,
//! stdout and stderr over NATS (`voiyd_nats::stream`), ending with the exit code.
//!
//! Input arrives on `voiyd.node.<node>.exec.<task>.<session>` (stdin bytes, end of
//! stdin, terminal resizes, kill). A client that stops acknowledging output has gone:
//! its process is killed, so no exec outlives its client.

use crate::containerd::client::Containerd;
use crate::logs::mkfifo;
use crate::runtime::exec_once::{
    delete_process, new_id, process_spec, start_error, PROCESS_SPEC_TYPE,
};
use containerd_client::services::v1::{
    CloseIoRequest, ExecProcessRequest, GetContainerRequest, GetRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as ProcStatus;
use futures::StreamExt;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use voiyd_messages::v1::{ExecInput, ExecOutput, ExecRequest, StreamStart};
use voiyd_metrics as metrics;
use voiyd_nats::names;
use voiyd_nats::stream::{answer, refuse, send_acked, serve_limited, KEEPALIVE};

/// Most exec sessions one node runs at once.
const MAX_SESSIONS: usize = 64;

/// Serves exec requests for this node's tasks until the connection closes.
pub async fn serve(
    client: async_nats::Client,
    node: String,
    data_dir: PathBuf,
    cd: Containerd,
) -> Result<(), async_nats::SubscribeError> {
    let requests = client.subscribe(names::node::all_exec(&node)).await?;
    let busy = format!("node {node} runs {MAX_SESSIONS} exec sessions already");
    serve_limited(&client, requests, MAX_SESSIONS, &busy, |msg| {
        let (client, node, data_dir, cd) =
            (client.clone(), node.clone(), data_dir.clone(), cd.clone());
        async move {
            metrics::global().inc(
                "voiyd_node_exec_sessions_total",
                "Exec sessions requested.",
                &[],
                1.0,
            );
            let task = names::node::task_of(&msg.subject).unwrap_or_default();
            let reply = msg.reply.clone();
            match prepare(&client, &node, &data_dir, &cd, &task, msg.payload).await {
                Ok(session) => {
                    answer(
                        &client,
                        reply.as_ref(),
                        StreamStart {
                            session: session.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
                    session.run(&client, &cd).await;
                }
                Err(start) => answer(&client, reply.as_ref(), start).await,
            }
        }
    })
    .await;
    Ok(())
}

/// A started exec process and its plumbing.
struct Session {
    id: String,
    task: String,
    dir: PathBuf,
    deliver_to: String,
    stdin: Option<tokio::net::unix::pipe::Sender>,
    input: async_nats::Subscriber,
    output: mpsc::Receiver<(bool, Vec<u8>)>,
    stop_readers: watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

async fn prepare(
    client: &async_nats::Client,
    node: &str,
    data_dir: &Path,
    cd: &Containerd,
    task: &str,
    payload: prost::bytes::Bytes,
) -> Result<Session, StreamStart> {
    let req = ExecRequest::decode(payload)
        .map_err(|e| refuse(400, format!("undecodable exec request: {e}")))?;
    if req.args.is_empty() {
        return Err(refuse(
            400,
            "no command given: voiydctl exec TASK -- CMD [ARGS...]",
        ));
    }
    let container = match cd
        .containers()
        .get(cd.request(GetContainerRequest {
            id: task.to_string(),
        }))
        .await
    {
        Ok(r) => r.into_inner().container,
        Err(s) if s.code() == Code::NotFound => None,
        Err(s) => return Err(refuse(500, format!("containerd: {}", s.message()))),
    };
    let Some(container) = container else {
        return Err(refuse(
            404,
            format!("task {task} has no container on node {node}"),
        ));
    };
    let running = match cd
        .tasks()
        .get(cd.request(GetRequest {
            container_id: task.to_string(),
            exec_id: String::new(),
        }))
        .await
    {
        Ok(r) => r
            .into_inner()
            .process
            .is_some_and(|p| p.status == ProcStatus::Running as i32),
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => return Err(refuse(500, format!("containerd: {}", s.message()))),
    };
    if !running {
        return Err(refuse(
            409,
            format!("task {task} is not running on node {node}: start it first (voiydctl start task {task})"),
        ));
    }
    let spec = container
        .spec
        .as_ref()
        .map(|a| a.value.clone())
        .unwrap_or_default();
    let process = process_spec(&spec, &req).map_err(|e| refuse(500, e))?;

    let id = new_id();
    let dir = data_dir.join("exec").join(&id);
    let fail = |what: &str, e: std::io::Error| refuse(500, format!("{what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(|e| fail("exec directory", e))?;
    let cleanup_dir = |dir: &Path| {
        let _ = std::fs::remove_dir_all(dir);
    };
    let mut paths = vec![("stdout", dir.join("stdout"))];
    if !req.tty {
        paths.push(("stderr", dir.join("stderr")));
    }
    let mut readers = Vec::new();
    let (tx, output) = mpsc::channel::<(bool, Vec<u8>)>(64);
    let (stop_readers, stopped) = watch::channel(false);
    for (name, p) in &paths {
        if let Err(e) = mkfifo(p) {
            cleanup_dir(&dir);
            return Err(fail("exec FIFO", e));
        }
        // Read-write, so that no end-of-file shows before the shim opened its end.
        let rx = match tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(p)
        {
            Ok(rx) => rx,
            Err(e) => {
                cleanup_dir(&dir);
                return Err(fail("exec FIFO", e));
            }
        };
        readers.push(tokio::spawn(relay(
            rx,
            *name == "stderr",
            tx.clone(),
            stopped.clone(),
        )));
    }
    drop(tx);
    let mut stdin = None;
    let stdin_path = dir.join("stdin");
    if req.stdin {
        if let Err(e) = mkfifo(&stdin_path) {
            cleanup_dir(&dir);
            return Err(fail("exec FIFO", e));
        }
        match tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&stdin_path)
        {
            Ok(s) => stdin = Some(s),
            Err(e) => {
                cleanup_dir(&dir);
                return Err(fail("exec FIFO", e));
            }
        }
    }
    let input = client
        .subscribe(names::node::exec_input(node, task, &id))
        .await
        .map_err(|e| refuse(500, format!("cannot subscribe for input: {e}")))?;

    let path_str = |p: &Path| p.to_string_lossy().into_owned();
    let exec = ExecProcessRequest {
        container_id: task.to_string(),
        stdin: if req.stdin {
            path_str(&stdin_path)
        } else {
            String::new()
        },
        stdout: path_str(&dir.join("stdout")),
        stderr: if req.tty {
            String::new()
        } else {
            path_str(&dir.join("stderr"))
        },
        terminal: req.tty,
        spec: Some(prost_types::Any {
            type_url: PROCESS_SPEC_TYPE.into(),
            value: process.to_string().into_bytes(),
        }),
        exec_id: id.clone(),
    };
    if let Err(s) = cd.tasks().exec(cd.request(exec)).await {
        cleanup_dir(&dir);
        return Err(refuse(
            500,
            format!("cannot exec in task {task}: {}", s.message()),
        ));
    }
    let start = StartRequest {
        container_id: task.to_string(),
        exec_id: id.clone(),
    };
    if let Err(s) = cd.tasks().start(cd.request(start)).await {
        delete_process(cd, task, &id).await;
        cleanup_dir(&dir);
        let cmd = &req.args[0];
        return Err(refuse(
            400,
            format!(
                "cannot run `{cmd}` in task {task}: {}",
                start_error(s.message())
            ),
        ));
    }
    Ok(Session {
        id,
        task: task.to_string(),
        dir,
        deliver_to: req.deliver_to,
        stdin,
        input,
        output,
        stop_readers,
        readers,
    })
}

async fn relay(
    mut rx: tokio::net::unix::pipe::Receiver,
    is_stderr: bool,
    tx: mpsc::Sender<(bool, Vec<u8>)>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = if *stopped.borrow() {
            // The process exited: whatever is still in the pipe, then done.
            match tokio::time::timeout(Duration::from_millis(100), rx.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            }
        } else {
            tokio::select! {
                r = rx.read(&mut buf) => match r {
                    Ok(n) if n > 0 => n,
                    _ => return,
                },
                // Err: the session is gone without saying stopped, so nobody reads any
                // more; without this return the loop would spin on the closed channel.
                changed = stopped.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return,
                },
            }
        };
        if tx.send((is_stderr, buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

async fn kill(cd: &Containerd, task: &str, id: &str) {
    let req = KillRequest {
        container_id: task.to_string(),
        exec_id: id.to_string(),
        signal: rustix::process::Signal::KILL.as_raw() as u32,
        all: false,
    };
    let _ = cd.tasks().kill(cd.request(req)).await;
}

impl Session {
    async fn run(mut self, client: &async_nats::Client, cd: &Containerd) {
        let (task, id) = (self.task.clone(), self.id.clone());
        let waiter = {
            let cd = cd.clone();
            let (task, id) = (task.clone(), id.clone());
            tokio::spawn(async move {
                let req = WaitRequest {
                    container_id: task,
                    exec_id: id,
                };
                cd.tasks()
                    .wait(cd.request(req))
                    .await
                    .map(|r| r.into_inner().exit_status as i32)
                    .map_err(|s| s.message().to_string())
            })
        };
        tokio::pin!(waiter);
        let mut exit: Option<Result<i32, String>> = None;
        let mut output_open = true;
        let mut input_open = true;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        let mut gone = false;
        while output_open || exit.is_none() {
            tokio::select! {
                r = &mut waiter, if exit.is_none() => {
                    exit = Some(r.unwrap_or_else(|e| Err(e.to_string())));
                    let _ = self.stop_readers.send(true);
                }
                chunk = self.output.recv(), if output_open => match chunk {
                    Some((is_err, bytes)) => {
                        let out = if is_err {
                            ExecOutput { stderr: bytes, ..Default::default() }
                        } else {
                            ExecOutput { stdout: bytes, ..Default::default() }
                        };
                        if send_acked(client, &self.deliver_to, &out).await.is_err() {
                            gone = true;
                            break;
                        }
                        keepalive.reset();
                    }
                    None => output_open = false,
                },
                input = self.input.next(), if input_open => match input {
                    Some(m) => {
                        if let Ok(i) = ExecInput::decode(m.payload) {
                            self.apply(cd, i).await;
                        }
                    }
                    None => input_open = false,
                },
                _ = keepalive.tick() => {
                    if send_acked(client, &self.deliver_to, &ExecOutput::default()).await.is_err() {
                        gone = true;
                        break;
                    }
                }
            }
        }
        if gone {
            tracing::info!(%task, exec = %id, "exec client went away; killing its process");
            kill(cd, &task, &id).await;
            let _ = self.stop_readers.send(true);
        } else {
            let last = match exit.unwrap_or(Err("no exit status".into())) {
                Ok(code) => ExecOutput {
                    exited: true,
                    exit_code: code,
                    ..Default::default()
                },
                Err(e) => ExecOutput {
                    exited: true,
                    exit_code: -1,
                    error: format!("lost the process: {e}"),
                    ..Default::default()
                },
            };
            let _ = send_acked(client, &self.deliver_to, &last).await;
        }
        for r in self.readers.drain(..) {
            r.abort();
        }
        delete_process(cd, &task, &id).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn apply(&mut self, cd: &Containerd, input: ExecInput) {
        if !input.stdin.is_empty() {
            if let Some(w) = self.stdin.as_mut() {
                if w.write_all(&input.stdin).await.is_err() {
                    self.stdin = None;
                }
            }
        }
        if input.close_stdin && self.stdin.take().is_some() {
            let req = CloseIoRequest {
                container_id: self.task.clone(),
                exec_id: self.id.clone(),
                stdin: true,
            };
            let _ = cd.tasks().close_io(cd.request(req)).await;
        }
        if input.width > 0 && input.height > 0 {
            let req = ResizePtyRequest {
                container_id: self.task.clone(),
                exec_id: self.id.clone(),
                width: input.width,
                height: input.height,
            };
            let _ = cd.tasks().resize_pty(cd.request(req)).await;
        }
        if input.kill {
            kill(cd, &self.task, &self.id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that ends without saying "stopped" (its client went away) while a
    /// process still holds the pipe open: the relay must end, not spin on the closed
    /// channel (it did: a node at 165% CPU after an exec session of the logs test).
    #[tokio::test]
    async fn relay_ends_when_its_session_is_gone_while_the_pipe_stays_open() {
        let (_writer_held_open, reader) = tokio::net::unix::pipe::pipe().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let (stop, stopped) = watch::channel(false);
        let relay = tokio::spawn(relay(reader, false, tx, stopped));
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the relay ended")
            .unwrap();
    }

    #[test]
    fn process_spec_takes_command_and_env() {
        let spec = br#"{"process":{"args":["sleep","1"],"env":["PATH=/bin","A=1"],"cwd":"/","terminal":false}}"#;
        let req = ExecRequest {
            args: vec!["sh".into(), "-c".into(), "echo".into()],
            tty: true,
            width: 80,
            height: 24,
            env: vec!["A=2".into()],
            ..Default::default()
        };
        let p = process_spec(spec, &req).unwrap();
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "echo"]));
        assert_eq!(p["terminal"], serde_json::json!(true));
        assert_eq!(p["cwd"], serde_json::json!("/"));
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "A=2"]));
        assert_eq!(p["consoleSize"]["width"], serde_json::json!(80));
        assert!(process_spec(b"{}", &req).is_err());
    }

    #[test]
    fn start_error_keeps_the_reason() {
        assert_eq!(
            start_error("OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown"),
            "\"nope\": executable file not found in $PATH"
        );
        assert_eq!(start_error("other"), "other");
    }
}
