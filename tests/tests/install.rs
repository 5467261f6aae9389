//! scripts/install.sh: the units it writes pass `systemd-analyze verify`, and run as
//! systemd would run them (settings file as environment, `$VAR` split on spaces) they
//! start a real server and a node that joins it. Everything goes to a temp dir
//! (--prefix/--unit-dir/--config-dir/--data-dir, --no-start): the host is not touched.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use voiyd_testkit::nats::free_port;
use voiyd_tests::{eventually, stderr, stdout, voiydctl, Proc};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        let bins = voiyd_tests::bin("voiyd-server");
        // The common options first: `args` may end with `-- FLAGS`.
        Command::new(repo().join("scripts/install.sh"))
            .args(["--bin-dir", bins.parent().unwrap().to_str().unwrap()])
            .args(["--prefix", d.join("usr").to_str().unwrap()])
            .args(["--unit-dir", d.join("units").to_str().unwrap()])
            .args(["--config-dir", d.join("etc").to_str().unwrap()])
            .args(["--data-dir", d.join("data").to_str().unwrap()])
            .arg("--no-start")
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "install.sh {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

/// The `Key=` lines of a unit's [Service] section.
fn unit(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Starts a unit's ExecStart as systemd would: its EnvironmentFile as environment,
/// `$VAR` words replaced by the variable split on spaces.
fn start_like_systemd(unit_path: &Path, log: PathBuf) -> Proc {
    let u = unit(unit_path);
    let env_file = u["EnvironmentFile"].trim_start_matches('-');
    let env: Vec<(String, String)> = std::fs::read_to_string(env_file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect();
    let mut words = u["ExecStart"].split_whitespace();
    let program = PathBuf::from(words.next().unwrap());
    let mut args: Vec<String> = Vec::new();
    for w in words {
        match w.strip_prefix('$') {
            Some(var) => {
                let value = env.iter().find(|(k, _)| k == var).map(|(_, v)| v.as_str());
                args.extend(value.unwrap_or("").split_whitespace().map(String::from));
            }
            None => args.push(w.to_string()),
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Proc::spawn(&program, &args, &envs, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_units_verify_and_start_a_server_and_a_node() {
    let i = Install {
        dir: tempfile::tempdir().unwrap(),
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("nats://{listen}");
    let cidr = voiyd_tests::test_cluster_cidr(&url);
    i.ok(&[
        "--server",
        "--",
        "--nats-listen",
        &listen,
        "--cluster-cidr",
        &cidr,
        "--node-subnet-prefix",
        "27",
    ]);
    i.ok(&[
        "--node",
        "--server",
        &url,
        "--name",
        "svc-node",
        "--",
        "--runtime",
        "sim",
    ]);
    let (server_unit, node_unit) = (
        i.path("units/voiyd-server.service"),
        i.path("units/voiyd-node.service"),
    );

    // What the units promise.
    let s = unit(&server_unit);
    assert_eq!(s["Restart"], "always");
    assert_eq!(s["After"], "network-online.target");
    let n = unit(&node_unit);
    assert_eq!(n["Restart"], "always");
    assert!(
        n["After"].contains("containerd.service"),
        "{:?}",
        n["After"]
    );
    assert_eq!(
        n["KillMode"], "process",
        "stopping the agent must leave containers running"
    );
    for f in ["etc/server.env", "etc/node.env"] {
        let mode = std::fs::metadata(i.path(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f} may hold secrets");
    }
    for b in ["voiyd-server", "voiyd-node", "voiydctl"] {
        assert!(i.path(&format!("usr/bin/{b}")).exists(), "{b} installed");
    }

    // systemd's own check, where systemd-analyze exists: no warning at all.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        for u in [&server_unit, &node_unit] {
            let o = Command::new("systemd-analyze")
                .arg("verify")
                .arg(u)
                .output()
                .unwrap();
            assert!(
                o.status.success() && stderr(&o).trim().is_empty(),
                "systemd-analyze verify {}: {}{}",
                u.display(),
                stdout(&o),
                stderr(&o)
            );
        }
    }

    // Run as systemd would: the server answers, the node joins under its --name.
    let _server = start_like_systemd(&server_unit, i.path("server.log"));
    let _node = start_like_systemd(&node_unit, i.path("node.log"));
    eventually(Duration::from_secs(30), "svc-node Ready", || async {
        let o = voiydctl(&url, &["get", "nodes"], None, &[]);
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("svc-node") && l.contains("Ready"))
            .then_some(())
    })
    .await;

    // A reinstall keeps an edited settings file; --force rewrites it.
    let env = i.path("etc/node.env");
    std::fs::write(&env, "VOIYD_SERVER=nats://edited:4222\n").unwrap();
    i.ok(&["--node", "--server", &url]);
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "VOIYD_SERVER=nats://edited:4222\n"
    );
    i.ok(&["--node", "--server", &url, "--force"]);
    assert!(std::fs::read_to_string(&env).unwrap().contains(&url));
}

#[test]
fn bad_install_options_fail_with_one_line() {
    let i = Install {
        dir: tempfile::tempdir().unwrap(),
    };
    for (args, says) in [
        (&["--node"][..], "--node needs --server"),
        (&[][..], "give --server (control plane) or --node"),
        (
            &["--server", "--node"][..],
            "give one of --server or --node",
        ),
        (&["--node", "--server", "10.0.0.1"][..], "give a NATS URL"),
        (&["--server", "nats://a:4222"][..], "add --node"),
        (&["--server", "--wat"][..], "unknown option --wat"),
        (
            &["--server", "--", "--labels", "a b"][..],
            "has spaces or quotes",
        ),
    ] {
        let o = i.run(args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "install.sh {args:?}: {}",
            stderr(&o)
        );
        let err = stderr(&o);
        assert!(
            err.contains(says) && err.trim().lines().count() == 1,
            "install.sh {args:?}: {err}"
        );
    }
    assert!(!i.path("units").exists(), "nothing written on bad input");
}
