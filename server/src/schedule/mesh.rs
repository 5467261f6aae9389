//! The node mesh as the servers publish it in `voiyd_mesh`: one peer per registered
//! node that reported a mesh key, an endpoint and a container subnet.

use std::collections::BTreeMap;
use voiyd_messages::v1::{MeshPeer, NodeStatus};

/// The peers the nodes' statuses describe, by node name (key in `voiyd_mesh`).
pub fn peers(nodes: impl IntoIterator<Item = (String, NodeStatus)>) -> BTreeMap<String, MeshPeer> {
    nodes
        .into_iter()
        .filter_map(|(node, st)| {
            let mesh = st.mesh?;
            if mesh.public_key.is_empty() || mesh.endpoints.is_empty() || st.subnet.is_empty() {
                return None;
            }
            Some((
                voiyd_nats::names::spec_key(&node),
                MeshPeer {
                    node,
                    subnet: st.subnet,
                    public_key: mesh.public_key,
                    endpoints: mesh.endpoints,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_messages::v1::MeshStatus;

    fn status(subnet: &str, key: &str, endpoint: &str) -> NodeStatus {
        NodeStatus {
            subnet: subnet.into(),
            mesh: Some(MeshStatus {
                public_key: key.into(),
                endpoints: (!endpoint.is_empty())
                    .then(|| endpoint.to_string())
                    .into_iter()
                    .collect(),
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
}
