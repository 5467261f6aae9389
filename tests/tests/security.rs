//! Security end to end: a voiyd-server with embedded NATS serving TLS (certificates from
//! `voiyd-server certs init`) and enforcing identities (`--auth`), a strict admission
//! policy, real voiydctl and voiyd-node processes, and raw NATS clients that try what
//! their identity must not do.

use async_nats::jetstream;
use bytes::Bytes;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use voiyd_messages::v1::{
    JoinReply, JoinRequest, Node, Task, TaskConfig, TokenCreateReply, TokenCreateRequest,
};
use voiyd_nats::api::{ApiClient, ApiError};
use voiyd_nats::auth;
use voiyd_nats::connect::{connect, ConnectError, ConnectOptions};
use voiyd_nats::names;
use voiyd_tests::{bin, eventually, stderr, stdout, NodeAgent, Proc};

/// A server with TLS, auth and a strict policy.
struct Secure {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Secure {
    async fn start() -> Secure {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        voiyd_tests::certs_init(&certs);
        let port = voiyd_testkit::nats::free_port();
        let listen = format!("127.0.0.1:{port}");
        let data = dir.path().join("data");
        let cidr = voiyd_tests::test_cluster_cidr(&format!("nats://{listen}"));
        let proc = Proc::spawn(
            &bin("voiyd-server"),
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--nats-listen",
                &listen,
                "--tls-dir",
                certs.to_str().unwrap(),
                "--auth",
                "--allow-privileged=false",
                "--allow-host-paths=false",
                "--allow-cap-add=false",
                "--cluster-cidr",
                &cidr,
                "--node-subnet-prefix",
                "28",
                "--log-level",
                "debug",
            ],
            &[],
            dir.path().join("server.log"),
        );
        let s = Secure { proc, port, dir };
        let start = Instant::now();
        loop {
            let up = std::fs::read_to_string(&s.proc.log).is_ok_and(|l| l.contains("API ready"));
            if up {
                if let Ok(c) = connect(&s.opts(Some(s.admin_seed()))).await {
                    if ApiClient::new(c).list::<Node>("").await.is_ok() {
                        return s;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "secure server not ready; log:\n{}",
                std::fs::read_to_string(&s.proc.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
    fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }
    fn admin_seed(&self) -> String {
        path_str(&self.dir.path().join("data/auth/admin.nk"))
    }
    fn server_seed(&self) -> String {
        path_str(&self.dir.path().join("data/auth/server.nk"))
    }

    /// TLS (verified against the CA) with an optional nkey seed.
    fn opts(&self, seed: Option<String>) -> ConnectOptions {
        ConnectOptions {
            name: "security-test".into(),
            tls_ca: Some(self.ca()),
            tls_required: true,
            nkey_seed: seed,
            connect_timeout: Duration::from_secs(3),
            ..ConnectOptions::from_urls(&self.url())
        }
    }

    async fn admin(&self) -> ApiClient {
        ApiClient::new(connect(&self.opts(Some(self.admin_seed()))).await.unwrap())
            .with_timeout(Duration::from_secs(5))
    }

    /// A voiydctl config holding this server with the CA inline and `seed` (if any).
    fn ctl_config(&self, name: &str, seed: Option<&str>) -> PathBuf {
        let ca = std::fs::read_to_string(self.ca()).unwrap();
        let mut text = format!(
            "version: v1\ncurrent: s\nservers:\n- name: s\n  address: {}\n  tls:\n    ca: |\n",
            self.url()
        );
        for line in ca.lines() {
            text.push_str(&format!("      {line}\n"));
        }
        if let Some(seed) = seed {
            text.push_str(&format!("  nkeySeed: {seed}\n"));
        }
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ctl(&self, config: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new(bin("voiydctl"))
            .arg("-c")
            .arg(config)
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("VOIYD_SERVER")
            .output()
            .unwrap()
    }

    async fn token(&self, ttl_seconds: u64) -> TokenCreateReply {
        self.admin()
            .await
            .call(
                "tokens",
                "create",
                &TokenCreateRequest {
                    ttl_seconds,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    /// Joins `node` with `token` through the join identity; returns the node's seed.
    async fn join(&self, node: &str, token: &str) -> Result<String, ApiError> {
        let (seed, public_key) = auth::new_user_key();
        let opts = ConnectOptions {
            user: Some(auth::JOIN_USER.into()),
            password: Some(auth::JOIN_PASSWORD.into()),
            inbox_prefix: Some(names::JOIN_INBOX_PREFIX.into()),
            ..self.opts(None)
        };
        let api =
            ApiClient::new(connect(&opts).await.unwrap()).with_timeout(Duration::from_secs(5));
        let req = JoinRequest {
            token: token.into(),
            node: node.into(),
            public_key,
        };
        let _: JoinReply = api.call(auth::JOIN_KIND, auth::JOIN_VERB, &req).await?;
        Ok(seed)
    }

    /// A raw client as node `node`, reporting server errors (permission violations).
    async fn as_node(
        &self,
        node: &str,
        seed: &str,
    ) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pem = std::fs::read(self.ca()).unwrap();
        let _ = pem;
        let client = async_nats::ConnectOptions::with_nkey(seed.to_string())
            .add_root_certificates(self.ca())
            .require_tls(true)
            .custom_inbox_prefix(names::node_inbox_prefix(node))
            .event_callback(move |e| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(err) = e {
                        let _ = tx.send(err.to_string());
                    }
                }
            })
            .connect(self.url())
            .await
            .unwrap();
        (client, rx)
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Waits for a permissions violation naming `subject`.
async fn violation(rx: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(e))
                if e.to_lowercase().contains("permissions violation") && e.contains(subject) =>
            {
                return
            }
            Ok(Some(_)) => continue,
            _ => panic!("no permissions violation for {subject}"),
        }
    }
}

#[tokio::test]
async fn plain_text_and_unverified_clients_are_refused() {
    let s = Secure::start().await;
    // A plain-text client: the server announces TLS and never answers the PING.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let n = raw.read(&mut buf).await.unwrap();
    let info = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let _ = raw
        .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest)).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("PONG"),
        "plain text got an answer: {}",
        String::from_utf8_lossy(&rest)
    );
    // A client that does not trust the CA fails the handshake with a clear message.
    let err = connect(&ConnectOptions {
        tls_ca: None,
        ..s.opts(Some(s.admin_seed()))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[tokio::test]
async fn voiydctl_needs_valid_credentials() {
    let s = Secure::start().await;
    // No credentials.
    let none = s.ctl_config("none", None);
    let out = s.ctl(&none, &["get", "nodes"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("rejected the credentials"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Wrong credentials: a key nobody registered.
    let (wrong_seed, _) = auth::new_user_key();
    let wrong = s.ctl_config("wrong", Some(&wrong_seed));
    let out = s.ctl(&wrong, &["get", "nodes"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rejected the credentials"),
        "{}",
        stderr(&out)
    );
    // The admin seed works, TLS verified with the inline CA.
    let seed = std::fs::read_to_string(s.admin_seed()).unwrap();
    let admin = s.ctl_config("admin", Some(seed.trim()));
    let out = s.ctl(&admin, &["get", "nodes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.ctl(&admin, &["token", "create", "--ttl", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).trim().starts_with("voiyd-join-"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn node_identity_is_confined_to_its_own_names() {
    let s = Secure::start().await;
    let a_seed = s.join("a", &s.token(60).await.token).await.unwrap();
    let _b_seed = s.join("b", &s.token(60).await.token).await.unwrap();
    // The server writes work for both nodes.
    let server = connect(&s.opts(Some(s.server_seed()))).await.unwrap();
    let js = jetstream::new(server.clone());
    let work = js.get_key_value(names::BUCKET_WORK).await.unwrap();
    work.put(names::work_key("a", "t1"), Bytes::from_static(b"a-work"))
        .await
        .unwrap();
    work.put(names::work_key("b", "t1"), Bytes::from_static(b"b-secret"))
        .await
        .unwrap();
    let mut b_status = server.subscribe("voiyd.node.b.>").await.unwrap();
    let mut a_heartbeat = server.subscribe(names::node::heartbeat("a")).await.unwrap();
    server.flush().await.unwrap();

    let (a, mut errors) = s.as_node("a", &a_seed).await;
    let a_js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(a.clone());
    let a_work = voiyd_nats::RawKv::new(
        a_js.get_key_value(names::BUCKET_WORK).await.unwrap(),
        "work",
    );
    // Its own work: readable through the same calls the agent makes.
    let own = a_work.entries(&names::work_filter("a")).await.unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(&own[0].1[..], b"a-work");
    let mut watch = a_work.watch(&names::work_filter("a")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut watch))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.key, "a.t1");
    // Another node's work: neither through a consumer, a direct get nor a subscription.
    assert!(a_work.entries(&names::work_filter("b")).await.is_err());
    violation(&mut errors, "$JS.API.CONSUMER.CREATE.KV_voiyd_work").await;
    let _sub = a.subscribe("$KV.voiyd_work.b.>").await.unwrap();
    violation(&mut errors, "$KV.voiyd_work.b.>").await;
    let direct = a
        .request(
            "$JS.API.DIRECT.GET.KV_voiyd_work.$KV.voiyd_work.b.t1",
            Bytes::new(),
        )
        .await;
    assert!(direct
        .map(|m| m.payload.is_empty() || !m.payload.starts_with(b"b-"))
        .unwrap_or(true));
    violation(
        &mut errors,
        "$JS.API.DIRECT.GET.KV_voiyd_work.$KV.voiyd_work.b.t1",
    )
    .await;
    // Desired state: no raw KV writes, no API.
    a.publish("$KV.voiyd_tasks.evil", Bytes::from_static(b"x"))
        .await
        .unwrap();
    violation(&mut errors, "$KV.voiyd_tasks.evil").await;
    a.publish(names::api_subject("tasks", "create"), Bytes::new())
        .await
        .unwrap();
    violation(&mut errors, "voiyd.api.v1.tasks.create").await;
    // Another node's status and heartbeats.
    a.publish(names::node::status("b"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    violation(&mut errors, "voiyd.node.b.status").await;
    a.publish(names::node::heartbeat("b"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    violation(&mut errors, "voiyd.node.b.heartbeat").await;
    // Its own heartbeat goes through (the checks above can fail).
    a.publish(names::node::heartbeat("a"), Bytes::from_static(b"hb"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut a_heartbeat),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&got.payload[..], b"hb");
    // Nothing of node a's reached node b's subjects, and no task appeared.
    server.flush().await.unwrap();
    assert!(tokio::time::timeout(
        Duration::from_millis(200),
        futures::StreamExt::next(&mut b_status)
    )
    .await
    .is_err());
    let tasks = js.get_key_value(names::BUCKET_TASKS).await.unwrap();
    assert!(tasks.get("evil").await.unwrap().is_none());
    // Mesh datagrams relayed through NATS: to b as itself, never in another's name.
    let mut b_mesh = server
        .subscribe(names::node::mesh_relay_in("b"))
        .await
        .unwrap();
    server.flush().await.unwrap();
    a.publish(
        names::node::mesh_relay("b", "c"),
        Bytes::from_static(b"forged"),
    )
    .await
    .unwrap();
    violation(&mut errors, "voiyd.node.b.mesh.c").await;
    a.publish(names::node::mesh_relay("b", "a"), Bytes::from_static(b"wg"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut b_mesh),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.subject.as_str(), "voiyd.node.b.mesh.a");
    assert_eq!(&got.payload[..], b"wg");
}

#[tokio::test]
async fn join_tokens_are_single_use_and_expire() {
    let s = Secure::start().await;
    let t = s.token(60).await;
    s.join("n1", &t.token).await.unwrap();
    let used = s.join("n2", &t.token).await.unwrap_err();
    assert!(
        used.to_string()
            .contains("unknown, already used or expired"),
        "{used}"
    );
    // A name that already has credentials.
    let dup = s.join("n1", &s.token(60).await.token).await.unwrap_err();
    assert!(matches!(dup, ApiError::Conflict(_)), "{dup}");
    // Expired.
    let short = s.token(1).await;
    let expires = short.expires_at.unwrap().seconds;
    eventually(Duration::from_secs(5), "the token's expiry", || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        (now > expires).then_some(())
    })
    .await;
    let expired = s.join("n3", &short.token).await.unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");
    // Garbage tokens and keys.
    assert!(s.join("n4", "voiyd-join-nope").await.is_err());
    // The join identity can do nothing else.
    let opts = ConnectOptions {
        user: Some(auth::JOIN_USER.into()),
        password: Some(auth::JOIN_PASSWORD.into()),
        inbox_prefix: Some(names::JOIN_INBOX_PREFIX.into()),
        ..s.opts(None)
    };
    let join_api =
        ApiClient::new(connect(&opts).await.unwrap()).with_timeout(Duration::from_secs(2));
    assert!(join_api.list::<Node>("").await.is_err());
}

#[tokio::test]
async fn policy_and_hardened_input() {
    let s = Secure::start().await;
    let api = s.admin().await;
    let task = |cfg: TaskConfig| Task {
        meta: Some(voiyd_messages::v1::Meta {
            name: "p1".into(),
            ..Default::default()
        }),
        config: Some(TaskConfig {
            image: "127.0.0.1:5000/voiyd/busybox:test".into(),
            ..cfg
        }),
        ..Default::default()
    };
    let err = api
        .create(&task(TaskConfig {
            privileged: true,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Invalid(_)) && err.to_string().contains("--allow-privileged=false"),
        "{err}"
    );
    let err = api
        .create(&task(TaskConfig {
            mounts: vec![voiyd_messages::v1::Mount {
                source: "/etc".into(),
                destination: "/e".into(),
                ..Default::default()
            }],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("--allow-host-paths=false"),
        "{err}"
    );
    // Malformed bodies on every verb become 400s, never a crash.
    for (kind, verb) in [
        ("tasks", "create"),
        ("tasks", "patch"),
        ("nodes", "delete"),
        ("tokens", "create"),
        ("nodes", "join"),
        ("events", "list"),
    ] {
        let r: Result<Task, _> = api
            .call_raw(
                &names::api_subject(kind, verb),
                Bytes::from_static(&[0xff, 0xff, 0xff, 0x0f, 0x01]),
            )
            .await;
        assert!(
            matches!(r, Err(ApiError::Invalid(_))),
            "{kind}.{verb}: {r:?}"
        );
    }
    // Oversized: refused by the API limit (or by NATS' max_payload before it).
    let big = Bytes::from(vec![b'x'; voiyd_nats::api::MAX_REQUEST_BYTES + 10]);
    let r: Result<Task, _> = api
        .call_raw(&names::api_subject("tasks", "create"), big)
        .await;
    assert!(matches!(r, Err(ApiError::TooLarge(_))), "{r:?}");
    // A node publishing garbage on its own subjects changes nothing either.
    let seed = s.join("g", &s.token(60).await.token).await.unwrap();
    let (g, _) = s.as_node("g", &seed).await;
    for subject in [names::node::heartbeat("g"), names::node::status("g")] {
        g.publish(subject, Bytes::from_static(&[0x0a, 0xff, 0xff]))
            .await
            .unwrap();
    }
    g.flush().await.unwrap();
    assert!(api.list::<Node>("").await.is_ok());
    assert!(s.proc.log_text().contains("API ready"));
    // A valid task still goes through.
    let ok = api.create(&task(TaskConfig::default())).await;
    assert!(ok.is_ok(), "{ok:?}");
    let _ = Message::encode_to_vec(&ok.unwrap());
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn real_node_joins_then_is_revoked_and_disconnected() {
    let s = Secure::start().await;
    let containerd = voiyd_testkit::containerd::TestContainerd::start();
    let token = s.token(300).await.token;
    let data = s.dir.path().join("node");
    let ca = path_str(&s.ca());
    let mut node = NodeAgent::start(
        &s.url(),
        "joiner",
        &containerd.socket,
        &data,
        &["--join-token", &token, "--tls-ca", &ca],
    );
    let api = s.admin().await;
    eventually(Duration::from_secs(20), "the joined node Ready", || async {
        let n: Node = api.get("joiner").await.ok()?;
        (n.status.as_ref()?.phase == "Ready").then_some(())
    })
    .await;
    let seed_file = data.join(voiyd_node::identity::join::SEED_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&seed_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let seed = std::fs::read_to_string(&seed_file)
        .unwrap()
        .trim()
        .to_string();
    // Restarted, the node uses its stored identity (the token is spent).
    node.restart(1);
    let (probe, _) = s.as_node("joiner", &seed).await;
    drop(probe);
    // Revoke: voiydctl delete node.
    let admin_seed = std::fs::read_to_string(s.admin_seed()).unwrap();
    let cfg = s.ctl_config("admin", Some(admin_seed.trim()));
    let (held, _) = s.as_node("joiner", &seed).await;
    let out = s.ctl(&cfg, &["delete", "node", "joiner"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The open connection is closed by NATS, and the identity is refused from now on.
    let start = Instant::now();
    while held.connection_state() == async_nats::connection::State::Connected {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the revoked connection stayed up; NATS log:\n{}",
            std::fs::read_to_string(s.dir.path().join("data/nats/nats.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = connect(&s.opts(Some(seed.clone()))).await.unwrap_err();
    assert!(matches!(err, ConnectError::Auth { .. }), "{err}");
    // Other connections stayed up through the reload.
    assert!(api.list::<Node>("").await.is_ok());
    drop(node);
}

/// Kills the tasks of a test containerd when the test ends, passed or not.
struct KillTasks(voiyd_testkit::containerd::TestContainerd);

impl Drop for KillTasks {
    fn drop(&mut self) {
        self.0.kill_all_tasks();
    }
}

/// The whole node path under TLS and identities: a node that joined with a token runs
/// work that an administrator drives through voiydctl, and NATS denies nothing on the way.
#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn joined_node_runs_work_end_to_end_under_auth_and_tls() {
    let s = Secure::start().await;
    let registry = voiyd_testkit::containerd::TestRegistry::start();
    let containerd = KillTasks(voiyd_testkit::containerd::TestContainerd::start());
    let token = s.token(300).await.token;
    let data = s.dir.path().join("node");
    let ca = path_str(&s.ca());
    let node = NodeAgent::start(
        &s.url(),
        "worker",
        &containerd.0.socket,
        &data,
        &["--join-token", &token, "--tls-ca", &ca, "--upgradable"],
    );
    let admin_seed = std::fs::read_to_string(s.admin_seed()).unwrap();
    let cfg = s.ctl_config("admin", Some(admin_seed.trim()));
    let ok = |args: &[&str]| {
        let out = s.ctl(&cfg, args);
        assert!(
            out.status.success(),
            "voiydctl {args:?} failed: {}{}\nnode log:\n{}",
            stdout(&out),
            stderr(&out),
            node.proc.log_text()
        );
        stdout(&out)
    };
    // Heartbeats accepted: the node registers and is Ready.
    eventually(Duration::from_secs(20), "the joined node Ready", || async {
        stdout(&s.ctl(&cfg, &["get", "nodes"]))
            .contains("Ready")
            .then_some(())
    })
    .await;

    // A template volume and a task that mounts it, prints a line and keeps running.
    let file = s.dir.path().join("app.conf");
    std::fs::write(&file, "secret-config-42\n").unwrap();
    ok(&[
        "create",
        "volume",
        "template",
        "conf",
        file.to_str().unwrap(),
    ]);
    ok(&["create", "volume", "host-local", "data"]);
    let image = registry.image("busybox");
    ok(&[
        "run",
        "web",
        "--image",
        &image,
        "-v",
        "conf:/etc/app/app.conf",
        "-v",
        "data:/data",
        "--stop-grace",
        "1s",
        "--timeout",
        "60s",
        "--",
        "sh",
        "-c",
        "echo kept > /data/f; echo hello-from-worker; while true; do sleep 0.2; done",
    ]);
    // Status reports accepted: Running on the joined node, with an address of the subnet
    // the node read under its own identity.
    let api = s.admin().await;
    let task: Task = eventually(
        Duration::from_secs(30),
        "web Running with an IP",
        || async {
            let t: Task = api.get("web").await.ok()?;
            let st = t.status.as_ref()?;
            (st.phase == "Running" && !st.ip.is_empty()).then_some(t)
        },
    )
    .await;
    let st = task.status.unwrap();
    assert_eq!(st.node, "worker");
    let n: Node = api.get("worker").await.unwrap();
    let subnet = n
        .status
        .as_ref()
        .map(|s| s.subnet.clone())
        .unwrap_or_default();
    assert!(
        voiyd_tests::in_subnet(&st.ip, &subnet),
        "{} not in {subnet}",
        st.ip
    );

    // logs and exec through the node's own subjects.
    let logs = eventually(
        Duration::from_secs(15),
        "the task's line in logs",
        || async {
            let out = s.ctl(&cfg, &["logs", "web"]);
            (out.status.success() && stdout(&out).contains("hello-from-worker"))
                .then(|| stdout(&out))
        },
    )
    .await;
    assert_eq!(logs, "hello-from-worker\n");
    let out = s.ctl(
        &cfg,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "cat /etc/app/app.conf; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "secret-config-42\n");
    // Stats through the node's own subjects.
    let out = ok(&["top", "tasks"]);
    assert!(out.contains("web") && out.contains("worker"), "{out}");
    // Cluster DNS: the node reads every name under its own identity.
    let out = eventually(Duration::from_secs(10), "web.voiyd resolves", || async {
        let out = s.ctl(&cfg, &["exec", "web", "--", "nslookup", "web.voiyd"]);
        (out.status.success() && stdout(&out).contains(&st.ip)).then(|| stdout(&out))
    })
    .await;
    assert!(out.contains(&st.ip), "{out}");
    // An agent upgrade: the admin stores the binary, the node fetches it under its own
    // identity and re-execs; the task runs on.
    let changed = s.dir.path().join("voiyd-node-changed");
    let mut bytes = std::fs::read(node.program()).unwrap();
    bytes.extend_from_slice(b"\nchanged\n");
    std::fs::write(&changed, &bytes).unwrap();
    let out = ok(&[
        "upgrade",
        "nodes",
        "--binary",
        changed.to_str().unwrap(),
        "--timeout",
        "60s",
    ]);
    assert!(out.contains("worker: "), "{out}");
    let digest = voiyd_node::upgrade::file_digest(&changed).unwrap();
    let n: Node = api.get("worker").await.unwrap();
    assert_eq!(n.status.unwrap().agent_digest, digest);

    // stop and delete.
    ok(&["stop", "task", "web", "--timeout", "30s"]);
    let t: Task = api.get("web").await.unwrap();
    assert_eq!(t.status.unwrap().phase, "Stopped");
    ok(&["delete", "task", "web", "--timeout", "30s"]);
    eventually(Duration::from_secs(20), "web gone", || async {
        api.get::<Task>("web").await.is_err().then_some(())
    })
    .await;
    ok(&["delete", "volume", "conf"]);
    // A purge: the node reads its own purge key, removes the data, then the key.
    let dir = data.join("volumes/data");
    assert!(dir.join("f").exists());
    ok(&["delete", "volume", "data", "--purge"]);
    let server = connect(&s.opts(Some(s.server_seed()))).await.unwrap();
    let purges = voiyd_nats::RawKv::new(
        jetstream::new(server)
            .get_key_value(names::BUCKET_VOLUME_PURGES)
            .await
            .unwrap(),
        "volume purge",
    );
    eventually(
        Duration::from_secs(20),
        "data purged, key deleted",
        || async {
            let key = purges.get(&names::purge_key("worker", "data")).await.ok()?;
            (!dir.exists() && key.is_none()).then_some(())
        },
    )
    .await;

    // NATS refused nothing on the way: no permission violation by anyone.
    let nats_log = std::fs::read_to_string(s.dir.path().join("data/nats/nats.log")).unwrap();
    assert!(nats_log.contains("Server is ready"), "{nats_log}");
    assert!(
        !nats_log.contains("Violation"),
        "NATS denied something:\n{nats_log}"
    );
    // The server took every report of the node.
    let server_log = s.proc.log_text();
    for dropped in [
        "heartbeat dropped",
        "status report dropped",
        "does not hold the task",
    ] {
        assert!(!server_log.contains(dropped), "{server_log}");
    }
    // ... and the node met no error on its side.
    let node_log = node.proc.log_text();
    for bad in [" WARN", "ERROR", "not sent", "ermissions violation"] {
        assert!(!node_log.contains(bad), "{bad}: {node_log}");
    }
}

/// Every message of every stream (KV buckets included), read raw with the server's
/// identity: `(stream, payload)`.
async fn every_stored_message(s: &Secure) -> Vec<(String, Bytes)> {
    use futures::StreamExt;
    let js = jetstream::new(connect(&s.opts(Some(s.server_seed()))).await.unwrap());
    let names: Vec<String> = js
        .stream_names()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|n| n.unwrap())
        .collect();
    let mut out = Vec::new();
    for name in names {
        let mut stream = js.get_stream(&name).await.unwrap();
        let (from, to) = {
            let info = stream.info().await.unwrap();
            (info.state.first_sequence, info.state.last_sequence)
        };
        for seq in from..=to {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push((name.clone(), m.payload));
            }
        }
    }
    out
}

/// Secrets under TLS and identities: encrypted at rest, values never in any bucket or
/// stream, delivered only to the node that runs the task (sealed to its key), as a file
/// that follows updates and as an environment variable; bad references refused at create.
#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn secrets_reach_only_their_task_on_their_node() {
    let s = Secure::start().await;
    let registry = voiyd_testkit::containerd::TestRegistry::start();
    let containerd = KillTasks(voiyd_testkit::containerd::TestContainerd::start());
    let ca = path_str(&s.ca());
    let start_node = |name: &str, token: String| {
        let data = s.dir.path().join(name);
        NodeAgent::start(
            &s.url(),
            name,
            &containerd.0.socket,
            &data,
            &["--join-token", &token, "--tls-ca", &ca],
        )
    };
    let node_a = start_node("sec-a", s.token(300).await.token);
    let admin_seed = std::fs::read_to_string(s.admin_seed()).unwrap();
    let cfg = s.ctl_config("admin", Some(admin_seed.trim()));
    let ctl = |args: &[&str]| s.ctl(&cfg, args);
    let ok = |args: &[&str]| {
        let out = ctl(args);
        assert!(
            out.status.success(),
            "voiydctl {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    eventually(Duration::from_secs(20), "sec-a Ready", || async {
        stdout(&ctl(&["get", "nodes"]))
            .contains("Ready")
            .then_some(())
    })
    .await;

    let first = "hunter2-first-7f3a9c";
    let second = "hunter2-second-0b5d1e";
    let cert = s.dir.path().join("tls.crt");
    std::fs::write(&cert, "CERT-BYTES-4e1f").unwrap();
    let out = ok(&[
        "create",
        "secret",
        "db",
        "--from-literal",
        &format!("password={first}"),
        "--from-literal",
        "user=admin",
        "--from-file",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(out.trim(), "secret/db created (password, tls.crt, user)");
    // Names and keys only.
    let out = ok(&["get", "secrets"]);
    assert!(
        out.contains("db") && out.contains("password,tls.crt,user"),
        "{out}"
    );
    let out = ok(&["get", "secret", "db", "-o", "yaml"]);
    assert!(!out.contains(first) && out.contains("password"), "{out}");

    // Bad input, one line each, nothing stored.
    let big = s.dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 300 * 1024]).unwrap();
    let image = registry.image("busybox");
    let out = ctl(&[
        "create",
        "secret",
        "huge",
        "--from-file",
        big.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("256 KiB"), "{}", stderr(&out));
    let manifest = |name: &str, secret: &str, key: &str| {
        format!(
            "version: task/v1\nmeta: {{name: {name}}}\nconfig:\n  image: {image}\n  args: [sh, -c, 'echo up; while true; do sleep 0.2; done']\n  stopGracePeriod: 1s\n  envvars:\n  - {{name: DB_PASSWORD, valueFrom: {{secret: {secret}, key: {key}}}}}\n  mounts:\n  - {{destination: /run/secrets/db, secret: {secret}}}\n"
        )
    };
    let apply = |yaml: String| {
        let path = s.dir.path().join("m.yaml");
        std::fs::write(&path, yaml).unwrap();
        ctl(&["apply", "-f", path.to_str().unwrap()])
    };
    let out = apply(manifest("sv", "nope", "password"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("secret nope not found"),
        "{}",
        stderr(&out)
    );
    let out = apply(manifest("sv", "db", "pin"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("secret db has no key pin (it has password, tls.crt, user)"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&ctl(&["get", "tasks"])).contains("sv"));

    // A task that reads it as a file and as a variable, on sec-a.
    let out = apply(manifest("sv", "db", "password"));
    assert!(out.status.success(), "{}", stderr(&out));
    let api = s.admin().await;
    eventually(Duration::from_secs(60), "sv Running", || async {
        let t: Task = api.get("sv").await.ok()?;
        let st = t.status?;
        assert_ne!(st.phase, "Failed", "{} {}", st.reason, st.message);
        (st.phase == "Running").then_some(())
    })
    .await;
    let read = |what: &str| {
        let script = format!("cat /run/secrets/db/{what}; echo; echo \"$DB_PASSWORD\"");
        stdout(&ctl(&["exec", "sv", "--", "sh", "-c", &script]))
    };
    assert_eq!(read("password"), format!("{first}\n{first}\n"));
    assert_eq!(read("tls.crt"), format!("CERT-BYTES-4e1f\n{first}\n"));
    let out = stdout(&ctl(&[
        "exec",
        "sv",
        "--",
        "sh",
        "-c",
        "touch /run/secrets/db/x 2>&1; mount | grep /run/secrets/db",
    ]));
    assert!(out.contains("Read-only") && out.contains("ro,"), "{out}");

    // An update reaches the file (the variable keeps the value it started with).
    let secret_yaml = format!(
        "version: secret/v1\nmeta: {{name: db}}\nstringData: {{password: {second}, user: admin}}\n"
    );
    let out = apply(secret_yaml);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(
        Duration::from_secs(15),
        "the new value in the file",
        || async { (read("password") == format!("{second}\n{first}\n")).then_some(()) },
    )
    .await;
    assert!(
        read("tls.crt").starts_with('\n'),
        "a key dropped from the secret leaves the mount"
    );

    // No value in any bucket or stream, read raw.
    let stored = every_stored_message(&s).await;
    assert!(stored.iter().any(|(n, _)| n == "KV_voiyd_secrets"));
    for value in [first, second, "CERT-BYTES-4e1f"] {
        for (stream, payload) in &stored {
            assert!(
                !payload.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value} stored in clear in {stream}"
            );
        }
    }

    // A second node's credential gets nothing: not through sec-a's subject (NATS refuses),
    // not through its own (the task is not its).
    let node_b = start_node("sec-b", s.token(300).await.token);
    let seed_file = s.dir.path().join("sec-b").join("nats.nk");
    let seed_b = eventually(Duration::from_secs(20), "sec-b joined", || async {
        std::fs::read_to_string(&seed_file).ok()
    })
    .await;
    let (client_b, mut errors) = s.as_node("sec-b", seed_b.trim()).await;
    let req = voiyd_messages::v1::SecretRequest {
        task: "sv".into(),
        secret: "db".into(),
    };
    let body = Bytes::from(req.encode_to_vec());
    let _ = client_b
        .request(names::node::secrets("sec-a"), body.clone())
        .await;
    violation(&mut errors, &names::node::secrets("sec-a")).await;
    let reply = client_b
        .request(names::node::secrets("sec-b"), body)
        .await
        .unwrap();
    let reply = voiyd_messages::v1::SecretReply::decode(reply.payload).unwrap();
    assert!(reply.sealed.is_empty());
    assert_eq!(reply.error, "task sv is not assigned to node sec-b");

    // In use: not deleted. Once the task is gone, it is, and its files leave the node.
    let out = ctl(&["delete", "secret", "db"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("used by task/sv"), "{}", stderr(&out));
    let files = s.dir.path().join("sec-a/secrets/sv");
    assert!(files.join("db/password").exists());
    ok(&["delete", "task", "sv", "--timeout", "30s"]);
    eventually(
        Duration::from_secs(20),
        "sv's secret files removed",
        || async { (!files.exists()).then_some(()) },
    )
    .await;
    ok(&["delete", "secret", "db"]);
    assert!(stdout(&ctl(&["get", "secrets"])).is_empty());
    drop(node_b);
    drop(node_a);
}

/// Key rotation: a new first key in the servers' key file, a restart, and every secret
/// is stored under it (re-encryption had to decrypt with the old key); the old key can
/// then leave the file.
#[tokio::test]
async fn a_new_secrets_key_re_encrypts_every_secret() {
    let mut server = voiyd_tests::Server::embedded().await;
    for name in ["rot1", "rot2"] {
        voiyd_tests::voiydctl_ok(
            &server.url,
            &["create", "secret", name, "--from-literal", "k=v"],
            None,
        );
    }
    let url = server.url.clone();
    let key_ids = || async {
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        let kv = js.get_key_value(names::BUCKET_SECRETS).await.unwrap();
        let mut ids = Vec::new();
        for name in ["rot1", "rot2"] {
            let bytes = kv.get(name).await.unwrap().unwrap();
            ids.push(
                voiyd_messages::v1::SealedSecret::decode(bytes)
                    .unwrap()
                    .key_id,
            );
        }
        ids
    };
    let before = key_ids().await;
    assert_eq!(before[0], before[1]);
    let file = server.data_dir().join("secrets.keys");
    let out = std::process::Command::new(bin("voiyd-server"))
        .args(["secrets", "new-key", "--file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);
    server.restart().await;
    let after = eventually(Duration::from_secs(20), "secrets re-encrypted", || async {
        let ids = key_ids().await;
        ids.iter().all(|id| *id != before[0]).then_some(ids)
    })
    .await;
    assert_eq!(after[0], after[1]);
    // Only the new key left: the server starts and reads every secret.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.lines().next().unwrap()).unwrap();
    server.restart().await;
    let out = voiyd_tests::voiydctl_ok(&server.url, &["get", "secrets"], None);
    assert!(out.contains("rot1") && out.contains("rot2"), "{out}");
    assert!(!server.proc.log_text().contains("cannot re-encrypt"));
}
