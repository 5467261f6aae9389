//! The containerd runtime: each task is one container (id = task name) with labels that
//! record which task, uid and generation it was made for, and one containerd task for
//! its process, whose stdout and stderr go to agent-owned FIFOs.

use super::{ContainerView, Progress, Runtime, RuntimeError, RuntimeInfo};
use crate::containerd::client::Containerd;
use crate::containerd::events::{TaskEvent, TaskEvents};
use crate::decide::reconcile::{ContainerState, Desired};
use crate::image::pull::{image_config_in, pull, PullOptions, PullPolicy, PulledImage};
use crate::logs::{self, Capture, Rotation, TaskPaths};
use crate::network::Network;
use crate::spec::{build_spec, ResolvedMount, SpecInput};
use crate::volumes::Volumes;
use containerd_client::services::v1::container::Runtime as CdRuntime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, KillRequest, ListContainersRequest, ListTasksRequest,
    StartRequest, UpdateContainerRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::{Process, Status as ProcStatus};
use containerd_client::types::Mount;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, Mutex};
use voiyd_messages::image as reference;
use voiyd_messages::reason::Reason;

const LABEL_TASK: &str = "voiyd.task";
const LABEL_UID: &str = "voiyd.uid";
const LABEL_GENERATION: &str = "voiyd.generation";
const LABEL_RESTARTS: &str = "voiyd.restarts";
const LABEL_STARTED: &str = "voiyd.started-at";
/// The spec's stop grace in milliseconds: a stop after the task was taken away honours
/// it even when the agent restarted in between and no longer has the spec.
const LABEL_GRACE: &str = "voiyd.stop-grace-ms";
/// The image's Docker HEALTHCHECK as a probe (protobuf JSON), when it has one.
const LABEL_IMAGE_PROBE: &str = "voiyd.image-probe";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_V2: &str = "io.containerd.runc.v2";

/// Settings of the containerd runtime.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// The agent's data directory (FIFOs, logs, volumes).
    pub data_dir: PathBuf,
    /// Registry settings; the policy is chosen per task.
    pub pull: PullOptions,
    /// Parent of every task's cgroup, e.g. `/voiyd/<node>`.
    pub cgroup_parent: String,
    /// Log rotation.
    pub rotation: Rotation,
    /// The task network; without one each task gets an empty network namespace.
    pub network: Option<std::sync::Arc<Network>>,
    /// Where task output goes besides the local files (the cluster's logs stream).
    pub shipper: Option<logs::ship::Shipper>,
    /// Secrets of the node's tasks; none = tasks that use secrets fail to start.
    pub secrets: Option<std::sync::Arc<crate::secrets::Secrets>>,
}

/// Runs tasks as containerd containers in one namespace.
pub struct ContainerdRuntime {
    cd: Containerd,
    cfg: ContainerdConfig,
    captures: Mutex<HashMap<String, Capture>>,
    exits: broadcast::Sender<String>,
    events: TaskEvents,
    sizes: crate::volumes::Sizes,
}

fn cd_err<'a>(
    reason: Reason,
    what: &'a str,
) -> impl FnOnce(containerd_client::tonic::Status) -> RuntimeError + 'a {
    move |s| RuntimeError::new(reason, format!("{what}: {} ({:?})", s.message(), s.code()))
}

fn ts_to_time(ts: Option<&prost_types::Timestamp>) -> SystemTime {
    ts.map(|t| UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
        .unwrap_or(UNIX_EPOCH)
}

impl ContainerdRuntime {
    /// A runtime over `cd`. Starts following containerd's exit events.
    pub fn new(cd: Containerd, cfg: ContainerdConfig) -> std::sync::Arc<Self> {
        let (exits, _) = broadcast::channel(1024);
        let events = TaskEvents::follow(cd.clone());
        tokio::spawn(forward_exits(events.clone(), exits.clone()));
        std::sync::Arc::new(ContainerdRuntime {
            cd,
            cfg,
            captures: Mutex::new(HashMap::new()),
            exits,
            events,
            sizes: Default::default(),
        })
    }

    /// The node's one feed of containerd's task events.
    pub fn task_events(&self) -> TaskEvents {
        self.events.clone()
    }

    /// The connection.
    pub fn containerd(&self) -> &Containerd {
        &self.cd
    }

    fn paths(&self, task: &str) -> TaskPaths {
        TaskPaths::new(&self.cfg.data_dir, task)
    }

    async fn containers(&self) -> Result<Vec<Container>, RuntimeError> {
        let req = ListContainersRequest {
            filters: vec![format!("labels.\"{LABEL_TASK}\"")],
        };
        let resp = self
            .cd
            .containers()
            .list(self.cd.request(req))
            .await
            .map_err(cd_err(Reason::RuntimeUnavailable, "list containers"))?;
        Ok(resp.into_inner().containers)
    }

    async fn processes(&self) -> Result<HashMap<String, Process>, RuntimeError> {
        let resp = self
            .cd
            .tasks()
            .list(self.cd.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(cd_err(Reason::RuntimeUnavailable, "list tasks"))?;
        // containerd 1.6 leaves `container_id` empty in listings and puts the container's id in `id`.
        Ok(resp
            .into_inner()
            .tasks
            .into_iter()
            .map(|p| {
                (
                    if p.container_id.is_empty() {
                        p.id.clone()
                    } else {
                        p.container_id.clone()
                    },
                    p,
                )
            })
            .collect())
    }

    async fn container(&self, task: &str) -> Result<Option<Container>, RuntimeError> {
        match self
            .cd
            .containers()
            .get(self.cd.request(GetContainerRequest {
                id: task.to_string(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(cd_err(Reason::RuntimeUnavailable, "get container")(s)),
        }
    }

    fn view(c: &Container, p: Option<&Process>) -> ContainerView {
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let state = match p {
            None => ContainerState::Created,
            Some(p) => match ProcStatus::try_from(p.status).unwrap_or(ProcStatus::Unknown) {
                ProcStatus::Stopped => ContainerState::Exited {
                    code: p.exit_status as i32,
                    at: ts_to_time(p.exited_at.as_ref()),
                },
                // Unknown: the shim did not answer containerd in time (a busy host). A
                // process that was started is taken to run still: seen as merely created,
                // the rule table would delete it while it runs.
                ProcStatus::Created => ContainerState::Created,
                ProcStatus::Unknown if p.pid == 0 => ContainerState::Created,
                ProcStatus::Running
                | ProcStatus::Paused
                | ProcStatus::Pausing
                | ProcStatus::Unknown => ContainerState::Running {
                    pid: p.pid,
                    since: label(LABEL_STARTED)
                        .parse::<u64>()
                        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                        .unwrap_or_else(|_| SystemTime::now()),
                },
            },
        };
        ContainerView {
            task: c.id.clone(),
            uid: label(LABEL_UID),
            generation: label(LABEL_GENERATION).parse().unwrap_or(0),
            state,
            restart_count: label(LABEL_RESTARTS).parse().unwrap_or(0),
            started_at: label(LABEL_STARTED)
                .parse::<u64>()
                .ok()
                .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            ip: None,
            stop_grace: label(LABEL_GRACE)
                .parse::<u64>()
                .ok()
                .map(Duration::from_millis),
            image_probe: c
                .labels
                .get(LABEL_IMAGE_PROBE)
                .and_then(|j| serde_json::from_str(j).ok()),
        }
    }

    /// The task's IP while it runs on the node's network.
    fn with_ip(&self, mut v: ContainerView) -> ContainerView {
        if v.state.is_running() {
            v.ip = self.cfg.network.as_ref().and_then(|n| n.ip(&v.task));
        }
        v
    }

    /// An exited process keeps its containerd task (for its exit status) until the next
    /// start or delete; its network is released at once.
    async fn release_if_exited(&self, task: &str, p: &Process) {
        if let Some(n) = &self.cfg.network {
            if p.status == ProcStatus::Stopped as i32 {
                n.release_exited(task, p.pid).await;
            }
        }
    }

    /// Namespace path and hosts/resolv.conf files of a container about to be created.
    async fn network_for(
        &self,
        desired: &Desired,
    ) -> Result<(Option<String>, Option<String>, Option<String>), RuntimeError> {
        let task = desired.task.as_str();
        let path = |p: &Path| Some(p.to_string_lossy().into_owned());
        if desired.config.host_network {
            if let Some(n) = &self.cfg.network {
                n.forget(task).await;
            }
            return Ok((
                None,
                Some("/etc/hosts".into()),
                Some("/etc/resolv.conf".into()),
            ));
        }
        let Some(n) = &self.cfg.network else {
            return Ok((None, None, None));
        };
        let hostname = crate::spec::hostname(task, &desired.config);
        n.plan(
            task,
            &desired.config.port_mappings,
            hostname,
            desired.config.dns.as_ref(),
        )
        .map_err(|e| RuntimeError::new(e.reason, e.message))?;
        let (hosts, resolv) = n.file_paths(task);
        Ok((Some(n.netns_path(task)), path(&hosts), path(&resolv)))
    }

    /// Tears down networks that no running task owns: what a crashed agent left.
    pub async fn cleanup_networks(&self) -> Result<(), RuntimeError> {
        let Some(n) = &self.cfg.network else {
            return Ok(());
        };
        let keep = self
            .processes()
            .await?
            .into_iter()
            .filter(|(_, p)| p.status == ProcStatus::Running as i32)
            .map(|(id, _)| id)
            .collect();
        n.gc(&keep).await;
        Ok(())
    }

    async fn update_labels(&self, task: &str, set: &[(&str, String)]) -> Result<(), RuntimeError> {
        let Some(mut c) = self.container(task).await? else {
            return Ok(());
        };
        for (k, v) in set {
            c.labels.insert((*k).to_string(), v.clone());
        }
        let paths = set.iter().map(|(k, _)| format!("labels.{k}")).collect();
        let req = UpdateContainerRequest {
            container: Some(c),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        self.cd
            .containers()
            .update(self.cd.request(req))
            .await
            .map_err(cd_err(
                Reason::RuntimeUnavailable,
                "update container labels",
            ))?;
        Ok(())
    }

    async fn rootfs(&self, task: &str) -> Result<Vec<Mount>, RuntimeError> {
        let req = MountsRequest {
            snapshotter: self.cfg.pull.snapshotter.clone(),
            key: task.to_string(),
        };
        let resp = self
            .cd
            .snapshots()
            .mounts(self.cd.request(req))
            .await
            .map_err(cd_err(Reason::StartFailed, "snapshot mounts"))?;
        Ok(resp.into_inner().mounts)
    }

    async fn ensure_capture(&self, task: &str) -> Result<(), RuntimeError> {
        let mut caps = self.captures.lock().await;
        if caps.contains_key(task) {
            return Ok(());
        }
        let paths = self.paths(task);
        logs::prepare(&paths)
            .map_err(|e| RuntimeError::new(Reason::StartFailed, format!("log FIFOs: {e}")))?;
        let ship = self.cfg.shipper.as_ref().map(|shipper| logs::ShipTo {
            shipper: shipper.clone(),
            task: task.to_string(),
        });
        let cap = Capture::start(&paths, self.cfg.rotation, ship)
            .await
            .map_err(|e| RuntimeError::new(Reason::StartFailed, format!("log capture: {e}")))?;
        caps.insert(task.to_string(), cap);
        Ok(())
    }

    fn secrets(&self) -> Result<&crate::secrets::Secrets, RuntimeError> {
        self.cfg.secrets.as_deref().ok_or_else(|| {
            RuntimeError::new(
                Reason::CreateFailed,
                "this node does not handle secrets (no NATS connection for them)",
            )
        })
    }

    /// Tags a task's captured output from now on with its run's process id.
    async fn set_run(&self, task: &str, pid: u32) {
        if let Some(cap) = self.captures.lock().await.get(task) {
            cap.set_run(pid);
        }
    }

    /// Re-attaches log capture to tasks that survived an agent restart.
    pub async fn reattach(&self) -> Result<(), RuntimeError> {
        let procs = self.processes().await?;
        for c in self.containers().await? {
            if let Some(p) = procs
                .get(&c.id)
                .filter(|p| p.status == ProcStatus::Running as i32)
            {
                self.ensure_capture(&c.id).await?;
                self.set_run(&c.id, p.pid).await;
                tracing::info!(task = %c.id, "re-attached to the output of a running task");
            }
        }
        Ok(())
    }

    fn resolve_mounts(&self, desired: &Desired) -> Result<Vec<ResolvedMount>, RuntimeError> {
        Volumes::new(&self.cfg.data_dir)
            .resolve(desired)
            .map_err(|e| RuntimeError::new(Reason::CreateFailed, e))
    }

    async fn image(&self, desired: &Desired) -> Result<PulledImage, RuntimeError> {
        let name = reference::parse(&desired.config.image)
            .map_err(|e| RuntimeError::new(Reason::CreateFailed, e.to_string()))?
            .to_string();
        image_config_in(&self.cd, &name, &self.cfg.pull.snapshotter)
            .await
            .map_err(|e| RuntimeError::new(Reason::CreateFailed, e.to_string()))
    }

    async fn remove_container(&self, task: &str) -> Result<(), RuntimeError> {
        match self
            .cd
            .containers()
            .delete(self.cd.request(DeleteContainerRequest {
                id: task.to_string(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(cd_err(Reason::DeleteFailed, "delete container")(s)),
        }
        let req = RemoveSnapshotRequest {
            snapshotter: self.cfg.pull.snapshotter.clone(),
            key: task.to_string(),
        };
        match self.cd.snapshots().remove(self.cd.request(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(cd_err(Reason::DeleteFailed, "remove snapshot")(s)),
        }
    }
}

/// Reads the first of `rel` found in an overlay or bind rootfs, upper layer first.
fn read_from_rootfs(mounts: &[Mount], rel: &str) -> Option<String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        if m.r#type == "bind" {
            dirs.push(PathBuf::from(&m.source));
        }
        for o in &m.options {
            if let Some(u) = o.strip_prefix("upperdir=") {
                dirs.insert(0, PathBuf::from(u));
            }
        }
        for o in &m.options {
            if let Some(l) = o.strip_prefix("lowerdir=") {
                dirs.extend(l.split(':').map(PathBuf::from));
            }
        }
    }
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(rel)).ok())
}

/// Wakes task workers on every exit in this namespace (their container's id).
async fn forward_exits(events: TaskEvents, tx: broadcast::Sender<String>) {
    let mut rx = events.subscribe();
    loop {
        match rx.recv().await {
            Ok(TaskEvent::Exit { container, .. }) => {
                let _ = tx.send(container);
            }
            Ok(TaskEvent::Oom { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Runtime for ContainerdRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        let version = self
            .cd
            .version()
            .await
            .map_err(|e| RuntimeError::new(Reason::RuntimeUnavailable, e.to_string()))?;
        Ok(RuntimeInfo {
            name: "containerd".into(),
            version,
        })
    }

    async fn list(&self) -> Result<Vec<ContainerView>, RuntimeError> {
        let procs = self.processes().await?;
        for (task, p) in &procs {
            self.release_if_exited(task, p).await;
        }
        Ok(self
            .containers()
            .await?
            .iter()
            .map(|c| self.with_ip(Self::view(c, procs.get(&c.id))))
            .collect())
    }

    async fn inspect(&self, task: &str) -> Result<Option<ContainerView>, RuntimeError> {
        let Some(c) = self.container(task).await? else {
            return Ok(None);
        };
        if !c.labels.contains_key(LABEL_TASK) {
            return Ok(None);
        }
        let req = containerd_client::services::v1::GetRequest {
            container_id: task.to_string(),
            exec_id: String::new(),
        };
        let p = match self.cd.tasks().get(self.cd.request(req)).await {
            Ok(r) => r.into_inner().process,
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(cd_err(Reason::RuntimeUnavailable, "get task")(s)),
        };
        if let Some(p) = &p {
            self.release_if_exited(task, p).await;
        }
        Ok(Some(self.with_ip(Self::view(&c, p.as_ref()))))
    }

    async fn pull(&self, desired: &Desired, progress: Progress) -> Result<(), RuntimeError> {
        let reference = reference::parse(&desired.config.image)
            .map_err(|e| RuntimeError::new(Reason::PullFailed, e.to_string()))?;
        let mut opts = self.cfg.pull.clone();
        opts.policy = PullPolicy::resolve(&desired.config.pull_policy, &reference)
            .map_err(|e| RuntimeError::new(Reason::PullFailed, e.to_string()))?;
        if !desired.config.image_pull_secret.is_empty() {
            let (registry, username, password) = self
                .secrets()?
                .pull_credentials(desired)
                .await
                .map_err(|e| RuntimeError::new(Reason::PullFailed, e))?
                .unwrap_or_default();
            let host = if registry.is_empty() {
                reference.registry().to_string()
            } else {
                registry
            };
            opts.auth.insert(&host, &username, &password);
        }
        pull(&self.cd, &desired.config.image, &opts, |p| {
            progress(p.bytes_done, p.bytes_total)
        })
        .await
        .map(|_| ())
        .map_err(|e| RuntimeError::new(Reason::PullFailed, e.to_string()))
    }

    async fn create(&self, desired: &Desired) -> Result<(), RuntimeError> {
        let materialized;
        let desired = if voiyd_messages::secret::used_by(&desired.config).is_empty() {
            desired
        } else {
            materialized = self
                .secrets()?
                .materialize(desired)
                .await
                .map_err(|e| RuntimeError::new(Reason::CreateFailed, e))?;
            &materialized
        };
        let task = desired.task.as_str();
        // A leftover of an interrupted attempt is replaced.
        self.remove_container(task).await?;
        let image = self.image(desired).await?;
        let lease = self
            .cd
            .create_lease(Duration::from_secs(600))
            .await
            .map_err(|e| RuntimeError::new(Reason::CreateFailed, e.to_string()))?;
        let (netns_path, hosts_path, resolv_path) = self.network_for(desired).await?;
        if let Some(n) = self.cfg.network.as_ref().filter(|_| netns_path.is_some()) {
            if !desired.config.stopped {
                // The network is made while the snapshot and the container are: the start
                // that follows finds it (nearly) ready. A failure here is met again there.
                if let Err(e) = n.begin(task).await {
                    tracing::debug!(%task, error = %e.message, "network not begun at create");
                }
            }
        }
        let prep = PrepareSnapshotRequest {
            snapshotter: self.cfg.pull.snapshotter.clone(),
            key: task.to_string(),
            parent: image.chain_id.clone(),
            labels: Default::default(),
        };
        let mounts = self
            .cd
            .snapshots()
            .prepare(lease.request(prep))
            .await
            .map_err(cd_err(Reason::CreateFailed, "prepare snapshot"))?
            .into_inner()
            .mounts;
        let input = SpecInput {
            task_name: task,
            config: &desired.config,
            image: &image.config,
            rootfs_path: "rootfs".into(),
            passwd: read_from_rootfs(&mounts, "etc/passwd"),
            group: read_from_rootfs(&mounts, "etc/group"),
            netns_path,
            mounts: self.resolve_mounts(desired)?,
            hosts_path,
            resolv_path,
            cgroups_path: format!("{}/{task}", self.cfg.cgroup_parent),
        };
        let spec = build_spec(&input)
            .map_err(|e| RuntimeError::new(Reason::CreateFailed, e.to_string()))?;
        let mut labels = HashMap::from([
            (LABEL_TASK.to_string(), task.to_string()),
            (LABEL_UID.to_string(), desired.uid.clone()),
            (LABEL_GENERATION.to_string(), desired.generation.to_string()),
            (LABEL_RESTARTS.to_string(), "0".to_string()),
            (
                LABEL_GRACE.to_string(),
                desired.stop_grace().as_millis().to_string(),
            ),
        ]);
        if let Some(hc) = &image.config.healthcheck {
            if let Ok(json) = serde_json::to_string(&hc.probe()) {
                labels.insert(LABEL_IMAGE_PROBE.to_string(), json);
            }
        }
        let container = Container {
            id: task.to_string(),
            labels,
            image: image.name.clone(),
            runtime: Some(CdRuntime {
                name: RUNC_V2.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&spec).map_err(|e| {
                    RuntimeError::new(Reason::CreateFailed, format!("runtime spec: {e}"))
                })?,
            }),
            snapshotter: self.cfg.pull.snapshotter.clone(),
            snapshot_key: task.to_string(),
            ..Default::default()
        };
        self.cd
            .containers()
            .create(lease.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(cd_err(Reason::CreateFailed, "create container"))?;
        let _ = lease.release().await;
        Ok(())
    }

    async fn start(&self, task: &str) -> Result<u32, RuntimeError> {
        // A task left in the container (exited, or created by an interrupted start) goes
        // first. Its network needs no tear-down here: beginning a set-up replaces what an
        // earlier run left, and keeps the one begun when the container was created.
        self.delete_process(task).await?;
        self.ensure_capture(task).await?;
        let net = self.cfg.network.as_ref().filter(|n| n.has_plan(task));
        if let Some(n) = net {
            // The namespace exists when this returns; its plugins run while the task is
            // created below (they may have started already, when the container was).
            n.begin(task)
                .await
                .map_err(|e| RuntimeError::new(e.reason, e.message))?;
        }
        let paths = self.paths(task);
        let req = CreateTaskRequest {
            container_id: task.to_string(),
            rootfs: self.rootfs(task).await?,
            stdout: paths.stdout().to_string_lossy().into_owned(),
            stderr: paths.stderr().to_string_lossy().into_owned(),
            ..Default::default()
        };
        let create = async {
            self.cd
                .tasks()
                .create(self.cd.request(req))
                .await
                .map_err(cd_err(Reason::StartFailed, "create task"))
        };
        let network = async {
            match net {
                Some(n) => n.finish(task).await.map(Some),
                None => Ok(None),
            }
        };
        let (created, network) = tokio::join!(create, network);
        let created = created?.into_inner();
        if let Err(e) = network {
            // The process never ran: nothing of it is left for a retry to trip over.
            let _ = self.delete_task(task).await;
            return Err(RuntimeError::new(e.reason, e.message));
        }
        self.set_run(task, created.pid).await;
        let start = StartRequest {
            container_id: task.to_string(),
            exec_id: String::new(),
        };
        if let Err(s) = self.cd.tasks().start(self.cd.request(start)).await {
            let _ = self.delete_task(task).await;
            return Err(cd_err(Reason::StartFailed, "start task")(s));
        }
        if let Some(n) = &self.cfg.network {
            n.set_owner(task, created.pid)
                .await
                .map_err(|e| RuntimeError::new(e.reason, e.message))?;
        }
        tracing::info!(%task, pid = created.pid, "container started");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.update_labels(task, &[(LABEL_STARTED, now.to_string())])
            .await?;
        Ok(created.pid)
    }

    async fn signal(&self, task: &str, kill: bool) -> Result<(), RuntimeError> {
        let req = KillRequest {
            container_id: task.to_string(),
            exec_id: String::new(),
            signal: if kill {
                rustix::process::Signal::KILL.as_raw() as u32
            } else {
                rustix::process::Signal::TERM.as_raw() as u32
            },
            all: kill,
        };
        match self.cd.tasks().kill(self.cd.request(req)).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(cd_err(Reason::StopFailed, "kill task")(s)),
        }
    }

    async fn delete_task(&self, task: &str) -> Result<(), RuntimeError> {
        self.delete_process(task).await?;
        tracing::debug!(%task, "process deleted");
        // The namespace goes with the process: a stopped task holds no IP or host port.
        if let Some(n) = &self.cfg.network {
            n.teardown(task).await;
            tracing::debug!(%task, "network torn down");
        }
        Ok(())
    }

    async fn delete(&self, task: &str) -> Result<(), RuntimeError> {
        self.delete_task(task).await?;
        self.remove_container(task).await?;
        tracing::debug!(%task, "container removed");
        if let Some(n) = &self.cfg.network {
            n.forget(task).await;
        }
        if let Some(cap) = self.captures.lock().await.remove(task) {
            cap.finish().await;
        }
        tracing::debug!(%task, "output capture finished");
        logs::remove(&self.paths(task), false);
        if let Some(s) = &self.cfg.secrets {
            s.remove(task);
        }
        Ok(())
    }

    async fn set_restart_count(&self, task: &str, count: u32) -> Result<(), RuntimeError> {
        self.update_labels(task, &[(LABEL_RESTARTS, count.to_string())])
            .await
    }

    fn exits(&self) -> broadcast::Receiver<String> {
        self.exits.subscribe()
    }

    fn set_subnet(&self, subnet: &str) {
        if let Some(n) = &self.cfg.network {
            n.set_subnet(subnet);
        }
    }

    fn subnet(&self) -> Option<String> {
        self.cfg.network.as_ref().and_then(|n| n.subnet())
    }

    async fn sync_volumes(&self, desired: &Desired) -> Result<(), RuntimeError> {
        Volumes::new(&self.cfg.data_dir)
            .sync_templates(desired)
            .map_err(|e| RuntimeError::new(Reason::VolumeFailed, e))
    }

    async fn probe(
        &self,
        task: &str,
        check: &crate::decide::probe::Check,
        timeout: Duration,
    ) -> crate::decide::probe::Outcome {
        use crate::decide::probe::{Check, Outcome};
        let addr = |host: Option<std::net::IpAddr>, port: u16| {
            let ip = host.or_else(|| {
                self.cfg
                    .network
                    .as_ref()
                    .and_then(|n| n.ip(task))
                    .and_then(|ip| ip.parse().ok())
            });
            // A task without an address of its own shares the node's network.
            std::net::SocketAddr::new(ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()), port)
        };
        match check {
            Check::Exec(args) => {
                let dir = self.cfg.data_dir.join("exec");
                match super::exec_once::run(&self.cd, &dir, task, args, timeout).await {
                    Ok(r) if r.exit_code == 0 => Outcome::Pass,
                    Ok(r) => {
                        Outcome::Fail(format!("exit code {}: {}", r.exit_code, r.output.trim()))
                    }
                    Err(e) => Outcome::Fail(e),
                }
            }
            Check::Http {
                host,
                port,
                path,
                headers,
            } => super::probe::http(addr(*host, *port), path, headers, timeout).await,
            Check::Tcp { host, port } => super::probe::tcp(addr(*host, *port), timeout).await,
        }
    }

    async fn purge_volume(&self, name: &str) -> Result<(), RuntimeError> {
        Volumes::new(&self.cfg.data_dir).purge(name).map_err(|e| {
            RuntimeError::new(Reason::VolumeFailed, format!("purge volume {name}: {e}"))
        })
    }

    fn volumes(
        &self,
        in_use: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Vec<voiyd_messages::v1::NodeVolume> {
        Volumes::new(&self.cfg.data_dir).report(in_use, &self.sizes)
    }
}

impl ContainerdRuntime {
    /// Deletes the task's process (killing it if needed), keeping the container.
    async fn delete_process(&self, task: &str) -> Result<(), RuntimeError> {
        let req = DeleteTaskRequest {
            container_id: task.to_string(),
        };
        match self.cd.tasks().delete(self.cd.request(req.clone())).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            // containerd says "cannot delete a running process" with code Unknown when
            // the shim answers late.
            Err(s)
                if s.code() == Code::FailedPrecondition
                    || s.message().contains("running process") =>
            {
                // Still running or only created: kill it, then delete.
                self.signal(task, true).await?;
                for _ in 0..50 {
                    match self.cd.tasks().delete(self.cd.request(req.clone())).await {
                        Ok(_) => return Ok(()),
                        Err(s) if s.code() == Code::NotFound => return Ok(()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                Err(RuntimeError::new(
                    Reason::DeleteFailed,
                    format!("task {task} did not exit after SIGKILL"),
                ))
            }
            Err(s) => Err(cd_err(Reason::DeleteFailed, "delete task")(s)),
        }
    }
}

/// The log directory of a task under a data directory.
pub fn log_dir(data_dir: &Path, task: &str) -> PathBuf {
    TaskPaths::new(data_dir, task).log_dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_whose_state_containerd_could_not_read_is_taken_to_run() {
        let c = Container {
            id: "web".into(),
            ..Default::default()
        };
        let p = |status: ProcStatus, pid: u32| Process {
            status: status as i32,
            pid,
            ..Default::default()
        };
        let state = |p: Option<&Process>| ContainerdRuntime::view(&c, p).state;
        assert!(state(Some(&p(ProcStatus::Unknown, 42))).is_running());
        assert!(state(Some(&p(ProcStatus::Running, 42))).is_running());
        assert!(matches!(
            state(Some(&p(ProcStatus::Unknown, 0))),
            ContainerState::Created
        ));
        assert!(matches!(
            state(Some(&p(ProcStatus::Created, 42))),
            ContainerState::Created
        ));
        assert!(matches!(state(None), ContainerState::Created));
    }
}
