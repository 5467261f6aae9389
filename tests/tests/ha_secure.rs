//! HA with security: three voiyd-servers in one embedded NATS cluster with `--auth` and
//! TLS. Nodes join through server 2 (the token was made through server 3, and replaying
//! it elsewhere fails); server 1 and its NATS are killed during 600 concurrent creates;
//! a node revoked through server 3 is disconnected from server 2's NATS and refused by
//! every server from then on. Every voiyd-server answers NATS' authorization requests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use voiyd_messages::v1::{
    JoinReply, JoinRequest, Node, Task, TokenCreateReply, TokenCreateRequest,
};
use voiyd_nats::api::{ApiClient, ApiError};
use voiyd_nats::connect::{connect, ConnectError, ConnectOptions};
use voiyd_nats::{auth, names};
use voiyd_tests::{
    bin, certs_init, creates_during, eventually, launch_embedded_cluster, sim_task, stderr,
    wait_running, work_holders, Proc, Server,
};

const SECRET: &str = "secure-ha-test-secret-0123456789";

/// Each test here runs three NATS nodes and several servers: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// TLS against `ca` (when given), as the holder of `seed` (a seed or a seed file).
fn opts_on(url: &str, ca: Option<&Path>, seed: Option<String>) -> ConnectOptions {
    ConnectOptions {
        name: "ha-secure-test".into(),
        tls_ca: ca.map(Path::to_path_buf),
        tls_required: ca.is_some(),
        nkey_seed: seed,
        connect_timeout: Duration::from_secs(3),
        ..ConnectOptions::from_urls(url)
    }
}

fn opts(url: &str, ca: &Path, seed: Option<String>) -> ConnectOptions {
    opts_on(url, Some(ca), seed)
}

fn seed_file(s: &Server, file: &str) -> String {
    s.data_dir()
        .join("auth")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

/// The API through `s`'s NATS as `s`'s local administrator.
async fn admin(s: &Server, ca: &Path) -> Option<ApiClient> {
    admin_on(s, &s.url, Some(ca)).await
}

/// The API through `url` as `s`'s local administrator.
async fn admin_on(s: &Server, url: &str, ca: Option<&Path>) -> Option<ApiClient> {
    let c = connect(&opts_on(url, ca, Some(seed_file(s, "admin.nk"))))
        .await
        .ok()?;
    Some(ApiClient::new(c).with_timeout(Duration::from_secs(5)))
}

async fn wait_secure(s: &Server, ca: &Path) {
    wait_secure_on(s, &s.url, Some(ca)).await
}

/// Waits (60 s at most) until `s` says its API is up and answers its admin through `url`.
async fn wait_secure_on(s: &Server, url: &str, ca: Option<&Path>) {
    let start = Instant::now();
    loop {
        if s.proc.log_text().contains("API ready") {
            if let Some(api) = admin_on(s, url, ca).await {
                if api.list::<Node>("").await.is_ok() {
                    return;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "secured server not ready; log:\n{}",
            s.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A simulated node in a process of its own that joins with `token` through `url`.
fn join_sim_node(url: &str, name: &str, token: &str, ca: Option<&Path>, dir: &Path) -> Proc {
    let data = dir.join(name);
    let mut tls = Vec::new();
    if let Some(ca) = ca {
        tls = vec!["--tls-ca".to_string(), ca.to_string_lossy().into_owned()];
    }
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend_from_slice(&[
        "--server",
        url,
        "--name",
        name,
        "--runtime",
        "sim",
        "--sim-cpu",
        "64",
        "--sim-memory",
        "64Gi",
        "--join-token",
        token,
        "--data-dir",
        data.to_str().unwrap(),
        "--log-level",
        "voiyd_node=info,warn",
    ]);
    Proc::spawn(
        &bin("voiyd-node"),
        &args,
        &[],
        dir.join(format!("{name}.log")),
    )
}

/// A revocation closes `held` within 10 s.
async fn closed_within_10s(held: &async_nats::Client, log: &str) -> Duration {
    let revoked = Instant::now();
    while held.connection_state() == async_nats::connection::State::Connected {
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "the revoked connection stayed up; server log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    revoked.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_secure_servers_lose_one_during_creates_and_revoke_through_another() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_init(&certs);
    let ca: PathBuf = certs.join("ca.pem");
    let mut servers = launch_embedded_cluster(
        "hs",
        &[
            "--tls-dir",
            certs.to_str().unwrap(),
            "--auth",
            "--nats-cluster-secret",
            SECRET,
        ],
    );
    for s in &servers {
        wait_secure(s, &ca).await;
    }
    // Without credentials, or with a key nobody registered: refused by the callout.
    let err = connect(&opts(&servers[1].url, &ca, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Auth { .. }), "{err}");
    let stranger = auth::new_user_key().0;
    let err = connect(&opts(&servers[2].url, &ca, Some(stranger)))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Auth { .. }), "{err}");
    // Each server's local admin is admitted by every NATS node.
    let cross = connect(&opts(
        &servers[0].url,
        &ca,
        Some(seed_file(&servers[2], "admin.nk")),
    ))
    .await
    .map(ApiClient::new)
    .unwrap();
    assert!(cross.list::<Node>("").await.is_ok());

    let apis = [
        admin(&servers[1], &ca).await.unwrap(),
        admin(&servers[2], &ca).await.unwrap(),
    ];
    // Tokens made through server 3; nodes join through server 2.
    let mut nodes = Vec::new();
    let mut first_token = String::new();
    for i in 0..3 {
        let t: TokenCreateReply = apis[1]
            .call(
                "tokens",
                "create",
                &TokenCreateRequest {
                    ttl_seconds: 600,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if i == 0 {
            first_token = t.token.clone();
        }
        nodes.push(join_sim_node(
            &servers[1].url,
            &format!("hs-{i}"),
            &t.token,
            Some(&ca),
            dir.path(),
        ));
    }
    eventually(Duration::from_secs(30), "3 joined nodes Ready", || async {
        let ns = apis[0].list::<Node>("").await.ok()?;
        let ready = ns
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| s.phase == "Ready"))
            .count();
        (ready == 3).then_some(())
    })
    .await;
    // A spent token replayed against another server is refused.
    let join_opts = ConnectOptions {
        user: Some(auth::JOIN_USER.into()),
        password: Some(auth::JOIN_PASSWORD.into()),
        inbox_prefix: Some(names::JOIN_INBOX_PREFIX.into()),
        ..opts(&servers[2].url, &ca, None)
    };
    let joiner =
        ApiClient::new(connect(&join_opts).await.unwrap()).with_timeout(Duration::from_secs(5));
    let replay: Result<JoinReply, ApiError> = joiner
        .call(
            auth::JOIN_KIND,
            auth::JOIN_VERB,
            &JoinRequest {
                token: first_token,
                node: "hs-replay".into(),
                public_key: auth::new_user_key().1,
            },
        )
        .await;
    let err = replay.unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    // 600 creates, 32 at a time through servers 2 and 3; server 1 is killed after 200.
    let (creates, kill_at) = creates_during(&apis, "s", 600, 32, 200);
    kill_at.notified().await;
    servers[0].kill();
    let results = creates.await.unwrap();
    let acknowledged: Vec<&String> = results
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(n, _)| n)
        .collect();
    eprintln!(
        "{} creates acknowledged, {} failed around the kill",
        acknowledged.len(),
        results.len() - acknowledged.len()
    );
    assert!(acknowledged.len() >= 200);
    wait_running(&apis[0], &acknowledged, Duration::from_secs(60)).await;
    // None is on two nodes: the work bucket, read as the servers' identity.
    let server_id = connect(&opts(
        &servers[1].url,
        &ca,
        Some(seed_file(&servers[1], "server.nk")),
    ))
    .await
    .unwrap();
    let holders = work_holders(&server_id).await;
    let doubles: Vec<_> = holders.iter().filter(|(_, n)| n.len() > 1).collect();
    assert!(doubles.is_empty(), "tasks on several nodes: {doubles:?}");
    for n in &acknowledged {
        assert!(holders.contains_key(*n), "{n} has no work");
    }

    // Revocation through server 3 closes hs-0's connection on server 2's NATS.
    let seed = std::fs::read_to_string(
        dir.path()
            .join("hs-0/hs-0")
            .join(voiyd_node::identity::join::SEED_FILE),
    )
    .unwrap()
    .trim()
    .to_string();
    let held = connect(&opts(&servers[1].url, &ca, Some(seed.clone())))
        .await
        .unwrap();
    let ctl_cfg = dir.path().join("ctl.yaml");
    let mut text = format!(
        "version: v1\ncurrent: s\nservers:\n- name: s\n  address: {}\n  tls:\n    ca: |\n",
        servers[2].url
    );
    for line in std::fs::read_to_string(&ca).unwrap().lines() {
        text.push_str(&format!("      {line}\n"));
    }
    let admin_seed = std::fs::read_to_string(seed_file(&servers[2], "admin.nk")).unwrap();
    text.push_str(&format!("  nkeySeed: {}\n", admin_seed.trim()));
    std::fs::write(&ctl_cfg, text).unwrap();
    let out = std::process::Command::new(bin("voiydctl"))
        .arg("-c")
        .arg(&ctl_cfg)
        .args(["delete", "node", "hs-0"])
        .env("HOME", dir.path())
        .env_remove("VOIYD_SERVER")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked = Instant::now();
    while held.connection_state() == async_nats::connection::State::Connected {
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "the revoked connection stayed up; server 3 log:\n{}",
            servers[2].proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "revoked connection closed {:?} after the delete",
        revoked.elapsed()
    );
    for s in &servers[1..] {
        let err = connect(&opts(&s.url, &ca, Some(seed.clone())))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Auth { .. }), "{err}");
    }
    // The other nodes and clients stayed connected throughout.
    let ready = apis[0]
        .list::<Node>("")
        .await
        .unwrap()
        .iter()
        .filter(|n| n.status.as_ref().is_some_and(|s| s.phase == "Ready"))
        .count();
    assert_eq!(ready, 2);
    drop(nodes);
}

/// The same on an external NATS cluster configured with `voiyd-server auth
/// print-nats-config`: two voiyd-servers with `--nats-url`, a node that joins through
/// one NATS node, revoked through the other voiyd-server; with one voiyd-server killed,
/// clients still connect (the other answers the callout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_nats_with_auth_callout_joins_and_revokes_through_any_server() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let out = std::process::Command::new(bin("voiyd-server"))
        .args(["auth", "print-nats-config", "--auth-secret", SECRET])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let conf = String::from_utf8(out.stdout).unwrap();
    let nats = voiyd_tests::NatsCluster::start_with(3, &conf).await;
    let urls = nats.url_list();
    let flags = ["--auth", "--auth-secret", SECRET, "--replicas", "3"];
    let mut a = Server::launch_external(&urls, &flags);
    let b = Server::launch_external(&urls, &flags);
    wait_secure_on(&a, &nats.urls[0], None).await;
    wait_secure_on(&b, &nats.urls[2], None).await;
    // Without the secret, a server cannot even connect.
    let err = connect(&opts_on(&nats.urls[0], None, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Auth { .. }), "{err}");

    let api_a = admin_on(&a, &nats.urls[0], None).await.unwrap();
    let api_b = admin_on(&b, &nats.urls[2], None).await.unwrap();
    let t: TokenCreateReply = api_a
        .call(
            "tokens",
            "create",
            &TokenCreateRequest {
                ttl_seconds: 600,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = join_sim_node(&nats.urls[1], "ext-n", &t.token, None, dir.path());
    eventually(Duration::from_secs(30), "the joined node Ready", || async {
        let n: Node = api_b.get("ext-n").await.ok()?;
        (n.status.as_ref()?.phase == "Ready").then_some(())
    })
    .await;
    api_b.create(&sim_task("ext-t")).await.unwrap();
    eventually(Duration::from_secs(20), "its task Running", || async {
        let t: Task = api_a.get("ext-t").await.ok()?;
        (t.status.as_ref()?.phase == "Running").then_some(())
    })
    .await;

    let seed = std::fs::read_to_string(
        dir.path()
            .join("ext-n/ext-n")
            .join(voiyd_node::identity::join::SEED_FILE),
    )
    .unwrap()
    .trim()
    .to_string();
    let held = connect(&opts_on(&nats.urls[1], None, Some(seed.clone())))
        .await
        .unwrap();
    let reply = api_b
        .delete(
            voiyd_messages::Kind::Node,
            &voiyd_messages::v1::DeleteRequest {
                name: "ext-n".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    let took = closed_within_10s(&held, &b.proc.log_text()).await;
    eprintln!("revoked connection closed {took:?} after the delete");
    for url in &nats.urls {
        let err = connect(&opts_on(url, None, Some(seed.clone())))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Auth { .. }), "{err}");
    }
    // With server a gone, server b alone answers the callout for new connections.
    a.kill();
    for url in &nats.urls {
        let api = admin_on(&b, url, None).await;
        assert!(
            api.is_some(),
            "admin of b refused through {url} with a down"
        );
        assert!(api.unwrap().list::<Node>("").await.is_ok());
    }
    drop(node);
}
