//! A simulated runtime: containers are entries in memory that start at once and run
//! until signalled. It lets one machine host many nodes for scale tests and
//! benchmarks; nothing touches containerd, images or the network.
//!
//! A task whose first argument is `sim-exit` (optionally followed by a code) exits at
//! once after starting, so restart policies and failures can be simulated too.

use super::{ContainerView, Progress, Runtime, RuntimeError, RuntimeInfo};
use crate::decide::reconcile::{ContainerState, Desired};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;
use tokio::sync::broadcast;

struct SimContainer {
    view: ContainerView,
    exit_code: Option<i32>,
}

/// The simulated runtime of one node.
pub struct SimRuntime {
    node: String,
    containers: Mutex<HashMap<String, SimContainer>>,
    exits: broadcast::Sender<String>,
    next_pid: AtomicU32,
}

impl Default for SimRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl SimRuntime {
    /// An empty runtime.
    pub fn new() -> Self {
        Self::for_node("sim")
    }

    /// An empty runtime whose log lines name `node`.
    pub fn for_node(node: &str) -> Self {
        SimRuntime {
            node: node.to_string(),
            containers: Mutex::new(HashMap::new()),
            exits: broadcast::channel(1024).0,
            next_pid: AtomicU32::new(1000),
        }
    }

    /// How many containers are running now.
    pub fn running(&self) -> usize {
        self.containers
            .lock()
            .expect("sim lock")
            .values()
            .filter(|c| c.view.state.is_running())
            .count()
    }

    fn missing(task: &str) -> RuntimeError {
        RuntimeError::new(
            voiyd_messages::reason::Reason::RuntimeUnavailable,
            format!("no container for task {task}"),
        )
    }

    fn exit(&self, task: &str, code: i32) {
        let mut cs = self.containers.lock().expect("sim lock");
        if let Some(c) = cs.get_mut(task) {
            if c.view.state.is_running() {
                c.view.state = ContainerState::Exited {
                    code,
                    at: SystemTime::now(),
                };
            }
        }
        drop(cs);
        tracing::info!(node = %self.node, %task, code, "sim task exited");
        let _ = self.exits.send(task.to_string());
    }
}

fn exit_code_of(d: &Desired) -> Option<i32> {
    let args: Vec<&String> = d.config.command.iter().chain(&d.config.args).collect();
    match args.first().map(|s| s.as_str()) {
        Some("sim-exit") => Some(args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0)),
        _ => None,
    }
}

impl Runtime for SimRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        Ok(RuntimeInfo {
            name: "sim".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    async fn list(&self) -> Result<Vec<ContainerView>, RuntimeError> {
        Ok(self
            .containers
            .lock()
            .expect("sim lock")
            .values()
            .map(|c| c.view.clone())
            .collect())
    }

    async fn inspect(&self, task: &str) -> Result<Option<ContainerView>, RuntimeError> {
        Ok(self
            .containers
            .lock()
            .expect("sim lock")
            .get(task)
            .map(|c| c.view.clone()))
    }

    async fn pull(&self, _desired: &Desired, progress: Progress) -> Result<(), RuntimeError> {
        progress(1, 1);
        Ok(())
    }

    async fn create(&self, desired: &Desired) -> Result<(), RuntimeError> {
        let view = ContainerView {
            task: desired.task.clone(),
            uid: desired.uid.clone(),
            generation: desired.generation,
            state: ContainerState::Created,
            restart_count: 0,
            started_at: None,
            ip: None,
            stop_grace: Some(desired.stop_grace()),
            image_probe: None,
        };
        self.containers.lock().expect("sim lock").insert(
            desired.task.clone(),
            SimContainer {
                view,
                exit_code: exit_code_of(desired),
            },
        );
        Ok(())
    }

    async fn start(&self, task: &str) -> Result<u32, RuntimeError> {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let exit = {
            let mut cs = self.containers.lock().expect("sim lock");
            let c = cs.get_mut(task).ok_or_else(|| Self::missing(task))?;
            let now = SystemTime::now();
            c.view.state = ContainerState::Running { pid, since: now };
            c.view.started_at = Some(now);
            c.exit_code
        };
        tracing::info!(node = %self.node, %task, pid, "sim task started");
        if let Some(code) = exit {
            self.exit(task, code);
        }
        Ok(pid)
    }

    async fn signal(&self, task: &str, kill: bool) -> Result<(), RuntimeError> {
        // A simulated process honours SIGTERM at once.
        self.exit(task, if kill { 137 } else { 143 });
        Ok(())
    }

    async fn delete_task(&self, task: &str) -> Result<(), RuntimeError> {
        let mut cs = self.containers.lock().expect("sim lock");
        let c = cs.get_mut(task).ok_or_else(|| Self::missing(task))?;
        if !c.view.state.is_running() {
            c.view.state = ContainerState::Created;
        }
        Ok(())
    }

    async fn delete(&self, task: &str) -> Result<(), RuntimeError> {
        self.containers.lock().expect("sim lock").remove(task);
        Ok(())
    }

    async fn set_restart_count(&self, task: &str, count: u32) -> Result<(), RuntimeError> {
        let mut cs = self.containers.lock().expect("sim lock");
        let c = cs.get_mut(task).ok_or_else(|| Self::missing(task))?;
        c.view.restart_count = count;
        Ok(())
    }

    fn exits(&self) -> broadcast::Receiver<String> {
        self.exits.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::TaskConfig;

    fn desired(args: &[&str]) -> Desired {
        Desired {
            task: "t".into(),
            uid: "u".into(),
            generation: 1,
            config: TaskConfig {
                image: "x".into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            kill: false,
            volumes: Vec::new(),
            trace_parent: String::new(),
        }
    }

    #[tokio::test]
    async fn runs_until_signalled() {
        let rt = SimRuntime::new();
        let mut exits = rt.exits();
        rt.create(&desired(&[])).await.unwrap();
        rt.start("t").await.unwrap();
        assert_eq!(rt.running(), 1);
        rt.signal("t", false).await.unwrap();
        assert_eq!(exits.recv().await.unwrap(), "t");
        let v = rt.inspect("t").await.unwrap().unwrap();
        assert!(matches!(v.state, ContainerState::Exited { code: 143, .. }));
        rt.delete("t").await.unwrap();
        assert!(rt.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sim_exit_exits_at_once() {
        let rt = SimRuntime::new();
        rt.create(&desired(&["sim-exit", "3"])).await.unwrap();
        rt.start("t").await.unwrap();
        let v = rt.inspect("t").await.unwrap().unwrap();
        assert!(matches!(v.state, ContainerState::Exited { code: 3, .. }));
        assert!(rt.start("nope").await.is_err());
    }
}
