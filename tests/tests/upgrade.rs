//! `voiydctl upgrade nodes` on two real agents and real containers: both move to a changed
//! binary (same code, different digest) without a container or the agent's process id
//! changing; a broken binary stops the upgrade at the first node, which keeps its binary.

use std::path::Path;
use std::time::Duration;
use voiyd_messages::v1::Node;
use voiyd_tests::{eventually, stderr, stdout, task_pids, ContainerdCluster, NodeAgent};

fn digest_of(path: &Path) -> String {
    voiyd_node::upgrade::file_digest(path).unwrap()
}

async fn agent_digest(c: &ContainerdCluster, node: &str) -> String {
    c.api
        .get::<Node>(node)
        .await
        .ok()
        .and_then(|n| n.status)
        .map(|s| s.agent_digest)
        .unwrap_or_default()
}

async fn ready_node(c: &ContainerdCluster, name: &str) -> NodeAgent {
    let n = c.agent(name, &["--upgradable"]);
    eventually(
        Duration::from_secs(20),
        &format!("{name} ready"),
        || async {
            let out = stdout(&c.voiydctl(&["get", "nodes"]));
            out.lines()
                .any(|l| l.starts_with(name) && l.contains(" Ready"))
                .then_some(())
        },
    )
    .await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn agents_upgrade_in_place_and_a_broken_binary_stops_the_rollout() {
    let c = ContainerdCluster::start_with(&[]).await;
    let n1 = ready_node(&c, "n1").await;
    let n2 = ready_node(&c, "n2").await;
    let image = c.registry.image("busybox");
    for (task, node) in [("a", "n1"), ("b", "n2")] {
        c.apply(&format!(
            "version: task/v1\nmeta: {{name: {task}}}\nconfig:\n  image: {image}\n  args: [sleep, '3600']\n  nodeSelector: {{voiyd.io/node: {node}}}\n"
        ));
    }
    let pids = |task: &str, node: &str| task_pids(&c.containerd.socket, node, task);
    let before = eventually(Duration::from_secs(60), "both tasks running", || async {
        let (a, b) = (pids("a", "n1"), pids("b", "n2"));
        (!a.is_empty() && !b.is_empty()).then_some((a, b))
    })
    .await;
    let original = digest_of(n1.program());
    assert_eq!(agent_digest(&c, "n1").await, original);

    // The same code with bytes appended: another digest, still a working agent.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("voiyd-node");
    let mut bytes = std::fs::read(n1.program()).unwrap();
    bytes.extend_from_slice(b"\nvoiyd upgrade test\n");
    std::fs::write(&changed, &bytes).unwrap();
    let new = digest_of(&changed);
    let (pid1, pid2) = (n1.proc.pid(), n2.proc.pid());
    let out = c.voiydctl(&[
        "upgrade",
        "nodes",
        "--binary",
        changed.to_str().unwrap(),
        "--timeout",
        "60s",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    eprintln!("{said}{}", stderr(&out));
    assert!(said.contains("n1: ") && said.contains("n2: "), "{said}");
    for node in [&n1, &n2] {
        assert_eq!(
            digest_of(node.program()),
            new,
            "{} binary not replaced",
            node.name
        );
        let mut prev = node.program().as_os_str().to_owned();
        prev.push(".prev");
        assert_eq!(
            digest_of(Path::new(&prev)),
            original,
            "{}: old binary kept",
            node.name
        );
    }
    assert_eq!(agent_digest(&c, "n1").await, new);
    assert_eq!(agent_digest(&c, "n2").await, new);
    // Re-executed in place: same processes; the containers were never touched.
    assert!(voiyd_tests::pid_alive(pid1) && voiyd_tests::pid_alive(pid2));
    assert_eq!((n1.proc.pid(), n2.proc.pid()), (pid1, pid2));
    assert_eq!((pids("a", "n1"), pids("b", "n2")), before);
    let wide = stdout(&c.voiydctl(&["get", "nodes", "-o", "wide"]));
    assert!(wide.contains(&new[..12]), "{wide}");
    // Upgrading again to what runs is nothing to do.
    let again = c.ok(&["upgrade", "nodes", "--binary", changed.to_str().unwrap()]);
    assert!(again.contains("already on"), "{again}");

    // A binary that does not run: the first node refuses it and the upgrade stops there.
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "#!/bin/sh\necho 'cannot start' >&2\nexit 1\n").unwrap();
    let out = c.voiydctl(&["upgrade", "nodes", "--binary", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("node n1") && err.contains("does not run") && err.contains("stopping"),
        "{err}"
    );
    assert!(
        !stdout(&out).contains("n2:"),
        "went on past n1: {}",
        stdout(&out)
    );
    for node in [&n1, &n2] {
        assert_eq!(
            digest_of(node.program()),
            new,
            "{} binary changed",
            node.name
        );
    }
    assert_eq!(agent_digest(&c, "n1").await, new);
    assert_eq!(agent_digest(&c, "n2").await, new);

    // Back to the binary before the last upgrade, on one node.
    c.ok(&["upgrade", "nodes", "n2", "--rollback", "--timeout", "60s"]);
    assert_eq!(digest_of(n2.program()), original);
    assert_eq!(agent_digest(&c, "n2").await, original);
    assert_eq!(n2.proc.pid(), pid2);
    assert_eq!(pids("b", "n2"), before.1);
}
