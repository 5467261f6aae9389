//! Cluster DNS benchmark. Prints figures:
//! - query latency at a node's DNS server (UDP, from the host): a cluster name answered by
//!   the node, and a name it forwards to an upstream on loopback, against that upstream
//!   asked directly (the floor), all measured in the same run;
//! - how soon a name follows a change: from the API reporting a new task Running to the
//!   node answering the task's name.
//!
//! Usage: `cargo build --release --bins && VOIYD_BIN_DIR=target/release
//! target/release/bench_dns` (root; real containerd).

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use voiyd_messages::v1::{Node, Task};
use voiyd_tests::{eventually, stdout, ContainerdCluster};

const QUERIES: usize = 2000;
const CHANGES: usize = 10;

/// An upstream resolver on loopback that answers every A question with 192.0.2.7.
async fn upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.add_queries(q.queries.iter().cloned());
            if let Some(query) = q.queries.first() {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    30,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
                ));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

/// Asks `server` for `name`'s A record: (answer code, addresses).
async fn ask(sock: &UdpSocket, server: SocketAddr, name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(hickory_proto::op::Query::query(
        Name::from_str(name).unwrap(),
        RecordType::A,
    ));
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
            .await
            .expect("a DNS answer within 3 s")
            .unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        if r.metadata.id != q.metadata.id {
            continue;
        }
        let ips = r
            .answers
            .iter()
            .filter_map(|a| match &a.data {
                RData::A(A(ip)) => Some(*ip),
                _ => None,
            })
            .collect();
        return (r.metadata.response_code, ips);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latencies(sock: &UdpSocket, server: SocketAddr, name: &str) -> (Duration, Duration) {
    let mut v = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let t = Instant::now();
        let (code, ips) = ask(sock, server, name).await;
        v.push(t.elapsed());
        assert!(
            code == ResponseCode::NoError && !ips.is_empty(),
            "{name}: {code:?}"
        );
    }
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let up = upstream().await;
    let c = ContainerdCluster::start_with(&[]).await;
    let _node = c.agent("dns1", &["--dns-upstream", &up.to_string()]);
    eventually(Duration::from_secs(30), "dns1 ready", || async {
        stdout(&c.voiydctl(&["get", "nodes"]))
            .contains(" Ready")
            .then_some(())
    })
    .await;
    let image = c.registry.image("busybox");
    let run = |name: String| {
        c.ok(&[
            "run",
            &name,
            "--image",
            &image,
            "--stop-grace",
            "1s",
            "--no-wait",
            "--",
            "sleep",
            "3600",
        ])
    };
    run("db".into());
    let api = &c.api;
    let running = move |name: String| async move {
        let t: Task = api.get(&name).await.ok()?;
        let st = t.status?;
        (st.phase == "Running" && !st.ip.is_empty()).then_some(st.ip)
    };
    let db_ip = eventually(Duration::from_secs(60), "db running", || {
        running("db".into())
    })
    .await;
    let node: Node = c.api.get("dns1").await.unwrap();
    let subnet = node.status.unwrap().subnet;
    let gateway = voiyd_node::network::gateway(&subnet).expect("the node's subnet");
    let server = SocketAddr::from((gateway, 53));
    let sock = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    // The name follows the task's Running within a moment (measured below).
    let want: Ipv4Addr = db_ip.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ask(&sock, server, "db.voiyd.").await.1.contains(&want) {
        assert!(Instant::now() < deadline, "db.voiyd never resolved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, ips) = ask(&sock, server, "db.voiyd.").await;
    assert_eq!(
        (code, ips),
        (ResponseCode::NoError, vec![db_ip.parse().unwrap()])
    );

    let floor = latencies(&sock, up, "x.example.").await;
    let local = latencies(&sock, server, "db.voiyd.").await;
    let forwarded = latencies(&sock, server, "x.example.").await;
    println!("queries: {QUERIES} each, sequential, UDP from the host");
    println!("| query | p50 | p99 | p50 vs floor |");
    println!("|---|---|---|---|");
    let row = |what: &str, (p50, p99): (Duration, Duration)| {
        println!(
            "| {what} | {} | {} | {:.1}x |",
            ms(p50),
            ms(p99),
            p50.as_secs_f64() / floor.0.as_secs_f64()
        )
    };
    row("loopback upstream asked directly (floor)", floor);
    row("cluster name, answered by the node", local);
    row("other name, forwarded by the node", forwarded);

    // From the API saying Running to the node answering the name.
    let mut lags = Vec::new();
    for i in 0..CHANGES {
        let name = format!("new{i}");
        run(name.clone());
        let ip = eventually(Duration::from_secs(60), "running", || running(name.clone())).await;
        let seen = Instant::now();
        let fqdn = format!("{name}.voiyd.");
        loop {
            let (_, ips) = ask(&sock, server, &fqdn).await;
            if ips.iter().any(|a| a.to_string() == ip) {
                break;
            }
            assert!(
                seen.elapsed() < Duration::from_secs(10),
                "{name} never resolved"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags.push(seen.elapsed());
    }
    lags.sort();
    println!(
        "a new task's name answered after the API said Running: p50 {}, max {} ({CHANGES} tasks; the API polled every 50 ms)",
        ms(percentile(&lags, 0.5)),
        ms(*lags.last().unwrap())
    );
}
