//! Scheduler benchmark: one nats-server, `--servers` voiyd-servers, `--nodes`
//! simulated nodes in one voiyd-node process; creates `--tasks` tasks through the API
//! and measures how fast they are placed and reported Running, the API latency, and
//! the RSS of every process, next to a bare NATS request/reply round trip measured in
//! the same run. Run it through `scripts/bench-scheduler.sh` (release builds).

use futures::StreamExt;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voiyd_messages::v1::{Meta, Node, Task, TaskConfig, TaskStatus};
use voiyd_nats::api::ApiClient;
use voiyd_testkit::nats::TestNats;
use voiyd_tests::{bin, Proc};

struct Opts {
    nodes: usize,
    tasks: usize,
    concurrency: usize,
    servers: usize,
    heartbeat: u64,
    node_timeout: u64,
    count_messages: bool,
    idle: u64,
    unplaceable: usize,
    resync: u64,
    /// 0: nats-server fsyncs before every acknowledgement; N: every N seconds.
    sync_secs: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        nodes: 1000,
        tasks: 20_000,
        concurrency: 256,
        servers: 1,
        heartbeat: 1,
        node_timeout: 5,
        count_messages: false,
        idle: 0,
        unplaceable: 0,
        resync: 30,
        sync_secs: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{} needs a number", args[i]));
        match args[i].as_str() {
            "--nodes" => o.nodes = v,
            "--tasks" => o.tasks = v,
            "--concurrency" => o.concurrency = v,
            "--servers" => o.servers = v,
            "--heartbeat" => o.heartbeat = v as u64,
            "--node-timeout" => o.node_timeout = v as u64,
            "--count-messages" => o.count_messages = v != 0,
            "--idle" => o.idle = v as u64,
            "--unplaceable" => o.unplaceable = v,
            "--resync" => o.resync = v as u64,
            "--sync-secs" => o.sync_secs = v as u64,
            other => panic!("unknown flag {other}: use --nodes --tasks --concurrency --servers --heartbeat --node-timeout --count-messages 0|1 --idle SECS --unplaceable N --resync SECS --sync-secs SECS (0: fsync every write)"),
        }
        i += 2;
    }
    o
}

fn percentiles(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        ms(p(0.5)),
        ms(p(0.9)),
        ms(p(0.99)),
        ms(*v.last().unwrap())
    )
}

fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// Sequential and concurrent request/reply against a trivial responder.
async fn bare_nats(url: &str, n: usize, concurrency: usize) -> (String, f64) {
    let client = async_nats::connect(url).await.unwrap();
    let mut sub = client.subscribe("bench.echo").await.unwrap();
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = responder.publish(r, m.payload).await;
            }
        }
    });
    let requester = async_nats::connect(url).await.unwrap();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        requester.request("bench.echo", "x".into()).await.unwrap();
        lat.push(t.elapsed());
    }
    let t = Instant::now();
    futures::stream::iter(0..n * 4)
        .map(|_| {
            let r = requester.clone();
            async move { r.request("bench.echo", "x".into()).await.unwrap() }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let rate = (n * 4) as f64 / t.elapsed().as_secs_f64();
    (percentiles(lat), rate)
}

fn wait_log(p: &Proc, needle: &str, limit: Duration) {
    let start = Instant::now();
    while !p.log_text().contains(needle) {
        assert!(
            start.elapsed() < limit,
            "no `{needle}` in {} within {limit:?}:\n{}",
            p.log.display(),
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("VOIYD_BIN_DIR").is_none() {
        let dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        std::env::set_var("VOIYD_BIN_DIR", dir);
    }
    let o = opts();
    let dir = tempfile::tempdir().unwrap();
    let sync = match o.sync_secs {
        0 => voiyd_nats::SyncPolicy::Always,
        n => voiyd_nats::SyncPolicy::Every(std::time::Duration::from_secs(n)),
    };
    println!("nats-server sync: {sync:?}");
    let nats = TestNats::start_with_sync(sync).await;
    let url = nats.url();
    println!("# voiyd scheduler benchmark");
    println!(
        "nodes {} (simulated, one process), tasks {}, API concurrency {}, servers {}, heartbeat {}s, node timeout {}s, work re-read every {}s",
        o.nodes, o.tasks, o.concurrency, o.servers, o.heartbeat, o.node_timeout, o.resync
    );
    let (rtt, rate) = bare_nats(&url, 5000, o.concurrency).await;
    println!(
        "bare NATS request/reply: sequential {rtt}; concurrent ({}) {rate:.0} req/s",
        o.concurrency
    );

    let mut servers = Vec::new();
    for i in 0..o.servers {
        let data = dir.path().join(format!("server{i}"));
        let timeout = o.node_timeout.to_string();
        let p = Proc::spawn(
            &bin("voiyd-server"),
            &[
                "--nats-url",
                &url,
                "--data-dir",
                data.to_str().unwrap(),
                "--node-timeout",
                &timeout,
                "--log-level",
                "warn,voiyd_server::api=info",
            ],
            &[],
            dir.path().join(format!("server{i}.log")),
        );
        wait_log(&p, "API ready", Duration::from_secs(30));
        servers.push(p);
    }
    let api = ApiClient::new(async_nats::connect(&url).await.unwrap())
        .with_timeout(Duration::from_secs(60));

    let started = Instant::now();
    let nodes_arg = o.nodes.to_string();
    let hb = o.heartbeat.to_string();
    let timeout = o.node_timeout.to_string();
    let resync = o.resync.to_string();
    let node_data = dir.path().join("nodes");
    std::fs::create_dir_all(&node_data).unwrap();
    let nodes = Proc::spawn(
        &bin("voiyd-node"),
        &[
            "--server",
            &url,
            "--name",
            "sim",
            "--runtime",
            "sim",
            "--sim-nodes",
            &nodes_arg,
            "--heartbeat",
            &hb,
            "--resync-every",
            &resync,
            "--node-timeout",
            &timeout,
            "--data-dir",
            node_data.to_str().unwrap(),
            "--log-level",
            "warn",
        ],
        &[],
        dir.path().join("nodes.log"),
    );
    loop {
        let ready = api
            .list::<Node>("")
            .await
            .map(|ns| {
                ns.iter()
                    .filter(|n| n.status.as_ref().is_some_and(|s| s.phase == "Ready"))
                    .count()
            })
            .unwrap_or(0);
        if ready >= o.nodes {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {ready} of {} nodes ready after 120 s; nodes log:\n{}",
            o.nodes,
            nodes.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "{} nodes registered and Ready in {:.1} s",
        o.nodes,
        started.elapsed().as_secs_f64()
    );

    let mut pids: Vec<(String, u32)> = Vec::new();
    if let Some(pid) = nats.server().pid() {
        pids.push(("nats-server".into(), pid));
    }
    for (i, s) in servers.iter().enumerate() {
        pids.push((format!("voiyd-server {i}"), s.pid()));
    }
    pids.push((format!("voiyd-node ({} sim nodes)", o.nodes), nodes.pid()));
    pids.push((
        "this benchmark (API clients, watch)".into(),
        std::process::id(),
    ));
    // Tasks no node can take (their node selector matches none): they stay Pending,
    // and the idle measurement shows what waiting costs.
    if o.unplaceable > 0 {
        futures::stream::iter(0..o.unplaceable)
            .map(|i| {
                let api = api.clone();
                async move {
                    let task = Task {
                        version: "task/v1".into(),
                        meta: Some(Meta {
                            name: format!("u{i}"),
                            ..Default::default()
                        }),
                        config: Some(TaskConfig {
                            image: "sim/app:1".into(),
                            node_selector: [("bench".to_string(), "none".to_string())].into(),
                            ..Default::default()
                        }),
                        status: None,
                    };
                    api.create(&task).await.expect("create");
                }
            })
            .buffer_unordered(o.concurrency)
            .collect::<Vec<()>>()
            .await;
        println!("{} unplaceable tasks created (Pending)", o.unplaceable);
    }
    // The footprint of a cluster doing nothing: heartbeats and upkeep only.
    if o.idle > 0 {
        let before: Vec<f64> = pids.iter().map(|(_, pid)| cpu_secs(*pid)).collect();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(o.idle)).await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "idle, {} nodes heartbeating, {} Pending tasks, over {secs:.0} s:",
            o.nodes, o.unplaceable
        );
        for ((what, pid), b) in pids.iter().zip(before) {
            let (rss, _) = rss_mib(*pid);
            println!(
                "  {what}: {:.1}% of a core, RSS {rss:.0} MiB",
                100.0 * (cpu_secs(*pid) - b) / secs
            );
        }
    }

    // Watch statuses: the first time each task is reported Running.
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let status = js.get_key_value("voiyd_status").await.unwrap();
    let mut watch = status.watch("task.>").await.unwrap();
    let seen = running.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = watch.next().await {
            if let Ok(st) = TaskStatus::decode(e.value) {
                if st.phase == "Running" {
                    let name = e.key.trim_start_matches("task.").to_string();
                    seen.lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        }
    });

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    // Optional: count what crosses NATS per task (costs nats-server some CPU itself).
    let counters: Arc<Mutex<std::collections::BTreeMap<&'static str, u64>>> = Arc::default();
    if o.count_messages {
        let client = async_nats::connect(&url).await.unwrap();
        for (what, subject) in [
            ("node status reports", "voiyd.node.*.status"),
            ("node heartbeats", "voiyd.node.*.heartbeat"),
            ("task spec writes", "$KV.voiyd_tasks.>"),
            ("status writes", "$KV.voiyd_status.>"),
            ("work writes", "$KV.voiyd_work.>"),
            ("lease writes", "$KV.voiyd_leases.>"),
            ("events", "voiyd.events.>"),
            ("direct gets", "$JS.API.DIRECT.GET.>"),
            ("API requests", "voiyd.api.>"),
        ] {
            let mut sub = client.subscribe(subject).await.unwrap();
            let counters = counters.clone();
            tokio::spawn(async move {
                while sub.next().await.is_some() {
                    *counters.lock().unwrap().entry(what).or_default() += 1;
                }
            });
        }
        client.flush().await.unwrap();
    }
    let cpu0: Vec<f64> = pids.iter().map(|(_, pid)| cpu_secs(*pid)).collect();
    let t0 = Instant::now();
    // Progress every 5 s, so a slow run shows where it is.
    let (progress_sent, progress_running) = (sent.clone(), running.clone());
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!(
                "  {:>5.0} s: {} create requests sent, {} Running",
                t0.elapsed().as_secs_f64(),
                progress_sent.lock().unwrap().len(),
                progress_running.lock().unwrap().len()
            );
        }
    });
    let latencies: Vec<Duration> = futures::stream::iter(0..o.tasks)
        .map(|i| {
            let api = api.clone();
            let sent = sent.clone();
            async move {
                let name = format!("b{i}");
                let task = Task {
                    version: "task/v1".into(),
                    meta: Some(Meta {
                        name: name.clone(),
                        ..Default::default()
                    }),
                    config: Some(TaskConfig {
                        image: "sim/app:1".into(),
                        ..Default::default()
                    }),
                    status: None,
                };
                let t = Instant::now();
                sent.lock().unwrap().insert(name, t);
                api.create(&task).await.expect("create");
                t.elapsed()
            }
        })
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    let created = t0.elapsed();
    loop {
        let n = running.lock().unwrap().len();
        if n >= o.tasks {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "only {n} of {} tasks Running after 900 s",
            o.tasks
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.abort();
    let all_running = running
        .lock()
        .unwrap()
        .values()
        .max()
        .copied()
        .unwrap()
        .duration_since(t0);
    let to_running: Vec<Duration> = {
        let r = running.lock().unwrap();
        let s = sent.lock().unwrap();
        r.iter()
            .filter_map(|(k, at)| s.get(k).map(|t| at.duration_since(*t)))
            .collect()
    };
    println!(
        "created {} tasks in {:.2} s: {:.0} creates/s (each create places the task)",
        o.tasks,
        created.as_secs_f64(),
        o.tasks as f64 / created.as_secs_f64()
    );
    println!(
        "all {} Running (reported by the nodes) after {:.2} s: {:.0} placements/s, create to Running",
        o.tasks,
        all_running.as_secs_f64(),
        o.tasks as f64 / all_running.as_secs_f64()
    );
    println!("API create latency: {}", percentiles(latencies));
    println!("create to Running latency: {}", percentiles(to_running));
    let window = all_running.as_secs_f64();
    for ((what, pid), before) in pids.iter().zip(cpu0) {
        let (rss, hwm) = rss_mib(*pid);
        let cpu = cpu_secs(*pid) - before;
        println!(
            "{what}: RSS {rss:.0} MiB (peak {hwm:.0} MiB); CPU {cpu:.1} s while placing ({:.0}% of a core)",
            100.0 * cpu / window
        );
    }
    for (what, n) in counters.lock().unwrap().iter() {
        println!("{what}: {n} ({:.2} per task)", *n as f64 / o.tasks as f64);
    }
    // Events are published without waiting for acks: check none went missing.
    let events = js
        .get_stream(voiyd_nats::names::STREAM_EVENTS)
        .await
        .unwrap();
    let expected = 3 * o.tasks as u64;
    let start = Instant::now();
    let stored = loop {
        let consumer = events
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                filter_subject: voiyd_nats::names::event_subject("task", "*", "*"),
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut consumer = consumer;
        let n = consumer.info().await.unwrap().num_pending;
        let _ = events.delete_consumer(&consumer.cached_info().name).await;
        if n >= expected || start.elapsed() > Duration::from_secs(10) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("task events stored: {stored} of {expected} (created, scheduled, running per task)");
    let warns = servers
        .iter()
        .map(|s| s.log_text().lines().filter(|l| l.contains("WARN")).count())
        .sum::<usize>();
    println!("server warnings logged: {warns}");
    if std::env::var_os("VOIYD_BENCH_KEEP").is_some() {
        println!("logs kept in {}", dir.keep().display());
    }
}
