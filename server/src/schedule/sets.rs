//! The set plan: which tasks of a container set to create and delete now, and the
//! small pure helpers the set controller needs (template hash, history, conditions).
//! No I/O: the controller in [`crate::controllers::sets`] reads and writes.

use prost::Message;
use std::collections::BTreeSet;
use voiyd_messages::condition::{self, ConditionType};
use voiyd_messages::reason::Reason;
use voiyd_messages::v1::{Condition, SetRevision, TaskConfig};
use voiyd_messages::Timestamp;

/// Label naming the set a task belongs to.
pub const SET_LABEL: &str = voiyd_messages::labels::SET;
/// Label carrying the hash of the template a task was made from.
pub const HASH_LABEL: &str = voiyd_messages::labels::TEMPLATE_HASH;
/// Revisions kept in a set's history.
pub const HISTORY: usize = 10;
/// Progress deadline when the strategy sets none.
pub const DEFAULT_PROGRESS_DEADLINE_SECS: u32 = 600;
/// Restarts after which a task of a rollout's new template counts as failed (it crash-loops).
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// The hash of a template: 16 hex digits of FNV-1a over its protobuf encoding (maps are
/// ordered, so equal templates hash alike on every server).
pub fn template_hash(t: &TaskConfig) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.encode_to_vec() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One task of a set, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Task name.
    pub name: String,
    /// `n` of `<set>-<n>` (tasks of other shapes get `u32::MAX`).
    pub index: u32,
    /// Its template hash.
    pub hash: String,
    /// Running and ready (its readiness probe passes, when it has one).
    pub ready: bool,
    /// Ready for at least minReadySeconds.
    pub available: bool,
    /// Failed or crash-looping (counts against a rollout).
    pub failed: bool,
    /// Its process ended and will not be restarted (Failed or Succeeded): replaced.
    pub finished: bool,
    /// The node a global set's task is pinned to (empty in replicated sets).
    pub node: String,
}

/// Surge and unavailability limits, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Extra tasks allowed above replicas during an update.
    pub max_surge: u32,
    /// Tasks allowed below replicas-available during an update.
    pub max_unavailable: u32,
}

impl Limits {
    /// From a strategy; both zero (unset) means surge 1, unavailable 0.
    pub fn of(surge: u32, unavailable: u32) -> Limits {
        if surge == 0 && unavailable == 0 {
            Limits {
                max_surge: 1,
                max_unavailable: 0,
            }
        } else {
            Limits {
                max_surge: surge,
                max_unavailable: unavailable,
            }
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Indices of tasks to create from the current template.
    pub create: Vec<u32>,
    /// Tasks to delete (finished ones are replaced: deleted now, created again next time).
    pub delete: Vec<String>,
    /// Every task is of the current template, and `replicas` of them are available.
    pub complete: bool,
}

/// Decides which tasks to create and delete for `replicas` tasks of template `hash`.
pub fn plan(replicas: u32, hash: &str, members: &[Member], limits: Limits) -> Plan {
    let replicas = replicas as usize;
    let (new, old): (Vec<&Member>, Vec<&Member>) = members.iter().partition(|m| m.hash == hash);
    let mut p = Plan::default();
    let total = members.len();
    let ceiling = replicas + limits.max_surge as usize;

    // A finished task of the current template is replaced.
    p.delete
        .extend(new.iter().filter(|m| m.finished).map(|m| m.name.clone()));
    // Too many of the current template (scale down): unavailable first, then the
    // highest indices.
    if new.len() > replicas {
        let mut surplus = new.clone();
        surplus.sort_by_key(|m| (m.available, std::cmp::Reverse(m.index)));
        let gone = p.delete.len();
        let extra = (new.len() - replicas).saturating_sub(gone);
        p.delete.extend(
            surplus
                .iter()
                .filter(|m| !m.finished)
                .take(extra)
                .map(|m| m.name.clone()),
        );
    }
    // Old templates: those not available cost nothing to remove; available ones go
    // while enough others stay available.
    let min_available = replicas.saturating_sub(limits.max_unavailable as usize);
    let mut available = members.iter().filter(|m| m.available).count();
    let mut old = old.clone();
    old.sort_by_key(|m| (m.available, std::cmp::Reverse(m.index)));
    for m in old {
        if p.delete.contains(&m.name) {
            continue;
        }
        if !m.available || available > min_available {
            p.delete.push(m.name.clone());
            if m.available {
                available -= 1;
            }
        }
    }
    // Room is counted before this pass's deletes: a delete that fails or that this
    // server's view has not seen yet must never let the set grow past replicas + surge.
    let n_create = replicas
        .saturating_sub(new.len())
        .min(ceiling.saturating_sub(total));
    let used: BTreeSet<u32> = members.iter().map(|m| m.index).collect();
    p.create = (0u32..)
        .filter(|i| !used.contains(i))
        .take(n_create)
        .collect();
    p.complete = members.iter().all(|m| m.hash == hash)
        && new.len() == replicas
        && new.iter().filter(|m| m.available).count() == replicas;
    p
}

/// Where an update of a replicated set ends once its rollout has taken every step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndState {
    /// Tasks that go, each giving its place to a task of the current template (old
    /// templates, and finished tasks).
    pub replaced: Vec<String>,
    /// Tasks that go without a successor (scale-down).
    pub removed: Vec<String>,
    /// How many tasks of the current template are created.
    pub created: usize,
}

/// The end of a rollout of `replicas` tasks of template `hash`: which of `members`
/// stay, go or are replaced. As [`plan`] chooses: of the current template, unavailable
/// tasks and then the highest indices go first on a scale-down; of old templates, the
/// available ones with the lowest indices are the ones replaced.
pub fn end_state(replicas: u32, hash: &str, members: &[Member]) -> EndState {
    let replicas = replicas as usize;
    let mut out = EndState::default();
    let (mut new, mut old): (Vec<&Member>, Vec<&Member>) =
        members.iter().partition(|m| m.hash == hash);
    // Finished tasks of the current template are replaced like old ones.
    let finished: Vec<&Member> = new.iter().copied().filter(|m| m.finished).collect();
    new.retain(|m| !m.finished);
    if new.len() > replicas {
        new.sort_by_key(|m| (m.available, std::cmp::Reverse(m.index)));
        let surplus = new.len() - replicas;
        out.removed
            .extend(new.drain(..surplus).map(|m| m.name.clone()));
    }
    let mut need = replicas - new.len();
    out.created = need;
    old.sort_by_key(|m| (!m.available, m.index));
    for m in finished.into_iter().chain(old) {
        if need > 0 {
            need -= 1;
            out.replaced.push(m.name.clone());
        } else {
            out.removed.push(m.name.clone());
        }
    }
    out
}

/// The name of a global set's task on `node`: `<set>-<node>` when that is a valid task
/// name, else `<set>-<8 hex digits of the node name's hash>`.
pub fn global_task_name(set: &str, node: &str) -> String {
    let plain = format!("{set}-{node}");
    if voiyd_messages::validate::validate_name("task", &plain).is_ok() {
        return plain;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{set}-{h:08x}")
}

/// What to do now in a global set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalPlan {
    /// Nodes that need a task of the current template.
    pub create: Vec<String>,
    /// Tasks to delete: on nodes that no longer want one, extra ones, finished ones, and
    /// old templates' as the rolling update allows.
    pub delete: Vec<String>,
    /// Every wanted node has one available task of the current template, and no other
    /// task is left.
    pub complete: bool,
}

/// Decides a global set's creates and deletes: one task of template `hash` on every
/// node of `wanted`. A template change replaces tasks node by node, at most
/// `max_unavailable` (at least 1) nodes without an available task at a time; there is
/// no surge (one task per node).
pub fn plan_global(
    hash: &str,
    wanted: &BTreeSet<String>,
    members: &[Member],
    max_unavailable: u32,
) -> GlobalPlan {
    let mut p = GlobalPlan::default();
    let mut by_node: std::collections::BTreeMap<&str, Vec<&Member>> = Default::default();
    for m in members {
        if wanted.contains(&m.node) {
            by_node.entry(m.node.as_str()).or_default().push(m);
        } else {
            p.delete.push(m.name.clone());
        }
    }
    let mut keep: Vec<&Member> = Vec::new();
    for (_, mut ms) in by_node {
        // More than one on a node (a node renamed back, a race): keep the best.
        ms.sort_by_key(|m| (m.hash != hash, !m.available, m.finished));
        let (first, extra) = ms.split_first().expect("grouped members");
        p.delete.extend(extra.iter().map(|m| m.name.clone()));
        if first.finished && first.hash == hash {
            p.delete.push(first.name.clone());
        } else {
            keep.push(first);
        }
    }
    let covered: BTreeSet<&str> = keep.iter().map(|m| m.node.as_str()).collect();
    p.create = wanted
        .iter()
        .filter(|n| !covered.contains(n.as_str()))
        .cloned()
        .collect();
    let budget = max_unavailable.max(1) as usize;
    let mut unavailable = wanted.len() - keep.iter().filter(|m| m.available).count();
    let mut old: Vec<&&Member> = keep.iter().filter(|m| m.hash != hash).collect();
    old.sort_by_key(|m| (m.available, m.node.clone()));
    for m in old {
        if !m.available {
            p.delete.push(m.name.clone());
        } else if unavailable < budget {
            p.delete.push(m.name.clone());
            unavailable += 1;
        }
    }
    p.complete = p.create.is_empty()
        && p.delete.is_empty()
        && keep.iter().all(|m| m.hash == hash && m.available);
    p
}

/// Where a set's rollout stands, as the rollback rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// A rollout to the current template is under way (it began and has not completed).
    pub in_progress: bool,
    /// The current template is itself a rollback (never rolled back again).
    pub is_rollback: bool,
    /// A previous template exists to go back to.
    pub has_previous: bool,
    /// Seconds since the rollout began.
    pub elapsed_secs: i64,
    /// The progress deadline, in seconds.
    pub deadline_secs: u32,
}

/// Why the set must go back to its previous template now, if it must: only while a
/// rollout is in progress, when a task of the new template failed or crash-loops, or
/// the rollout missed its progress deadline. Failures after a rollout completed are
/// the replicas' own (replaced, never rolled back).
pub fn rollback_cause(
    r: Rollout,
    hash: &str,
    members: &[Member],
    complete: bool,
) -> Option<&'static str> {
    if !r.in_progress || r.is_rollback || !r.has_previous || complete {
        return None;
    }
    if members.iter().any(|m| m.hash == hash && m.failed) {
        return Some("a task of the new template failed or keeps restarting");
    }
    if r.elapsed_secs > i64::from(r.deadline_secs) {
        return Some("the progress deadline passed before the new tasks were ready");
    }
    None
}

/// `n` of a task named `<set>-<n>`; `u32::MAX` for names of another shape.
pub fn index_of(set: &str, task: &str) -> u32 {
    task.strip_prefix(set)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Whole seconds from `t` to `now` (0 when `t` is unset).
pub fn secs_since(t: Option<&Timestamp>, now: &Timestamp) -> i64 {
    t.map(|t| now.seconds - t.seconds).unwrap_or(0)
}

/// A set condition, keeping its transition time while its status stays the same.
pub fn condition(
    ty: ConditionType,
    ok: bool,
    reason: Reason,
    msg: String,
    prev: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = condition::status(ok);
    let since = prev
        .iter()
        .find(|c| c.r#type == ty && c.status == status)
        .and_then(|c| c.last_transition_time)
        .unwrap_or(now);
    Condition {
        r#type: ty.into(),
        status: status.into(),
        reason: reason.into(),
        msg,
        last_transition_time: Some(since),
    }
}

/// Records a template in the history (moving it to the end if it ran before).
pub fn remember(history: &mut Vec<SetRevision>, rev: SetRevision) {
    history.retain(|r| r.template_hash != rev.template_hash);
    history.push(rev);
    if history.len() > HISTORY {
        let extra = history.len() - HISTORY;
        history.drain(..extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(i: u32, hash: &str, available: bool) -> Member {
        Member {
            name: format!("s-{i}"),
            index: i,
            hash: hash.into(),
            ready: available,
            available,
            failed: false,
            finished: false,
            node: String::new(),
        }
    }

    #[test]
    fn end_state_of_updates_and_scaling() {
        // Update of three: every old one replaced, nothing removed.
        let members = [m(0, "o", true), m(1, "o", true), m(2, "o", false)];
        let e = end_state(3, "h", &members);
        assert_eq!(e.replaced, ["s-0", "s-1", "s-2"]);
        assert!(e.removed.is_empty());
        assert_eq!(e.created, 3);
        // Update and scale down to one: the available old one with the lowest index is
        // replaced, the rest removed.
        let e = end_state(
            1,
            "h",
            &[m(2, "o", true), m(0, "o", false), m(1, "o", true)],
        );
        assert_eq!(
            (e.replaced, e.removed, e.created),
            (
                vec!["s-1".to_string()],
                vec!["s-2".to_string(), "s-0".to_string()],
                1
            )
        );
        // Scale down of the current template: unavailable, then highest index, first.
        let e = end_state(
            1,
            "h",
            &[m(0, "h", true), m(1, "h", false), m(2, "h", true)],
        );
        assert_eq!(
            (e.removed, e.created),
            (vec!["s-1".to_string(), "s-2".to_string()], 0)
        );
        // Nothing to do.
        assert_eq!(end_state(1, "h", &[m(0, "h", true)]), EndState::default());
    }

    proptest! {
        /// Running the step-by-step plan until the rollout completes (new tasks become
        /// available as soon as they are created) ends where end_state says: the same
        /// original tasks gone, as many new ones made.
        #[test]
        fn end_state_is_where_plan_ends(
            replicas in 0u32..6,
            specs in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 0..7),
            surge in 0u32..3,
            unavailable in 0u32..3,
        ) {
            let originals: Vec<Member> = specs
                .iter()
                .enumerate()
                // A task of the current template that is not yet available holds a
                // rollout until it is, which this model of time does not have: those
                // start available, unless finished (a finished task is never available).
                .map(|(i, (current, available, finished))| Member {
                    finished: *finished,
                    ..m(
                        i as u32,
                        if *current { "h" } else { "o" },
                        (*available || *current) && !*finished,
                    )
                })
                .collect();
            let predicted = end_state(replicas, "h", &originals);
            // (member, is an original)
            let mut live: Vec<(Member, bool)> = originals.iter().cloned().map(|m| (m, true)).collect();
            let mut made = 0usize;
            let mut complete = false;
            for _ in 0..200 {
                let members: Vec<Member> = live.iter().map(|(m, _)| m.clone()).collect();
                let p = plan(replicas, "h", &members, Limits::of(surge, unavailable));
                if p.complete {
                    complete = true;
                    break;
                }
                live.retain(|(m, _)| !p.delete.contains(&m.name));
                for i in &p.create {
                    live.push((m(*i, "h", true), false));
                    made += 1;
                }
            }
            prop_assert!(complete, "the rollout did not complete: {live:?}");
            let mut gone: Vec<String> = originals
                .iter()
                .filter(|o| !live.iter().any(|(m, orig)| *orig && m.name == o.name))
                .map(|o| o.name.clone())
                .collect();
            gone.sort();
            let mut want: Vec<String> = predicted.replaced.iter().chain(&predicted.removed).cloned().collect();
            want.sort();
            prop_assert_eq!(gone, want);
            prop_assert_eq!(made, predicted.created);
        }
    }

    #[test]
    fn scales_up_and_down_by_index() {
        let p = plan(3, "h", &[m(1, "h", true)], Limits::of(0, 0));
        assert_eq!(p.create, vec![0, 2]);
        assert!(p.delete.is_empty() && !p.complete);
        let p = plan(
            1,
            "h",
            &[m(0, "h", true), m(1, "h", false), m(2, "h", true)],
            Limits::of(0, 0),
        );
        assert_eq!(p.delete, vec!["s-1".to_string(), "s-2".to_string()]);
        let p = plan(
            2,
            "h",
            &[m(0, "h", true), m(1, "h", true)],
            Limits::of(0, 0),
        );
        assert_eq!(
            p,
            Plan {
                create: vec![],
                delete: vec![],
                complete: true
            }
        );
    }

    #[test]
    fn rolling_update_with_surge_waits_for_availability() {
        let old = [m(0, "a", true), m(1, "a", true)];
        // surge 1, unavailable 0: one new task first, no delete yet.
        let p = plan(2, "b", &old, Limits::of(1, 0));
        assert_eq!((p.create.clone(), p.delete.clone()), (vec![2], vec![]));
        // The new one is not available yet: nothing more happens.
        let mid = [m(0, "a", true), m(1, "a", true), m(2, "b", false)];
        let p = plan(2, "b", &mid, Limits::of(1, 0));
        assert!(p.create.is_empty() && p.delete.is_empty());
        // Available: one old one goes.
        let mid = [m(0, "a", true), m(1, "a", true), m(2, "b", true)];
        assert_eq!(
            plan(2, "b", &mid, Limits::of(1, 0)).delete,
            vec!["s-1".to_string()]
        );
    }

    fn g(node: &str, hash: &str, available: bool) -> Member {
        Member {
            node: node.into(),
            name: global_task_name("agent", node),
            ..m(0, hash, available)
        }
    }

    fn nodes(ns: &[&str]) -> BTreeSet<String> {
        ns.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn global_sets_follow_the_nodes() {
        let p = plan_global("h", &nodes(&["n1", "n2", "n3"]), &[g("n1", "h", true)], 1);
        assert_eq!(p.create, vec!["n2".to_string(), "n3".to_string()]);
        assert!(p.delete.is_empty() && !p.complete);
        // n3 is cordoned or gone: its task goes; n4 joined: it gets one.
        let ms = [g("n1", "h", true), g("n2", "h", true), g("n3", "h", true)];
        let p = plan_global("h", &nodes(&["n1", "n2", "n4"]), &ms, 1);
        assert_eq!(p.create, vec!["n4".to_string()]);
        assert_eq!(p.delete, vec!["agent-n3".to_string()]);
        let p = plan_global("h", &nodes(&["n1", "n2", "n3"]), &ms, 1);
        assert!(p.complete && p.create.is_empty() && p.delete.is_empty());
        assert_eq!(global_task_name("agent", "n1"), "agent-n1");
        let long = "x".repeat(80);
        let name = global_task_name("agent", &long);
        assert_eq!(name.len(), "agent-".len() + 8, "{name}");
    }

    #[test]
    fn global_rollouts_replace_node_by_node() {
        let ms = [g("n1", "a", true), g("n2", "a", true), g("n3", "a", true)];
        let all = nodes(&["n1", "n2", "n3"]);
        let p = plan_global("b", &all, &ms, 1);
        assert_eq!(p.delete.len(), 1, "one node at a time: {p:?}");
        assert!(p.create.is_empty());
        // n1's old task is gone: nothing more until its new one is available.
        let ms = [g("n2", "a", true), g("n3", "a", true)];
        let p = plan_global("b", &all, &ms, 1);
        assert_eq!(
            (p.create.clone(), p.delete.clone()),
            (vec!["n1".to_string()], vec![])
        );
        let ms = [g("n1", "b", false), g("n2", "a", true), g("n3", "a", true)];
        assert!(plan_global("b", &all, &ms, 1).delete.is_empty());
        let ms = [g("n1", "b", true), g("n2", "a", true), g("n3", "a", true)];
        assert_eq!(plan_global("b", &all, &ms, 1).delete.len(), 1);
        assert_eq!(plan_global("b", &all, &ms, 2).delete.len(), 2);
    }

    #[test]
    fn rollback_only_while_a_rollout_is_in_progress() {
        let mut bad = m(2, "b", false);
        bad.failed = true;
        let ms = [m(0, "a", true), m(1, "a", true), bad];
        let r = Rollout {
            in_progress: true,
            is_rollback: false,
            has_previous: true,
            elapsed_secs: 5,
            deadline_secs: 60,
        };
        assert!(rollback_cause(r, "b", &ms, false).is_some());
        let done = Rollout {
            in_progress: false,
            ..r
        };
        assert_eq!(
            rollback_cause(done, "b", &ms, false),
            None,
            "after the rollout"
        );
        let back = Rollout {
            is_rollback: true,
            ..r
        };
        assert_eq!(rollback_cause(back, "b", &ms, false), None, "never twice");
        let late = Rollout {
            elapsed_secs: 61,
            ..r
        };
        let ok = [m(0, "a", true), m(1, "b", false)];
        assert!(rollback_cause(late, "b", &ok, false).is_some_and(|w| w.contains("deadline")));
        assert_eq!(rollback_cause(r, "b", &ok, false), None);
    }

    #[test]
    fn finished_tasks_are_replaced() {
        let mut done = m(1, "h", false);
        done.finished = true;
        let p = plan(2, "h", &[m(0, "h", true), done], Limits::of(0, 0));
        assert_eq!(p.delete, vec!["s-1".to_string()]);
        assert!(!p.complete);
        // Scaling down counts the finished one among the surplus.
        let mut done = m(2, "h", false);
        done.finished = true;
        let p = plan(
            2,
            "h",
            &[m(0, "h", true), m(1, "h", true), done],
            Limits::of(0, 0),
        );
        assert_eq!(p.delete, vec!["s-2".to_string()]);
    }

    #[test]
    fn rolling_update_without_surge_takes_one_down_first() {
        let old = [m(0, "a", true), m(1, "a", true), m(2, "a", true)];
        let p = plan(3, "b", &old, Limits::of(0, 1));
        assert_eq!((p.create, p.delete), (vec![], vec!["s-2".to_string()]));
        let p = plan(3, "b", &old[..2], Limits::of(0, 1));
        assert_eq!(p.create, vec![2]);
    }

    #[test]
    fn history_keeps_the_last_ten_and_moves_repeats() {
        let mut h = Vec::new();
        for i in 0..12u64 {
            remember(
                &mut h,
                SetRevision {
                    revision: i,
                    template_hash: format!("h{i}"),
                    ..Default::default()
                },
            );
        }
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].revision, 2);
        remember(
            &mut h,
            SetRevision {
                revision: 20,
                template_hash: "h5".into(),
                ..Default::default()
            },
        );
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.last().unwrap().revision, 20);
        assert_eq!(index_of("web", "web-12"), 12);
        assert_eq!(index_of("web", "webx-1"), u32::MAX);
        assert_ne!(
            template_hash(&TaskConfig::default()),
            template_hash(&TaskConfig {
                image: "x".into(),
                ..Default::default()
            })
        );
    }

    fn arb_members() -> impl Strategy<Value = Vec<Member>> {
        proptest::collection::vec((any::<bool>(), any::<bool>()), 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (new, avail))| m(i as u32, if new { "new" } else { "old" }, avail))
                .collect()
        })
    }

    proptest! {
        /// Never more than replicas + surge tasks, never fewer available than
        /// replicas - maxUnavailable through deletes of available tasks, never a name twice.
        #[test]
        fn plan_keeps_its_limits(replicas in 0u32..8, surge in 0u32..3, unavail in 0u32..3, ms in arb_members()) {
            let limits = Limits::of(surge, unavail);
            let p = plan(replicas, "new", &ms, limits);
            let after = ms.len() + p.create.len() - p.delete.len();
            prop_assert!(p.create.is_empty() || ms.len() + p.create.len() <= (replicas + limits.max_surge) as usize);
            let avail_before = ms.iter().filter(|m| m.available).count();
            let avail_deleted = ms.iter().filter(|m| m.available && p.delete.contains(&m.name)).count();
            let floor = (replicas.saturating_sub(limits.max_unavailable)) as usize;
            let surplus_new = ms.iter().filter(|m| m.hash == "new").count().saturating_sub(replicas as usize);
            if surplus_new == 0 && avail_deleted > 0 {
                prop_assert!(avail_before - avail_deleted >= floor.min(avail_before));
            }
            let names: BTreeSet<String> = ms.iter().map(|m| m.name.clone()).collect();
            for i in &p.create {
                let n = format!("s-{}", i);
                prop_assert!(!names.contains(&n));
            }
            let del: BTreeSet<&String> = p.delete.iter().collect();
            prop_assert_eq!(del.len(), p.delete.len());
            let _ = after;
        }

        /// Repeating the plan (tasks becoming available at once) converges to exactly
        /// `replicas` tasks of the new template.
        #[test]
        fn rollout_converges(replicas in 0u32..6, surge in 0u32..3, unavail in 0u32..3, ms in arb_members()) {
            let limits = Limits::of(surge, unavail);
            let mut cur = ms;
            for _ in 0..50 {
                let p = plan(replicas, "new", &cur, limits);
                if p.complete { break; }
                cur.retain(|m| !p.delete.contains(&m.name));
                for m in &mut cur { m.available = true; m.ready = true; }
                for i in p.create { cur.push(m(i, "new", false)); }
            }
            let p = plan(replicas, "new", &cur, limits);
            let mut cur2 = cur.clone();
            for m in &mut cur2 { m.available = true; }
            let p2 = plan(replicas, "new", &cur2, limits);
            prop_assert!(p.complete || p2.complete, "not converged: {:?}", cur);
        }
    }
}
