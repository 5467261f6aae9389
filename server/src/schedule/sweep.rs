//! The work sweep, decided: which `voiyd_work` entries are stale (their task belongs
//! to another node, to none, or is gone) and which placed tasks miss their entry, each
//! only when two passes in a row agree. Pure; [`crate::controllers::sweep`] lists the
//! entries and acts.

use std::collections::HashMap;
use voiyd_nats::names;

/// Where the view says a task belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Placed on this node.
    Node(String),
    /// Exists, placed nowhere (Pending).
    Nowhere,
    /// No such task.
    Gone,
}

/// Whether the work entry `key` is stale given where its task belongs. Keys that are
/// not `<node>.<task>` are left alone.
pub fn is_stale(key: &str, owner: impl Fn(&str) -> Owner) -> bool {
    let Some((node, task)) = names::parse_work_key(key) else {
        return false;
    };
    owner(&task) != Owner::Node(node)
}

/// Suspects carried from one sweep to the next.
#[derive(Debug, Default)]
pub struct Sweep {
    suspects: HashMap<String, u64>,
    missing: std::collections::HashSet<String>,
}

impl Sweep {
    /// One pass over the current work `entries` (key, revision): returns the entries to
    /// remove (stale now and in the previous pass at the same revision) and remembers the
    /// stale ones for the next pass.
    pub fn pass(
        &mut self,
        entries: &[(String, u64)],
        owner: impl Fn(&str) -> Owner,
    ) -> Vec<(String, u64)> {
        let mut remove = Vec::new();
        let mut suspects = HashMap::new();
        for (key, revision) in entries {
            if !is_stale(key, &owner) {
                continue;
            }
            if self.suspects.get(key) == Some(revision) {
                remove.push((key.clone(), *revision));
            } else {
                suspects.insert(key.clone(), *revision);
            }
        }
        self.suspects = suspects;
        remove
    }

    /// Tasks placed on a node (task, node) whose work key is absent from `entries` in
    /// this pass and the previous one: their work needs writing again.
    pub fn missing(
        &mut self,
        entries: &[(String, u64)],
        placed: &[(String, String)],
    ) -> Vec<String> {
        let keys: std::collections::HashSet<&str> =
            entries.iter().map(|(k, _)| k.as_str()).collect();
        let now: std::collections::HashSet<String> = placed
            .iter()
            .filter(|(task, node)| !keys.contains(names::work_key(node, task).as_str()))
            .map(|(task, _)| task.clone())
            .collect();
        let mut repair: Vec<String> = now.intersection(&self.missing).cloned().collect();
        repair.sort();
        self.missing = now;
        repair
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(node: &str, task: &str) -> String {
        names::work_key(node, task)
    }

    #[test]
    fn stale_when_the_task_belongs_elsewhere_or_nowhere() {
        let owner = |t: &str| match t {
            "here" => Owner::Node("n1".into()),
            "moved" => Owner::Node("n2".into()),
            "pending" => Owner::Nowhere,
            _ => Owner::Gone,
        };
        assert!(!is_stale(&key("n1", "here"), owner));
        assert!(is_stale(&key("n1", "moved"), owner));
        assert!(is_stale(&key("n1", "pending"), owner));
        assert!(is_stale(&key("n1", "deleted"), owner));
        assert!(!is_stale("not-a-work-key", owner));
    }

    #[test]
    fn removes_only_after_two_passes_at_the_same_revision() {
        let mut s = Sweep::default();
        let gone = |_: &str| Owner::Gone;
        let k = key("n1", "t");
        assert!(s.pass(&[(k.clone(), 5)], gone).is_empty());
        // Rewritten meanwhile: a new suspect, not a removal.
        assert!(s.pass(&[(k.clone(), 7)], gone).is_empty());
        assert_eq!(s.pass(&[(k.clone(), 7)], gone), [(k.clone(), 7)]);
        // Found good again in between: the count starts over.
        let mut s = Sweep::default();
        assert!(s.pass(&[(k.clone(), 5)], gone).is_empty());
        assert!(s
            .pass(&[(k.clone(), 5)], |_| Owner::Node("n1".into()))
            .is_empty());
        assert!(s.pass(&[(k.clone(), 5)], gone).is_empty());
    }

    #[test]
    fn missing_work_is_repaired_after_two_passes() {
        let mut s = Sweep::default();
        let placed = [
            ("a".to_string(), "n1".to_string()),
            ("b".to_string(), "n2".to_string()),
        ];
        let with_a = [(key("n1", "a"), 3)];
        assert!(s.missing(&with_a, &placed).is_empty());
        assert_eq!(s.missing(&with_a, &placed), ["b"]);
        // Found again: nothing to repair; then gone once: not yet.
        let both = [(key("n1", "a"), 3), (key("n2", "b"), 4)];
        assert!(s.missing(&both, &placed).is_empty());
        assert!(s.missing(&with_a, &placed).is_empty());
        // Work on another node than the status names does not count.
        let elsewhere = [(key("n1", "a"), 3), (key("n1", "b"), 5)];
        assert_eq!(s.missing(&elsewhere, &placed), ["b"]);
    }

    fn arb_owner() -> impl Strategy<Value = Owner> {
        prop_oneof![
            (0..3u8).prop_map(|n| Owner::Node(format!("n{n}"))),
            Just(Owner::Nowhere),
            Just(Owner::Gone),
        ]
    }

    proptest! {
        /// Over any sequence of passes, an entry is removed exactly when it was stale
        /// in this pass and the one before, at the same revision.
        #[test]
        fn removal_needs_two_stale_sightings(
            passes in proptest::collection::vec(
                proptest::collection::vec((0..3u8, 0..3u8, 1..4u64, arb_owner()), 0..6),
                1..6,
            ),
        ) {
            let mut s = Sweep::default();
            let mut before: HashMap<String, u64> = HashMap::new();
            for pass in passes {
                // One entry per key in a listing; one owner per task.
                let mut entries: HashMap<String, u64> = HashMap::new();
                let mut owners: HashMap<String, Owner> = HashMap::new();
                for (n, t, rev, owner) in pass {
                    entries.insert(key(&format!("n{n}"), &format!("t{t}")), rev);
                    owners.insert(format!("t{t}"), owner);
                }
                let owner = |t: &str| owners.get(t).cloned().unwrap_or(Owner::Gone);
                let list: Vec<(String, u64)> = entries.into_iter().collect();
                let removed = s.pass(&list, owner);
                let mut now: HashMap<String, u64> = HashMap::new();
                for (k, rev) in &list {
                    let stale = is_stale(k, owner);
                    let expected = stale && before.get(k) == Some(rev);
                    prop_assert_eq!(removed.contains(&(k.clone(), *rev)), expected, "{}", k);
                    if stale && !expected {
                        now.insert(k.clone(), *rev);
                    }
                }
                before = now;
            }
        }
    }
}
