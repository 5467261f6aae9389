//! The scheduler's in-memory view of the cluster: every node (labels, cordon, phase,
//! capacity) and every task (requests, host ports, node), kept current by three KV
//! watches (`voiyd_nodes`, `voiyd_tasks`, `voiyd_status`). Placement reads it instead of
//! listing every node for every task.
//!
//! The view is a cache, never the record: the record of placement is the task status
//! written with CAS. A placement this server is about to write is *reserved* in the view
//! first (so the next decision already counts it), and released if the CAS loses; the
//! watch then brings in whatever the winner wrote.

use crate::schedule::placement::{self, Candidate, Demand, Strategy, Unplaceable};
use async_nats::jetstream::kv;
use futures::StreamExt;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use voiyd_messages::requests::{host_ports, Requests};
use voiyd_messages::v1::{Node, NodeStatus, Task, TaskStatus, Volume, VolumeStatus};
use voiyd_messages::Timestamp;
use voiyd_nats::names;
use voiyd_nats::watch::{WatchEvent, Watcher};

/// Task label that chooses the placement strategy for one task (`spread` or
/// `binpack`); container sets set it from their `placement`.
pub const PLACEMENT_LABEL: &str = voiyd_messages::labels::PLACEMENT;
/// A label every node has in placement, its name: `nodeSelector: {voiyd.io/node: n1}`
/// pins a task to node n1 (global sets pin each of their tasks so).
pub const NODE_NAME_LABEL: &str = voiyd_messages::labels::NODE;

/// One node in the view.
#[derive(Debug, Clone, Default)]
pub struct NodeEntry {
    /// What placement needs.
    pub candidate: Candidate,
    /// The node record exists (a status alone, of a deleted node, is not a candidate).
    pub registered: bool,
    /// Phase from its status: Ready, NotReady, or empty before the first heartbeat.
    pub phase: String,
    /// Last heartbeat the status records.
    pub last_heartbeat: Option<Timestamp>,
}

/// One task in the view.
#[derive(Debug, Clone, Default)]
pub struct TaskEntry {
    /// The spec is known (the task exists).
    pub exists: bool,
    /// uid of the spec.
    pub uid: String,
    /// The node it is on: from its status, or reserved by this server.
    pub node: Option<String>,
    /// `node` is this server's reservation, not yet seen in the status.
    pub reserved: bool,
    /// Labels of the task.
    pub labels: BTreeMap<String, String>,
    /// What it needs from a node.
    pub demand: Demand,
    /// The newest status seen and its revision: a status report is folded in with CAS
    /// on this revision, without reading the status first (a stale one costs a retry).
    pub status: Option<(TaskStatus, u64)>,
    /// When this server last saw the status change while the task is on its way to
    /// running (Scheduled, Pulling, Starting); `None` in any other phase.
    pub waiting_since: Option<std::time::Instant>,
    /// When this server first saw the spec.
    pub spec_seen_at: Option<std::time::Instant>,
    /// What is charged to `charged_to`.
    charged: Option<Charge>,
}

impl TaskEntry {
    /// Phase of its status ("" without one).
    pub fn phase(&self) -> &str {
        self.status.as_ref().map_or("", |(s, _)| s.phase.as_str())
    }

    /// Message of its status (the explanation while Pending).
    pub fn message(&self) -> &str {
        self.status.as_ref().map_or("", |(s, _)| s.message.as_str())
    }

    /// Since when it has been Running (its Ready condition's transition time).
    pub fn ready_since(&self) -> Option<Timestamp> {
        let (s, _) = self.status.as_ref()?;
        if s.phase != voiyd_messages::phase::TaskPhase::Running {
            return None;
        }
        s.conditions
            .iter()
            .find(|c| {
                c.r#type == voiyd_messages::condition::ConditionType::Ready
                    && c.status == voiyd_messages::condition::status(true)
            })
            .and_then(|c| c.last_transition_time)
    }
}

/// Where a task would be, in a [`View::preview`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The task.
    pub task: String,
    /// The node it is on now, if any.
    pub current: Option<String>,
    /// The node it would be on; `None`: it would wait (Pending).
    pub node: Option<String>,
    /// Why it would wait, or why it would move; empty otherwise.
    pub why: String,
}

/// What a task is charged to a node: (node, requests, host ports).
type Charge = (String, Requests, Vec<(u32, String)>);

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeEntry>,
    /// Each node's newest status with its revision (heartbeats write with CAS on it);
    /// apart from [`NodeEntry`], which is copied out whole every upkeep tick.
    node_statuses: HashMap<String, (NodeStatus, u64)>,
    tasks: HashMap<String, TaskEntry>,
    default_strategy: Strategy,
    /// Where the next bounded placement search starts (an index into `nodes`' order),
    /// so successive decisions look at different nodes.
    next_start: usize,
    /// Bumped when something a pending task could be waiting for changes: a node joins,
    /// leaves, changes labels, cordon, readiness or capacity, or capacity is freed.
    epoch: u64,
    /// The epoch and time of the last pass over the pending tasks.
    retried: Option<(u64, std::time::Instant)>,
    /// Notified when the status of a task of a set or a job changes (the workload
    /// controllers act on readiness and completions as they happen).
    workload_changed: Arc<tokio::sync::Notify>,
    /// Bumped on every change of a task's spec or status (names follow it).
    task_changes: u64,
    /// Host-local volumes and the nodes that hold their data (from their statuses).
    volume_data: HashMap<String, BTreeSet<String>>,
    /// Host-local volumes that may start empty elsewhere when their data's nodes are
    /// gone (`hostLocal: {recreate: true}`).
    recreatable: HashSet<String>,
}

impl State {
    /// A copy to try decisions on (a dry run), with its own notifier so that nothing
    /// done to it wakes the controllers.
    fn snapshot(&self) -> State {
        State {
            nodes: self.nodes.clone(),
            node_statuses: HashMap::new(),
            tasks: self.tasks.clone(),
            default_strategy: self.default_strategy,
            next_start: self.next_start,
            epoch: self.epoch,
            retried: None,
            workload_changed: Arc::default(),
            task_changes: self.task_changes,
            volume_data: self.volume_data.clone(),
            recreatable: self.recreatable.clone(),
        }
    }

    /// Chooses a node for task `name` (its spec applied) and charges it there.
    fn choose(&mut self, name: &str) -> Result<String, Unplaceable> {
        let mut demand = self
            .tasks
            .get(name)
            .map(|t| t.demand.clone())
            .unwrap_or_default();
        // Host-local data stays where it was written: the task goes there (unless the
        // volume may be recreated and none of those nodes is Ready).
        demand.data_on = demand
            .volumes
            .iter()
            .filter_map(|v| Some((v.clone(), self.volume_data.get(v)?.clone())))
            .filter(|(_, nodes)| !nodes.is_empty())
            .filter(|(v, nodes)| {
                !self.recreatable.contains(v)
                    || nodes.iter().any(|n| {
                        self.nodes
                            .get(n)
                            .is_some_and(|e| e.registered && e.candidate.ready)
                    })
            })
            .collect();
        let placed = self.choose_for(name, &demand);
        placed.map_err(|mut why| {
            why.waiting_for_data = demand.data_on.iter().find_map(|(volume, nodes)| {
                let states: Vec<(String, Option<String>)> = nodes
                    .iter()
                    .map(|n| {
                        let state = self.nodes.get(n).filter(|e| e.registered).map(|e| {
                            if e.candidate.ready {
                                "Ready".to_string()
                            } else if e.phase.is_empty() {
                                "Unknown".to_string()
                            } else {
                                e.phase.clone()
                            }
                        });
                        (n.clone(), state)
                    })
                    .collect();
                placement::waiting_for_data(volume, &states)
            });
            why
        })
    }

    /// [`State::choose`] once the demand is complete.
    fn choose_for(&mut self, name: &str, demand: &Demand) -> Result<String, Unplaceable> {
        let demand = demand.clone();
        let count = self.nodes.len();
        let start = self.next_start % count.max(1);
        // The map's order is stable while no node joins or leaves: rotating the start
        // walks the whole cluster over successive bounded searches.
        let rotated = self
            .nodes
            .values()
            .skip(start)
            .chain(self.nodes.values().take(start));
        let walked = std::cell::Cell::new(0);
        let (node, _) = placement::place_among(
            &demand,
            rotated
                .inspect(|_| walked.set(walked.get() + 1))
                .filter(|n| n.registered)
                .map(|n| &n.candidate),
            placement::enough_fitting(demand.strategy, count),
        )?;
        let chosen = node.name.clone();
        self.next_start = start + walked.get();
        if let Some(t) = self.tasks.get_mut(name) {
            t.node = Some(chosen.clone());
            t.reserved = true;
        }
        self.recharge(name);
        Ok(chosen)
    }

    /// For task `name` (its spec applied) on a node: the node and why its spec no
    /// longer fits there, or `None` (it fits, or it is on no node).
    fn misfit(&self, name: &str) -> Option<(String, placement::Misfit)> {
        let t = self.tasks.get(name)?;
        let node = t.node.clone()?;
        let demand = t.demand.clone();
        let mut c = self.nodes.get(&node)?.candidate.clone();
        // The node without this task: its requests, and the ports of the others only
        // (two tasks asking for one port leave one entry in the set).
        c.allocated = c.allocated.minus(demand.requests);
        c.tasks = c.tasks.saturating_sub(1);
        c.ports = self
            .tasks
            .iter()
            .filter(|(other, e)| *other != name && e.node.as_deref() == Some(node.as_str()))
            .flat_map(|(_, e)| e.demand.ports.iter().cloned())
            .collect();
        placement::still_fits(&demand, &c)
            .err()
            .map(|why| (node, why))
    }

    /// Moves the task's charge to where it now is.
    fn recharge(&mut self, task: &str) {
        let Some(t) = self.tasks.get_mut(task) else {
            return;
        };
        let want = if t.exists {
            t.node
                .clone()
                .map(|n| (n, t.demand.requests, t.demand.ports.clone()))
        } else {
            None
        };
        if want == t.charged {
            return;
        }
        let old = std::mem::replace(&mut t.charged, want.clone());
        if let Some((n, r, ports)) = old {
            self.epoch += 1; // capacity freed
            if let Some(e) = self.nodes.get_mut(&n) {
                let c = &mut e.candidate;
                c.allocated = c.allocated.minus(r);
                c.tasks = c.tasks.saturating_sub(1);
                for p in &ports {
                    c.ports.remove(p);
                }
            }
        }
        if let Some((n, r, ports)) = want {
            let e = self.nodes.entry(n.clone()).or_default();
            let c = &mut e.candidate;
            c.name = n;
            c.allocated = c.allocated.plus(r);
            c.tasks += 1;
            c.ports.extend(ports);
        }
    }

    /// After a change of the task: moves its charge, and forgets a task that neither
    /// exists nor sits on a node.
    fn settle(&mut self, task: &str) {
        self.task_changes += 1;
        self.recharge(task);
        if self
            .tasks
            .get(task)
            .is_some_and(|e| !e.exists && e.node.is_none())
        {
            self.tasks.remove(task);
        }
    }

    fn strategy_of(&self, labels: &BTreeMap<String, String>) -> Strategy {
        labels
            .get(PLACEMENT_LABEL)
            .map(|s| Strategy::parse(s))
            .unwrap_or(self.default_strategy)
    }

    fn apply_task_spec(&mut self, name: &str, task: Option<Task>) {
        match task {
            Some(t) => {
                let config = t.config.clone().unwrap_or_default();
                let labels: BTreeMap<String, String> = t
                    .meta
                    .as_ref()
                    .map(|m| {
                        m.labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let strategy = self.strategy_of(&labels);
                let e = self.tasks.entry(name.to_string()).or_default();
                if !e.exists || e.spec_seen_at.is_none() {
                    e.spec_seen_at = Some(std::time::Instant::now());
                }
                e.exists = true;
                e.uid = t.meta.map(|m| m.uid).unwrap_or_default();
                e.demand = Demand::of(&config, strategy);
                e.demand.ports = host_ports(&config);
                e.labels = labels;
            }
            None => {
                if let Some(e) = self.tasks.get_mut(name) {
                    e.exists = false;
                    // A set's or job's task gone: room for the next one.
                    if is_workload(&e.labels) {
                        self.workload_changed.notify_one();
                    }
                }
            }
        }
        self.settle(name);
    }

    fn apply_task_status(&mut self, name: &str, st: Option<TaskStatus>, revision: u64) {
        let e = self.tasks.entry(name.to_string()).or_default();
        match st {
            Some(s) => {
                // This server records its own writes before the watch brings them: an
                // older revision arriving afterwards changes nothing.
                if e.status.as_ref().is_some_and(|(_, r)| *r > revision) {
                    return;
                }
                e.node = (!s.node.is_empty()).then(|| s.node.clone());
                e.reserved = false;
                use voiyd_messages::phase::TaskPhase;
                let on_its_way = TaskPhase::parse(&s.phase)
                    .is_some_and(|p| p.is_active() && p != TaskPhase::Running);
                let changed = e.status.as_ref().is_none_or(|(_, r)| *r != revision);
                if !on_its_way {
                    e.waiting_since = None;
                } else if changed || e.waiting_since.is_none() {
                    e.waiting_since = Some(std::time::Instant::now());
                }
                e.status = Some((s, revision));
                if is_workload(&e.labels) {
                    self.workload_changed.notify_one();
                }
            }
            None => {
                e.status = None;
                e.waiting_since = None;
                if !e.reserved {
                    e.node = None;
                }
            }
        }
        self.settle(name);
    }

    /// Notes whether a volume may be recreated elsewhere.
    fn apply_volume_spec(&mut self, name: &str, spec: Option<Volume>) {
        let recreate = spec
            .and_then(|v| v.config?.host_local)
            .is_some_and(|h| h.recreate);
        let changed = if recreate {
            self.recreatable.insert(name.to_string())
        } else {
            self.recreatable.remove(name)
        };
        if changed {
            self.epoch += 1;
        }
    }

    /// Notes which nodes hold a host-local volume's data; a new holder can be what a
    /// waiting task needs.
    fn apply_volume_status(&mut self, name: &str, st: Option<VolumeStatus>) {
        let holders: BTreeSet<String> = st
            .map(|st| {
                st.controllers
                    .into_iter()
                    .filter(|(_, c)| c.kind == voiyd_messages::volume::HOST_LOCAL)
                    .map(|(node, _)| node)
                    .collect()
            })
            .unwrap_or_default();
        let before = if holders.is_empty() {
            self.volume_data.remove(name)
        } else {
            self.volume_data.insert(name.to_string(), holders.clone())
        };
        if before.unwrap_or_default() != holders {
            self.epoch += 1;
        }
    }

    fn apply_node_spec(&mut self, name: &str, node: Option<Node>) {
        self.epoch += 1;
        let e = self.nodes.entry(name.to_string()).or_default();
        e.candidate.name = name.to_string();
        match node {
            Some(n) => {
                e.registered = true;
                e.candidate.labels = n
                    .meta
                    .map(|m| m.labels.into_iter().collect())
                    .unwrap_or_default();
                // Every node answers to its own name, so selectors can pin a task to it.
                e.candidate
                    .labels
                    .insert(NODE_NAME_LABEL.to_string(), name.to_string());
                e.candidate.unschedulable = n.config.is_some_and(|c| c.unschedulable);
            }
            None => e.registered = false,
        }
    }

    fn apply_node_status(&mut self, name: &str, st: Option<NodeStatus>, revision: u64) {
        // This server records its own writes before the watch brings them: an older
        // revision arriving afterwards changes nothing.
        if self
            .node_statuses
            .get(name)
            .is_some_and(|(_, r)| *r > revision)
        {
            return;
        }
        match &st {
            Some(s) => self
                .node_statuses
                .insert(name.to_string(), (s.clone(), revision)),
            None => self.node_statuses.remove(name),
        };
        let e = self.nodes.entry(name.to_string()).or_default();
        e.candidate.name = name.to_string();
        let before = (e.candidate.ready, e.candidate.capacity);
        match st {
            Some(s) => {
                e.candidate.ready = s.phase == voiyd_messages::phase::NodePhase::Ready;
                e.phase = s.phase;
                e.last_heartbeat = s.last_heartbeat;
                e.candidate.capacity = s
                    .capacity
                    .map(|c| Requests {
                        cpu_millis: c.cpu_millis,
                        memory_bytes: c.memory_bytes,
                    })
                    .unwrap_or_default();
            }
            None => {
                e.candidate.ready = false;
                e.phase.clear();
                e.last_heartbeat = None;
            }
        }
        // Heartbeats rewrite the status every second: only a change placement sees counts.
        if before != (e.candidate.ready, e.candidate.capacity) {
            self.epoch += 1;
        }
    }
}

/// Whether a task belongs to a set or a job (their controllers wake on its changes).
fn is_workload(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(voiyd_messages::labels::SET)
        || labels.contains_key(voiyd_messages::labels::JOB)
}

/// The shared view; cheap to clone.
#[derive(Clone)]
pub struct View {
    state: Arc<RwLock<State>>,
    ready: watch::Receiver<bool>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("View")
    }
}

/// Which buckets the view follows.
pub struct Buckets {
    /// `voiyd_tasks`.
    pub tasks: kv::Store,
    /// `voiyd_nodes`.
    pub nodes: kv::Store,
    /// `voiyd_status`.
    pub status: kv::Store,
    /// `voiyd_volumes`.
    pub volumes: kv::Store,
}

impl View {
    /// Starts following the buckets; the view is ready once each has been read up to
    /// its state at start.
    pub fn start(buckets: Buckets, default_strategy: Strategy, link: voiyd_nats::Link) -> View {
        let state = Arc::new(RwLock::new(State {
            default_strategy,
            ..Default::default()
        }));
        let (tx, rx) = watch::channel(false);
        let caught_up = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tx = Arc::new(tx);
        for (bucket, which) in [
            (buckets.tasks, Which::Tasks),
            (buckets.nodes, Which::Nodes),
            (buckets.status, Which::Status),
            (buckets.volumes, Which::Volumes),
        ] {
            let state = state.clone();
            let caught_up = caught_up.clone();
            let tx = tx.clone();
            let link = link.clone();
            tokio::spawn(async move {
                let mut counted = false;
                let mut on_current = || {
                    if !counted {
                        counted = true;
                        if caught_up.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 4 {
                            let _ = tx.send(true);
                        }
                    }
                };
                follow(bucket, which, state, &link, &mut on_current).await
            });
        }
        View { state, ready: rx }
    }

    /// Resolves when the status of a set's or a job's task changed since the last call
    /// (or at once, if one changed before anyone waited).
    pub async fn workload_changed(&self) {
        let notify = self
            .state
            .read()
            .expect("view lock")
            .workload_changed
            .clone();
        notify.notified().await
    }

    /// An empty view that is ready at once, for tests of the pure parts.
    pub fn empty() -> View {
        let (_tx, rx) = watch::channel(true);
        View {
            state: Arc::new(RwLock::new(State::default())),
            ready: rx,
        }
    }

    /// Waits (up to `limit`) until the view has caught up with the buckets.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut rx = self.ready.clone();
        let ok = tokio::time::timeout(limit, rx.wait_for(|r| *r)).await;
        matches!(ok, Ok(Ok(_)))
    }

    /// Chooses a node for the task and reserves it there. `config` is the task's
    /// spec as the caller read it (the view may not have seen it yet).
    pub fn reserve(&self, task: &Task) -> Result<String, Unplaceable> {
        let name = voiyd_messages::Resource::name(task).to_string();
        let mut s = self.state.write().expect("view lock");
        s.apply_task_spec(&name, Some(task.clone()));
        s.choose(&name)
    }

    /// A dry run: where `tasks` (new or changed specs) would be, once the tasks named
    /// in `gone` are removed, deciding as placement would, each counting the ones
    /// before it, on a copy of the view. The view itself is untouched.
    pub fn preview(&self, gone: &[String], tasks: &[Task]) -> Vec<Preview> {
        let mut s = self.state.read().expect("view lock").snapshot();
        for name in gone {
            s.apply_task_spec(name, None);
        }
        tasks
            .iter()
            .map(|task| {
                let name = voiyd_messages::Resource::name(task).to_string();
                s.apply_task_spec(&name, Some(task.clone()));
                let current = s.tasks.get(&name).and_then(|t| t.node.clone());
                let moves_because = match s.misfit(&name) {
                    None if current.is_some() => {
                        return Preview {
                            task: name,
                            node: current.clone(),
                            current,
                            why: String::new(),
                        }
                    }
                    None => None,
                    Some((_, why)) => {
                        if let Some(t) = s.tasks.get_mut(&name) {
                            t.node = None;
                        }
                        s.recharge(&name);
                        Some(why.as_str().to_string())
                    }
                };
                let chosen = s.choose(&name);
                let why = match (&chosen, moves_because) {
                    (Err(e), _) => e.to_string(),
                    (Ok(_), Some(m)) => format!("the new spec does not fit its node ({m})"),
                    (Ok(_), None) => String::new(),
                };
                Preview {
                    task: name,
                    current,
                    node: chosen.ok(),
                    why,
                }
            })
            .collect()
    }

    /// For a task placed on a node, after a change of its spec: the node and why the new
    /// spec no longer fits there, or `None` (it fits, or it is on no node yet).
    pub fn misfit_on_its_node(&self, task: &Task) -> Option<(String, placement::Misfit)> {
        let name = voiyd_messages::Resource::name(task).to_string();
        let mut s = self.state.write().expect("view lock");
        s.apply_task_spec(&name, Some(task.clone()));
        s.misfit(&name)
    }

    /// Drops this server's reservation after a lost CAS (the watch brings the winner's).
    pub fn release(&self, task: &str, node: &str) {
        let mut s = self.state.write().expect("view lock");
        if let Some(t) = s.tasks.get_mut(task) {
            if t.reserved && t.node.as_deref() == Some(node) {
                t.node = None;
                t.reserved = false;
            }
        }
        s.recharge(task);
    }

    /// Records a status this server just wrote (the watch will confirm it).
    pub fn saw_task_status(&self, task: &str, st: &TaskStatus, revision: u64) {
        self.state
            .write()
            .expect("view lock")
            .apply_task_status(task, Some(st.clone()), revision);
    }

    /// Records a node status this server just wrote (the watch will confirm it).
    pub fn saw_node_status(&self, node: &str, st: &NodeStatus, revision: u64) {
        self.state
            .write()
            .expect("view lock")
            .apply_node_status(node, Some(st.clone()), revision);
    }

    /// The newest status of a registered node this view has seen, with its revision.
    pub fn node_status(&self, node: &str) -> Option<(NodeStatus, u64)> {
        let s = self.state.read().expect("view lock");
        if !s.nodes.get(node).is_some_and(|n| n.registered) {
            return None;
        }
        s.node_statuses.get(node).cloned()
    }

    /// The statuses of the registered nodes that joined the mesh, by name.
    pub fn mesh_members(&self) -> Vec<(String, NodeStatus)> {
        let s = self.state.read().expect("view lock");
        s.node_statuses
            .iter()
            .filter(|(_, (st, _))| st.mesh.is_some())
            .filter(|(name, _)| s.nodes.get(*name).is_some_and(|n| n.registered))
            .map(|(name, (st, _))| (name.clone(), st.clone()))
            .collect()
    }

    /// The newest status of a task this view has seen, with its revision.
    pub fn task_status(&self, task: &str) -> Option<(TaskStatus, u64)> {
        let s = self.state.read().expect("view lock");
        s.tasks.get(task).and_then(|t| t.status.clone())
    }

    /// Pending tasks worth another placement attempt: some node fits them now, or the
    /// explanation in their status is out of date. Empty when nothing placement depends
    /// on has changed since the last call, unless `every` has passed since (a safety net
    /// for what the view does not track). Tasks with the same demand are judged once
    /// per call, so a thousand identical waiting tasks cost one search.
    pub fn pending_to_retry(&self, every: std::time::Duration) -> Vec<String> {
        {
            let mut s = self.state.write().expect("view lock");
            let now = std::time::Instant::now();
            let epoch = s.epoch;
            if s.retried
                .is_some_and(|(e, at)| e == epoch && now.duration_since(at) < every)
            {
                return Vec::new();
            }
            s.retried = Some((epoch, now));
        }
        let s = self.state.read().expect("view lock");
        let mut verdicts: HashMap<String, Option<String>> = HashMap::new();
        let mut out: Vec<String> = s
            .tasks
            .iter()
            .filter(|(_, t)| t.exists && t.node.is_none())
            .filter(|(_, t)| {
                let key = format!("{:?}", t.demand);
                let why = verdicts.entry(key).or_insert_with(|| {
                    placement::place(
                        &t.demand,
                        s.nodes
                            .values()
                            .filter(|n| n.registered)
                            .map(|n| &n.candidate),
                    )
                    .err()
                    .map(|e| e.to_string())
                });
                why.as_deref() != Some(t.message())
            })
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    /// Tasks whose status places them on a node where they should be running
    /// (Scheduled, Pulling, Starting or Running), as (task, node): their work must exist.
    pub fn running_placements(&self) -> Vec<(String, String)> {
        use voiyd_messages::phase::TaskPhase;
        let s = self.state.read().expect("view lock");
        s.tasks
            .iter()
            .filter(|(_, t)| {
                t.exists
                    && !t.reserved
                    && TaskPhase::parse(t.phase()).is_some_and(TaskPhase::is_active)
            })
            .filter_map(|(name, t)| Some((name.clone(), t.node.clone()?)))
            .collect()
    }

    /// Tasks on their way to running (Scheduled, Pulling, Starting) whose status has not
    /// changed for `grace`, as (task, node). A node picks its work up at once and
    /// reports each step (a pull reports its progress), so such a task's work was
    /// probably never written or never reached the node, or its node's last report was
    /// lost with a connection.
    pub fn waiting_longer_than(&self, grace: std::time::Duration) -> Vec<(String, String)> {
        let s = self.state.read().expect("view lock");
        let mut out: Vec<(std::time::Instant, String, String)> = s
            .tasks
            .iter()
            .filter(|(_, t)| t.exists && !t.reserved)
            .filter_map(|(name, t)| {
                let since = t.waiting_since.filter(|at| at.elapsed() >= grace)?;
                Some((since, name.clone(), t.node.clone()?))
            })
            .collect();
        // Longest waiting first: repairs take a bounded number per pass, and by name
        // the same early names would be taken every pass while later ones starve.
        out.sort();
        out.into_iter()
            .map(|(_, name, node)| (name, node))
            .collect()
    }

    /// Tasks whose spec this server has seen for longer than `grace` without any status
    /// (a create whose server died, or whose placement write failed, after the spec
    /// was stored): nobody is placing them.
    pub fn without_status_longer_than(&self, grace: std::time::Duration) -> Vec<String> {
        let s = self.state.read().expect("view lock");
        let mut out: Vec<String> = s
            .tasks
            .iter()
            .filter(|(_, t)| t.exists && t.status.is_none() && !t.reserved)
            .filter(|(_, t)| t.spec_seen_at.is_some_and(|at| at.elapsed() >= grace))
            .map(|(name, _)| name.clone())
            .collect();
        out.sort();
        out
    }

    /// Where a task belongs as far as the view has seen (for the stale-work sweep).
    pub fn task_owner(&self, task: &str) -> crate::schedule::sweep::Owner {
        use crate::schedule::sweep::Owner;
        let s = self.state.read().expect("view lock");
        match s.tasks.get(task) {
            Some(t) if t.exists => match &t.node {
                Some(n) => Owner::Node(n.clone()),
                None => Owner::Nowhere,
            },
            _ => Owner::Gone,
        }
    }

    /// The uid of an existing task, if the view has its spec.
    pub fn task_uid(&self, task: &str) -> Option<String> {
        let s = self.state.read().expect("view lock");
        s.tasks
            .get(task)
            .filter(|t| t.exists && !t.uid.is_empty())
            .map(|t| t.uid.clone())
    }

    /// Whether the node record exists (as far as the view has seen).
    pub fn is_registered(&self, node: &str) -> bool {
        self.state
            .read()
            .expect("view lock")
            .nodes
            .get(node)
            .is_some_and(|n| n.registered)
    }

    /// Every node with its phase and last heartbeat.
    pub fn nodes(&self) -> Vec<NodeEntry> {
        let s = self.state.read().expect("view lock");
        let mut v: Vec<NodeEntry> = s.nodes.values().cloned().collect();
        v.sort_by(|a, b| a.candidate.name.cmp(&b.candidate.name));
        v
    }

    /// Tasks placed on `node` (by status), with their phase.
    pub fn tasks_on(&self, node: &str) -> Vec<(String, String)> {
        let s = self.state.read().expect("view lock");
        let mut v: Vec<(String, String)> = s
            .tasks
            .iter()
            .filter(|(_, t)| t.exists && !t.reserved && t.node.as_deref() == Some(node))
            .map(|(n, t)| (n.clone(), t.phase().to_string()))
            .collect();
        v.sort();
        v
    }

    /// A number that changes whenever a task's spec or status does.
    pub fn task_changes(&self) -> u64 {
        self.state.read().expect("view lock").task_changes
    }

    /// What naming needs of every existing task.
    pub fn addressables(&self) -> Vec<crate::schedule::names::Addressable> {
        let s = self.state.read().expect("view lock");
        s.tasks
            .iter()
            .filter(|(_, t)| t.exists)
            .filter_map(|(n, t)| {
                let (st, _) = t.status.as_ref()?;
                Some(crate::schedule::names::Addressable {
                    name: n.clone(),
                    set: t.labels.get(voiyd_messages::labels::SET).cloned(),
                    ip: st.ip.clone(),
                    running: st.phase == voiyd_messages::phase::TaskPhase::Running,
                    ready: t.ready_since().is_some(),
                    labels: t.labels.clone(),
                })
            })
            .collect()
    }

    /// Tasks carrying label `key`, grouped by its value.
    pub fn tasks_by_label(&self, key: &str) -> HashMap<String, Vec<(String, TaskEntry)>> {
        let s = self.state.read().expect("view lock");
        let mut out: HashMap<String, Vec<(String, TaskEntry)>> = HashMap::new();
        for (n, t) in s.tasks.iter().filter(|(_, t)| t.exists) {
            if let Some(v) = t.labels.get(key) {
                out.entry(v.clone())
                    .or_default()
                    .push((n.clone(), t.clone()));
            }
        }
        for v in out.values_mut() {
            v.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }

    /// Tasks carrying label `key=value`, with their phase and node.
    pub fn tasks_labelled(&self, key: &str, value: &str) -> Vec<(String, TaskEntry)> {
        let s = self.state.read().expect("view lock");
        let mut v: Vec<(String, TaskEntry)> = s
            .tasks
            .iter()
            .filter(|(_, t)| t.exists && t.labels.get(key).map(String::as_str) == Some(value))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[derive(Clone, Copy, Debug)]
enum Which {
    Tasks,
    Nodes,
    Status,
    Volumes,
}

impl Which {
    fn kind(self) -> &'static str {
        match self {
            Which::Tasks => "task",
            Which::Nodes => "node",
            Which::Status => "status",
            Which::Volumes => "volume",
        }
    }
}

/// Applies every change of one bucket to the view, through the one watcher
/// ([`voiyd_nats::watch`]): it re-watches after failures and after every reconnection
/// to NATS, resuming after the last revision applied. A value that does not decode
/// leaves what the view knew of its key (taking it for a delete would forget a task
/// that exists).
async fn follow(
    bucket: kv::Store,
    which: Which,
    state: Arc<RwLock<State>>,
    link: &voiyd_nats::Link,
    on_current: &mut (dyn FnMut() + Send),
) {
    let mut events = Watcher::of(bucket, ">", which.kind())
        .on_reconnect(link.clone())
        .raw();
    while let Some(event) = events.next().await {
        let (key, value, revision) = match event {
            WatchEvent::Put {
                key,
                value,
                revision,
            } => (key, Some(value), revision),
            WatchEvent::Delete { key, revision } => (key, None, revision),
            WatchEvent::Invalid { key, error, .. } => {
                tracing::warn!(?which, %key, %error, "ignoring a value that does not decode");
                continue;
            }
            WatchEvent::Current => {
                on_current();
                continue;
            }
        };
        let mut s = state.write().expect("view lock");
        if let Err(error) = apply(&mut s, which, &key, value, revision) {
            tracing::warn!(?which, %key, %error, "ignoring a value that does not decode");
        }
    }
}

fn decoded<M: Message + Default>(
    value: Option<bytes::Bytes>,
) -> Result<Option<M>, prost::DecodeError> {
    value.map(M::decode).transpose()
}

fn apply(
    s: &mut State,
    which: Which,
    key: &str,
    value: Option<bytes::Bytes>,
    revision: u64,
) -> Result<(), prost::DecodeError> {
    match which {
        Which::Tasks => s.apply_task_spec(&names::untoken(key), decoded::<Task>(value)?),
        Which::Nodes => s.apply_node_spec(&names::untoken(key), decoded::<Node>(value)?),
        Which::Volumes => s.apply_volume_spec(&names::untoken(key), decoded::<Volume>(value)?),
        Which::Status => {
            if let Some(rest) = key.strip_prefix("task.") {
                let st = decoded::<TaskStatus>(value)?;
                s.apply_task_status(&names::untoken(rest), st, revision);
            } else if let Some(rest) = key.strip_prefix("node.") {
                let st = decoded::<NodeStatus>(value)?;
                s.apply_node_status(&names::untoken(rest), st, revision);
            } else if let Some(rest) = key.strip_prefix("volume.") {
                let st = decoded::<VolumeStatus>(value)?;
                s.apply_volume_status(&names::untoken(rest), st);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::{Meta, NodeResources, TaskConfig};

    fn task(name: &str) -> Task {
        let mut t = Task::new(name, TaskConfig::image("x"));
        voiyd_messages::Resource::meta_mut(&mut t).uid = format!("uid-{name}");
        t
    }

    fn ready_node(v: &View, name: &str, cpu: u64) {
        let mut s = v.state.write().unwrap();
        s.apply_node_spec(
            name,
            Some(Node {
                meta: Some(Meta {
                    name: name.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        s.apply_node_status(
            name,
            Some(NodeStatus {
                phase: "Ready".into(),
                capacity: Some(NodeResources {
                    cpu_millis: cpu,
                    memory_bytes: 1 << 40,
                }),
                ..Default::default()
            }),
            1,
        );
    }

    #[test]
    fn a_value_that_does_not_decode_is_not_taken_for_a_delete() {
        use crate::schedule::sweep::Owner;
        let v = View::empty();
        let key = names::spec_key("t");
        let good = bytes::Bytes::from(task("t").encode_to_vec());
        apply(
            &mut v.state.write().unwrap(),
            Which::Tasks,
            &key,
            Some(good),
            1,
        )
        .unwrap();
        assert_eq!(v.task_owner("t"), Owner::Nowhere);
        let bad = bytes::Bytes::from_static(b"\xff\xff not a task");
        assert!(apply(
            &mut v.state.write().unwrap(),
            Which::Tasks,
            &key,
            Some(bad),
            2
        )
        .is_err());
        assert_eq!(v.task_owner("t"), Owner::Nowhere, "the task is still known");
        apply(&mut v.state.write().unwrap(), Which::Tasks, &key, None, 3).unwrap();
        assert_eq!(v.task_owner("t"), Owner::Gone);
    }

    #[test]
    fn reservations_count_until_released_and_status_wins() {
        let v = View::empty();
        ready_node(&v, "a", 250);
        ready_node(&v, "b", 100);
        // Spread: the first goes to the emptier node (a: 100/250 < b: 100/100).
        assert_eq!(v.reserve(&task("t1")).unwrap(), "a");
        assert_eq!(v.reserve(&task("t2")).unwrap(), "a");
        assert_eq!(v.reserve(&task("t3")).unwrap(), "b");
        let e = v.reserve(&task("t4")).unwrap_err();
        assert_eq!(e.to_string(), "0/2 nodes available: 2 insufficient cpu");
        // A lost CAS frees the room; another server's status moves the charge.
        v.release("t3", "b");
        let st = TaskStatus {
            node: "b".into(),
            phase: "Scheduled".into(),
            ..Default::default()
        };
        v.saw_task_status("t4", &st, 7);
        v.state
            .write()
            .unwrap()
            .apply_task_spec("t4", Some(task("t4")));
        assert_eq!(
            v.tasks_on("b"),
            vec![("t4".to_string(), "Scheduled".to_string())]
        );
        assert!(v.reserve(&task("t3")).is_err());
        // Deleting a task frees its node.
        v.state.write().unwrap().apply_task_spec("t4", None);
        v.state.write().unwrap().apply_task_status("t4", None, 8);
        assert_eq!(v.reserve(&task("t3")).unwrap(), "b");
        let s = v.state.read().unwrap();
        assert_eq!(s.nodes["a"].candidate.tasks, 2);
        assert_eq!(s.nodes["a"].candidate.allocated.cpu_millis, 200);
    }

    #[test]
    fn previews_decide_on_a_copy() {
        let v = View::empty();
        ready_node(&v, "a", 250);
        ready_node(&v, "b", 100);
        assert_eq!(v.reserve(&task("t1")).unwrap(), "a");
        // Two new tasks count each other; the view does not see them afterwards.
        let p = v.preview(&[], &[task("n1"), task("n2"), task("n3")]);
        let nodes: Vec<Option<&str>> = p.iter().map(|p| p.node.as_deref()).collect();
        assert_eq!(nodes, [Some("a"), Some("b"), None]);
        assert_eq!(p[2].why, "0/2 nodes available: 2 insufficient cpu");
        assert_eq!(
            v.reserve(&task("t2")).unwrap(),
            "a",
            "the preview reserved nothing"
        );
        // With t1 and t2 gone, there is room for all three.
        let gone = ["t1".to_string(), "t2".to_string()];
        let p = v.preview(&gone, &[task("n1"), task("n2"), task("n3")]);
        assert!(p.iter().all(|p| p.node.is_some()), "{p:?}");
        // An existing task stays where it fits, and moves when its new spec does not.
        let p = v.preview(&[], &[task("t1")]);
        assert_eq!(
            (p[0].current.as_deref(), p[0].node.as_deref()),
            (Some("a"), Some("a"))
        );
        let mut big = task("t1");
        big.config.as_mut().unwrap().resources = Some(voiyd_messages::v1::Resources {
            cpu: "200m".into(),
            memory: String::new(),
        });
        let p = v.preview(&[], &[big]);
        assert_eq!(p[0].node, None, "{p:?}");
        assert_eq!(
            v.state.read().unwrap().nodes["a"]
                .candidate
                .allocated
                .cpu_millis,
            200
        );
    }

    #[test]
    fn keeps_the_newest_status_for_cas() {
        let v = View::empty();
        let at = |phase: &str| TaskStatus {
            node: "a".into(),
            phase: phase.into(),
            ..Default::default()
        };
        // This server wrote revision 7; the watch then brings an older one, then a newer.
        v.saw_task_status("t", &at("Scheduled"), 7);
        v.state
            .write()
            .unwrap()
            .apply_task_status("t", Some(at("Pending")), 5);
        assert_eq!(
            v.task_status("t").map(|(s, r)| (s.phase, r)),
            Some(("Scheduled".into(), 7))
        );
        v.state
            .write()
            .unwrap()
            .apply_task_status("t", Some(at("Running")), 9);
        assert_eq!(
            v.task_status("t").map(|(s, r)| (s.phase, r)),
            Some(("Running".into(), 9))
        );
        v.state.write().unwrap().apply_task_status("t", None, 10);
        assert!(v.task_status("t").is_none());
    }

    #[test]
    fn bounded_search_still_spreads_over_a_large_cluster() {
        let v = View::empty();
        for i in 0..1_000 {
            ready_node(&v, &format!("n{i:04}"), 4_000);
        }
        for i in 0..20_000 {
            v.reserve(&task(&format!("t{i}"))).unwrap();
        }
        let s = v.state.read().unwrap();
        let counts: Vec<usize> = s.nodes.values().map(|n| n.candidate.tasks).collect();
        let (min, max) = (counts.iter().min(), counts.iter().max());
        // 20 each when spread perfectly; a bounded search may miss the emptiest node, but
        // every node gets work and none runs away.
        assert!(
            min >= Some(&18) && max <= Some(&22),
            "tasks per node: {min:?}..{max:?}"
        );
    }

    #[test]
    fn node_status_with_revision_only_for_registered_nodes() {
        let v = View::empty();
        let at = |phase: &str| NodeStatus {
            phase: phase.into(),
            ..Default::default()
        };
        // A status alone (a deleted node's record) is not offered for CAS.
        v.saw_node_status("n", &at("Deleted"), 3);
        assert!(v.node_status("n").is_none());
        ready_node(&v, "n", 1000);
        v.saw_node_status("n", &at("Ready"), 7);
        // An older revision from the watch changes nothing; a newer one wins.
        v.state
            .write()
            .unwrap()
            .apply_node_status("n", Some(at("NotReady")), 5);
        assert_eq!(
            v.node_status("n").map(|(s, r)| (s.phase, r)),
            Some(("Ready".into(), 7))
        );
        v.state.write().unwrap().apply_node_status("n", None, 9);
        assert!(v.node_status("n").is_none());
    }

    #[test]
    fn pending_tasks_are_retried_when_placement_could_change() {
        let every = std::time::Duration::from_secs(3600);
        let v = View::empty();
        ready_node(&v, "a", 200);
        assert!(v.reserve(&task("t1")).is_ok());
        assert!(v.reserve(&task("t2")).is_ok());
        // Three more wait, each already carrying the explanation placement gives.
        let why = v.reserve(&task("w1")).unwrap_err().to_string();
        for w in ["w1", "w2", "w3"] {
            let mut s = v.state.write().unwrap();
            s.apply_task_spec(w, Some(task(w)));
            let st = TaskStatus {
                phase: "Pending".into(),
                message: why.clone(),
                ..Default::default()
            };
            s.apply_task_status(w, Some(st), 1);
        }
        assert!(v.pending_to_retry(every).is_empty());
        // A heartbeat that changes nothing placement sees: still nothing to do, and
        // without even looking (the epoch did not move).
        let epoch = v.state.read().unwrap().epoch;
        let beat = NodeStatus {
            phase: "Ready".into(),
            capacity: Some(NodeResources {
                cpu_millis: 200,
                memory_bytes: 1 << 40,
            }),
            ..Default::default()
        };
        v.saw_node_status("a", &beat, 2);
        assert_eq!(v.state.read().unwrap().epoch, epoch);
        assert!(v.pending_to_retry(every).is_empty());
        // A task goes: its capacity is free, every waiting task is worth a try.
        v.state.write().unwrap().apply_task_spec("t1", None);
        assert_eq!(v.pending_to_retry(every), ["w1", "w2", "w3"]);
        // A new node with room, after a pass that found the same again.
        assert!(v.pending_to_retry(every).is_empty());
        ready_node(&v, "b", 1000);
        assert_eq!(v.pending_to_retry(every).len(), 3);
    }
}
