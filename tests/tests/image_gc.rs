//! Image garbage collection on real containerd: with the disk "full" (a high mark of 0%),
//! an image no container uses goes once it is older than the minimum age, and the image
//! of a running task stays.

use std::time::Duration;
use voiyd_messages::v1::Task;
use voiyd_tests::{ctr_rows, eventually, stdout, ContainerdCluster};

fn images(c: &ContainerdCluster, node: &str) -> Vec<String> {
    ctr_rows(&c.containerd.socket, node, &["images", "ls", "-q"])
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn unused_images_are_collected_and_used_ones_kept() {
    let c = ContainerdCluster::start_with(&[]).await;
    let root = c.containerd.dir.path().to_str().unwrap().to_string();
    let _n = c.agent(
        "gc1",
        &[
            "--image-gc-high",
            "0",
            "--image-gc-low",
            "0",
            "--image-gc-every",
            "1",
            "--image-gc-min-age",
            "3s",
            "--containerd-root",
            &root,
        ],
    );
    eventually(Duration::from_secs(20), "gc1 ready", || async {
        stdout(&c.voiydctl(&["get", "nodes"]))
            .contains(" Ready")
            .then_some(())
    })
    .await;
    // Two images sharing the busybox layer, each run by a task (healthy's Cmd sleeps).
    let (kept, gone) = (c.registry.image("busybox"), c.registry.image("healthy"));
    c.ok(&[
        "run",
        "keep",
        "--image",
        &kept,
        "--stop-grace",
        "1s",
        "--no-wait",
        "--",
        "sleep",
        "3600",
    ]);
    c.ok(&[
        "run",
        "once",
        "--image",
        &gone,
        "--stop-grace",
        "1s",
        "--no-wait",
    ]);
    eventually(Duration::from_secs(60), "both running", || async {
        let mut all = true;
        for t in ["keep", "once"] {
            let t: Task = c.api.get(t).await.ok()?;
            all &= t.status.is_some_and(|s| s.phase == "Running");
        }
        all.then_some(())
    })
    .await;
    // Both in use: both stay, however full the disk (five seconds of checks every second).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let now = images(&c, "gc1");
        assert!(now.contains(&kept) && now.contains(&gone), "{now:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Its task deleted, the image is unused: collected within a few checks.
    c.ok(&["delete", "task", "once", "--force"]);
    eventually(
        Duration::from_secs(30),
        "the unused image removed",
        || async { (!images(&c, "gc1").contains(&gone)).then_some(()) },
    )
    .await;
    assert!(
        images(&c, "gc1").contains(&kept),
        "the used image was removed"
    );
}
