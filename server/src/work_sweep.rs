//! Sweeping stale work: a `voiyd_work` entry for a task that now belongs to another
//! node, to no node, or no longer exists.
//!
//! Moving a task writes its status first and then removes the old node's work; a server
//! that dies in between, or a create racing a move in the same instant, can leave the
//! old entry behind, and the old node would keep running the task. Each sweep lists the
//! work keys and asks the view where each task belongs. An entry is removed only when two
//! sweeps in a row found it stale at the same revision: a view a moment behind a fresh
//! placement does not remove good work, and an entry rewritten meanwhile is kept (the
//! removal is also conditional on that revision).
//!
//! The sweep also repairs the opposite: a task whose status places it on a node, in a
//! phase where it should be running there, but whose work entry is missing (removed by
//! a race between servers) would otherwise be reported Running while nothing runs.
//! Missing from two sweeps in a row, its work is written again from its status.
//!
//! That sweep runs every 30 s; the common case of missing work (a create whose server
//! died, or whose work write failed, after the placement was stored) has a fast path,
//! [`repair_scheduled`]: a task on its way to running (Scheduled, Pulling, Starting)
//! whose status has not moved for a few seconds has its work entry checked, and
//! written again if it is absent, or sent to its node again if it is there (a notice or
//! a report was lost with a NATS connection; the node then reports again); a task whose spec
//! has been there that long without any status is placed.

use crate::api::Ctx;
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

/// Runs one sweep against the bucket: lists the work keys, removes the confirmed stale
/// ones (and tells their nodes). Returns how many were removed.
pub async fn run_once(ctx: &Ctx, sweep: &mut Sweep) -> usize {
    // A view still reading the cluster would call every task gone.
    if !ctx
        .view
        .wait_ready(std::time::Duration::from_millis(1))
        .await
    {
        return 0;
    }
    let raw = voiyd_nats::store::RawKv::new(ctx.work.clone(), "work");
    let entries = match raw.revisions(">").await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list work for the stale-work sweep");
            return 0;
        }
    };
    for task in sweep.missing(&entries, &ctx.view.running_placements()) {
        tracing::warn!(%task, "work missing for a placed task: writing it again");
        if let Err(e) = crate::scheduler::sync_task(ctx, &task, false).await {
            tracing::warn!(%task, error = %e.message, "cannot write the missing work");
        }
    }
    let mut removed = 0;
    for (key, revision) in sweep.pass(&entries, |task| ctx.view.task_owner(task)) {
        let Some((node, task)) = names::parse_work_key(&key) else {
            continue;
        };
        if crate::work::remove_at(ctx, &node, &task, revision).await {
            tracing::warn!(%node, %task, "stale work removed: the task belongs elsewhere");
            removed += 1;
        }
    }
    removed
}

/// How long a starting task's status may stand still before its work is checked.
pub const SCHEDULED_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Checks the work of starting tasks whose status stood still for [`SCHEDULED_GRACE`]
/// (each at most once per grace, remembered in `checked`): writes it again where it is
/// missing, sends it to the node again where it is there.
/// Returns how many were repaired.
pub async fn repair_scheduled(
    ctx: &Ctx,
    checked: &mut HashMap<String, std::time::Instant>,
) -> usize {
    // Bounded per pass: upkeep must go on placing and failing over.
    let mut stuck = ctx.view.waiting_longer_than(SCHEDULED_GRACE);
    stuck.retain(|(t, _)| !checked.contains_key(t));
    stuck.truncate(512);
    let mut repaired = 0;
    for (task, node) in stuck {
        checked.insert(task.clone(), std::time::Instant::now());
        match ctx.work.entry(names::work_key(&node, &task)).await {
            Ok(Some(e)) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                // The work is there but the node has not said a word: its notice may
                // have been lost with a connection. Tell it again.
                tracing::info!(%task, %node, "no word from the node on a starting task: telling it again");
                crate::work::renotify(ctx, &node, &task, e.revision, e.value).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%task, error = %e, "cannot check the work of a scheduled task");
                continue;
            }
        }
        tracing::warn!(%task, %node, "scheduled task has no work: writing it again");
        match crate::scheduler::sync_task(ctx, &task, false).await {
            Ok(_) => repaired += 1,
            Err(e) => tracing::warn!(%task, error = %e.message, "cannot write the missing work"),
        }
    }
    // Specs stored without a placement: place them (each once per grace).
    let mut unplaced = ctx.view.without_status_longer_than(SCHEDULED_GRACE);
    unplaced.retain(|t| !checked.contains_key(t));
    unplaced.truncate(512);
    for task in unplaced {
        checked.insert(task.clone(), std::time::Instant::now());
        tracing::warn!(%task, "task stored without a placement: placing it");
        match crate::scheduler::sync_task(ctx, &task, false).await {
            Ok(_) => repaired += 1,
            Err(e) => tracing::warn!(%task, error = %e.message, "cannot place the task"),
        }
    }
    checked.retain(|_, at| at.elapsed() < SCHEDULED_GRACE);
    repaired
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
