//! The HTTP API (`voiyd-server --http-addr`) end to end: real servers on a real
//! nats-server, simulated nodes, and curl as the client, as a user would call it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use voiyd_testkit::nats::{free_port, TestNats};
use voiyd_tests::{bin, eventually, sim_nodes, voiydctl_ok, wait_nodes, Server};

/// An HTTP endpoint called through curl.
#[derive(Clone)]
struct Http {
    base: String,
    token: Option<String>,
    /// The CA to verify an HTTPS server with.
    cacert: Option<String>,
}

/// A reply: status code and body.
struct Reply {
    code: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The names of a list reply's items.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.json()["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items: {}", self.body))
            .iter()
            .map(|i| i["meta"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        names.sort();
        names
    }
}

impl Http {
    fn new(addr: &str) -> Http {
        Http {
            base: format!("http://{addr}"),
            token: None,
            cacert: None,
        }
    }

    /// HTTPS, the server verified against `ca`.
    fn secure(addr: &str, ca: &std::path::Path) -> Http {
        Http {
            base: format!("https://{addr}"),
            token: None,
            cacert: Some(ca.to_str().unwrap().to_string()),
        }
    }

    fn bearer(&self, token: &str) -> Http {
        Http {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// `curl -X METHOD` with an optional body and extra headers.
    fn call(&self, method: &str, path: &str, body: Option<&str>, headers: &[&str]) -> Reply {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = &self.token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(ca) = &self.cacert {
            cmd.args(["--cacert", ca]);
        }
        for h in headers {
            cmd.args(["-H", h]);
        }
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]);
            cmd.stdin(Stdio::piped());
        }
        cmd.arg(format!("{}{path}", self.base));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl (apt-get install curl)");
        if let Some(b) = body {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Reply {
            code: code.trim().parse().unwrap_or(0),
            body: body.to_string(),
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, &[])
    }

    fn post(&self, path: &str, body: &str) -> Reply {
        self.call(
            "POST",
            path,
            Some(body),
            &["Content-Type: application/json"],
        )
    }
}

fn task_json(name: &str, labels: &str) -> String {
    format!(
        r#"{{"version":"task/v1","meta":{{"name":"{name}","labels":{{{labels}}}}},"config":{{"image":"sim/app:1"}}}}"#
    )
}

/// Every verb of every kind through HTTP, on two servers at once (what one wrote the
/// other reads), with the NATS API's validation and errors, and voiydctl seeing the
/// same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_answers_every_verb_like_the_nats_api() {
    let nats = TestNats::start().await;
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let a = Server::external_with(&nats.url(), &["--http-addr", &a_addr]).await;
    let _b = Server::external_with(&nats.url(), &["--http-addr", &b_addr]).await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "h", 2, dir.path(), &[]);
    wait_nodes(&a.api().await, 2).await;
    let (ha, hb) = (Http::new(&a_addr), Http::new(&b_addr));

    // Create: JSON and YAML bodies; the reply is the stored task, placed.
    let r = ha.post("/api/v1/tasks", &task_json("web", r#""app":"web""#));
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.json()["meta"]["name"], "web");
    assert!(
        r.json()["status"]["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("h-")),
        "{}",
        r.body
    );
    let yaml =
        "version: task/v1\nmeta:\n  name: db\n  labels: {app: db}\nconfig:\n  image: sim/app:1\n";
    let r = hb.call(
        "POST",
        "/api/v1/tasks",
        Some(yaml),
        &["Content-Type: application/yaml"],
    );
    assert_eq!(r.code, 201, "{}", r.body);

    // The same errors as the NATS API, as JSON with the status code.
    let r = hb.post("/api/v1/tasks", &task_json("web", ""));
    assert_eq!(
        (r.code, r.json()["code"].as_u64()),
        (409, Some(409)),
        "{}",
        r.body
    );
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{}",
        r.body
    );
    let r = ha.post(
        "/api/v1/tasks",
        r#"{"version":"task/v1","meta":{"name":"x"},"config":{}}"#,
    );
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("config.image"),
        "{}",
        r.body
    );
    let r = ha.post("/api/v1/tasks", "{not json");
    assert_eq!(r.code, 400, "{}", r.body);
    assert_eq!(ha.get("/api/v1/tasks/nope").code, 404);
    assert_eq!(ha.get("/api/v1/widgets").code, 404);
    let big = "x".repeat(2 * 1024 * 1024);
    assert_eq!(ha.post("/api/v1/tasks", &big).code, 413);

    // What one server wrote, the other serves; voiydctl sees it too, and the reverse.
    let got = hb.get("/api/v1/tasks/web");
    assert_eq!(got.code, 200, "{}", got.body);
    assert_eq!(
        got.json()["meta"]["uid"],
        ha.get("/api/v1/tasks/web").json()["meta"]["uid"]
    );
    let listed = voiydctl_ok(&nats.url(), &["get", "tasks"], None);
    assert!(listed.contains("web") && listed.contains("db"), "{listed}");
    voiydctl_ok(
        &nats.url(),
        &["run", "cli", "--image", "sim/app:1", "--no-wait"],
        None,
    );
    assert_eq!(ha.get("/api/v1/tasks/cli").code, 200);

    // Lists with label and field selectors.
    assert_eq!(ha.get("/api/v1/tasks?selector=app%3Dweb").names(), ["web"]);
    eventually(
        Duration::from_secs(20),
        "three Running tasks listed",
        || async {
            let r = hb.get("/api/v1/tasks?fieldSelector=phase%3DRunning");
            (r.names() == ["cli", "db", "web"]).then_some(())
        },
    )
    .await;
    let r = ha.get("/api/v1/tasks?selector=%3D%3D");
    assert_eq!(r.code, 400, "{}", r.body);
    assert_eq!(ha.get("/api/v1/nodes").names(), ["h-0001", "h-0002"]);
    assert_eq!(ha.get("/api/v1/leases").code, 200);

    // Patch (JSON merge patch), then replace with a stale resourceVersion: refused.
    let before = ha.get("/api/v1/tasks/web").json();
    let stale = before["meta"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let r = ha.call(
        "PATCH",
        "/api/v1/tasks/web",
        Some(r#"{"meta":{"labels":{"tier":"front"}}}"#),
        &["Content-Type: application/merge-patch+json"],
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["meta"]["labels"]["tier"], "front");
    let mut replaced = before.clone();
    replaced["meta"]["labels"] = serde_json::json!({"app": "web", "tier": "back"});
    replaced["meta"]["resourceVersion"] = serde_json::json!(stale);
    let r = hb.call("PUT", "/api/v1/tasks/web", Some(&replaced.to_string()), &[]);
    assert_eq!(r.code, 409, "{}", r.body);
    let r = hb.call(
        "PUT",
        "/api/v1/tasks/other",
        Some(&replaced.to_string()),
        &[],
    );
    assert_eq!(r.code, 400, "{}", r.body);
    replaced["meta"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let r = hb.call("PUT", "/api/v1/tasks/web", Some(&replaced.to_string()), &[]);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(
        ha.get("/api/v1/tasks?selector=tier%3Dback").names(),
        ["web"]
    );

    // A dry run answers what would happen and writes nothing.
    let r = ha.post("/api/v1/tasks?dryRun=true", &task_json("ghost", ""));
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["action"], "create");
    assert!(
        r.json()["tasks"][0]["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("h-")),
        "{}",
        r.body
    );
    assert_eq!(ha.get("/api/v1/tasks/ghost").code, 404);

    // Task actions.
    let r = ha.post("/api/v1/tasks/db/stop", "");
    assert_eq!(r.code, 200, "{}", r.body);
    eventually(Duration::from_secs(20), "db stopped", || async {
        let phase = hb.get("/api/v1/tasks/db").json()["status"]["phase"].clone();
        (phase == "Stopped").then_some(())
    })
    .await;
    assert_eq!(ha.post("/api/v1/tasks/db/start", "").code, 200);
    eventually(Duration::from_secs(20), "db running again", || async {
        let phase = hb.get("/api/v1/tasks/db").json()["status"]["phase"].clone();
        (phase == "Running").then_some(())
    })
    .await;
    assert_eq!(ha.post("/api/v1/tasks/db/explode", "").code, 404);

    // A container set: create, scale by patch, its tasks follow; delete.
    let set = r#"{"version":"containerset/v1","meta":{"name":"api"},"replicas":2,"template":{"image":"sim/app:1"}}"#;
    let r = ha.post("/api/v1/sets", set);
    assert_eq!(r.code, 201, "{}", r.body);
    let r = hb.call("PATCH", "/api/v1/sets/api", Some(r#"{"replicas":3}"#), &[]);
    assert_eq!(r.code, 200, "{}", r.body);
    eventually(
        Duration::from_secs(30),
        "three replicas of set api",
        || async {
            let listed = ha
                .get("/api/v1/tasks?selector=voiyd.io%2Fset%3Dapi")
                .names();
            (listed.len() == 3).then_some(())
        },
    )
    .await;
    assert_eq!(ha.call("DELETE", "/api/v1/sets/api", None, &[]).code, 200);

    // Delete: gone for both servers and voiydctl.
    let r = hb.call("DELETE", "/api/v1/tasks/web?force=true", None, &[]);
    assert_eq!(
        (r.code, r.json()["name"].as_str()),
        (200, Some("web")),
        "{}",
        r.body
    );
    assert_eq!(ha.get("/api/v1/tasks/web").code, 404);
    assert_eq!(ha.call("DELETE", "/api/v1/tasks/web", None, &[]).code, 404);
    let listed = voiydctl_ok(&nats.url(), &["get", "tasks"], None);
    assert!(!listed.lines().any(|l| l.starts_with("web ")), "{listed}");

    // The OpenAPI document describes what the API really answers: every field of a task,
    // a set and a node as served is in its schema.
    let doc = ha.get("/api/v1/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/tasks",
        "/api/v1/tasks/{name}",
        "/api/v1/events",
        "/api/v1/tasks/{name}/logs",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let schemas = &doc["components"]["schemas"];
    let cli = ha.get("/api/v1/tasks/cli").json();
    conforms(schemas, "Task", &cli, "task");
    conforms(
        schemas,
        "Node",
        &ha.get("/api/v1/nodes/h-0001").json(),
        "node",
    );

    // The same listener serves /metrics and /healthz; tokens need --auth.
    let m = ha.get("/metrics");
    assert!(m.code == 200 && m.body.contains("voiyd_"), "{}", m.code);
    assert_eq!(ha.get("/healthz").code, 200);
    let r = ha.post("/api/v1/tokens", r#"{"admin":true}"#);
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(r.body.contains("--auth"), "{}", r.body);
}

/// Every key of `value` is a property of schema `name` (following references, arrays
/// and maps): the document covers what the API serves.
fn conforms(schemas: &serde_json::Value, name: &str, value: &serde_json::Value, at: &str) {
    let schema = &schemas[name];
    assert!(schema.is_object(), "{at}: no schema {name}");
    check(schemas, schema, value, at);
}

fn check(
    schemas: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(schemas, name, value, at);
    }
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let sub = if let Some(props) = schema["properties"].as_object() {
                    props
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}.{k} is not in the schema"))
                } else {
                    &schema["additionalProperties"]
                };
                check(schemas, sub, v, &format!("{at}.{k}"));
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check(schemas, &schema["items"], v, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// An SSE watch delivers events as they happen, and a client that reconnects with the
/// last id it saw gets every later event exactly once, including those written while
/// it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_event_stream_resumes_from_the_last_event_id_without_gaps() {
    let nats = TestNats::start().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let s = Server::external_with(&nats.url(), &["--http-addr", &addr]).await;
    let dir = tempfile::tempdir().unwrap();
    let _nodes = sim_nodes(&nats.url(), "e", 1, dir.path(), &[]);
    wait_nodes(&s.api().await, 1).await;
    let http = Http::new(&addr);

    // A watch that starts now sees only what happens next.
    let first = Sse::open(&addr, &["Accept: text/event-stream"], "kind=task");
    for i in 0..5 {
        assert_eq!(
            http.post("/api/v1/tasks", &task_json(&format!("a{i}"), ""))
                .code,
            201
        );
    }
    let seen1 = first.read_until(|evs| evs.iter().filter(|e| e.1 == "created").count() >= 5);
    assert!(seen1.iter().all(|e| e.2.starts_with('a')), "{seen1:?}");
    first.close();

    // Away: more happens.
    for i in 0..5 {
        assert_eq!(
            http.post("/api/v1/tasks", &task_json(&format!("b{i}"), ""))
                .code,
            201
        );
    }
    let last_id = seen1.last().unwrap().0;
    let header = format!("Last-Event-ID: {last_id}");
    let second = Sse::open(&addr, &[&header], "kind=task&watch=true");
    let seen2 = second.read_until(|evs| {
        evs.iter()
            .filter(|e| e.1 == "created" && e.2.starts_with('b'))
            .count()
            >= 5
    });
    second.close();

    // Together, exactly the stream's task events after the first one seen, in order.
    let mut ids: Vec<u64> = seen1.iter().chain(&seen2).map(|e| e.0).collect();
    let listed = http.get(&format!("/api/v1/events?kind=task&since={}", seen1[0].0));
    let want: Vec<u64> = listed.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_str().unwrap().parse().unwrap())
        .filter(|&seq| seq <= *ids.last().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "out of order or twice: {ids:?}"
    );
    ids.dedup();
    assert_eq!(ids, want, "gaps between the two watches");
    assert_eq!(http.get("/api/v1/events?since=abc").code, 400);
    // The newest two of the whole stream.
    let seqs = |r: Reply| -> Vec<String> {
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_str().unwrap().to_string())
            .collect()
    };
    let all = seqs(http.get("/api/v1/events"));
    assert_eq!(
        seqs(http.get("/api/v1/events?last=2")),
        all[all.len() - 2..]
    );
}

/// A Server-Sent Events reader: curl -N in a child, lines read on a thread.
struct Sse {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Sse {
    fn open(addr: &str, headers: &[&str], query: &str) -> Sse {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(format!("http://{addr}/api/v1/events?{query}"));
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The stream's opening comment: the watch is in place.
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the SSE stream opens");
        assert!(first.starts_with(": following events after "), "{first}");
        Sse { child, lines }
    }

    /// Events as (id, type, name) until `done` holds (20 s at most).
    fn read_until(
        &self,
        done: impl Fn(&[(u64, String, String)]) -> bool,
    ) -> Vec<(u64, String, String)> {
        let start = Instant::now();
        let mut events = Vec::new();
        let mut id = None;
        while !done(&events) {
            let left = Duration::from_secs(20).saturating_sub(start.elapsed());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("SSE events so far: {events:?}"));
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.trim().parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                let e: serde_json::Value = serde_json::from_str(v).unwrap();
                let seq: u64 = e["seq"].as_str().unwrap().parse().unwrap();
                assert_eq!(id, Some(seq), "the id is the event's sequence");
                events.push((
                    seq,
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["name"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        events
    }

    fn close(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With --auth (and TLS, so the listener is HTTPS), the API wants an admin token from
/// `voiydctl token create --admin`: none, a wrong one, a join token or an expired one
/// get 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_with_auth_needs_an_admin_token() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr = format!("127.0.0.1:{}", free_port());
    let certs = tempfile::tempdir().unwrap();
    voiyd_tests::certs_init(certs.path());
    let ca = certs.path().join("ca.pem");
    let s = Server::launch_embedded(
        &listen,
        &[
            "--auth",
            "--tls-dir",
            certs.path().to_str().unwrap(),
            "--http-addr",
            &addr,
        ],
    );
    let seed_file = s.data_dir().join("auth/admin.nk");
    let open = Http::secure(&addr, &ca);
    eventually(Duration::from_secs(30), "the HTTP API refusing", || async {
        (seed_file.exists() && open.get("/api/v1/tasks").code == 401).then_some(())
    })
    .await;
    let r = open.get("/api/v1/tasks");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("voiydctl token create --admin"),
        "{}",
        r.body
    );
    let headers = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--cacert",
            ca.to_str().unwrap(),
            &format!("https://{addr}/api/v1/tasks"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&headers.stdout)
        .to_ascii_lowercase()
        .contains("www-authenticate: bearer"));
    assert_eq!(open.get("/healthz").code, 200, "probes need no token");
    // With TLS for NATS, HTTP is HTTPS only (tokens never cross in clear).
    assert_eq!(
        Http::new(&addr).get("/healthz").code,
        0,
        "plain HTTP answered"
    );
    assert_eq!(open.bearer("voiyd-api-0000").get("/api/v1/tasks").code, 401);

    // A client certificate the cluster's CA issued to an administrator stands for a
    // token; a plain client certificate (a node's, say) does not.
    for (name, admin) in [("alice", true), ("bob", false)] {
        let mut args = vec![
            "certs",
            "issue",
            name,
            "--dir",
            certs.path().to_str().unwrap(),
        ];
        if admin {
            args.push("--admin");
        }
        let o = Command::new(bin("voiyd-server"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let with_cert = |name: &str, method: &str, body: Option<&str>| -> (u16, String) {
        let cert = certs.path().join(format!("{name}.pem"));
        let key = certs.path().join(format!("{name}-key.pem"));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code}", "-X", method, "--cacert"])
            .arg(&ca)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let o = cmd
            .arg(format!("https://{addr}/api/v1/tasks"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    };
    assert_eq!(with_cert("alice", "GET", None).0, 200);
    let (code, body) = with_cert("alice", "POST", Some(&task_json("by-cert", "")));
    assert_eq!(code, 201, "{body}");
    let (code, body) = with_cert("bob", "GET", None);
    assert_eq!(code, 401, "{body}");

    // voiydctl with the admin identity issues tokens.
    let seed = std::fs::read_to_string(&seed_file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voiydctl.yaml");
    std::fs::write(
        &config,
        format!(
            "version: v1\ncurrent: s\nservers:\n- name: s\n  address: nats://{listen}\n  nkeySeed: {}\n  tls: {{caFile: {}}}\n",
            seed.trim(),
            ca.display()
        ),
    )
    .unwrap();
    let ctl = |args: &[&str]| {
        let o = Command::new(bin("voiydctl"))
            .arg("-c")
            .arg(&config)
            .args(args)
            .env_remove("VOIYD_SERVER")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            o.status.success(),
            "voiydctl {args:?}: {text} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        text
    };
    let token = eventually(Duration::from_secs(20), "an API token", || async {
        let o = Command::new(bin("voiydctl"))
            .arg("-c")
            .arg(&config)
            .args(["token", "create", "--admin", "--ttl", "1h"])
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
    .await;
    assert!(token.starts_with("voiyd-api-"), "{token}");
    let authed = open.bearer(&token);
    assert_eq!(authed.get("/api/v1/tasks").code, 200);
    // Streams from browsers carry it in the query (EventSource sends no headers): GET
    // only.
    assert_eq!(
        open.get(&format!("/api/v1/tasks?access_token={token}"))
            .code,
        200
    );
    let r = open.post(
        &format!("/api/v1/tasks?access_token={token}"),
        &task_json("q", ""),
    );
    assert_eq!(r.code, 401, "{}", r.body);
    let r = authed.post("/api/v1/tasks", &task_json("t1", ""));
    assert_eq!(r.code, 201, "{}", r.body);
    // Tokens can be issued through HTTP too, by a holder of one.
    let r = authed.post("/api/v1/tokens", r#"{"admin":true,"ttlSeconds":60}"#);
    assert_eq!(r.code, 201, "{}", r.body);
    let second = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(open.bearer(&second).get("/api/v1/nodes").code, 200);

    // A join token is not an API token.
    let join = ctl(&["token", "create", "--ttl", "1h"]);
    assert_eq!(open.bearer(&join).get("/api/v1/tasks").code, 401);
    // Too long a lifetime is refused; a short one expires.
    let o = Command::new(bin("voiydctl"))
        .arg("-c")
        .arg(&config)
        .args(["token", "create", "--admin", "--ttl", "400d"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("at most 365 days"));
    let short = ctl(&["token", "create", "--admin", "--ttl", "1s"]);
    let expiring = open.bearer(&short);
    eventually(Duration::from_secs(10), "the 1 s token refused", || async {
        (expiring.get("/api/v1/tasks").code == 401).then_some(())
    })
    .await;
    assert_eq!(
        authed.get("/api/v1/tasks").code,
        200,
        "the long one still works"
    );
    drop(s);
}
