//! Several "hosts" on one machine: network namespaces joined by an underlay bridge in a
//! namespace of its own, as separate machines on a LAN would be. Node agents run in
//! them (`NodeAgent` with `--netns`); the host's loopback services the test needs
//! (NATS, the registry) are forwarded into each namespace's own loopback, so the
//! agents use the same URLs. Everything is removed on drop.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One simulated host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its network namespace (`ip netns` name).
    pub netns: String,
    /// Its address on the underlay.
    pub addr: String,
}

/// Hosts on one underlay.
pub struct Underlay {
    /// The underlay's own namespace, holding the bridge.
    pub netns: String,
    /// The hosts.
    pub hosts: Vec<Host>,
    stop: Arc<AtomicBool>,
    tag: String,
    third: usize,
    /// NAT routers' namespaces (see [`Underlay::put_behind_nat`]).
    routers: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command in a namespace; returns whether it succeeded.
pub fn in_netns(netns: &str, program: &str, args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Underlay {
    /// `n` hosts (`10.<a>.<b>.1` …) on a fresh underlay.
    pub fn new(n: usize) -> Underlay {
        let id = std::process::id() % 10_000;
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{id}{k}");
        // A /24 of 10.250.0.0/16 per underlay: pid and counter spread them.
        let third = (id as usize * 7 + k) % 250;
        let netns = format!("vu{tag}");
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &netns, "link", "set", "br0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let mut hosts = Vec::new();
        for i in 0..n {
            let host = format!("vh{tag}-{i}");
            let (a, b) = (format!("va{tag}{i}"), format!("vb{tag}{i}"));
            ip(&["netns", "add", &host]);
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            ip(&["link", "set", &a, "netns", &host]);
            ip(&["link", "set", &b, "netns", &netns]);
            ip(&["-n", &host, "link", "set", &a, "name", "eth0"]);
            let addr = format!("10.250.{third}.{}", i + 1);
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
            ip(&["-n", &host, "link", "set", "lo", "up"]);
            ip(&["-n", &netns, "link", "set", &b, "master", "br0", "up"]);
            hosts.push(Host { netns: host, addr });
        }
        Underlay {
            netns,
            hosts,
            stop: Arc::new(AtomicBool::new(false)),
            tag,
            third,
            routers: Vec::new(),
        }
    }

    /// Moves host `i` behind a NAT router of its own, as a machine on a home or office
    /// network: the host gets `192.168.<i+1>.2` on a private link to the router, whose
    /// other side is on the underlay (`10.<..>.<101+i>`) and masquerades what the host
    /// sends. Nothing on the underlay can open a connection to the host; the host's own
    /// address (`Host::addr`, what its agent advertises) is the private one.
    pub fn put_behind_nat(&mut self, i: usize) {
        let router = format!("vr{}-{i}", self.tag);
        let (lan, wan, wan_peer) = (
            format!("vb{}{i}", self.tag),
            format!("vw{}{i}", self.tag),
            format!("vx{}{i}", self.tag),
        );
        let host = self.hosts[i].netns.clone();
        let private = format!("192.168.{}.2", i + 1);
        let gateway = format!("192.168.{}.1", i + 1);
        let public = format!("10.250.{}.{}", self.third, 101 + i);
        ip(&["netns", "add", &router]);
        self.routers.push(router.clone());
        ip(&["-n", &router, "link", "set", "lo", "up"]);
        // The host's link now ends in the router, not on the underlay bridge.
        ip(&["-n", &self.netns, "link", "set", &lan, "netns", &router]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &lan,
        ]);
        ip(&["-n", &router, "link", "set", &lan, "up"]);
        ip(&[
            "link", "add", &wan, "type", "veth", "peer", "name", &wan_peer,
        ]);
        ip(&["link", "set", &wan, "netns", &router]);
        ip(&["link", "set", &wan_peer, "netns", &self.netns]);
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            &wan_peer,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{public}/24"),
            "dev",
            &wan,
        ]);
        ip(&["-n", &router, "link", "set", &wan, "up"]);
        assert!(in_netns(
            &router,
            "sysctl",
            &["-qw", "net.ipv4.ip_forward=1"]
        ));
        assert!(in_netns(
            &router,
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &wan,
                "-j",
                "MASQUERADE"
            ],
        ));
        ip(&["-n", &host, "addr", "flush", "dev", "eth0"]);
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{private}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &host, "route", "add", "default", "via", &gateway]);
        self.hosts[i].addr = private;
    }

    /// Makes the host's `127.0.0.1:port` reachable as `127.0.0.1:port` inside every host.
    pub fn forward_loopback(&self, port: u16) {
        for h in &self.hosts {
            forward(&h.netns, port, self.stop.clone());
        }
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for ns in self.hosts.iter().map(|h| &h.netns).chain(&self.routers) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", ns])
                .output();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .output();
    }
}

/// One node agent per host of `u`, in the mesh (its endpoint the host's underlay
/// address), named `<prefix>-a`, `<prefix>-b`, … and labelled `host=a`, `host=b`, …; the
/// cluster's NATS and registry are forwarded into every host first.
pub fn mesh_agents(
    c: &crate::ContainerdCluster,
    u: &Underlay,
    prefix: &str,
) -> Vec<crate::NodeAgent> {
    let port = |addr: &str| -> u16 { addr.rsplit(':').next().unwrap().parse().unwrap() };
    u.forward_loopback(port(&c.server.url));
    u.forward_loopback(port(&c.registry.host));
    u.hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let letter = char::from(b'a' + i as u8);
            let label = format!("host={letter}");
            c.agent(
                &format!("{prefix}-{letter}"),
                &[
                    "--netns",
                    &h.netns,
                    "--mesh-endpoint",
                    &h.addr,
                    "--labels",
                    &label,
                ],
            )
        })
        .collect()
}

/// Listens on `127.0.0.1:port` inside `netns` and relays each connection to the same
/// address in this (the test's) namespace. A socket belongs to the namespace it was
/// made in: the thread enters `netns` only to make the listener.
fn forward(netns: &str, port: u16, stop: Arc<AtomicBool>) {
    let target = File::open(format!("/run/netns/{netns}")).expect("open netns");
    let home = File::open("/proc/thread-self/ns/net").expect("own netns");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
        move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&target),
            Some(LinkNameSpaceType::Network),
        )
        .expect("enter netns");
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("listen in netns");
        move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&home),
            Some(LinkNameSpaceType::Network),
        )
        .expect("back home");
        listener.set_nonblocking(true).expect("nonblocking");
        tx.send(()).ok();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((inside, _)) => {
                    inside.set_nonblocking(false).ok();
                    if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) {
                        splice(inside, outside);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => return,
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("forwarder listening");
}

/// Copies both ways until either side closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    pump(a, b2);
    pump(b, a2);
}
