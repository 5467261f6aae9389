//! Set services, decided: for every set with a virtual IP, published ports or isolation,
//! the record nodes route and filter its traffic by (`voiyd_services`). Pure;
//! [`crate::controllers::services`] reads the view and writes the difference.

use crate::schedule::names::Addressable;
use std::collections::BTreeMap;
use voiyd_messages::v1::{PortMapping, ServiceRecord};

/// One set's networking, as the set controller read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetNetwork {
    /// Its allocated virtual IP ("" without one).
    pub vip: String,
    /// The template's published ports.
    pub ports: Vec<PortMapping>,
    /// `network: isolated`.
    pub isolated: bool,
    /// Labels of other tasks admitted when isolated.
    pub allow_from: BTreeMap<String, String>,
}

impl SetNetwork {
    /// Whether nodes need a record for the set at all.
    fn needs_record(&self) -> bool {
        !self.vip.is_empty() || !self.ports.is_empty() || self.isolated
    }
}

/// The records `voiyd_services` should hold, by key (the set's name as a key token).
/// Backends are the ready replicas; members every running task of the set with an
/// address; allowed (isolated sets only) the members and every running task whose labels
/// include all of `allow_from`. Lists are sorted, so every server derives the same bytes.
pub fn records(
    sets: &BTreeMap<String, SetNetwork>,
    tasks: &[Addressable],
) -> BTreeMap<String, ServiceRecord> {
    let live: Vec<&Addressable> = tasks
        .iter()
        .filter(|t| t.running && !t.ip.is_empty())
        .collect();
    sets.iter()
        .filter(|(_, n)| n.needs_record())
        .map(|(set, n)| {
            let of_set = |t: &&&Addressable| t.set.as_deref() == Some(set.as_str());
            let backends = sorted(live.iter().filter(of_set).filter(|t| t.ready));
            let members = sorted(live.iter().filter(of_set));
            let allowed = if n.isolated {
                sorted(live.iter().filter(|t| {
                    of_set(t)
                        || (!n.allow_from.is_empty()
                            && n.allow_from.iter().all(|(k, v)| t.labels.get(k) == Some(v)))
                }))
            } else {
                Vec::new()
            };
            let record = ServiceRecord {
                set: set.clone(),
                vip: n.vip.clone(),
                backends,
                ports: n.ports.clone(),
                isolated: n.isolated,
                members,
                allowed,
            };
            (voiyd_nats::names::spec_key(set), record)
        })
        .collect()
}

fn sorted<'a>(tasks: impl Iterator<Item = &'a &'a Addressable>) -> Vec<String> {
    let mut ips: Vec<String> = tasks.map(|t| t.ip.clone()).collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, set: Option<&str>, ip: &str, ready: bool, role: &str) -> Addressable {
        Addressable {
            name: name.into(),
            set: set.map(str::to_string),
            ip: ip.into(),
            running: !ip.is_empty(),
            ready,
            labels: (!role.is_empty())
                .then(|| ("role".to_string(), role.to_string()))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn backends_are_ready_replicas_and_isolation_admits_members_and_labels() {
        let sets: BTreeMap<String, SetNetwork> = [
            (
                "db".to_string(),
                SetNetwork {
                    isolated: true,
                    allow_from: [("role".to_string(), "api".to_string())].into(),
                    ..Default::default()
                },
            ),
            (
                "web".to_string(),
                SetNetwork {
                    vip: "10.68.0.1".into(),
                    ..Default::default()
                },
            ),
            // Nothing to route or filter: no record.
            ("plain".to_string(), SetNetwork::default()),
        ]
        .into();
        let tasks = [
            task("web-0", Some("web"), "10.69.2.5", true, ""),
            task("web-1", Some("web"), "10.69.1.5", false, ""),
            task("web-2", Some("web"), "", false, ""),
            task("db-0", Some("db"), "10.69.1.9", true, ""),
            task("api", None, "10.69.3.3", true, "api"),
            task("other", None, "10.69.3.4", true, "web"),
            task("plain-0", Some("plain"), "10.69.3.5", true, ""),
        ];
        let r = records(&sets, &tasks);
        assert_eq!(r.keys().collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!(r["web"].backends, ["10.69.2.5"]);
        assert_eq!(r["web"].members, ["10.69.1.5", "10.69.2.5"]);
        assert!(r["web"].allowed.is_empty() && !r["web"].isolated);
        assert_eq!(r["db"].members, ["10.69.1.9"]);
        assert_eq!(r["db"].allowed, ["10.69.1.9", "10.69.3.3"]);
    }

    #[test]
    fn an_isolated_set_without_allow_rules_admits_only_its_own_tasks() {
        let sets: BTreeMap<String, SetNetwork> = [(
            "db".to_string(),
            SetNetwork {
                isolated: true,
                ..Default::default()
            },
        )]
        .into();
        let tasks = [
            task("db-0", Some("db"), "10.69.1.9", true, ""),
            task("x", None, "10.69.3.3", true, "api"),
        ];
        assert_eq!(records(&sets, &tasks)["db"].allowed, ["10.69.1.9"]);
    }
}
