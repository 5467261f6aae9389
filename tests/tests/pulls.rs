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

/// A task names its own pull secret: the node pulls through the registry's token flow
/// with those credentials, and a task without it fails with a reason that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn a_task_pulls_with_its_own_pull_secret() {
    let c = ContainerdCluster::start_with(&[]).await;
    let _n = c.start_node("pull2").await;
    let private = voiyd_testkit::containerd::TestRegistry::start_with_token_auth("carol", "pw-9d2");
    let image = private.image("busybox");
    let task = |name: &str, secret: &str| {
        format!(
            "version: task/v1\nmeta: {{name: {name}}}\nconfig:\n  image: {image}\n  args: [echo, pulled]\n  restartPolicy: never\n  imagePullSecret: '{secret}'\n"
        )
    };
    c.ok(&[
        "create",
        "secret",
        "regcred",
        "--from-literal",
        "username=carol",
        "--from-literal",
        "password=pw-9d2",
    ]);
    let (issued_before, _) = private.token_stats();
    c.apply(&task("with-secret", "regcred"));
    c.apply(&task("without", ""));
    let phase = |name: &'static str| {
        let api = c.api.clone();
        async move {
            let t: Task = api.get(name).await.ok()?;
            let st = t.status?;
            matches!(st.phase.as_str(), "Succeeded" | "Failed")
                .then(|| (st.phase, st.reason, st.message))
        }
    };
    let (p, reason, message) = eventually(Duration::from_secs(60), "with-secret done", || {
        phase("with-secret")
    })
    .await;
    assert_eq!(p, "Succeeded", "{reason}: {message}");
    assert_eq!(
        stdout(&c.voiydctl(&["logs", "with-secret"])).trim(),
        "pulled"
    );
    assert!(private.token_stats().0 > issued_before);
    let (p, reason, message) =
        eventually(Duration::from_secs(60), "without done", || phase("without")).await;
    assert_eq!(p, "Failed");
    assert_eq!(reason, "PullFailed");
    assert!(message.contains("the token service refused"), "{message}");
    // A set's template names it the same way: every replica pulls with it.
    c.apply(&format!(
        "version: containerset/v1\nmeta: {{name: privset}}\nreplicas: 2\ntemplate:\n  image: {image}\n  args: [sleep, '3600']\n  stopGracePeriod: 1s\n  imagePullSecret: regcred\n"
    ));
    for replica in ["privset-0", "privset-1"] {
        eventually(Duration::from_secs(60), replica, || async {
            let t: Task = c.api.get(replica).await.ok()?;
            let st = t.status?;
            assert_ne!(st.phase, "Failed", "{}: {}", st.reason, st.message);
            (st.phase == "Running").then_some(())
        })
        .await;
    }
}
