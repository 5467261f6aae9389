//! Pure parts of CNI: the network configuration list a node uses, the netconf each plugin
//! gets on stdin, what a plugin result says, and port-mapping conflicts.

use serde_json::{json, Value};
use std::net::Ipv4Addr;
use voiyd_messages::v1::Dns;
use voiyd_messages::v1::PortMapping;

/// CNI spec version voiyd speaks (containernetworking-plugins >= 1.0 support it).
pub const CNI_VERSION: &str = "1.0.0";
/// Name of the network in every netconf (appears in iptables comments).
pub const NETWORK_NAME: &str = "voiyd";
/// Interface name inside each task's namespace.
pub const IFNAME: &str = "eth0";

/// The conflist of a node: a bridge with host-local IPAM on the node's subnet, outbound
/// NAT, published ports (portmap) and forwarding rules (firewall).
pub fn conflist(bridge: &str, subnet: &str, ipam_dir: &str) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            {"type": "firewall", "backend": "iptables"}
        ]
    })
}

/// The netconf of the loopback plugin (brings `lo` up in the namespace).
pub fn loopback() -> Value {
    json!({"cniVersion": CNI_VERSION, "name": "loopback", "type": "loopback"})
}

/// One port mapping in CNI's `runtimeConfig.portMappings` form.
pub fn port_mappings(ports: &[PortMapping]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.target_port,
                    "protocol": protocol(p),
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                m
            })
            .collect(),
    )
}

fn protocol(p: &PortMapping) -> String {
    if p.protocol.is_empty() {
        "tcp".to_string()
    } else {
        p.protocol.to_lowercase()
    }
}

/// The netconf one plugin of a conflist gets: its own object plus the list's version and
/// name, the previous plugin's result, and the runtime config it declares it can take.
pub fn plugin_netconf(list: &Value, index: usize, prev: Option<&Value>, ports: &Value) -> Value {
    let mut conf = list["plugins"][index].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if conf["capabilities"]["portMappings"] == json!(true) {
        conf["runtimeConfig"] = json!({"portMappings": ports});
    }
    conf
}

/// The first IPv4 address of a CNI result, without its prefix length.
pub fn result_ip(result: &Value) -> Option<String> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let addr = ip["address"].as_str()?;
        let host = addr.split('/').next()?;
        host.parse::<Ipv4Addr>().ok().map(|a| a.to_string())
    })
}

/// The message of a CNI error result (`{"code", "msg", "details"}`), if `out` is one.
pub fn error_message(out: &str) -> Option<String> {
    let v: Value = serde_json::from_str(out.trim()).ok()?;
    let msg = v["msg"].as_str()?;
    Some(match v["details"].as_str().filter(|d| !d.is_empty()) {
        Some(d) => format!("{msg}: {d}"),
        None => msg.to_string(),
    })
}

/// A host port one task publishes: (host IP or empty for all, port, protocol).
pub type HostPort = (String, u32, String);

/// The host ports of a set of mappings.
pub fn host_ports(ports: &[PortMapping]) -> Vec<HostPort> {
    ports
        .iter()
        .filter(|p| p.host_port != 0)
        .map(|p| (p.host_ip.clone(), p.host_port, protocol(p)))
        .collect()
}

/// Whether two published host ports collide: same port and protocol, and the same host IP
/// or either one on every address.
pub fn ports_clash(a: &HostPort, b: &HostPort) -> bool {
    a.1 == b.1 && a.2 == b.2 && (a.0.is_empty() || b.0.is_empty() || a.0 == b.0)
}

/// The first of `wanted` that clashes with a port in `taken` (task name, port), if any.
pub fn first_clash<'a>(
    wanted: &'a [HostPort],
    taken: &'a [(String, HostPort)],
) -> Option<(&'a HostPort, &'a str)> {
    wanted.iter().find_map(|w| {
        taken
            .iter()
            .find(|(_, t)| ports_clash(w, t))
            .map(|(task, _)| (w, task.as_str()))
    })
}

/// Describes a host port for messages: `127.0.0.1:8080/tcp` or `8080/tcp`.
pub fn show_port(p: &HostPort) -> String {
    if p.0.is_empty() {
        format!("{}/{}", p.1, p.2)
    } else {
        format!("{}:{}/{}", p.0, p.1, p.2)
    }
}

/// `/etc/hosts` of a task with its own network namespace.
pub fn hosts_file(hostname: &str, ip: Option<&str>) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// `/etc/resolv.conf` of a task in its own namespace: the host's, without loopback name
/// servers (unreachable from the task); Google's public resolvers when none is left.
/// The task's `dns` replaces what it sets (servers, search domains, options), as
/// Docker's `--dns`, `--dns-search` and `--dns-option` do.
///
/// With the node's cluster DNS (`cluster`, its address) and no servers of the task's
/// own, the task asks only the node, which forwards what is not the cluster's to the
/// host's resolvers, loopback ones included; `voiyd` leads the search list.
pub fn resolv_file(host: &str, dns: Option<&Dns>, cluster: Option<std::net::Ipv4Addr>) -> String {
    let dns = dns.cloned().unwrap_or_default();
    if let Some(ip) = cluster.filter(|_| dns.servers.is_empty()) {
        return cluster_resolv_file(host, &dns, ip);
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("nameserver") {
            let addr = addr.trim();
            if addr.starts_with("127.") || addr == "::1" || !dns.servers.is_empty() {
                continue;
            }
            servers += 1;
        }
        let replaced = (!dns.search.is_empty()
            && (t.starts_with("search") || t.starts_with("domain")))
            || (!dns.options.is_empty() && t.starts_with("options"));
        if replaced {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
        servers += 1;
    }
    if !dns.search.is_empty() {
        out.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

fn cluster_resolv_file(host: &str, dns: &Dns, ip: std::net::Ipv4Addr) -> String {
    let words = |keys: &[&str]| -> Vec<String> {
        host.lines()
            .map(str::split_whitespace)
            .filter_map(|mut w| {
                let key = w.next()?;
                keys.contains(&key)
                    .then(|| w.map(str::to_string).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    };
    let mut search = vec![super::CLUSTER_DOMAIN.to_string()];
    search.extend(if dns.search.is_empty() {
        words(&["search", "domain"])
    } else {
        dns.search.clone()
    });
    let options = if dns.options.is_empty() {
        words(&["options"])
    } else {
        dns.options.clone()
    };
    let mut out = format!("nameserver {ip}\nsearch {}\n", search.join(" "));
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pm(ip: &str, host: u32, target: u32, proto: &str) -> PortMapping {
        PortMapping {
            host_ip: ip.into(),
            host_port: host,
            target_port: target,
            protocol: proto.into(),
            ..Default::default()
        }
    }

    #[test]
    fn conflist_chains_bridge_portmap_firewall() {
        let l = conflist("voiyd0", "10.69.3.0/24", "/d/ipam");
        let types: Vec<&str> = l["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "firewall"]);
        assert_eq!(
            l["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.69.3.0/24"
        );
        assert_eq!(l["plugins"][0]["bridge"], "voiyd0");
    }

    #[test]
    fn netconf_carries_prev_result_and_ports_only_where_declared() {
        let l = conflist("b", "10.0.0.0/24", "/x");
        let ports = port_mappings(&[pm("127.0.0.1", 8080, 80, "")]);
        let prev = json!({"ips": [{"address": "10.0.0.2/24"}]});
        let bridge = plugin_netconf(&l, 0, None, &ports);
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());
        assert_eq!(bridge["name"], NETWORK_NAME);
        let portmap = plugin_netconf(&l, 1, Some(&prev), &ports);
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
        );
    }

    #[test]
    fn reads_ip_and_errors() {
        let r = json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.69.0.7/24"}]});
        assert_eq!(result_ip(&r).as_deref(), Some("10.69.0.7"));
        assert_eq!(result_ip(&json!({})), None);
        assert_eq!(
            error_message(r#"{"code":7,"msg":"failed to set bridge","details":"exists"}"#)
                .as_deref(),
            Some("failed to set bridge: exists")
        );
        assert_eq!(error_message("garbage"), None);
    }

    #[test]
    fn port_clashes() {
        let taken = vec![("web".to_string(), ("".to_string(), 8080, "tcp".to_string()))];
        let want = host_ports(&[pm("127.0.0.1", 8080, 80, "TCP")]);
        assert_eq!(first_clash(&want, &taken).map(|(_, t)| t), Some("web"));
        let udp = host_ports(&[pm("", 8080, 80, "udp")]);
        assert!(first_clash(&udp, &taken).is_none());
        let a = ("10.0.0.1".to_string(), 1, "tcp".to_string());
        let b = ("10.0.0.2".to_string(), 1, "tcp".to_string());
        assert!(!ports_clash(&a, &b));
        assert!(host_ports(&[pm("", 0, 80, "")]).is_empty());
        assert_eq!(show_port(&a), "10.0.0.1:1/tcp");
    }

    #[test]
    fn the_gateway_is_the_first_address_of_the_subnet() {
        use super::super::gateway;
        use std::net::Ipv4Addr;
        assert_eq!(gateway("10.69.3.0/24"), Some(Ipv4Addr::new(10, 69, 3, 1)));
        assert_eq!(gateway("10.69.3.77/24"), Some(Ipv4Addr::new(10, 69, 3, 1)));
        assert_eq!(gateway("10.69.3.0"), None);
        assert_eq!(gateway("10.69.3.0/31"), None);
    }

    #[test]
    fn resolv_drops_loopback_servers() {
        let r = resolv_file(
            "search lan\nnameserver 127.0.0.53\nnameserver 192.168.1.1\n",
            None,
            None,
        );
        assert_eq!(r, "search lan\nnameserver 192.168.1.1\n");
        assert!(resolv_file("nameserver 127.0.0.1\n", None, None).contains("8.8.8.8"));
        // A task's own servers, search domains and options replace the host's.
        let own = Dns {
            servers: vec!["10.0.0.2".into()],
            search: vec!["svc.local".into(), "local".into()],
            options: vec!["ndots:2".into()],
        };
        assert_eq!(
            resolv_file(
                "search lan\nnameserver 192.168.1.1\noptions edns0\n",
                Some(&own),
                Some(std::net::Ipv4Addr::new(10, 69, 1, 1))
            ),
            "nameserver 10.0.0.2\nsearch svc.local local\noptions ndots:2\n"
        );
        // With cluster DNS, the task asks the node only, and `voiyd` is searched first.
        let gw = Some(std::net::Ipv4Addr::new(10, 69, 1, 1));
        assert_eq!(
            resolv_file(
                "search lan\nnameserver 127.0.0.53\noptions edns0\n",
                None,
                gw
            ),
            "nameserver 10.69.1.1\nsearch voiyd lan\noptions edns0\n"
        );
        let search_only = Dns {
            search: vec!["corp".into()],
            ..Default::default()
        };
        assert_eq!(
            resolv_file("nameserver 192.168.1.1\n", Some(&search_only), gw),
            "nameserver 10.69.1.1\nsearch voiyd corp\n"
        );
        assert!(hosts_file("web", Some("10.0.0.2")).ends_with("10.0.0.2\tweb\n"));
    }

    proptest! {
        #[test]
        fn clash_is_symmetric(p1 in 1u32..5, p2 in 1u32..5, i1 in 0usize..3, i2 in 0usize..3, u1: bool, u2: bool) {
            let ips = ["", "127.0.0.1", "10.0.0.1"];
            let proto = |u: bool| if u { "udp" } else { "tcp" }.to_string();
            let a = (ips[i1].to_string(), p1, proto(u1));
            let b = (ips[i2].to_string(), p2, proto(u2));
            prop_assert_eq!(ports_clash(&a, &b), ports_clash(&b, &a));
            prop_assert!(ports_clash(&a, &a));
        }
    }
}
