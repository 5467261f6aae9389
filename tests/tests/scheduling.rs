//! Scheduling end to end: real nats-server, several voiyd-server processes and
//! simulated nodes (`voiyd-node --runtime sim`), plus node loss on real containerd.

use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use voiyd_messages::v1::{
    ContainerSet, Meta, Node, PortMapping, Resources, RolloutStrategy, Task, TaskConfig,
};
use voiyd_messages::Resource;
use voiyd_nats::api::ApiClient;
use voiyd_testkit::nats::TestNats;
use voiyd_tests::Signal;
use voiyd_tests::{
    containers, eventually, ready_nodes, running_containers, sim_nodes, stderr, stdout, task_pids,
    voiydctl, voiydctl_ok, wait_nodes, ContainerdCluster, Proc, Server,
};

fn task(name: &str, config: TaskConfig) -> Task {
    Task::new(
        name,
        TaskConfig {
            image: "sim/app:1".into(),
            ..config
        },
    )
}

/// name → (phase, node) of every task.
async fn phases(api: &ApiClient, selector: &str) -> BTreeMap<String, (String, String)> {
    api.list::<Task>(selector)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let st = t.status.clone().unwrap_or_default();
            (t.name().to_string(), (st.phase, st.node))
        })
        .collect()
}

/// Every key of the work bucket as (node, task).
/// Lines of a process's log that contain every one of `words`.
fn log_lines_with(p: &Proc, words: &[&str]) -> usize {
    p.log_text()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// Waits until exactly `count` tasks are Running on `node`.
async fn wait_running_count(api: &ApiClient, node: &str, count: usize, deadline: Duration) {
    let what = format!("{count} tasks running on {node}");
    eventually(deadline, &what, || async {
        let p = phases(api, "").await;
        let n = p
            .values()
            .filter(|(ph, n)| ph == "Running" && n == node)
            .count();
        (n == count).then_some(())
    })
    .await;
}

/// The `voiyd_work` bucket.
async fn work_bucket(nats: &TestNats) -> async_nats::jetstream::kv::Store {
    let js = nats.jetstream().await;
    js.get_key_value(voiyd_nats::names::BUCKET_WORK)
        .await
        .unwrap()
}

async fn work_keys(nats: &TestNats) -> Vec<(String, String)> {
    let kv = work_bucket(nats).await;
    let keys: Vec<String> = kv
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    keys.iter()
        .filter_map(|k| voiyd_nats::names::parse_work_key(k))
        .collect()
}

/// Asserts that each task is in the work of exactly the node its status names.
async fn assert_single_placement(nats: &TestNats, api: &ApiClient, expected: usize) {
    let work = work_keys(nats).await;
    let mut holders: HashMap<String, Vec<String>> = HashMap::new();
    for (node, task) in work {
        holders.entry(task).or_default().push(node);
    }
    let doubles: Vec<_> = holders.iter().filter(|(_, n)| n.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "tasks in the work of several nodes: {doubles:?}"
    );
    let all = phases(api, "").await;
    assert_eq!(all.len(), expected);
    for (name, (_, node)) in &all {
        if holders.get(name).map(|v| v[0].as_str()) == Some(node.as_str()) {
            continue;
        }
        // What happened to it: the task's status and the last operation on the key.
        let task: Option<Task> = api.get(name).await.ok();
        let last = work_bucket(nats)
            .await
            .entry(voiyd_nats::names::work_key(node, name))
            .await
            .ok()
            .flatten()
            .map(|e| (e.operation, e.revision));
        panic!(
            "task {name}: status says {node}, work says {:?}; last operation on the key: {last:?}; status: {:?}",
            holders.get(name),
            task.and_then(|t| t.status)
        );
    }
}

/// Three servers on one NATS, sharing the API queue group.
async fn three_servers(nats: &TestNats) -> [Server; 3] {
    [
        Server::external(&nats.url()).await,
        Server::external(&nats.url()).await,
        Server::external(&nats.url()).await,
    ]
}

/// Creates tasks `<prefix><i>` for every i in `range`, 64 requests in flight.
async fn create_tasks(api: &ApiClient, prefix: &str, range: std::ops::Range<usize>) {
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            async move {
                let t = task(&format!("{prefix}{i}"), TaskConfig::default());
                api.create(&t).await.expect("create task");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_place_thousands_of_tasks_exactly_once() {
    let nats = TestNats::start().await;
    let servers = three_servers(&nats).await;
    let api = servers[0].api().await;
    let dir = tempfile::tempdir().unwrap();

    // 600 tasks wait before any node exists: every server's upkeep then races to place
    // them at once when the nodes come.
    create_tasks(&api, "t", 0..600).await;
    let pending = phases(&api, "").await;
    assert!(pending
        .values()
        .all(|(p, n)| p == "Pending" && n.is_empty()));

    // 3000 x 100m needs 300 cpus: 20 nodes of 32.
    let _nodes = sim_nodes(
        &nats.url(),
        "sim",
        20,
        dir.path(),
        &["--sim-cpu", "32", "--sim-memory", "64Gi"],
    );
    wait_nodes(&api, 20).await;
    // 2400 more, created concurrently through the queue group (all three servers).
    let start = Instant::now();
    create_tasks(&api, "t", 600..3000).await;
    eventually(Duration::from_secs(90), "3000 tasks running", || async {
        let p = phases(&api, "").await;
        let running = p.values().filter(|(ph, _)| ph == "Running").count();
        (running == 3000).then_some(())
    })
    .await;
    eprintln!("3000 tasks running after {:?}", start.elapsed());
    assert_single_placement(&nats, &api, 3000).await;
    // No node was lost or deleted: the only moves allowed are off a node that refused a
    // task (the first nodes to join can be offered more than they hold by three servers
    // at once). A view that saw a task on a new node before the node's record must not
    // take the node for deleted.
    let tasks: Vec<Task> = api.list("").await.unwrap();
    let moved: Vec<_> = tasks
        .iter()
        .filter_map(|t| t.status.as_ref().filter(|s| s.reschedule_count > 0))
        .map(|s| s.last_reschedule_reason.clone())
        .filter(|why| !why.starts_with("NodeRejected"))
        .collect();
    assert!(moved.is_empty(), "tasks moved: {moved:?}");

    // Spread: 20 equal nodes, 3000 tasks of 100m: 150 each, give or take the
    // reservations of three servers deciding at once.
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for (_, (_, node)) in phases(&api, "").await {
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 20, "{per_node:?}");
    assert!(
        per_node.values().all(|n| (120..=180).contains(n)),
        "{per_node:?}"
    );
    // Each server placed some of them.
    for s in &servers {
        assert!(s.proc.log_text().contains("API ready"));
    }
}

/// Three servers placing the same burst each decide from their own view, so two can
/// pick a node's last free slot at once; the node refuses what no longer fits and the
/// task goes elsewhere. No node ever holds more than its capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_servers_never_overcommit_a_node() {
    let nats = TestNats::start().await;
    let servers = three_servers(&nats).await;
    let api = servers[0].api().await;
    let dir = tempfile::tempdir().unwrap();
    // 10 nodes x 1 CPU = 100 slots of 100m; 100 tasks wait for them, so all three
    // servers race to place them the moment the nodes come.
    create_tasks(&api, "c", 0..100).await;
    let _nodes = sim_nodes(
        &nats.url(),
        "tight",
        10,
        dir.path(),
        &["--sim-cpu", "1", "--sim-memory", "64Gi"],
    );
    eventually(Duration::from_secs(60), "100 tasks running", || async {
        let p = phases(&api, "").await;
        (p.values().filter(|(ph, _)| ph == "Running").count() == 100).then_some(())
    })
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (_, (_, node)) in phases(&api, "").await {
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 10, "{per_node:?}");
    assert!(per_node.values().all(|n| *n == 10), "{per_node:?}");
    assert_single_placement(&nats, &api, 100).await;
    // The cluster is full: one more waits, saying why.
    api.create(&task("extra", TaskConfig::default()))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "extra pending", || async {
        let t = api.get::<Task>("extra").await.ok()?;
        let st = t.status?;
        (st.phase == "Pending" && st.message.contains("10 insufficient cpu")).then_some(())
    })
    .await;
    let refused: usize = servers
        .iter()
        .map(|s| s.proc.log_text().matches("node refused task").count())
        .sum();
    eprintln!("nodes refused {refused} placements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_ports_and_explanations() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _a = sim_nodes(
        &nats.url(),
        "small",
        1,
        dir.path(),
        &[
            "--sim-cpu",
            "1",
            "--sim-memory",
            "1Gi",
            "--labels",
            "zone=a",
        ],
    );
    let _b = sim_nodes(
        &nats.url(),
        "big",
        1,
        dir.path(),
        &[
            "--sim-cpu",
            "4",
            "--sim-memory",
            "8Gi",
            "--labels",
            "zone=b",
        ],
    );
    wait_nodes(&api, 2).await;

    let big = |name: &str, mem: &str| {
        task(
            name,
            TaskConfig {
                resources: Some(Resources {
                    cpu: "500m".into(),
                    memory: mem.into(),
                }),
                ..Default::default()
            },
        )
    };
    // 6Gi fits only on big.
    let t = api.create(&big("huge", "6Gi")).await.unwrap();
    assert_eq!(t.status.unwrap().node, "big");
    // Another 6Gi fits nowhere now: an explanation a user can act on.
    let t = api.create(&big("huge2", "6Gi")).await.unwrap();
    let st = t.status.unwrap();
    assert_eq!(st.phase, "Pending");
    assert_eq!(st.message, "0/2 nodes available: 2 insufficient memory");
    // A selector mismatch is counted apart.
    let mut sel = big("zoned", "2Gi");
    sel.config
        .as_mut()
        .unwrap()
        .node_selector
        .insert("zone".into(), "a".into());
    let st = api.create(&sel).await.unwrap().status.unwrap();
    assert_eq!(
        st.message,
        "0/2 nodes available: 1 insufficient memory, 1 node selector mismatch"
    );
    // Freeing memory places the waiting task (level-triggered, no user action).
    api.delete(
        voiyd_messages::Kind::Task,
        &voiyd_messages::v1::DeleteRequest {
            name: "huge".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "huge2 placed on big", || async {
        let t: Task = api.get("huge2").await.ok()?;
        (t.status?.node == "big").then_some(())
    })
    .await;

    // Host ports: two tasks binding 8080/tcp land on different nodes; a third waits.
    let port = |name: &str| {
        task(
            name,
            TaskConfig {
                port_mappings: vec![PortMapping {
                    host_port: 8080,
                    target_port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    };
    let n1 = api.create(&port("p1")).await.unwrap().status.unwrap().node;
    let n2 = api.create(&port("p2")).await.unwrap().status.unwrap().node;
    assert_ne!(n1, n2);
    let st = api.create(&port("p3")).await.unwrap().status.unwrap();
    assert_eq!(st.message, "0/2 nodes available: 2 host port in use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_sim_node_tasks_move_within_ten_seconds() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let doomed = sim_nodes(&nats.url(), "doomed", 1, dir.path(), &[]);
    wait_nodes(&api, 1).await;
    for i in 0..20 {
        api.create(&task(&format!("m{i}"), TaskConfig::default()))
            .await
            .unwrap();
    }
    let _spare = sim_nodes(&nats.url(), "spare", 1, dir.path(), &[]);
    wait_nodes(&api, 2).await;
    eventually(Duration::from_secs(20), "20 running on doomed", || async {
        let p = phases(&api, "").await;
        (p.values()
            .filter(|(ph, n)| ph == "Running" && n == "doomed")
            .count()
            == 20)
            .then_some(())
    })
    .await;

    doomed.signal(Signal::KILL);
    let killed = Instant::now();
    eventually(
        Duration::from_secs(10),
        "all 20 running on spare",
        || async {
            let p = phases(&api, "").await;
            (p.values()
                .filter(|(ph, n)| ph == "Running" && n == "spare")
                .count()
                == 20)
                .then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("tasks running elsewhere {took:?} after kill -9");
    assert!(took < Duration::from_secs(10));
    let t: Task = api.get("m3").await.unwrap();
    let st = t.status.unwrap();
    assert_eq!(st.reschedule_count, 1);
    assert!(
        st.last_reschedule_reason.contains("NodeLost")
            && st.last_reschedule_reason.contains("doomed"),
        "{}",
        st.last_reschedule_reason
    );
    let n: Node = api.get("doomed").await.unwrap();
    assert_eq!(n.status.unwrap().phase, "NotReady");
    assert_single_placement(&nats, &api, 20).await;

    // The surviving node holds a liveness lease that it keeps renewing.
    let out = voiydctl(&server.url, &["get", "leases"], None, &[]);
    let text = stdout(&out);
    assert!(text.contains("node.spare"), "{text}{}", stderr(&out));
}

/// A TCP proxy that can cut every connection through it, and let new ones in again.
struct Cuttable {
    port: u16,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Cuttable {
    async fn start(upstream: String) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::watch::channel(true);
        let tx = Arc::new(tx);
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    continue; // dropped: refused while cut
                }
                let mut cut = rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Cuttable { port, open: tx }
    }
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
    fn set(&self, open: bool) {
        let _ = self.open.send(open);
    }
}

/// Work sent to a node while its connection is down is lost as a message; the node
/// re-reads its work when it reconnects instead of waiting for its periodic resync
/// (30 s or more for simulated nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_assigned_during_a_short_disconnect_arrives_on_reconnect() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Cuttable::start(nats.url().trim_start_matches("nats://").to_string()).await;
    let node = sim_nodes(
        &proxy.url(),
        "blink",
        1,
        dir.path(),
        &["--log-level", "voiyd_node=info,voiyd_nats=info,warn"],
    );
    wait_nodes(&api, 1).await;

    let connects = || {
        node.log_text()
            .lines()
            .filter(|l| l.contains("connected to NATS") && !l.contains("disconnected"))
            .count()
    };
    // A first task proves the node follows its work before the cut.
    api.create(&task("early", TaskConfig::default()))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "early running", || async {
        let p = phases(&api, "").await;
        (p.get("early").map(|(ph, _)| ph.as_str()) == Some("Running")).then_some(())
    })
    .await;
    // The first connection's line is logged asynchronously: count from after it.
    eventually(
        Duration::from_secs(5),
        "first connection logged",
        || async { (connects() >= 1).then_some(()) },
    )
    .await;
    let before = connects();
    proxy.set(false);
    eventually(Duration::from_secs(5), "node sees the cut", || async {
        node.log_text().contains("disconnected").then_some(())
    })
    .await;
    // Still Ready for the servers (the node timeout is 5 s): placed on it at once.
    api.create(&task("late", TaskConfig::default()))
        .await
        .unwrap();
    proxy.set(true);
    // The client's reconnect back-off decides when it is back; count from then.
    eventually(Duration::from_secs(20), "node reconnected", || async {
        (connects() > before).then_some(())
    })
    .await;
    let back = std::time::Instant::now();
    eventually(Duration::from_secs(20), "late running on blink", || async {
        let p = phases(&api, "").await;
        (p.get("late") == Some(&("Running".to_string(), "blink".to_string()))).then_some(())
    })
    .await;
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "took {:?} after reconnecting: the periodic resync, not the reconnect, found the work",
        back.elapsed()
    );
}

/// Work left on a node the task no longer belongs to (a server that died between
/// moving a task and removing its old work) is swept, and that node stops its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_work_is_swept_and_the_node_stops_its_copy() {
    use prost::Message;
    use voiyd_messages::v1::{Assignment, WorkUpdate};
    use voiyd_nats::names;
    let nats = TestNats::start().await;
    let server = Server::external_with(&nats.url(), &["--work-sweep-interval", "1"]).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = sim_nodes(&nats.url(), "sw", 2, dir.path(), &[]);
    wait_nodes(&api, 2).await;
    api.create(&task("stray", TaskConfig::default()))
        .await
        .unwrap();
    let owner = eventually(Duration::from_secs(10), "stray running", || async {
        let p = phases(&api, "").await;
        let (phase, node) = p.get("stray")?;
        (phase == "Running").then(|| node.clone())
    })
    .await;
    let other = if owner == "sw-0001" {
        "sw-0002"
    } else {
        "sw-0001"
    };

    // A copy of the task's work on the other node, stored and announced as a server would.
    let kv = work_bucket(&nats).await;
    let body = kv
        .get(names::work_key(&owner, "stray"))
        .await
        .unwrap()
        .unwrap();
    let revision = kv
        .put(names::work_key(other, "stray"), body.clone())
        .await
        .unwrap();
    let update = WorkUpdate {
        task: "stray".into(),
        revision,
        assignment: Some(Assignment::decode(body).unwrap()),
        kill: false,
    };
    let client = nats.client().await;
    client
        .publish(names::node::work(other), update.encode_to_vec().into())
        .await
        .unwrap();
    let on_other = |what: &str| log_lines_with(&nodes, &[what, other, "stray"]) > 0;
    eventually(Duration::from_secs(10), "the stray copy starts", || async {
        on_other("sim task started").then_some(())
    })
    .await;
    // Two sweeps a second apart confirm it stale; the node then stops its copy.
    eventually(Duration::from_secs(10), "stale work swept", || async {
        (work_keys(&nats).await.len() == 1).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the stray copy stops", || async {
        on_other("sim task exited").then_some(())
    })
    .await;
    assert!(server.proc.log_text().contains("stale work removed"));
    assert_single_placement(&nats, &api, 1).await;
    let p = phases(&api, "").await;
    assert_eq!(p["stray"], ("Running".to_string(), owner.clone()));

    // The opposite: the owner's work goes missing while the status says Running there
    // (a race between servers could do that). Two sweeps later it is written again.
    kv.purge(names::work_key(&owner, "stray")).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "missing work written again",
        || async {
            (work_keys(&nats).await == [(owner.clone(), "stray".to_string())]).then_some(())
        },
    )
    .await;
    assert!(server
        .proc
        .log_text()
        .contains("work missing for a placed task"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_node_stops_only_strict_tasks_and_reconnects_without_duplicates() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Cuttable::start(nats.url().trim_start_matches("nats://").to_string()).await;
    let cut = sim_nodes(&proxy.url(), "cut", 1, dir.path(), &[]);
    wait_nodes(&api, 1).await;
    api.create(&task(
        "stopper",
        TaskConfig {
            on_disconnect: "stop".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    api.create(&task("keeper", TaskConfig::default()))
        .await
        .unwrap();
    wait_running_count(&api, "cut", 2, Duration::from_secs(15)).await;
    let _other = sim_nodes(&nats.url(), "other", 1, dir.path(), &[]);
    wait_nodes(&api, 2).await;

    proxy.set(false);
    // The node fences itself after 5 s: it stops `stopper` but keeps `keeper`.
    eventually(Duration::from_secs(15), "cut node fenced", || async {
        cut.log_text().contains("fenced, stopping").then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "stopper stopped on cut", || async {
        (log_lines_with(&cut, &["sim task exited", "stopper"]) > 0).then_some(())
    })
    .await;
    assert!(
        log_lines_with(&cut, &["sim task exited", "keeper"]) == 0,
        "keeper was stopped: {}",
        cut.log_text()
    );
    // Meanwhile the servers moved both to the other node.
    wait_running_count(&api, "other", 2, Duration::from_secs(15)).await;

    // Back online: the node re-reads its work, finds both tasks gone and removes
    // them, and never starts `stopper` again.
    let starts_before = log_lines_with(&cut, &["sim task started"]);
    proxy.set(true);
    eventually(Duration::from_secs(20), "cut node unfenced", || async {
        cut.log_text().contains("unfenced").then_some(())
    })
    .await;
    eventually(Duration::from_secs(15), "keeper stopped on cut", || async {
        (log_lines_with(&cut, &["sim task exited", "keeper"]) > 0).then_some(())
    })
    .await;
    let starts_after = log_lines_with(&cut, &["sim task started"]);
    assert_eq!(
        starts_before, starts_after,
        "a moved task started again on the fenced node"
    );
    wait_nodes(&api, 2).await;
    let p = phases(&api, "").await;
    assert!(
        p.values().all(|(ph, n)| ph == "Running" && n == "other"),
        "{p:?}"
    );
    assert_single_placement(&nats, &api, 2).await;
}

fn set(name: &str, replicas: u32, args: &[&str], strategy: RolloutStrategy) -> ContainerSet {
    ContainerSet {
        version: "containerset/v1".into(),
        meta: Some(Meta {
            name: name.into(),
            ..Default::default()
        }),
        template: Some(TaskConfig {
            image: "sim/app:1".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            restart_policy: "never".into(),
            ..Default::default()
        }),
        replicas: Some(replicas),
        strategy: Some(strategy),
        placement: String::new(),
        mode: String::new(),
        ..Default::default()
    }
}

async fn set_tasks(api: &ApiClient, name: &str) -> BTreeMap<String, (String, String)> {
    phases(api, &format!("voiyd.io/set={name}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_scale_roll_out_roll_back_and_delete() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "s", 3, dir.path(), &[]);
    wait_nodes(&api, 3).await;
    let ctl = |args: &[&str]| voiydctl_ok(&server.url, args, None);

    let strategy = RolloutStrategy {
        max_surge: 1,
        max_unavailable: 0,
        min_ready_seconds: 1,
        progress_deadline_seconds: 30,
    };
    api.create(&set("web", 3, &["serve"], strategy))
        .await
        .unwrap();
    let running = |n: usize| {
        let api = api.clone();
        async move {
            eventually(
                Duration::from_secs(20),
                &format!("{n} web tasks running"),
                || async {
                    let t = set_tasks(&api, "web").await;
                    (t.len() == n && t.values().all(|(p, _)| p == "Running")).then_some(t)
                },
            )
            .await
        }
    };
    let t = running(3).await;
    let names: Vec<&String> = t.keys().collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    let nodes: std::collections::BTreeSet<&String> = t.values().map(|(_, n)| n).collect();
    assert_eq!(nodes.len(), 3, "spread over the three nodes: {t:?}");

    ctl(&["scale", "set", "web", "--replicas", "5"]);
    running(5).await;
    ctl(&["scale", "set", "web", "--replicas", "2"]);
    let t = running(2).await;
    assert_eq!(t.keys().collect::<Vec<_>>(), ["web-0", "web-1"]);
    let out = ctl(&["rollout", "status", "set", "web", "--timeout", "30s"]);
    assert!(out.contains("rolled out"), "{out}");

    // A rolling update: every task ends up on the new template.
    let mut s: ContainerSet = api.get("web").await.unwrap();
    s.template.as_mut().unwrap().args = vec!["serve".into(), "--v2".into()];
    s.status = None;
    api.update(&s).await.unwrap();
    let out = ctl(&["rollout", "status", "set", "web", "--timeout", "40s"]);
    assert!(out.contains("rolled out"), "{out}");
    let all: Vec<Task> = api.list("voiyd.io/set=web").await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|t| t.config.as_ref().unwrap().args == ["serve", "--v2"]));
    let got: ContainerSet = api.get("web").await.unwrap();
    let st = got.status.unwrap();
    assert_eq!(
        (st.desired, st.ready, st.updated, st.available),
        (2, 2, 2, 2)
    );

    // A bad template (the task fails at once) is rolled back automatically.
    let mut s: ContainerSet = api.get("web").await.unwrap();
    s.template.as_mut().unwrap().args = vec!["sim-exit".into(), "1".into()];
    s.status = None;
    api.update(&s).await.unwrap();
    eventually(Duration::from_secs(30), "rolled back", || async {
        let s: ContainerSet = api.get("web").await.ok()?;
        (s.template.as_ref()?.args == ["serve", "--v2"]).then_some(())
    })
    .await;
    let o = voiydctl(
        &server.url,
        &["rollout", "status", "set", "web", "--timeout", "5s"],
        None,
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("RolledBack"), "{}", stderr(&o));
    running(2).await;
    let hist = ctl(&["rollout", "history", "set", "web"]);
    assert!(
        hist.contains("rollback") && hist.contains("update"),
        "{hist}"
    );

    // undo goes back to the template before the current one.
    ctl(&["rollout", "undo", "set", "web"]);
    eventually(Duration::from_secs(5), "undo applied", || async {
        let s: ContainerSet = api.get("web").await.ok()?;
        (s.template.as_ref()?.args != ["serve", "--v2"]).then_some(())
    })
    .await;

    // Deleting the set deletes its tasks.
    ctl(&["delete", "set", "web"]);
    eventually(Duration::from_secs(15), "set tasks gone", || async {
        set_tasks(&api, "web").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_drain_and_delete_node() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "d", 3, dir.path(), &[]);
    wait_nodes(&api, 3).await;
    let ctl = |args: &[&str]| voiydctl_ok(&server.url, args, None);
    ctl(&["cordon", "d-0001"]);
    eventually(Duration::from_secs(5), "cordon seen", || async {
        let n: Node = api.get("d-0001").await.ok()?;
        n.config?.unschedulable.then_some(())
    })
    .await;
    // The scheduler's view follows the node record: nothing new lands on d-0001.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..9 {
        let t = api
            .create(&task(&format!("c{i}"), TaskConfig::default()))
            .await
            .unwrap();
        assert_ne!(t.status.unwrap().node, "d-0001");
    }
    ctl(&["uncordon", "d-0001"]);
    eventually(Duration::from_secs(5), "uncordon seen", || async {
        let n: Node = api.get("d-0001").await.ok()?;
        (!n.config?.unschedulable).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 9..12 {
        api.create(&task(&format!("c{i}"), TaskConfig::default()))
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(15),
        "12 running, some on d-0001",
        || async {
            let p = phases(&api, "").await;
            let on1 = p.values().filter(|(_, n)| n == "d-0001").count();
            (p.values().all(|(ph, _)| ph == "Running") && p.len() == 12 && on1 > 0).then_some(())
        },
    )
    .await;

    let out = ctl(&["drain", "d-0001", "--deadline", "30s"]);
    assert!(out.contains("drained"), "{out}");
    let p = phases(&api, "").await;
    assert!(
        p.values().all(|(ph, n)| ph == "Running" && n != "d-0001"),
        "{p:?}"
    );
    let moved: Task = api.get(p.keys().next().unwrap()).await.unwrap();
    let _ = moved;

    // Deleting a node moves its tasks too.
    let victim = p.values().next().unwrap().1.clone();
    ctl(&["delete", "node", &victim]);
    eventually(
        Duration::from_secs(15),
        "tasks off the deleted node",
        || async {
            let p = phases(&api, "").await;
            (p.values()
                .all(|(ph, n)| ph == "Running" && n != &victim && n != "d-0001")
                && p.len() == 12)
                .then_some(())
        },
    )
    .await;
    assert_single_placement(&nats, &api, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn killed_agent_on_containerd_task_runs_elsewhere_within_ten_seconds() {
    let c = ContainerdCluster::start_with(&[]).await;
    let (nats, api, registry, containerd) = (&c.nats, &c.api, &c.registry, &c.containerd);
    let agent = |name: &str| c.agent(name, &[]);
    let mut first = agent("cd1");
    wait_nodes(api, 1).await;
    api.create(&sleeper("svc", registry)).await.unwrap();
    wait_running_on(api, "svc", "cd1", Duration::from_secs(60)).await;
    let _second = agent("cd2");
    wait_nodes(api, 2).await;

    let _ = first.proc.child.kill(); // SIGKILL
    let _ = first.proc.child.wait();
    let killed = Instant::now();
    wait_running_on(api, "svc", "cd2", Duration::from_secs(10)).await;
    eprintln!(
        "svc running on cd2 {:?} after kill -9 of cd1's agent",
        killed.elapsed()
    );
    let t: Task = api.get("svc").await.unwrap();
    assert_eq!(t.status.unwrap().reschedule_count, 1);
    assert_single_placement(nats, api, 1).await;

    // The old agent comes back: it finds its work gone and removes its container,
    // so the task runs once.
    first.restart(1);
    wait_no_containers(&containerd.socket, "cd1", Duration::from_secs(30)).await;
}

/// Waits until a node agent's containerd namespace holds no container.
async fn wait_no_containers(socket: &Path, node: &str, deadline: Duration) {
    let what = format!("no container left on {node}");
    eventually(deadline, &what, || async {
        containers(socket, node).is_empty().then_some(())
    })
    .await;
}

/// A busybox task that sleeps, and stops within a second when asked.
fn sleeper(name: &str, registry: &voiyd_testkit::containerd::TestRegistry) -> Task {
    let mut t = task(name, TaskConfig::default());
    let config = t.config.as_mut().unwrap();
    config.image = registry.image("busybox");
    config.args = vec!["sleep".into(), "1000".into()];
    config.stop_grace_period = "1s".into();
    t
}

/// Waits until `task` is Running, with a process, on `node`.
async fn wait_running_on(api: &ApiClient, task: &str, node: &str, deadline: Duration) {
    let what = format!("{task} running on {node}");
    eventually(deadline, &what, || async {
        let t: Task = api.get(task).await.ok()?;
        let st = t.status?;
        (st.phase == "Running" && st.node == node && st.pid > 0).then_some(())
    })
    .await;
}

/// A node on real containerd is partitioned from a working cluster (its connection is
/// cut, the agent keeps running): both its tasks run on another node within 10 s; the
/// cut node fences itself and stops only the task that asks for at-most-once
/// (`onDisconnect: stop`), keeping the other's container; once healed it stops that
/// copy too, and each task runs exactly once, on the node that owns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn partitioned_containerd_node_keeps_its_copy_until_healed_then_one_runs() {
    let c = ContainerdCluster::start_with(&[]).await;
    let (nats, api, registry, containerd) = (&c.nats, &c.api, &c.registry, &c.containerd);
    let server = &c.server;
    let proxy = Cuttable::start(nats.url().trim_start_matches("nats://").to_string()).await;
    let agent = |url: &str, name: &str| c.agent_via(url, name, &[]);
    let cut = agent(&proxy.url(), "cd-cut");
    wait_nodes(api, 1).await;
    api.create(&sleeper("svc", registry)).await.unwrap();
    let mut strict = sleeper("strict", registry);
    strict.config.as_mut().unwrap().on_disconnect = "stop".into();
    api.create(&strict).await.unwrap();
    wait_running_on(api, "svc", "cd-cut", Duration::from_secs(60)).await;
    wait_running_on(api, "strict", "cd-cut", Duration::from_secs(60)).await;
    let pid_before = api.get::<Task>("svc").await.unwrap().status.unwrap().pid;
    let _other = agent(&server.url, "cd-other");
    wait_nodes(api, 2).await;
    let mut both = running_containers(&containerd.socket, "cd-cut");
    both.sort();
    assert_eq!(both, ["strict", "svc"]);

    proxy.set(false);
    let cut_at = Instant::now();
    wait_running_on(api, "svc", "cd-other", Duration::from_secs(10)).await;
    wait_running_on(api, "strict", "cd-other", Duration::from_secs(10)).await;
    eprintln!(
        "both running on cd-other {:?} after the cut",
        cut_at.elapsed()
    );
    // The agent never saw a kill: once fenced it stops `strict` itself, and keeps `svc`.
    eventually(Duration::from_secs(20), "cd-cut stops strict", || async {
        (running_containers(&containerd.socket, "cd-cut") == ["svc"]).then_some(())
    })
    .await;
    assert!(
        cut.proc.log_text().contains("fenced"),
        "{}",
        cut.proc.log_text()
    );
    assert_eq!(
        task_pids(&containerd.socket, "cd-cut", "svc"),
        vec![pid_before],
        "the partitioned copy of svc kept running, same process"
    );

    proxy.set(true);
    eventually(Duration::from_secs(30), "cd-cut back and Ready", || async {
        (cut.proc.log_text().contains("unfenced") && ready_nodes(api).await == 2).then_some(())
    })
    .await;
    // Healed: the node's re-read of its work stops the copy that was moved.
    wait_no_containers(&containerd.socket, "cd-cut", Duration::from_secs(20)).await;
    assert!(running_containers(&containerd.socket, "cd-cut").is_empty());
    let mut on_other = running_containers(&containerd.socket, "cd-other");
    on_other.sort();
    assert_eq!(on_other, ["strict", "svc"]);
    for name in ["svc", "strict"] {
        let st = api.get::<Task>(name).await.unwrap().status.unwrap();
        assert_eq!(
            (st.phase.as_str(), st.node.as_str()),
            ("Running", "cd-other"),
            "{name}"
        );
        assert_eq!(st.reschedule_count, 1, "{name}");
    }
    assert_single_placement(nats, api, 2).await;
}

/// `delete node` while its agent keeps running: the agent's heartbeats no longer
/// register the node (its tasks stay moved away); a restarted agent joins again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_node_stays_deleted_until_its_agent_restarts() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = sim_nodes(&nats.url(), "solo", 1, dir.path(), &[]);
    wait_nodes(&api, 1).await;
    let listed = |api: ApiClient| async move {
        api.list::<Node>("")
            .await
            .unwrap_or_default()
            .iter()
            .any(|n| n.name() == "solo")
    };

    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut beats = client
        .subscribe(voiyd_nats::names::node::heartbeat("solo"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let out = voiydctl(&server.url, &["delete", "node", "solo"], None, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Heartbeats keep coming; the server must not take the node back.
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(5), beats.next())
            .await
            .expect("the agent keeps sending heartbeats")
            .unwrap();
    }
    assert!(
        !listed(api.clone()).await,
        "a deleted node came back through its running agent"
    );

    // A restarted agent is a new session: it joins again.
    agent.stop(Duration::from_secs(5));
    let _agent = sim_nodes(&nats.url(), "solo", 1, dir.path(), &[]);
    eventually(Duration::from_secs(15), "solo joins again", || async {
        listed(api.clone()).await.then_some(())
    })
    .await;
    wait_nodes(&api, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_changes_that_no_longer_fit_move_the_task() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "m", 2, dir.path(), &[]);
    wait_nodes(&api, 2).await;
    let ctl = |args: &[&str]| voiydctl_ok(&server.url, args, None);
    ctl(&["label", "node", "m-0001", "zone=a"]);
    ctl(&["label", "node", "m-0002", "zone=b"]);
    api.create(&task(
        "mover",
        TaskConfig {
            node_selector: [("zone".to_string(), "a".to_string())].into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let on = |node: &'static str| {
        let api = api.clone();
        async move {
            eventually(
                Duration::from_secs(20),
                &format!("mover running on {node}"),
                || async {
                    let p = phases(&api, "").await;
                    let (phase, n) = p.get("mover")?;
                    (phase == "Running" && n == node).then_some(())
                },
            )
            .await
        }
    };
    on("m-0001").await;

    // An edit of its selector that its node no longer matches moves it.
    let mut t: Task = api.get("mover").await.unwrap();
    t.config.as_mut().unwrap().node_selector = [("zone".to_string(), "b".to_string())].into();
    t.status = None;
    api.update(&t).await.unwrap();
    on("m-0002").await;
    let t: Task = api.get("mover").await.unwrap();
    let st = t.status.unwrap();
    assert_eq!(st.reschedule_count, 1);
    assert!(
        st.last_reschedule_reason.starts_with("SpecChanged"),
        "{}",
        st.last_reschedule_reason
    );
    assert_single_placement(&nats, &api, 1).await;

    // A change that still fits (an env var) leaves it where it is.
    let mut t: Task = api.get("mover").await.unwrap();
    t.config.as_mut().unwrap().envvars = vec![voiyd_messages::v1::EnvVar {
        name: "A".into(),
        value: "1".into(),
        ..Default::default()
    }];
    t.status = None;
    api.update(&t).await.unwrap();
    on("m-0002").await;
    let t: Task = api.get("mover").await.unwrap();
    assert_eq!(t.status.unwrap().reschedule_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_sets_follow_nodes_joining_cordoned_and_relabelled() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "g", 3, dir.path(), &[]);
    wait_nodes(&api, 3).await;
    let ctl = |args: &[&str]| voiydctl_ok(&server.url, args, None);
    for n in ["g-0001", "g-0002", "g-0003"] {
        ctl(&["label", "node", n, "role=edge"]);
    }
    let manifest = "version: containerset/v1
meta: {name: agent}
mode: global
template:
  image: sim/agent:1
  nodeSelector: {role: edge}
";
    voiydctl_ok(&server.url, &["apply", "-f", "-"], Some(manifest));
    let expect = |nodes: &'static [&'static str]| {
        let api = api.clone();
        async move {
            eventually(
                Duration::from_secs(20),
                &format!("agent tasks running on exactly {nodes:?}"),
                || async {
                    let t = set_tasks(&api, "agent").await;
                    let on: BTreeSet<&str> = t.values().map(|(_, n)| n.as_str()).collect();
                    let want: BTreeSet<&str> = nodes.iter().copied().collect();
                    (t.len() == nodes.len()
                        && on == want
                        && t.values().all(|(p, _)| p == "Running"))
                    .then_some(t)
                },
            )
            .await
        }
    };
    let t = expect(&["g-0001", "g-0002", "g-0003"]).await;
    assert!(t.contains_key("agent-g-0001"), "{t:?}");

    // A fourth node joins with the label: it gets one too.
    let _more = sim_nodes(&nats.url(), "h", 1, dir.path(), &["--labels", "role=edge"]);
    expect(&["g-0001", "g-0002", "g-0003", "h"]).await;
    // Cordoned: its task goes; uncordoned: it comes back.
    ctl(&["cordon", "g-0002"]);
    expect(&["g-0001", "g-0003", "h"]).await;
    ctl(&["uncordon", "g-0002"]);
    expect(&["g-0001", "g-0002", "g-0003", "h"]).await;
    // Relabelled out of the selector: its task goes.
    ctl(&["label", "node", "g-0003", "role=core"]);
    expect(&["g-0001", "g-0002", "h"]).await;
    let s: ContainerSet = api.get("agent").await.unwrap();
    eventually(Duration::from_secs(10), "set status counts 3", || async {
        let s: ContainerSet = api.get("agent").await.ok()?;
        let st = s.status?;
        (st.desired == 3 && st.ready == 3).then_some(())
    })
    .await;
    let _ = s;
    // A global set with replicas is refused with the field named.
    let bad = manifest.replace("mode: global", "mode: global\nreplicas: 2");
    let o = voiydctl(&server.url, &["apply", "-f", "-"], Some(&bad), &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("replicas: not allowed with mode global"),
        "{}",
        stderr(&o)
    );
}

/// A volume's `nodeSelector` holds for the tasks that mount it: they go only to nodes it
/// matches (on top of their own selector), and wait when none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_node_selector_places_the_tasks_that_mount_it() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _a = sim_nodes(&nats.url(), "za", 1, dir.path(), &["--labels", "zone=a"]);
    let _b = sim_nodes(&nats.url(), "zb", 1, dir.path(), &["--labels", "zone=b"]);
    wait_nodes(&api, 2).await;
    voiydctl_ok(
        &server.url,
        &["apply", "-f", "-"],
        Some(
            "version: volume/v1\nmeta: {name: fast}\nconfig:\n  hostLocal: {}\n  nodeSelector: {zone: b}\n",
        ),
    );
    let mounting = |name: &str, zone: Option<&str>| {
        let mut config = TaskConfig {
            mounts: vec![voiyd_messages::v1::Mount {
                name: "data".into(),
                volume: "fast".into(),
                destination: "/data".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        if let Some(z) = zone {
            config.node_selector.insert("zone".into(), z.into());
        }
        task(name, config)
    };
    // Spread would alternate between the two nodes: every one lands on zb.
    for i in 0..4 {
        let st = api
            .create(&mounting(&format!("m{i}"), None))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(st.node, "zb", "m{i}: {st:?}");
    }
    // The task's own selector and the volume's cannot both hold: it waits, and says so.
    let st = api
        .create(&mounting("clash", Some("a")))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.phase, "Pending");
    assert!(
        st.message.contains("node selector mismatch"),
        "{}",
        st.message
    );
    // A volume whose selector matches no node is refused at once, in one line.
    let out = voiyd_tests::voiydctl(
        &server.url,
        &["apply", "-f", "-"],
        Some("version: volume/v1\nmeta: {name: nowhere}\nconfig:\n  hostLocal: {}\n  nodeSelector: {zone: c}\n"),
        &[],
    );
    assert!(!out.status.success());
    let err = voiyd_tests::stderr(&out);
    assert!(
        err.contains("volume nowhere: no node matches its nodeSelector zone=c: label a node first"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
