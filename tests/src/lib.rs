//! End-to-end test harness: starts real processes of our binaries (voiyd-server,
//! voiyd-node, voiydctl) against real nats-server processes, and stops exactly the
//! processes it started, by PID.
//!
//! The binaries must be built first (`cargo build --bins`, which `scripts/test.sh` does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use voiyd_nats::api::ApiClient;
pub use voiyd_testkit::Signal;

/// Path of one of our binaries: in `$VOIYD_BIN_DIR` when set (benchmarks use release
/// builds), else in the workspace's debug target directory.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("VOIYD_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` first",
        p.display()
    );
    // `cargo test` builds the test crates, not the binaries they start: an old binary
    // would make the tests test old code.
    let built = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(source)) = (built, newest_source(name)) {
        assert!(
            built >= source,
            "{} is older than the sources: run `cargo build --bins` first",
            p.display()
        );
    }
    p
}

/// When the newest source file of the crates `program` is built from was changed.
fn newest_source(program: &str) -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                if newest.is_none_or(|n| t > n) {
                    *newest = Some(t);
                }
            }
        }
    }
    let own = match program {
        "voiyd-server" => "server",
        "voiyd-node" => "node",
        "voiydctl" => "ctl",
        _ => return None,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest = None;
    for dir in [
        "messages/src",
        "nats/src",
        "metrics/src",
        &format!("{own}/src"),
    ] {
        walk(&root.join(dir), &mut newest);
    }
    // The server compiles the dashboard's files in.
    if own == "server" {
        walk(&root.join("ui"), &mut newest);
    }
    newest
}

pub use voiyd_testkit::kill;

pub mod browser;
pub mod hosts;

/// The node and address of task `name` once it is Running with an address (`None`
/// before); fails the test, with the reason, when the task failed.
pub async fn running_task(api: &ApiClient, name: &str) -> Option<(String, String)> {
    let t: voiyd_messages::v1::Task = api.get(name).await.ok()?;
    let st = t.status?;
    assert_ne!(st.phase, "Failed", "{name}: {} {}", st.reason, st.message);
    (st.phase == "Running" && !st.ip.is_empty()).then_some((st.node, st.ip))
}

/// Polls `check` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process we started, killed (SIGKILL) on drop unless stopped before.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `program` with `args`, logging to `log`.
    pub fn spawn(program: &Path, args: &[&str], envs: &[(&str, &str)], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Proc { child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: Signal) {
        kill(self.child.id(), sig);
    }

    /// SIGTERM, then waits up to `grace` and SIGKILLs. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.signal(Signal::TERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failing test's logs outlive its temporary directory, for the post-mortem.
        if std::thread::panicking() {
            let keep = Path::new("/tmp/voiyd-test-logs");
            let name = self.log.file_name().unwrap_or_default().to_string_lossy();
            let to = keep.join(format!("{}-{name}", self.child.id()));
            if std::fs::create_dir_all(keep).is_ok() && std::fs::copy(&self.log, &to).is_ok() {
                eprintln!("log kept: {}", to.display());
            }
        }
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Children of a process (spawned from any of its threads), from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    threads
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The embedded nats-server child of a voiyd-server process, if one runs.
pub fn nats_child(server_pid: u32) -> Option<u32> {
    children_of(server_pid).into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "nats-server")
    })
}

/// The cluster CIDR of a test cluster: a /24 derived from its NATS port, so clusters of
/// tests running at once on one host never share container addresses (8 nodes of /27,
/// 29 running tasks each).
pub fn test_cluster_cidr(nats_url: &str) -> String {
    let port: u16 = nats_url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(4222);
    // Ephemeral ports (32768 and up) keep the second octet at 128 or more.
    format!("10.{}.{}.0/24", port >> 8, port & 0xff)
}

/// A fresh bridge name (at most 15 characters) for a test node.
pub fn test_bridge() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("vt{}x{n}", std::process::id() % 1_000_000)
}

/// A voiyd-server process.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// The NATS URL it uses (or serves, in embedded mode).
    pub url: String,
    args: Vec<String>,
    starts: usize,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server against an existing NATS and waits until it answers the API.
    pub async fn external(nats_url: &str) -> Server {
        Self::start(nats_url, &["--nats-url", nats_url]).await
    }

    /// Like [`Server::external`], with extra voiyd-server flags (e.g. `--metrics-addr`).
    pub async fn external_with(nats_url: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--nats-url", nats_url];
        args.extend_from_slice(extra);
        Self::start(nats_url, &args).await
    }

    /// Starts a server with its embedded NATS on a free loopback port.
    pub async fn embedded() -> Server {
        let port = voiyd_testkit::nats::free_port();
        let listen = format!("127.0.0.1:{port}");
        let url = format!("nats://{listen}");
        Self::start(&url, &["--nats-listen", &listen]).await
    }

    async fn start(url: &str, extra: &[&str]) -> Server {
        let server = Self::launch(url, extra);
        server.wait_ready().await;
        server
    }

    /// Starts a server with its embedded NATS on `listen` and more flags, without
    /// waiting for it (the first servers of a NATS cluster are ready only once enough
    /// of the others run).
    pub fn launch_embedded(listen: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--nats-listen", listen];
        args.extend_from_slice(extra);
        Self::launch(&format!("nats://{listen}"), &args)
    }

    /// Starts a server on an existing NATS with more flags, without waiting for it (a
    /// secured one is waited for with credentials).
    pub fn launch_external(nats_url: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--nats-url", nats_url];
        args.extend_from_slice(extra);
        Self::launch(nats_url, &args)
    }

    fn launch(url: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let data = data.to_str().unwrap().to_string();
        let mut args = vec!["--data-dir", data.as_str()];
        if !extra.contains(&"--log-level") {
            args.extend_from_slice(&["--log-level", "debug"]);
        }
        // Tests run side by side on one host: each cluster gets its own addresses.
        let cidr = test_cluster_cidr(url);
        args.extend_from_slice(&["--cluster-cidr", &cidr, "--node-subnet-prefix", "27"]);
        args.extend_from_slice(extra);
        let proc = Proc::spawn(
            &bin("voiyd-server"),
            &args,
            &[],
            dir.path().join("server.log"),
        );
        Server {
            proc,
            url: url.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            starts: 1,
            _dir: dir,
        }
    }

    /// Starts the process again with the same flags and data dir (after it was
    /// stopped or killed; a live one is killed first), logging to a new file, and
    /// waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.starts += 1;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let log = self._dir.path().join(format!("server-{}.log", self.starts));
        self.proc = Proc::spawn(&bin("voiyd-server"), &args, &[], log);
        self.wait_ready().await;
    }

    /// SIGKILL, reaps it, and waits (10 s at most) until its children (the embedded
    /// nats-server, which gets SIGTERM when its parent dies) are gone too.
    pub fn kill(&mut self) {
        let children = children_of(self.proc.pid());
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let start = Instant::now();
        while children.iter().any(|&c| pid_alive(c)) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// Waits (20 s at most) until this server's API is up: the server answers on its own
    /// readiness subject ([`voiyd_nats::names::api_ready_subject`]).
    pub async fn wait_ready(&self) {
        self.wait_ready_within(Duration::from_secs(20)).await
    }

    /// [`Server::wait_ready`] with another deadline (a new NATS cluster first elects
    /// its JetStream leader).
    pub async fn wait_ready_within(&self, limit: Duration) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let id = format!("{}-{}", host.trim(), self.proc.child.id());
        let subject = voiyd_nats::names::api_ready_subject(&id);
        let start = Instant::now();
        let mut client = None;
        loop {
            if client.is_none() {
                client = async_nats::connect(server_addrs(&self.url)).await.ok();
            }
            if let Some(c) = &client {
                let ask = c.request(subject.clone(), bytes::Bytes::new());
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), ask).await {
                    return;
                }
            }
            assert!(
                start.elapsed() < limit,
                "voiyd-server did not become ready (no answer on {subject}); log:\n{}",
                std::fs::read_to_string(&self.proc.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An API client connected to this server's NATS.
    pub async fn api(&self) -> ApiClient {
        let client = async_nats::connect(server_addrs(&self.url))
            .await
            .expect("connect to NATS");
        ApiClient::new(client)
    }
}

/// The addresses of a URL list (`nats://a:1,nats://b:2`).
pub fn server_addrs(urls: &str) -> Vec<async_nats::ServerAddr> {
    urls.split(',')
        .map(|u| u.trim().parse().expect("a NATS URL"))
        .collect()
}

/// Runs voiydctl against `url`, failing the test unless it succeeds; returns stdout.
pub fn voiydctl_ok(url: &str, args: &[&str], stdin: Option<&str>) -> String {
    let o = voiydctl(url, args, stdin, &[]);
    assert!(
        o.status.success(),
        "voiydctl {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs voiydctl against `url` with `args`, optional stdin, and extra environment.
pub fn voiydctl(url: &str, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(bin("voiydctl"));
    cmd.arg("--server").arg(url).args(args);
    cmd.env("HOME", std::env::temp_dir())
        .env_remove("VOIYD_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn voiydctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("voiydctl output")
}

/// stdout of an output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of an output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A voiyd-node agent process on a test containerd.
pub struct NodeAgent {
    /// The process.
    pub proc: Proc,
    /// Node name.
    pub name: String,
    /// Agent data directory.
    pub data_dir: PathBuf,
    /// The node's bridge (tasks' network namespaces are named `<bridge>:<task>`).
    pub bridge: String,
    args: Vec<String>,
    /// The voiyd-node binary it runs.
    program: PathBuf,
}

impl Drop for NodeAgent {
    /// Removes the namespaces and the bridge this node's tasks used, so that a test that
    /// fails half-way leaves no network behind.
    fn drop(&mut self) {
        let prefix = format!("{}:", self.bridge);
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "delete", &name])
                        .output();
                }
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
        remove_cni_rules(&format!("{}-", self.bridge));
        // The firewall plugin's rules carry no comment: find them by the node's subnet.
        let conflist = self
            .data_dir
            .join("cni")
            .join(format!("{}.conflist", self.bridge));
        if let Some(subnet) = std::fs::read_to_string(conflist)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
                    .as_str()
                    .map(str::to_string)
            })
        {
            remove_forward_rules(&subnet);
        }
        // The tmpfs the agent mounts for secrets outlives it; the data dir goes with the test.
        let secrets = self.data_dir.join("secrets");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if mounts.contains(&format!(" {} ", secrets.display())) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&secrets)
                .output();
        }
    }
}

/// Deletes the iptables rules CNI plugins added for containers whose id starts with
/// `prefix` (their comments name it), and the per-container chains those rules jump to:
/// what tasks killed without a CNI DEL leave behind.
pub fn remove_cni_rules(prefix: &str) {
    let Ok(out) = std::process::Command::new("iptables-save").output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let needle = format!("id: \\\"{prefix}");
    let mut table = String::new();
    let mut chains = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            continue;
        }
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        if !line.contains(&needle) {
            continue;
        }
        // iptables-save quotes like a shell would; split the same way.
        let args = shell_words(rule);
        if let Some(i) = args.iter().position(|a| a == "-j") {
            if let Some(target) = args.get(i + 1).filter(|t| t.starts_with("CNI-")) {
                chains.push((table.clone(), target.clone()));
            }
        }
        let _ = std::process::Command::new("iptables")
            .args(["-t", &table, "-D"])
            .args(&args)
            .output();
    }
    for (table, chain) in chains {
        for op in ["-F", "-X"] {
            let _ = std::process::Command::new("iptables")
                .args(["-t", &table, op, &chain])
                .output();
        }
    }
}

/// Whether `ip` (an IPv4 address, optionally with `/32`) lies in `subnet` (`a.b.c.d/len`).
pub fn in_subnet(ip: &str, subnet: &str) -> bool {
    let parse = |s: &str| s.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
    let Some((net, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Some(a), Some(n), Ok(len)) = (
        parse(ip.trim_end_matches("/32")),
        parse(net),
        len.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == n & mask
}

/// The `CNI-FORWARD` rules (firewall plugin) naming an address of `subnet`.
pub fn forward_rules(subnet: &str) -> Vec<String> {
    let Ok(out) = std::process::Command::new("iptables-save")
        .args(["-t", "filter"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A CNI-FORWARD "))
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w.ends_with("/32") && in_subnet(w, subnet))
        })
        .map(str::to_string)
        .collect()
}

/// Deletes the `CNI-FORWARD` rules naming an address of `subnet`.
pub fn remove_forward_rules(subnet: &str) {
    for rule in forward_rules(subnet) {
        let args = shell_words(rule.trim_start_matches("-A "));
        let _ = std::process::Command::new("iptables")
            .args(["-t", "filter", "-D"])
            .args(&args)
            .output();
    }
}

/// Splits an iptables-save rule into arguments (double quotes with backslash escapes).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl NodeAgent {
    /// Starts `voiyd-node` against NATS `url` and the containerd at `socket`, in its own
    /// containerd namespace (so several agents can share one containerd).
    pub fn start(
        url: &str,
        name: &str,
        socket: &Path,
        data_dir: &Path,
        extra: &[&str],
    ) -> NodeAgent {
        let mut args: Vec<String> = [
            "--server",
            url,
            "--name",
            name,
            "--containerd-socket",
            socket.to_str().unwrap(),
            "--namespace",
            &format!("voiyd-{name}-{}", std::process::id()),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--log-level",
            "voiyd_node=debug,info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let bridge = match extra.iter().position(|a| *a == "--bridge") {
            Some(i) => extra[i + 1].to_string(),
            None => {
                let b = test_bridge();
                args.extend(["--bridge".to_string(), b.clone()]);
                b
            }
        };
        std::fs::create_dir_all(data_dir).unwrap();
        // `--upgradable` (the harness's, not the agent's): a copy of the binary of its
        // own in the data directory, which an upgrade may replace.
        let program = if extra.contains(&"--upgradable") {
            let own = data_dir.join("bin").join("voiyd-node");
            std::fs::create_dir_all(own.parent().unwrap()).unwrap();
            std::fs::copy(bin("voiyd-node"), &own).expect("copy voiyd-node");
            own
        } else {
            bin("voiyd-node")
        };
        args.retain(|a| a != "--upgradable");
        // `--netns NAME` (the harness's): the agent runs in that network namespace.
        if let Some(i) = args.iter().position(|a| a == "--netns") {
            let netns = args[i + 1].clone();
            args.drain(i..i + 2);
            // nsenter, not `ip netns exec`: that also gives the agent a mount namespace
            // of its own, where the task namespaces it makes would be invisible to runc.
            let mut wrapped = vec![
                format!("--net=/run/netns/{netns}"),
                "--".to_string(),
                program.to_string_lossy().into_owned(),
            ];
            wrapped.append(&mut args);
            args = wrapped;
        }
        let program = if args.first().is_some_and(|a| a.starts_with("--net=")) {
            PathBuf::from("nsenter")
        } else {
            program
        };
        let proc = Self::spawn(&program, &args, data_dir, 0);
        NodeAgent {
            proc,
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            bridge,
            args,
            program,
        }
    }

    fn spawn(program: &Path, args: &[String], data_dir: &Path, n: usize) -> Proc {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        Proc::spawn(program, &args, &[], data_dir.join(format!("agent-{n}.log")))
    }

    /// The voiyd-node binary this agent runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Kills the agent (SIGKILL) and starts it again; `n` numbers its new log file.
    pub fn restart(&mut self, n: usize) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        self.proc = Self::spawn(&self.program, &self.args, &self.data_dir, n);
    }

    /// Lines the task wrote, from the node's log files.
    pub fn task_output(&self, task: &str) -> Vec<String> {
        voiyd_node::logs::read_all(&self.data_dir.join("logs").join(task))
            .map(|lines| lines.into_iter().map(|l| l.text).collect())
            .unwrap_or_default()
    }
}

/// What the end-to-end tests on real containers share: a voiyd-server on its own
/// nats-server, a private containerd and a local OCI registry. Containers still running
/// when it is dropped are killed.
pub struct ContainerdCluster {
    /// The nats-server.
    pub nats: voiyd_testkit::nats::TestNats,
    /// The voiyd-server.
    pub server: Server,
    /// An API client of the server.
    pub api: ApiClient,
    /// The registry the images come from.
    pub registry: voiyd_testkit::containerd::TestRegistry,
    /// The containerd every node of the cluster uses.
    pub containerd: voiyd_testkit::containerd::TestContainerd,
    /// Data directories of the nodes.
    pub dir: tempfile::TempDir,
}

impl ContainerdCluster {
    /// `voiydctl apply -f -` with `yaml`, failing the test unless it succeeds.
    pub fn apply(&self, yaml: &str) {
        let o = voiydctl(&self.server.url, &["apply", "-f", "-"], Some(yaml), &[]);
        assert!(o.status.success(), "apply failed: {}", stderr(&o));
    }

    /// Starts node agent `name` and waits (20 s at most) until `get nodes` says Ready.
    pub async fn start_node(&self, name: &str) -> NodeAgent {
        let n = self.agent(name, &[]);
        eventually(
            Duration::from_secs(20),
            &format!("node {name} ready"),
            || async {
                let out = stdout(&self.voiydctl(&["get", "nodes"]));
                out.lines()
                    .any(|l| l.starts_with(name) && l.contains(" Ready"))
                    .then_some(())
            },
        )
        .await;
        n
    }

    /// Starts it all; `server_args` go to voiyd-server.
    pub async fn start_with(server_args: &[&str]) -> ContainerdCluster {
        let nats = voiyd_testkit::nats::TestNats::start().await;
        let server = Server::external_with(&nats.url(), server_args).await;
        let api = server.api().await;
        ContainerdCluster {
            nats,
            server,
            api,
            registry: voiyd_testkit::containerd::TestRegistry::start(),
            containerd: voiyd_testkit::containerd::TestContainerd::start(),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Starts a node agent on the cluster's containerd (not waiting for it).
    pub fn agent(&self, name: &str, extra: &[&str]) -> NodeAgent {
        self.agent_via(&self.server.url, name, extra)
    }

    /// [`ContainerdCluster::agent`] dialling NATS at `url` (a proxy, say).
    pub fn agent_via(&self, url: &str, name: &str, extra: &[&str]) -> NodeAgent {
        NodeAgent::start(
            url,
            name,
            &self.containerd.socket,
            &self.dir.path().join(name),
            extra,
        )
    }

    /// Runs voiydctl against the server.
    pub fn voiydctl(&self, args: &[&str]) -> Output {
        voiydctl(&self.server.url, args, None, &[])
    }

    /// Runs voiydctl: whether it succeeded, and its stdout then stderr.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let o = self.voiydctl(args);
        (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
    }

    /// Runs voiydctl, failing the test unless it succeeds; its stdout then stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.ctl(args);
        assert!(ok, "voiydctl {args:?} failed: {out}");
        out
    }
}

impl Drop for ContainerdCluster {
    fn drop(&mut self) {
        self.containerd.kill_all_tasks();
    }
}

/// A voiyd-node process hosting `count` simulated nodes named `<name>-0001`… (or
/// `<name>` when `count` is 1).
pub fn sim_nodes(url: &str, name: &str, count: usize, dir: &Path, extra: &[&str]) -> Proc {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let count = count.to_string();
    let mut args = vec![
        "--server",
        url,
        "--name",
        name,
        "--runtime",
        "sim",
        "--sim-nodes",
        &count,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    if !extra.contains(&"--log-level") {
        args.extend_from_slice(&["--log-level", "voiyd_node=info,warn"]);
    }
    args.extend_from_slice(extra);
    Proc::spawn(
        &bin("voiyd-node"),
        &args,
        &[],
        dir.join(format!("{name}.log")),
    )
}

/// How many nodes are Ready.
pub async fn ready_nodes(api: &ApiClient) -> usize {
    api.list::<voiyd_messages::v1::Node>("")
        .await
        .map(|ns| {
            ns.iter()
                .filter(|n| n.status.as_ref().is_some_and(|s| s.phase == "Ready"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits (30 s at most) until `n` nodes are Ready.
pub async fn wait_nodes(api: &ApiClient, n: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} nodes ready"),
        || async { (ready_nodes(api).await >= n).then_some(()) },
    )
    .await;
}

/// Runs `ctr` against a node agent's containerd namespace: the columns of each line.
pub fn ctr_rows(socket: &Path, node: &str, args: &[&str]) -> Vec<Vec<String>> {
    let ns = format!("voiyd-{node}-{}", std::process::id());
    let out = std::process::Command::new("ctr")
        .args(["--address", socket.to_str().unwrap(), "-n", &ns])
        .args(args)
        .output()
        .expect("ctr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The first column of the `ctr` lines `keep` accepts (container or task ids).
pub fn ctr_ids(
    socket: &Path,
    node: &str,
    args: &[&str],
    keep: fn(&[String]) -> bool,
) -> Vec<String> {
    ctr_rows(socket, node, args)
        .into_iter()
        .filter(|cols| !cols.is_empty() && keep(cols))
        .map(|cols| cols[0].clone())
        .collect()
}

/// The PIDs containerd reports for a task's container (`ctr tasks ls`: TASK PID STATUS).
pub fn task_pids(socket: &Path, node: &str, task: &str) -> Vec<u32> {
    ctr_rows(socket, node, &["tasks", "ls"])
        .into_iter()
        .filter(|cols| cols.len() >= 2 && cols[0] == task)
        .filter_map(|cols| cols[1].parse().ok())
        .collect()
}

/// Containers running in a node agent's containerd namespace.
pub fn running_containers(socket: &Path, node: &str) -> Vec<String> {
    ctr_ids(socket, node, &["tasks", "ls"], |cols| {
        cols.iter().any(|c| c == "RUNNING")
    })
}

/// Containers (running or not) in a node agent's containerd namespace.
pub fn containers(socket: &Path, node: &str) -> Vec<String> {
    ctr_ids(socket, node, &["containers", "ls", "-q"], |_| true)
}

/// A NATS cluster of plain nats-server processes (what users run with `--nats-url`),
/// each with JetStream, on loopback. Nodes can be killed (SIGKILL) and started again
/// with their data.
pub struct NatsCluster {
    /// The nats-server processes; `None` while killed.
    pub procs: Vec<Option<Proc>>,
    /// Client URL of each.
    pub urls: Vec<String>,
    monitors: Vec<String>,
    confs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until JetStream answers through each.
    pub async fn start(n: usize) -> NatsCluster {
        Self::start_with(n, "").await
    }

    /// [`NatsCluster::start`] with more configuration for every node (e.g. what
    /// `voiyd-server auth print-nats-config` prints).
    pub async fn start_with(n: usize, extra_config: &str) -> NatsCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = || format!("127.0.0.1:{}", voiyd_testkit::nats::free_port());
        let clients: Vec<String> = (0..n).map(|_| port()).collect();
        let routes: Vec<String> = (0..n).map(|_| port()).collect();
        let monitors: Vec<String> = (0..n).map(|_| port()).collect();
        let mut confs = Vec::new();
        for i in 0..n {
            let peers = (0..n)
                .filter(|&j| j != i)
                .map(|j| routes[j].clone())
                .collect();
            let cluster = voiyd_nats::EmbeddedCluster {
                name: "ext".into(),
                listen: routes[i].parse().unwrap(),
                peers,
                secret: None,
                tls: None,
            };
            let store = dir.path().join(format!("js{i}"));
            let q = |s: &str| serde_json::to_string(s).unwrap();
            let conf = format!(
                "server_name: {}\nlisten: {}\nhttp: {}\njetstream {{\n  store_dir: {}\n  sync_interval: always\n}}\n{}{extra_config}",
                q(&format!("ext-{i}")),
                q(&clients[i]),
                q(&monitors[i]),
                q(&store.to_string_lossy()),
                cluster.render()
            );
            let path = dir.path().join(format!("nats{i}.conf"));
            std::fs::write(&path, conf).unwrap();
            confs.push(path);
        }
        let mut c = NatsCluster {
            procs: (0..n).map(|_| None).collect(),
            urls: clients.iter().map(|a| format!("nats://{a}")).collect(),
            monitors,
            confs,
            dir,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_current(i).await;
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let binary = voiyd_nats::embedded::find_binary(None).expect("nats-server");
        let conf = self.confs[i].to_string_lossy().into_owned();
        let log = self.dir.path().join(format!("nats{i}.log"));
        self.procs[i] = Some(Proc::spawn(&binary, &["-c", &conf], &[], log));
    }

    /// All client URLs, comma-separated (for `--nats-url` and `--server`).
    pub fn url_list(&self) -> String {
        self.urls.join(",")
    }

    /// SIGKILL of node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Starts node `i` again with its data and waits until it is current.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_current(i).await;
    }

    /// Waits (60 s at most) until node `i`'s full `/healthz` answers 200: it knows the
    /// JetStream leader and its replicas say they are current.
    pub async fn wait_current(&self, i: usize) {
        let start = Instant::now();
        loop {
            if http_ok(&self.monitors[i], "/healthz").await {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "nats-server {i} not current within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether `GET path` on `addr` answers 200 within a second.
pub async fn http_ok(addr: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(1), get).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out)
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("200")),
        _ => false,
    }
}

/// `voiyd-server certs init --dir DIR` (valid two days), as a user runs it.
pub fn certs_init(dir: &Path) {
    let out = Command::new(bin("voiyd-server"))
        .args([
            "certs",
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--days",
            "2",
        ])
        .output()
        .expect("voiyd-server certs init");
    assert!(out.status.success(), "certs init: {}", stderr(&out));
}

/// `n` creates of sim tasks named `<prefix>NNN`, `concurrency` at a time, alternating
/// between `apis`; the returned notify fires once `fire_at` of them were acknowledged
/// (when a test kills something). The task yields (name, acknowledged) of each.
pub fn creates_during(
    apis: &[ApiClient],
    prefix: &str,
    n: usize,
    concurrency: usize,
    fire_at: usize,
) -> (
    tokio::task::JoinHandle<Vec<(String, bool)>>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let acked = std::sync::Arc::new(AtomicUsize::new(0));
    let fire = std::sync::Arc::new(tokio::sync::Notify::new());
    let (apis, prefix, f) = (apis.to_vec(), prefix.to_string(), fire.clone());
    let handle = tokio::spawn(async move {
        futures::stream::iter(0..n)
            .map(|i| {
                let api = apis[i % apis.len()].clone();
                let (acked, fire) = (acked.clone(), f.clone());
                let name = format!("{prefix}{i:03}");
                async move {
                    let ok = api.create(&sim_task(&name)).await.is_ok();
                    if ok && acked.fetch_add(1, Ordering::SeqCst) + 1 == fire_at {
                        fire.notify_one();
                    }
                    (name, ok)
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<(String, bool)>>()
            .await
    });
    (handle, fire)
}

/// Waits (`limit` at most) until every task in `names` is Running, as listed by `api`.
pub async fn wait_running(api: &ApiClient, names: &[&String], limit: Duration) {
    use voiyd_messages::Resource;
    eventually(limit, "every acknowledged task Running", || async {
        let all: std::collections::BTreeMap<String, voiyd_messages::v1::Task> = api
            .list::<voiyd_messages::v1::Task>("")
            .await
            .ok()?
            .into_iter()
            .map(|t| (t.name().to_string(), t))
            .collect();
        names
            .iter()
            .all(|n| {
                all.get(*n)
                    .and_then(|t| t.status.as_ref())
                    .is_some_and(|s| s.phase == "Running")
            })
            .then_some(())
    })
    .await;
}

/// Task → the nodes whose work it is in, read from `voiyd_work` through `client`.
pub async fn work_holders(
    client: &async_nats::Client,
) -> std::collections::HashMap<String, Vec<String>> {
    use voiyd_nats::names;
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value(names::BUCKET_WORK).await.unwrap();
    let entries = voiyd_nats::RawKv::new(kv, "work")
        .entries(">")
        .await
        .unwrap();
    let mut holders: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (key, _, _) in entries {
        let (node, task) = key.split_once('.').unwrap();
        holders
            .entry(names::untoken(task))
            .or_default()
            .push(names::untoken(node));
    }
    holders
}

/// A task for simulated nodes (`sim/app:1`), named `name`, with nothing else set.
pub fn sim_task(name: &str) -> voiyd_messages::v1::Task {
    voiyd_messages::v1::Task {
        version: "task/v1".into(),
        meta: Some(voiyd_messages::v1::Meta {
            name: name.into(),
            ..Default::default()
        }),
        config: Some(voiyd_messages::v1::TaskConfig {
            image: "sim/app:1".into(),
            ..Default::default()
        }),
        status: None,
    }
}

/// Three voiyd-servers forming one embedded NATS cluster on loopback (NATS nodes named
/// `<name>-0`…), all launched before any is waited for (the first are ready only once
/// a majority runs), then ready within 60 s. `extra` goes to every server.
pub async fn embedded_cluster(name: &str, extra: &[&str]) -> Vec<Server> {
    let servers = launch_embedded_cluster(name, extra);
    futures::future::join_all(
        servers
            .iter()
            .map(|s| s.wait_ready_within(Duration::from_secs(60))),
    )
    .await;
    servers
}

/// Starts the three servers of [`embedded_cluster`] without waiting for them (a secured
/// cluster is waited for with credentials).
pub fn launch_embedded_cluster(name: &str, extra: &[&str]) -> Vec<Server> {
    let port = || format!("127.0.0.1:{}", voiyd_testkit::nats::free_port());
    let clients: Vec<String> = (0..3).map(|_| port()).collect();
    let routes: Vec<String> = (0..3).map(|_| port()).collect();
    (0..3)
        .map(|i| {
            let peers: Vec<&str> = (0..3)
                .filter(|&j| j != i)
                .map(|j| routes[j].as_str())
                .collect();
            let node_name = format!("{name}-{i}");
            let peers = peers.join(",");
            let mut args = vec![
                "--nats-cluster-listen",
                routes[i].as_str(),
                "--nats-peers",
                peers.as_str(),
                "--nats-server-name",
                node_name.as_str(),
            ];
            args.extend_from_slice(extra);
            Server::launch_embedded(&clients[i], &args)
        })
        .collect()
}

/// What the benchmark binaries share: percentiles and the printed line, and the floor
/// of a bare NATS request/reply.
pub mod bench {
    use futures::StreamExt;
    use std::time::{Duration, Instant};

    /// The `p` quantile (0..=1) of `v` (sorted in place).
    pub fn pct(v: &mut [Duration], p: f64) -> Duration {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }

    /// Milliseconds.
    pub fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    /// Prints `what` with p50, p99 and n; returns p50.
    pub fn line(what: &str, v: &mut [Duration]) -> Duration {
        let p50 = pct(v, 0.5);
        println!(
            "{what:<52} p50 {:>9.3} ms   p99 {:>9.3} ms   (n={})",
            ms(p50),
            ms(pct(v, 0.99)),
            v.len()
        );
        p50
    }

    /// `n` sequential round trips of `body` to a trivial responder on the nats-server
    /// at `url` (the floor of any API request through it).
    pub async fn echo_round_trips(url: &str, n: usize, body: Vec<u8>) -> Vec<Duration> {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let mut sub = client.subscribe("bench.echo").await.expect("subscribe");
        let responder = client.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(r) = m.reply {
                    let _ = responder.publish(r, m.payload).await;
                }
            }
        });
        client.flush().await.expect("flush");
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            client
                .request("bench.echo", body.clone().into())
                .await
                .expect("echo");
            out.push(t.elapsed());
        }
        out
    }
}
