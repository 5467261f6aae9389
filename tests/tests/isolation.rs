//! A task's isolation settings on real containerd and runc, seen from inside the
//! container (`voiydctl exec`): host name, read-only root, DNS, sysctls, ulimits, the
//! pids limit and no-new-privileges, with Docker's stricter defaults when unset.

use std::time::Duration;
use voiyd_tests::{eventually, stderr, stdout, voiydctl, ContainerdCluster};

async fn running(c: &ContainerdCluster, task: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{task} running"),
        || async {
            let o = c.voiydctl(&["get", "task", task, "-o", "json"]);
            let v: serde_json::Value = serde_json::from_str(&stdout(&o)).ok()?;
            (v["status"]["phase"] == "Running").then_some(())
        },
    )
    .await;
}

/// `sh -c SCRIPT` in the task; (exit code, stdout + stderr).
fn sh(c: &ContainerdCluster, task: &str, script: &str) -> (i32, String) {
    let o = c.voiydctl(&["exec", task, "--", "sh", "-c", script]);
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&o), stderr(&o)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn isolation_settings_hold_inside_the_container() {
    let c = ContainerdCluster::start_with(&[]).await;
    let _n1 = c.start_node("n1").await;
    let image = c.registry.image("busybox");
    c.apply(&format!(
        "version: task/v1
meta: {{name: locked}}
config:
  image: {image}
  args: [sleep, '3600']
  stopGracePeriod: 1s
  hostname: db-primary
  readOnlyRootFilesystem: true
  mounts: [{{name: scratch, type: tmpfs, destination: /scratch}}]
  dns: {{servers: [10.9.8.7], search: [svc.example], options: ['ndots:3']}}
  sysctls: {{net.ipv4.ip_unprivileged_port_start: '80'}}
  ulimits: [{{name: nofile, soft: 321, hard: 654}}]
  pidsLimit: 50
---
version: task/v1
meta: {{name: plain}}
config:
  image: {image}
  args: [sleep, '3600']
  stopGracePeriod: 1s
"
    ));
    running(&c, "locked").await;
    running(&c, "plain").await;

    assert_eq!(sh(&c, "locked", "hostname"), (0, "db-primary\n".into()));
    let (_, hosts) = sh(&c, "locked", "cat /etc/hosts");
    assert!(hosts.contains("\tdb-primary"), "{hosts}");
    let (code, out) = sh(&c, "locked", "touch /etc/new-file");
    assert_ne!(code, 0, "the root is writable: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(
        sh(&c, "locked", "touch /scratch/ok && echo ok"),
        (0, "ok\n".into())
    );
    let (_, resolv) = sh(&c, "locked", "cat /etc/resolv.conf");
    assert!(
        resolv.contains("nameserver 10.9.8.7")
            && resolv.contains("search svc.example")
            && resolv.contains("options ndots:3"),
        "{resolv}"
    );
    assert_eq!(
        sh(
            &c,
            "locked",
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
        ),
        (0, "80\n".into())
    );
    assert_eq!(
        sh(&c, "locked", "ulimit -Sn; ulimit -Hn"),
        (0, "321\n654\n".into())
    );
    let (_, status) = sh(&c, "locked", "grep NoNewPrivs /proc/self/status");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // The pids limit is the kernel's: 60 background sleeps cannot all start.
    let (_, forks) = sh(
        &c,
        "locked",
        "n=0; for i in $(seq 60); do sleep 30 & n=$((n+1)); done 2>/dev/null; jobs -p | wc -l",
    );
    let started: u32 = forks
        .trim()
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        started < 50,
        "{started} processes started under a limit of 50: {forks}"
    );

    // Unset: the task's name, a writable root, Docker's defaults (no new privileges, the
    // default pids limit) and the node's open-file limit.
    assert_eq!(sh(&c, "plain", "hostname"), (0, "plain\n".into()));
    assert_eq!(
        sh(&c, "plain", "touch /etc/new-file && echo ok"),
        (0, "ok\n".into())
    );
    let (_, status) = sh(&c, "plain", "grep NoNewPrivs /proc/self/status");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert_eq!(sh(&c, "plain", "ulimit -n"), (0, "1024\n".into()));

    // A sysctl outside the container's namespaces is refused at create, in one line.
    let o = voiydctl(
        &c.server.url,
        &["apply", "-f", "-"],
        Some(&format!(
            "version: task/v1\nmeta: {{name: bad}}\nconfig:\n  image: {image}\n  sysctls: {{kernel.panic: '1'}}\n"
        )),
        &[],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("config.sysctls.kernel.panic") && err.contains("not namespaced"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The default seccomp filter blocks what Docker's blocks (`unshare` for a container
/// without CAP_SYS_ADMIN); `seccomp: unconfined` lifts it; a profile of the task's own is
/// applied as given; a profile that is not one is refused at apply in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn seccomp_default_unconfined_and_own_profiles() {
    let c = ContainerdCluster::start_with(&[]).await;
    // Its own node name: agents of one test process share a containerd, and a node's
    // namespace is named after it.
    let _n = c.start_node("sc1").await;
    let image = c.registry.image("busybox");
    let task = |name: &str, seccomp: &str| {
        format!(
            "version: task/v1\nmeta: {{name: {name}}}\nconfig:\n  image: {image}\n  args: [sleep, '3600']\n  stopGracePeriod: 1s\n{seccomp}"
        )
    };
    c.apply(&task("confined", ""));
    c.apply(&task("free", "  seccomp: unconfined\n"));
    c.apply(&task(
        "own",
        "  seccomp: '{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"mkdir\", \"mkdirat\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 1}]}'\n",
    ));
    for t in ["confined", "free", "own"] {
        running(&c, t).await;
    }
    let (code, out) = sh(
        &c,
        "confined",
        "grep Seccomp: /proc/self/status; unshare -U true",
    );
    assert!(out.contains("Seccomp:\t2"), "no filter: {out}");
    assert_ne!(code, 0, "unshare allowed under the default filter: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let (code, out) = sh(
        &c,
        "free",
        "grep Seccomp: /proc/self/status; unshare -U true",
    );
    assert!(out.contains("Seccomp:\t0"), "{out}");
    assert_eq!(code, 0, "unconfined: {out}");
    // The task's own profile: mkdir blocked, unshare (not listed) allowed.
    let (code, out) = sh(&c, "own", "mkdir /tmp/d");
    assert_ne!(code, 0, "{out}");
    let (code, out) = sh(&c, "own", "unshare -U true && echo ok");
    assert_eq!((code, out.trim()), (0, "ok"));

    let o = voiydctl(
        &c.server.url,
        &["apply", "-f", "-"],
        Some(&task("bad", "  seccomp: '{not json'\n")),
        &[],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("seccomp")
            && err.contains("not an OCI seccomp profile")
            && err.trim().lines().count() == 1,
        "{err}"
    );
}
