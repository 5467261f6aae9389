//! Control-plane benchmark: prints figures for BENCHMARKS.md, each against a floor or
//! a peer measured in the same run.
//!
//! - create p50/p99 on an embedded server with `--nats-sync always` vs `--nats-sync 2m`
//!   (floor: a bare NATS request/reply through the same nats-server);
//! - `voiydctl get tasks` (and `-o json`) at N tasks, p50/p99 over 10 runs (floor: the
//!   client reading the spec and status buckets itself);
//! - creates/s with 32 clients on three embedded servers in one NATS cluster vs one;
//! - time from kill -9 of one of the three to a create succeeding through the others.
//!
//! Usage: `cargo build --release --bins && VOIYD_BIN_DIR=target/release
//! target/release/bench_control_plane [lists] [TASKS...]` (default 20000; `lists`: only
//! the lists at size).

use futures::StreamExt;
use std::process::Command;
use std::time::{Duration, Instant};
use voiyd_messages::v1::Task;
use voiyd_nats::api::ApiClient;
use voiyd_nats::names;
use voiyd_testkit::nats::free_port;
use voiyd_tests::bench::{echo_round_trips, line, ms};
use voiyd_tests::{bin, embedded_cluster, sim_nodes, sim_task, wait_nodes, Server};

async fn connect(url: &str) -> ApiClient {
    ApiClient::new(async_nats::connect(url).await.unwrap()).with_timeout(Duration::from_secs(60))
}

async fn creates(api: &ApiClient, prefix: &str, n: usize, concurrency: usize) -> f64 {
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}{i}");
            async move { api.create(&sim_task(&name)).await.expect("create") }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    n as f64 / start.elapsed().as_secs_f64()
}

fn embedded(extra: &[&str]) -> Server {
    let listen = format!("127.0.0.1:{}", free_port());
    Server::launch_embedded(&listen, extra)
}

async fn sync_policies(dir: &std::path::Path) {
    println!("== create latency by sync policy (one embedded server, sequential, 1000 each)");
    for policy in ["always", "2m"] {
        let server = embedded(&[
            "--nats-sync",
            policy,
            "--log-level",
            "voiyd_server=info,warn",
        ]);
        server.wait_ready().await;
        let _nodes = sim_nodes(&server.url, &format!("sync-{policy}"), 1, dir, &[]);
        let api = connect(&server.url).await;
        wait_nodes(&api, 1).await;
        let mut floor = echo_round_trips(
            &server.url,
            1000,
            prost::Message::encode_to_vec(&sim_task("x")),
        )
        .await;
        let mut lat = Vec::with_capacity(1000);
        for i in 0..1000 {
            let t = Instant::now();
            api.create(&sim_task(&format!("s{i}"))).await.unwrap();
            lat.push(t.elapsed());
        }
        let rate = creates(&api, "p", 5000, 64).await;
        let f = line(&format!("bare NATS request/reply ({policy})"), &mut floor);
        let c = line(&format!("tasks.create, --nats-sync {policy}"), &mut lat);
        println!(
            "ratio to floor: {:.1}x; 64 concurrent clients: {rate:.0} creates/s",
            ms(c) / ms(f)
        );
    }
}

async fn big_lists(dir: &std::path::Path, n: usize) {
    println!("== get tasks at {n} tasks (one embedded server, 50 sim nodes)");
    let server = embedded(&["--log-level", "voiyd_server=info,warn"]);
    server.wait_ready().await;
    let nodes = sim_nodes(
        &server.url,
        &format!("list{n}"),
        50,
        dir,
        &["--sim-cpu", "100000", "--sim-memory", "100000Gi"],
    );
    let api = connect(&server.url).await;
    wait_nodes(&api, 50).await;
    let rate = creates(&api, "t", n, 256).await;
    println!("{n} creates at {rate:.0}/s");
    // Measure the settled cluster: every task Running, nothing being written.
    let req = voiyd_messages::v1::ListRequest {
        field_selector: "phase!=Running".into(),
        ..Default::default()
    };
    let settle = Instant::now();
    while !api.list_with::<Task>(&req).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "all {n} Running {:?} after the last create",
        settle.elapsed()
    );
    let rss = |pid: u32| -> String {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
            })
            .unwrap_or_else(|| "?".into())
    };
    let server_pid = server.proc.pid();
    let nats_rss: Vec<String> = voiyd_tests::children_of(server_pid)
        .into_iter()
        .map(rss)
        .collect();
    println!(
        "RSS settled: voiyd-server {}, its nats-server {}, voiyd-node (50 sim nodes) {}",
        rss(server_pid),
        nats_rss.join(" + "),
        rss(nodes.pid())
    );
    // Floor: this process reading both buckets itself (what any list must read).
    let js = async_nats::jetstream::new(api.nats().clone());
    let specs = voiyd_nats::RawKv::new(js.get_key_value(names::BUCKET_TASKS).await.unwrap(), "t");
    let status = voiyd_nats::RawKv::new(js.get_key_value(names::BUCKET_STATUS).await.unwrap(), "s");
    let mut floor = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let a = specs.entries(">").await.unwrap();
        let b = status.entries("task.>").await.unwrap();
        assert_eq!((a.len(), b.len()), (n, n));
        floor.push(t.elapsed());
    }
    let ctl = bin("voiydctl");
    let run = |args: &[&str]| {
        let mut lat = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let o = Command::new(&ctl)
                .args(["--server", &server.url, "--timeout", "60s"])
                .args(args)
                .output()
                .unwrap();
            lat.push(t.elapsed());
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let lines = String::from_utf8_lossy(&o.stdout).lines().count();
            assert!(lines >= n, "{lines} lines for {n} tasks");
        }
        lat
    };
    let mut table = run(&["get", "tasks"]);
    let mut json = run(&["get", "tasks", "-o", "json"]);
    let f = line("floor: read spec + status buckets directly", &mut floor);
    let t = line("voiydctl get tasks", &mut table);
    let j = line("voiydctl get tasks -o json", &mut json);
    println!(
        "ratio to floor: table {:.1}x, json {:.1}x",
        ms(t) / ms(f),
        ms(j) / ms(f)
    );
}

async fn cluster_vs_one(dir: &std::path::Path) {
    println!("== creates/s, 32 concurrent clients, 3000 creates");
    let one = embedded(&["--log-level", "voiyd_server=info,warn"]);
    one.wait_ready().await;
    let _n1 = sim_nodes(&one.url, "one", 5, dir, &["--sim-cpu", "1000"]);
    let api = connect(&one.url).await;
    wait_nodes(&api, 5).await;
    let single = creates(&api, "o", 3000, 32).await;

    let mut servers = embedded_cluster("bench", &["--log-level", "voiyd_server=info,warn"]).await;
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let _n3 = sim_nodes(&urls.join(","), "three", 5, dir, &["--sim-cpu", "1000"]);
    let api3 = connect(&urls[1]).await;
    wait_nodes(&api3, 5).await;
    let three = creates(&api3, "c", 3000, 32).await;
    println!("one embedded server:             {single:>8.0} creates/s");
    println!(
        "three embedded servers (R3):     {three:>8.0} creates/s   ({:.2}x one)",
        three / single
    );

    println!("== kill -9 of one server of three: time until a create succeeds via the others");
    let mut on_other = Vec::new();
    let mut on_killed = Vec::new();
    for round in 0..5 {
        // One client on a surviving server, one on the server killed (it must reconnect).
        let other = ApiClient::new(async_nats::connect(&urls[2]).await.unwrap())
            .with_timeout(Duration::from_millis(500));
        let ordered: Vec<async_nats::ServerAddr> =
            urls.iter().map(|u| u.parse().unwrap()).collect();
        let moved = ApiClient::new(
            async_nats::ConnectOptions::new()
                .retain_servers_order()
                .connect(ordered)
                .await
                .unwrap(),
        )
        .with_timeout(Duration::from_millis(500));
        servers[0].kill();
        let killed = Instant::now();
        let until_create = |api: ApiClient, prefix: String| async move {
            let mut i = 0;
            while api
                .create(&sim_task(&format!("{prefix}-{i}")))
                .await
                .is_err()
            {
                i += 1;
            }
            killed.elapsed()
        };
        let (a, b) = tokio::join!(
            until_create(other, format!("ko{round}")),
            until_create(moved, format!("km{round}"))
        );
        on_other.push(a);
        on_killed.push(b);
        servers[0].restart().await;
    }
    line("client on a surviving server", &mut on_other);
    line("client on the killed server (reconnects)", &mut on_killed);
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![20_000]
    } else {
        sizes
    };
    let only_lists = std::env::args().any(|a| a == "lists");
    let dir = tempfile::tempdir().unwrap();
    if !only_lists {
        sync_policies(dir.path()).await;
    }
    for n in sizes {
        big_lists(dir.path(), n).await;
    }
    if !only_lists {
        cluster_vs_one(dir.path()).await;
    }
}
