//! Node mesh benchmark. Three node agents, each in a network namespace standing in for a
//! host (veth to an underlay bridge), in the mesh. Prints, measured in the same run, the
//! throughput and round-trip time of:
//! - host to host on the bare underlay (no tunnel): the floor of the wire;
//! - task to task on one node (through the node's bridge): the floor of a task's path;
//! - task to task across two nodes (through the userspace WireGuard tunnel);
//! - the same once UDP between those two hosts is dropped, through the third (relayed);
//! - the same once UDP from the first host to the third is dropped too: no node relays,
//!   so the pair goes through NATS (smaller streams: `NATS_MIB`).
//!
//! Each stream sends `MIB` MiB with busybox `dd | nc`, timed in the sending shell (from
//! before dd starts until nc has handed the last byte to the socket); round trips are
//! busybox `ping` averages.
//!
//! Usage: `cargo build --release --bins && VOIYD_BIN_DIR=target/release
//! target/release/bench_mesh` (root; real containerd).

use std::time::Duration;
use voiyd_messages::v1::Task;
use voiyd_tests::hosts::Underlay;
use voiyd_tests::{eventually, stderr, ContainerdCluster};

const MIB: usize = 512;
const NATS_MIB: usize = 64;
const RUNS: usize = 3;

/// MB/s from the `elapsed START END` line the stream script prints (seconds of
/// /proc/uptime, which busybox shells can read: their `date` has no sub-seconds).
fn rate(out: &str, mib: usize) -> f64 {
    assert!(out.contains("rc=0"), "the stream failed: {out}");
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
        [start, end] if end > start => (mib * 1024 * 1024) as f64 / (end - start) / 1e6,
        _ => panic!("no timing in the stream's output: {out}"),
    }
}

/// Sends `mib` MiB to `target:port` from a shell that `run` runs; MB/s.
fn stream(run: &dyn Fn(&str) -> String, target: &str, port: u16, mib: usize) -> f64 {
    let out = run(&format!(
        "a=$(cut -d\" \" -f1 /proc/uptime); dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc {target} {port} 2>&1; echo rc=$?; b=$(cut -d\" \" -f1 /proc/uptime); echo elapsed $a $b",
        mib * 16
    ));
    rate(&out, mib)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let c = ContainerdCluster::start_with(&[]).await;
    let u = Underlay::new(3);
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
    // The tunnel is up once one connection went through.
    eventually(Duration::from_secs(30), "far reaches sink", || async {
        // (each attempt bounded: a first connection through a tunnel being set up was
        // seen to stall for minutes; see BENCHMARKS.md)
        let out = in_far(&format!(
            "echo x | timeout 5 nc -w 3 {sink_ip} 9000 && echo sent"
        ));
        out.contains("sent").then_some(())
    })
    .await;

    // The wire itself: a sink on host b's own address, a sender in host a's namespace.
    let ha = u.hosts[0].clone();
    let hc = u.hosts[2].clone();
    let _host_sink = Child(
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &hb.netns, "busybox", "nc", "-ll", "-p", "9100", "-e",
            ])
            .args(["sh", "-c", "cat > /dev/null"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("busybox nc on host b"),
    );
    // The same busybox tools as in the tasks (the host's own nc differs), first in PATH.
    let applets = tempfile::tempdir().expect("a directory for busybox applets");
    let installed = std::process::Command::new("busybox")
        .args(["--install", "-s"])
        .arg(applets.path())
        .status()
        .expect("busybox --install");
    assert!(installed.success(), "busybox --install -s");
    // (set in the shell: `ip` itself must stay iproute2's)
    let path = format!("export PATH={}:$PATH; ", applets.path().display());
    let in_host_a = |script: &str| {
        let o = std::process::Command::new("ip")
            .args([
                "netns", "exec", &ha.netns, "timeout", "120", "busybox", "sh", "-c",
            ])
            .arg(format!("{path}{script}"))
            .output()
            .expect("a shell on host a");
        format!("{}{}", voiyd_tests::stdout(&o), stderr(&o))
    };
    eventually(Duration::from_secs(10), "host b's sink", || async {
        let out = in_host_a(&format!(
            "echo x | busybox nc -w 3 {} 9100 && echo sent",
            hb.addr
        ));
        out.contains("sent").then_some(())
    })
    .await;

    let (mut wire, mut near, mut far) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        wire.push(stream(&in_host_a, &hb.addr, 9100, MIB));
        near.push(stream(&in_near, &sink_ip, 9000, MIB));
        far.push(stream(&in_far, &sink_ip, 9000, MIB));
    }
    let rtt = |run: &dyn Fn(&str) -> String, target: &str| ping(run, target);
    let (rtt_wire, rtt_near, rtt_far) = (
        rtt(&in_host_a, &hb.addr),
        rtt(&in_near, &sink_ip),
        rtt(&in_far, &sink_ip),
    );

    // Relayed: UDP between hosts a and b dropped, so a reaches b through c.
    let drop_udp = |verb: &str, peer: &str| {
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            assert!(voiyd_tests::hosts::in_netns(
                &ha.netns,
                "iptables",
                &[verb, chain, dir, peer, "-p", "udp", "-j", "DROP"],
            ));
        }
    };
    // bench-a as the servers publish it in voiyd_mesh.
    let mesh_a = || async {
        let nats = async_nats::connect(&c.server.url).await.ok()?;
        let kv = async_nats::jetstream::new(nats)
            .get_key_value(voiyd_nats::names::BUCKET_MESH)
            .await
            .ok()?;
        let p = kv.get("bench-a").await.ok()??;
        <voiyd_messages::v1::MeshPeer as prost::Message>::decode(p).ok()
    };
    drop_udp("-I", &hb.addr);
    eventually(Duration::from_secs(60), "a relayed to b", || async {
        let p = mesh_a().await?;
        (p.via.get("bench-b").map(String::as_str) == Some("bench-c")).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "far reaches sink through c",
        || async {
            let out = in_far(&format!(
                "echo x | timeout 5 nc -w 3 {sink_ip} 9000 && echo sent"
            ));
            out.contains("sent").then_some(())
        },
    )
    .await;
    let mut relayed = Vec::new();
    for _ in 0..RUNS {
        relayed.push(stream(&in_far, &sink_ip, 9000, MIB));
    }
    let rtt_relayed = rtt(&in_far, &sink_ip);

    // Through NATS: a cannot reach c either, so no node relays a and b.
    drop_udp("-I", &hc.addr);
    eventually(Duration::from_secs(60), "a to b through NATS", || async {
        let p = mesh_a().await?;
        p.over_nats.iter().any(|n| n == "bench-b").then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "far reaches sink through NATS",
        || async {
            let out = in_far(&format!(
                "echo x | timeout 5 nc -w 3 {sink_ip} 9000 && echo sent"
            ));
            out.contains("sent").then_some(())
        },
    )
    .await;
    let mut over_nats = Vec::new();
    for _ in 0..RUNS {
        over_nats.push(stream(&in_far, &sink_ip, 9000, NATS_MIB));
    }
    let rtt_nats = rtt(&in_far, &sink_ip);
    drop_udp("-D", &hc.addr);
    drop_udp("-D", &hb.addr);

    println!("throughput, {MIB} MiB per stream, median of {RUNS} (MB/s), and ping average:");
    let (w, n, m, r) = (
        median(wire.clone()),
        median(near.clone()),
        median(far.clone()),
        median(relayed.clone()),
    );
    println!("  host to host, bare underlay       {w:8.1}   {wire:.1?}   rtt {rtt_wire:.3} ms");
    println!("  task to task, one node (floor)    {n:8.1}   {near:.1?}   rtt {rtt_near:.3} ms");
    println!(
        "  task to task, across the mesh     {m:8.1}   {far:.1?}   rtt {rtt_far:.3} ms  = {:.2}x the one-node floor, {:.2}x the wire",
        m / n,
        m / w
    );
    println!(
        "  task to task, relayed by a third  {r:8.1}   {relayed:.1?}   rtt {rtt_relayed:.3} ms  = {:.2}x direct",
        r / m
    );
    let o = median(over_nats.clone());
    println!(
        "  task to task, through NATS ({NATS_MIB} MiB) {o:6.1}   {over_nats:.1?}   rtt {rtt_nats:.3} ms  = {:.2}x direct",
        o / m
    );
}

/// A helper process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Average round trip of 50 pings to `target` (ms), from busybox's summary line.
fn ping(run: &dyn Fn(&str) -> String, target: &str) -> f64 {
    let out = run(&format!("ping -c 50 -i 0.02 -q {target}"));
    eprintln!("ping {target}: {}", out.lines().last().unwrap_or(""));
    out.lines()
        .find_map(|l| l.split("min/avg/max = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|avg| avg.trim().parse().ok())
        .unwrap_or_else(|| panic!("no round-trip summary from ping: {out}"))
}

/// Runs `script` with sh in task `task` (at most 120 s): its stdout and stderr.
fn exec_in(c: &ContainerdCluster, task: &str, script: &str) -> String {
    let o = c.voiydctl(&["exec", task, "--", "timeout", "120", "sh", "-c", script]);
    format!("{}{}", voiyd_tests::stdout(&o), stderr(&o))
}
