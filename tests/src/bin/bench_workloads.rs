//! Workload benchmarks. Prints figures:
//! - probe cost: CPU of voiyd-node, of containerd and of the whole machine while 100 tasks
//!   on one node are each probed every second (exec, HTTP, TCP), against the same 100 tasks
//!   without probes, measured in the same run;
//! - rollouts: a 100-replica set on 20 simulated nodes rolled to a new template, time to
//!   complete and the fewest ready replicas seen (sampled every 50 ms).
//!
//! Usage: `cargo run --release -p voiyd-tests --bin bench_workloads` (root; needs the
//! binaries built in release: `cargo build --release --bins`, and
//! `VOIYD_BIN_DIR=target/release`). `BENCH_SKIP_CONTAINERD=1` runs only the rollouts.

use std::time::{Duration, Instant};
use voiyd_messages::v1::{
    ContainerSet, ExecAction, HttpGetAction, Probe, Resources, RolloutStrategy, Task, TaskConfig,
    TcpSocketAction,
};
use voiyd_nats::api::ApiClient;
use voiyd_testkit::nats::TestNats;
use voiyd_tests::{eventually, running_containers, sim_nodes, wait_nodes, NodeAgent, Server};

const TASKS: usize = 100;
const MEASURE: Duration = Duration::from_secs(20);

/// CPU seconds a process has used (user + system).
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds the whole machine has been busy.
fn cpu_machine() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    busy / 100.0
}

fn probe_of(kind: &str, port: u32) -> Option<Probe> {
    let base = Probe {
        period_seconds: 1,
        ..Default::default()
    };
    match kind {
        "exec" => Some(Probe {
            exec: Some(ExecAction {
                command: vec!["true".into()],
            }),
            ..base
        }),
        "http" => Some(Probe {
            http_get: Some(HttpGetAction {
                path: "/".into(),
                port,
                ..Default::default()
            }),
            ..base
        }),
        "tcp" => Some(Probe {
            tcp_socket: Some(TcpSocketAction {
                port,
                ..Default::default()
            }),
            ..base
        }),
        _ => None,
    }
}

fn ready(t: &Task) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

async fn probe_costs() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let registry = voiyd_testkit::containerd::TestRegistry::start();
    let containerd = voiyd_testkit::containerd::TestContainerd::start();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeAgent::start(
        &server.url,
        "bench",
        &containerd.socket,
        &dir.path().join("bench"),
        &[],
    );
    wait_nodes(&api, 1).await;
    let image = registry.image("busybox");
    println!("== Probe cost: {TASKS} busybox httpd tasks (host network) on one node, each probed every second, {MEASURE:?} measured after they are ready");
    println!(
        "{:<8} {:>14} {:>16} {:>16}",
        "probe", "voiyd-node %", "containerd %", "machine %"
    );
    let mut base = None;
    for kind in ["none", "exec", "http", "tcp"] {
        for i in 0..TASKS {
            // Host networking, a port each: the test cluster's node subnets are small.
            let port = 18000 + i as u32;
            let t = Task::new(
                &format!("{kind}-{i}"),
                TaskConfig {
                    args: vec![
                        "sh".into(),
                        "-c".into(),
                        format!("mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"),
                    ],
                    host_network: true,
                    resources: Some(Resources {
                        cpu: "10m".into(),
                        memory: "8Mi".into(),
                    }),
                    stop_grace_period: "1s".into(),
                    readiness_probe: probe_of(kind, port),
                    ..TaskConfig::image(&image)
                },
            );
            api.create(&t).await.unwrap();
        }
        eventually(Duration::from_secs(300), "all tasks ready", || async {
            let tasks: Vec<Task> = api.list("").await.ok()?;
            (tasks.len() == TASKS && tasks.iter().all(ready)).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (n0, c0, m0) = (
            cpu_of(node.proc.pid()),
            cpu_of(containerd.pid as u32),
            cpu_machine(),
        );
        let start = Instant::now();
        tokio::time::sleep(MEASURE).await;
        let secs = start.elapsed().as_secs_f64();
        let pct = |a: f64, b: f64| (b - a) / secs * 100.0;
        let (n, c, m) = (
            pct(n0, cpu_of(node.proc.pid())),
            pct(c0, cpu_of(containerd.pid as u32)),
            pct(m0, cpu_machine()),
        );
        let ratio = match base {
            None => {
                base = Some(m);
                String::new()
            }
            Some(b) => format!("  (machine {:.1}x no probes)", m / b),
        };
        println!("{kind:<8} {n:>14.1} {c:>16.1} {m:>16.1}{ratio}");
        for i in 0..TASKS {
            let _ = api
                .delete(
                    voiyd_messages::Kind::Task,
                    &voiyd_messages::v1::DeleteRequest {
                        name: format!("{kind}-{i}"),
                        force: true,
                        ..Default::default()
                    },
                )
                .await;
        }
        let socket = containerd.socket.clone();
        eventually(Duration::from_secs(120), "containers gone", || async {
            running_containers(&socket, "bench")
                .is_empty()
                .then_some(())
        })
        .await;
    }
}

fn set(replicas: u32, marker: &str, strategy: RolloutStrategy) -> ContainerSet {
    ContainerSet {
        version: "containerset/v1".into(),
        meta: Some(voiyd_messages::v1::Meta {
            name: "web".into(),
            ..Default::default()
        }),
        template: Some(TaskConfig {
            args: vec!["serve".into(), marker.into()],
            resources: Some(Resources {
                cpu: "10m".into(),
                memory: "8Mi".into(),
            }),
            readiness_probe: probe_of("tcp", 8080),
            ..TaskConfig::image("sim/app:1")
        }),
        replicas: Some(replicas),
        strategy: Some(strategy),
        ..Default::default()
    }
}

async fn ready_count(api: &ApiClient) -> (usize, usize, bool) {
    let tasks: Vec<Task> = api.list("voiyd.io/set=web").await.unwrap_or_default();
    let s: Option<ContainerSet> = api.get("web").await.ok();
    let complete = s.is_some_and(|s| {
        let generation = s.meta.as_ref().map_or(0, |m| m.generation);
        s.status.is_some_and(|st| {
            st.observed_generation == generation
                && st.conditions.iter().any(|c| c.reason == "RolloutComplete")
        })
    });
    (
        tasks.iter().filter(|t| ready(t)).count(),
        tasks.len(),
        complete,
    )
}

async fn rollouts() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "s", 20, dir.path(), &[]);
    wait_nodes(&api, 20).await;
    println!(
        "== Rollout of a 100-replica set on 20 simulated nodes (readiness probe on every task)"
    );
    let strategies = [
        ("surge 1, unavailable 0", 1, 0),
        ("surge 25, unavailable 0", 25, 0),
        ("surge 0, unavailable 10", 0, 10),
    ];
    let mut marker = 0;
    api.create(&set(100, "v0", RolloutStrategy::default()))
        .await
        .unwrap();
    eventually(Duration::from_secs(120), "100 ready", || async {
        let (r, n, done) = ready_count(&api).await;
        (r == 100 && n == 100 && done).then_some(())
    })
    .await;
    for (label, surge, unavailable) in strategies {
        marker += 1;
        let mut s: ContainerSet = api.get("web").await.unwrap();
        let next = set(
            100,
            &format!("v{marker}"),
            RolloutStrategy {
                max_surge: surge,
                max_unavailable: unavailable,
                ..Default::default()
            },
        );
        s.template = next.template;
        s.strategy = next.strategy;
        s.status = None;
        let start = Instant::now();
        api.update(&s).await.unwrap();
        let mut fewest = usize::MAX;
        let mut most = 0;
        loop {
            let (r, n, done) = ready_count(&api).await;
            fewest = fewest.min(r);
            most = most.max(n);
            if done && start.elapsed() > Duration::from_millis(200) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(600), "rollout stuck");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "{label:<26} complete in {:>6.1} s, fewest ready {fewest:>3} (floor {}), most tasks {most}",
            start.elapsed().as_secs_f64(),
            100 - unavailable
        );
    }
}

#[tokio::main]
async fn main() {
    rollouts().await;
    if std::env::var_os("BENCH_SKIP_CONTAINERD").is_none() {
        probe_costs().await;
    }
}
