//! Plan before apply, through voiydctl against a real server and simulated nodes:
//! `diff -f` shows field by field what `apply -f` would change, and `apply --dry-run`
//! has the server validate and place without writing; the cluster stays unchanged.

use std::time::Duration;
use voiyd_testkit::nats::TestNats;
use voiyd_tests::{
    eventually, sim_nodes, stderr, stdout, voiydctl, voiydctl_ok, wait_nodes, Server,
};

fn task(image: &str, cpu: &str) -> String {
    format!(
        "version: task/v1\nmeta:\n  name: web\n  labels: {{app: web}}\nconfig:\n  image: {image}\n  resources: {{cpu: \"{cpu}\"}}\n"
    )
}

fn set(replicas: u32, image: &str) -> String {
    format!(
        "version: containerset/v1\nmeta:\n  name: api\nreplicas: {replicas}\ntemplate:\n  image: {image}\n"
    )
}

/// Everything the cluster holds that a dry run must leave alone: every task and set as
/// JSON (resource versions included).
fn snapshot(url: &str) -> String {
    let tasks = voiydctl_ok(url, &["get", "tasks", "-o", "json"], None);
    let sets = voiydctl_ok(url, &["get", "sets", "-o", "json"], None);
    // Status moves on by itself (heartbeat times); specs and their versions must not.
    let strip = |text: String| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let items = v.get("items").cloned().unwrap_or(v);
        let mut items: Vec<serde_json::Value> = match items {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        };
        for i in &mut items {
            i.as_object_mut().unwrap().remove("status");
        }
        items
    };
    format!("{:?}{:?}", strip(tasks), strip(sets))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_and_dry_run_say_what_apply_would_do_and_change_nothing() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let server = Server::external(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&url, "p", 2, dir.path(), &["--sim-cpu", "4"]);
    wait_nodes(&server.api().await, 2).await;
    let file = dir.path().join("m.yaml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();
    let ctl = |args: &[&str]| voiydctl(&url, args, None, &[]);

    // Nothing there yet: diff lists the new fields (exit 1), the dry run places it.
    write(&task("sim/app:1", "1"));
    let before = snapshot(&url);
    let o = ctl(&["diff", "-f", f]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("task/web (would be created)"), "{out}");
    assert!(out.contains("+ config.image: \"sim/app:1\""), "{out}");
    assert!(
        !out.contains('\x1b'),
        "no colour when not a terminal: {out}"
    );
    let out = voiydctl_ok(&url, &["apply", "-f", f, "--dry-run"], None);
    assert!(
        out.starts_with("task/web created (dry run): web on p-000"),
        "{out}"
    );
    assert_eq!(snapshot(&url), before, "a dry run wrote something");
    let (ok, _) = (ctl(&["get", "task", "web"]).status.success(), ());
    assert!(!ok, "the dry run created the task");

    // Applied: no difference left.
    voiydctl_ok(&url, &["apply", "-f", f], None);
    let o = ctl(&["diff", "-f", f]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), String::new()),
        "{}",
        stderr(&o)
    );
    let out = voiydctl_ok(&url, &["apply", "-f", f, "--dry-run"], None);
    assert_eq!(out.trim(), "task/web unchanged (dry run)");
    let node = eventually(Duration::from_secs(20), "web running", || async {
        let o = voiydctl_ok(&url, &["get", "task", "web", "-o", "json"], None);
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        (v["status"]["phase"] == "Running")
            .then(|| v["status"]["node"].as_str().unwrap().to_string())
    })
    .await;

    // A new image: shown old and new; the task stays where it is.
    write(&task("sim/app:2", "1"));
    let before = snapshot(&url);
    let o = ctl(&["diff", "-f", f]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("- config.image: \"sim/app:1\"")
            && out.contains("+ config.image: \"sim/app:2\""),
        "{out}"
    );
    let out = voiydctl_ok(&url, &["apply", "-f", f, "--dry-run"], None);
    assert_eq!(
        out.trim(),
        format!("task/web configured (dry run): changes config.image; web stays on {node}")
    );
    // More CPU than its node has free, but another node has it: it would move. More
    // than any node has: it would wait, with the scheduler's reason.
    write(&task("sim/app:1", "3500m"));
    let out = voiydctl_ok(&url, &["apply", "-f", f, "--dry-run"], None);
    assert!(out.contains("changes config.resources.cpu"), "{out}");
    assert!(
        out.contains(&format!("web stays on {node}"))
            || out.contains(&format!("moves from {node}")),
        "{out}"
    );
    write(&task("sim/app:1", "64"));
    let out = voiydctl_ok(&url, &["apply", "-f", f, "--dry-run"], None);
    assert!(
        out.contains("web would wait:") && out.contains("cpu"),
        "{out}"
    );
    assert_eq!(snapshot(&url), before, "a dry run wrote something");

    // Invalid, as only the server can tell (a volume that does not exist): its
    // one-line error, non-zero exit, nothing written.
    write("version: task/v1\nmeta:\n  name: web\nconfig:\n  image: sim/app:1\n  mounts: [{name: d, destination: /data, volume: nope}]\n");
    let o = ctl(&["apply", "-f", f, "--dry-run"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("task/web would fail") && err.contains("volume nope not found"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(snapshot(&url), before, "a dry run wrote something");

    // A set: scaled and updated at once, the dry run names the tasks replaced and
    // where the new ones go.
    write(&set(2, "sim/app:1"));
    voiydctl_ok(&url, &["apply", "-f", f], None);
    eventually(Duration::from_secs(30), "two tasks of set api", || async {
        let o = voiydctl_ok(
            &url,
            &["get", "tasks", "-l", "voiyd.io/set=api", "-o", "name"],
            None,
        );
        (o.lines().count() == 2).then_some(())
    })
    .await;
    write(&set(3, "sim/app:2"));
    let before = snapshot(&url);
    let out = voiydctl_ok(&url, &["apply", "-f", f, "--dry-run"], None);
    assert!(out.starts_with("set/api configured (dry run): changes replicas, template.image; replaces api-0, api-1;"), "{out}");
    assert_eq!(
        out.matches(" on p-000").count(),
        3,
        "three new tasks placed: {out}"
    );
    write(&set(1, "sim/app:1"));
    let out = voiydctl_ok(&url, &["apply", "-f", f, "--dry-run"], None);
    assert!(
        out.contains("removes api-1") && !out.contains("replaces"),
        "{out}"
    );
    assert_eq!(snapshot(&url), before, "a dry run wrote something");

    // On a terminal (a pty from script(1)) phases and diff lines are coloured;
    // NO_COLOR or --no-color turns it off.
    let tty = |args: &str, env: &[(&str, &str)]| -> String {
        let cmd = format!(
            "{} --server {url} {args}",
            voiyd_tests::bin("voiydctl").display()
        );
        let o = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("HOME", dir.path())
            .env_remove("VOIYD_CONFIG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        stdout(&o)
    };
    let coloured = tty("get nodes", &[]);
    assert!(coloured.contains("\x1b[32mReady\x1b[0m"), "{coloured:?}");
    assert!(!tty("get nodes", &[("NO_COLOR", "1")]).contains('\x1b'));
    assert!(!tty("--no-color get nodes", &[]).contains('\x1b'));
    let diff = tty(&format!("diff -f {f}"), &[]);
    assert!(diff.contains("\x1b[32m+ replicas: 1"), "{diff:?}");
}
