//! The node mesh on real kernel networking: two node agents, each in a network namespace
//! of its own standing in for a host (a veth to an underlay bridge in another namespace),
//! each with its own containerd namespace and bridge. Tasks on different hosts reach
//! each other by address and by name through the userspace WireGuard tunnel; nothing
//! crosses the underlay in clear; a deleted node's peer and routes go everywhere.

use std::time::Duration;
use voiyd_messages::v1::{MeshPeer, Node};
use voiyd_tests::hosts::{in_netns, Underlay};
use voiyd_tests::{eventually, stdout, ContainerdCluster};

/// A capture that stops when dropped, the test failing or not.
struct Capture(std::process::Child);

impl Drop for Capture {
    fn drop(&mut self) {
        // SIGTERM: tcpdump writes out what it holds.
        voiyd_tests::kill(self.0.id(), voiyd_tests::Signal::TERM);
        let _ = self.0.wait();
    }
}

/// The routes of a host for `subnet`.
fn routes(netns: &str, subnet: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "route", "show", subnet])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A busybox httpd `web` on host `web_on` serving `page` at `/` and the client's address
/// at `/cgi-bin/ip`, and an idle `client` on host `client_on`; once both are Running,
/// their addresses (web, client).
async fn web_and_client(
    c: &ContainerdCluster,
    web_on: &str,
    client_on: &str,
    page: &str,
) -> (String, String) {
    let image = c.registry.image("busybox");
    c.apply(&format!(
        "version: task/v1\nmeta: {{name: web}}\nconfig:\n  image: {image}\n  nodeSelector: {{host: {web_on}}}\n  stopGracePeriod: 1s\n  args: [sh, -c, 'mkdir -p /www/cgi-bin && echo {page} > /www/index.html && printf \"#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \\$REMOTE_ADDR\\n\" > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www']\n---\nversion: task/v1\nmeta: {{name: client}}\nconfig:\n  image: {image}\n  nodeSelector: {{host: {client_on}}}\n  stopGracePeriod: 1s\n  args: [sleep, '3600']\n"
    ));
    let ip_of = |name: &'static str| async move {
        voiyd_tests::running_task(&c.api, name)
            .await
            .map(|(_, ip)| ip)
    };
    let web = eventually(Duration::from_secs(60), "web Running", || ip_of("web")).await;
    let client = eventually(Duration::from_secs(60), "client Running", || {
        ip_of("client")
    })
    .await;
    (web, client)
}

/// What task `client` gets from `url` (each attempt at most 3 s).
fn fetch(c: &ContainerdCluster, url: &str) -> String {
    let out = c.voiydctl(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        &format!("timeout 3 wget -q -O - {url}"),
    ]);
    stdout(&out)
}

/// The address web at `web_ip` sees the client connect from.
fn seen_by_web(c: &ContainerdCluster, web_ip: &str) -> String {
    let seen = fetch(c, &format!("http://{web_ip}:8080/cgi-bin/ip"));
    seen.trim()
        .trim_start_matches("[::ffff:")
        .trim_end_matches(']')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn tasks_on_two_hosts_talk_through_the_encrypted_mesh() {
    let c = ContainerdCluster::start_with(&[]).await;
    let u = Underlay::new(2);
    let _agents = voiyd_tests::hosts::mesh_agents(&c, &u, "mesh");
    let (ha, hb) = (u.hosts[0].clone(), u.hosts[1].clone());
    // Both registered with their mesh keys: the servers publish both peers.
    let subnet_of = |name: &'static str| {
        let api = c.api.clone();
        async move {
            let n: Node = api.get(name).await.ok()?;
            let st = n.status?;
            (st.phase == "Ready" && st.mesh.is_some() && !st.subnet.is_empty()).then_some(st.subnet)
        }
    };
    let subnet_a = eventually(Duration::from_secs(30), "mesh-a Ready", || {
        subnet_of("mesh-a")
    })
    .await;
    let subnet_b = eventually(Duration::from_secs(30), "mesh-b Ready", || {
        subnet_of("mesh-b")
    })
    .await;
    assert_ne!(subnet_a, subnet_b);
    let nats = async_nats::connect(&c.server.url).await.unwrap();
    let kv = async_nats::jetstream::new(nats)
        .get_key_value(voiyd_nats::names::BUCKET_MESH)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "both peers in voiyd_mesh",
        || async {
            let a = kv.get("mesh-a").await.ok()??;
            let b = kv.get("mesh-b").await.ok()??;
            let (a, b) = (
                <MeshPeer as prost::Message>::decode(a).ok()?,
                <MeshPeer as prost::Message>::decode(b).ok()?,
            );
            (a.subnet == subnet_a && b.subnet == subnet_b).then_some(())
        },
    )
    .await;
    // Each host routes the other's subnet through its mesh device.
    eventually(
        Duration::from_secs(15),
        "routes through the mesh",
        || async {
            (routes(&ha.netns, &subnet_b).contains("voiyd-mesh")
                && routes(&hb.netns, &subnet_a).contains("voiyd-mesh"))
            .then_some(())
        },
    )
    .await;

    // A web server on b that answers with a known payload and the client's address.
    let payload = format!("mesh-payload-{}", std::process::id());
    let (web_ip, client_ip) = web_and_client(&c, "b", "a", &payload).await;

    // Capture the underlay while the client fetches, by address and by name.
    let pcap = c.dir.path().join("underlay.pcap");
    let capture = Capture(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", u.netns))
            .args(["tcpdump", "-i", "br0", "-U", "-w"])
            .arg(&pcap)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump (scripts/install-deps.sh installs it)"),
    );
    // tcpdump writes the file's header once it captures.
    eventually(Duration::from_secs(10), "capture running", || async {
        (std::fs::metadata(&pcap).ok()?.len() >= 24).then_some(())
    })
    .await;
    let by_ip = eventually(Duration::from_secs(20), "web by address", || async {
        let out = fetch(&c, &format!("http://{web_ip}:8080/"));
        out.contains(&payload).then_some(out)
    })
    .await;
    assert_eq!(by_ip.trim(), payload);
    let by_name = eventually(Duration::from_secs(20), "web by name", || async {
        let out = fetch(&c, "http://web:8080/");
        out.contains(&payload).then_some(out)
    })
    .await;
    assert_eq!(by_name.trim(), payload);
    // Not masqueraded: the server sees the client's own address.
    // (busybox httpd listens on IPv6 and writes IPv4 peers mapped: [::ffff:a.b.c.d])
    assert_eq!(seen_by_web(&c, &web_ip), client_ip, "the address web saw");
    let captured = eventually(
        Duration::from_secs(10),
        "the capture saw the traffic",
        || async {
            let bytes = std::fs::read(&pcap).ok()?;
            (bytes.len() > 2_000).then_some(bytes)
        },
    )
    .await;
    drop(capture);
    assert!(
        !captured
            .windows(payload.len())
            .any(|w| w == payload.as_bytes()),
        "the payload crossed the underlay in clear"
    );

    // A deleted node leaves the mesh: its peer entry and a's route to it go.
    c.ok(&["delete", "node", "mesh-b"]);
    eventually(
        Duration::from_secs(15),
        "mesh-b's peer and route gone",
        || async {
            (kv.get("mesh-b").await.ok()?.is_none()
                && !routes(&ha.netns, &subnet_b).contains("voiyd-mesh"))
            .then_some(())
        },
    )
    .await;
    assert!(in_netns(&ha.netns, "ip", &["link", "show", "voiyd-mesh"]));
}

/// `iptables` in a host's namespace.
fn host_iptables(netns: &str, args: &[&str]) {
    assert!(
        in_netns(netns, "iptables", args),
        "iptables {args:?} in {netns}"
    );
}

/// What keeps hosts a and b apart.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    /// A firewall on a drops UDP to and from b (removed later: they go direct again).
    Firewall,
    /// Each is behind a NAT router of its own, advertising its private address.
    BothBehindNat,
}

/// How a cut pair is expected to be relayed.
#[derive(Clone, Copy)]
enum Relayed {
    /// Through this third node.
    Via(&'static str),
    /// Through NATS.
    Nats,
}

/// Hosts a and b of `hosts` cannot reach each other; a task on a still fetches from one
/// on b, unmasqueraded, through the relay the servers give them; when a firewall was the
/// cut, it goes and they go direct again.
async fn a_cut_pair_talks(hosts: usize, prefix: &'static str, cut: Cut, relayed: Relayed) {
    let c = ContainerdCluster::start_with(&[]).await;
    let mut u = Underlay::new(hosts);
    if cut == Cut::BothBehindNat {
        u.put_behind_nat(0);
        u.put_behind_nat(1);
    }
    let (ha, hb) = (u.hosts[0].clone(), u.hosts[1].clone());
    if cut == Cut::Firewall {
        // No UDP either way between a and b (NATS reaches both through loopback).
        host_iptables(
            &ha.netns,
            &["-I", "INPUT", "-s", &hb.addr, "-p", "udp", "-j", "DROP"],
        );
        host_iptables(
            &ha.netns,
            &["-I", "OUTPUT", "-d", &hb.addr, "-p", "udp", "-j", "DROP"],
        );
    }
    let _agents = voiyd_tests::hosts::mesh_agents(&c, &u, prefix);
    let (node_a, node_b): (&'static str, &'static str) =
        (format!("{prefix}-a").leak(), format!("{prefix}-b").leak());
    let (web_ip, client_ip) = web_and_client(&c, "b", "a", "relayed-marker-7f3a").await;
    // The servers see a and b report each other unreachable and give them a relay.
    let nats = async_nats::connect(&c.server.url).await.unwrap();
    let kv = async_nats::jetstream::new(nats.clone())
        .get_key_value(voiyd_nats::names::BUCKET_MESH)
        .await
        .unwrap();
    let peer = |node: &'static str| {
        let kv = kv.clone();
        async move {
            let p = kv.get(node).await.ok()??;
            <MeshPeer as prost::Message>::decode(p).ok()
        }
    };
    let relayed_to = |p: &MeshPeer, other: &str| match relayed {
        Relayed::Via(r) => p.via.get(other).map(String::as_str) == Some(r),
        Relayed::Nats => p.over_nats.iter().any(|n| n == other) && p.via.is_empty(),
    };
    eventually(Duration::from_secs(40), "a and b relayed", || async {
        let (a, b) = (peer(node_a).await?, peer(node_b).await?);
        (relayed_to(&a, node_b) && relayed_to(&b, node_a)).then_some(())
    })
    .await;
    // Through NATS, only WireGuard's ciphertext: the page never shows in a datagram.
    let mut datagrams = nats
        .subscribe(voiyd_nats::names::node::mesh_relay_in(node_a))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let got = eventually(Duration::from_secs(30), "web through the relay", || async {
        let out = fetch(&c, &format!("http://{web_ip}:8080/"));
        out.contains("relayed-marker").then_some(out)
    })
    .await;
    assert_eq!(got.trim(), "relayed-marker-7f3a");
    // Relayed, not masqueraded either.
    assert_eq!(
        seen_by_web(&c, &web_ip),
        client_ip,
        "the address web saw through the relay"
    );
    if let Relayed::Nats = relayed {
        let mut count = 0;
        while let Ok(Some(m)) = tokio::time::timeout(
            Duration::from_millis(200),
            futures::StreamExt::next(&mut datagrams),
        )
        .await
        {
            count += 1;
            assert!(
                !m.payload.windows(14).any(|w| w == b"relayed-marker"),
                "plaintext in a relayed datagram"
            );
        }
        assert!(count > 0, "nothing came to a through NATS");
    }

    if cut != Cut::Firewall {
        return;
    }
    // The firewall goes: the pair finds its direct path again and the relay is dropped.
    host_iptables(
        &ha.netns,
        &["-D", "INPUT", "-s", &hb.addr, "-p", "udp", "-j", "DROP"],
    );
    host_iptables(
        &ha.netns,
        &["-D", "OUTPUT", "-d", &hb.addr, "-p", "udp", "-j", "DROP"],
    );
    eventually(Duration::from_secs(60), "a and b direct again", || async {
        let (a, b) = (peer(node_a).await?, peer(node_b).await?);
        (a.via.is_empty() && b.via.is_empty() && a.over_nats.is_empty() && b.over_nats.is_empty())
            .then_some(())
    })
    .await;
    let got = eventually(Duration::from_secs(20), "web directly", || async {
        let out = fetch(&c, &format!("http://{web_ip}:8080/"));
        out.contains("relayed-marker").then_some(out)
    })
    .await;
    assert_eq!(got.trim(), "relayed-marker-7f3a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn two_hosts_that_cannot_reach_each_other_talk_through_a_third() {
    a_cut_pair_talks(3, "relay", Cut::Firewall, Relayed::Via("relay-c")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn two_hosts_alone_that_cannot_reach_each_other_talk_through_nats() {
    a_cut_pair_talks(2, "natsrelay", Cut::Firewall, Relayed::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn two_hosts_each_behind_its_own_nat_talk_through_nats() {
    a_cut_pair_talks(2, "bothnat", Cut::BothBehindNat, Relayed::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + containerd: scripts/test.sh runs it"]
async fn a_host_behind_nat_is_reached_through_the_tunnel_it_dials() {
    let c = ContainerdCluster::start_with(&[]).await;
    let mut u = Underlay::new(2);
    // Host a behind a masquerading router: its agent advertises its private address,
    // which b cannot reach; a's datagrams reach b from the router's address and port.
    u.put_behind_nat(0);
    let (ha, hb) = (u.hosts[0].clone(), u.hosts[1].clone());
    assert!(
        !in_netns(&hb.netns, "ping", &["-c", "1", "-W", "1", &ha.addr]),
        "b reaches a's private address: a is not behind the NAT"
    );
    let _agents = voiyd_tests::hosts::mesh_agents(&c, &u, "nat");
    let (web_ip, client_ip) = web_and_client(&c, "a", "b", "behind-nat").await;
    // b reaches the task behind a's NAT, over the tunnel a opened.
    let got = eventually(Duration::from_secs(30), "web behind the NAT", || async {
        let out = fetch(&c, &format!("http://{web_ip}:8080/"));
        out.contains("behind-nat").then_some(out)
    })
    .await;
    assert_eq!(got.trim(), "behind-nat");
    // The NAT rewrote the tunnel's datagrams, not the tasks' packets inside them.
    assert_eq!(
        seen_by_web(&c, &web_ip),
        client_ip,
        "the address web saw behind the NAT"
    );
    // Directly, not relayed: with two nodes only NATS could relay, and none is needed.
    let nats = async_nats::connect(&c.server.url).await.unwrap();
    let kv = async_nats::jetstream::new(nats)
        .get_key_value(voiyd_nats::names::BUCKET_MESH)
        .await
        .unwrap();
    for node in ["nat-a", "nat-b"] {
        let p = kv.get(node).await.unwrap().expect("in voiyd_mesh");
        let p = <MeshPeer as prost::Message>::decode(p).unwrap();
        assert!(p.via.is_empty(), "{node}: {:?}", p.via);
        assert!(p.over_nats.is_empty(), "{node}: {:?}", p.over_nats);
    }
}
