//! Placement: which node a task goes to. Pure: takes a view of the nodes, returns a
//! decision or an explanation a user can act on.
//!
//! A node fits a task when it is ready, not cordoned, matches the task's node selector
//! (equality) and `nodeAffinity` expressions (`in`, `notin`, exists, `!`), has the CPU
//! and memory the task requests free (requests default to 100m and 64Mi, see
//! [`voiyd_messages::requests`]) and none of the task's host ports taken. Among the nodes
//! that fit, [`Strategy::Spread`] picks the least utilised, [`Strategy::Binpack`] the
//! most utilised; ties go to the node with fewer (spread) or more (binpack) tasks, then
//! to the smaller name, so every server decides alike from the same view.

use std::collections::{BTreeMap, BTreeSet};
use voiyd_messages::requests::{host_ports, Requests};
use voiyd_messages::selector::Selector;
use voiyd_messages::v1::TaskConfig;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Ready (heartbeats arriving).
    pub ready: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// What the node offers. A zero field means "not reported": that resource is not
    /// limited (an agent always reports both).
    pub capacity: Requests,
    /// Sum of the requests of the tasks placed on it.
    pub allocated: Requests,
    /// Host ports its tasks bind, as (port, protocol).
    pub ports: BTreeSet<(u32, String)>,
    /// Tasks placed on it.
    pub tasks: usize,
}

/// How to choose among the nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Least utilised node first: tasks spread over the cluster (the default).
    #[default]
    Spread,
    /// Most utilised node that still fits: fills nodes one after another.
    Binpack,
}

impl Strategy {
    /// `binpack` → Binpack; anything else (`spread`, empty) → Spread.
    pub fn parse(s: &str) -> Strategy {
        if s.eq_ignore_ascii_case("binpack") {
            Strategy::Binpack
        } else {
            Strategy::Spread
        }
    }
}

/// What a task needs from a node, computed once per placement.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// CPU and memory.
    pub requests: Requests,
    /// Host ports (port, protocol).
    pub ports: Vec<(u32, String)>,
    /// Node selector: every pair must be a label of the node.
    pub selector: BTreeMap<String, String>,
    /// Node affinity expressions, all of which must match.
    pub affinity: Vec<Selector>,
    /// Scoring.
    pub strategy: Strategy,
    /// Volumes the task mounts.
    pub volumes: Vec<String>,
    /// Of those, the host-local ones that hold data somewhere, with the nodes that hold
    /// it: the task must go to one of them (filled in at placement from the view).
    pub data_on: Vec<(String, BTreeSet<String>)>,
}

impl Demand {
    /// The demand of a task spec. Affinity expressions that do not parse (validation
    /// refuses them) are ignored.
    pub fn of(config: &TaskConfig, strategy: Strategy) -> Demand {
        Demand {
            requests: Requests::of(config),
            ports: host_ports(config),
            selector: config
                .node_selector
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            affinity: config
                .node_affinity
                .iter()
                .filter_map(|s| Selector::parse(s).ok())
                .collect(),
            strategy,
            volumes: config
                .mounts
                .iter()
                .filter(|m| voiyd_messages::validate::mount_type(m).as_deref() == Some("volume"))
                .map(|m| m.volume.clone())
                .filter(|v| !v.is_empty())
                .collect(),
            data_on: Vec::new(),
        }
    }
}

/// Why one node does not fit, in the order the filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Misfit {
    /// No recent heartbeat.
    NotReady,
    /// Cordoned (or draining).
    Cordoned,
    /// Labels do not match the selector or affinity.
    SelectorMismatch,
    /// A host-local volume the task mounts holds its data on another node.
    VolumeElsewhere,
    /// Not enough free CPU.
    InsufficientCpu,
    /// Not enough free memory.
    InsufficientMemory,
    /// A host port the task needs is taken.
    PortInUse,
}

impl Misfit {
    /// The words used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Misfit::NotReady => "not ready",
            Misfit::Cordoned => "cordoned",
            Misfit::SelectorMismatch => "node selector mismatch",
            Misfit::VolumeElsewhere => "volume data on another node",
            Misfit::InsufficientCpu => "insufficient cpu",
            Misfit::InsufficientMemory => "insufficient memory",
            Misfit::PortInUse => "host port in use",
        }
    }
}

fn has_room(capacity: u64, allocated: u64, wanted: u64) -> bool {
    capacity == 0 || allocated.saturating_add(wanted) <= capacity
}

/// Whether `node` can take a task with demand `d`, or the first reason it cannot.
pub fn fits(d: &Demand, node: &Candidate) -> Result<(), Misfit> {
    if !node.ready {
        return Err(Misfit::NotReady);
    }
    if node.unschedulable {
        return Err(Misfit::Cordoned);
    }
    if !d
        .selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        || !d.affinity.iter().all(|s| s.matches(&node.labels))
    {
        return Err(Misfit::SelectorMismatch);
    }
    if d.data_on
        .iter()
        .any(|(_, nodes)| !nodes.contains(&node.name))
    {
        return Err(Misfit::VolumeElsewhere);
    }
    if !has_room(
        node.capacity.cpu_millis,
        node.allocated.cpu_millis,
        d.requests.cpu_millis,
    ) {
        return Err(Misfit::InsufficientCpu);
    }
    if !has_room(
        node.capacity.memory_bytes,
        node.allocated.memory_bytes,
        d.requests.memory_bytes,
    ) {
        return Err(Misfit::InsufficientMemory);
    }
    if d.ports.iter().any(|p| node.ports.contains(p)) {
        return Err(Misfit::PortInUse);
    }
    Ok(())
}

/// Whether a global set's template belongs on `node`: it is not cordoned and matches
/// the template's selector and affinity (room and readiness are placement's to judge).
pub fn wants_global_task(d: &Demand, node: &Candidate) -> bool {
    !node.unschedulable
        && d.selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
        && d.affinity.iter().all(|s| s.matches(&node.labels))
}

/// Whether a task already on `node` still fits there after a change of its spec, or
/// why not. `node` must not count the task itself. A node that stopped heartbeating
/// or was cordoned keeps its tasks (failover and drain move them): only the task's own
/// demands (selector, affinity, resources, host ports) are judged.
pub fn still_fits(d: &Demand, node: &Candidate) -> Result<(), Misfit> {
    let mut n = node.clone();
    n.ready = true;
    n.unschedulable = false;
    fits(d, &n)
}

/// Utilisation of the node once the task is on it, in parts per million of its most
/// used resource (0 when it reports no capacity).
fn utilisation_after(d: &Demand, node: &Candidate) -> u64 {
    let frac = |cap: u64, used: u64, want: u64| -> u64 {
        if cap == 0 {
            return 0;
        }
        let need = used.saturating_add(want);
        // 64-bit arithmetic while it cannot overflow (any node below 18 TB); 128 beyond.
        match need.checked_mul(1_000_000) {
            Some(scaled) => scaled / cap,
            None => ((need as u128 * 1_000_000) / cap as u128).min(u64::MAX as u128) as u64,
        }
    };
    frac(
        node.capacity.cpu_millis,
        node.allocated.cpu_millis,
        d.requests.cpu_millis,
    )
    .max(frac(
        node.capacity.memory_bytes,
        node.allocated.memory_bytes,
        d.requests.memory_bytes,
    ))
}

/// Orders two fitting nodes: `Less` means `a` is the better choice.
#[cfg(test)]
fn better(d: &Demand, a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    order(
        d,
        (a, utilisation_after(d, a)),
        (b, utilisation_after(d, b)),
    )
}

/// [`better`] for nodes whose utilisation after placement is already known.
fn order(d: &Demand, (a, ua): (&Candidate, u64), (b, ub): (&Candidate, u64)) -> std::cmp::Ordering {
    let by_load = match d.strategy {
        Strategy::Spread => ua.cmp(&ub).then(a.tasks.cmp(&b.tasks)),
        Strategy::Binpack => ub.cmp(&ua).then(b.tasks.cmp(&a.tasks)),
    };
    by_load.then_with(|| a.name.cmp(&b.name))
}

/// Why no node fits, counted per reason, e.g. `0/3 nodes available: 2 insufficient
/// memory, 1 node selector mismatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaceable {
    /// Nodes considered.
    pub total: usize,
    /// Reason → how many nodes it excluded.
    pub reasons: BTreeMap<&'static str, usize>,
    /// Set when the task waits for the node holding a volume's data, saying which.
    pub waiting_for_data: Option<String>,
}

impl Unplaceable {
    /// The reason a task's status gives for it.
    pub fn reason(&self) -> voiyd_messages::reason::Reason {
        if self.waiting_for_data.is_some() {
            voiyd_messages::reason::Reason::VolumeNodeUnavailable
        } else {
            voiyd_messages::reason::Reason::Unschedulable
        }
    }
}

/// Why a task whose volume data is on `nodes` waits, when none of them can take tasks:
/// `(node, its state)` for each, e.g. `data of volume db is on node n1, which is
/// NotReady`. `None` when one of them is usable (the task waits for room, not data).
pub fn waiting_for_data(volume: &str, nodes: &[(String, Option<String>)]) -> Option<String> {
    let held: Vec<String> = nodes
        .iter()
        .map(|(n, state)| match state {
            Some(s) if s == "Ready" => None,
            Some(s) => Some(format!("{n}, which is {s}")),
            None => Some(format!("{n}, which was deleted")),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(format!(
        "data of volume {volume} is on node {}: the task runs there when it is back",
        held.join(" and node ")
    ))
}

impl std::fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(w) = &self.waiting_for_data {
            return f.write_str(w);
        }
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

/// Picks the best fitting node for `d`, or explains why none fits.
pub fn place<'a>(
    d: &Demand,
    nodes: impl IntoIterator<Item = &'a Candidate>,
) -> Result<&'a Candidate, Unplaceable> {
    place_among(d, nodes, usize::MAX).map(|(n, _)| n)
}

/// How many fitting nodes placement scores before it settles, in a cluster of `total`
/// nodes. Spread needs a good node, not the best of thousands: up to 100 nodes it scores
/// every one, beyond that a tenth of them (at least 100), so a decision stays cheap
/// while the caller rotates where the search starts. Binpack must find the fullest node
/// that fits and so always scores all of them.
pub fn enough_fitting(strategy: Strategy, total: usize) -> usize {
    match strategy {
        Strategy::Binpack => usize::MAX,
        Strategy::Spread => (total / 10).max(100),
    }
}

/// [`place`] that stops after scoring `enough` fitting nodes; also returns how many
/// nodes it looked at, so the caller can start the next search after them. When no node
/// fits, every node has been looked at and the explanation covers the whole cluster.
pub fn place_among<'a>(
    d: &Demand,
    nodes: impl IntoIterator<Item = &'a Candidate>,
    enough: usize,
) -> Result<(&'a Candidate, usize), Unplaceable> {
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut total = 0;
    let mut fitting = 0;
    // The best so far with its load, so each candidate's load is computed once.
    let mut best: Option<(&Candidate, u64)> = None;
    for n in nodes {
        total += 1;
        match fits(d, n) {
            Err(m) => *reasons.entry(m.as_str()).or_default() += 1,
            Ok(()) => {
                let load = utilisation_after(d, n);
                if best.is_none_or(|(b, bload)| order(d, (n, load), (b, bload)).is_lt()) {
                    best = Some((n, load));
                }
                fitting += 1;
                if fitting >= enough {
                    break;
                }
            }
        }
    }
    best.map(|(n, _)| (n, total)).ok_or(Unplaceable {
        total,
        reasons,
        waiting_for_data: None,
    })
}

/// Convenience over [`place`] for a task spec with the default strategy; returns the
/// node name.
pub fn place_config(config: &TaskConfig, nodes: &[Candidate]) -> Result<String, Unplaceable> {
    place(&Demand::of(config, Strategy::Spread), nodes).map(|n| n.name.clone())
}

#[cfg(test)]
mod tests {
    use super::{
        better, enough_fitting, fits, place, place_among, place_config, Candidate, Demand,
        Requests, Strategy as Scoring,
    };
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use voiyd_messages::v1::TaskConfig;
    use voiyd_messages::v1::{PortMapping, Resources};

    const GI: u64 = 1 << 30;

    fn node(name: &str, ready: bool, labels: &[(&str, &str)], tasks: usize) -> Candidate {
        Candidate {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready,
            unschedulable: false,
            capacity: Requests {
                cpu_millis: 4000,
                memory_bytes: 8 * GI,
            },
            allocated: Requests {
                cpu_millis: 100 * tasks as u64,
                memory_bytes: (64 << 20) * tasks as u64,
            },
            ports: BTreeSet::new(),
            tasks,
        }
    }

    fn cfg_with(cpu: &str, memory: &str) -> TaskConfig {
        TaskConfig {
            resources: Some(Resources {
                cpu: cpu.into(),
                memory: memory.into(),
            }),
            ..Default::default()
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
        assert_eq!(place_config(&cfg, &nodes).unwrap(), "n2");
    }

    #[test]
    fn explains_why_nothing_fits() {
        let mut cfg = TaskConfig::default();
        cfg.node_selector.insert("gpu".into(), "yes".into());
        let mut cordoned = node("c", true, &[("gpu", "yes")], 0);
        cordoned.unschedulable = true;
        let nodes = vec![node("a", true, &[], 0), node("b", false, &[], 0), cordoned];
        let e = place_config(&cfg, &nodes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/3 nodes available: 1 cordoned, 1 node selector mismatch, 1 not ready"
        );
        assert!(place_config(&cfg, &[])
            .unwrap_err()
            .to_string()
            .contains("start voiyd-node"));
    }

    #[test]
    fn capacity_is_a_filter_with_its_own_explanation() {
        let cfg = cfg_with("500m", "6Gi");
        let mut small = node("small", true, &[("zone", "a")], 0);
        small.capacity.memory_bytes = 4 * GI;
        let mut full = node("full", true, &[("zone", "a")], 0);
        full.allocated.memory_bytes = 3 * GI;
        let odd = node("odd", true, &[("zone", "b")], 0);
        let mut cfg2 = cfg.clone();
        cfg2.node_selector.insert("zone".into(), "a".into());
        let nodes = vec![small.clone(), full, odd];
        assert_eq!(
            place_config(&cfg2, &nodes).unwrap_err().to_string(),
            "0/3 nodes available: 2 insufficient memory, 1 node selector mismatch"
        );
        let mut busy = node("busy", true, &[], 0);
        busy.allocated.cpu_millis = 3800;
        assert_eq!(
            place_config(&cfg, &[small, busy]).unwrap_err().to_string(),
            "0/2 nodes available: 1 insufficient cpu, 1 insufficient memory"
        );
        // Fits exactly: allocated + request == capacity.
        let mut exact = node("exact", true, &[], 0);
        exact.capacity = Requests {
            cpu_millis: 500,
            memory_bytes: 6 * GI,
        };
        assert_eq!(place_config(&cfg, &[exact]).unwrap(), "exact");
    }

    #[test]
    fn unreported_capacity_does_not_limit() {
        let mut n = node("n", true, &[], 0);
        n.capacity = Requests::default();
        assert_eq!(place_config(&cfg_with("64", "1Ti"), &[n]).unwrap(), "n");
    }

    #[test]
    fn host_local_data_keeps_a_task_on_its_node() {
        let cfg = TaskConfig {
            mounts: vec![voiyd_messages::v1::Mount {
                volume: "db".into(),
                destination: "/data".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut d = Demand::of(&cfg, Scoring::Spread);
        assert_eq!(d.volumes, vec!["db".to_string()]);
        // No data anywhere yet: any node.
        let (a, b) = (node("a", true, &[], 5), node("b", true, &[], 0));
        assert_eq!(place(&d, [&a, &b]).unwrap().name, "b");
        // Data on a: only a, though b is emptier.
        d.data_on = vec![("db".into(), ["a".to_string()].into())];
        assert_eq!(place(&d, [&a, &b]).unwrap().name, "a");
        let down = node("a", false, &[], 0);
        let why = place(&d, [&down, &b]).unwrap_err();
        assert_eq!(
            why.to_string(),
            "0/2 nodes available: 1 not ready, 1 volume data on another node"
        );
        // Said for people, and as the status's reason, by the view.
        let w = super::waiting_for_data("db", &[("a".into(), Some("NotReady".into()))]).unwrap();
        assert_eq!(
            w,
            "data of volume db is on node a, which is NotReady: the task runs there when it is back"
        );
        assert!(super::waiting_for_data("db", &[("a".into(), Some("Ready".into()))]).is_none());
        assert!(super::waiting_for_data("db", &[("a".into(), None)])
            .unwrap()
            .contains("which was deleted"));
        let waiting = super::Unplaceable {
            waiting_for_data: Some(w.clone()),
            ..why
        };
        assert_eq!(waiting.to_string(), w);
        assert_eq!(
            waiting.reason(),
            voiyd_messages::reason::Reason::VolumeNodeUnavailable
        );
    }

    #[test]
    fn host_ports_must_be_free_per_protocol() {
        let cfg = TaskConfig {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                target_port: 80,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut taken = node("a", true, &[], 0);
        taken.ports.insert((8080, "tcp".into()));
        let mut udp = node("b", true, &[], 5);
        udp.ports.insert((8080, "udp".into()));
        assert_eq!(
            place_config(&cfg, &[taken.clone()])
                .unwrap_err()
                .to_string(),
            "0/1 nodes available: 1 host port in use"
        );
        assert_eq!(place_config(&cfg, &[taken, udp]).unwrap(), "b");
    }

    #[test]
    fn affinity_expressions_filter() {
        let cfg = TaskConfig {
            node_affinity: vec!["zone in (a,b)".into(), "!spot".into()],
            ..Default::default()
        };
        let nodes = vec![
            node("x", true, &[("zone", "c")], 0),
            node("w", true, &[("zone", "a"), ("spot", "1")], 0),
            node("y", true, &[("zone", "b")], 5),
        ];
        assert_eq!(place_config(&cfg, &nodes).unwrap(), "y");
    }

    #[test]
    fn binpack_fills_the_fullest_node_that_fits() {
        let nodes = vec![
            node("a", true, &[], 1),
            node("b", true, &[], 30),
            node("c", true, &[], 39),
        ];
        // c has 39 x 100m: one more fits (4000m), so binpack takes it; spread takes a.
        let d = Demand::of(&TaskConfig::default(), Scoring::Binpack);
        assert_eq!(place(&d, &nodes).unwrap().name, "c");
        let d = Demand::of(&TaskConfig::default(), Scoring::Spread);
        assert_eq!(place(&d, &nodes).unwrap().name, "a");
        // A big task does not fit on c any more: binpack falls back to b.
        let d = Demand::of(&cfg_with("200m", ""), Scoring::Binpack);
        assert_eq!(place(&d, &nodes).unwrap().name, "b");
        assert_eq!(Scoring::parse("BinPack"), Scoring::Binpack);
        assert_eq!(Scoring::parse(""), Scoring::Spread);
    }

    fn arb_node() -> impl Strategy<Value = Candidate> {
        (
            "[a-e]{1,3}",
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(prop_oneof![Just("a"), Just("b")]),
            0u64..4000,
            0u64..4000,
            0usize..20,
            proptest::collection::btree_set(prop_oneof![Just(80u32), Just(443u32)], 0..2),
        )
            .prop_map(|(name, ready, cordoned, zone, cap, used, tasks, ports)| {
                let mut labels = BTreeMap::new();
                if let Some(z) = zone {
                    labels.insert("zone".to_string(), z.to_string());
                }
                Candidate {
                    name,
                    labels,
                    ready: ready || tasks % 3 != 0,
                    unschedulable: cordoned && tasks % 2 == 0,
                    capacity: Requests {
                        cpu_millis: cap,
                        memory_bytes: cap << 20,
                    },
                    allocated: Requests {
                        cpu_millis: used,
                        memory_bytes: used << 20,
                    },
                    ports: ports.into_iter().map(|p| (p, "tcp".to_string())).collect(),
                    tasks,
                }
            })
    }

    fn arb_demand() -> impl Strategy<Value = Demand> {
        (
            0u64..2000,
            proptest::option::of(prop_oneof![Just("a"), Just("b")]),
            proptest::option::of(Just(80u32)),
            any::<bool>(),
        )
            .prop_map(|(cpu, zone, port, binpack)| Demand {
                requests: Requests {
                    cpu_millis: cpu,
                    memory_bytes: cpu << 20,
                },
                ports: port
                    .map(|p| vec![(p, "tcp".to_string())])
                    .unwrap_or_default(),
                selector: zone
                    .map(|z| BTreeMap::from([("zone".to_string(), z.to_string())]))
                    .unwrap_or_default(),
                affinity: vec![],
                volumes: vec![],
                data_on: vec![],
                strategy: if binpack {
                    Scoring::Binpack
                } else {
                    Scoring::Spread
                },
            })
    }

    #[test]
    fn spread_scores_a_bounded_share_of_large_clusters() {
        assert_eq!(enough_fitting(Scoring::Spread, 3), 100);
        assert_eq!(enough_fitting(Scoring::Spread, 1_000), 100);
        assert_eq!(enough_fitting(Scoring::Spread, 5_000), 500);
        assert_eq!(enough_fitting(Scoring::Binpack, 5_000), usize::MAX);
    }

    proptest! {
        /// A chosen node fits, and it is at least as good as every other fitting node.
        #[test]
        fn chosen_node_fits_and_is_best(d in arb_demand(), nodes in proptest::collection::vec(arb_node(), 0..12)) {
            match place(&d, &nodes) {
                Ok(n) => {
                    prop_assert!(fits(&d, n).is_ok());
                    for other in nodes.iter().filter(|o| fits(&d, o).is_ok()) {
                        prop_assert!(!better(&d, other, n).is_lt(), "{} beats {}", other.name, n.name);
                    }
                }
                Err(e) => {
                    prop_assert!(nodes.iter().all(|n| fits(&d, n).is_err()));
                    prop_assert_eq!(e.total, nodes.len());
                    prop_assert_eq!(e.reasons.values().sum::<usize>(), nodes.len());
                }
            }
        }

        /// Scoring stops after `enough` fitting nodes: the choice fits, beats every fitting
        /// node looked at, and a task is placed whenever any node fits.
        #[test]
        fn bounded_search_places_when_any_node_fits(
            d in arb_demand(),
            nodes in proptest::collection::vec(arb_node(), 0..12),
            enough in 1usize..4,
        ) {
            match place_among(&d, &nodes, enough) {
                Ok((n, looked)) => {
                    prop_assert!(fits(&d, n).is_ok());
                    let seen: Vec<_> = nodes[..looked].iter().filter(|o| fits(&d, o).is_ok()).collect();
                    prop_assert!(seen.len() <= enough);
                    prop_assert!(seen.len() == enough || looked == nodes.len());
                    for other in seen {
                        prop_assert!(!better(&d, other, n).is_lt(), "{} beats {}", other.name, n.name);
                    }
                }
                Err(e) => {
                    prop_assert!(nodes.iter().all(|n| fits(&d, n).is_err()));
                    prop_assert_eq!(e.total, nodes.len());
                }
            }
        }

        /// The decision does not depend on the order nodes are listed in (servers that
        /// see the same view decide alike).
        #[test]
        fn order_does_not_matter(d in arb_demand(), mut nodes in proptest::collection::vec(arb_node(), 1..10)) {
            let a = place(&d, &nodes).cloned().map_err(|e| e.to_string());
            nodes.reverse();
            let b = place(&d, &nodes).cloned().map_err(|e| e.to_string());
            prop_assert_eq!(a.map(|n| (n.name, n.tasks, n.allocated)), b.map(|n| (n.name, n.tasks, n.allocated)));
        }

        /// Placing task after task, charging each to its node, never exceeds a node's
        /// capacity nor binds one host port twice.
        #[test]
        fn repeated_placement_respects_capacity(
            d in arb_demand(),
            mut nodes in proptest::collection::vec(arb_node(), 1..8),
        ) {
            for (i, n) in nodes.iter_mut().enumerate() {
                n.name = format!("{}{i}", n.name);
                n.allocated = Requests::default();
                n.ports.clear();
            }
            for _ in 0..50 {
                let Ok(chosen) = place(&d, &nodes) else { break };
                let name = chosen.name.clone();
                let n = nodes.iter_mut().find(|n| n.name == name).unwrap();
                n.allocated = n.allocated.plus(d.requests);
                n.tasks += 1;
                for p in &d.ports {
                    prop_assert!(n.ports.insert(p.clone()), "port bound twice");
                }
            }
            for n in &nodes {
                if n.capacity.cpu_millis > 0 && n.tasks > 0 {
                    prop_assert!(n.allocated.cpu_millis <= n.capacity.cpu_millis);
                }
            }
        }
    }
}
