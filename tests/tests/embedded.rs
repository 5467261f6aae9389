//! voiyd-server's embedded NATS: supervised, restarted when killed, never orphaned.

use std::time::Duration;
use voiyd_messages::v1::{Meta, Task, TaskConfig};
use voiyd_tests::Signal;
use voiyd_tests::{eventually, nats_child, pid_alive, Server};

#[tokio::test]
async fn killed_nats_is_restarted_and_state_survives() {
    let server = Server::embedded().await;
    let api = server.api().await;
    let t = Task {
        version: "task/v1".into(),
        meta: Some(Meta {
            name: "keep".into(),
            ..Default::default()
        }),
        config: Some(TaskConfig {
            image: "busybox:1".into(),
            ..Default::default()
        }),
        status: None,
    };
    api.create(&t).await.unwrap();

    let first = nats_child(server.proc.pid()).expect("embedded nats-server child");
    voiyd_tests::kill(first, Signal::KILL);
    let second = eventually(Duration::from_secs(15), "nats-server restarted", || async {
        nats_child(server.proc.pid()).filter(|p| *p != first)
    })
    .await;
    assert_ne!(first, second);
    server.wait_ready().await;
    let got: Task = eventually(
        Duration::from_secs(15),
        "task readable after restart",
        || {
            let api = api.clone();
            async move { api.get::<Task>("keep").await.ok() }
        },
    )
    .await;
    assert_eq!(got.config.unwrap().image, "busybox:1");
}

#[tokio::test]
async fn no_orphan_when_the_server_is_killed_or_stopped() {
    let server = Server::embedded().await;
    let child = nats_child(server.proc.pid()).expect("embedded nats-server child");
    server.proc.signal(Signal::KILL);
    eventually(
        Duration::from_secs(10),
        "nats-server gone after SIGKILL of its parent",
        || async { (!pid_alive(child)).then_some(()) },
    )
    .await;

    let mut server = Server::embedded().await;
    let child = nats_child(server.proc.pid()).expect("embedded nats-server child");
    let status = server
        .proc
        .stop(Duration::from_secs(10))
        .expect("server exited");
    assert!(
        status.success(),
        "voiyd-server exit status {status}: {}",
        server.proc.log_text()
    );
    eventually(
        Duration::from_secs(10),
        "nats-server gone after SIGTERM",
        || async { (!pid_alive(child)).then_some(()) },
    )
    .await;
}
