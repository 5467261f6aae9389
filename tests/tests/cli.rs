//! voiydctl end to end: real voiydctl processes against a real voiyd-server and NATS.

use std::time::Duration;
use voiyd_testkit::nats::TestNats;
use voiyd_tests::{eventually, stderr, stdout, voiydctl, voiydctl_ok as ok, Server};

const MANIFEST: &str = "\
version: task/v1
meta:
  name: web
  labels:
    app: web
config:
  image: 127.0.0.1:5000/voiyd/busybox:test
  args: [httpd, -f]
  portMappings:
    - name: http
      hostPort: 8080
      targetPort: 80
---
version: volume/v1
meta:
  name: data
config:
  hostLocal: {}
---
version: containerset/v1
meta:
  name: api
template:
  image: busybox:test
";

fn fails(url: &str, args: &[&str], stdin: Option<&str>) -> String {
    let o = voiydctl(url, args, stdin, &[]);
    assert!(
        !o.status.success(),
        "voiydctl {args:?} should fail: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error must be one line: {err:?}"
    );
    err
}

#[tokio::test]
async fn apply_get_edit_delete_round_trip() {
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let url = server.url.clone();

    let out = ok(&url, &["apply", "-f", "-"], Some(MANIFEST));
    assert!(out.contains("task/web created"), "{out}");
    assert!(out.contains("volume/data created"), "{out}");
    assert!(
        out.contains("containerset/api created") || out.contains("set/api created"),
        "{out}"
    );
    let out = ok(&url, &["apply", "-f", "-"], Some(MANIFEST));
    assert_eq!(out.matches("unchanged").count(), 3, "{out}");
    let changed = MANIFEST.replace("args: [httpd, -f]", "args: [httpd, -f, -v]");
    let out = ok(&url, &["apply", "-f", "-"], Some(&changed));
    assert!(out.contains("task/web configured"), "{out}");

    // get tables and yaml; the yaml applies back unchanged
    let table = ok(&url, &["get", "tasks"], None);
    assert!(
        table.starts_with("NAME") && table.contains("AGE") && table.contains("web"),
        "{table}"
    );
    let yaml = ok(&url, &["get", "tasks", "-o", "yaml"], None);
    let out = ok(&url, &["apply", "-f", "-"], Some(&yaml));
    assert!(out.contains("task/web unchanged"), "{out}");
    let json = ok(&url, &["get", "task", "web", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json output");
    assert_eq!(v["config"]["image"], "127.0.0.1:5000/voiyd/busybox:test");
    let sel = ok(&url, &["get", "tasks", "-l", "app=db"], None);
    assert!(!sel.contains("web"), "{sel}");

    // edit through a non-interactive "editor"
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("ed.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/httpd/echo/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = voiydctl(
        &url,
        &["edit", "task", "web"],
        None,
        &[("EDITOR", editor.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let yaml = ok(&url, &["get", "task", "web", "-o", "yaml"], None);
    assert!(yaml.contains("- echo"), "{yaml}");

    // bad input: one line, non-zero, nothing written
    let err = fails(
        &url,
        &["apply", "-f", "-"],
        Some("version: task/v1\nmeta: {name: x}\nconfig: {image: a, imagee: b}\n"),
    );
    assert!(err.contains("imagee"), "{err}");
    let err = fails(
        &url,
        &["apply", "-f", "-"],
        Some("version: task/v1\nmeta: {name: 'bad name'}\nconfig: {image: a}\n"),
    );
    assert!(err.contains("name"), "{err}");
    let err = fails(&url, &["apply", "-f", "-"], Some("{not yaml"));
    assert!(!err.is_empty());
    // a bad second document stops the whole apply before anything is written
    let two = "version: task/v1\nmeta: {name: first}\nconfig: {image: a}\n---\nversion: pod/v1\n";
    fails(&url, &["apply", "-f", "-"], Some(two));
    fails(&url, &["get", "task", "first"], None);
    let err = fails(&url, &["get", "pods"], None);
    assert!(err.contains("pods"), "{err}");
    let err = fails(&url, &["get", "task", "nope"], None);
    assert!(err.contains("not found"), "{err}");

    // events show what happened, in order (they are stored a moment after the reply)
    let ev = eventually(
        Duration::from_secs(10),
        "created and updated events",
        || {
            let out = ok(&url, &["events"], None);
            async move { out.contains("updated").then_some(out) }
        },
    )
    .await;
    let created = ev.find("created").expect("created event");
    let updated = ev.find("updated").expect("updated event");
    assert!(created < updated, "{ev}");

    ok(&url, &["delete", "task", "web"], None);
    fails(&url, &["get", "task", "web"], None);
}

#[tokio::test]
async fn unreachable_or_silent_control_plane_is_a_clear_error() {
    let port = voiyd_testkit::nats::free_port();
    let err = fails(&format!("nats://127.0.0.1:{port}"), &["get", "tasks"], None);
    assert!(err.contains("127.0.0.1"), "{err}");

    let nats = TestNats::start().await;
    let err = fails(&nats.url(), &["get", "tasks", "--timeout", "2s"], None);
    assert!(err.contains("no voiyd-server"), "{err}");
}
