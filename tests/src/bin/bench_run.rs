//! Run-path benchmark: `voiydctl run` until the task is Running (the user's path: a
//! voiydctl process, the API, placement, the node's work watch, snapshot, container, CNI
//! network, task start, the status report) against a bare `ctr run -d` of the same image
//! on the same containerd (the floor), alternating, in the same run. The image is in
//! containerd before anything is measured. Docker is measured too when a Docker daemon
//! answers (`docker run -d`, its own image store: pulled first; scripts/bench-docker.sh
//! runs one beside the benchmark).
//!
//! Usage: `cargo build --release --bins && VOIYD_BIN_DIR=target/release
//! target/release/bench_run [RUNS]` (root; real containerd).

use std::time::{Duration, Instant};
use voiyd_tests::{stderr, ContainerdCluster};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, v: &mut [Duration], floor: Option<Duration>) -> Duration {
    let (p50, p90) = (percentile(v, 0.5), percentile(v, 0.9));
    let ratio = floor.map_or(String::new(), |f| format!("  {:.2}x", ms(p50) / ms(f)));
    println!(
        "{what:<40} p50 {:>7.1} ms  p90 {:>7.1} ms{ratio}",
        ms(p50),
        ms(p90)
    );
    p50
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let c = ContainerdCluster::start_with(&[]).await;
    let node = c.start_node("bench").await;
    let image = c.registry.image("busybox");
    // The image into the node's containerd namespace (a pull is not what is measured).
    c.ok(&[
        "run", "warm", "--image", &image, "--cpu", "10m", "--", "sleep", "600",
    ]);
    let socket = c.containerd.socket.to_str().unwrap().to_string();
    let ns = format!("voiyd-bench-{}", std::process::id());
    let name = voiyd_messages::image::parse(&image).unwrap().to_string();
    let docker = run("docker", &["info", "--format", "{{.ServerVersion}}"])
        .status
        .success();
    if docker {
        let out = run("docker", &["pull", "-q", &image]);
        assert!(out.status.success(), "docker pull: {}", stderr(&out));
    }
    let (mut voiyd, mut ctr, mut dockers) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // The order rotates: what one tool leaves behind (a network namespace the kernel
        // tears down after `docker rm`) falls on each tool in turn.
        for step in 0..3 {
            match (i + step) % 3 {
                0 => {
                    let task = format!("r{i}");
                    let s = Instant::now();
                    c.ok(&[
                        "run",
                        &task,
                        "--image",
                        &image,
                        "--stop-grace",
                        "1s",
                        "--cpu",
                        "10m",
                        "--",
                        "sleep",
                        "600",
                    ]);
                    voiyd.push(s.elapsed());
                }
                1 => {
                    let id = format!("ctr{i}");
                    let s = Instant::now();
                    let out = run(
                        "ctr",
                        &[
                            "--address",
                            &socket,
                            "-n",
                            &ns,
                            "run",
                            "-d",
                            &name,
                            &id,
                            "sleep",
                            "600",
                        ],
                    );
                    ctr.push(s.elapsed());
                    assert!(out.status.success(), "ctr run: {}", stderr(&out));
                }
                _ if docker => {
                    let s = Instant::now();
                    let out = run("docker", &["run", "-d", &image, "sleep", "600"]);
                    dockers.push(s.elapsed());
                    assert!(out.status.success(), "docker run: {}", stderr(&out));
                    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    // Removed now (synchronously: a `--rm` clean-up would run during the
                    // next measurements).
                    let _ = run("docker", &["rm", "-f", &id]);
                }
                _ => {}
            }
        }
    }
    println!("== Run a container to Running (image present, {runs} runs each, alternating)");
    let floor = report("ctr run -d (floor)", &mut ctr, None);
    report("voiydctl run (waits for Running)", &mut voiyd, Some(floor));
    if docker {
        report("docker run -d", &mut dockers, Some(floor));
    } else {
        println!("docker run -d: no Docker daemon answers here; not measured");
    }
    if let Some(to) = std::env::var_os("BENCH_KEEP_AGENT_LOG") {
        // Where the time goes: the agent's debug log has every step's timestamp.
        std::fs::copy(&node.proc.log, &to).expect("copy the agent's log");
        let _ = std::fs::copy(
            &c.server.proc.log,
            format!("{}.server", to.to_string_lossy()),
        );
    }
    for i in 0..runs {
        let id = format!("ctr{i}");
        let _ = run(
            "ctr",
            &[
                "--address",
                &socket,
                "-n",
                &ns,
                "tasks",
                "kill",
                "-s",
                "9",
                &id,
            ],
        );
    }
}
