//! Set services on this node: virtual IPs spread across ready replicas, published ports
//! of a set answered on every node of the mesh, and isolated sets closed to tasks not
//! allowed in. Made from `voiyd_services` as iptables rules in chains of this agent's own
//! (named after its bridge, so agents sharing a host never touch each other's).
//!
//! The decision is [`render`], a pure function from the records to an `iptables-restore`
//! script; [`Traffic::apply`] loads it (`--noflush`: only these chains are replaced, in
//! one transaction) and makes sure the built-in chains jump to them. Balancing is
//! per connection, as kube-proxy's iptables mode: the i-th of n backends is chosen with
//! probability 1/(n-i) among those left, conntrack keeps a connection on its backend.

use crate::network::Network;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use voiyd_messages::v1::ServiceRecord;

/// What the rules depend on besides the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The node's bridge (names the chains; the tasks' side).
    pub bridge: String,
    /// The node's container subnet, once known.
    pub subnet: Option<String>,
    /// The mesh device, when the node is in a mesh (published ports of sets are then
    /// answered on this node too, and may lead to replicas elsewhere).
    pub mesh: Option<String>,
}

/// The chains of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chains {
    /// nat: virtual IPs (from PREROUTING on the bridge, and from OUTPUT).
    pub vips: String,
    /// nat: published ports of sets (from PREROUTING).
    pub ports: String,
    /// nat: source rewriting after those (from POSTROUTING).
    pub post: String,
    /// filter: isolation (from FORWARD).
    pub policy: String,
}

impl Chains {
    /// The chains of the agent with this bridge (at most 27 characters).
    pub fn of(bridge: &str) -> Chains {
        Chains {
            vips: format!("VOIYD-SVC-{bridge}"),
            ports: format!("VOIYD-PORTS-{bridge}"),
            post: format!("VOIYD-POST-{bridge}"),
            policy: format!("VOIYD-POL-{bridge}"),
        }
    }

    /// `(table, built-in chain, match arguments, our chain)` of every jump.
    fn jumps(&self, bridge: &str) -> Vec<(&'static str, &'static str, Vec<String>, String)> {
        vec![
            (
                "nat",
                "PREROUTING",
                vec!["-i".into(), bridge.to_string()],
                self.vips.clone(),
            ),
            ("nat", "OUTPUT", vec![], self.vips.clone()),
            ("nat", "PREROUTING", vec![], self.ports.clone()),
            ("nat", "POSTROUTING", vec![], self.post.clone()),
            ("filter", "FORWARD", vec![], self.policy.clone()),
        ]
    }
}

/// An address inside an IPv4 network written `a.b.c.d/len`.
fn contains(subnet: &str, ip: &str) -> bool {
    let parse = || -> Option<bool> {
        let (net, len) = subnet.split_once('/')?;
        let net: Ipv4Addr = net.parse().ok()?;
        let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Some(u32::from(ip) & mask == u32::from(net) & mask)
    };
    parse().unwrap_or(false)
}

/// Rules choosing one of `backends` for a match: the i-th of n with probability
/// 1/(n-i), the last unconditionally. `to` maps a backend to the DNAT target.
fn spread(
    out: &mut String,
    chain: &str,
    matches: &str,
    backends: &[String],
    to: impl Fn(&str) -> String,
) {
    let n = backends.len();
    for (i, b) in backends.iter().enumerate() {
        let pick = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "-A {chain} {matches}{pick} -j DNAT --to-destination {}",
            to(b)
        );
    }
}

/// The `iptables-restore --noflush` script that makes this agent's chains say what
/// `records` imply for this node.
pub fn render(scope: &Scope, records: &BTreeMap<String, ServiceRecord>) -> String {
    let c = Chains::of(&scope.bridge);
    let mut nat = String::new();
    let mut filter = String::new();
    // Backends a connection from here can reach: any with the mesh, local ones without.
    let reachable = |ip: &&String| {
        scope.mesh.is_some() || scope.subnet.as_deref().is_some_and(|s| contains(s, ip))
    };
    for r in records.values() {
        let backends: Vec<String> = r.backends.iter().filter(reachable).cloned().collect();
        if !r.vip.is_empty() && !backends.is_empty() {
            let m = format!("-d {}/32 -m comment --comment \"set {}\"", r.vip, r.set);
            spread(&mut nat, &c.vips, &m, &backends, |b| b.to_string());
        }
        if scope.mesh.is_some() && !backends.is_empty() {
            for p in r.ports.iter().filter(|p| p.host_port > 0) {
                let proto = if p.protocol.eq_ignore_ascii_case("udp") {
                    "udp"
                } else {
                    "tcp"
                };
                let target = if p.target_port > 0 {
                    p.target_port
                } else {
                    p.host_port
                };
                let m = format!(
                    "-p {proto} -m {proto} --dport {} -m addrtype --dst-type LOCAL -m comment --comment \"set {}\"",
                    p.host_port, r.set
                );
                spread(&mut nat, &c.ports, &m, &backends, |b| {
                    format!("{b}:{target}")
                });
            }
        }
        if r.isolated {
            let Some(subnet) = scope.subnet.as_deref() else {
                continue;
            };
            for m in r.members.iter().filter(|m| contains(subnet, m)) {
                let head = format!(
                    "-A {} -o {} -d {m}/32 -m conntrack --ctstate NEW",
                    c.policy, scope.bridge
                );
                for a in &r.allowed {
                    let _ = writeln!(filter, "{head} -s {a}/32 -j RETURN");
                }
                let _ = writeln!(
                    filter,
                    "{head} -m comment --comment \"set {} is isolated\" -j REJECT",
                    r.set
                );
            }
        }
    }
    if let Some(subnet) = scope.subnet.as_deref() {
        // A task that reached a replica on its own bridge through a virtual IP gets the
        // answer through the node (hosts without br_netfilter would bridge it directly).
        let _ = writeln!(
            nat,
            "-A {} -s {subnet} -d {subnet} -m conntrack --ctstate DNAT -j MASQUERADE",
            c.post
        );
        if let (Some(dev), Some(gw)) = (&scope.mesh, crate::network::gateway(subnet)) {
            // Connections from outside the node's subnet (a published port, the host
            // itself) that go to a replica on another node leave with the node's own
            // gateway address, which the other node routes back through the mesh.
            let _ = writeln!(
                nat,
                "-A {} -o {dev} ! -s {subnet} -m conntrack --ctstate DNAT -j SNAT --to-source {gw}",
                c.post
            );
        }
    }
    format!(
        "*nat\n:{} - [0:0]\n:{} - [0:0]\n:{} - [0:0]\n{nat}COMMIT\n*filter\n:{} - [0:0]\n{filter}COMMIT\n",
        c.vips, c.ports, c.post, c.policy
    )
}

/// This agent's service rules.
#[derive(Debug)]
pub struct Traffic {
    network: Arc<Network>,
    mesh: Option<String>,
    /// The script last loaded (nothing is reloaded while it does not change).
    loaded: Mutex<Option<String>>,
    /// The agent stopped: nothing is loaded any more.
    closed: std::sync::atomic::AtomicBool,
}

impl Traffic {
    /// Rules for the node with this network, in a mesh through device `mesh`.
    /// Rules a crashed predecessor with the same bridge left are removed first.
    pub fn new(network: Arc<Network>, mesh: Option<String>) -> Arc<Traffic> {
        let t = Arc::new(Traffic {
            network,
            mesh,
            loaded: Mutex::new(None),
            closed: Default::default(),
        });
        t.clear();
        t
    }

    fn scope(&self) -> Scope {
        Scope {
            bridge: self.network.bridge().to_string(),
            subnet: self.network.subnet(),
            mesh: self.mesh.clone(),
        }
    }

    /// Loads the rules `records` imply, unless they are loaded already.
    pub fn apply(&self, records: &BTreeMap<String, ServiceRecord>) {
        let scope = self.scope();
        let mut loaded = self.loaded.lock().expect("traffic lock");
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if records.is_empty() {
            // No set needs a rule: no chain, no jump (most clusters, most tests).
            if loaded.take().is_some() {
                self.clear();
            }
            return;
        }
        let script = render(&scope, records);
        if loaded.as_deref() != Some(script.as_str()) {
            if records.values().any(|r| r.isolated) {
                bridge_netfilter();
            }
            if let Err(e) = restore(&script) {
                tracing::warn!(error = %e, "cannot load the service rules");
                return;
            }
            tracing::debug!(services = records.len(), "service rules loaded");
            *loaded = Some(script);
        }
        // Every time: CNI plugins put their own jumps first when a node's first task
        // starts, and theirs accept a task's traffic before isolation could refuse it.
        if let Err(e) = ensure_jumps(&scope) {
            tracing::warn!(error = %e, "cannot put the service rules first");
        }
    }

    /// Takes this agent's chains and the jumps to them away (the agent stops).
    ///
    /// Waits for a load in progress and stops later ones: a load already on its way when
    /// the agent stops would otherwise bring the rules back.
    pub fn remove(&self) {
        let mut loaded = self.loaded.lock().expect("traffic lock");
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.clear();
        *loaded = None;
    }

    /// Takes the chains and the jumps away (the caller holds the `loaded` lock or is
    /// alone).
    fn clear(&self) {
        let scope = self.scope();
        let c = Chains::of(&scope.bridge);
        for (table, builtin, matches, chain) in c.jumps(&scope.bridge) {
            let mut args: Vec<String> = vec![
                "-w".into(),
                "-t".into(),
                table.into(),
                "-D".into(),
                builtin.into(),
            ];
            args.extend(matches);
            args.extend(["-j".into(), chain]);
            let _ = iptables(&args);
        }
        for (table, chain) in [
            ("nat", &c.vips),
            ("nat", &c.ports),
            ("nat", &c.post),
            ("filter", &c.policy),
        ] {
            for verb in ["-F", "-X"] {
                let _ = iptables(&[
                    "-w".into(),
                    "-t".into(),
                    table.into(),
                    verb.into(),
                    chain.clone(),
                ]);
            }
        }
    }

    /// Follows `voiyd_services` until the connection closes, keeping the rules current.
    pub async fn follow(self: Arc<Self>, js: async_nats::jetstream::Context) {
        use futures::StreamExt;
        use voiyd_nats::watch::{WatchEvent, Watcher};
        let mut records: BTreeMap<String, ServiceRecord> = BTreeMap::new();
        let mut current = false;
        let mut events = Watcher::new(js, voiyd_nats::names::BUCKET_SERVICES, ">", "service")
            .typed::<ServiceRecord>();
        loop {
            // Apply on every change, and every 5 s (the subnet may arrive late; rules
            // someone flushed come back).
            let next = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
            match next {
                Ok(None) => return,
                Ok(Some(WatchEvent::Put { key, value, .. })) => {
                    records.insert(key, value);
                }
                Ok(Some(WatchEvent::Delete { key, .. })) => {
                    records.remove(&key);
                }
                Ok(Some(WatchEvent::Invalid { key, error, .. })) => {
                    tracing::warn!(%key, %error, "undecodable service record ignored");
                }
                Ok(Some(WatchEvent::Current)) => current = true,
                Err(_) => {
                    // Reload even if unchanged: a flushed table is put back.
                    *self.loaded.lock().expect("traffic lock") = None;
                }
            }
            if current {
                let (this, records) = (self.clone(), records.clone());
                let _ = tokio::task::spawn_blocking(move || this.apply(&records)).await;
            }
        }
    }
}

/// Bridged traffic between tasks of one node passes iptables only with br_netfilter;
/// isolation needs it. Loaded once, if missing.
fn bridge_netfilter() {
    let knob = std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !knob.exists() {
        let _ = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status();
    }
    if std::fs::read_to_string(knob)
        .map(|v| v.trim() != "1")
        .unwrap_or(true)
    {
        if let Err(e) = std::fs::write(knob, "1") {
            tracing::warn!(error = %e, "cannot turn on br_netfilter: isolation covers only tasks of other nodes");
        }
    }
}

/// Whether the rules `listed` (`iptables -S CHAIN`) hold `wanted` in that order before
/// any rule other than a jump to a voiyd chain (other agents on this host keep theirs
/// on top too: each only matches its own bridge and addresses, so they never fight).
fn leads(listed: &str, wanted: &[String]) -> bool {
    let mut want = wanted.iter().peekable();
    for line in listed.lines().filter(|l| l.starts_with("-A ")) {
        let Some(next) = want.peek() else {
            return true;
        };
        if line == next.as_str() {
            want.next();
        } else if !line.contains(" -j VOIYD-") {
            return false;
        }
    }
    want.peek().is_none()
}

/// Jumps from the built-in chains to ours, ahead of every other rule of each: when they
/// are not, they are taken out and put back on top.
fn ensure_jumps(scope: &Scope) -> Result<(), String> {
    let jumps = Chains::of(&scope.bridge).jumps(&scope.bridge);
    let mut builtins: Vec<(&str, &str)> = jumps.iter().map(|(t, b, _, _)| (*t, *b)).collect();
    builtins.sort();
    builtins.dedup();
    for (table, builtin) in builtins {
        let ours: Vec<Vec<String>> = jumps
            .iter()
            .filter(|(t, b, _, _)| *t == table && *b == builtin)
            .map(|(_, _, m, chain)| {
                let mut spec = m.clone();
                spec.extend(["-j".into(), chain.clone()]);
                spec
            })
            .collect();
        let listed = std::process::Command::new("iptables")
            .args(["-w", "-t", table, "-S", builtin])
            .output()
            .map_err(|e| format!("iptables: {e}"))?;
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        let wanted: Vec<String> = ours
            .iter()
            .map(|spec| format!("-A {builtin} {}", spec.join(" ")))
            .collect();
        if leads(&listed, &wanted) {
            continue;
        }
        let cmd = |verb: &str, pos: Option<&str>, spec: &[String]| {
            let mut a: Vec<String> = vec![
                "-w".into(),
                "-t".into(),
                table.into(),
                verb.into(),
                builtin.into(),
            ];
            a.extend(pos.map(str::to_string));
            a.extend(spec.iter().cloned());
            a
        };
        for spec in &ours {
            while iptables(&cmd("-D", None, spec)).is_ok() {}
        }
        for spec in ours.iter().rev() {
            iptables(&cmd("-I", Some("1"), spec))?;
        }
    }
    Ok(())
}

fn restore(script: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| format!("iptables-restore: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn iptables(args: &[String]) -> Result<(), String> {
    crate::network::command::run("iptables", args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::PortMapping;

    fn scope(mesh: bool) -> Scope {
        Scope {
            bridge: "vb1".into(),
            subnet: Some("10.69.1.0/24".into()),
            mesh: mesh.then(|| "voiyd-mesh".to_string()),
        }
    }

    fn web() -> BTreeMap<String, ServiceRecord> {
        [(
            "web".to_string(),
            ServiceRecord {
                set: "web".into(),
                vip: "10.68.0.1".into(),
                backends: vec!["10.69.1.5".into(), "10.69.2.5".into(), "10.69.3.5".into()],
                ports: vec![PortMapping {
                    host_port: 8080,
                    target_port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )]
        .into()
    }

    #[test]
    fn a_virtual_ip_spreads_evenly_over_every_backend() {
        let s = render(&scope(true), &web());
        let vip: Vec<&str> = s
            .lines()
            .filter(|l| l.contains("-d 10.68.0.1/32"))
            .collect();
        assert_eq!(vip.len(), 3, "{s}");
        assert!(vip[0].contains("--probability 0.3333333333") && vip[0].ends_with("10.69.1.5"));
        assert!(vip[1].contains("--probability 0.5000000000") && vip[1].ends_with("10.69.2.5"));
        assert!(!vip[2].contains("statistic") && vip[2].ends_with("10.69.3.5"));
        assert!(vip.iter().all(|l| l.starts_with("-A VOIYD-SVC-vb1 ")));
        // Published ports on this node lead to every replica, on their target port.
        let ports: Vec<&str> = s.lines().filter(|l| l.contains("--dport 8080")).collect();
        assert_eq!(ports.len(), 3);
        assert!(ports[2].ends_with("--to-destination 10.69.3.5:80"), "{s}");
        assert!(s.contains("-o voiyd-mesh ! -s 10.69.1.0/24 -m conntrack --ctstate DNAT -j SNAT --to-source 10.69.1.1"));
        assert!(s.starts_with("*nat\n:VOIYD-SVC-vb1 - [0:0]\n"));
        assert!(s.ends_with("*filter\n:VOIYD-POL-vb1 - [0:0]\nCOMMIT\n"));
    }

    #[test]
    fn without_the_mesh_only_local_replicas_are_reached_and_ports_stay_local() {
        let s = render(&scope(false), &web());
        let vip: Vec<&str> = s
            .lines()
            .filter(|l| l.contains("-d 10.68.0.1/32"))
            .collect();
        assert_eq!(vip.len(), 1);
        assert!(vip[0].ends_with("--to-destination 10.69.1.5") && !vip[0].contains("statistic"));
        assert!(!s.contains("--dport"));
        assert!(!s.contains("SNAT"));
    }

    #[test]
    fn isolation_admits_the_allowed_and_rejects_the_rest_for_local_members_only() {
        let records = [(
            "db".to_string(),
            ServiceRecord {
                set: "db".into(),
                isolated: true,
                members: vec!["10.69.1.9".into(), "10.69.2.9".into()],
                allowed: vec!["10.69.1.9".into(), "10.69.3.3".into()],
                ..Default::default()
            },
        )]
        .into();
        let s = render(&scope(true), &records);
        let rules: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("-A VOIYD-POL-vb1"))
            .collect();
        assert_eq!(rules.len(), 3, "{s}");
        assert!(
            rules[0].contains("-o vb1 -d 10.69.1.9/32")
                && rules[0].ends_with("-s 10.69.1.9/32 -j RETURN")
        );
        assert!(rules[1].ends_with("-s 10.69.3.3/32 -j RETURN"));
        assert!(rules[2].ends_with("-j REJECT"));
        // Without a subnet, no member is known to be local.
        let none = render(
            &Scope {
                subnet: None,
                ..scope(true)
            },
            &records,
        );
        assert!(!none.contains("-A VOIYD-POL"));
    }

    #[test]
    fn our_jumps_must_lead_but_may_follow_other_agents() {
        let wanted = ["-A FORWARD -j VOIYD-POL-vb1".to_string()];
        let listed = "-P FORWARD ACCEPT\n-A FORWARD -j VOIYD-POL-vb9\n-A FORWARD -j VOIYD-POL-vb1\n-A FORWARD -j CNI-FORWARD\n";
        assert!(leads(listed, &wanted));
        let listed = "-P FORWARD ACCEPT\n-A FORWARD -j CNI-FORWARD\n-A FORWARD -j VOIYD-POL-vb1\n";
        assert!(!leads(listed, &wanted));
        assert!(!leads("-P FORWARD ACCEPT\n", &wanted));
    }

    #[test]
    fn chain_names_fit_iptables() {
        let c = Chains::of("abcdefghijklmno");
        for n in [c.vips, c.ports, c.post, c.policy] {
            assert!(n.len() <= 28, "{n}");
        }
        assert!(contains("10.69.1.0/24", "10.69.1.200"));
        assert!(!contains("10.69.1.0/24", "10.69.2.1"));
    }
}
