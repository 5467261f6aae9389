//! The node mesh as the servers publish it in `voiyd_mesh`: one peer per registered
//! node that reported a mesh key, an endpoint and a container subnet.

use std::collections::BTreeMap;
use voiyd_messages::v1::{MeshPeer, MeshStatus, NodeStatus};

/// The peers the nodes' statuses describe, by node name (key in `voiyd_mesh`), each with
/// the relays it uses ([`relays`]).
pub fn peers(nodes: impl IntoIterator<Item = (String, NodeStatus)>) -> BTreeMap<String, MeshPeer> {
    let members: Vec<(String, NodeStatus, MeshStatus)> = nodes
        .into_iter()
        .filter_map(|(node, st)| {
            let mesh = st.mesh.clone()?;
            if mesh.public_key.is_empty() || mesh.endpoints.is_empty() || st.subnet.is_empty() {
                return None;
            }
            Some((node, st, mesh))
        })
        .collect();
    let mut via = relays(
        members
            .iter()
            .map(|(node, _, mesh)| (node.as_str(), mesh.unreachable.as_slice())),
    );
    members
        .into_iter()
        .map(|(node, st, mesh)| {
            let mut peer_via = BTreeMap::new();
            let mut over_nats = Vec::new();
            for (other, relay) in via.remove(&node).unwrap_or_default() {
                match relay {
                    Relay::Node(r) => {
                        peer_via.insert(other, r);
                    }
                    Relay::Nats => over_nats.push(other),
                }
            }
            (
                voiyd_nats::names::spec_key(&node),
                MeshPeer {
                    via: peer_via,
                    over_nats,
                    node,
                    subnet: st.subnet,
                    public_key: mesh.public_key,
                    endpoints: mesh.endpoints,
                },
            )
        })
        .collect()
}

/// How one end of a cut pair reaches the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// Through this third node of the mesh.
    Node(String),
    /// Through NATS: no third node reaches both.
    Nats,
}

/// Which relay serves which pair: two members of which either reports the other
/// unreachable go through the first member (by name) that both reach and that reaches
/// both, in both directions (the relay forwards each way, and each end must accept the
/// other's subnet from it). A pair no third member serves goes through NATS, the last
/// resort. Result: node -> (other node -> relay).
pub fn relays<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> BTreeMap<String, BTreeMap<String, Relay>> {
    let members: BTreeMap<&str, &[String]> = members.into_iter().collect();
    let cut = |a: &str, b: &str| {
        members.get(a).is_some_and(|u| u.iter().any(|n| n == b))
            || members.get(b).is_some_and(|u| u.iter().any(|n| n == a))
    };
    let mut out: BTreeMap<String, BTreeMap<String, Relay>> = BTreeMap::new();
    let names: Vec<&str> = members.keys().copied().collect();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            if !cut(a, b) {
                continue;
            }
            let relay = names
                .iter()
                .find(|r| *r != a && *r != b && !cut(a, r) && !cut(b, r))
                .map_or(Relay::Nats, |r| Relay::Node(r.to_string()));
            out.entry(a.to_string())
                .or_default()
                .insert(b.to_string(), relay.clone());
            out.entry(b.to_string())
                .or_default()
                .insert(a.to_string(), relay);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(subnet: &str, key: &str, endpoint: &str) -> NodeStatus {
        NodeStatus {
            subnet: subnet.into(),
            mesh: Some(MeshStatus {
                public_key: key.into(),
                endpoints: (!endpoint.is_empty())
                    .then(|| endpoint.to_string())
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_nodes_with_a_key_an_endpoint_and_a_subnet_are_peers() {
        let p = peers([
            (
                "a".to_string(),
                status("10.69.1.0/24", "K1", "192.0.2.1:51820"),
            ),
            ("b".to_string(), status("", "K2", "192.0.2.2:51820")),
            ("c".to_string(), status("10.69.3.0/24", "K3", "")),
            ("d".to_string(), NodeStatus::default()),
            (
                "e.x".to_string(),
                status("10.69.5.0/24", "K5", "192.0.2.5:51820"),
            ),
        ]);
        let keys: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "e=2Ex"]);
        assert_eq!(p["a"].subnet, "10.69.1.0/24");
        assert_eq!(p["e=2Ex"].node, "e.x");
    }

    #[test]
    fn a_cut_pair_goes_through_a_node_both_reach_both_ways() {
        let un = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let (a, b, c, d) = (un(&["b"]), un(&[]), un(&["d"]), un(&["c"]));
        // a cannot reach b (b does not know yet); c and d cannot reach each other.
        let r = relays([
            ("a", a.as_slice()),
            ("b", b.as_slice()),
            ("c", c.as_slice()),
            ("d", d.as_slice()),
        ]);
        let node = |n: &str| Relay::Node(n.to_string());
        assert_eq!(r["a"]["b"], node("c"));
        assert_eq!(r["b"]["a"], node("c"));
        // c-d: a is the first that reaches both.
        assert_eq!(r["c"]["d"], node("a"));
        assert_eq!(r["d"]["c"], node("a"));
        assert_eq!(r["a"].len(), 1);
        // Two nodes alone: no one to relay but NATS.
        let r = relays([("a", a.as_slice()), ("b", b.as_slice())]);
        assert_eq!(r["a"]["b"], Relay::Nats);
        assert_eq!(r["b"]["a"], Relay::Nats);
        // Nothing cut: no relay at all.
        let r = relays([("a", b.as_slice()), ("b", b.as_slice())]);
        assert!(r.is_empty());
    }
}
