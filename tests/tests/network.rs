//! Task networking end to end: real CNI plugins (bridge, host-local, portmap, firewall,
//! loopback), iptables, containerd, runc, NATS, server and agents.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use voiyd_messages::v1::{Node, Task};
use voiyd_testkit::nats::free_port;
use voiyd_tests::{eventually, ContainerdCluster, NodeAgent};

/// The shared containerd cluster, with this file's helpers.
struct Cluster(ContainerdCluster);

impl std::ops::Deref for Cluster {
    type Target = ContainerdCluster;
    fn deref(&self) -> &ContainerdCluster {
        &self.0
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster(ContainerdCluster::start_with(&[]).await)
    }

    async fn node(&self, name: &str, extra: &[&str]) -> NodeAgent {
        let n = self.agent(name, extra);
        self.subnet(name).await;
        n
    }

    /// Waits until the node reports the subnet the server allocated to it.
    async fn subnet(&self, node: &str) -> String {
        eventually(
            Duration::from_secs(20),
            &format!("node {node} with a subnet"),
            || async {
                let n: Node = self.api.get(node).await.ok()?;
                let s = n.status?.subnet;
                (!s.is_empty()).then_some(s)
            },
        )
        .await
    }

    fn httpd(&self, name: &str, extra: &[&str]) {
        let image = self.registry.image("busybox");
        let mut args = vec!["run", name, "--image", &image, "--stop-grace", "1s"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "httpd", "-f", "-p", "80", "-h", "/"]);
        self.ok(&args);
    }

    async fn running(&self, name: &str) -> Task {
        eventually(
            Duration::from_secs(60),
            &format!("task {name} running with an IP"),
            || async {
                let t: Task = self.api.get(name).await.ok()?;
                let st = t.status.as_ref()?;
                (st.phase == "Running" && !st.ip.is_empty()).then_some(t)
            },
        )
        .await
    }
}

fn ip(t: &Task) -> String {
    t.status.as_ref().unwrap().ip.clone()
}

/// GET over plain HTTP/1.0 with std's TcpStream; the body, or None when unreachable.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn in_subnet(ip: &str, subnet: &str) -> bool {
    let (net, len) = subnet.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let a: u32 = ip.parse::<std::net::Ipv4Addr>().unwrap().into();
    let n: u32 = net.parse::<std::net::Ipv4Addr>().unwrap().into();
    let mask = u32::MAX << (32 - len);
    a & mask == n & mask
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What of a node's networking is left on the host: netns, veths on its bridge, iptables
/// rules naming its tasks, IPs held in host-local's store, saved set-ups.
fn leftovers(n: &NodeAgent) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = format!("{}-", n.bridge);
    let netns_prefix = format!("{}:", n.bridge);
    for line in sh("ip", &["netns", "list"]).lines() {
        if line.starts_with(&netns_prefix) {
            out.push(format!("netns {line}"));
        }
    }
    for line in sh("ip", &["-o", "link", "show", "master", &n.bridge]).lines() {
        out.push(format!("link {line}"));
    }
    for line in sh("iptables-save", &[]).lines() {
        if line.contains(&format!("id: \\\"{prefix}")) || line.contains(&format!("\"{prefix}")) {
            out.push(format!("iptables {line}"));
        }
    }
    if let Some(subnet) = subnet_of(n) {
        for rule in voiyd_tests::forward_rules(&subnet) {
            out.push(format!("iptables {rule}"));
        }
    }
    let ipam = n.data_dir.join("network/ipam/voiyd");
    if let Ok(dir) = std::fs::read_dir(&ipam) {
        for e in dir.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.parse::<std::net::Ipv4Addr>().is_ok() {
                out.push(format!("ipam {f}"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(n.data_dir.join("network/tasks")) {
        for e in dir.flatten() {
            out.push(format!("state {}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// The node's subnet, from the conflist it wrote.
fn subnet_of(n: &NodeAgent) -> Option<String> {
    let text = std::fs::read_to_string(
        n.data_dir
            .join("cni")
            .join(format!("{}.conflist", n.bridge)),
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .map(str::to_string)
}

async fn no_leftovers(n: &NodeAgent, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        leftovers(n).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn tasks_get_ips_publish_ports_and_reach_each_other() {
    let c = Cluster::start().await;
    let n1 = c.node("net1", &[]).await;
    let subnet = c.subnet("net1").await;
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    c.httpd("web", &["-p", &publish]);
    c.httpd("api", &[]);
    let web = c.running("web").await;
    let api = c.running("api").await;
    assert_ne!(ip(&web), ip(&api));
    assert!(
        in_subnet(&ip(&web), &subnet),
        "{} not in {subnet}",
        ip(&web)
    );
    assert!(
        in_subnet(&ip(&api), &subnet),
        "{} not in {subnet}",
        ip(&api)
    );
    // The leak check sees what running tasks hold (so it can fail).
    let held = leftovers(&n1);
    for what in ["netns", "link", "iptables", "ipam", "state"] {
        assert!(
            held.iter().any(|l| l.starts_with(what)),
            "no {what} in {held:?}"
        );
    }
    assert!(!voiyd_tests::forward_rules(&subnet).is_empty());

    // Set-ups run side by side: four tasks at once get four distinct addresses.
    let many = ["p1", "p2", "p3", "p4"];
    for t in many {
        c.httpd(t, &["--no-wait"]);
    }
    let mut ips = std::collections::BTreeSet::from([ip(&web), ip(&api)]);
    for t in many {
        let got = ip(&c.running(t).await);
        assert!(in_subnet(&got, &subnet), "{got} not in {subnet}");
        ips.insert(got);
    }
    assert_eq!(ips.len(), 6, "{ips:?}");

    // On its container IP and on the published host port.
    let body = http_get(&format!("{}:80", ip(&web)), "/etc/passwd").expect("container IP");
    assert!(body.contains("root:x:0:0"), "{body}");
    let body = http_get(&format!("127.0.0.1:{port}"), "/etc/passwd").expect("host port");
    assert!(body.contains("root:x:0:0"), "{body}");
    let hosts = http_get(&format!("{}:80", ip(&web)), "/etc/hosts").unwrap();
    assert!(hosts.contains(&format!("{}\tweb", ip(&web))), "{hosts}");

    // Task to task: a one-shot wget from a third task.
    let image = c.registry.image("busybox");
    let url = format!("http://{}/etc/passwd", ip(&api));
    c.ok(&[
        "run",
        "client",
        "--image",
        &image,
        "--restart",
        "never",
        "--no-wait",
        "--",
        "timeout",
        "10",
        "wget",
        "-q",
        "-O",
        "-",
        &url,
    ]);
    eventually(Duration::from_secs(60), "client succeeded", || async {
        let t: Task = c.api.get("client").await.ok()?;
        (t.status?.phase == "Succeeded").then_some(())
    })
    .await;
    assert!(n1
        .task_output("client")
        .iter()
        .any(|l| l.contains("root:x:0:0")));

    // The same host port again: the scheduler keeps it off this node, and says why.
    c.httpd("clash", &["-p", &publish, "--no-wait"]);
    eventually(Duration::from_secs(30), "clash refused", || async {
        let t: Task = c.api.get("clash").await.ok()?;
        let st = t.status?;
        (st.phase == "Pending" && st.message.contains("port")).then_some(())
    })
    .await;
    // A port a host process holds: the node refuses to hijack it, and says so.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    c.httpd(
        "held",
        &["-p", &format!("127.0.0.1:{held}:80"), "--no-wait"],
    );
    let msg = eventually(Duration::from_secs(60), "held port refused", || async {
        let t: Task = c.api.get("held").await.ok()?;
        let st = t.status?;
        (st.reason == "PortConflict").then_some(st.message)
    })
    .await;
    assert!(
        msg.contains(&held.to_string()) && msg.contains("in use"),
        "{msg}"
    );

    // Stop releases the network; start gets it back.
    c.ok(&["stop", "task", "web", "--timeout", "30s"]);
    assert!(http_get(&format!("127.0.0.1:{port}"), "/etc/passwd").is_none());
    let stopped_ip = format!("ipam {}", ip(&web));
    let web_bits = |l: &String| {
        (l.starts_with("netns ") && l.contains(":web"))
            || l.contains("-web\\\"")
            || *l == stopped_ip
            || l.contains("web.json")
    };
    eventually(
        Duration::from_secs(10),
        "web's network released on stop",
        || async {
            let l: Vec<String> = leftovers(&n1).into_iter().filter(web_bits).collect();
            l.is_empty().then_some(())
        },
    )
    .await;
    c.ok(&["start", "task", "web", "--timeout", "60s"]);
    let web = c.running("web").await;
    eventually(Duration::from_secs(10), "web answers again", || async {
        http_get(&format!("127.0.0.1:{port}"), "/etc/passwd")
    })
    .await;
    assert!(in_subnet(&ip(&web), &subnet));

    for t in [
        "web", "api", "client", "clash", "held", "p1", "p2", "p3", "p4",
    ] {
        c.ok(&["delete", "task", t, "--timeout", "30s"]);
    }
    no_leftovers(&n1, "nothing left of n1's task networks after delete").await;
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn agent_restart_cleans_what_a_crash_left() {
    let c = Cluster::start().await;
    let mut n1 = c.node("rst1", &[]).await;
    let port = free_port();
    c.httpd("web", &["-p", &format!("127.0.0.1:{port}:80")]);
    let web = c.running("web").await;

    // Crash the agent; a running task keeps its network across the restart.
    n1.restart(1);
    eventually(Duration::from_secs(20), "web still answers", || async {
        http_get(&format!("127.0.0.1:{port}"), "/etc/passwd")
    })
    .await;
    assert_eq!(ip(&c.running("web").await), ip(&web));

    // Crash again, delete the task meanwhile, and leave a stray namespace behind.
    let _ = n1.proc.child.kill();
    let _ = n1.proc.child.wait();
    c.ok(&["delete", "task", "web", "--no-wait"]);
    let stray = format!("{}:ghost", n1.bridge);
    sh("ip", &["netns", "add", &stray]);
    n1.restart(2);
    no_leftovers(&n1, "the restarted agent cleaned up").await;
    assert!(!sh("ip", &["netns", "list"]).contains(&stray));
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn two_nodes_on_one_host_get_different_subnets() {
    let c = Cluster::start().await;
    let n1 = c.node("two1", &["--labels", "zone=a"]).await;
    let n2 = c.node("two2", &["--labels", "zone=b"]).await;
    assert_ne!(n1.bridge, n2.bridge);
    let s1 = c.subnet("two1").await;
    let s2 = c.subnet("two2").await;
    assert_ne!(s1, s2);
    c.httpd("a", &["--node-selector", "zone=a"]);
    c.httpd("b", &["--node-selector", "zone=b"]);
    let a = c.running("a").await;
    let b = c.running("b").await;
    assert!(in_subnet(&ip(&a), &s1) && in_subnet(&ip(&b), &s2));
    // Both answer from the host.
    assert!(http_get(&format!("{}:80", ip(&a)), "/etc/passwd").is_some());
    assert!(http_get(&format!("{}:80", ip(&b)), "/etc/passwd").is_some());

    // Deleting a node releases its subnet.
    for t in ["a", "b"] {
        c.ok(&["delete", "task", t, "--timeout", "30s"]);
    }
    no_leftovers(&n2, "n2 clean").await;
    drop(n2);
    let client = async_nats::connect(c.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js
        .get_key_value(voiyd_nats::names::BUCKET_SUBNETS)
        .await
        .unwrap();
    let key = voiyd_nats::names::node_subnet_key("two2");
    assert!(kv.get(&key).await.unwrap().is_some());
    c.ok(&["delete", "node", "two2"]);
    eventually(Duration::from_secs(10), "n2's subnet released", || async {
        kv.get(&key).await.unwrap().is_none().then_some(())
    })
    .await;
    no_leftovers(&n1, "n1 clean").await;
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn host_network_tasks_share_the_node_network() {
    let c = Cluster::start().await;
    let n1 = c.node("hst1", &[]).await;
    let port = free_port().to_string();
    let image = c.registry.image("busybox");
    c.ok(&[
        "run",
        "hostweb",
        "--image",
        &image,
        "--host-network",
        "--stop-grace",
        "1s",
        "--",
        "httpd",
        "-f",
        "-p",
        &format!("127.0.0.1:{port}"),
        "-h",
        "/",
    ]);
    let body = eventually(Duration::from_secs(30), "host-network httpd", || async {
        http_get(&format!("127.0.0.1:{port}"), "/etc/passwd")
    })
    .await;
    assert!(body.contains("root:x:0:0"));
    let t: Task = c.api.get("hostweb").await.unwrap();
    assert!(t.status.unwrap().ip.is_empty());
    assert!(leftovers(&n1).is_empty(), "{:?}", leftovers(&n1));
    c.ok(&["delete", "task", "hostweb", "--timeout", "30s"]);
}

/// A second "host": a network namespace of its own, joined to the root namespace by a
/// veth pair (`NEAR` on the root side, `FAR` inside). Dropping it removes both by name.
struct FarHost {
    ns: String,
    veth: String,
}

impl FarHost {
    const NEAR: &'static str = "192.168.251.1";
    const FAR: &'static str = "192.168.251.2";

    fn create() -> FarHost {
        let id = std::process::id() % 100_000;
        let host = FarHost {
            ns: format!("voiyd-far{id}"),
            veth: format!("vfar{id}"),
        };
        // A run that was killed may have left these behind under the same names.
        host.remove();
        let peer = format!("vfarp{id}");
        let ns = host.ns.as_str();
        let near = format!("{}/30", Self::NEAR);
        let far = format!("{}/30", Self::FAR);
        for args in [
            &["netns", "add", ns][..],
            &[
                "link", "add", &host.veth, "type", "veth", "peer", "name", &peer, "netns", ns,
            ],
            &["addr", "add", &near, "dev", &host.veth],
            &["link", "set", &host.veth, "up"],
            &["-n", ns, "addr", "add", &far, "dev", &peer],
            &["-n", ns, "link", "set", &peer, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
        ] {
            let o = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        host
    }

    /// `http_get` from inside the far namespace: a thread of its own joins it
    /// (setns changes only the calling thread's namespace).
    fn http_get(&self, addr: &str, path: &str) -> Option<String> {
        let netns = std::fs::File::open(format!("/run/netns/{}", self.ns)).unwrap();
        let (addr, path) = (addr.to_string(), path.to_string());
        std::thread::spawn(move || {
            // Only this short-lived thread moves into the namespace.
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&netns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            http_get(&addr, &path)
        })
        .join()
        .unwrap()
    }

    fn remove(&self) {
        // Deleting one end of a veth pair deletes both.
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.veth])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .output();
    }
}

impl Drop for FarHost {
    fn drop(&mut self) {
        self.remove();
    }
}

#[tokio::test]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn published_ports_are_reachable_from_another_host() {
    let far = FarHost::create();
    let c = Cluster::start().await;
    let _n1 = c.node("far1", &[]).await;
    let port = free_port();
    let target = format!("{}:{port}", FarHost::NEAR);

    // The link works: the far host reaches a listener on the near address...
    let probe = std::net::TcpListener::bind(format!("{}:0", FarHost::NEAR)).unwrap();
    let probe_addr = probe.local_addr().unwrap().to_string();
    probe.set_nonblocking(true).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = done.clone();
    let accept = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !serving.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            match probe.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut req = [0u8; 256];
                    let _ = s.read(&mut req);
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nprobe-ok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    // A fresh veth may drop packets until the kernel has marked its carrier up.
    let got = eventually(
        Duration::from_secs(20),
        "the far host reaches the node",
        || async { far.http_get(&probe_addr, "/") },
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    accept.join().unwrap();
    assert_eq!(got, "probe-ok");
    // ...and nothing answers on the port before it is published.
    assert!(far.http_get(&target, "/etc/passwd").is_none());

    // A task without a published port is not reachable there either.
    c.httpd("private", &[]);
    c.running("private").await;
    assert!(far.http_get(&target, "/etc/passwd").is_none());

    // `-p PORT:80` publishes on every address of the node, the far side included.
    c.httpd("web", &["-p", &format!("{port}:80")]);
    c.running("web").await;
    let body = eventually(
        Duration::from_secs(20),
        "the published port answers the far host",
        || async { far.http_get(&target, "/etc/passwd") },
    )
    .await;
    assert!(body.contains("root:x:0:0"), "{body}");

    // Stopped, the port is gone again.
    c.ok(&["stop", "task", "web", "--timeout", "30s"]);
    assert!(far.http_get(&target, "/etc/passwd").is_none());
    for t in ["web", "private"] {
        c.ok(&["delete", "task", t, "--timeout", "30s"]);
    }
}
