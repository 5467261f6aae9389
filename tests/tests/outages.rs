//! Control-plane outages stop nothing: a voiyd-server in its default (embedded NATS)
//! set-up is killed for 30 s, restarted, and its nats-server killed, while a real
//! container runs on a real containerd; the container keeps its process throughout.

use std::time::{Duration, Instant};
use voiyd_messages::v1::{Meta, Node, Task, TaskConfig};
use voiyd_nats::api::ApiClient;
use voiyd_testkit::containerd::{TestContainerd, TestRegistry};
use voiyd_tests::Signal;
use voiyd_tests::{eventually, nats_child, task_pids, wait_nodes, NodeAgent, Server};

const NODE: &str = "steady";

fn sleeper(registry: &TestRegistry) -> Task {
    Task {
        version: "task/v1".into(),
        meta: Some(Meta {
            name: "svc".into(),
            ..Default::default()
        }),
        config: Some(TaskConfig {
            image: registry.image("busybox"),
            args: vec!["sleep".into(), "1000".into()],
            stop_grace_period: "1s".into(),
            ..Default::default()
        }),
        status: None,
    }
}

/// Checks, once a second for `outage`, that the container still runs as `pid`.
fn same_process_for(containerd: &TestContainerd, pid: u32, outage: Duration, what: &str) {
    let start = Instant::now();
    while start.elapsed() < outage {
        assert_eq!(
            task_pids(&containerd.socket, NODE, "svc"),
            vec![pid],
            "{what}: the container lost its process {:?} into the outage",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// After an outage: the node is Ready again and the task Running as the same process,
/// never restarted or moved.
async fn settled(api: &ApiClient, containerd: &TestContainerd, pid: u32, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        let node: Node = api.get(NODE).await.ok()?;
        let st = api.get::<Task>("svc").await.ok()?.status?;
        (node.status?.phase == "Ready" && st.phase == "Running").then_some(())
    })
    .await;
    let st = api.get::<Task>("svc").await.unwrap().status.unwrap();
    assert_eq!(
        (
            st.node.as_str(),
            st.pid,
            st.restart_count,
            st.reschedule_count
        ),
        (NODE, pid, 0, 0),
        "{what}: {st:?}"
    );
    assert_eq!(
        task_pids(&containerd.socket, NODE, "svc"),
        vec![pid],
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn server_and_nats_outages_never_stop_a_container() {
    let registry = TestRegistry::start();
    let containerd = TestContainerd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::embedded().await;
    let api = server.api().await;
    let agent = NodeAgent::start(
        &server.url,
        NODE,
        &containerd.socket,
        &dir.path().join(NODE),
        &[],
    );
    wait_nodes(&api, 1).await;
    api.create(&sleeper(&registry)).await.unwrap();
    let pid = eventually(Duration::from_secs(60), "svc running", || async {
        let st = api.get::<Task>("svc").await.ok()?.status?;
        (st.phase == "Running" && st.pid > 0).then_some(st.pid)
    })
    .await;
    assert_eq!(task_pids(&containerd.socket, NODE, "svc"), vec![pid]);

    // kill -9 of voiyd-server takes its embedded nats-server down with it, for 30 s:
    // far past the node's 5 s fencing timeout and the servers' 5 s node timeout.
    server.kill();
    same_process_for(&containerd, pid, Duration::from_secs(30), "server killed");
    server.restart().await;
    settled(&api, &containerd, pid, "back after a kill -9 of 30 s").await;

    // A clean restart with the same data dir.
    server.proc.stop(Duration::from_secs(10));
    same_process_for(&containerd, pid, Duration::from_secs(3), "server stopped");
    server.restart().await;
    settled(&api, &containerd, pid, "back after a restart").await;

    // kill -9 of the embedded nats-server alone: the server restarts it.
    let nats = nats_child(server.proc.pid()).expect("embedded nats-server child");
    voiyd_tests::kill(nats, Signal::KILL);
    eventually(Duration::from_secs(15), "nats-server restarted", || async {
        nats_child(server.proc.pid()).filter(|p| *p != nats)
    })
    .await;
    settled(
        &api,
        &containerd,
        pid,
        "back after a kill -9 of nats-server",
    )
    .await;

    // The node saw every outage, stopped nothing and started nothing again.
    let log = agent.proc.log_text();
    assert!(log.contains("disconnected from NATS"), "{log}");
    assert_eq!(
        log.matches("container started").count(),
        1,
        "the container was started again:\n{log}"
    );
}
