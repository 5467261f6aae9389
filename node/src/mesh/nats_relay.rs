//! The mesh's last resort: a pair of nodes that cannot reach each other directly, and
//! that no third node reaches both, sends its WireGuard datagrams over NATS.
//!
//! For each such peer the agent binds a UDP socket (the peer's "proxy") and gives the
//! device `127.0.0.1:<its port>` as the peer's endpoint. What the device sends there is
//! published on `voiyd.node.<peer>.mesh.<self>`; what arrives on
//! `voiyd.node.<self>.mesh.<peer>` is handed to the device from the same socket, so the
//! device never roams away from it. The datagrams stay WireGuard's: NATS carries only
//! ciphertext.
//!
//! The direct path is tried all along: every datagram also goes straight to the peer's
//! proxy (its port comes with each relayed datagram, [`MESH_PORT_HEADER`]), and the
//! datagrams that arrive that way are counted. When they arrive, the node stops reporting
//! the peer unreachable and the servers drop the relay. WireGuard's replay window drops
//! whichever copy comes second.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use voiyd_nats::names::node::{self, MESH_PORT_HEADER};

/// Largest datagram relayed (WireGuard's are at most the tunnel MTU plus 32 bytes).
const MAX_DATAGRAM: usize = 65_535;

/// One peer reached through NATS.
struct Proxy {
    sock: Arc<tokio::net::UdpSocket>,
    /// Where the device sends for this peer.
    addr: SocketAddr,
    /// The peer's address as it advertises it (the direct path's target).
    peer_ip: Option<IpAddr>,
    /// The peer's proxy port, once a relayed datagram told it (0 = not yet).
    peer_port: Arc<AtomicU16>,
    /// Bytes that arrived directly from the network rather than through NATS.
    direct_rx: Arc<AtomicU64>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// The NATS relays of one node.
pub struct NatsRelay {
    client: async_nats::Client,
    node: String,
    /// The device's own socket, as the proxies reach it.
    device: SocketAddr,
    runtime: tokio::runtime::Handle,
    proxies: Arc<Mutex<BTreeMap<String, Proxy>>>,
}

impl NatsRelay {
    /// Relays for `node`, whose mesh device listens on `device_port`. Must be called
    /// inside the runtime that will carry the datagrams.
    pub fn new(client: async_nats::Client, node: String, device_port: u16) -> NatsRelay {
        NatsRelay {
            client,
            node,
            device: SocketAddr::from((Ipv4Addr::LOCALHOST, device_port)),
            runtime: tokio::runtime::Handle::current(),
            proxies: Default::default(),
        }
    }

    /// Hands relayed datagrams to the device until the subscription ends.
    pub async fn receive(self: Arc<Self>) {
        use futures::StreamExt;
        let subject = node::mesh_relay_in(&self.node);
        let mut sub = match self.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%subject, error = %e, "cannot receive relayed mesh datagrams");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(from) = node::mesh_relay_sender(&msg.subject) else {
                continue;
            };
            let port = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(MESH_PORT_HEADER))
                .and_then(|v| v.as_str().parse::<u16>().ok());
            // A datagram from a peer this node does not relay (yet) is dropped: the
            // device would roam to whatever socket handed it over.
            let sock = {
                let proxies = self.proxies.lock().expect("relay lock");
                let Some(p) = proxies.get(&from) else {
                    continue;
                };
                if let Some(port) = port {
                    p.peer_port.store(port, Ordering::Relaxed);
                }
                p.sock.clone()
            };
            let _ = sock.send_to(&msg.payload, self.device).await;
        }
    }

    /// The device endpoint for `peer`, relayed through NATS; the proxy is made at the
    /// first call (and again when the peer's address changes).
    pub fn endpoint(&self, peer: &str, advertised: Option<&str>) -> std::io::Result<SocketAddr> {
        let peer_ip = advertised
            .and_then(|e| e.parse::<SocketAddr>().ok())
            .map(|a| a.ip());
        let mut proxies = self.proxies.lock().expect("relay lock");
        if let Some(p) = proxies.get(peer) {
            if p.peer_ip == peer_ip {
                return Ok(p.addr);
            }
        }
        let std_sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        std_sock.set_nonblocking(true)?;
        let port = std_sock.local_addr()?.port();
        let sock = {
            let _in_runtime = self.runtime.enter();
            Arc::new(tokio::net::UdpSocket::from_std(std_sock)?)
        };
        let (peer_port, direct_rx) = (Arc::new(AtomicU16::new(0)), Arc::new(AtomicU64::new(0)));
        let pump = self.runtime.spawn(pump(Pump {
            sock: sock.clone(),
            client: self.client.clone(),
            subject: node::mesh_relay(peer, &self.node).into(),
            device: self.device,
            peer_ip,
            peer_port: peer_port.clone(),
            direct_rx: direct_rx.clone(),
        }));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        tracing::info!(%peer, %addr, "mesh peer relayed through NATS");
        proxies.insert(
            peer.to_string(),
            Proxy {
                sock,
                addr,
                peer_ip,
                peer_port,
                direct_rx,
                pump,
            },
        );
        Ok(addr)
    }

    /// Bytes that arrived from `peer` directly while it was relayed; none = not relayed.
    pub fn direct_rx(&self, peer: &str) -> Option<u64> {
        let proxies = self.proxies.lock().expect("relay lock");
        proxies
            .get(peer)
            .map(|p| p.direct_rx.load(Ordering::Relaxed))
    }

    /// Drops the proxies of every peer not in `keep`.
    pub fn retain(&self, keep: &[&str]) {
        let mut proxies = self.proxies.lock().expect("relay lock");
        proxies.retain(|peer, _| {
            let stay = keep.contains(&peer.as_str());
            if !stay {
                tracing::info!(%peer, "mesh peer no longer relayed through NATS");
            }
            stay
        });
    }
}

/// What one proxy's pump needs.
struct Pump {
    sock: Arc<tokio::net::UdpSocket>,
    client: async_nats::Client,
    subject: async_nats::Subject,
    device: SocketAddr,
    peer_ip: Option<IpAddr>,
    peer_port: Arc<AtomicU16>,
    direct_rx: Arc<AtomicU64>,
}

/// Moves datagrams of one proxy: from the device to NATS (and straight to the peer's
/// proxy, to try the direct path), from the network to the device.
async fn pump(p: Pump) {
    let own_port = p
        .sock
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(0)
        .to_string();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match p.sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "mesh relay socket");
                continue;
            }
        };
        let datagram = &buf[..n];
        if from == p.device {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MESH_PORT_HEADER, own_port.as_str());
            if let Err(e) = p
                .client
                .publish_with_headers(p.subject.clone(), headers, datagram.to_vec().into())
                .await
            {
                tracing::debug!(error = %e, "cannot relay a mesh datagram");
            }
            let port = p.peer_port.load(Ordering::Relaxed);
            if let (Some(ip), true) = (p.peer_ip, port != 0) {
                let _ = p.sock.send_to(datagram, (ip, port)).await;
            }
        } else {
            // Straight from the network: the direct path works (in this direction).
            p.direct_rx.fetch_add(n as u64, Ordering::Relaxed);
            let _ = p.sock.send_to(datagram, p.device).await;
        }
    }
}
