//! Smoke test: containers run from the unpacked snapshots with a spec from `build_spec`
//! (real containerd, runc and registry; needs root).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::types::Mount;
use voiyd_messages::v1::TaskConfig;
use voiyd_node::containerd::client::Containerd;
use voiyd_node::image::{pull, PullOptions, PullPolicy, PulledImage};
use voiyd_node::spec::{build_spec, SpecInput};
use voiyd_testkit::containerd::{TestContainerd, TestRegistry};

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

fn mount_all(mounts: &[Mount], target: &Path) {
    for m in mounts {
        let mut cmd = Command::new("mount");
        if m.r#type == "bind" {
            let mut opts = m.options.clone();
            opts.retain(|o| o != "rbind");
            opts.insert(0, "bind".into());
            cmd.args(["-o", &opts.join(",")]);
        } else {
            cmd.args(["-t", &m.r#type, "-o", &m.options.join(",")]);
        }
        let st = cmd.arg(&m.source).arg(target).status().unwrap();
        assert!(st.success(), "mount {m:?}");
    }
}

/// Reads /etc/passwd and /etc/group of an image through a read-only view of its snapshot.
async fn read_user_files(cd: &Containerd, img: &PulledImage) -> (Option<String>, Option<String>) {
    let lease = cd.create_lease(Duration::from_secs(300)).await.unwrap();
    let key = format!("view-{}", img.chain_id);
    let mounts = cd
        .snapshots()
        .view(lease.request(ViewSnapshotRequest {
            snapshotter: img.snapshotter.clone(),
            key: key.clone(),
            parent: img.chain_id.clone(),
            labels: HashMap::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let dir = tempfile::tempdir().unwrap();
    mount_all(&mounts, dir.path());
    let passwd = std::fs::read_to_string(dir.path().join("etc/passwd")).ok();
    let group = std::fs::read_to_string(dir.path().join("etc/group")).ok();
    assert!(Command::new("umount")
        .arg(dir.path())
        .status()
        .unwrap()
        .success());
    cd.snapshots()
        .remove(lease.request(RemoveSnapshotRequest {
            snapshotter: img.snapshotter.clone(),
            key,
        }))
        .await
        .unwrap();
    lease.release().await.unwrap();
    (passwd, group)
}

/// Creates a container from `img` with `task`, runs it to completion and returns its exit status.
async fn run_to_exit(cd: &Containerd, id: &str, img: &PulledImage, task: &TaskConfig) -> u32 {
    let (passwd, group) = read_user_files(cd, img).await;
    let spec = build_spec(&SpecInput {
        task_name: id,
        config: task,
        image: &img.config,
        rootfs_path: "rootfs".into(),
        passwd,
        group,
        netns_path: None,
        mounts: vec![],
        hosts_path: None,
        resolv_path: None,
        cgroups_path: format!("/voiyd-test/{}/{id}", cd.namespace()),
    })
    .unwrap();

    let lease = cd.create_lease(Duration::from_secs(300)).await.unwrap();
    let rootfs = cd
        .snapshots()
        .prepare(lease.request(PrepareSnapshotRequest {
            snapshotter: img.snapshotter.clone(),
            key: id.to_string(),
            parent: img.chain_id.clone(),
            labels: HashMap::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    cd.containers()
        .create(lease.request(CreateContainerRequest {
            container: Some(Container {
                id: id.to_string(),
                image: img.name.clone(),
                runtime: Some(Runtime {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&spec).unwrap(),
                }),
                snapshotter: img.snapshotter.clone(),
                snapshot_key: id.to_string(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    cd.tasks()
        .create(lease.request(CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            ..Default::default()
        }))
        .await
        .unwrap();
    cd.tasks()
        .start(cd.request(StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        cd.tasks().wait(cd.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })),
    )
    .await
    .expect("task exits within 30s")
    .unwrap()
    .into_inner()
    .exit_status;

    cd.tasks()
        .delete(cd.request(DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .unwrap();
    cd.containers()
        .delete(cd.request(DeleteContainerRequest { id: id.to_string() }))
        .await
        .unwrap();
    cd.snapshots()
        .remove(cd.request(RemoveSnapshotRequest {
            snapshotter: img.snapshotter.clone(),
            key: id.to_string(),
        }))
        .await
        .unwrap();
    lease.release().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn containers_run_from_unpacked_snapshots() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ctd = TestContainerd::start();
    let reg = TestRegistry::start();
    let cd = ctd.connect().await.unwrap();
    let opts = PullOptions {
        policy: PullPolicy::Always,
        ..PullOptions::default()
    };

    let busybox = pull(&cd, &reg.image("busybox"), &opts, |_| {})
        .await
        .unwrap();
    let ok = TaskConfig {
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec![
            "echo hi >/dev/null && test -x /bin/busybox && test \"$(hostname)\" = bb-ok".into(),
        ],
        ..Default::default()
    };
    assert_eq!(
        run_to_exit(&cd, "bb-ok", &busybox, &ok).await,
        0,
        "{}",
        ctd.log()
    );
    // The exit status is really the process's: a failing command is seen as such.
    let fail = TaskConfig {
        command: vec!["/bin/sh".into(), "-c".into(), "exit 3".into()],
        ..Default::default()
    };
    assert_eq!(run_to_exit(&cd, "bb-fail", &busybox, &fail).await, 3);

    // The multi-layer image runs with its own entrypoint, named user, workdir and env; layer 3's
    // file is there and its whiteout removed layer 2's /etc/motd.
    let multi = pull(&cd, &reg.image("multi"), &opts, |_| {}).await.unwrap();
    let check = TaskConfig {
        args: vec![[
            "test \"$(id -u):$(id -g)\" = 1000:1000",
            "test \"$(pwd)\" = /work",
            "test -f hello.txt",
            "test ! -e /etc/motd",
            "test \"$GREETING\" = hello",
            "test \"$HOME\" = /work",
        ]
        .join(" && ")],
        ..Default::default()
    };
    assert_eq!(
        run_to_exit(&cd, "multi-ok", &multi, &check).await,
        0,
        "{}",
        ctd.log()
    );
}
