//! Pulling test images from a real docker-registry into a real containerd (needs root).

use std::sync::Mutex;

use voiyd_node::containerd::client::Containerd;
use voiyd_node::image::{
    image_config, pull, remove_image, snapshot_exists, PullError, PullOptions, PullPolicy,
    PullProgress, RegistryAuth,
};
use voiyd_testkit::containerd::{free_port, TestContainerd, TestRegistry};

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn opts(policy: PullPolicy) -> PullOptions {
    PullOptions {
        policy,
        ..PullOptions::default()
    }
}

/// Pulls and returns the image with every progress report seen.
async fn pull_recording(
    cd: &Containerd,
    reference: &str,
    o: &PullOptions,
) -> (
    Result<voiyd_node::image::PulledImage, PullError>,
    Vec<PullProgress>,
) {
    let seen = Mutex::new(Vec::new());
    let r = pull(cd, reference, o, |p| seen.lock().unwrap().push(p)).await;
    (r, seen.into_inner().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn pulls_busybox_and_multi_layer_images_into_containerd() {
    init();
    let ctd = TestContainerd::start();
    let reg = TestRegistry::start();
    let cd = ctd.connect().await.unwrap();

    let (img, progress) =
        pull_recording(&cd, &reg.image("busybox"), &opts(PullPolicy::Always)).await;
    let img = img.unwrap_or_else(|e| panic!("{e}\n{}", ctd.log()));
    assert_eq!(img.name, reg.image("busybox"));
    let last = progress.last().expect("progress reported");
    assert!(last.bytes_total > 1_000_000, "busybox is ~1 MB: {last:?}");
    assert_eq!(last.bytes_done, last.bytes_total);
    assert!(progress
        .windows(2)
        .all(|w| w[0].bytes_done <= w[1].bytes_done));
    assert!(snapshot_exists(&cd, "overlayfs", &img.chain_id)
        .await
        .unwrap());
    assert_eq!(img.config.cmd, ["sh"]);

    // Read back from containerd only.
    let back = image_config(&cd, &img.name).await.unwrap();
    assert_eq!(back, img);

    let (multi, _) = pull_recording(&cd, &reg.image("multi"), &opts(PullPolicy::Always)).await;
    let multi = multi.unwrap();
    assert_eq!(multi.config.user, "app");
    assert_eq!(multi.config.working_dir, "/work");
    assert_eq!(multi.config.entrypoint, ["/bin/sh", "-c"]);
    assert!(multi.config.env.contains(&"GREETING=hello".to_string()));
    assert_eq!(multi.config.exposed_ports, ["8080/tcp"]);
    assert_ne!(multi.chain_id, img.chain_id);
    assert!(snapshot_exists(&cd, "overlayfs", &multi.chain_id)
        .await
        .unwrap());
    // The first layer is shared with busybox: its snapshot is busybox's top snapshot.
    assert!(snapshot_exists(&cd, "overlayfs", &img.chain_id)
        .await
        .unwrap());

    // Pulling again with Always re-resolves but finds everything present.
    let again = pull(&cd, &reg.image("multi"), &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap();
    assert_eq!(again, multi);

    assert!(remove_image(&cd, &multi.name).await.unwrap());
    assert!(!remove_image(&cd, &multi.name).await.unwrap());
    let err = image_config(&cd, &multi.name).await.unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn if_not_present_uses_the_local_image_without_the_registry() {
    init();
    let ctd = TestContainerd::start();
    let mut reg = TestRegistry::start();
    let cd = ctd.connect().await.unwrap();
    let reference = reg.image("busybox");

    let never = pull(&cd, &reference, &opts(PullPolicy::Never), |_| {}).await;
    let err = never.unwrap_err();
    assert!(matches!(err, PullError::NotPresent { .. }), "{err}");

    let first = pull(&cd, &reference, &opts(PullPolicy::IfNotPresent), |_| {})
        .await
        .unwrap();
    reg.stop();

    // With the registry gone, IfNotPresent and Never still succeed from containerd's store...
    let second = pull(&cd, &reference, &opts(PullPolicy::IfNotPresent), |_| {})
        .await
        .unwrap();
    assert_eq!(second, first);
    let third = pull(&cd, &reference, &opts(PullPolicy::Never), |_| {})
        .await
        .unwrap();
    assert_eq!(third, first);
    // ...while Always has to reach it, proving the registry is really down.
    let err = pull(&cd, &reference, &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("cannot reach registry {}", reg.host)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn errors_carry_the_registry_reason_or_connection_failure() {
    init();
    let ctd = TestContainerd::start();
    let reg = TestRegistry::start();
    let cd = ctd.connect().await.unwrap();

    let unknown_tag = format!("{}/voiyd/busybox:nope", reg.host);
    let err = pull(&cd, &unknown_tag, &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("pull {unknown_tag}: manifest unknown (404 from registry)")
    );

    let unknown_repo = format!("{}/voiyd/nope:1", reg.host);
    let err = pull(&cd, &unknown_repo, &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("pull {unknown_repo}: ")),
        "{text}"
    );
    assert!(text.ends_with("(404 from registry)"), "{text}");

    let closed = format!("127.0.0.1:{}/x:1", free_port());
    let err = pull(&cd, &closed, &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    let host = closed.split('/').next().unwrap();
    assert!(
        text.starts_with(&format!("pull {closed}: cannot reach registry {host}: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connection refused"), "{text}");

    let err = pull(&cd, "Bad/Name", &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid image reference 'Bad/Name'"),
        "{err}"
    );
}

/// Pull options whose registry auth file (written under `dir`) holds `user`/`pass` for `host`.
fn with_credentials(dir: &std::path::Path, host: &str, user: &str, pass: &str) -> PullOptions {
    let file = dir.join("auth.json");
    std::fs::write(
        &file,
        format!(r#"{{"auths":{{"{host}":{{"username":"{user}","password":"{pass}"}}}}}}"#),
    )
    .unwrap();
    PullOptions {
        auth: RegistryAuth::load(&file).unwrap(),
        ..opts(PullPolicy::Always)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn basic_auth_registry_needs_credentials_from_the_auth_file() {
    init();
    let ctd = TestContainerd::start();
    let reg = TestRegistry::start_with_basic_auth("alice", "s3cret");
    let cd = ctd.connect().await.unwrap();
    let reference = reg.image("busybox");

    let err = pull(&cd, &reference, &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("(401 from registry)"), "{text}");
    assert!(
        text.ends_with(&format!(
            "add credentials for {} to the registry auth file",
            reg.host
        )),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let o = with_credentials(dir.path(), &reg.host, "alice", "wrong");
    let err = pull(&cd, &reference, &o, |_| {}).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with(&format!("check the credentials for {}", reg.host)),
        "{err}"
    );

    let o = with_credentials(dir.path(), &reg.host, "alice", "s3cret");
    let img = pull(&cd, &reference, &o, |_| {}).await.unwrap();
    assert!(snapshot_exists(&cd, "overlayfs", &img.chain_id)
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn token_auth_registry_is_pulled_through_the_bearer_flow() {
    init();
    let ctd = TestContainerd::start();
    let reg = TestRegistry::start_with_token_auth("bob", "t0ken-pass");
    let cd = ctd.connect().await.unwrap();
    let reference = reg.image("busybox");
    let (issued_at_start, refused_at_start) = reg.token_stats();

    // Anonymous: the token server refuses, and the error says what to do.
    let err = pull(&cd, &reference, &opts(PullPolicy::Always), |_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("the token service refused"), "{text}");
    assert!(
        text.ends_with(&format!(
            "add credentials for {} to the registry auth file",
            reg.host
        )),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let with = |user: &str, pass: &str| with_credentials(dir.path(), &reg.host, user, pass);
    let err = pull(&cd, &reference, &with("bob", "wrong"), |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&reg.host), "{err}");
    let (issued, refused) = reg.token_stats();
    assert_eq!(issued, issued_at_start, "no token for bad credentials");
    assert!(refused >= refused_at_start + 2, "{refused}");

    let img = pull(&cd, &reference, &with("bob", "t0ken-pass"), |_| {})
        .await
        .unwrap();
    assert!(snapshot_exists(&cd, "overlayfs", &img.chain_id)
        .await
        .unwrap());
    let (issued, _) = reg.token_stats();
    assert!(issued > issued_at_start, "the pull went through a token");
}
