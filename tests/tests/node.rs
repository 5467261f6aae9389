//! voiyd-node end to end: real containerd, runc, OCI registry, NATS, server and agent
//! processes, driven through voiydctl and the API.

use std::time::Duration;
use voiyd_messages::v1::Task;
use voiyd_tests::Signal;
use voiyd_tests::{eventually, pid_alive, stdout, voiydctl, ContainerdCluster, NodeAgent};

/// The shared containerd cluster, with this file's helpers.
struct Cluster(ContainerdCluster);

impl std::ops::Deref for Cluster {
    type Target = ContainerdCluster;
    fn deref(&self) -> &ContainerdCluster {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut ContainerdCluster {
        &mut self.0
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster(ContainerdCluster::start_with(&[]).await)
    }

    fn node(&self, name: &str, extra: &[&str]) -> NodeAgent {
        self.agent(name, extra)
    }

    async fn task(&self, name: &str) -> Task {
        self.api.get(name).await.unwrap()
    }

    async fn wait_phase(&self, name: &str, phase: &str, within: Duration) -> Task {
        let what = format!("task {name} in phase {phase}");
        eventually(within, &what, || async {
            let t: Task = self.api.get(name).await.ok()?;
            (t.status.as_ref()?.phase == phase).then_some(t)
        })
        .await
    }
}

fn st(t: &Task) -> &voiyd_messages::v1::TaskStatus {
    t.status.as_ref().expect("status")
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn run_stop_start_delete_on_real_containerd() {
    let c = Cluster::start().await;
    let _n1 = c.node("n1", &[]);
    eventually(Duration::from_secs(15), "node n1 ready", || async {
        let out = voiydctl(&c.server.url, &["get", "nodes"], None, &[]);
        stdout(&out).contains("Ready").then_some(())
    })
    .await;

    let image = c.registry.image("busybox");
    let out = c.ok(&[
        "run",
        "web",
        "--image",
        &image,
        "--stop-grace",
        "1s",
        "--timeout",
        "60s",
        "--",
        "sleep",
        "1000",
    ]);
    assert!(out.to_lowercase().contains("running"), "{out}");
    let t = c.task("web").await;
    assert_eq!(st(&t).node, "n1");
    assert!(st(&t).pid > 0 && pid_alive(st(&t).pid), "{:?}", t.status);
    let table = c.ok(&["get", "tasks"]);
    assert!(
        table.contains("web") && table.contains("Running") && table.contains("n1"),
        "{table}"
    );

    // stop: sleep as PID 1 ignores SIGTERM, so this needs the SIGKILL after the grace
    let pid = st(&t).pid;
    c.ok(&["stop", "task", "web", "--timeout", "30s"]);
    let t = c.task("web").await;
    assert_eq!(st(&t).phase, "Stopped");
    eventually(Duration::from_secs(5), "process gone", || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;

    c.ok(&["start", "task", "web", "--timeout", "60s"]);
    let t = c
        .wait_phase("web", "Running", Duration::from_secs(30))
        .await;
    assert_ne!(st(&t).pid, pid);

    // delete returns once the node stopped the container (sleep ignores SIGTERM: this
    // waits out the 1 s grace), not as soon as the spec is gone.
    let pid = st(&t).pid;
    c.ok(&["delete", "task", "web", "--timeout", "30s"]);
    assert!(
        !pid_alive(pid),
        "delete returned while the container still ran"
    );
    // nothing left in containerd for this node's namespace
    let ns = format!("voiyd-n1-{}", std::process::id());
    eventually(Duration::from_secs(20), "container removed", || async {
        let out = std::process::Command::new("ctr")
            .args([
                "--address",
                c.containerd.socket.to_str().unwrap(),
                "-n",
                &ns,
                "containers",
                "ls",
                "-q",
            ])
            .output()
            .ok()?;
        let tasks = std::process::Command::new("ctr")
            .args([
                "--address",
                c.containerd.socket.to_str().unwrap(),
                "-n",
                &ns,
                "snapshots",
                "ls",
            ])
            .output()
            .ok()?;
        let snaps = String::from_utf8_lossy(&tasks.stdout)
            .lines()
            .filter(|l| l.contains("web"))
            .count();
        (String::from_utf8_lossy(&out.stdout).trim().is_empty() && snaps == 0).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn env_args_user_workdir_exit_codes_and_restart_policies() {
    let c = Cluster::start().await;
    let n1 = c.node("n1", &[]);
    let multi = c.registry.image("multi");
    let busybox = c.registry.image("busybox");

    // The multi-layer image's user, working dir and entrypoint; task env and args.
    c.ok(&[
        "run",
        "probe",
        "--image",
        &multi,
        "-e",
        "FOO=bar",
        "--restart",
        "never",
        "--no-wait",
        "--",
        "echo uid=$(id -u) gid=$(id -g) pwd=$(pwd) foo=$FOO",
    ]);
    let t = c
        .wait_phase("probe", "Succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(st(&t).exit_code, 0);
    let out = eventually(Duration::from_secs(5), "probe output", || async {
        let lines = n1.task_output("probe");
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert!(
        out.iter()
            .any(|l| l == "uid=1000 gid=1000 pwd=/work foo=bar"),
        "{out:?}"
    );

    // --user and --workdir override the image
    c.ok(&[
        "run",
        "root",
        "--image",
        &multi,
        "--user",
        "0",
        "--workdir",
        "/tmp",
        "--restart",
        "never",
        "--no-wait",
        "--",
        "echo uid=$(id -u) pwd=$(pwd)",
    ]);
    c.wait_phase("root", "Succeeded", Duration::from_secs(60))
        .await;
    let out = n1.task_output("root");
    assert!(out.iter().any(|l| l == "uid=0 pwd=/tmp"), "{out:?}");

    // exit code, never restarted
    c.ok(&[
        "run",
        "fail",
        "--image",
        &busybox,
        "--restart",
        "never",
        "--no-wait",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    let t = c
        .wait_phase("fail", "Failed", Duration::from_secs(60))
        .await;
    assert_eq!(st(&t).exit_code, 3);
    assert_eq!(st(&t).restart_count, 0);

    // on-failure: a clean exit is not restarted
    c.ok(&[
        "run",
        "once",
        "--image",
        &busybox,
        "--restart",
        "on-failure",
        "--no-wait",
        "--",
        "true",
    ]);
    let t = c
        .wait_phase("once", "Succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(st(&t).restart_count, 0);

    // always: a failing process is restarted with backoff, the count shows in status
    c.ok(&[
        "run",
        "crash",
        "--image",
        &busybox,
        "--restart",
        "always",
        "--no-wait",
        "--",
        "sh",
        "-c",
        "echo boom; exit 1",
    ]);
    let t = eventually(Duration::from_secs(30), "two restarts", || async {
        let t: Task = c.api.get("crash").await.ok()?;
        (st(&t).restart_count >= 2).then_some(t)
    })
    .await;
    assert!(st(&t).restart_count >= 2);
    assert!(
        n1.task_output("crash")
            .iter()
            .filter(|l| *l == "boom")
            .count()
            >= 2
    );
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn agent_and_containerd_restarts_leave_containers_running() {
    let mut c = Cluster::start().await;
    let mut n1 = c.node("n1", &[]);
    let image = c.registry.image("busybox");
    c.ok(&[
        "run",
        "tick",
        "--image",
        &image,
        "--timeout",
        "60s",
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]);
    let pid = st(&c.task("tick").await).pid;

    // kill -9 the agent: the container keeps running; a new agent re-attaches, logs go on
    n1.proc.signal(Signal::KILL);
    let _ = n1.proc.child.wait();
    assert!(pid_alive(pid));
    n1.restart(1);
    let before = n1.task_output("tick").len();
    eventually(
        Duration::from_secs(20),
        "logs continue after agent restart",
        || async { (n1.task_output("tick").len() > before + 5).then_some(()) },
    )
    .await;
    let t = c
        .wait_phase("tick", "Running", Duration::from_secs(10))
        .await;
    assert_eq!(
        st(&t).pid,
        pid,
        "the agent restart must not restart the container"
    );

    // restart containerd: the shim keeps the task; the agent reconnects and sees it running
    let cd_pid = c.containerd.pid;
    voiyd_tests::kill(cd_pid as u32, Signal::KILL);
    eventually(Duration::from_secs(10), "containerd gone", || async {
        (!pid_alive(cd_pid as u32)).then_some(())
    })
    .await;
    assert!(pid_alive(pid));
    let script = voiyd_testkit::containerd::scripts_dir().join("start-containerd.sh");
    let out = std::process::Command::new(script)
        .arg(c.containerd.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.containerd.pid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let before = n1.task_output("tick").len();
    eventually(
        Duration::from_secs(20),
        "logs continue after containerd restart",
        || async { (n1.task_output("tick").len() > before + 5).then_some(()) },
    )
    .await;
    // a stop still works through the restarted containerd
    c.ok(&["stop", "task", "tick", "--timeout", "30s"]);
    assert!(!pid_alive(pid));
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn pull_failures_are_reported_with_the_registry_reason() {
    let c = Cluster::start().await;
    let _n1 = c.node("n1", &[]);
    let missing = format!("{}/voiyd/nope:1", c.registry.host);
    let (ok, out) = c.ctl(&["run", "ghost", "--image", &missing, "--timeout", "60s"]);
    assert!(!ok, "run of a missing image must fail: {out}");
    let t = c.task("ghost").await;
    assert_eq!(st(&t).phase, "Failed");
    assert_eq!(st(&t).reason, "PullFailed");
    assert!(
        st(&t).message.contains("404") || st(&t).message.contains("unknown"),
        "{}",
        st(&t).message
    );
    assert!(
        out.contains("PullFailed") || out.contains("unknown"),
        "{out}"
    );

    let port = voiyd_testkit::nats::free_port();
    let unreachable = format!("127.0.0.1:{port}/voiyd/busybox:test");
    c.ok(&["run", "nowhere", "--image", &unreachable, "--no-wait"]);
    let t = c
        .wait_phase("nowhere", "Failed", Duration::from_secs(60))
        .await;
    assert!(
        st(&t).message.contains(&port.to_string()),
        "{}",
        st(&t).message
    );
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn two_nodes_each_run_only_their_own_work() {
    let c = Cluster::start().await;
    let n1 = c.node("n1", &["--labels", "zone=a"]);
    let n2 = c.node("n2", &["--labels", "zone=b"]);
    let image = c.registry.image("busybox");
    for (task, zone) in [("a1", "a"), ("b1", "b"), ("a2", "a")] {
        c.ok(&[
            "run",
            task,
            "--image",
            &image,
            "--node-selector",
            &format!("zone={zone}"),
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            &format!("echo on-{task}; sleep 1000"),
        ]);
    }
    for (task, node) in [("a1", "n1"), ("b1", "n2"), ("a2", "n1")] {
        assert_eq!(st(&c.task(task).await).node, node);
    }
    eventually(Duration::from_secs(10), "outputs", || async {
        (n1.task_output("a1").contains(&"on-a1".to_string())
            && n2.task_output("b1").contains(&"on-b1".to_string()))
        .then_some(())
    })
    .await;
    assert!(n2.task_output("a1").is_empty() && n1.task_output("b1").is_empty());

    // an unmatched selector stays Pending with an explanation
    let (ok, _) = c.ctl(&[
        "run",
        "c1",
        "--image",
        &image,
        "--node-selector",
        "zone=c",
        "--timeout",
        "3s",
    ]);
    assert!(!ok);
    let t = c.task("c1").await;
    assert_eq!(st(&t).phase, "Pending");
    assert!(
        st(&t).message.contains("node selector mismatch"),
        "{}",
        st(&t).message
    );
}
