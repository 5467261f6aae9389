//! Node mesh benchmark. Two node agents, each in a network namespace standing in for a
//! host (veth to an underlay bridge), in the mesh. Prints, measured in the same run:
//! - task to task on one node (through the node's bridge): the floor;
//! - task to task across the two nodes (through the userspace WireGuard tunnel).
//!
//! Not yet: host to host on the bare underlay.
//!
//! Each stream sends `MIB` MiB with busybox `dd | nc`, timed in the sending shell (from
//! before dd starts until nc has handed the last byte to the socket).
//!
//! Usage: `cargo build --release --bins && VOIYD_BIN_DIR=target/release
//! target/release/bench_mesh` (root; real containerd).

use std::time::Duration;
use voiyd_messages::v1::Task;
use voiyd_tests::hosts::Underlay;
use voiyd_tests::{eventually, stderr, ContainerdCluster};

const MIB: usize = 512;
const RUNS: usize = 3;

/// MB/s from the `elapsed START END` line the stream script prints (seconds of
/// /proc/uptime, which busybox shells can read: their `date` has no sub-seconds).
fn rate(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("elapsed "))
        .unwrap_or("");
    let t: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    match t.as_slice() {
        [start, end] if end > start => (MIB * 1024 * 1024) as f64 / (end - start) / 1e6,
        _ => panic!("no timing in the stream's output: {out}"),
    }
}

/// Sends MIB MiB to `target:port` from a shell that `run` runs; MB/s.
fn stream(run: &dyn Fn(&str) -> String, target: &str, port: u16) -> f64 {
    let out = run(&format!(
        "a=$(cut -d\" \" -f1 /proc/uptime); dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc {target} {port} 2>&1; echo rc=$?; b=$(cut -d\" \" -f1 /proc/uptime); echo elapsed $a $b",
        MIB * 16
    ));
    rate(&out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let c = ContainerdCluster::start_with(&[]).await;
    let u = Underlay::new(2);
    let _agents = voiyd_tests::hosts::mesh_agents(&c, &u, "bench");
    let hb = u.hosts[1].clone();
    let image = c.registry.image("busybox");
    let task = |name: &str, host: &str, script: &str| {
        c.apply(&format!(
            "version: task/v1\nmeta: {{name: {name}}}\nconfig:\n  image: {image}\n  nodeSelector: {{host: {host}}}\n  stopGracePeriod: 1s\n  args: [sh, -c, '{script}']\n"
        ));
    };
    // Sinks: every connection's bytes thrown away, again and again.
    // (`-e`: a plain `nc -l` gives up on a connection as soon as its own stdin ends.)
    let sink = "exec nc -ll -p 9000 -e sh -c \"cat > /dev/null\"";
    task("sink", "b", sink);
    task("near", "b", "sleep 36000");
    task("far", "a", "sleep 36000");
    let ip = |name: &'static str| {
        let api = c.api.clone();
        async move {
            let t: Task = api.get(name).await.ok()?;
            let st = t.status?;
            (st.phase == "Running" && !st.ip.is_empty()).then_some(st.ip)
        }
    };
    let sink_ip = eventually(Duration::from_secs(60), "sink", || ip("sink")).await;
    eventually(Duration::from_secs(60), "near", || ip("near")).await;
    eventually(Duration::from_secs(60), "far", || ip("far")).await;
    let in_near = |script: &str| exec_in(&c, "near", script);
    let in_far = |script: &str| exec_in(&c, "far", script);
    // The tunnel is up once one connection went through.
    eventually(Duration::from_secs(30), "far reaches sink", || async {
        let out = in_far(&format!("echo x | nc {sink_ip} 9000 && echo sent"));
        out.contains("sent").then_some(())
    })
    .await;

    if let Some(secs) = std::env::var("BENCH_PAUSE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!(
            "paused: server {} sink {sink_ip} host b {}",
            c.server.url, hb.addr
        );
        std::thread::sleep(Duration::from_secs(secs));
    }
    let mut near = Vec::new();
    let mut far = Vec::new();
    for _ in 0..RUNS {
        near.push(stream(&in_near, &sink_ip, 9000));
        far.push(stream(&in_far, &sink_ip, 9000));
    }
    println!("throughput, {MIB} MiB per stream, median of {RUNS} (MB/s):");
    let (n, m) = (median(near.clone()), median(far.clone()));
    println!("  task to task, one node (floor)    {n:8.1}   {near:.1?}");
    println!(
        "  task to task, across the mesh     {m:8.1}   {far:.1?}  = {:.2}x the floor",
        m / n
    );
}

/// Runs `script` with sh in task `task`: its stdout and stderr.
fn exec_in(c: &ContainerdCluster, task: &str, script: &str) -> String {
    let o = c.voiydctl(&["exec", task, "--", "sh", "-c", script]);
    format!("{}{}", voiyd_tests::stdout(&o), stderr(&o))
}
