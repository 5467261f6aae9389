//! Cluster names, decided: which addresses each task's and each set's name resolves to,
//! and what must change in `voiyd_names` to say so. Pure;
//! [`crate::controllers::names`] reads the view and writes the difference.

use std::collections::BTreeMap;
use voiyd_nats::names::{name_key, NameKind};

/// What naming needs to know of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addressable {
    /// The task's name.
    pub name: String,
    /// The set it belongs to, if any.
    pub set: Option<String>,
    /// Its address ("" before it has one).
    pub ip: String,
    /// Running.
    pub running: bool,
    /// Running and ready (its Ready condition true): a set's name leads only to these.
    pub ready: bool,
    /// Its labels (isolated sets admit tasks by label).
    pub labels: BTreeMap<String, String>,
}

/// The records the bucket should hold, by key: a Running task's own name leads to its
/// address; a set's name to its virtual IP when it has one (in `vips`, by set), else to
/// the addresses of its ready replicas (no record while it has none). Addresses are
/// sorted, so that every server derives the same bytes.
pub fn records(
    tasks: impl IntoIterator<Item = Addressable>,
    vips: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks {
        if t.ip.is_empty() || !t.running {
            continue;
        }
        out.insert(name_key(NameKind::Task, &t.name), vec![t.ip.clone()]);
        if let (Some(set), true) = (
            &t.set,
            t.ready && !vips.contains_key(t.set.as_deref().unwrap_or_default()),
        ) {
            out.entry(name_key(NameKind::Set, set))
                .or_default()
                .push(t.ip);
        }
    }
    for (set, vip) in vips {
        out.insert(name_key(NameKind::Set, set), vec![vip.clone()]);
    }
    for ips in out.values_mut() {
        ips.sort();
        ips.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, set: Option<&str>, ip: &str, running: bool, ready: bool) -> Addressable {
        Addressable {
            name: name.into(),
            set: set.map(str::to_string),
            ip: ip.into(),
            running,
            ready,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn running_tasks_and_ready_replicas_are_named() {
        let r = records(
            [
                task("db", None, "10.69.1.5", true, true),
                task("web-1", Some("web"), "10.69.2.9", true, true),
                task("web-0", Some("web"), "10.69.1.7", true, true),
                // Running but not ready: its own name, not the set's.
                task("web-2", Some("web"), "10.69.1.8", true, false),
                // Not running, or no address yet: nothing.
                task("old", None, "10.69.1.6", false, false),
                task("new", None, "", true, true),
            ],
            &BTreeMap::new(),
        );
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "set.web",
                "task.db",
                "task.web-0",
                "task.web-1",
                "task.web-2"
            ]
        );
        assert_eq!(r["set.web"], ["10.69.1.7", "10.69.2.9"]);
        assert_eq!(r["task.web-2"], ["10.69.1.8"]);
    }

    #[test]
    fn a_set_without_ready_replicas_has_no_record() {
        let r = records(
            [task("web-0", Some("web"), "10.69.1.7", true, false)],
            &BTreeMap::new(),
        );
        assert!(!r.contains_key("set.web"));
    }

    #[test]
    fn a_set_with_a_virtual_ip_is_named_by_it_alone() {
        let vips = [("web".to_string(), "10.68.0.1".to_string())].into();
        let r = records(
            [
                task("web-0", Some("web"), "10.69.1.7", true, true),
                task("web-1", Some("web"), "10.69.2.7", true, false),
            ],
            &vips,
        );
        assert_eq!(r["set.web"], ["10.68.0.1"]);
        assert_eq!(r["task.web-0"], ["10.69.1.7"]);
        // Even before any replica is ready: the address is stable.
        let r = records([], &vips);
        assert_eq!(r["set.web"], ["10.68.0.1"]);
    }
}
