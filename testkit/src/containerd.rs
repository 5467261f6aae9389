//! Test fixtures: a private containerd and a local registry holding voiyd's test images.
//!
//! Both run the scripts in `scripts/` (the same ones CI uses) and stop, on drop, only the
//! process they started, by PID. Tests need root (containerd) and Debian's `containerd`,
//! `runc`, `docker-registry`, `skopeo` and `busybox-static`.

use rustix::process::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use voiyd_node::containerd::client::{random_suffix, Containerd, ContainerdError};

/// The workspace's `scripts/` directory.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// A containerd namespace no other test uses: `<prefix>-<random>`.
pub fn unique_namespace(prefix: &str) -> String {
    format!("{prefix}-{}", &random_suffix()[..10])
}

/// Runs a script and returns its stdout, panicking with its stderr on failure.
fn run_script(script: &str, args: &[&str]) -> String {
    let path = scripts_dir().join(script);
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    if !out.status.success() {
        panic!(
            "{} {:?} failed ({}):\n{}",
            path.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parse_pid(stdout: &str, what: &str) -> i32 {
    stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what} script printed no PID: {stdout:?}"))
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL after `grace`; waits until the process is gone.
fn stop_pid(pid: i32, grace: Duration) {
    if pid <= 0 || !alive(pid) {
        return;
    }
    crate::kill(pid as u32, Signal::TERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        crate::kill(pid as u32, Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A private containerd with its root, state, socket and log in a temporary directory.
pub struct TestContainerd {
    /// The gRPC socket.
    pub socket: PathBuf,
    /// containerd's PID.
    pub pid: i32,
    /// Holds root, state and `containerd.log`; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestContainerd {
    /// Starts containerd via `scripts/start-containerd.sh` and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("voiyd-cd-")
            .tempdir()
            .expect("create temp dir for containerd");
        let stdout = run_script(
            "start-containerd.sh",
            &[dir.path().to_str().expect("utf-8 temp dir")],
        );
        Self {
            socket: dir.path().join("containerd.sock"),
            pid: parse_pid(&stdout, "start-containerd.sh"),
            dir,
        }
    }

    /// Connects in a fresh namespace unique to the caller.
    pub async fn connect(&self) -> Result<Containerd, ContainerdError> {
        Containerd::connect(&self.socket, unique_namespace("voiyd-test")).await
    }

    /// containerd's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl TestContainerd {
    /// Kills every task this containerd runs, in every namespace, so that no shim or
    /// container outlives the test (shims are re-parented away from containerd and
    /// would otherwise keep running after it stops).
    pub fn kill_all_tasks(&self) {
        let ctr = |args: &[&str]| -> String {
            Command::new("ctr")
                .arg("--address")
                .arg(&self.socket)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for ns in ctr(&["namespaces", "ls", "-q"]).lines() {
            let tasks = ctr(&["-n", ns, "tasks", "ls", "-q"]);
            for id in tasks.lines() {
                ctr(&["-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id]);
            }
            for id in tasks.lines() {
                // Deleting the exited task makes its shim exit.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    ctr(&["-n", ns, "tasks", "delete", id]);
                    let gone = !ctr(&["-n", ns, "tasks", "ls", "-q"])
                        .lines()
                        .any(|l| l == id);
                    if gone || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        self.kill_all_tasks();
        stop_pid(self.pid, Duration::from_secs(5));
    }
}

/// The directory holding `busybox.tar`, `multi.tar` and `healthy.tar`, built once per process.
///
/// One shared directory: the build is deterministic and replaces files atomically, so
/// concurrent test processes write identical bytes and readers never see partial archives.
pub fn test_images_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let uid = rustix::process::getuid().as_raw();
        let dir = std::env::temp_dir().join(format!("voiyd-test-images-{uid}"));
        let script = scripts_dir().join("build-test-images.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "build-test-images.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A free TCP port on 127.0.0.1 (bound then released; a small race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A docker-registry on loopback with `voiyd/busybox:test` and `voiyd/multi:test` pushed.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The registry's PID (0 after [`TestRegistry::stop`]).
    pub pid: i32,
    /// Basic-auth credentials the registry requires, if any.
    pub credentials: Option<(String, String)>,
    /// Storage, config and log; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts an anonymous registry and pushes the test images.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts a registry requiring HTTP basic auth (htpasswd) and pushes the test images.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(credentials: Option<(String, String)>) -> Self {
        let images = test_images_dir();
        let dir = tempfile::Builder::new()
            .prefix("voiyd-reg-")
            .tempdir()
            .expect("create temp dir for registry");
        let port = free_port().to_string();
        let dir_s = dir.path().to_str().expect("utf-8 temp dir");
        let mut args = vec![port.as_str(), dir_s];
        if let Some((u, p)) = &credentials {
            args.push(u);
            args.push(p);
        }
        let pid = parse_pid(&run_script("start-registry.sh", &args), "start-registry.sh");
        let mut reg = Self {
            host: format!("127.0.0.1:{port}"),
            pid,
            credentials,
            dir,
        };
        let images_s = images.to_str().expect("utf-8 images dir");
        let mut push_args = vec![port.as_str(), images_s];
        if let Some((u, p)) = &reg.credentials {
            push_args.push(u);
            push_args.push(p);
        }
        run_script("push-test-images.sh", &push_args);
        reg.pid = pid;
        reg
    }

    /// The reference of a pushed test image, e.g. `image("busybox")` → `127.0.0.1:PORT/voiyd/busybox:test`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/voiyd/{name}:test", self.host)
    }

    /// Stops the registry now (to prove later pulls do not contact it).
    pub fn stop(&mut self) {
        stop_pid(self.pid, Duration::from_secs(5));
        self.pid = 0;
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        stop_pid(self.pid, Duration::from_secs(5));
    }
}
