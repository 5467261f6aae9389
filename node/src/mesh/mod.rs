//! The node mesh: an encrypted tunnel from this node to every other node's container
//! subnet, so tasks on different nodes reach each other by their own addresses.
//!
//! WireGuard in userspace (boringtun on a TUN device: hosts without the kernel module
//! work the same), one peer per other node from `voiyd_mesh`, its subnet as the peer's
//! allowed IPs and routed through the device. The key pair is new at every agent start
//! (the servers publish it within a second); peers keep the tunnel alive every 10 s, so
//! a node behind NAT that dials out stays reachable. Traffic between node subnets is not
//! masqueraded: a task sees the real address of a task on another node.
//!
//! The device is configured over WireGuard's text protocol (UAPI) on a socket pair
//! handed to boringtun, so nothing is left in `/var/run/wireguard`; the device goes
//! away with the process, and its routes with it.
//!
//! Two nodes that cannot reach each other directly go through a third that reaches both
//! (the servers pick it: `via`), or, when there is none, through NATS ([`nats_relay`]).

pub mod nats_relay;

use crate::network::Network;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use voiyd_messages::v1::{MeshPeer, MeshStatus};
use voiyd_nats::names;

/// Keepalive interval: keeps NAT mappings open for nodes that only dial out, and shows
/// each peer that the path works.
const KEEPALIVE_SECS: u32 = 10;
/// Tunnel MTU: the usual Ethernet 1500 less WireGuard's 80 bytes of IPv6 headroom.
const MTU: u32 = 1420;
/// A peer not heard from this long after it was first configured is reported unreachable.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(10);
/// A peer heard from (data received directly) this long ago no longer counts as
/// reachable: its heartbeats' datagrams would have arrived since.
const SILENT_AFTER: Duration = Duration::from_secs(25);
/// Comment on every firewall rule the mesh adds, to find them again.
const RULE_COMMENT: &str = "voiyd-mesh";

/// How the node joins the mesh.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The address other nodes send to, `ip:port`.
    pub endpoint: String,
    /// UDP port the device listens on.
    pub port: u16,
    /// Name of the TUN device.
    pub interface: String,
}

/// Why the mesh could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The WireGuard device could not be made (no /dev/net/tun, no CAP_NET_ADMIN).
    #[error("cannot create the mesh device {interface}: {reason} (the agent needs root and /dev/net/tun)")]
    Device {
        /// The device name.
        interface: String,
        /// What failed.
        reason: String,
    },
    /// The device refused a setting.
    #[error("mesh device {0}: {1}")]
    Config(String, String),
    /// A command (`ip`, `iptables`) failed.
    #[error("{0}")]
    Command(String),
}

/// What was last heard from a peer (by its key, so across re-adds).
#[derive(Debug, Clone)]
struct Heard {
    /// When it was first configured.
    first: std::time::Instant,
    /// Its received-bytes counter at the last look.
    rx: u64,
    /// Whether that counter was the NATS relay's (bytes that came directly while
    /// relayed) rather than the device's.
    relayed: bool,
    /// When the counter last grew.
    alive: Option<std::time::Instant>,
}

/// One peer as the device has it.
#[derive(Debug, Clone)]
struct Applied {
    /// As published (without its relays, which are its own business).
    peer: MeshPeer,
    /// Its allowed IPs: its subnet and those it relays to, or only its gateway while it
    /// is itself reached through a relay.
    allowed: Vec<String>,
}

/// The allowed IPs of every other peer, by node, as this node's relays (`via` of its
/// own record) make them: a peer reached through a relay keeps only its gateway address
/// (the direct path is still tried with it), and the relay takes the peer's subnet.
fn allowed_ips(node: &str, peers: &BTreeMap<String, MeshPeer>) -> BTreeMap<String, Vec<String>> {
    let via = peers
        .values()
        .find(|p| p.node == node)
        .map(|p| p.via.clone())
        .unwrap_or_default();
    let others: Vec<&MeshPeer> = peers.values().filter(|p| p.node != node).collect();
    others
        .iter()
        .map(|p| {
            let allowed = if via.contains_key(&p.node) {
                crate::network::gateway(&p.subnet)
                    .map(|g| vec![format!("{g}/32")])
                    .unwrap_or_default()
            } else {
                let mut a = vec![p.subnet.clone()];
                a.extend(
                    others
                        .iter()
                        .filter(|q| via.get(&q.node) == Some(&p.node))
                        .map(|q| q.subnet.clone()),
                );
                a
            };
            (p.node.clone(), allowed)
        })
        .collect()
}

/// The running mesh of this node.
pub struct Mesh {
    cfg: MeshConfig,
    public_key: String,
    uapi: Mutex<BufReader<UnixStream>>,
    _device: Mutex<boringtun::device::DeviceHandle>,
    network: Arc<Network>,
    /// The own subnet the peers were configured with, and the peers, by node.
    applied: Mutex<(String, BTreeMap<String, Applied>)>,
    /// What was heard from each peer, by hex key.
    heard: Mutex<BTreeMap<String, Heard>>,
    /// The agent stopped: peers are no longer added.
    closed: std::sync::atomic::AtomicBool,
    /// Peer subnets routed without the node's own source address (not there yet).
    unsourced: Mutex<std::collections::BTreeSet<String>>,
    /// Relays through NATS, once connected.
    nats: std::sync::OnceLock<Arc<nats_relay::NatsRelay>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("cfg", &self.cfg)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Creates the device with a fresh key pair, listening on the configured port.
    pub fn start(cfg: MeshConfig, network: Arc<Network>) -> Result<Arc<Mesh>, MeshError> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| MeshError::Command("no system randomness".into()))?;
        let secret = boringtun::x25519::StaticSecret::from(seed);
        let public = boringtun::x25519::PublicKey::from(&secret);
        let (ours, theirs) = UnixStream::pair().map_err(|e| MeshError::Device {
            interface: cfg.interface.clone(),
            reason: e.to_string(),
        })?;
        let device = boringtun::device::DeviceHandle::new(
            &cfg.interface,
            boringtun::device::DeviceConfig {
                // One event loop: the UAPI `listen_port` below re-binds the device's
                // sockets from inside the loop, which boringtun does safely only while no
                // other loop thread is polling them.
                n_threads: 1,
                use_connected_socket: false,
                use_multi_queue: false,
                uapi_fd: theirs.into_raw_fd(),
            },
        )
        .map_err(|e| MeshError::Device {
            interface: cfg.interface.clone(),
            reason: format!("{e:?}"),
        })?;
        ours.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mesh = Mesh {
            public_key: base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
            uapi: Mutex::new(BufReader::new(ours)),
            _device: Mutex::new(device),
            network,
            applied: Mutex::new((String::new(), BTreeMap::new())),
            unsourced: Mutex::new(Default::default()),
            heard: Mutex::new(BTreeMap::new()),
            closed: Default::default(),
            nats: Default::default(),
            cfg,
        };
        mesh.set(&[
            ("private_key", hex(secret.to_bytes())),
            ("listen_port", mesh.cfg.port.to_string()),
        ])?;
        let dev = mesh.cfg.interface.clone();
        run("ip", &["link", "set", &dev, "mtu", &MTU.to_string(), "up"])?;
        // Traffic from the tunnel to the node's tasks and back is forwarded (hosts whose
        // FORWARD policy is DROP, as Docker leaves it, would drop it).
        for (i, o) in [(dev.as_str(), "!lo"), ("!lo", dev.as_str())] {
            let mut args = vec!["-w", "-I", "FORWARD"];
            args.extend(flag_if("-i", i));
            args.extend(flag_if("-o", o));
            args.extend(["-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]);
            ensure_rule("filter", &args)?;
        }
        tracing::info!(interface = %dev, port = mesh.cfg.port, endpoint = %mesh.cfg.endpoint, "mesh device up");
        Ok(Arc::new(mesh))
    }

    /// What the heartbeat publishes, with the peers this node has not heard from directly
    /// (every peer is sent a datagram, so that each hears from this node at every heartbeat).
    pub fn status(&self) -> MeshStatus {
        MeshStatus {
            public_key: self.public_key.clone(),
            endpoints: vec![self.cfg.endpoint.clone()],
            unreachable: self.unreachable(),
        }
    }

    /// Peers configured for [`UNREACHABLE_AFTER`] from which nothing came directly in the
    /// last [`SILENT_AFTER`] (through NATS does not count). A datagram to each one's
    /// gateway (a route through the tunnel that always leads to the peer itself, relayed
    /// or not) makes the device try a handshake now, so that a path that opens again is
    /// seen within a heartbeat or two.
    fn unreachable(&self) -> Vec<String> {
        let received = match self.received() {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the mesh device");
                return Vec::new();
            }
        };
        let guard = self.applied.lock().expect("mesh lock");
        let mut heard = self.heard.lock().expect("mesh lock");
        let now = std::time::Instant::now();
        let keys: Vec<String> = guard
            .1
            .values()
            .filter_map(|a| key_hex(&a.peer.public_key))
            .collect();
        heard.retain(|k, _| keys.contains(k));
        let mut out = Vec::new();
        for (node, a) in &guard.1 {
            let Some(key) = key_hex(&a.peer.public_key) else {
                continue;
            };
            let relayed = self.nats.get().and_then(|r| r.direct_rx(node));
            let rx = relayed.unwrap_or_else(|| received.get(&key).copied().unwrap_or(0));
            let h = heard.entry(key).or_insert(Heard {
                first: now,
                rx,
                relayed: relayed.is_some(),
                alive: None,
            });
            // More bytes than last time is a sign of life; fewer, a counter that restarted
            // with the peer (re-added for a relay change), which is no sign either way; a
            // counter of the other kind, neither.
            if h.relayed != relayed.is_some() {
                h.relayed = relayed.is_some();
            } else if rx > h.rx {
                h.alive = Some(now);
            }
            h.rx = rx;
            // Every peer gets a datagram: it is what the peer hears from this node (WireGuard
            // keepalives carry no data, and its byte counters count only data), and one to a
            // peer without a session makes the device try a handshake now.
            if let Some(gw) = crate::network::gateway(&a.peer.subnet) {
                nudge(gw);
            }
            let alive = h.alive.is_some_and(|t| t.elapsed() < SILENT_AFTER);
            if !alive && h.first.elapsed() >= UNREACHABLE_AFTER {
                out.push(node.clone());
            }
        }
        out
    }

    /// Bytes received from every peer, by hex public key.
    fn received(&self) -> Result<BTreeMap<String, u64>, MeshError> {
        let mut conn = self.uapi.lock().expect("uapi lock");
        let fail = |e: std::io::Error| MeshError::Config(self.cfg.interface.clone(), e.to_string());
        conn.get_mut().write_all(b"get=1\n\n").map_err(fail)?;
        let mut out = BTreeMap::new();
        let mut key = String::new();
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).map_err(fail)? == 0 || line.trim().is_empty() {
                break;
            }
            match line.trim().split_once('=') {
                Some(("public_key", k)) => key = k.to_string(),
                Some(("rx_bytes", n)) => {
                    out.insert(key.clone(), n.parse().unwrap_or(0));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// One UAPI `set` command.
    fn set(&self, lines: &[(&str, String)]) -> Result<(), MeshError> {
        let mut text = String::from("set=1\n");
        for (k, v) in lines {
            text.push_str(&format!("{k}={v}\n"));
        }
        text.push('\n');
        let mut conn = self.uapi.lock().expect("uapi lock");
        let fail = |e: std::io::Error| MeshError::Config(self.cfg.interface.clone(), e.to_string());
        conn.get_mut().write_all(text.as_bytes()).map_err(fail)?;
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).map_err(fail)? == 0 {
                break;
            }
            if line.trim().is_empty() {
                break;
            }
            answer.push_str(&line);
        }
        match answer.trim() {
            "errno=0" => Ok(()),
            other => Err(MeshError::Config(
                self.cfg.interface.clone(),
                format!(
                    "refused {:?}: {other}",
                    lines.iter().map(|l| l.0).collect::<Vec<_>>()
                ),
            )),
        }
    }

    /// Makes the device's peers, routes and rules match `peers` (every node of the
    /// mesh, this one included, which is skipped).
    pub fn apply(&self, node: &str, peers: &BTreeMap<String, MeshPeer>) {
        let own = self.network.subnet().unwrap_or_default();
        let mut allowed = allowed_ips(node, peers);
        let relay = self.nats.get();
        let over_nats: Vec<&str> = match relay {
            Some(_) => peers
                .values()
                .find(|p| p.node == node)
                .map(|p| p.over_nats.iter().map(String::as_str).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let wanted: BTreeMap<String, MeshPeer> = peers
            .values()
            .filter(|p| p.node != node && p.subnet != own && !p.subnet.is_empty())
            .map(|p| {
                let mut p = p.clone();
                p.via.clear();
                p.over_nats.clear();
                if let (true, Some(relay)) = (over_nats.contains(&p.node.as_str()), relay) {
                    match relay.endpoint(&p.node, p.endpoints.first().map(String::as_str)) {
                        Ok(addr) => p.endpoints = vec![addr.to_string()],
                        Err(e) => tracing::warn!(peer = %p.node, error = %e, "cannot relay mesh peer through NATS"),
                    }
                }
                (p.node.clone(), p)
            })
            .collect();
        let mut guard = self.applied.lock().expect("mesh lock");
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            // The agent is stopping: an apply already on its way adds nothing back.
            return;
        }
        let (applied_own, applied) = &mut *guard;
        if *applied_own != own {
            // The subnet arrived (or changed): every peer's rules are made again.
            for old in applied.values() {
                self.remove_peer(&old.peer, applied_own);
            }
            applied.clear();
            *applied_own = own.clone();
        }
        for (name, old) in applied.clone() {
            if wanted.get(&name) != Some(&old.peer) {
                self.remove_peer(&old.peer, &own);
                applied.remove(&name);
            }
        }
        for (name, p) in wanted {
            let ips = allowed.remove(&name).unwrap_or_default();
            if let Some(a) = applied.get_mut(&name) {
                if a.allowed != ips {
                    match self.set_allowed(&p, &ips) {
                        Ok(()) => {
                            tracing::info!(peer = %name, allowed = ?ips, "mesh peer re-routed");
                            a.allowed = ips;
                        }
                        Err(e) => {
                            tracing::warn!(peer = %name, error = %e, "cannot re-route mesh peer")
                        }
                    }
                }
                // The bridge (and so the node's own gateway address) may have appeared
                // since the route was made without it.
                if self
                    .unsourced
                    .lock()
                    .expect("mesh lock")
                    .contains(&p.subnet)
                {
                    self.route(&p.subnet, &own);
                }
                continue;
            }
            match self.add_peer(&p, &ips, &own) {
                Ok(()) => {
                    tracing::info!(peer = %name, subnet = %p.subnet, allowed = ?ips, endpoint = ?p.endpoints.first(), "mesh peer added");
                    applied.insert(
                        name,
                        Applied {
                            peer: p,
                            allowed: ips,
                        },
                    );
                }
                Err(e) => tracing::warn!(peer = %name, error = %e, "cannot add mesh peer"),
            }
        }
        if let Some(relay) = relay {
            let keep: Vec<&str> = over_nats
                .iter()
                .copied()
                .filter(|n| applied.contains_key(*n))
                .collect();
            relay.retain(&keep);
        }
    }

    /// Replaces a configured peer's allowed IPs. boringtun 0.7 cannot change a peer in
    /// place (it panics), so the peer is removed and added again: its session restarts.
    fn set_allowed(&self, p: &MeshPeer, ips: &[String]) -> Result<(), MeshError> {
        let key = key_hex(&p.public_key)
            .ok_or_else(|| MeshError::Config(p.node.clone(), "bad public key".into()))?;
        self.set(&[("public_key", key), ("remove", "true".to_string())])?;
        self.set(&peer_lines(p, ips)?)
    }

    fn add_peer(&self, p: &MeshPeer, allowed: &[String], own: &str) -> Result<(), MeshError> {
        self.set(&peer_lines(p, allowed)?)?;
        if !own.is_empty() {
            // Before the CNI masquerade rules: the peer sees the task's own address. And
            // before the route: a connection opened between the two would be masqueraded,
            // its conntrack entry would keep it so for every retry, and the peer drops
            // sources outside this node's subnet (the connection stalled for minutes).
            ensure_rule("nat", &nat_exempt(own, &p.subnet))?;
        }
        self.route(&p.subnet, own);
        Ok(())
    }

    /// Routes `subnet` through the device, with the node's gateway address as the
    /// source of what the node itself sends there (its rejections of isolated traffic,
    /// its own connections): the peer admits only sources of this node's subnet. Before
    /// the bridge holds that address the route goes without it, and is made again later.
    fn route(&self, subnet: &str, own: &str) {
        let dev = self.cfg.interface.as_str();
        let gw = crate::network::gateway(own).map(|g| g.to_string());
        let mut unsourced = self.unsourced.lock().expect("mesh lock");
        if let Some(gw) = &gw {
            if run("ip", &["route", "replace", subnet, "dev", dev, "src", gw]).is_ok() {
                unsourced.remove(subnet);
                return;
            }
        }
        match run("ip", &["route", "replace", subnet, "dev", dev]) {
            Ok(()) => {
                unsourced.insert(subnet.to_string());
            }
            Err(e) => tracing::warn!(%subnet, error = %e, "cannot route through the mesh"),
        }
    }

    fn remove_peer(&self, p: &MeshPeer, own: &str) {
        if let Some(key) = key_hex(&p.public_key) {
            let _ = self.set(&[("public_key", key), ("remove", "true".to_string())]);
        }
        let _ = run(
            "ip",
            &["route", "del", &p.subnet, "dev", &self.cfg.interface],
        );
        if !own.is_empty() {
            let mut args = vec!["-t", "nat"];
            args.extend(nat_exempt(own, &p.subnet));
            args[3] = "-D";
            let _ = run("iptables", &args);
        }
        tracing::info!(peer = %p.node, subnet = %p.subnet, "mesh peer removed");
    }

    /// Removes the peers' routes and every firewall rule the mesh added (the agent
    /// stops; the device goes with the process).
    pub fn remove_rules(&self) {
        let mut guard = self.applied.lock().expect("mesh lock");
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let (own, applied) = &mut *guard;
        for a in applied.values() {
            self.remove_peer(&a.peer, own);
        }
        applied.clear();
        if let Some(relay) = self.nats.get() {
            relay.retain(&[]);
        }
        let dev = self.cfg.interface.clone();
        for (i, o) in [(dev.as_str(), "!lo"), ("!lo", dev.as_str())] {
            let mut args = vec!["-w", "-D", "FORWARD"];
            args.extend(flag_if("-i", i));
            args.extend(flag_if("-o", o));
            args.extend(["-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]);
            let _ = run("iptables", &args);
        }
    }

    /// Follows `voiyd_mesh` until the connection closes, keeping the peers current, and
    /// relays datagrams through NATS for the peers the servers say need it.
    pub async fn follow(self: Arc<Self>, client: async_nats::Client, node: String) {
        use futures::StreamExt;
        use voiyd_nats::watch::{WatchEvent, Watcher};
        let relay = Arc::new(nats_relay::NatsRelay::new(
            client.clone(),
            node.clone(),
            self.cfg.port,
        ));
        // The receiver stops with this loop (its task is aborted when the agent's
        // services are dropped).
        let _receiving = self
            .nats
            .set(relay.clone())
            .is_ok()
            .then(|| Aborting(tokio::spawn(relay.receive())));
        let js = async_nats::jetstream::new(client);
        let mut peers: BTreeMap<String, MeshPeer> = BTreeMap::new();
        let mut current = false;
        let mut events = Watcher::new(js, names::BUCKET_MESH, ">", "mesh peer").typed::<MeshPeer>();
        loop {
            // Apply on every change, and every 5 s (this node may learn its subnet late).
            let next = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
            match next {
                Ok(None) => return,
                Ok(Some(WatchEvent::Put { key, value, .. })) => {
                    peers.insert(key, value);
                }
                Ok(Some(WatchEvent::Delete { key, .. })) => {
                    peers.remove(&key);
                }
                Ok(Some(WatchEvent::Invalid { .. })) => {}
                Ok(Some(WatchEvent::Current)) => current = true,
                // Now and then: the node's own subnet may have arrived since.
                Err(_) => {}
            }
            if current {
                let (this, peers, node) = (self.clone(), peers.clone(), node.clone());
                let _ = tokio::task::spawn_blocking(move || this.apply(&node, &peers)).await;
            }
        }
    }
}

/// A task aborted when this is dropped.
struct Aborting(tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The UAPI lines that add peer `p` with these allowed IPs.
fn peer_lines(p: &MeshPeer, allowed: &[String]) -> Result<Vec<(&'static str, String)>, MeshError> {
    let key = key_hex(&p.public_key)
        .ok_or_else(|| MeshError::Config(p.node.clone(), "bad public key".into()))?;
    let mut lines = vec![
        ("public_key", key),
        ("replace_allowed_ips", "true".to_string()),
    ];
    lines.extend(allowed.iter().map(|ip| ("allowed_ip", ip.clone())));
    lines.push(("persistent_keepalive_interval", KEEPALIVE_SECS.to_string()));
    if let Some(e) = p.endpoints.first() {
        lines.push(("endpoint", e.clone()));
    }
    Ok(lines)
}

/// Sends one byte to `gw` (port 9, discard), through the tunnel to the peer that owns
/// the address: the peer counts it as heard from this node (or, without a session, the
/// device starts a handshake first).
fn nudge(gw: std::net::Ipv4Addr) {
    if let Ok(sock) = std::net::UdpSocket::bind(("0.0.0.0", 0)) {
        let _ = sock.send_to(b"v", (gw, 9));
    }
}

/// `-A` rule arguments (the caller picks the verb) that keep traffic from this node's
/// subnet to a peer's un-masqueraded.
fn nat_exempt<'a>(own: &'a str, peer: &'a str) -> Vec<&'a str> {
    vec![
        "-w",
        "-I",
        "POSTROUTING",
        "-s",
        own,
        "-d",
        peer,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "RETURN",
    ]
}

/// `["-i", "dev"]`, `["!", "-i", "dev"]` for `!dev`.
fn flag_if<'a>(flag: &'a str, dev: &'a str) -> Vec<&'a str> {
    match dev.strip_prefix('!') {
        Some(d) => vec!["!", flag, d],
        None => vec![flag, dev],
    }
}

/// Inserts an iptables rule unless it is there (`-C` first).
fn ensure_rule(table: &str, insert: &[&str]) -> Result<(), MeshError> {
    let mut check: Vec<&str> = vec!["-t", table];
    check.extend(insert.iter().map(|a| if *a == "-I" { "-C" } else { a }));
    if run("iptables", &check).is_ok() {
        return Ok(());
    }
    let mut args: Vec<&str> = vec!["-t", table];
    args.extend_from_slice(insert);
    run("iptables", &args)
}

fn run(program: &str, args: &[&str]) -> Result<(), MeshError> {
    crate::network::command::run(program, args).map_err(MeshError::Command)
}

fn hex(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A base64 WireGuard key as the hex UAPI wants.
fn key_hex(b64: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let arr: [u8; 32] = bytes.try_into().ok()?;
    Some(hex(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_rules_are_spelled_as_wireguard_and_iptables_want() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([0xabu8; 32]);
        assert_eq!(key_hex(&b64).unwrap(), "ab".repeat(32));
        assert!(key_hex("short").is_none());
        assert_eq!(flag_if("-i", "!lo"), ["!", "-i", "lo"]);
        assert_eq!(flag_if("-o", "wg0"), ["-o", "wg0"]);
        let r = nat_exempt("10.69.1.0/24", "10.69.2.0/24");
        assert_eq!(
            r[2..7],
            ["POSTROUTING", "-s", "10.69.1.0/24", "-d", "10.69.2.0/24"]
        );
    }

    #[test]
    fn a_relayed_peer_keeps_only_its_gateway_and_the_relay_takes_its_subnet() {
        let peer = |node: &str, subnet: &str, via: &[(&str, &str)]| MeshPeer {
            node: node.into(),
            subnet: subnet.into(),
            via: via
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..Default::default()
        };
        let peers: BTreeMap<String, MeshPeer> = [
            peer("a", "10.69.1.0/24", &[("b", "c")]),
            peer("b", "10.69.2.0/24", &[("a", "c")]),
            peer("c", "10.69.3.0/24", &[]),
        ]
        .into_iter()
        .map(|p| (p.node.clone(), p))
        .collect();
        let a = allowed_ips("a", &peers);
        assert_eq!(a["b"], ["10.69.2.1/32"]);
        assert_eq!(a["c"], ["10.69.3.0/24", "10.69.2.0/24"]);
        // The relay itself routes plainly.
        let c = allowed_ips("c", &peers);
        assert_eq!(c["a"], ["10.69.1.0/24"]);
        assert_eq!(c["b"], ["10.69.2.0/24"]);
    }
}
