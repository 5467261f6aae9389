//! Workloads judged by whether they work: probes, readiness in `run` and sets, rollouts
//! that trust health, stop grace, `--force` and exit codes. Real nats-server, containerd,
//! runc, registry, voiyd-server, voiyd-node and voiydctl processes.

use std::time::{Duration, Instant};
use voiyd_messages::v1::{ContainerSet, Task};
use voiyd_tests::{eventually, running_containers, stderr, task_pids, voiydctl, ContainerdCluster};

/// The Ready condition of a task: (status, reason, message).
fn ready_of(t: &Task) -> Option<(String, String, String)> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.msg.clone()))
}

async fn task(c: &ContainerdCluster, name: &str) -> Option<Task> {
    c.api.get::<Task>(name).await.ok()
}

/// Waits until the task runs with its Ready condition at `status` and a message that
/// contains `says`; returns (reason, message).
async fn wait_ready(
    c: &ContainerdCluster,
    name: &str,
    status: &str,
    says: &str,
) -> (String, String) {
    eventually(
        Duration::from_secs(40),
        &format!("task {name} Ready={status} saying {says:?}"),
        || async {
            let t = task(c, name).await?;
            let (s, r, m) = ready_of(&t)?;
            (s == status && m.contains(says) && t.status.as_ref()?.phase == "Running")
                .then_some((r, m))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn probes_decide_readiness_and_restart_on_real_containerd() {
    let c = ContainerdCluster::start_with(&[]).await;
    let _n1 = c.start_node("n1").await;
    let image = c.registry.image("busybox");

    // Readiness by exec on a file the test creates through `voiydctl exec`.
    c.apply(&format!(
        "version: task/v1
meta: {{name: gate}}
config:
  image: {image}
  args: [sleep, '3600']
  stopGracePeriod: 1s
  readinessProbe:
    exec: {{command: [cat, /tmp/ready]}}
    periodSeconds: 1
"
    ));
    let (reason, msg) = wait_ready(&c, "gate", "False", "exit code 1").await;
    assert_eq!(reason, "Unhealthy");
    assert!(
        msg.contains("exit code 1") && msg.contains("/tmp/ready"),
        "{msg}"
    );
    let table = c.ok(&["get", "tasks"]);
    let row = table.lines().find(|l| l.starts_with("gate")).unwrap();
    assert!(row.contains("0/1") && row.contains("Running"), "{table}");
    c.ok(&["exec", "gate", "--", "touch", "/tmp/ready"]);
    wait_ready(&c, "gate", "True", "").await;
    let table = c.ok(&["get", "tasks"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("gate") && l.contains("1/1")),
        "{table}"
    );
    c.ok(&["exec", "gate", "--", "rm", "/tmp/ready"]);
    let (_, msg) = wait_ready(&c, "gate", "False", "exit code").await;
    assert!(msg.contains("readiness probe failed"), "{msg}");
    let t = task(&c, "gate").await.unwrap();
    assert_eq!(
        t.status.unwrap().restart_count,
        0,
        "readiness never restarts"
    );

    // An HTTP probe against busybox httpd: ready while it serves the page, not after.
    c.apply(&format!(
        "version: task/v1
meta: {{name: web}}
config:
  image: {image}
  args: [sh, -c, 'mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www']
  stopGracePeriod: 1s
  readinessProbe:
    httpGet: {{path: /index.html, port: 8080}}
    periodSeconds: 1
    failureThreshold: 1
"
    ));
    wait_ready(&c, "web", "True", "").await;
    c.ok(&["exec", "web", "--", "rm", "/www/index.html"]);
    let (_, msg) = wait_ready(&c, "web", "False", "status code").await;
    assert!(msg.contains("404"), "{msg}");

    // A liveness probe that fails restarts the task, with the reason and the output.
    c.apply(&format!(
        "version: task/v1
meta: {{name: doomed}}
config:
  image: {image}
  args: [sleep, '3600']
  stopGracePeriod: 1s
  livenessProbe:
    tcpSocket: {{port: 9}}
    periodSeconds: 1
    failureThreshold: 2
"
    ));
    let first_pid = eventually(Duration::from_secs(30), "doomed running", || async {
        let t = task(&c, "doomed").await?;
        let st = t.status?;
        (st.phase == "Running").then_some(st.pid)
    })
    .await;
    eventually(Duration::from_secs(40), "doomed restarted", || async {
        let st = task(&c, "doomed").await?.status?;
        (st.restart_count >= 1 && st.phase == "Running" && st.pid != first_pid).then_some(())
    })
    .await;
    let events = c.ok(&["events", "--kind", "task", "--name", "doomed", "-o", "json"]);
    assert!(
        events.contains("LivenessProbeFailed") && events.contains("dial tcp"),
        "{events}"
    );

    // An image's Docker HEALTHCHECK is the readiness probe of a task without probes.
    c.ok(&[
        "run",
        "checked",
        "--image",
        &c.registry.image("healthy"),
        "--stop-grace",
        "1s",
        "--no-wait",
    ]);
    let (_, msg) = wait_ready(&c, "checked", "False", "exit code 1").await;
    assert!(msg.contains("readiness probe failed"), "{msg}");
    c.ok(&["exec", "checked", "--", "touch", "/tmp/healthy"]);
    wait_ready(&c, "checked", "True", "").await;

    // `run --health-cmd` waits for ready, not only for running.
    let start = Instant::now();
    let out = c.ok(&[
        "run",
        "slow",
        "--image",
        &image,
        "--stop-grace",
        "1s",
        "--health-cmd",
        "test -f /tmp/up",
        "--health-interval",
        "1s",
        "--timeout",
        "40s",
        "--",
        "sh",
        "-c",
        "sleep 3; touch /tmp/up; exec sleep 3600",
    ]);
    assert!(out.contains("running on node n1"), "{out}");
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "run returned before the task was ready: {:?}",
        start.elapsed()
    );
    let (status, _, _) = ready_of(&task(&c, "slow").await.unwrap()).unwrap();
    assert_eq!(status, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn stop_grace_force_and_exit_codes_on_real_containerd() {
    let c = ContainerdCluster::start_with(&[]).await;
    let _n1 = c.start_node("n1").await;
    let image = c.registry.image("busybox");
    let socket = c.containerd.socket.clone();

    // busybox sleep as PID 1 ignores SIGTERM: a stop takes exactly its grace.
    for name in ["graceful", "forced"] {
        c.ok(&[
            "run",
            name,
            "--image",
            &image,
            "--stop-grace",
            "4s",
            "--timeout",
            "40s",
            "--",
            "sleep",
            "3600",
        ]);
    }
    let start = Instant::now();
    c.ok(&["delete", "task", "graceful"]);
    let gone = |task: &'static str| {
        let socket = socket.clone();
        async move {
            eventually(
                Duration::from_secs(20),
                &format!("{task}'s container stopped"),
                || async {
                    (!running_containers(&socket, "n1").iter().any(|t| t == task)).then_some(())
                },
            )
            .await
        }
    };
    gone("graceful").await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(9),
        "delete took {took:?}: the task's 4s grace was not honoured (the old fixed grace was 10s)"
    );
    assert!(!task_pids(&socket, "n1", "forced").is_empty());
    let start = Instant::now();
    c.ok(&["delete", "task", "forced", "--force"]);
    gone("forced").await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "delete --force took {took:?}: it should kill at once"
    );

    // A drain moves the task, and its old copy gets the same grace.
    let _n2 = c.start_node("n2").await;
    c.ok(&[
        "run",
        "drained",
        "--image",
        &image,
        "--stop-grace",
        "4s",
        "--timeout",
        "40s",
        "--",
        "sleep",
        "3600",
    ]);
    let from = task(&c, "drained").await.unwrap().status.unwrap().node;
    let url = c.server.url.clone();
    let node = from.clone();
    let start = Instant::now();
    let drain = tokio::task::spawn_blocking(move || {
        voiydctl(&url, &["drain", &node, "--deadline", "60s"], None, &[])
    });
    let old_gone = {
        let socket = socket.clone();
        let from = from.clone();
        eventually(Duration::from_secs(30), "the drained copy stopped", || {
            let socket = socket.clone();
            let from = from.clone();
            async move {
                (!running_containers(&socket, &from)
                    .iter()
                    .any(|t| t == "drained"))
                .then(|| start.elapsed())
            }
        })
        .await
    };
    let o = drain.await.unwrap();
    assert!(o.status.success(), "drain failed: {}", stderr(&o));
    assert!(
        old_gone >= Duration::from_millis(3500) && old_gone < Duration::from_secs(9),
        "the drained copy stopped after {old_gone:?}: its 4s grace was not honoured"
    );
    let moved = task(&c, "drained").await.unwrap().status.unwrap();
    assert!(moved.node != from && moved.phase == "Running", "{moved:?}");
    c.ok(&["uncordon", &from]);

    // A task that exits for good: voiydctl exits with its exit code. (`run` without --rm
    // may catch the brief moment it runs, and then says so, as `docker run -d` does; with
    // --rm it waits for the end.)
    let o = c.voiydctl(&[
        "run",
        "three",
        "--rm",
        "--image",
        &image,
        "--timeout",
        "40s",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("task three failed"), "{}", stderr(&o));
    // One that crash-loops is reported as such, long before the timeout, once it has
    // restarted twice (it runs for a moment each time, which a wait may catch: so the
    // wait starts once it has).
    c.ok(&[
        "run",
        "loop",
        "--image",
        &image,
        "--no-wait",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    eventually(Duration::from_secs(60), "loop restarted twice", || async {
        let st = task(&c, "loop").await?.status?;
        (st.restart_count >= 2).then_some(())
    })
    .await;
    let start = Instant::now();
    let o = c.voiydctl(&["start", "task", "loop", "--timeout", "120s"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("keeps exiting"), "{}", stderr(&o));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

fn set_yaml(image: &str, marker: &str, probe: &str, extra: &str) -> String {
    format!(
        "version: containerset/v1
meta: {{name: web}}
replicas: 3
strategy: {{maxSurge: 1, maxUnavailable: 0, progressDeadlineSeconds: 20}}
template:
  image: {image}
  args: [sh, -c, 'echo {marker} > /tmp/v; while [ ! -f /tmp/die ]; do sleep 0.3; done; exit 1']
  stopGracePeriod: 1s
{extra}  readinessProbe:
    exec: {{command: [test, -f, {probe}]}}
    periodSeconds: 1
    timeoutSeconds: 3
    failureThreshold: 3
"
    )
}

async fn set_of(c: &ContainerdCluster) -> ContainerSet {
    c.api.get::<ContainerSet>("web").await.expect("set web")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn rollouts_trust_readiness_on_real_containerd() {
    let c = ContainerdCluster::start_with(&[]).await;
    let _n1 = c.start_node("n1").await;
    let image = c.registry.image("busybox");

    // Three ready replicas (the probe's file exists in every container).
    c.apply(&set_yaml(&image, "v1", "/tmp/v", ""));
    let out = c.ok(&["rollout", "status", "set", "web", "--timeout", "60s"]);
    assert!(out.contains("rolled out"), "{out}");

    // A healthy rollout with maxUnavailable 0: sampled throughout, never fewer than
    // three ready tasks.
    c.apply(&set_yaml(&image, "v2", "/tmp/v", ""));
    let mut fewest = u32::MAX;
    let mut at_fewest = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let tasks: Vec<Task> = c.api.list("voiyd.io/set=web").await.unwrap_or_default();
        let ready = tasks
            .iter()
            .filter(|t| ready_of(t).is_some_and(|r| r.0 == "True"))
            .count() as u32;
        if ready < fewest {
            fewest = ready;
            at_fewest = tasks
                .iter()
                .map(|t| format!("{} {:?}", voiyd_messages::Resource::name(t), ready_of(t)))
                .collect::<Vec<_>>()
                .join("; ");
        }
        let s = set_of(&c).await;
        let st = s.status.clone().unwrap_or_default();
        let generation = s.meta.as_ref().map_or(0, |m| m.generation);
        let all_v2 = tasks.iter().all(|t| {
            t.config
                .as_ref()
                .is_some_and(|c| c.args.join(" ").contains("v2"))
        });
        let done = st.observed_generation == generation
            && st.conditions.iter().any(|c| c.reason == "RolloutComplete")
            && tasks.len() == 3
            && all_v2;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout to v2 did not complete: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fewest >= 3,
        "ready tasks dropped to {fewest} during the rollout: {at_fewest}"
    );

    // A template that never becomes ready is rolled back within its deadline, and the
    // old replicas stay ready throughout.
    let started = Instant::now();
    c.apply(&set_yaml(&image, "v3", "/tmp/never", ""));
    eventually(Duration::from_secs(60), "rolled back to v2", || async {
        let s = set_of(&c).await;
        let args = s.template.as_ref()?.args.join(" ");
        args.contains("v2").then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(18) && took < Duration::from_secs(45),
        "rolled back after {took:?} (deadline 20s)"
    );
    let o = c.voiydctl(&["rollout", "status", "set", "web", "--timeout", "5s"]);
    assert!(
        !o.status.success(),
        "rollout status should fail after a rollback"
    );
    assert!(stderr(&o).contains("RolledBack"), "{}", stderr(&o));
    eventually(
        Duration::from_secs(40),
        "back to three v2 replicas",
        || async {
            let tasks: Vec<Task> = c.api.list("voiyd.io/set=web").await.ok()?;
            let ok = tasks.len() == 3
                && tasks.iter().all(|t| {
                    ready_of(t).is_some_and(|r| r.0 == "True")
                        && t.config
                            .as_ref()
                            .is_some_and(|c| c.args.join(" ").contains("v2"))
                });
            ok.then_some(())
        },
    )
    .await;

    // After a completed rollout, a replica failing is replaced, never rolled back.
    c.apply(&set_yaml(
        &image,
        "v4",
        "/tmp/v",
        "  restartPolicy: never\n",
    ));
    let out = c.ok(&["rollout", "status", "set", "web", "--timeout", "90s"]);
    assert!(out.contains("rolled out"), "{out}");
    let victim = "web-0";
    let before = task(&c, victim).await.unwrap().meta.unwrap().uid;
    // Its process exits 1 and, under restartPolicy never, the task ends Failed.
    c.ok(&["exec", victim, "--", "touch", "/tmp/die"]);
    eventually(
        Duration::from_secs(40),
        "the failed replica replaced",
        || async {
            let t = task(&c, victim).await?;
            let fresh = t.meta.as_ref()?.uid != before;
            (fresh && ready_of(&t).is_some_and(|r| r.0 == "True")).then_some(())
        },
    )
    .await;
    let s = set_of(&c).await;
    assert!(
        s.template.unwrap().args.join(" ").contains("v4"),
        "a failure after the rollout rolled the set back"
    );
}
