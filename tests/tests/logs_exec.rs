//! Logs, exec, runtime events, top and metrics end to end: real nats-server, containerd,
//! runc, registry, voiyd-server, voiyd-node and voiydctl processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voiyd_messages::v1::Task;
use voiyd_testkit::nats::free_port;
use voiyd_tests::Signal;
use voiyd_tests::{bin, eventually, stderr, stdout, voiydctl, ContainerdCluster, NodeAgent};

/// The shared containerd cluster (its server exporting metrics), with this file's helpers.
struct Cluster {
    inner: ContainerdCluster,
    server_metrics: String,
    server_http: String,
}

impl std::ops::Deref for Cluster {
    type Target = ContainerdCluster;
    fn deref(&self) -> &ContainerdCluster {
        &self.inner
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let server_metrics = format!("127.0.0.1:{}", free_port());
        let server_http = format!("127.0.0.1:{}", free_port());
        let inner = ContainerdCluster::start_with(&[
            "--metrics-addr",
            &server_metrics,
            "--http-addr",
            &server_http,
        ])
        .await;
        Cluster {
            inner,
            server_metrics,
            server_http,
        }
    }

    fn node(&self, name: &str, extra: &[&str]) -> NodeAgent {
        self.agent(name, extra)
    }

    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let o = voiydctl(&self.server.url, args, None, &[]);
        (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(code, 0, "voiydctl {args:?} failed: {out}{err}");
        out
    }

    /// Waits for an event of `event_type` about task `name`; returns the task's events
    /// as `voiydctl events -o json` prints them.
    async fn wait_event(&self, name: &str, event_type: &str, deadline: Duration) -> String {
        let quoted = format!("\"{event_type}\"");
        eventually(
            deadline,
            &format!("{event_type} event of {name}"),
            || async {
                let (_, out, _) =
                    self.ctl(&["events", "--kind", "task", "--name", name, "-o", "json"]);
                out.contains(&quoted).then_some(out)
            },
        )
        .await
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Task {
        eventually(
            Duration::from_secs(60),
            &format!("task {name} {phase}"),
            || async {
                let t: Task = self.api.get(name).await.ok()?;
                (t.status.as_ref()?.phase == phase).then_some(t)
            },
        )
        .await
    }

    /// `voiydctl logs -f ...` as a child whose stdout lines are collected.
    fn follower(&self, args: &[&str]) -> (Child, Arc<Mutex<Vec<String>>>) {
        let mut child = Command::new(bin("voiydctl"))
            .arg("--server")
            .arg(&self.server.url)
            .args(args)
            .env("HOME", std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn voiydctl");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        (child, lines)
    }
}

fn numbers(out: &str, prefix: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn scrape(addr: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).expect("connect to metrics");
    // The endpoint keeps HTTP/1.1 connections open (as Prometheus wants): ask for close,
    // since the body is read to the end of the stream; and never wait forever.
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("HTTP/1.1 200"), "{s}");
    s
}

/// The value of the first sample whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const TALKER: &str =
    "i=0; while true; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.2; done";

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn logs_exec_events_top_and_metrics_on_real_containerd() {
    let c = Cluster::start().await;
    let node_metrics = format!("127.0.0.1:{}", free_port());
    let mut n1 = c.node("n1", &["--metrics-addr", &node_metrics]);
    eventually(Duration::from_secs(15), "node n1 ready", || async {
        let out = voiydctl(&c.server.url, &["get", "nodes"], None, &[]);
        stdout(&out).contains("Ready").then_some(())
    })
    .await;
    let image = c.registry.image("busybox");

    // A running task writing to both streams.
    c.ok(&[
        "run",
        "talker",
        "--image",
        &image,
        "-l",
        "app=chat",
        "--stop-grace",
        "1s",
        "--timeout",
        "60s",
        "--",
        "sh",
        "-c",
        TALKER,
    ]);
    eventually(Duration::from_secs(20), "10 lines of talker", || async {
        let (_, out, _) = c.ctl(&["logs", "talker", "--stdout"]);
        (numbers(&out, "out ").len() >= 10).then_some(())
    })
    .await;

    // History: both streams by default, each on its own local stream.
    let (code, out, err) = c.ctl(&["logs", "talker"]);
    assert_eq!(code, 0, "{err}");
    let outs = numbers(&out, "out ");
    assert!(outs.windows(2).all(|w| w[1] == w[0] + 1), "{out}");
    assert_eq!(outs[0], 0, "history starts at the first line: {out}");
    assert!(numbers(&err, "err ").len() >= 10, "{err}");
    assert!(numbers(&out, "err ").is_empty(), "{out}");

    // --tail N: exactly the last N lines; --stderr: only stderr.
    let out = c.ok(&["logs", "talker", "--stdout", "--tail", "3"]);
    let tail = numbers(&out, "out ");
    assert_eq!(tail.len(), 3, "{out}");
    assert!(tail.windows(2).all(|w| w[1] == w[0] + 1), "{out}");
    assert!(tail[0] >= 7, "{out}");
    let (_, out, err) = c.ctl(&["logs", "talker", "--stderr", "--tail", "2"]);
    assert!(out.trim().is_empty(), "{out}");
    assert_eq!(numbers(&err, "err ").len(), 2, "{err}");
    let out = c.ok(&["logs", "talker", "--stdout", "--tail", "0"]);
    assert!(out.trim().is_empty(), "{out}");

    // --since TIME is inclusive: from the time of line 5, line 5 is the first shown.
    let out = c.ok(&["logs", "talker", "--stdout", "--timestamps"]);
    let line5 = out
        .lines()
        .find(|l| l.ends_with(" out 5"))
        .unwrap_or_else(|| panic!("{out}"));
    let t5 = line5.split(' ').next().unwrap();
    let out = c.ok(&["logs", "talker", "--stdout", "--since", t5]);
    assert_eq!(numbers(&out, "out ").first(), Some(&5), "{out}");
    // --since DURATION: nothing older than a moment ago.
    let out = c.ok(&["logs", "talker", "--stdout", "--since", "1s"]);
    assert!(numbers(&out, "out ").len() <= 7, "{out}");
    let (code, _, err) = c.ctl(&["logs", "talker", "--since", "yesterday"]);
    assert_eq!(code, 2, "{err}");

    // Two followers at once both see lines written after they started.
    let before = *numbers(&c.ok(&["logs", "talker", "--stdout"]), "out ")
        .last()
        .unwrap();
    let (mut f1, l1) = c.follower(&["logs", "-f", "talker", "--stdout", "--tail", "0"]);
    let (mut f2, l2) = c.follower(&["logs", "-f", "talker", "--stdout", "--tail", "1"]);
    for l in [&l1, &l2] {
        eventually(
            Duration::from_secs(15),
            "follower sees new lines",
            || async {
                let got = numbers(&l.lock().unwrap().join("\n"), "out ");
                (got.iter().filter(|n| **n > before + 3).count() >= 2).then_some(())
            },
        )
        .await;
        let got = numbers(&l.lock().unwrap().join("\n"), "out ");
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 1),
            "gap or repeat: {got:?}"
        );
    }
    // A follower that goes away does not disturb the other.
    let _ = f1.kill();
    let _ = f1.wait();
    let n = l2.lock().unwrap().len();
    eventually(
        Duration::from_secs(10),
        "second follower goes on",
        || async { (l2.lock().unwrap().len() > n + 2).then_some(()) },
    )
    .await;
    let _ = f2.kill();
    let _ = f2.wait();

    // exec: output, exit code, stdin; errors for unknown command, missing task.
    let o = voiydctl(
        &c.server.url,
        &[
            "exec",
            "talker",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 7",
        ],
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi\n");
    assert!(stderr(&o).contains("oops"), "{}", stderr(&o));
    let o = voiydctl(
        &c.server.url,
        &["exec", "-i", "talker", "--", "sh", "-c", "tr a-z A-Z"],
        Some("hello\nworld\n"),
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "HELLO\nWORLD\n");
    let (code, _, err) = c.ctl(&["exec", "talker", "--", "no-such-command"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no-such-command") && err.contains("not found"),
        "{err}"
    );
    let (code, _, err) = c.ctl(&["exec", "ghost", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("ghost"), "{err}");

    // An exited task: its logs stay readable; exec is refused; the exit is an event.
    c.ok(&[
        "run",
        "done",
        "--image",
        &image,
        "-l",
        "app=chat",
        "--restart",
        "never",
        "--no-wait",
        "--",
        "sh",
        "-c",
        "echo bye; exit 3",
    ]);
    c.wait_phase("done", "Failed").await;
    let out = eventually(Duration::from_secs(10), "logs of exited task", || async {
        let (code, out, _) = c.ctl(&["logs", "done"]);
        (code == 0 && out.contains("bye")).then_some(out)
    })
    .await;
    assert_eq!(out, "bye\n");
    let (code, _, err) = c.ctl(&["exec", "done", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("not running"), "{err}");
    let events = c
        .wait_event("done", "exited", Duration::from_secs(10))
        .await;
    assert!(events.contains("exited with code 3"), "{events}");
    assert!(events.contains("\"exitCode\":3"), "{events}");

    // A terminal: the process sees a pty.
    let o = voiydctl(
        &c.server.url,
        &[
            "exec",
            "-t",
            "talker",
            "--",
            "sh",
            "-c",
            "test -t 1 && echo terminal",
        ],
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The terminal turns \n into \r\n.
    assert_eq!(stdout(&o), "terminal\r\n");

    // A pull failure is an event too.
    let missing = format!("{}/voiyd/missing:1", c.registry.host);
    c.ok(&["run", "nopull", "--image", &missing, "--no-wait"]);
    let events = c
        .wait_event("nopull", "pullfailed", Duration::from_secs(30))
        .await;
    assert!(events.contains("PullFailed"), "{events}");
    c.ok(&["delete", "task", "nopull", "--no-wait"]);

    // A restarted task: the logs hold every run.
    c.ok(&[
        "run",
        "flappy",
        "--image",
        &image,
        "--restart",
        "always",
        "--no-wait",
        "--",
        "sh",
        "-c",
        "echo run; sleep 0.3; exit 1",
    ]);
    eventually(Duration::from_secs(60), "two runs of flappy", || async {
        let (_, out, _) = c.ctl(&["logs", "flappy"]);
        (out.lines().filter(|l| *l == "run").count() >= 2).then_some(())
    })
    .await;

    // Merged logs of several tasks (-l), each line prefixed with its task.
    let out = c.ok(&["logs", "-l", "app=chat", "--stdout"]);
    assert!(out.lines().any(|l| l == "[done] bye"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("[talker] out ")), "{out}");

    // Merged logs of a container set: every replica, each line prefixed with its task.
    let manifest = format!(
        "version: containerset/v1\nmeta:\n  name: echoes\nreplicas: 2\ntemplate:\n  image: {image}\n  args: [sh, -c, 'echo replica up; sleep 1000']\n  stopGracePeriod: 1s\n"
    );
    let o = voiydctl(&c.server.url, &["apply", "-f", "-"], Some(&manifest), &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = eventually(Duration::from_secs(60), "logs of both replicas", || async {
        let (_, out, _) = c.ctl(&["logs", "set/echoes"]);
        let tasks: std::collections::BTreeSet<&str> = out
            .lines()
            .filter(|l| l.ends_with("] replica up"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next())
            .collect();
        (tasks.len() == 2).then(|| out.clone())
    })
    .await;
    assert!(out.lines().all(|l| l.starts_with("[echoes")), "{out}");
    let (code, _, err) = c.ctl(&["logs", "set/nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");

    // top shows the running task's usage.
    let out = c.ok(&["top", "tasks"]);
    assert!(out.contains("talker") && out.contains("n1"), "{out}");
    let out = c.ok(&["top", "nodes"]);
    assert!(out.lines().any(|l| l.starts_with("n1 ")), "{out}");

    // Metrics: the node reports the container's memory and the log streams served;
    // the server the requests, placements and tasks by phase this test caused.
    let text = scrape(&node_metrics);
    assert!(
        metric(&text, "voiyd_container_memory_bytes{task=\"talker\"}").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        metric(&text, "voiyd_node_log_streams_total").unwrap_or(0.0) >= 10.0,
        "{text}"
    );
    assert!(
        metric(&text, "voiyd_node_exec_sessions_total").unwrap_or(0.0) >= 4.0,
        "{text}"
    );
    assert_eq!(metric(&text, "voiyd_nats_connected"), Some(1.0), "{text}");
    let text = scrape(&c.server_metrics);
    assert!(
        metric(
            &text,
            "voiyd_api_requests_total{code=\"200\",kind=\"tasks\",verb=\"create\"}"
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "voiyd_api_requests_total{code=\"404\",kind=\"tasks\",verb=\"get\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("voiyd_api_request_duration_seconds_count{kind=\"tasks\",verb=\"create\"}"),
        "{text}"
    );
    assert_eq!(
        metric(&text, "voiyd_tasks{phase=\"Failed\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "voiyd_tasks{phase=\"Running\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "voiyd_placements_total").unwrap_or(0.0) >= 3.0,
        "{text}"
    );

    // A node that is gone: logs and exec fail fast with a clear message.
    let _ = n1.proc.child.kill();
    let _ = n1.proc.child.wait();
    let started = Instant::now();
    // logs says so and shows what the cluster stored; exec cannot.
    let (code, out, err) = c.ctl(&["logs", "talker", "--stdout"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("node n1 is not connected")
            && err.contains("showing the output the cluster stored"),
        "{err}"
    );
    assert!(out.lines().count() >= 10, "{out}");
    let (code, _, err) = c.ctl(&["exec", "talker", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("node n1 is not connected"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // After an agent restart the history is still served.
    n1.restart(1);
    let out = eventually(
        Duration::from_secs(20),
        "logs after agent restart",
        || async {
            let (code, out, _) = c.ctl(&["logs", "done"]);
            (code == 0).then_some(out)
        },
    )
    .await;
    assert_eq!(out, "bye\n");
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn an_oom_kill_is_reported_as_an_event() {
    let c = Cluster::start().await;
    let _n = c.node("oomnode", &[]);
    let image = c.registry.image("busybox");
    // The string doubles until the 16 MiB limit stops it.
    c.ok(&[
        "run",
        "hog",
        "--image",
        &image,
        "--memory",
        "16Mi",
        "--restart",
        "never",
        "--no-wait",
        "--",
        "sh",
        "-c",
        "x=aaaaaaaa; while true; do x=$x$x; done",
    ]);
    let t = c.wait_phase("hog", "Failed").await;
    assert_eq!(t.status.as_ref().unwrap().exit_code, 137, "{:?}", t.status);
    let events = c
        .wait_event("hog", "oomkilled", Duration::from_secs(20))
        .await;
    assert!(events.contains("OOMKilled"), "{events}");
}

/// A pseudo-terminal pair with a window size, for driving `voiydctl exec -t`.
fn openpty(rows: u16, cols: u16) -> (std::fs::File, std::fs::File) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_string_lossy().as_ref())
        .expect("open the pty's other end");
    rustix::termios::tcsetwinsize(&master, winsize(rows, cols)).expect("set the window size");
    (std::fs::File::from(master), slave)
}

fn winsize(rows: u16, cols: u16) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn exec_tty_follows_window_resizes() {
    let c = Cluster::start().await;
    let _n = c.node("ttynode", &[]);
    let image = c.registry.image("busybox");
    c.ok(&[
        "run",
        "shell",
        "--image",
        &image,
        "--timeout",
        "60s",
        "--",
        "sleep",
        "600",
    ]);

    let (master, slave) = openpty(20, 70);
    let mut child = Command::new(bin("voiydctl"))
        .args(["--server", &c.server.url, "exec", "-i", "-t", "shell", "--"])
        .args(["sh", "-c", "stty size; while read x; do stty size; done"])
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    {
        let seen = seen.clone();
        let mut reader = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    eventually(
        Duration::from_secs(20),
        "initial size 20x70 inside",
        || async { seen.lock().unwrap().contains("20 70").then_some(()) },
    )
    .await;

    // Resize the local terminal and tell voiydctl as a terminal would (SIGWINCH); each
    // newline makes the remote shell print its size again.
    rustix::termios::tcsetwinsize(&master, winsize(33, 101)).expect("resize");
    voiyd_tests::kill(child.id(), Signal::WINCH);
    let mut writer = master.try_clone().unwrap();
    eventually(Duration::from_secs(20), "new size 33x101 inside", || {
        let _ = writer.write_all(b"\n");
        let found = seen.lock().unwrap().contains("33 101");
        async move { found.then_some(()) }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

/// `logs -f set/NAME` follows the set's replicas as they come: one scaled in after the
/// follow started is followed from its first line, prefixed with its name.
#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn set_logs_follow_replicas_scaled_in_later() {
    let c = Cluster::start().await;
    let _n = c.node("lf1", &[]);
    let image = c.registry.image("busybox");
    c.apply(&format!(
        "version: containerset/v1\nmeta: {{name: chatty}}\nreplicas: 1\ntemplate:\n  image: {image}\n  args: [sh, -c, 'i=0; while true; do echo line-$HOSTNAME-$i; i=$((i+1)); sleep 0.3; done']\n  stopGracePeriod: 1s\n"
    ));
    c.wait_phase("chatty-0", "Running").await;
    let (mut follower, lines) = c.follower(&["logs", "-f", "set/chatty", "--tail", "1"]);
    eventually(
        Duration::from_secs(20),
        "the first replica's lines",
        || async {
            let got = lines.lock().unwrap().clone();
            got.iter()
                .any(|l| l.starts_with("[chatty-0] line-chatty-0-"))
                .then_some(())
        },
    )
    .await;
    c.ok(&["scale", "set", "chatty", "--replicas", "2"]);
    c.wait_phase("chatty-1", "Running").await;
    let got = eventually(
        Duration::from_secs(20),
        "the new replica's lines",
        || async {
            let got = lines.lock().unwrap().clone();
            got.iter()
                .any(|l| l.starts_with("[chatty-1] line-chatty-1-"))
                .then_some(got)
        },
    )
    .await;
    // From its first line on.
    assert!(
        got.iter().any(|l| l == "[chatty-1] line-chatty-1-0"),
        "{got:?}"
    );
    let _ = follower.kill();
    let _ = follower.wait();
}

/// A whole HTTP/1.1 response to a GET (the connection closes after it).
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The lines of `out` that start with `prefix`.
fn marked<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn logs_outlive_deleted_tasks_dead_nodes_and_restarts() {
    let c = Cluster::start().await;
    let node = c.node("ls1", &[]);
    let image = c.registry.image("busybox");
    let run = |task: &str, restart: &str, script: &str| {
        c.ok(&[
            "run",
            task,
            "--image",
            &image,
            "--restart",
            restart,
            "--no-wait",
            "--",
            "sh",
            "-c",
            script,
        ]);
    };
    run("ls-gone", "never", "echo gone-marker; echo gone-err >&2");
    run(
        "ls-crash",
        "on-failure",
        "echo boot-$RANDOM$RANDOM; sleep 1; exit 3",
    );
    run("ls-live", "always", "echo live-marker; sleep 3600");

    // A deleted task's output is still there, from the logs stream.
    c.wait_phase("ls-gone", "Succeeded").await;
    eventually(
        Duration::from_secs(10),
        "ls-gone's output stored",
        || async { (c.ok(&["logs", "ls-gone"]).contains("gone-marker")).then_some(()) },
    )
    .await;
    c.ok(&["delete", "task", "ls-gone"]);
    let (code, out, err) = c.ctl(&["logs", "ls-gone"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "gone-marker");
    assert!(err.contains("gone-err"), "{err}");
    assert!(err.contains("does not exist any more"), "{err}");
    let (_, out, _) = c.ctl(&["logs", "ls-gone", "--stdout", "--timestamps"]);
    assert!(out.trim().ends_with(" gone-marker"), "{out}");
    // The HTTP API too, marked as stored.
    let reply = http_get(&c.server_http, "/api/v1/tasks/ls-gone/logs?stream=stdout");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.to_lowercase().contains("x-voiyd-logs: stored"),
        "{reply}"
    );
    assert!(reply.ends_with("\r\n\r\ngone-marker\n"), "{reply}");
    // A name that never ran is still an error.
    let (code, _, err) = c.ctl(&["logs", "ls-never-was"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");

    // --previous: the run before the latest. Read the whole log before and after, and
    // accept the answer only when no restart came in between.
    eventually(
        Duration::from_secs(60),
        "ls-crash restarted twice",
        || async {
            let t: Task = c.api.get("ls-crash").await.ok()?;
            (t.status?.restart_count >= 2).then_some(())
        },
    )
    .await;
    let (code, _, err) = c.ctl(&["logs", "ls-live", "--previous"]);
    assert_ne!(code, 0);
    assert!(err.contains("no previous run"), "{err}");
    // Stopped, its runs are final; the stream may lag its output by a flush (250 ms).
    c.ok(&["stop", "task", "ls-crash"]);
    c.wait_phase("ls-crash", "Stopped").await;
    let local = c.ok(&["logs", "ls-crash"]);
    let boots = marked(&local, "boot-");
    assert!(boots.len() >= 3, "{local}");
    eventually(
        Duration::from_secs(10),
        "--previous shows the run before the latest",
        || async {
            let previous = c.ok(&["logs", "ls-crash", "--previous"]);
            (marked(&previous, "boot-") == [boots[boots.len() - 2]]).then_some(())
        },
    )
    .await;

    // A node that is down: its tasks' output comes from the stream.
    c.wait_phase("ls-live", "Running").await;
    eventually(Duration::from_secs(10), "ls-live's output", || async {
        (c.ok(&["logs", "ls-live"]).contains("live-marker")).then_some(())
    })
    .await;
    node.proc.signal(Signal::KILL);
    let (code, out, err) = c.ctl(&["logs", "ls-live"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "live-marker");
    assert!(
        err.contains("showing the output the cluster stored"),
        "{err}"
    );
    // And the stream holds no plain-text copy outside voiyd.logs.<node>.<task>.
    let nats = async_nats::connect(&c.server.url).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream("VOIYD_LOGS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.subjects, ["voiyd.logs.>"]);
    assert_eq!(info.config.max_messages_per_subject, 1000);
}
