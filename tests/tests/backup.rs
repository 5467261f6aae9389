//! Backup and restore through the documented commands: `voiyd-server backup --to DIR`
//! against a running cluster, `voiyd-server --restore-from DIR` on a new one; the
//! restored cluster has every task with the same revision, and a node of the same name
//! runs them again. Bad input is refused in one line, before anything is written.

use std::time::Duration;
use voiyd_messages::v1::Task;
use voiyd_messages::Resource;
use voiyd_tests::{
    bin, eventually, sim_nodes, sim_task, stderr, stdout, voiydctl_ok, wait_nodes, Server,
};

/// Every task's name and the revision of its spec.
async fn revisions(api: &voiyd_nats::api::ApiClient) -> Vec<(String, u64)> {
    api.list::<Task>("")
        .await
        .unwrap()
        .iter()
        .map(|t| {
            (
                t.name().to_string(),
                t.meta.as_ref().unwrap().resource_version,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_into_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::embedded().await;
    let big = ["--sim-cpu", "64", "--sim-memory", "64Gi"];
    let nodes = sim_nodes(&a.url, "bk", 1, dir.path(), &big);
    let api = a.api().await;
    wait_nodes(&api, 1).await;
    for i in 0..50 {
        api.create(&sim_task(&format!("b{i:02}"))).await.unwrap();
    }
    voiydctl_ok(&a.url, &["create", "volume", "host-local", "vol1"], None);
    eventually(Duration::from_secs(30), "50 tasks Running", || async {
        let all = api.list::<Task>("").await.ok()?;
        (all.len() == 50
            && all
                .iter()
                .all(|t| t.status.as_ref().is_some_and(|s| s.phase == "Running")))
        .then_some(())
    })
    .await;
    let before = revisions(&api).await;

    let backup = dir.path().join("backup");
    let run = |args: &[&str]| {
        std::process::Command::new(bin("voiyd-server"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "backup",
        "--server",
        &a.url,
        "--to",
        backup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("restore with: voiyd-server --restore-from"),
        "{}",
        stdout(&out)
    );
    // Into the same directory again: refused, nothing mixed.
    let again = run(&[
        "backup",
        "--server",
        &a.url,
        "--to",
        backup.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("is not empty"),
        "{}",
        stderr(&again)
    );
    assert_eq!(stderr(&again).trim().lines().count(), 1);
    // No NATS there: one line saying so.
    let nowhere = run(&[
        "backup",
        "--server",
        "nats://127.0.0.1:1",
        "--to",
        dir.path().join("b2").to_str().unwrap(),
    ]);
    assert!(!nowhere.status.success());
    assert_eq!(
        stderr(&nowhere).trim().lines().count(),
        1,
        "{}",
        stderr(&nowhere)
    );
    drop(nodes);
    drop(a);

    // A new cluster from the backup.
    let port = voiyd_testkit::nats::free_port();
    let listen = format!("127.0.0.1:{port}");
    let b = Server::launch_embedded(&listen, &["--restore-from", backup.to_str().unwrap()]);
    b.wait_ready().await;
    let api_b = b.api().await;
    let after = revisions(&api_b).await;
    assert_eq!(after, before, "tasks and their revisions after the restore");
    assert!(voiydctl_ok(&b.url, &["get", "volumes"], None).contains("vol1"));
    // The node comes back under its name and runs its work again.
    let dir2 = tempfile::tempdir().unwrap();
    let _nodes_b = sim_nodes(&b.url, "bk", 1, dir2.path(), &big);
    eventually(
        Duration::from_secs(30),
        "the restored tasks Running",
        || async {
            let all = api_b.list::<Task>("").await.ok()?;
            all.iter()
                .all(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| s.phase == "Running" && s.node == "bk")
                })
                .then_some(())
        },
    )
    .await;

    // A restore into a cluster that has state is refused in one line.
    let mut c = Server::launch_embedded(
        &format!("127.0.0.1:{}", voiyd_testkit::nats::free_port()),
        &[],
    );
    c.wait_ready().await;
    let data = c.data_dir();
    c.kill();
    let out = std::process::Command::new(bin("voiyd-server"))
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--nats-listen",
            &format!("127.0.0.1:{}", voiyd_testkit::nats::free_port()),
            "--restore-from",
            backup.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    let last = err.trim().lines().last().unwrap_or("").to_string();
    assert!(last.contains("already holds"), "{err}");
    // Not a backup directory.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("voiyd-server"))
        .args([
            "--data-dir",
            dir.path().join("fresh").to_str().unwrap(),
            "--nats-listen",
            &format!("127.0.0.1:{}", voiyd_testkit::nats::free_port()),
            "--restore-from",
            empty.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a voiyd backup"),
        "{}",
        stderr(&out)
    );
}
