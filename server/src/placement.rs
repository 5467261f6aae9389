//! Placement: which node a task goes to. Pure: takes a view of the nodes, returns a
//! decision or an explanation a user can act on.

use std::collections::BTreeMap;
use voiyd_messages::selector::Selector;
use voiyd_messages::v1::{Node, TaskConfig};
use voiyd_messages::Resource;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Ready (heartbeats arriving).
    pub ready: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// Tasks already assigned to it.
    pub tasks: usize,
}

impl Candidate {
    /// Builds a candidate from a stored node (with status) and its task count.
    pub fn from_node(node: &Node, tasks: usize) -> Self {
        Candidate {
            name: node.name().to_string(),
            labels: node.labels(),
            ready: node.status.as_ref().is_some_and(|s| s.phase == "Ready"),
            unschedulable: node.config.as_ref().is_some_and(|c| c.unschedulable),
            tasks,
        }
    }
}

/// Why no node fits, counted per reason, e.g. `0/3 nodes: 2 not ready, 1 node selector mismatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaceable {
    /// Nodes considered.
    pub total: usize,
    /// Reason → how many nodes it excluded.
    pub reasons: BTreeMap<&'static str, usize>,
}

impl std::fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.total == 0 {
            return f.write_str("0/0 nodes: no node has joined the cluster; start voiyd-node");
        }
        write!(f, "0/{} nodes available:", self.total)?;
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!(" {n} {r}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Picks the ready, schedulable node that matches the task's selector and has the
/// fewest tasks (ties broken by name, so every server decides alike).
pub fn place(config: &TaskConfig, nodes: &[Candidate]) -> Result<String, Unplaceable> {
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let affinity: Vec<Selector> = config
        .node_affinity
        .iter()
        .filter_map(|s| Selector::parse(s).ok())
        .collect();
    let mut best: Option<&Candidate> = None;
    for n in nodes {
        let reason = if !n.ready {
            Some("not ready")
        } else if n.unschedulable {
            Some("cordoned")
        } else if !config
            .node_selector
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v))
            || !affinity.iter().all(|s| s.matches(&n.labels))
        {
            Some("node selector mismatch")
        } else {
            None
        };
        match reason {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => {
                if best.is_none_or(|b| (n.tasks, &n.name) < (b.tasks, &b.name)) {
                    best = Some(n);
                }
            }
        }
    }
    best.map(|n| n.name.clone()).ok_or(Unplaceable {
        total: nodes.len(),
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, labels: &[(&str, &str)], tasks: usize) -> Candidate {
        Candidate {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready,
            unschedulable: false,
            tasks,
        }
    }

    #[test]
    fn picks_least_loaded_matching_ready_node() {
        let mut cfg = TaskConfig::default();
        cfg.node_selector.insert("zone".into(), "a".into());
        let nodes = vec![
            node("n1", true, &[("zone", "a")], 3),
            node("n2", true, &[("zone", "a")], 1),
            node("n3", true, &[("zone", "b")], 0),
            node("n4", false, &[("zone", "a")], 0),
        ];
        assert_eq!(place(&cfg, &nodes).unwrap(), "n2");
    }

    #[test]
    fn explains_why_nothing_fits() {
        let mut cfg = TaskConfig::default();
        cfg.node_selector.insert("gpu".into(), "yes".into());
        let mut cordoned = node("c", true, &[("gpu", "yes")], 0);
        cordoned.unschedulable = true;
        let nodes = vec![node("a", true, &[], 0), node("b", false, &[], 0), cordoned];
        let e = place(&cfg, &nodes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/3 nodes available: 1 cordoned, 1 node selector mismatch, 1 not ready"
        );
        assert!(place(&cfg, &[])
            .unwrap_err()
            .to_string()
            .contains("start voiyd-node"));
    }

    #[test]
    fn affinity_expressions_filter() {
        let cfg = TaskConfig {
            node_affinity: vec!["zone in (a,b)".into()],
            ..Default::default()
        };
        let nodes = vec![
            node("x", true, &[("zone", "c")], 0),
            node("y", true, &[("zone", "b")], 5),
        ];
        assert_eq!(place(&cfg, &nodes).unwrap(), "y");
    }
}
