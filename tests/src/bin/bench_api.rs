//! API and run-path benchmark. Prints figures, compared in the same run with the
//! physical floor: a bare NATS request/reply round trip for the API, and `ctr run` for
//! running a container.
//!
//! Usage: `cargo run --release -p voiyd-tests --bin bench_api [-- N]` (root; needs the
//! binaries built in release: `cargo build --release --bins`).

use std::time::{Duration, Instant};
use voiyd_messages::v1::{Resources, Task, TaskConfig};
use voiyd_testkit::nats::TestNats;
use voiyd_tests::bench::{echo_round_trips, line, ms};
use voiyd_tests::{eventually, NodeAgent, Server};

fn task(name: &str, image: &str) -> Task {
    Task::new(
        name,
        TaskConfig {
            // Small requests, so capacity never limits the run-path measurement.
            resources: Some(Resources {
                cpu: "10m".into(),
                memory: "8Mi".into(),
            }),
            ..TaskConfig::image(image)
        },
    )
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let nats = TestNats::start().await;
    let http_addr = format!("127.0.0.1:{}", voiyd_testkit::nats::free_port());
    let server = Server::external_with(&nats.url(), &["--http-addr", &http_addr]).await;
    let api = server.api().await;

    // Floor: a bare request/reply round trip through the same nats-server.
    let body = prost::Message::encode_to_vec(&task("x", "busybox:1"));
    let mut bare = echo_round_trips(&nats.url(), n, body).await;
    let mut creates = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        api.create(&task(&format!("b{i}"), "busybox:1"))
            .await
            .unwrap();
        creates.push(t.elapsed());
    }
    let mut gets = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let _: Task = api.get(&format!("b{i}")).await.unwrap();
        gets.push(t.elapsed());
    }
    // The same gets over the HTTP API, one keep-alive connection.
    let mut http = HttpConn::open(&http_addr).await;
    let mut http_gets = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let body = http.get(&format!("/api/v1/tasks/b{i}")).await;
        http_gets.push(t.elapsed());
        assert!(body.contains(&format!("\"b{i}\"")), "{body}");
    }
    println!("== API, sequential, one voiyd-server, loopback NATS ({n} requests each)");
    let floor = line("bare NATS request/reply (floor)", &mut bare);
    let c = line(
        "tasks.create (validate, CAS create, event, place)",
        &mut creates,
    );
    let g = line("tasks.get (spec + status)", &mut gets);
    let h = line("GET /api/v1/tasks/NAME (HTTP, keep-alive)", &mut http_gets);
    println!(
        "ratio to floor: create {:.1}x, get {:.1}x, HTTP get {:.1}x",
        ms(c) / ms(floor),
        ms(g) / ms(floor),
        ms(h) / ms(floor)
    );

    // Concurrent throughput of creates.
    let start = Instant::now();
    let mut jobs = Vec::new();
    for w in 0..32 {
        let api = api.clone();
        jobs.push(tokio::spawn(async move {
            for i in 0..(n / 32) {
                api.create(&task(&format!("c{w}-{i}"), "busybox:1"))
                    .await
                    .unwrap();
            }
        }));
    }
    for j in jobs {
        j.await.unwrap();
    }
    let total = (n / 32) * 32;
    println!(
        "tasks.create, 32 concurrent clients: {:.0} creates/s",
        total as f64 / start.elapsed().as_secs_f64()
    );

    // Run path on containerd: voiyd (create → Running reported) vs ctr run -d.
    if std::env::var_os("BENCH_SKIP_CONTAINERD").is_some() {
        return;
    }
    // A fresh cluster, so the thousands of tasks above do not hold the node's capacity.
    let nats = TestNats::start().await;
    let server = Server::external(&nats.url()).await;
    let api = server.api().await;
    let registry = voiyd_testkit::containerd::TestRegistry::start();
    let containerd = voiyd_testkit::containerd::TestContainerd::start();
    let dir = tempfile::tempdir().unwrap();
    let _node = NodeAgent::start(
        &server.url,
        "bench",
        &containerd.socket,
        &dir.path().join("bench"),
        &[],
    );
    eventually(Duration::from_secs(20), "node ready", || async {
        let n: voiyd_messages::v1::Node = api.get("bench").await.ok()?;
        (n.status?.phase == "Ready").then_some(())
    })
    .await;
    let image = registry.image("busybox");
    // Warm the image into containerd (pull is not what is measured).
    let mut warm = task("warm", &image);
    warm.config.as_mut().unwrap().args = vec!["true".into()];
    warm.config.as_mut().unwrap().restart_policy = "never".into();
    api.create(&warm).await.unwrap();
    wait_phase(&api, "warm", &["Succeeded", "Running"]).await;
    let runs = 20;
    let mut voiyd_runs = Vec::new();
    for i in 0..runs {
        let mut t = task(&format!("r{i}"), &image);
        t.config.as_mut().unwrap().args = vec!["sleep".into(), "600".into()];
        let s = Instant::now();
        api.create(&t).await.unwrap();
        wait_phase(&api, &format!("r{i}"), &["Running"]).await;
        voiyd_runs.push(s.elapsed());
    }
    let ns = format!("voiyd-bench-{}", std::process::id());
    let addr = containerd.socket.to_str().unwrap().to_string();
    let name = voiyd_messages::image::parse(&image).unwrap().to_string();
    let mut ctr_runs = Vec::new();
    for i in 0..runs {
        let s = Instant::now();
        let out = std::process::Command::new("ctr")
            .args([
                "--address",
                &addr,
                "-n",
                &ns,
                "run",
                "-d",
                &name,
                &format!("ctr{i}"),
                "sleep",
                "600",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ctr_runs.push(s.elapsed());
    }
    println!("== Run a container (image present, {runs} runs, sequential)");
    let floor = line("ctr run -d (floor)", &mut ctr_runs);
    let v = line("voiyd create → Running reported", &mut voiyd_runs);
    println!("ratio to floor: {:.1}x", ms(v) / ms(floor));
    for i in 0..runs {
        let _ = std::process::Command::new("ctr")
            .args([
                "--address",
                &addr,
                "-n",
                &ns,
                "tasks",
                "kill",
                "-s",
                "9",
                &format!("ctr{i}"),
            ])
            .output();
    }
}

async fn wait_phase(api: &voiyd_nats::api::ApiClient, name: &str, phases: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(t) = api.get::<Task>(name).await {
            if t.status
                .as_ref()
                .is_some_and(|s| phases.contains(&s.phase.as_str()))
            {
                return;
            }
        }
        if Instant::now() > deadline {
            let t = api.get::<Task>(name).await.ok();
            let nodes: Vec<voiyd_messages::v1::Node> = api.list("").await.unwrap_or_default();
            let nodes: Vec<_> = nodes.into_iter().map(|n| n.status).collect();
            panic!(
                "task {name} did not reach {phases:?}: {:?}; nodes {nodes:?}",
                t.and_then(|t| t.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection (the benchmark measures the
/// server, not a client library).
struct HttpConn {
    stream: tokio::net::TcpStream,
    host: String,
}

impl HttpConn {
    async fn open(addr: &str) -> HttpConn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        HttpConn {
            stream,
            host: addr.to_string(),
        }
    }

    /// GET `path`; the body (read by its Content-Length).
    async fn get(&mut self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = self.stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .and_then(|v| v.trim().parse::<usize>().ok())
                    })
                    .expect("a Content-Length");
                if body.len() >= len {
                    return body.to_string();
                }
            }
        }
    }
}
