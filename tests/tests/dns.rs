//! Cluster DNS on real containerd: from inside a task (`voiydctl exec ... nslookup`),
//! task and set names resolve to their addresses with and without `.voiyd`, a set's name
//! follows its ready replicas as it scales, a deleted task's name goes, and other names
//! reach the node's upstream resolver, a loopback one (which a task could not reach).

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use voiyd_messages::v1::Task;
use voiyd_tests::{eventually, stderr, stdout, ContainerdCluster};

/// A resolver on loopback that knows one name, `upstream.example`, as 192.0.2.7, and
/// answers NXDOMAIN to the rest. Returns its port.
async fn loopback_upstream() -> u16 {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        // Bounded: the test is done long before this many queries.
        for _ in 0..10_000 {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.iter().cloned());
            match q.queries.first() {
                Some(query) if query.name().to_ascii() == "upstream.example." => {
                    if query.query_type() == RecordType::A {
                        r.add_answer(Record::from_rdata(
                            query.name().clone(),
                            30,
                            RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
                        ));
                    }
                }
                _ => r.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    port
}

async fn running(c: &ContainerdCluster, task: &str) -> String {
    eventually(
        Duration::from_secs(60),
        &format!("{task} running"),
        || async {
            let t = c.api.get::<Task>(task).await.ok()?;
            let st = t.status?;
            (st.phase == "Running" && !st.ip.is_empty()).then_some(st.ip)
        },
    )
    .await
}

/// `nslookup NAME` in task `client`: (succeeded, output).
fn lookup(c: &ContainerdCluster, name: &str) -> (bool, String) {
    let o = c.voiydctl(&["exec", "client", "--", "nslookup", name]);
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// The addresses an nslookup printed for the name (not the server's own).
fn addresses(out: &str) -> Vec<String> {
    let answers = out.split_once("Name:").map_or("", |(_, a)| a);
    let mut v: Vec<String> = answers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect();
    v.sort();
    v
}

fn set_yaml(image: &str, replicas: u32) -> String {
    format!(
        "version: containerset/v1
meta: {{name: web}}
replicas: {replicas}
template:
  image: {image}
  args: [sleep, '3600']
  stopGracePeriod: 1s
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn tasks_resolve_tasks_and_sets_by_name() {
    let c = ContainerdCluster::start_with(&[]).await;
    let upstream = format!("127.0.0.1:{}", loopback_upstream().await);
    let n1 = c.agent("n1", &["--dns-upstream", &upstream]);
    eventually(Duration::from_secs(20), "node n1 ready", || async {
        let out = stdout(&c.voiydctl(&["get", "nodes"]));
        out.lines()
            .any(|l| l.starts_with("n1") && l.contains(" Ready"))
            .then_some(())
    })
    .await;
    let image = c.registry.image("busybox");
    for name in ["db", "client"] {
        c.apply(&format!(
            "version: task/v1\nmeta: {{name: {name}}}\nconfig:\n  image: {image}\n  args: [sleep, '3600']\n  stopGracePeriod: 1s\n"
        ));
    }
    c.apply(&set_yaml(&image, 2));
    let db = running(&c, "db").await;
    running(&c, "client").await;
    let mut web = vec![running(&c, "web-0").await, running(&c, "web-1").await];
    web.sort();

    // The task asks the node, and searches the cluster domain first.
    let resolv = c.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("search voiyd"), "{resolv}");
    let server = resolv
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .unwrap_or_default()
        .to_string();
    assert!(server.ends_with(".1"), "not the gateway: {resolv}");

    // A task by name, bare and in the domain; a set by name: its replicas.
    // Names follow the API within moments (the servers derive them, nodes watch them):
    // the first answers are waited for, not assumed.
    for name in ["db", "db.voiyd"] {
        let out = eventually(
            Duration::from_secs(15),
            &format!("{name} resolves"),
            || async {
                let (ok, out) = lookup(&c, name);
                (ok && addresses(&out) == vec![db.clone()]).then_some(out)
            },
        )
        .await;
        assert_eq!(addresses(&out), vec![db.clone()], "{name}: {out}");
    }
    let (ok, out) = lookup(&c, "web.voiyd");
    assert!(ok, "{out}");
    assert_eq!(addresses(&out), web, "{out}");

    // Not a cluster name: NXDOMAIN in the domain, the loopback upstream otherwise.
    let (ok, out) = lookup(&c, "nosuch.voiyd");
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    let (ok, out) = lookup(&c, "upstream.example");
    assert!(ok, "{out}");
    assert_eq!(addresses(&out), vec!["192.0.2.7".to_string()], "{out}");

    // Scaling: the new replica's address joins the set's name once it runs.
    c.apply(&set_yaml(&image, 3));
    let third = running(&c, "web-2").await;
    let seen_running = Instant::now();
    eventually(
        Duration::from_secs(10),
        "web.voiyd with three replicas",
        || async {
            let (_, out) = lookup(&c, "web.voiyd");
            addresses(&out).contains(&third).then_some(())
        },
    )
    .await;
    eprintln!(
        "a new replica's address resolved {:?} after voiydctl saw it Running",
        seen_running.elapsed()
    );

    // A deleted task's name goes.
    c.ok(&["delete", "task", "db", "--force"]);
    eventually(Duration::from_secs(10), "db.voiyd gone", || async {
        let (ok, out) = lookup(&c, "db.voiyd");
        (!ok && out.contains("NXDOMAIN")).then_some(())
    })
    .await;
    drop(n1);
}
