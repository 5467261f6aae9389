//! Pulls as registries serve images, on real containerd: a Docker schema-2 manifest, an
//! OCI image with zstd-compressed layers, and a multi-platform index (the node picks its
//! own platform), each run to completion.

use std::time::Duration;
use voiyd_messages::v1::Task;
use voiyd_tests::{eventually, stdout, ContainerdCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn schema2_zstd_and_multi_platform_images_run() {
    let c = ContainerdCluster::start_with(&[]).await;
    let _n = c.start_node("pull1").await;
    for (task, image) in [
        ("s2", "busybox-schema2"),
        ("zs", "busybox-zstd"),
        ("ma", "multiarch"),
    ] {
        c.ok(&[
            "run",
            task,
            "--image",
            &c.registry.image(image),
            "--restart",
            "never",
            "--no-wait",
            "--",
            "sh",
            "-c",
            "echo ran-${PICKED:-plain}",
        ]);
    }
    for (task, want) in [
        ("s2", "ran-plain"),
        ("zs", "ran-plain"),
        ("ma", "ran-native"),
    ] {
        eventually(
            Duration::from_secs(60),
            &format!("{task} succeeded"),
            || async {
                let t: Task = c.api.get(task).await.ok()?;
                let st = t.status?;
                assert_ne!(st.phase, "Failed", "{task}: {} {}", st.reason, st.message);
                (st.phase == "Succeeded").then_some(())
            },
        )
        .await;
        let out = stdout(&c.voiydctl(&["logs", task]));
        assert_eq!(out.trim(), want, "{task}");
    }
}
