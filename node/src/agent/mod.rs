//! The node agent: dials out to NATS, registers through heartbeats, follows its own work
//! (messages on `voiyd.node.<node>.work`, re-reads of `voiyd_work` keys `<node>.>`),
//! admits what fits, and runs one reconcile worker per task, which drives the runtime
//! towards the assignment and reports the task's status.

pub mod sim_nodes;

use crate::decide::admission::{self, Load};
use crate::decide::phase;
use crate::decide::reconcile::{decide, Action, ContainerState, Desired, Exit, Observed};
use crate::decide::restart::backoff;
use crate::decide::work_ledger::WorkLedger;
use crate::identity::host::host_facts;
use crate::runtime::{ContainerView, Runtime, RuntimeError};
use futures::StreamExt;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use voiyd_messages::v1::{
    Assignment, NodeResources, NodeStatus, NodeStatusReport, TaskStatus, TaskStatusReport,
    WorkUpdate,
};
use voiyd_nats::connect::{connect_linked, ConnectOptions};
use voiyd_nats::names;
use voiyd_nats::store::{RawKv, TypedKv};
use voiyd_nats::watch::{WatchEvent, Watcher};
use voiyd_nats::Link;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Labels the node registers with (the agent adds `voiyd.io/os`, `arch`, `hostname`).
    pub labels: BTreeMap<String, String>,
    /// How to reach NATS.
    pub nats: ConnectOptions,
    /// Agent data directory (logs, FIFOs, volumes).
    pub data_dir: PathBuf,
    /// Heartbeat period.
    pub heartbeat_every: Duration,
    /// Full resync period (re-read all work, re-report every status).
    pub resync_every: Duration,
    /// Capacity to report instead of the host's (simulated nodes).
    pub capacity: Option<NodeResources>,
    /// Fencing: after this long without NATS the node stops the tasks that ask for it
    /// (`onDisconnect: stop`); every other task keeps running through the outage.
    pub disconnect_timeout: Duration,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// NATS could not be reached or used.
    #[error("{0}")]
    Nats(String),
    /// The runtime could not be used.
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
}

struct Worker {
    desired: watch::Sender<Option<Desired>>,
    /// What the desired task takes from the node, kept with it: admission and the
    /// heartbeat sum every worker's, which must not re-read each spec.
    load: Option<Load>,
    wake: Arc<Notify>,
    /// Report at the next wake even if nothing changed (the servers asked again).
    report_again: Arc<std::sync::atomic::AtomicBool>,
}

struct Shared<R> {
    cfg: AgentConfig,
    rt: Arc<R>,
    client: async_nats::Client,
    workers: Mutex<HashMap<String, Worker>>,
    /// Ticks every `resync_every`: each worker reconciles its task.
    resync: watch::Sender<u64>,
    /// Full rounds, which thin out as the work bucket grows ([`read_interval`]): the
    /// work is read in full and every worker reports its task again.
    round: watch::Sender<u64>,
    /// True while fenced: NATS lost for longer than the disconnect timeout.
    fenced: watch::Sender<bool>,
    /// Which work changes have been applied (orders messages against full reads).
    ledger: Mutex<WorkLedger>,
    /// The state of the NATS connection, from the client's own events.
    link: Link,
    /// What the node offers its tasks (admission and heartbeats).
    capacity: NodeResources,
    /// Status reports waiting to be sent, latest per task.
    outbox: Mutex<HashMap<String, TaskStatusReport>>,
    /// Signals [`flush_reports`].
    outbox_ready: Notify,
}

/// Runs the agent until `shutdown` resolves. Running containers are left alone on
/// shutdown: a restarted agent re-attaches to them.
pub async fn run<R: Runtime>(
    cfg: AgentConfig,
    rt: Arc<R>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let mut opts = cfg.nats.clone();
    opts.retry_on_initial_connect = true;
    opts.name = format!("voiyd-node {}", cfg.name);
    let (client, link) = connect_linked(&opts)
        .await
        .map_err(|e| AgentError::Nats(e.to_string()))?;
    let info = rt.info().await?;
    tracing::info!(node = %cfg.name, runtime = %info.name, version = %info.version, "agent connected");
    let (resync, _) = watch::channel(0u64);
    let capacity = cfg.capacity.unwrap_or_else(|| host_facts(&cfg.name).1);
    let shared = Arc::new(Shared {
        cfg,
        rt,
        client,
        workers: Mutex::new(HashMap::new()),
        resync,
        round: watch::channel(0u64).0,
        fenced: watch::channel(false).0,
        ledger: Mutex::new(WorkLedger::default()),
        link,
        capacity,
        outbox: Mutex::new(HashMap::new()),
        outbox_ready: Notify::new(),
    });

    let hb = tokio::spawn(heartbeats(shared.clone(), info));
    let work = tokio::spawn(follow_work(shared.clone()));
    let exits = tokio::spawn(forward_exits(shared.clone()));
    let ticks = tokio::spawn(resync_ticks(shared.clone()));
    let subnet = tokio::spawn(follow_subnet(shared.clone()));
    let purges = tokio::spawn(follow_purges(shared.clone()));
    let fence = tokio::spawn(fencing(shared.clone()));
    let reports = tokio::spawn(flush_reports(shared.clone()));
    shutdown.await;
    for t in [hb, work, exits, ticks, subnet, purges, fence, reports] {
        t.abort();
    }
    // Reports still queued go out with the final flush. NATS may be gone: do not hang
    // the shutdown on it.
    let last = async {
        send_queued(&shared).await;
        let _ = shared.client.flush().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), last).await;
    Ok(())
}

async fn heartbeats<R: Runtime>(s: Arc<Shared<R>>, info: crate::runtime::RuntimeInfo) {
    let (mut labels, _) = host_facts(&s.cfg.name);
    let capacity = s.capacity;
    // One per agent run: a node deleted while this run goes on is not re-registered by
    // it (servers keep the deleted session); a restarted agent joins again.
    let session = {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}-{:x}", nanos, std::process::id())
    };
    labels.extend(s.cfg.labels.clone());
    let subject = names::node::heartbeat(&s.cfg.name);
    let mut tick = tokio::time::interval(s.cfg.heartbeat_every);
    loop {
        tick.tick().await;
        let status = NodeStatus {
            hostname: labels.get("voiyd.io/hostname").cloned().unwrap_or_default(),
            runtime: info.name.clone(),
            runtime_version: info.version.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: labels.get("voiyd.io/arch").cloned().unwrap_or_default(),
            capacity: Some(capacity),
            allocated: Some(allocated(&s)),
            subnet: s.rt.subnet().unwrap_or_default(),
            volumes: s.rt.volumes(&volumes_in_use(&s)),
            session: session.clone(),
            ..Default::default()
        };
        let report = NodeStatusReport {
            node: s.cfg.name.clone(),
            labels: labels.clone(),
            status: Some(status),
        };
        if let Err(e) = s
            .client
            .publish(subject.clone(), report.encode_to_vec().into())
            .await
        {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}

/// What the node's assigned tasks request, counted as the scheduler counts them.
fn allocated<R: Runtime>(s: &Shared<R>) -> NodeResources {
    let workers = s.workers.lock().expect("workers lock");
    let sum = workers
        .values()
        .filter_map(|w| w.load.as_ref())
        .fold(voiyd_messages::requests::Requests::default(), |a, b| {
            a.plus(b.requests)
        });
    NodeResources {
        cpu_millis: sum.cpu_millis,
        memory_bytes: sum.memory_bytes,
    }
}

/// Fencing: follows the NATS connection's events; once it has been down for longer
/// than the disconnect timeout the node is fenced (workers stop their tasks, but those
/// marked `onDisconnect: keep`); on reconnect it is unfenced after re-reading its work,
/// which tells it what is still its own.
async fn fencing<R: Runtime>(s: Arc<Shared<R>>) {
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let link = s.link.state();
        let fenced = *s.fenced.borrow();
        if link.connected {
            down_since = None;
            if fenced {
                // Re-read the work before unfencing: a task moved away meanwhile must
                // not start here again, not even for a moment.
                match read_work(&s).await {
                    Ok(()) => {
                        tracing::info!("NATS is back: work re-read, unfenced");
                        s.fenced.send_replace(false);
                        wake_all(&s);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot re-read work; still fenced");
                        tokio::select! {
                            _ = s.link.changed_from(link) => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                continue;
            }
            s.link.changed_from(link).await;
        } else {
            let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
            if fenced {
                s.link.changed_from(link).await;
                continue;
            }
            tokio::select! {
                _ = s.link.changed_from(link) => {}
                _ = tokio::time::sleep_until(since + s.cfg.disconnect_timeout) => {
                    tracing::warn!(
                        after = ?s.cfg.disconnect_timeout,
                        "NATS lost: fenced, stopping the tasks with onDisconnect: stop"
                    );
                    s.fenced.send_replace(true);
                    wake_all(&s);
                }
            }
        }
    }
}

/// One full read of the node's work.
async fn read_work<R: Runtime>(s: &Arc<Shared<R>>) -> Result<(), String> {
    let js = async_nats::jetstream::new(s.client.clone());
    let kv = js
        .get_key_value(names::BUCKET_WORK)
        .await
        .map_err(|e| e.to_string())?;
    let kv = TypedKv::<Assignment>::new(kv, "work");
    full_sync(s, &kv, &names::work_filter(&s.cfg.name)).await
}

/// The desired state while fenced: stopped for a task that asks for at-most-once
/// (`onDisconnect: stop`), unchanged for every other. An outage of the control plane
/// stops nothing by default: a partitioned node's copy runs on until the partition
/// heals, and then the node's re-read of its work stops a copy that was moved.
pub fn fenced_desired(d: Option<Desired>) -> Option<Desired> {
    d.map(|mut d| {
        if d.config.on_disconnect.eq_ignore_ascii_case("stop") {
            d.config.stopped = true;
        }
        d
    })
}

async fn resync_ticks<R: Runtime>(s: Arc<Shared<R>>) {
    let mut tick = tokio::time::interval(s.cfg.resync_every);
    tick.tick().await;
    let js = async_nats::jetstream::new(s.client.clone());
    let mut work: Option<RawKv> = None;
    let mut last_round = tokio::time::Instant::now();
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        let _ = s.resync.send(n);
        if work.is_none() {
            work = js
                .get_key_value(names::BUCKET_WORK)
                .await
                .ok()
                .map(|kv| RawKv::new(kv, "work"));
        }
        // Whether a full round is due: the bucket's size now says (one stream info).
        let size = match &work {
            Some(kv) => kv.revision_and_size().await.ok().map(|(_, m)| m),
            None => None,
        };
        if size.is_some_and(|m| last_round.elapsed() >= read_interval(m, s.cfg.resync_every)) {
            last_round = tokio::time::Instant::now();
            s.round.send_modify(|r| *r += 1);
        }
    }
}

async fn forward_exits<R: Runtime>(s: Arc<Shared<R>>) {
    let mut rx = s.rt.exits();
    loop {
        match rx.recv().await {
            Ok(task) => {
                if let Some(w) = s.workers.lock().expect("workers lock").get(&task) {
                    w.wake.notify_one();
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake_all(&s),
            Err(_) => return,
        }
    }
}

fn wake_all<R: Runtime>(s: &Shared<R>) {
    for w in s.workers.lock().expect("workers lock").values() {
        w.wake.notify_one();
    }
}

/// Keeps the desired map equal to the node's work: servers send each change on the
/// node's work subject once it is stored; a full read of `voiyd_work` (at start, after
/// reconnecting and on every resync) heals anything a lost message missed.
async fn follow_work<R: Runtime>(s: Arc<Shared<R>>) {
    let js = async_nats::jetstream::new(s.client.clone());
    let filter = names::work_filter(&s.cfg.name);
    let mut round = s.round.subscribe();
    loop {
        let kv = match js.get_key_value(names::BUCKET_WORK).await {
            Ok(kv) => TypedKv::<Assignment>::new(kv, "work"),
            Err(e) => {
                tracing::info!(error = %e, "work bucket not available yet; waiting for voiyd-server");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Reconnections are counted from before the read below: one that happens while
        // it runs costs another read, never a missed change.
        let mut seen = s.link.state();
        // Subscribe before reading, so no change falls between the read and the messages.
        let mut updates = match s.client.subscribe(names::node::work(&s.cfg.name)).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to work updates");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = full_sync(&s, &kv, &filter).await {
            tracing::warn!(error = %e, "cannot read work");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // A re-read after reconnecting that failed is tried again soon, not only at
        // the next periodic resync.
        let mut retry_read: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                msg = updates.next() => match msg {
                    Some(m) => match WorkUpdate::decode(m.payload) {
                        Ok(u) => {
                            if apply_update(&s, u) && retry_read.is_none() {
                                tracing::info!("work update for a task the last read missed: reading again");
                                retry_read = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable work update ignored"),
                    },
                    None => break,
                },
                _ = round.changed() => {
                    if let Err(e) = full_sync(&s, &kv, &filter).await {
                        tracing::warn!(error = %e, "resync failed");
                    }
                }
                // Updates dropped by a subscription that fell behind: re-read.
                _ = s.link.dropped_after(seen) => {
                    seen = s.link.state();
                    tracing::warn!("work updates were dropped: reading the work again");
                    retry_read = Some(tokio::time::Instant::now());
                }
                // Updates sent while the connection was down are lost: re-read (a
                // fenced node's fencing loop re-reads before unfencing, once is enough).
                _ = s.link.reconnected_after(seen) => {
                    seen = s.link.state();
                    if *s.fenced.borrow() {
                        continue;
                    }
                    retry_read = Some(tokio::time::Instant::now());
                }
                _ = sleep_until_some(retry_read) => {
                    retry_read = None;
                    if let Err(e) = full_sync(&s, &kv, &filter).await {
                        tracing::warn!(error = %e, "re-reading work after reconnecting failed; trying again in 1 s");
                        retry_read = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    } else {
                        // Reports sent while the link was going down are lost too (core
                        // NATS): every task worker reports again now, not at the next
                        // periodic resync. This loop has just read everything itself.
                        s.round.send_modify(|n| *n += 1);
                        round.borrow_and_update();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies one work update unless a newer change of the task is already applied.
/// Applies one work update; returns whether the work must be read again in full: an
/// assignment older than the last full read for a task this node knows nothing of
/// means that read missed it (it came from a replica still catching up).
fn apply_update<R: Runtime>(s: &Arc<Shared<R>>, u: WorkUpdate) -> bool {
    if u.task.is_empty() {
        return false;
    }
    let mut ledger = s.ledger.lock().expect("ledger lock");
    if ledger.accept(&u.task, u.revision) {
        tracing::debug!(task = %u.task, revision = u.revision, "work update applied");
        let desired = u.assignment.as_ref().and_then(Desired::from_assignment);
        set_desired(s, &u.task, desired);
        return false;
    }
    match s.workers.lock().expect("workers lock").get(&u.task) {
        Some(w) => {
            // Work this node has already: a server that has not heard from the task
            // sends it again (the report may have been lost with a connection).
            w.report_again
                .store(true, std::sync::atomic::Ordering::SeqCst);
            w.wake.notify_one();
            false
        }
        None => u.assignment.is_some(),
    }
}

/// One full read of the node's work.
async fn full_sync<R: Runtime>(
    s: &Arc<Shared<R>>,
    kv: &TypedKv<Assignment>,
    filter: &str,
) -> Result<(), String> {
    // Everything up to `floor` is in the read that follows.
    let floor = kv.raw().last_revision().await.map_err(|e| e.to_string())?;
    let entries = kv.entries(filter).await.map_err(|e| e.to_string())?;
    let mut desired: HashMap<String, Option<Desired>> = HashMap::new();
    let mut found = Vec::with_capacity(entries.len());
    for (key, a, rev) in entries {
        if let Some((_, task)) = names::parse_work_key(&key) {
            desired.insert(task.clone(), Desired::from_assignment(&a));
            found.push((task, rev));
        }
    }
    // Containers this node runs but has no work for get a worker too, which removes them.
    let existing: std::collections::HashSet<String> =
        s.rt.list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|v| v.task)
            .collect();
    let mut ledger = s.ledger.lock().expect("ledger lock");
    let known: Vec<String> = s
        .workers
        .lock()
        .expect("workers lock")
        .keys()
        .cloned()
        .chain(existing.iter().cloned())
        .collect();
    let mut plan = ledger.full_read(floor, &found, known);
    // Admission goes in order: what already runs here first, then oldest work first.
    let revision: HashMap<&str, u64> = found.iter().map(|(t, r)| (t.as_str(), *r)).collect();
    plan.set.sort_by_key(|t| {
        (
            !existing.contains(t),
            revision.get(t.as_str()).copied().unwrap_or(0),
        )
    });
    tracing::debug!(floor, set = ?plan.set, clear = ?plan.clear, "work read");
    for task in plan.clear {
        set_desired(s, &task, None);
    }
    for task in plan.set {
        let d = desired.remove(&task).flatten();
        set_desired(s, &task, d);
    }
    drop(ledger);
    wake_all(s);
    Ok(())
}

/// Keys of the work bucket a node's periodic re-read may cost nats-server per second:
/// the read is a consumer filtered on the node's keys, and finding them scans the
/// subjects of the whole bucket, so with thousands of nodes a fixed period grows
/// with nodes times tasks.
const READ_BUDGET_KEYS_PER_SEC: u64 = 100;
/// Longest time between periodic re-reads.
const MAX_READ_INTERVAL: Duration = Duration::from_secs(3600);

/// Time until the next periodic full read of the work, given the bucket's size: at least
/// `min` (`--resync-every`), longer as the bucket grows. The periodic read is a safety
/// net: reconnections, dropped updates and updates naming an unknown task trigger a
/// read at once.
pub fn read_interval(bucket_messages: u64, min: Duration) -> Duration {
    let scaled = Duration::from_secs(bucket_messages / READ_BUDGET_KEYS_PER_SEC);
    scaled.clamp(min, MAX_READ_INTERVAL.max(min))
}

fn set_desired<R: Runtime>(s: &Arc<Shared<R>>, task: &str, desired: Option<Desired>) {
    let mut workers = s.workers.lock().expect("workers lock");
    let admitted = workers
        .get(task)
        .is_some_and(|w| !w.desired.is_closed() && w.desired.borrow().is_some());
    let load = desired.as_ref().map(|d| Load::of(&d.config));
    if let (Some(new), false) = (&load, admitted) {
        // New to this node: it must fit next to the tasks already here.
        let others = workers
            .iter()
            .filter(|(name, _)| name.as_str() != task)
            .filter_map(|(_, w)| w.load.as_ref());
        if let Err(why) = admission::admit(s.capacity, others, new) {
            drop(workers);
            if let Some(d) = &desired {
                reject(s, task, d, why);
            }
            return;
        }
    }
    if let Some(w) = workers.get_mut(task) {
        if !w.desired.is_closed() {
            w.load = load.clone();
            w.desired.send_if_modified(|cur| {
                let changed = *cur != desired;
                *cur = desired.clone();
                changed
            });
            return;
        }
    }
    let (tx, rx) = watch::channel(desired);
    let wake = Arc::new(Notify::new());
    let report_again = Arc::new(std::sync::atomic::AtomicBool::new(false));
    workers.insert(
        task.to_string(),
        Worker {
            desired: tx,
            load,
            wake: wake.clone(),
            report_again: report_again.clone(),
        },
    );
    tokio::spawn(task_worker(
        s.clone(),
        task.to_string(),
        rx,
        wake,
        report_again,
    ));
}

/// Tells the servers this node refuses `task`; they place it elsewhere.
fn reject<R: Runtime>(s: &Arc<Shared<R>>, task: &str, d: &Desired, why: admission::Refusal) {
    tracing::warn!(%task, reason = why.reason(), "task refused: {why}");
    let status = TaskStatus {
        phase: voiyd_messages::phase::REJECTED.into(),
        reason: why.reason().into(),
        message: why.to_string(),
        node: s.cfg.name.clone(),
        observed_generation: d.generation,
        ..Default::default()
    };
    send(s, task, &d.uid, status);
}

/// What a worker remembers about its task between passes.
#[derive(Default)]
struct Memory {
    stop_requested_at: Option<SystemTime>,
    last_exit: Option<Exit>,
    last_error: Option<RuntimeError>,
    failures: u32,
    pulling: Option<(u64, u64)>,
    last_report: Option<TaskStatus>,
    ip: Option<String>,
}

fn observed(view: Option<&ContainerView>, mem: &Memory) -> Option<Observed> {
    let v = view?;
    let last_exit = match v.state {
        ContainerState::Exited { code, at } => Some(Exit { code, at }),
        _ => mem.last_exit,
    };
    Some(Observed {
        task: v.task.clone(),
        uid: v.uid.clone(),
        generation: v.generation,
        state: v.state,
        restart_count: v.restart_count,
        last_started: v.started_at,
        last_exit,
        stop_requested_at: mem.stop_requested_at,
    })
}

async fn task_worker<R: Runtime>(
    s: Arc<Shared<R>>,
    task: String,
    mut desired_rx: watch::Receiver<Option<Desired>>,
    wake: Arc<Notify>,
    report_again: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut mem = Memory::default();
    let mut resync = s.resync.subscribe();
    let mut round = s.round.subscribe();
    let progress = Arc::new(Mutex::new(None::<(u64, u64)>));
    loop {
        let mut desired = desired_rx.borrow_and_update().clone();
        if *s.fenced.borrow() {
            desired = fenced_desired(desired);
        }
        let view = match s.rt.inspect(&task).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%task, error = %e, "cannot inspect container");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let obs = observed(view.as_ref(), &mem);
        mem.ip = view.as_ref().and_then(|v| v.ip.clone());
        if let (Some(d), Some(v)) = (desired.as_ref(), view.as_ref()) {
            // Template volumes follow their content without re-creating the container.
            if v.uid == d.uid && !d.volumes.is_empty() {
                if let Err(e) = s.rt.sync_volumes(d).await {
                    tracing::warn!(%task, error = %e, "cannot update template volumes");
                }
            }
        }
        let now = SystemTime::now();
        let decision = decide(desired.as_ref(), obs.as_ref(), now);
        let again = report_again.swap(false, std::sync::atomic::Ordering::SeqCst);
        report(&s, &task, desired.as_ref(), obs.as_ref(), &mut mem, again).await;

        if desired.is_none() && obs.is_none() {
            // Gone from this node: forget it, and its logs.
            let mut workers = s.workers.lock().expect("workers lock");
            if desired_rx.borrow().is_none() {
                workers.remove(&task);
                crate::logs::remove(&crate::logs::TaskPaths::new(&s.cfg.data_dir, &task), true);
                return;
            }
            continue;
        }

        let mut wait = decision.requeue_after;
        if !decision.actions.is_empty() {
            match execute(
                &s,
                &task,
                desired.as_ref(),
                obs.as_ref(),
                &decision.actions,
                &mut mem,
                &progress,
            )
            .await
            {
                Ok(()) => {
                    mem.last_error = None;
                    mem.failures = 0;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%task, reason = e.reason, error = %e.message, "task step failed");
                    if let (Some(d), "PullFailed") = (desired.as_ref(), e.reason) {
                        crate::containerd::events::report(
                            &s.client,
                            &s.cfg.name,
                            crate::containerd::events::RuntimeEvent {
                                task: task.clone(),
                                uid: d.uid.clone(),
                                kind: "pullfailed",
                                reason: e.reason.into(),
                                message: e.message.clone(),
                                exit_code: 0,
                            },
                        )
                        .await;
                    }
                    mem.failures = mem.failures.saturating_add(1);
                    mem.last_error = Some(e);
                    mem.pulling = None;
                    report(&s, &task, desired.as_ref(), obs.as_ref(), &mut mem, false).await;
                    wait =
                        Some(backoff(mem.failures.saturating_sub(1)).min(Duration::from_secs(60)));
                }
            }
        }
        let sleep = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            r = desired_rx.changed() => {
                if r.is_err() { return; }
                // A new spec gets fresh attempts.
                mem.last_error = None;
                mem.failures = 0;
            }
            _ = wake.notified() => {}
            _ = sleep => {}
            // A reconcile pass; its report goes only when something changed.
            _ = resync.changed() => {}
            _ = round.changed() => {
                let d = desired_rx.borrow().clone();
                report(&s, &task, d.as_ref(), obs.as_ref(), &mut mem, true).await;
            }
        }
    }
}

async fn execute<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    desired: Option<&Desired>,
    obs: Option<&Observed>,
    actions: &[Action],
    mem: &mut Memory,
    progress: &Arc<Mutex<Option<(u64, u64)>>>,
) -> Result<(), RuntimeError> {
    let restarts = obs.map(|o| o.restart_count).unwrap_or(0);
    for action in actions {
        tracing::debug!(%task, ?action, "executing");
        match *action {
            Action::Pull => {
                let d = desired.expect("pull only with a desired task");
                mem.pulling = Some((0, 0));
                report(s, task, desired, obs, mem, false).await;
                *progress.lock().expect("progress lock") = Some((0, 0));
                let p = progress.clone();
                let reporter = {
                    let s = s.clone();
                    let task = task.to_string();
                    let p = progress.clone();
                    let d = d.clone();
                    tokio::spawn(async move {
                        let mut last = None;
                        loop {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            let cur = *p.lock().expect("progress lock");
                            if cur != last {
                                last = cur;
                                publish_pull(&s, &task, &d, cur.unwrap_or((0, 0))).await;
                            }
                        }
                    })
                };
                let r =
                    s.rt.pull(
                        d,
                        Arc::new(move |done, total| {
                            *p.lock().expect("progress lock") = Some((done, total))
                        }),
                    )
                    .await;
                reporter.abort();
                mem.pulling = None;
                r?;
            }
            Action::Create => {
                s.rt.create(desired.expect("create only with a desired task"))
                    .await?
            }
            Action::Start => {
                s.rt.start(task).await?;
                mem.stop_requested_at = None;
            }
            Action::Stop { kill, .. } => {
                s.rt.signal(task, kill).await?;
                if mem.stop_requested_at.is_none() {
                    mem.stop_requested_at = Some(SystemTime::now());
                }
            }
            Action::Delete => {
                s.rt.delete(task).await?;
                mem.stop_requested_at = None;
                mem.last_exit = None;
            }
            Action::DeleteTask => {
                if let Some(Observed {
                    state: ContainerState::Exited { code, at },
                    ..
                }) = obs
                {
                    mem.last_exit = Some(Exit {
                        code: *code,
                        at: *at,
                    });
                }
                s.rt.delete_task(task).await?;
            }
            Action::CountRestart => {
                s.rt.set_restart_count(task, restarts.saturating_add(1))
                    .await?
            }
            Action::ResetRestarts => s.rt.set_restart_count(task, 0).await?,
        }
    }
    Ok(())
}

async fn publish_pull<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    d: &Desired,
    (done, total): (u64, u64),
) {
    let status = TaskStatus {
        phase: phase::PULLING.into(),
        reason: "Pulling".into(),
        message: format!("pulling {}", d.config.image),
        node: s.cfg.name.clone(),
        pull_bytes_done: done,
        pull_bytes_total: total,
        observed_generation: d.generation,
        ..Default::default()
    };
    send(s, task, &d.uid, status);
}

fn ts(t: SystemTime) -> voiyd_messages::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    voiyd_messages::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Reports the task's status when it changed (or always, with `force`).
async fn report<R: Runtime>(
    s: &Arc<Shared<R>>,
    task: &str,
    desired: Option<&Desired>,
    obs: Option<&Observed>,
    mem: &mut Memory,
    force: bool,
) {
    let Some(d) = desired else { return };
    let err = mem
        .last_error
        .as_ref()
        .map(|e| (e.reason, e.message.as_str()));
    let p = phase::derive(desired, obs, mem.pulling, err, SystemTime::now());
    let mut st = TaskStatus {
        phase: p.phase.to_string(),
        reason: p.reason,
        message: p.message,
        node: s.cfg.name.clone(),
        observed_generation: d.generation,
        ..Default::default()
    };
    if let Some(o) = obs.filter(|o| o.uid == d.uid) {
        st.id = o.task.clone();
        st.ip = mem.ip.clone().unwrap_or_default();
        st.restart_count = o.restart_count;
        st.started_at = o.last_started.map(ts);
        match o.state {
            ContainerState::Running { pid, .. } => st.pid = pid,
            ContainerState::Exited { code, at } => {
                st.exit_code = code;
                st.finished_at = Some(ts(at));
                st.exited = true;
            }
            _ => {}
        }
        if !o.state.is_running() {
            if let Some(e) = o.last_exit.filter(|_| !st.exited) {
                st.exit_code = e.code;
                st.finished_at = Some(ts(e.at));
            }
        }
    }
    if !force && mem.last_report.as_ref() == Some(&st) {
        return;
    }
    mem.last_report = Some(st.clone());
    send(s, task, &d.uid, st);
}

/// Queues a status report. Reports leave through [`flush_reports`], latest per task:
/// when reports come faster than they can be sent, the ones overtaken are dropped here
/// instead of being sent and folded in for nothing.
fn send<R: Runtime>(s: &Shared<R>, task: &str, uid: &str, mut status: TaskStatus) {
    // Lets the server drop a report that overtook a newer one.
    status.reported_at = Some(ts(SystemTime::now()));
    let report = TaskStatusReport {
        task: task.to_string(),
        node: s.cfg.name.clone(),
        uid: uid.to_string(),
        status: Some(status),
    };
    s.outbox
        .lock()
        .expect("outbox lock")
        .insert(task.to_string(), report);
    s.outbox_ready.notify_one();
}

/// Sends queued status reports as they come.
async fn flush_reports<R: Runtime>(s: Arc<Shared<R>>) {
    loop {
        s.outbox_ready.notified().await;
        send_queued(&s).await;
    }
}

/// Sends (and empties) the queue of status reports.
async fn send_queued<R: Runtime>(s: &Shared<R>) {
    let subject = names::node::status(&s.cfg.name);
    let batch: Vec<TaskStatusReport> = s
        .outbox
        .lock()
        .expect("outbox lock")
        .drain()
        .map(|(_, r)| r)
        .collect();
    for report in batch {
        if let Err(e) = s
            .client
            .publish(subject.clone(), report.encode_to_vec().into())
            .await
        {
            tracing::debug!(task = %report.task, error = %e, "status not sent");
        }
    }
}

/// Which tasks of this node use which volume.
fn volumes_in_use<R: Runtime>(s: &Shared<R>) -> BTreeMap<String, Vec<String>> {
    let workers = s.workers.lock().expect("workers lock");
    let desired: Vec<Desired> = workers
        .values()
        .filter_map(|w| w.desired.borrow().clone())
        .collect();
    crate::volumes::in_use(desired.iter())
}

/// Removes the data of purged volumes: the server puts `<node>.<volume>` in
/// `voiyd_volume_purges`; once no task of this node uses the volume its data goes and
/// the key is deleted.
async fn follow_purges<R: Runtime>(s: Arc<Shared<R>>) {
    let js = async_nats::jetstream::new(s.client.clone());
    let filter = names::work_filter(&s.cfg.name);
    loop {
        let kv = match js.get_key_value(names::BUCKET_VOLUME_PURGES).await {
            Ok(kv) => RawKv::new(kv, "volume purge"),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        // Named consumers, which node permissions can confine (see voiyd_nats::watch).
        let mut watch = Watcher::of(kv.inner().clone(), &filter, "volume purge")
            .on_reconnect(s.link.clone())
            .raw();
        // Purges waiting for the tasks that use the volume to go: key -> revision.
        let mut pending: BTreeMap<String, u64> = BTreeMap::new();
        let mut retry = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = watch.next() => match event {
                    Some(WatchEvent::Put { key, revision, .. }) => {
                        pending.insert(key, revision);
                    }
                    Some(WatchEvent::Delete { key, .. }) => {
                        pending.remove(&key);
                    }
                    Some(WatchEvent::Invalid { .. } | WatchEvent::Current) => {}
                    None => break,
                },
                _ = retry.tick(), if !pending.is_empty() => {}
            }
            let in_use = volumes_in_use(&s);
            let keys: Vec<(String, u64)> = pending.iter().map(|(k, r)| (k.clone(), *r)).collect();
            for (key, rev) in keys {
                let Some((_, volume)) = names::parse_work_key(&key) else {
                    pending.remove(&key);
                    continue;
                };
                if in_use.contains_key(&volume) {
                    continue;
                }
                match s.rt.purge_volume(&volume).await {
                    Ok(()) => {
                        pending.remove(&key);
                        let _ = kv.delete(&key, Some(rev)).await;
                    }
                    Err(e) => tracing::warn!(%volume, error = %e, "cannot purge volume"),
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Learns the node's container subnet from `voiyd_subnets` key `node.<node>`, which the
/// server writes when the node registers, and hands it to the runtime.
async fn follow_subnet<R: Runtime>(s: Arc<Shared<R>>) {
    let js = async_nats::jetstream::new(s.client.clone());
    let key = names::node_subnet_key(&s.cfg.name);
    let mut watch = Watcher::new(js, names::BUCKET_SUBNETS, &key, "subnet")
        .on_reconnect(s.link.clone())
        .raw();
    while let Some(event) = watch.next().await {
        if let WatchEvent::Put { value, .. } = event {
            let subnet = String::from_utf8_lossy(&value).trim().to_string();
            if !subnet.is_empty() {
                s.rt.set_subnet(&subnet);
                wake_all(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_reads_thin_out_as_the_bucket_grows() {
        let min = Duration::from_secs(10);
        assert_eq!(read_interval(0, min), min);
        assert_eq!(read_interval(1_000, min), min);
        assert_eq!(read_interval(20_000, min), Duration::from_secs(200));
        assert_eq!(read_interval(150_000, min), Duration::from_secs(1500));
        assert_eq!(read_interval(10_000_000, min), MAX_READ_INTERVAL);
        // An operator's longer minimum wins.
        let long = Duration::from_secs(7200);
        assert_eq!(read_interval(10, long), long);
    }

    #[test]
    fn fencing_stops_only_what_asks_for_it() {
        let with = |policy: &str| {
            Some(Desired {
                config: voiyd_messages::v1::TaskConfig {
                    on_disconnect: policy.into(),
                    ..Default::default()
                },
                ..Default::default()
            })
        };
        let stopped = |d: Option<Desired>| d.unwrap().config.stopped;
        assert!(stopped(fenced_desired(with("stop"))));
        assert!(!stopped(fenced_desired(with(""))));
        assert!(!stopped(fenced_desired(with("keep"))));
        assert!(fenced_desired(None).is_none());
    }
}
