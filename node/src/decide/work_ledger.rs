//! Orders a node's work updates. Every change to the node's work in `voiyd_work` has a
//! revision; the node hears of changes as messages (which may arrive out of order, or
//! not at all) and reads all its work at times. The ledger decides which to apply, so
//! that an older change never overwrites a newer one. Pure: no I/O.

use std::collections::{BTreeSet, HashMap};

/// What the node has applied.
#[derive(Debug, Default)]
pub struct WorkLedger {
    /// Every change at or below this revision is reflected in the last full read.
    floor: u64,
    /// Revision of the last change applied per task, for changes above `floor`.
    applied: HashMap<String, u64>,
}

/// What to do after a full read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FullRead {
    /// Tasks whose work to set from the read.
    pub set: Vec<String>,
    /// Tasks whose work to drop: neither in the read nor changed since it began.
    pub clear: Vec<String>,
}

impl WorkLedger {
    /// Whether a change of `task` at `revision` is newer than anything applied for it;
    /// records it if so.
    pub fn accept(&mut self, task: &str, revision: u64) -> bool {
        if revision <= self.floor {
            return false;
        }
        match self.applied.get(task) {
            Some(r) if *r >= revision => false,
            _ => {
                self.applied.insert(task.to_string(), revision);
                true
            }
        }
    }

    /// Folds in a full read: `floor` is the bucket's last revision taken before the
    /// read began, `found` the (task, revision) the read returned, `known` every task
    /// the node currently has work or containers for.
    pub fn full_read(
        &mut self,
        floor: u64,
        found: &[(String, u64)],
        known: impl IntoIterator<Item = String>,
    ) -> FullRead {
        let mut out = FullRead::default();
        let mut in_read = BTreeSet::new();
        for (task, rev) in found {
            in_read.insert(task.as_str());
            // A message newer than what the read saw was applied meanwhile: keep it.
            if self.applied.get(task).is_some_and(|r| r > rev) {
                continue;
            }
            self.applied.insert(task.clone(), *rev);
            out.set.push(task.clone());
        }
        let known: BTreeSet<String> = known.into_iter().collect();
        for task in known {
            if in_read.contains(task.as_str()) {
                continue;
            }
            // Written after the read began: the read could not see it.
            if self.applied.get(&task).is_some_and(|r| *r > floor) {
                continue;
            }
            out.clear.push(task);
        }
        self.floor = self.floor.max(floor);
        let f = self.floor;
        self.applied.retain(|_, r| *r > f);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn older_messages_lose_to_newer_ones() {
        let mut l = WorkLedger::default();
        assert!(l.accept("a", 5));
        assert!(!l.accept("a", 4));
        assert!(!l.accept("a", 5));
        assert!(l.accept("a", 9));
        assert!(l.accept("b", 1));
    }

    #[test]
    fn a_read_covers_what_came_before_it() {
        let mut l = WorkLedger::default();
        let r = l.full_read(10, &[(s("a"), 7)], [s("a"), s("gone")]);
        assert_eq!(r.set, vec![s("a")]);
        assert_eq!(r.clear, vec![s("gone")]);
        // A late message from before the read changes nothing.
        assert!(!l.accept("gone", 9));
        assert!(!l.accept("a", 8));
        assert!(l.accept("a", 11));
    }

    #[test]
    fn a_read_does_not_undo_newer_messages() {
        let mut l = WorkLedger::default();
        // Put at 12 arrives while a read that began at 10 is under way.
        assert!(l.accept("new", 12));
        assert!(l.accept("a", 13));
        let r = l.full_read(10, &[(s("a"), 9)], [s("new"), s("a")]);
        assert!(r.set.is_empty(), "{r:?}");
        assert!(r.clear.is_empty(), "{r:?}");
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Write task (put when true, removal when false): appends a revision.
        Write(u8, bool),
        /// Deliver the oldest undelivered message of this index (mod pending), or drop it.
        Deliver(u8, bool),
        /// Full read at the current revision.
        Read,
        /// A read that starts now and is folded in at a later `EndRead`.
        BeginRead,
        EndRead,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..4, any::<bool>()).prop_map(|(t, p)| Step::Write(t, p)),
            (any::<u8>(), prop::bool::weighted(0.8)).prop_map(|(i, d)| Step::Deliver(i, d)),
            Just(Step::Read),
            Just(Step::BeginRead),
            Just(Step::EndRead),
        ]
    }

    proptest! {
        /// Messages delivered in any order, some lost: after a final read and the
        /// remaining messages, the node's work equals the bucket's.
        #[test]
        fn converges_to_the_bucket(steps in prop::collection::vec(step(), 1..60)) {
            let mut bucket: BTreeMap<String, (bool, u64)> = BTreeMap::new();
            let mut rev = 0u64;
            let mut pending: Vec<(String, u64, bool)> = Vec::new();
            let mut node: BTreeMap<String, bool> = BTreeMap::new();
            let mut l = WorkLedger::default();
            let snapshot = |bucket: &BTreeMap<String, (bool, u64)>| -> Vec<(String, u64)> {
                bucket
                    .iter()
                    .filter(|(_, (live, _))| *live)
                    .map(|(k, (_, r))| (k.clone(), *r))
                    .collect()
            };
            let fold = |l: &mut WorkLedger, node: &mut BTreeMap<String, bool>, floor: u64, found: &[(String, u64)]| {
                let known: Vec<String> = node.keys().cloned().collect();
                let r = l.full_read(floor, found, known);
                for t in r.set { node.insert(t, true); }
                for t in r.clear { node.remove(&t); }
            };
            let mut started: Option<(u64, Vec<(String, u64)>)> = None;
            for st in steps {
                match st {
                    Step::Write(t, put) => {
                        rev += 1;
                        let task = format!("t{t}");
                        bucket.insert(task.clone(), (put, rev));
                        pending.push((task, rev, put));
                    }
                    Step::Deliver(i, deliver) => {
                        if pending.is_empty() { continue; }
                        let (task, r, put) = pending.remove(i as usize % pending.len());
                        if deliver && l.accept(&task, r) {
                            if put { node.insert(task, true); } else { node.remove(&task); }
                        }
                    }
                    Step::Read => fold(&mut l, &mut node, rev, &snapshot(&bucket)),
                    Step::BeginRead => started = Some((rev, snapshot(&bucket))),
                    Step::EndRead => {
                        if let Some((floor, found)) = started.take() {
                            fold(&mut l, &mut node, floor, &found);
                        }
                    }
                }
            }
            fold(&mut l, &mut node, rev, &snapshot(&bucket));
            for (task, r, put) in pending {
                if l.accept(&task, r) {
                    if put { node.insert(task, true); } else { node.remove(&task); }
                }
            }
            let want: BTreeMap<String, bool> = bucket
                .into_iter()
                .filter(|(_, (live, _))| *live)
                .map(|(k, _)| (k, true))
                .collect();
            prop_assert_eq!(node, want);
        }
    }
}
