//! Task networking through CNI: each task gets its own network namespace (a named netns,
//! `/run/netns/<bridge>:<task>`) on the node's bridge, with host-local IPAM on the subnet
//! the server allocated to this node, outbound NAT, published ports and forwarding rules.
//!
//! Plugins run by exec (`CNI_*` environment, netconf on stdin). What a set-up did is kept
//! in the data directory (`network/tasks/<task>.json`, written before the first plugin
//! runs), so a tear-down after a crash or an agent restart can undo it: DEL runs with the
//! same config, port mappings and the saved result. Everything is idempotent.

pub mod command;
pub mod conf;

use conf::HostPort;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::PortMapping;

/// Plugin directories searched when none is given: Debian's, then the upstream default.
pub const DEFAULT_BIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];
/// Where named network namespaces live (as `ip netns` keeps them).
pub const NETNS_DIR: &str = "/run/netns";

/// How the node's task network is set up.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Directories searched for CNI plugin binaries, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Where the node writes the conflist it uses (for people and tools to read).
    pub conf_dir: PathBuf,
    /// Name of the node's bridge; also the prefix of its netns names and CNI container ids.
    pub bridge: String,
    /// State directory: per-task set-ups, IPAM data, hosts and resolv.conf files.
    pub state_dir: PathBuf,
    /// The node serves cluster DNS on the bridge's gateway address: tasks' resolv.conf
    /// points there.
    pub cluster_dns: bool,
}

/// A failed network step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NetError {
    /// `NetworkUnavailable`, `NetworkFailed` or `PortConflict`.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

impl NetError {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        NetError {
            reason,
            message: message.into(),
        }
    }
}

fn failed(message: impl Into<String>) -> NetError {
    NetError::new(Reason::NetworkFailed, message)
}

/// What one task's set-up did: enough to undo it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskNet {
    netns: String,
    container_id: String,
    conflist: Value,
    ports: Value,
    host_ports: Vec<HostPort>,
    result: Option<Value>,
    /// The process that owns the network, once started.
    #[serde(default)]
    pid: Option<u32>,
}

/// The node's task network.
#[derive(Debug)]
pub struct Network {
    cfg: NetworkConfig,
    subnet: RwLock<Option<String>>,
    /// Tells [`Network::wait_subnet`] the subnet is known.
    subnet_known: tokio::sync::watch::Sender<bool>,
    /// Cluster DNS is on and its server could listen (tasks' resolv.conf names it).
    cluster_dns: std::sync::atomic::AtomicBool,
    lock: tokio::sync::Mutex<()>,
    /// Set-ups whose plugins are running in the background, by task ([`Network::begin`]).
    pending: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<Result<String, NetError>>>>,
}

/// The cluster's DNS domain (`web.voiyd`), which tasks search first.
pub const CLUSTER_DOMAIN: &str = "voiyd";

/// The gateway address of a container subnet: its first address, which the bridge
/// takes, and where the node answers its tasks' DNS queries.
pub fn gateway(subnet: &str) -> Option<std::net::Ipv4Addr> {
    let (net, len) = subnet.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 30)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some(std::net::Ipv4Addr::from((u32::from(net) & mask) + 1))
}

impl Network {
    /// A network manager; tasks can be set up once [`Network::set_subnet`] was called.
    pub fn new(cfg: NetworkConfig) -> Self {
        let cluster_dns = cfg.cluster_dns;
        Network {
            cfg,
            subnet: RwLock::new(None),
            subnet_known: tokio::sync::watch::channel(false).0,
            cluster_dns: std::sync::atomic::AtomicBool::new(cluster_dns),
            lock: tokio::sync::Mutex::new(()),
            pending: Default::default(),
        }
    }

    /// The subnet the server allocated to this node.
    pub fn set_subnet(&self, subnet: &str) {
        let mut cur = self.subnet.write().expect("subnet lock");
        if cur.as_deref() != Some(subnet) {
            tracing::info!(%subnet, bridge = %self.cfg.bridge, "container subnet");
            *cur = Some(subnet.to_string());
            let list = conf::conflist(&self.cfg.bridge, subnet, &self.ipam_dir());
            let _ = std::fs::create_dir_all(&self.cfg.conf_dir);
            let path = self
                .cfg
                .conf_dir
                .join(format!("{}.conflist", self.cfg.bridge));
            if let Err(e) = std::fs::write(&path, format!("{list:#}\n")) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the conflist");
            }
            self.subnet_known.send_replace(true);
        }
    }

    /// The node's bridge.
    pub fn bridge(&self) -> &str {
        &self.cfg.bridge
    }

    /// The subnet, once known.
    pub fn subnet(&self) -> Option<String> {
        self.subnet.read().expect("subnet lock").clone()
    }

    /// Gives tasks planned from now on the host's resolvers instead of the node's (its
    /// DNS server could not listen).
    pub fn no_cluster_dns(&self) {
        self.cluster_dns
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until the subnet is known (at once if it is), and returns it.
    pub async fn wait_subnet(&self) -> String {
        let mut known = self.subnet_known.subscribe();
        loop {
            if let Some(s) = self.subnet() {
                return s;
            }
            if known.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn ipam_dir(&self) -> String {
        self.cfg
            .state_dir
            .join("ipam")
            .to_string_lossy()
            .into_owned()
    }

    /// The CNI container id of a task (also in the iptables comments CNI writes).
    fn id(&self, task: &str) -> String {
        format!("{}-{task}", self.cfg.bridge)
    }

    /// Name of the task's network namespace: `<bridge>:<task>`. Interface names cannot
    /// contain `:`, so the prefix tells apart the namespaces of nodes whose bridge names
    /// share a prefix.
    pub fn netns_name(&self, task: &str) -> String {
        format!("{}:{task}", self.cfg.bridge)
    }

    /// Path of the task's network namespace (it exists while the task runs).
    pub fn netns_path(&self, task: &str) -> String {
        format!("{NETNS_DIR}/{}", self.netns_name(task))
    }

    fn state_path(&self, task: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("tasks")
            .join(format!("{task}.json"))
    }

    fn plan_path(&self, task: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("plans")
            .join(format!("{task}.json"))
    }

    fn files_dir(&self, task: &str) -> PathBuf {
        self.cfg.state_dir.join("files").join(task)
    }

    /// Host files bind-mounted as the task's `/etc/hosts` and `/etc/resolv.conf`.
    pub fn file_paths(&self, task: &str) -> (PathBuf, PathBuf) {
        let d = self.files_dir(task);
        (d.join("hosts"), d.join("resolv.conf"))
    }

    /// Records the task's port mappings and writes its hosts and resolv.conf files, for a
    /// container about to be created. The network itself is set up at each start.
    /// `hostname` names the task in its hosts file; `dns` overrides the node's resolver
    /// settings.
    pub fn plan(
        &self,
        task: &str,
        ports: &[PortMapping],
        hostname: &str,
        dns: Option<&voiyd_messages::v1::Dns>,
    ) -> Result<(), NetError> {
        let io = |what: &str, e: std::io::Error| failed(format!("{what}: {e}"));
        let plan = serde_json::to_vec(ports.iter().map(port_json).collect::<Vec<_>>().as_slice())
            .map_err(|e| failed(e.to_string()))?;
        write_file(&self.plan_path(task), &plan).map_err(|e| io("port plan", e))?;
        let (hosts, resolv) = self.file_paths(task);
        // Kept for set-up, which writes the hosts file again with the address.
        write_in_place(&self.files_dir(task).join("hostname"), hostname.as_bytes())
            .map_err(|e| io("hostname", e))?;
        write_in_place(&hosts, conf::hosts_file(hostname, None).as_bytes())
            .map_err(|e| io("hosts file", e))?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let cluster = self
            .cluster_dns
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self.subnet())
            .flatten()
            .and_then(|s| gateway(&s));
        write_in_place(
            &resolv,
            conf::resolv_file(&host_resolv, dns, cluster).as_bytes(),
        )
        .map_err(|e| io("resolv.conf", e))?;
        Ok(())
    }

    /// Whether the task's container was created for this network (not host networking).
    pub fn has_plan(&self, task: &str) -> bool {
        self.plan_path(task).exists()
    }

    fn planned_ports(&self, task: &str) -> Vec<PortMapping> {
        std::fs::read(self.plan_path(task))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok())
            .map(|v| v.iter().filter_map(port_from_json).collect())
            .unwrap_or_default()
    }

    /// Sets the task's network up (replacing what an earlier run left) and returns its IP:
    /// [`Network::begin`] then [`Network::finish`].
    pub async fn setup(self: &Arc<Self>, task: &str) -> Result<String, NetError> {
        self.begin(task).await?;
        self.finish(task).await
    }

    /// Starts setting the task's network up: replaces what an earlier run left, checks
    /// its host ports and makes its namespace (so a container can be created to join it)
    /// before returning; the CNI plugins then run in the background while the caller
    /// creates the container and its task, and [`Network::finish`] waits for them. The
    /// plugins are most of a start's cost (four executions), which this takes off the
    /// critical path. Nothing happens when a set-up was begun already.
    ///
    /// One task's steps are serialized by its agent worker; the lock only makes the
    /// host-port check and the reservation that follows (the saved state) atomic across
    /// tasks, so set-ups of different tasks run in parallel.
    pub async fn begin(self: &Arc<Self>, task: &str) -> Result<(), NetError> {
        if self
            .pending
            .lock()
            .expect("pending lock")
            .contains_key(task)
        {
            return Ok(());
        }
        self.teardown_inner(task).await;
        let Some(subnet) = self.subnet() else {
            return Err(NetError::new(
                Reason::NetworkUnavailable,
                "this node has no container subnet yet: waiting for voiyd-server to allocate one",
            ));
        };
        let ports = self.planned_ports(task);
        let wanted = conf::host_ports(&ports);
        let state = TaskNet {
            netns: self.netns_name(task),
            container_id: self.id(task),
            conflist: conf::conflist(&self.cfg.bridge, &subnet, &self.ipam_dir()),
            ports: conf::port_mappings(&ports),
            host_ports: wanted,
            result: None,
            pid: None,
        };
        {
            let _guard = self.lock.lock().await;
            self.check_ports(task, &state.host_ports)?;
            ip_netns(&["add", &self.netns_name(task)]).await?;
            // Saved before any plugin runs: a crash in between still leaves enough to undo.
            self.save(task, &state)?;
        }
        let (this, name) = (self.clone(), task.to_string());
        let plugins = tokio::spawn(async move { this.run_plugins(&name, state).await });
        self.pending
            .lock()
            .expect("pending lock")
            .insert(task.to_string(), plugins);
        Ok(())
    }

    /// Waits for the set-up [`Network::begin`] started (starting one if none was) and
    /// returns the task's IP.
    pub async fn finish(self: &Arc<Self>, task: &str) -> Result<String, NetError> {
        let pending = self.pending.lock().expect("pending lock").remove(task);
        match pending {
            Some(plugins) => plugins
                .await
                .map_err(|e| failed(format!("network set-up stopped: {e}")))?,
            None => Box::pin(self.setup(task)).await,
        }
    }

    /// The CNI chain of a begun set-up, then the hosts file with the address.
    async fn run_plugins(&self, task: &str, mut state: TaskNet) -> Result<String, NetError> {
        let (id, netns) = (state.container_id.clone(), self.netns_path(task));
        self.exec("ADD", &id, &netns, &conf::loopback()).await?;
        let mut prev: Option<Value> = None;
        let count = state.conflist["plugins"].as_array().map_or(0, |p| p.len());
        for i in 0..count {
            let nc = conf::plugin_netconf(&state.conflist, i, prev.as_ref(), &state.ports);
            let out = self.exec("ADD", &id, &netns, &nc).await?;
            prev = Some(out);
            state.result = prev.clone();
            self.save(task, &state)?;
        }
        let ip = prev
            .as_ref()
            .and_then(conf::result_ip)
            .ok_or_else(|| failed("the CNI result has no IPv4 address"))?;
        let (hosts, _) = self.file_paths(task);
        let hostname = std::fs::read_to_string(self.files_dir(task).join("hostname"))
            .unwrap_or_else(|_| task.to_string());
        write_in_place(&hosts, conf::hosts_file(&hostname, Some(&ip)).as_bytes())
            .map_err(|e| failed(format!("hosts file: {e}")))?;
        tracing::debug!(%task, %ip, "network ready");
        Ok(ip)
    }

    fn check_ports(&self, task: &str, wanted: &[HostPort]) -> Result<(), NetError> {
        let taken: Vec<(String, HostPort)> = self
            .saved()
            .into_iter()
            .filter(|(t, _)| t != task)
            .flat_map(|(t, s)| s.host_ports.into_iter().map(move |p| (t.clone(), p)))
            .collect();
        if let Some((p, other)) = conf::first_clash(wanted, &taken) {
            return Err(NetError::new(Reason::PortConflict,
                format!(
                    "host port {} is already published by task {other} on this node: choose another host port",
                    conf::show_port(p)
                ),
            ));
        }
        for p in wanted {
            if port_in_use(p) {
                return Err(NetError::new(Reason::PortConflict,
                    format!(
                        "host port {} is in use by a process on this node: choose another host port",
                        conf::show_port(p)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn save(&self, task: &str, state: &TaskNet) -> Result<(), NetError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| failed(e.to_string()))?;
        write_file(&self.state_path(task), &bytes)
            .map_err(|e| failed(format!("cannot save network state: {e}")))
    }

    fn load(&self, task: &str) -> Option<TaskNet> {
        let bytes = std::fs::read(self.state_path(task)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every saved set-up: (task, state).
    fn saved(&self) -> Vec<(String, TaskNet)> {
        let Ok(dir) = std::fs::read_dir(self.cfg.state_dir.join("tasks")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let task = name.strip_suffix(".json")?.to_string();
                let s = self.load(&task)?;
                Some((task, s))
            })
            .collect()
    }

    /// The task's IP while its network is set up.
    pub fn ip(&self, task: &str) -> Option<String> {
        self.load(task)?.result.as_ref().and_then(conf::result_ip)
    }

    /// Records the process that owns the task's network.
    pub async fn set_owner(&self, task: &str, pid: u32) -> Result<(), NetError> {
        let _guard = self.lock.lock().await;
        match self.load(task) {
            Some(mut s) => {
                s.pid = Some(pid);
                self.save(task, &s)
            }
            None => Ok(()),
        }
    }

    /// Releases the network of a process that exited (a stopped task holds no IP or host
    /// port). Only the owner's exit counts: a newer set-up for a new process is kept.
    pub async fn release_exited(&self, task: &str, pid: u32) {
        let owned = {
            let _guard = self.lock.lock().await;
            self.load(task).is_some_and(|s| s.pid == Some(pid))
        };
        if owned {
            tracing::debug!(%task, pid, "process exited: releasing its network");
            self.teardown(task).await;
        }
    }

    /// Undoes the task's network set-up, if any.
    pub async fn teardown(&self, task: &str) {
        self.teardown_inner(task).await;
    }

    /// Tears down and forgets everything of the task (its container is gone).
    pub async fn forget(&self, task: &str) {
        self.teardown(task).await;
        let _ = std::fs::remove_file(self.plan_path(task));
        let _ = std::fs::remove_dir_all(self.files_dir(task));
    }

    async fn teardown_inner(&self, task: &str) {
        // A set-up still running finishes first: its plugins and these must not cross.
        let pending = self.pending.lock().expect("pending lock").remove(task);
        if let Some(plugins) = pending {
            tracing::debug!(%task, "waiting for a set-up still running before the tear-down");
            let _ = plugins.await;
        }
        let netns = self.netns_path(task);
        if let Some(state) = self.load(task) {
            let count = state.conflist["plugins"].as_array().map_or(0, |p| p.len());
            for i in (0..count).rev() {
                tracing::debug!(%task, plugin = i, "CNI DEL");
                let nc =
                    conf::plugin_netconf(&state.conflist, i, state.result.as_ref(), &state.ports);
                if let Err(e) = self.exec("DEL", &state.container_id, &netns, &nc).await {
                    tracing::warn!(%task, error = %e, "CNI DEL failed");
                }
            }
        }
        if Path::new(&netns).exists() {
            if let Err(e) = ip_netns(&["delete", &self.netns_name(task)]).await {
                tracing::warn!(%task, error = %e, "cannot delete the network namespace");
            }
        }
        let _ = std::fs::remove_file(self.state_path(task));
    }

    /// Tears down every set-up (and namespace of this bridge) that no task in `keep` owns:
    /// what a crashed or restarted agent left behind.
    pub async fn gc(&self, keep: &HashSet<String>) {
        for (task, _) in self.saved() {
            if !keep.contains(&task) {
                tracing::info!(%task, "removing a leftover task network");
                self.teardown(&task).await;
            }
        }
        let prefix = format!("{}:", self.cfg.bridge);
        if let Ok(dir) = std::fs::read_dir(NETNS_DIR) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(task) = name.strip_prefix(&prefix) {
                    if !keep.contains(task) {
                        tracing::info!(%task, "removing a leftover network namespace");
                        self.teardown(task).await;
                    }
                }
            }
        }
    }

    fn plugin(&self, name: &str) -> Result<PathBuf, NetError> {
        self.cfg
            .bin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                NetError::new(Reason::NetworkUnavailable,
                    format!(
                        "CNI plugin `{name}` not found in {}: install containernetworking-plugins or pass --cni-bin-dir",
                        self.cfg
                            .bin_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    async fn exec(
        &self,
        command: &str,
        id: &str,
        netns: &str,
        netconf: &Value,
    ) -> Result<Value, NetError> {
        use tokio::io::AsyncWriteExt;
        let kind = netconf["type"].as_str().unwrap_or_default().to_string();
        let bin = self.plugin(&kind)?;
        let cni_path =
            std::env::join_paths(&self.cfg.bin_dirs).map_err(|e| failed(e.to_string()))?;
        let mut child = tokio::process::Command::new(&bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", conf::IFNAME)
            .env("CNI_PATH", cni_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", bin.display())))?;
        let input = serde_json::to_vec(netconf).map_err(|e| failed(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .await
                .map_err(|e| failed(format!("{kind}: {e}")))?;
        }
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
                .await
                .map_err(|_| failed(format!("CNI plugin {kind} {command} took over 60s")))?
                .map_err(|e| failed(format!("{kind}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let msg = conf::error_message(&stdout).unwrap_or_else(|| {
                format!(
                    "{}{}",
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
            return Err(failed(format!("CNI {kind} {command}: {msg}")));
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout)
            .map_err(|e| failed(format!("CNI {kind} {command}: unreadable result: {e}")))
    }
}

fn port_json(p: &PortMapping) -> Value {
    serde_json::json!({
        "hostPort": p.host_port,
        "targetPort": p.target_port,
        "protocol": p.protocol,
        "hostIP": p.host_ip,
    })
}

fn port_from_json(v: &Value) -> Option<PortMapping> {
    Some(PortMapping {
        host_port: v["hostPort"].as_u64()? as u32,
        target_port: v["targetPort"].as_u64()? as u32,
        protocol: v["protocol"].as_str().unwrap_or_default().to_string(),
        host_ip: v["hostIP"].as_str().unwrap_or_default().to_string(),
        ..Default::default()
    })
}

/// Whether a process on the node holds the port (traffic DNAT'ed by portmap would be
/// taken from it).
fn port_in_use(p: &HostPort) -> bool {
    let ip = if p.0.is_empty() {
        "0.0.0.0"
    } else {
        p.0.as_str()
    };
    let Ok(port) = u16::try_from(p.1) else {
        return false;
    };
    let in_use = |e: std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    match p.2.as_str() {
        "udp" => std::net::UdpSocket::bind((ip, port))
            .err()
            .is_some_and(in_use),
        _ => std::net::TcpListener::bind((ip, port))
            .err()
            .is_some_and(in_use),
    }
}

async fn ip_netns(args: &[&str]) -> Result<(), NetError> {
    let out = tokio::process::Command::new("ip")
        .arg("netns")
        .args(args)
        .output()
        .await
        .map_err(|e| failed(format!("cannot run `ip netns`: {e}: install iproute2")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Adding an existing namespace or deleting a missing one is what we wanted anyway.
        if err.contains("File exists") || err.contains("No such file") {
            return Ok(());
        }
        return Err(failed(format!(
            "ip netns {}: {}",
            args.join(" "),
            err.trim()
        )));
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Rewrites a file keeping its inode: a running container that bind-mounted it sees the
/// new content (a rename would leave it on the old file).
pub fn write_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::read(path).is_ok_and(|cur| cur == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes)
}
