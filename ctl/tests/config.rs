//! The config file: init, create-server, use, list, view; resolution of the target.

use clap::Parser;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use voiyd_ctl::config::Config;
use voiyd_ctl::connection::{resolve, Globals};
use voiyd_ctl::Cli;

fn ctl(config: &Path, args: &[&str]) -> voiyd_ctl::Result<()> {
    let mut argv = vec!["voiydctl", "-c", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    voiyd_ctl::run(Cli::try_parse_from(argv).expect("parses"))
}

fn globals(config: &Path, server: Option<&str>) -> Globals {
    Globals {
        config_path: config.to_path_buf(),
        server: server.map(str::to_string),
        api_timeout: Duration::from_secs(3),
        wait_timeout: Duration::from_secs(60),
    }
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn init_create_use_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("voiydctl.yaml");
    ctl(&path, &["config", "init"]).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cfg = Config::load(&path).unwrap().unwrap();
    assert_eq!(cfg, Config::local());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("version: v1") && text.contains("current: local"),
        "{text}"
    );

    let e = ctl(&path, &["config", "init"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "config {} exists: pass --force to overwrite it",
            path.display()
        )
    );
    ctl(&path, &["config", "init", "--force"]).unwrap();

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, PEM).unwrap();
    ctl(
        &path,
        &[
            "config",
            "create-server",
            "prod",
            "--address",
            "10.0.0.1:4222,10.0.0.2:4222",
            "--ca",
            ca.to_str().unwrap(),
            "--user",
            "u",
            "--password",
            "p",
        ],
    )
    .unwrap();
    let cfg = Config::load(&path).unwrap().unwrap();
    assert_eq!(
        cfg.current, "local",
        "create-server without --use keeps the current server"
    );
    let prod = cfg.server("prod").unwrap();
    assert_eq!(
        prod.tls.as_ref().unwrap().ca,
        PEM,
        "the PEM is stored inline"
    );
    assert_eq!(prod.user.as_deref(), Some("u"));

    ctl(&path, &["config", "use", "prod"]).unwrap();
    let cfg = Config::load(&path).unwrap().unwrap();
    assert_eq!(cfg.current, "prod");
    assert!(cfg
        .render_servers()
        .lines()
        .any(|l| l.starts_with("*") && l.contains("prod")));
    assert!(cfg
        .render_servers()
        .lines()
        .any(|l| !l.starts_with("*") && l.contains("local")));

    let e = ctl(&path, &["config", "use", "nope"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no server named `nope` in the config (known: local, prod): add it with `voiydctl config create-server nope --address URL`"
    );
    // No leftover temporary files next to the config.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn bad_input_is_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let e = ctl(
        &path,
        &["config", "create-server", "x", "--address", "http://a:1"],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "address `http://a:1` has scheme `http`: use nats://, tls://, ws:// or wss://"
    );
    let not_pem = dir.path().join("x.txt");
    std::fs::write(&not_pem, "hello").unwrap();
    let e = ctl(
        &path,
        &[
            "config",
            "create-server",
            "x",
            "--address",
            "a:1",
            "--ca",
            not_pem.to_str().unwrap(),
        ],
    )
    .unwrap_err();
    assert!(e.to_string().contains("is not a PEM file"), "{e}");
    assert!(!path.exists());
    let e = ctl(&path, &["config", "use", "x"]).unwrap_err();
    assert!(e.to_string().contains("voiydctl config init"), "{e}");

    std::fs::write(&path, "servers: [oops\n").unwrap();
    let e = ctl(&path, &["config", "view"]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("config {} is not valid: ", path.display())),
        "{e}"
    );
    assert_eq!(e.to_string().lines().count(), 1);
}

#[test]
fn target_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    // No config, no --server: the local embedded cluster.
    let t = resolve(&globals(&path, None)).unwrap();
    assert_eq!(t.options.urls, vec!["nats://127.0.0.1:4222"]);
    assert!(!t.options.tls_required);

    let text = format!(
        "version: v1\nservers:\n- name: prod\n  address: a:1,tls://b:2\n  token: sekrit\n  tls:\n    ca: |\n{}\ncurrent: prod\n",
        PEM.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
    );
    std::fs::write(&path, text).unwrap();
    let t = resolve(&globals(&path, None)).unwrap();
    assert_eq!(t.options.urls, vec!["nats://a:1", "tls://b:2"]);
    assert!(t.options.tls_required);
    assert_eq!(t.options.token.as_deref(), Some("sekrit"));
    let ca = t.options.tls_ca.clone().unwrap();
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), PEM);
    assert_eq!(
        std::fs::metadata(&ca).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(t);
    assert!(!ca.exists(), "inline PEM files are removed afterwards");

    // --server ignores the config entirely.
    let t = resolve(&globals(&path, Some("127.0.0.1:5222"))).unwrap();
    assert_eq!(t.options.urls, vec!["nats://127.0.0.1:5222"]);
    assert!(!t.options.tls_required && t.options.token.is_none());

    std::fs::write(&path, "version: v1\nservers: []\ncurrent: gone\n").unwrap();
    let e = resolve(&globals(&path, None)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("current server `gone` is not in the config"),
        "{e}"
    );
}

#[test]
fn default_config_lives_in_home() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voiydctl"))
        .args(["config", "init"])
        .env("HOME", home.path())
        .env_remove("VOIYD_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(home.path().join(".voiyd/voiydctl.yaml").exists());
    let again = Command::new(env!("CARGO_BIN_EXE_voiydctl"))
        .args(["config", "init"])
        .env("HOME", home.path())
        .env_remove("VOIYD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.starts_with("error: config ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    // VOIYD_CONFIG names another file.
    let other = home.path().join("other.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_voiydctl"))
        .args(["config", "init"])
        .env("HOME", home.path())
        .env("VOIYD_CONFIG", &other)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(other.exists());
}
