//! The web dashboard in a real browser (headless Chromium through chromedriver) against
//! a real server, node, containerd and registry: it shows what the cluster holds,
//! explains a pending task, follows a task's logs live, redraws as events arrive, and
//! its actions (scale, cordon) change the cluster after asking for confirmation.

use std::time::Duration;
use voiyd_testkit::nats::free_port;
use voiyd_tests::browser::Browser;
use voiyd_tests::{eventually, stdout, ContainerdCluster};

/// The highest `tick N` in the text.
fn last_tick(text: &str) -> u32 {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("tick "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd + chromium: scripts/test.sh runs it"]
async fn dashboard_shows_the_cluster_live_and_acts_after_confirmation() {
    let addr = format!("127.0.0.1:{}", free_port());
    let c = ContainerdCluster::start_with(&["--http-addr", &addr]).await;
    let _n1 = c.start_node("n1").await;
    let image = c.registry.image("busybox");
    c.apply(&format!(
        "version: task/v1
meta: {{name: talker}}
config:
  image: {image}
  args: [sh, -c, 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done']
  stopGracePeriod: 1s
---
version: task/v1
meta: {{name: greedy}}
config:
  image: {image}
  args: [sleep, '3600']
  resources: {{cpu: '64'}}
---
version: containerset/v1
meta: {{name: web}}
replicas: 1
template:
  image: {image}
  args: [sleep, '3600']
  stopGracePeriod: 1s
"
    ));
    let dir = tempfile::tempdir().unwrap();
    let b = Browser::start(dir.path()).await;
    let base = format!("http://{addr}/");

    // Overview: the node with its capacity, the tasks, and why one waits, in words.
    b.go(&base).await;
    b.wait_for_text(
        &[
            "n1",
            "nodes ready",
            "Waiting for a node",
            "greedy",
            "not enough free CPU",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert!(
        b.script("return document.getElementById('live').textContent")
            .await
            == "live",
        "the event stream is connected"
    );
    // Redrawn without a reload as the cluster changes: a task created now shows up.
    c.ok(&[
        "run",
        "late",
        "--image",
        &image,
        "--no-wait",
        "--",
        "sleep",
        "3600",
    ]);
    b.wait_for_text(&["late"], Duration::from_secs(15)).await;

    // A task's page: status, and its output followed live.
    b.go(&format!("{base}#/task/talker")).await;
    let text = b
        .wait_for_text(
            &["Task talker", "Running", "tick "],
            Duration::from_secs(30),
        )
        .await;
    let seen = last_tick(&text);
    eventually(
        Duration::from_secs(15),
        "newer log lines on the page",
        || async { (last_tick(&b.text().await) > seen + 2).then_some(()) },
    )
    .await;
    // The console: a shell in the container, line by line over a WebSocket.
    b.click("#console-open").await;
    b.wait_for_text(&["connected: sh in task talker"], Duration::from_secs(15))
        .await;
    let run = |line: &str| {
        format!(
            "const i = document.getElementById('console-in'); i.value = {}; document.getElementById('console-form').requestSubmit(); return true",
            serde_json::to_string(line).unwrap()
        )
    };
    b.script(&run("echo hi-$((6*7)) from $(hostname)")).await;
    b.wait_for_text(&["hi-42 from talker"], Duration::from_secs(15))
        .await;
    b.script(&run("echo oops >&2; exit 3")).await;
    b.wait_for_text(&["oops", "[exited with code 3]"], Duration::from_secs(15))
        .await;
    let err = b
        .script("return [...document.querySelectorAll('#console-out .stderr')].map(e => e.textContent).join('')")
        .await;
    assert!(err.as_str().unwrap_or("").contains("oops"), "{err}");

    // The same logs as text over HTTP, the last lines only.
    let o = std::process::Command::new("curl")
        .args([
            "-sS",
            &format!("http://{addr}/api/v1/tasks/talker/logs?tail=3"),
        ])
        .output()
        .unwrap();
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().all(|l| l.starts_with("tick ")), "{text}");
    // The pending task's page says why.
    b.go(&format!("{base}#/task/greedy")).await;
    b.wait_for_text(
        &[
            "Task greedy",
            "No node can take it now",
            "1 node: not enough free CPU",
        ],
        Duration::from_secs(15),
    )
    .await;

    // A set: scale from the page, asked for the number, then for confirmation.
    b.go(&format!("{base}#/set/web")).await;
    b.wait_for_text(&["Set web", "1/1", "web-0"], Duration::from_secs(30))
        .await;
    b.click("button[data-act=scale]").await;
    assert!(b.dialog().await.contains("Replicas for set web"));
    b.answer("2").await;
    b.accept().await;
    assert_eq!(b.dialog().await, "Scale set web to 2?");
    b.accept().await;
    eventually(
        Duration::from_secs(30),
        "set web at 2 ready replicas on the page",
        || async {
            let text = b.text().await;
            (text.contains("2/2") && text.contains("web-1")).then_some(())
        },
    )
    .await;
    let o = c.ok(&["get", "set", "web", "-o", "json"]);
    let set: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(set["replicas"], 2);
    // Cancelled: nothing happens.
    b.click("button[data-act=delete]").await;
    assert_eq!(b.dialog().await, "Delete set web?");
    b.dismiss().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.voiydctl(&["get", "set", "web"]).status.success(),
        "a cancelled delete deleted"
    );

    // A node: cordon after confirmation.
    b.go(&format!("{base}#/node/n1")).await;
    b.wait_for_text(&["Node n1", "Ready", "talker"], Duration::from_secs(15))
        .await;
    b.click("button[data-act=cordon]").await;
    assert!(b.dialog().await.starts_with("Cordon node n1?"));
    b.accept().await;
    b.wait_for_text(&["cordoned", "Uncordon"], Duration::from_secs(15))
        .await;
    let o = c.ok(&["get", "node", "n1", "-o", "json"]);
    let node: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(node["config"]["unschedulable"], true);
}
