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
    /// Credentials the registry requires (basic auth, or for tokens), if any.
    pub credentials: Option<(String, String)>,
    /// The token server of a registry requiring bearer tokens: `127.0.0.1:PORT` and PID.
    pub token_server: Option<(String, i32)>,
    /// Storage, config and log; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts an anonymous registry and pushes the test images.
    pub fn start() -> Self {
        Self::start_inner(None, false)
    }

    /// Starts a registry requiring HTTP basic auth (htpasswd) and pushes the test images.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string())), false)
    }

    /// Starts a registry requiring bearer tokens, as Docker Hub does: a token server
    /// (`scripts/start-token-server.sh`) hands them out for these credentials.
    pub fn start_with_token_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string())), true)
    }

    /// Tokens the token server issued and requests it refused so far.
    pub fn token_stats(&self) -> (u64, u64) {
        let (addr, _) = self.token_server.as_ref().expect("a token-auth registry");
        let body = http_get(addr, "/stats");
        let number = |key: &str| -> u64 {
            let rest = body.split(&format!("\"{key}\":")).nth(1).unwrap_or("");
            rest.trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or_else(|_| panic!("no {key} in {body}"))
        };
        (number("tokens_issued"), number("refused"))
    }

    fn start_inner(credentials: Option<(String, String)>, tokens: bool) -> Self {
        let images = test_images_dir();
        let dir = tempfile::Builder::new()
            .prefix("voiyd-reg-")
            .tempdir()
            .expect("create temp dir for registry");
        let port = free_port().to_string();
        let dir_s = dir.path().to_str().expect("utf-8 temp dir");
        let mut token_server = None;
        let (service, issuer) = ("voiyd-test-registry", "voiyd-test-tokens");
        let token_port = free_port().to_string();
        let token_dir = format!("{dir_s}/tokens");
        let realm = format!("http://127.0.0.1:{token_port}/token");
        let root_cert = format!("{token_dir}/token-ca.pem");
        let mut args = vec![port.as_str(), dir_s];
        match &credentials {
            Some((u, p)) if tokens => {
                let pid = parse_pid(
                    &run_script(
                        "start-token-server.sh",
                        &[&token_port, &token_dir, u, p, service, issuer],
                    ),
                    "start-token-server.sh",
                );
                token_server = Some((format!("127.0.0.1:{token_port}"), pid));
                args.extend(["--token", &realm, service, issuer, &root_cert]);
            }
            Some((u, p)) => args.extend([u.as_str(), p.as_str()]),
            None => {}
        }
        let pid = parse_pid(&run_script("start-registry.sh", &args), "start-registry.sh");
        let mut reg = Self {
            host: format!("127.0.0.1:{port}"),
            pid,
            credentials,
            token_server,
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
        if let Some((_, pid)) = self.token_server {
            stop_pid(pid, Duration::from_secs(5));
        }
    }
}

/// The body of a plain-HTTP GET on loopback (test servers only).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
