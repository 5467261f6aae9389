//! Cluster DNS on every node: tasks resolve each other's names (`NAME`, `NAME.voiyd`,
//! [`crate::network::CLUSTER_DOMAIN`]) and their sets' names through a server the node
//! runs on its bridge's gateway address ([`crate::network::gateway`]);
//! every other name goes to the host's own resolvers, loopback ones included (the node
//! reaches them from the host's namespace, where a task could not).
//!
//! [`answer`] decides (pure), [`names`] mirrors `voiyd_names`, [`serve`] speaks DNS on
//! UDP and TCP (messages parsed and built by hickory-proto). See docs/dns.md.

pub mod answer;
pub mod names;
pub mod serve;

use std::net::SocketAddr;

/// Time to live of cluster answers, in seconds: short, so that clients that cache
/// follow changes within a second or so.
pub const TTL: u32 = 1;

/// The upstream resolvers in a host's `/etc/resolv.conf` (port 53), loopback included.
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Parses a `--dns-upstream` value: `IP` or `IP:PORT`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("`{s}` is not an IP address or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_keep_loopback_resolvers() {
        let u = upstreams_of("search lan\nnameserver 127.0.0.53\nnameserver 192.168.1.1\n# x\n");
        assert_eq!(
            u,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "192.168.1.1:53".parse().unwrap()
            ]
        );
        assert_eq!(parse_upstream("127.0.0.1:5353").unwrap().port(), 5353);
        assert_eq!(parse_upstream("10.0.0.1").unwrap().port(), 53);
        assert!(parse_upstream("resolver").is_err());
    }
}
