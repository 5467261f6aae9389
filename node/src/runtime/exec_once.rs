//! One process run to its end in a task's running container (Tasks.Exec with a FIFO the
//! agent owns), its exit code and output returned: what an exec probe needs. Also the
//! helpers interactive exec (`serve::exec`) shares: process ids, the process spec, and
//! runc's start errors.

use crate::containerd::client::Containerd;
use crate::logs::mkfifo;
use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    WaitRequest,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use voiyd_messages::v1::ExecRequest;

/// The type URL of an OCI process spec in containerd's API.
pub const PROCESS_SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Most output kept of one run (the rest is read and dropped).
pub const MAX_OUTPUT: usize = 4096;

/// A unique exec id.
pub fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "exec-{:x}-{}-{}",
        nanos,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `process` of the container's OCI spec, with the command, terminal and env of the request.
pub fn process_spec(container_spec: &[u8], req: &ExecRequest) -> Result<serde_json::Value, String> {
    let spec: serde_json::Value = serde_json::from_slice(container_spec)
        .map_err(|e| format!("container spec is not JSON: {e}"))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or("container spec has no process")?;
    process["args"] = serde_json::json!(req.args);
    process["terminal"] = serde_json::json!(req.tty);
    if req.tty && req.width > 0 && req.height > 0 {
        process["consoleSize"] = serde_json::json!({"height": req.height, "width": req.width});
    } else if let Some(o) = process.as_object_mut() {
        o.remove("consoleSize");
    }
    if !req.env.is_empty() {
        let mut env: Vec<String> = process["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for kv in &req.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        process["env"] = serde_json::json!(env);
    }
    Ok(process)
}

/// The useful part of runc's start error (`... exec: "x": executable file not found in $PATH: unknown`).
pub fn start_error(message: &str) -> String {
    if let Some(i) = message.find("exec: ") {
        return message[i + 6..].trim_end_matches(": unknown").to_string();
    }
    message.to_string()
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Its exit code.
    pub exit_code: i32,
    /// Its stdout and stderr, interleaved, at most [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// Runs `args` in `task`'s running container and waits at most `timeout` for it to exit
/// (then kills it). `dir_root` holds the FIFO while it runs.
pub async fn run(
    cd: &Containerd,
    dir_root: &Path,
    task: &str,
    args: &[String],
    timeout: Duration,
) -> Result<RunOutput, String> {
    let container = cd
        .containers()
        .get(cd.request(GetContainerRequest {
            id: task.to_string(),
        }))
        .await
        .map_err(|s| format!("no container: {}", s.message()))?
        .into_inner()
        .container
        .ok_or("no container")?;
    let spec = container.spec.map(|a| a.value).unwrap_or_default();
    let req = ExecRequest {
        args: args.to_vec(),
        ..Default::default()
    };
    let process = process_spec(&spec, &req)?;
    let id = new_id();
    let dir = dir_root.join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("exec directory: {e}"))?;
    let mut guard = Abandoned {
        cd: cd.clone(),
        task: task.to_string(),
        id: id.clone(),
        dir: dir.clone(),
        armed: true,
    };
    let result = run_in(cd, &dir, task, &id, process, timeout).await;
    guard.armed = false;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Cleans up after a run whose future was dropped before it ended (a probe run stops
/// when its task stops): the exec process is killed and removed from containerd and the
/// FIFO directory deleted, off the caller's path.
struct Abandoned {
    cd: Containerd,
    task: String,
    id: String,
    dir: std::path::PathBuf,
    armed: bool,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (cd, task, id, dir) = (
            self.cd.clone(),
            self.task.clone(),
            self.id.clone(),
            self.dir.clone(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let kill = KillRequest {
                        container_id: task.clone(),
                        exec_id: id.clone(),
                        signal: rustix::process::Signal::KILL.as_raw() as u32,
                        all: false,
                    };
                    let _ = cd.tasks().kill(cd.request(kill)).await;
                    // A process must have exited before containerd removes it.
                    let wait = WaitRequest {
                        container_id: task.clone(),
                        exec_id: id.clone(),
                    };
                    let mut tasks = cd.tasks();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), tasks.wait(cd.request(wait)))
                            .await;
                    delete_process(&cd, &task, &id).await;
                    let _ = std::fs::remove_dir_all(&dir);
                });
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

async fn run_in(
    cd: &Containerd,
    dir: &Path,
    task: &str,
    id: &str,
    process: serde_json::Value,
    timeout: Duration,
) -> Result<RunOutput, String> {
    let out = dir.join("out");
    mkfifo(&out).map_err(|e| format!("exec FIFO: {e}"))?;
    // Read-write, so that no end-of-file shows before the shim opened its end.
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&out)
        .map_err(|e| format!("exec FIFO: {e}"))?;
    let path = out.to_string_lossy().into_owned();
    let exec = ExecProcessRequest {
        container_id: task.to_string(),
        stdin: String::new(),
        stdout: path.clone(),
        stderr: path,
        terminal: false,
        spec: Some(prost_types::Any {
            type_url: PROCESS_SPEC_TYPE.into(),
            value: process.to_string().into_bytes(),
        }),
        exec_id: id.to_string(),
    };
    cd.tasks()
        .exec(cd.request(exec))
        .await
        .map_err(|s| format!("cannot exec: {}", s.message()))?;
    let start = StartRequest {
        container_id: task.to_string(),
        exec_id: id.to_string(),
    };
    if let Err(s) = cd.tasks().start(cd.request(start)).await {
        delete_process(cd, task, id).await;
        return Err(start_error(s.message()));
    }
    let wait = WaitRequest {
        container_id: task.to_string(),
        exec_id: id.to_string(),
    };
    let mut output = Vec::new();
    let mut buf = vec![0u8; 4096];
    let waited = {
        let mut tasks = cd.tasks();
        let wait = tasks.wait(cd.request(wait));
        tokio::pin!(wait);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = &mut wait => break Some(r),
                _ = &mut deadline => break None,
                n = rx.read(&mut buf) => match n {
                    Ok(n) if n > 0 => keep(&mut output, &buf[..n]),
                    _ => {}
                },
            }
        }
    };
    let result = match waited {
        None => {
            let kill = KillRequest {
                container_id: task.to_string(),
                exec_id: id.to_string(),
                signal: rustix::process::Signal::KILL.as_raw() as u32,
                all: false,
            };
            let _ = cd.tasks().kill(cd.request(kill)).await;
            Err(format!("timed out after {}s", timeout.as_secs_f32()))
        }
        Some(Err(s)) => Err(format!("cannot wait: {}", s.message())),
        Some(Ok(r)) => {
            // What is still in the pipe, then done.
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(20), rx.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                keep(&mut output, &buf[..n]);
            }
            Ok(RunOutput {
                exit_code: r.into_inner().exit_status as i32,
                output: String::from_utf8_lossy(&output).into_owned(),
            })
        }
    };
    delete_process(cd, task, id).await;
    result
}

fn keep(output: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(output.len());
    output.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Removes an exec process from containerd (best effort: logged, not returned).
pub async fn delete_process(cd: &Containerd, task: &str, id: &str) {
    let req = DeleteProcessRequest {
        container_id: task.to_string(),
        exec_id: id.to_string(),
    };
    if let Err(s) = cd.tasks().delete_process(cd.request(req)).await {
        tracing::debug!(%task, exec = %id, error = %s.message(), "cannot delete exec process");
    }
}
